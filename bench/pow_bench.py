"""PoW benchmark entry point: trials/s of every backend on this machine, with the pure-Python
baseline measured in the same run. A thin wrapper around :mod:`bmnode.pow.bench` (the same
logic as ``bmnode pow bench``). Prints figures; never passes or fails on a time.

    python3 bench/pow_bench.py [--seconds 3] [--threads 1,2,4] [--backends python,native,opencl:0]
                               [--json] [--plot FILE.png]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bmnode.pow.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
