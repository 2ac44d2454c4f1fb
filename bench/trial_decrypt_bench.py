"""Trial decryption throughput of the mailbox's decrypt pool: failed attempts per second for
1..N worker processes, against the one-core figures measured in the same run.

What a failed attempt costs (every msg on the network that is not for us, per own key):
parse the blob and validate its ephemeral point, ECDH, SHA-512, HMAC-SHA256, compare. Rows:

* ``ecdh``      libsecp256k1's constant-time ECDH alone, one core: the floor of one attempt;
* ``baseline``  the same failed attempt written with pyca/cryptography (OpenSSL), one core;
* ``inline``    bmnode's filter in this process (``DecryptPool(0)``), one core;
* ``workers=k`` ``DecryptPool(k)``: blobs submitted from this process in batches, verdicts
                collected; attempts/s in all, per worker, and the ratio to one worker;
                with ``--independent`` also k processes doing the same alone (no pool, no
                parent): what the machine itself gives k cores, so the pool's own cost shows.

The parent process also works (pickling batches, collecting verdicts), so on a machine with
as many cores as workers the last rows share a core with it; ``cpus`` in the output says how
many there are. Figures only: nothing here passes or fails on a time.

    python3 bench/trial_decrypt_bench.py [--seconds 3] [--workers 1,2,4] [--keys 1] [--independent] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bmnode.crypto import ecies, keys
from bmnode.crypto import secp256k1 as _ec
from bmnode.node.decryptpool import DecryptPool, opens_any


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _one_core_rate(fn, items: list, seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds``, cycling through ``items``."""
    done = 0
    start = time.perf_counter()
    while True:
        for it in items:
            fn(it)
        done += len(items)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def _independent_worker(args: tuple[list[bytes], list[bytes], float]) -> float:
    """One process's failed attempts/s, alone (the reference row for k processes)."""
    secrets, blobs, seconds = args
    decryptors = [ecies.Decryptor(s) for s in secrets]
    return _one_core_rate(lambda b: opens_any(b, decryptors), blobs, seconds) * len(secrets)


def _independent_rate(k: int, secrets: list[bytes], blobs: list[bytes], seconds: float) -> float:
    """What k processes that share nothing reach together: the machine's own scaling
    (shared caches, clock boost, SMT siblings), against which the pool is measured."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(k) as pool:
        pool.map(_independent_worker, [(secrets, blobs[:8], 0.2)] * k)  # start-up and warm-up
        return sum(pool.map(_independent_worker, [(secrets, blobs, seconds)] * k))


def _pool_rate(workers: int, secrets: list[bytes], blobs: list[bytes], seconds: float) -> tuple[float, int]:
    """Failed attempts per second through a pool of ``workers`` processes (blobs x keys)."""
    pool = DecryptPool(workers)
    try:
        pool.set_keys(secrets)
        # Warm-up: every worker started and holding the keys.
        pool.submit((i, b) for i, b in enumerate(blobs[: max(1, workers) * pool.batch]))
        while pool.pending:
            pool.collect(1.0)
        in_flight = max(1, workers) * pool.batch * 4
        done = 0
        hits = 0
        i = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            now = time.perf_counter()
            if now < deadline:
                room = in_flight - pool.pending
                if room >= pool.batch:
                    chunk = [(i + k, blobs[(i + k) % len(blobs)]) for k in range(room)]
                    i += room
                    pool.submit(chunk)
            elif not pool.pending:
                break
            for _, hit in pool.collect(0.05):
                done += 1
                hits += hit
        elapsed = time.perf_counter() - start
    finally:
        pool.close()
    if hits:
        raise SystemExit(f"a blob opened with a wrong key ({hits} times): the benchmark is broken")
    return done * len(secrets) / elapsed, done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement (default 3)")
    ap.add_argument("--workers", default=None, help="worker counts, e.g. 1,2,4 (default 1..number of CPUs)")
    ap.add_argument("--keys", type=int, default=1, help="own keys each blob is tried with (default 1)")
    ap.add_argument("--size", type=int, default=300, help="plaintext bytes per blob (default 300)")
    ap.add_argument("--blobs", type=int, default=512, help="distinct blobs cycled through (default 512)")
    ap.add_argument("--independent", action="store_true",
                    help="also measure k processes working alone (no pool): the machine's own scaling")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    cpus = _cpus()
    counts = [int(w) for w in args.workers.split(",")] if args.workers else list(range(1, cpus + 1))
    if not counts or min(counts) < 1 or args.keys < 1 or args.seconds <= 0:
        ap.error("--workers values, --keys and --seconds must be positive")

    sender_target = keys.PrivateKey.random()
    blobs = [ecies.encrypt(sender_target.public_key, os.urandom(args.size)) for _ in range(args.blobs)]
    own = [keys.PrivateKey.random() for _ in range(args.keys)]
    secrets = [k.secret for k in own]
    decryptors = [ecies.Decryptor(s) for s in secrets]

    from ecdh_bench import PycaDecryptor  # the project's one-core baseline

    baseline = PycaDecryptor(secrets[0])
    parsed = ecies.parse_blob(blobs[0])
    point = parsed.point
    rows: dict[str, float] = {}
    rows["ecdh"] = _one_core_rate(lambda _b: _ec.ecdh_x(secrets[0], point), blobs[:64], args.seconds)
    rows["baseline"] = _one_core_rate(baseline.try_decrypt, blobs, args.seconds)
    rows["inline"] = _one_core_rate(lambda b: opens_any(b, decryptors), blobs, args.seconds) * args.keys
    pools = []
    for w in counts:
        rate, n = _pool_rate(w, secrets, blobs, args.seconds)
        alone = _independent_rate(w, secrets, blobs, args.seconds) if args.independent else None
        pools.append({
            "workers": w, "per_s": round(rate, 1), "per_worker": round(rate / w, 1), "blobs": n,
            "independent_per_s": round(alone, 1) if alone else None,
            "efficiency": round(rate / alone, 3) if alone else None,
        })
    one = next((p["per_s"] for p in pools if p["workers"] == 1), None)
    for p in pools:
        p["speedup_vs_1"] = round(p["per_s"] / one, 2) if one else None
    result = {
        "benchmark": "failed trial decryptions per second (wrong key: ECDH + SHA-512 + HMAC, MAC mismatch)",
        "ecdh_per_s": round(rows["ecdh"], 1),
        "baseline_pyca_per_s": round(rows["baseline"], 1),
        "inline_per_s": round(rows["inline"], 1),
        "pools": pools,
        "keys": args.keys,
        "plaintext_bytes": args.size,
        "seconds_each": args.seconds,
        "cpus": cpus,
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "library": _ec.LIBRARY,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(result["benchmark"])
    print(f"  one core: libsecp256k1 ECDH alone {rows['ecdh']:9.0f} /s")
    print(f"            pyca/cryptography        {rows['baseline']:9.0f} /s   (baseline)")
    print(f"            bmnode inline            {rows['inline']:9.0f} /s   ({rows['inline'] / rows['baseline']:.1f}x baseline)")
    for p in pools:
        alone = (f"   (k lone processes: {p['independent_per_s']:.0f} /s, pool at {p['efficiency']:.0%} of that)"
                 if p["independent_per_s"] else "")
        print(f"  {p['workers']:3d} worker{'s' if p['workers'] > 1 else ' '}:  {p['per_s']:10.0f} /s   "
              f"{p['per_worker']:9.0f} /s per worker   x{p['speedup_vs_1']} vs 1 worker{alone}")
    print(f"  ({cpus} CPUs; {args.keys} key(s); {args.size}-byte plaintexts; {args.seconds}s each)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
