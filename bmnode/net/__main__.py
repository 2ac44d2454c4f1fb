"""``python -m bmnode.net [bmnode run flags]``: the net process on its own."""

from __future__ import annotations

import argparse
import sys

from bmnode.errors import BmnodeError
from bmnode.net.run import run_node
from bmnode.node.config import add_run_arguments, config_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bmnode.net", description="run the bmnode net process")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_node(config_from_args(args))
    except BmnodeError as exc:
        print(f"bmnode: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
