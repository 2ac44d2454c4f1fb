"""Quick standalone measure of the native PoW kernels (trials/s): each ISA at 1 and N threads,
against hashlib in the same run. Prints figures; never passes or fails on a time.

    python3 bench/native_kernel_bench.py [--seconds 1.0] [--repeat 3] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bmnode.pow import _native  # noqa: E402
from bmnode.pow.native import kernel_ceiling  # noqa: E402

IH = hashlib.sha512(b"bmnode native kernel bench").digest()


def hashlib_rate(seconds: float) -> float:
    """Trials/s of the plain hashlib loop (one thread), the pure-Python baseline."""
    sha, pack, ih = hashlib.sha512, struct.Struct(">Q").pack, IH
    n, t0 = 0, time.perf_counter()
    while True:
        for nonce in range(n, n + 20000):
            sha(sha(pack(nonce) + ih).digest()).digest()
        n += 20000
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def native_rate(isa: str, threads: int, seconds: float) -> float:
    """Trials/s of a search that cannot succeed (target 0), stopped after ``seconds``."""
    job = _native.Job(isa, IH, 0, 0, 2**64 - 1, threads)
    t0 = time.perf_counter()
    job.start()
    job.wait(seconds)
    job.cancel()
    job.join()
    return job.trials / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    ap.add_argument("--threads", default=f"1,{len(os.sched_getaffinity(0))}")
    ap.add_argument("--isa", default=",".join(_native.supported_isas()))
    a = ap.parse_args()
    threads = sorted({int(t) for t in a.threads.split(",")})
    base = max(hashlib_rate(a.seconds) for _ in range(a.repeat))
    ceiling = kernel_ceiling(a.seconds)
    print(f"cpus={os.cpu_count()} affinity={len(os.sched_getaffinity(0))} isas={_native.supported_isas()}")
    print(f"hashlib      1 thread : {base / 1e6:8.2f} M trials/s")
    for isa in a.isa.split(","):
        one = None
        for t in threads:
            r = max(native_rate(isa, t, a.seconds) for _ in range(a.repeat))
            one = r if t == 1 else one
            extra = f"  x{r / one:.2f} vs 1 thread" if one and t != 1 else ""
            share = ""
            if ceiling and isa == ceiling["isa"]:
                share = f"  {100 * r / t / ceiling['trials_per_second_per_core']:.0f}% of the ceiling"
            print(f"{isa:8s} {t:3d} thread{'s' if t > 1 else ' '}: {r / 1e6:8.2f} M trials/s"
                  f"  ({r / t / base:5.1f}x hashlib per core){extra}{share}")
    if ceiling:
        print(f"ceiling  avx512 per core: {ceiling['trials_per_second_per_core'] / 1e6:8.2f} M trials/s"
              f"  ({ceiling['ops_per_vector_trial']} 512-bit ops per {ceiling['lanes']} trials"
              f" {ceiling['op_counts_per_vector_trial']}, {ceiling['vector_ops_per_second'] / 1e9:.2f} G ops/s"
              f" measured in that mix; = {ceiling['trials_per_second_per_core'] / base:.1f}x hashlib)")
        print(f"peak     avx512 per core: {ceiling['peak_trials_per_second_per_core'] / 1e6:8.2f} M trials/s"
              f"  (the same ops at the {ceiling['peak_vector_ops_per_second'] / 1e9:.2f} G adds/s of an add-only"
              f" stream; = {ceiling['peak_trials_per_second_per_core'] / base:.1f}x hashlib)")


if __name__ == "__main__":
    main()
