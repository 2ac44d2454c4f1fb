"""Message latency between two full nodes on loopback (``bmnode run`` subprocesses) at a lowered
network PoW, through the XML-RPC API.

alice sends N messages to bob one after the other. For each: ``delivered`` = sendMessage until
bob's API lists it in the inbox; ``acked`` = sendMessage until alice's getStatus says
``ackreceived`` (the ack object went back through the network). The first message also waits
for bob's pubkey (getpubkey or the pubkey published at address creation); it is reported
apart and left out of p50/p99. Both nodes run the reference's network timers (announcements
batched once a second, as on the real network), so the figures are dominated by them, not
by CPU; ``--network-pow`` changes the PoW part.

    python3 bench/message_latency.py [--messages 20] [--network-pow 10:10] [--pow-backend auto] [--json]

Figures only: nothing here passes or fails on a time.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bmnode.node.apiproc import NodeApi
from bmnode.node.fullnode import LocalNode, free_port


def _percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation (what numpy's default gives)."""
    s = sorted(values)
    if not s:
        return float("nan")
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _one(alice: NodeApi, bob: NodeApi, a: str, b: str, subject: str, timeout: float, poll: float,
         inbox: list[str]) -> tuple[float, float]:
    """(delivered, acked) seconds of one message; ``inbox`` holds bob's inbox ids seen so far."""
    t0 = time.perf_counter()
    ack = alice.call("sendMessage", b, a, NodeApi.b64(subject), NodeApi.b64("latency probe"))
    delivered = acked = None
    deadline = t0 + timeout
    while (delivered is None or acked is None) and time.perf_counter() < deadline:
        if delivered is None:
            ids = [r["msgid"] for r in bob.call("getAllInboxMessageIds").get("inboxMessageIds", [])]
            if len(ids) > len(inbox):
                inbox[:] = ids
                delivered = time.perf_counter() - t0
        if acked is None and alice.status(ack) == "ackreceived":
            acked = time.perf_counter() - t0
        time.sleep(poll)
    if delivered is None or acked is None:
        raise SystemExit(f"message {subject!r} not delivered/acked within {timeout} s")
    return delivered, acked


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20, help="messages after the first (default 20)")
    ap.add_argument("--network-pow", default="10:10", help="NTPB:EXTRA of the test network (default 10:10)")
    ap.add_argument("--pow-backend", default="auto")
    ap.add_argument("--dandelion", action="store_true", help="leave Dandelion++ on (stem phase first)")
    ap.add_argument("--poll", type=float, default=0.02, help="API polling interval in seconds (default 0.02)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per message")
    ap.add_argument("--keep", action="store_true", help="keep the nodes' directories and logs")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.messages < 1:
        ap.error("--messages must be >= 1")

    base = Path(tempfile.mkdtemp(prefix="bmnode-latency-"))
    pa, pb = free_port(), free_port()
    extra = ("--decrypt-workers", "1", "--pow-backend", args.pow_backend)
    if not args.dandelion:
        extra += ("--no-dandelion",)
    nodes = [
        LocalNode(base / "alice", name="alice", port=pa, peers=(pb,), network_pow=args.network_pow, extra=extra,
                  log_level="WARNING"),
        LocalNode(base / "bob", name="bob", port=pb, peers=(pa,), network_pow=args.network_pow, extra=extra,
                  log_level="WARNING"),
    ]
    try:
        t_start = time.perf_counter()
        for n in nodes:
            n.start()
        alice, bob = (n.wait_ready(60) for n in nodes)
        startup = time.perf_counter() - t_start
        a = alice.call("createRandomAddress", NodeApi.b64("alice"))
        b = bob.call("createRandomAddress", NodeApi.b64("bob"))
        seen: list[str] = []
        first = _one(alice, bob, a, b, "first", args.timeout, args.poll, seen)
        delivered, acked = [], []
        for i in range(args.messages):
            d, k = _one(alice, bob, a, b, f"probe {i}", args.timeout, args.poll, seen)
            delivered.append(d)
            acked.append(k)
    finally:
        for n in nodes:
            n.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    def summary(values: list[float]) -> dict[str, float]:
        return {
            "p50": round(_percentile(values, 0.5), 3), "p99": round(_percentile(values, 0.99), 3),
            "mean": round(statistics.fmean(values), 3), "min": round(min(values), 3), "max": round(max(values), 3),
        }

    result = {
        "benchmark": "message latency between two loopback full nodes (seconds)",
        "network_pow": args.network_pow,
        "messages": args.messages,
        "startup_s": round(startup, 3),
        "first_message": {"delivered": round(first[0], 3), "acked": round(first[1], 3)},
        "delivered": summary(delivered),
        "acked": summary(acked),
        "dandelion": args.dandelion,
        "pow_backend": args.pow_backend,
        "python": platform.python_version(),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(result["benchmark"] + f", network PoW {args.network_pow}, {args.messages} messages")
    print(f"  two nodes up (API ready) in {startup:.2f} s")
    print(f"  first message (pubkey lookup included): delivered {first[0]:.2f} s, acked {first[1]:.2f} s")
    for name in ("delivered", "acked"):
        s = result[name]
        print(f"  {name:9s} p50 {s['p50']:.3f} s  p99 {s['p99']:.3f} s  (min {s['min']:.3f}, max {s['max']:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
