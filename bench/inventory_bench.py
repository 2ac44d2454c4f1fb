"""Inventory throughput and memory: inserts/s (batched, one transaction per flush), lookups/s,
big-inv listing and clean-up time, and RSS with N small objects stored (default 100,000).

Objects are generated batch by batch outside the timed sections and not kept, so RSS is the
inventory's own footprint (plus the interpreter). A second process then reopens the file and
reports its RSS too (a restarted node). Prints figures, or one JSON object with ``--json``.

    python3 bench/inventory_bench.py [--count 100000] [--batch 500] [--size 200] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bmnode.protocol.hashing import inventory_hash  # noqa: E402
from bmnode.protocol.objects import attach_nonce, encode_object_body, parse_header  # noqa: E402
from bmnode.store.inventory import Inventory  # noqa: E402

NOW = 1_730_000_000


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def make_batch(start: int, n: int, size: int, rng: random.Random) -> list[tuple[bytes, object]]:
    """n distinct objects of about ``size`` bytes, expiring over the next 4 days."""
    out = []
    for i in range(start, start + n):
        payload = i.to_bytes(8, "big") + rng.randbytes(max(0, size - 30))
        data = attach_nonce(rng.getrandbits(64), encode_object_body(NOW + 300 + (i % 345600), 2, 1, 1, payload))
        out.append((data, parse_header(data)))
    return out


def rate(fn, items: list, min_seconds: float = 0.5) -> float:
    """Calls of fn per second over the items, repeated to last at least ``min_seconds``."""
    done = 0
    start = time.perf_counter()
    while True:
        for x in items:
            fn(x)
        done += len(items)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def reopen_figures(path: str) -> dict:
    """Run in a fresh process: open the inventory and report RSS and open time."""
    base = rss_mb()
    t = time.perf_counter()
    inv = Inventory(path)
    opened = time.perf_counter() - t
    gc.collect()
    out = {"count": inv.count(), "open_s": opened, "rss_mb": rss_mb(), "rss_before_open_mb": base}
    inv.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=100_000, help="objects to store (default 100000)")
    ap.add_argument("--batch", type=int, default=500, help="objects per flush, i.e. per event-loop tick (default 500)")
    ap.add_argument("--size", type=int, default=200, help="approximate object size in bytes (default 200)")
    ap.add_argument("--dir", default=None, help="directory for the database (default: a temporary one)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--_reopen", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._reopen:
        print(json.dumps(reopen_figures(args._reopen)))
        return 0

    rng = random.Random(1)
    tmp = tempfile.TemporaryDirectory() if args.dir is None else None
    data_dir = Path(args.dir or tmp.name)
    rss_start = rss_mb()
    inv = Inventory(data_dir)

    sample_old: list[bytes] = []
    sample_new: list[bytes] = []
    insert_time = 0.0
    done = 0
    while done < args.count:
        n = min(args.batch, args.count - done)
        batch = make_batch(done, n, args.size, rng)
        t = time.perf_counter()
        for data, header in batch:
            inv.add(data, header, NOW)
        inv.flush()
        insert_time += time.perf_counter() - t
        if len(sample_old) < 20_000:
            sample_old.extend(inventory_hash(d) for d, _ in batch[:50])
        if done + n >= args.count - 2000:
            sample_new.extend(inventory_hash(d) for d, _ in batch)
        done += n
        del batch
    gc.collect()
    rss_full = rss_mb()

    misses = [rng.randbytes(32) for _ in range(20_000)]
    has_recent = rate(inv.has, sample_new)
    has_old = rate(inv.has, sample_old)
    has_miss = rate(inv.has, misses)
    gets = rate(inv.get, sample_old[:5000])

    t = time.perf_counter()
    chunks = list(inv.iter_unexpired(1, NOW))
    listing = time.perf_counter() - t
    listed = sum(len(c) for c in chunks)
    del chunks

    index_bytes = inv._index._base.itemsize * len(inv._index._base)
    inv.close()
    db_bytes = sum(p.stat().st_size for p in data_dir.glob("inventory.sqlite*"))

    reopened = json.loads(
        subprocess.run(
            [sys.executable, __file__, "--_reopen", str(data_dir)], check=True, capture_output=True, text=True
        ).stdout
    )

    inv = Inventory(data_dir)
    t = time.perf_counter()
    deleted = inv.cleanup(NOW + 300 + args.count // 2 + 10800)  # about half
    cleanup_s = time.perf_counter() - t
    inv.close()

    figures = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "count": args.count,
        "object_size": args.size,
        "batch": args.batch,
        "inserts_per_s": args.count / insert_time,
        "has_recent_per_s": has_recent,
        "has_stored_per_s": has_old,
        "has_miss_per_s": has_miss,
        "get_per_s": gets,
        "big_inv_list_s": listing,
        "big_inv_hashes": listed,
        "cleanup_s": cleanup_s,
        "cleanup_deleted": deleted,
        "rss_start_mb": rss_start,
        "rss_after_inserts_mb": rss_full,
        "index_bytes": index_bytes,
        "db_bytes": db_bytes,
        "reopen_rss_mb": reopened["rss_mb"],
        "reopen_rss_before_open_mb": reopened["rss_before_open_mb"],
        "reopen_s": reopened["open_s"],
    }
    if tmp is not None:
        tmp.cleanup()
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"inventory bench: {args.count} objects of ~{args.size} B, flush every {args.batch} "
          f"({figures['machine']}, Python {figures['python']}, {figures['cpus']} CPUs)")
    print(f"  inserts (add + flush, dSHA512 included) {figures['inserts_per_s']:12,.0f} /s")
    print(f"  has(), recent hash                      {has_recent:12,.0f} /s")
    print(f"  has(), older stored hash                {has_old:12,.0f} /s")
    print(f"  has(), unknown hash                     {has_miss:12,.0f} /s")
    print(f"  get(), stored object                    {gets:12,.0f} /s")
    print(f"  big inv listing: {listed} hashes in {listing * 1000:.0f} ms")
    print(f"  cleanup: {deleted} objects deleted in {cleanup_s * 1000:.0f} ms")
    print(f"  RSS: {rss_start:.1f} MiB at start, {rss_full:.1f} MiB with {args.count} objects stored "
          f"(index {index_bytes / 1024:.0f} KiB, database {db_bytes / 2**20:.1f} MiB on disk)")
    print(f"  restarted process: {reopened['rss_mb']:.1f} MiB after opening "
          f"({reopened['rss_before_open_mb']:.1f} before), open took {reopened['open_s'] * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
