"""The native PoW backend: the compiled multi-buffer double-SHA-512 kernel of ``pow_ext/``.

``bmnode.pow._native`` (Cython + C) computes many nonces at once: AVX-512 (8 lanes per
vector, two vectors interleaved), AVX2 (4 lanes) or portable scalar code, picked at run time
from the CPU's features, on N C threads that run without the GIL. Threads take chunks of
nonces in increasing order and never skip a chunk below the best solution found, so the nonce
returned is the smallest solution in the range whatever the thread count. Every solution is
re-checked with the reference formula (hashlib) before it is returned.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Iterable

from bmnode.errors import BackendUnavailable, PowCancelled, PowError
from bmnode.pow.backend import PowBackend, ProgressCallback, Solution
from bmnode.pow.target import trial_value

try:
    from bmnode.pow import _native
except ImportError as _e:  # extension not built
    _native = None
    _IMPORT_ERROR: ImportError | None = _e
else:
    _IMPORT_ERROR = None

__all__ = ["ISAS", "NativeBackend", "default_threads", "kernel_ceiling", "supported_isas"]

#: every ISA the extension knows, fastest first
ISAS = ("avx512", "avx2", "scalar")
_NONCE_LIMIT = 1 << 64
_MAX_U64 = _NONCE_LIMIT - 1
#: seconds between checks of the cancel event and of completion (cancel latency budget: 50 ms)
POLL_INTERVAL = 0.01
#: seconds between progress callbacks
PROGRESS_INTERVAL = 0.1
#: upper bound on threads per search (a sanity limit, not a tuning knob)
MAX_THREADS = 1024


def _require_module() -> Any:
    if _native is None:
        raise BackendUnavailable(
            "the native PoW extension bmnode.pow._native is not built "
            f"({_IMPORT_ERROR}); build it with: python3 setup.py build_ext --inplace, or pip install ."
        )
    return _native


def supported_isas() -> list[str]:
    """ISAs this build can run on this CPU, fastest first; [] when the extension is missing."""
    if _native is None:
        return []
    return list(_native.supported_isas())


def kernel_ceiling(seconds: float = 0.5) -> dict[str, Any] | None:
    """This core's limits for the AVX-512 kernel: its vector operations per trial (counted from
    the kernel's source) against the rate one core sustains in that operation mix and in adds
    alone (the paper peak), both measured now for ``seconds`` each. None where the extension or
    AVX-512 is missing. Benchmarks only."""
    if _native is None or "avx512" not in _native.supported_isas():
        return None
    rate = _native.vector_mix_rate("avx512", seconds, "kernel")
    peak = _native.vector_mix_rate("avx512", seconds, "peak")
    if not rate or not peak:
        return None
    counts = dict(_native.kernel_op_counts()[0])
    ops = sum(counts.values())
    lanes = int(_native.lanes("avx512") or 8)
    return {
        "isa": "avx512",
        "op_counts_per_vector_trial": counts,
        "ops_per_vector_trial": ops,
        "lanes": lanes,
        "vector_ops_per_second": rate,
        "trials_per_second_per_core": rate * lanes / ops,
        "peak_vector_ops_per_second": peak,
        "peak_trials_per_second_per_core": peak * lanes / ops,
    }


def default_threads() -> int:
    """All the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class NativeBackend(PowBackend):
    """Multi-threaded SIMD search; ``isa`` forces "avx512", "avx2" or "scalar"."""

    name = "native"

    def __init__(self, threads: int | None = None, isa: str | None = None) -> None:
        mod = _require_module()
        supported = list(mod.supported_isas())
        if isa is None:
            isa = supported[0]
        elif isa not in ISAS:
            raise BackendUnavailable(f"unknown ISA {isa!r}; choose one of {', '.join(ISAS)}")
        elif isa not in supported:
            raise BackendUnavailable(f"ISA {isa!r} is not supported on this CPU (supported: {', '.join(supported)})")
        if threads is None:
            threads = default_threads()
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
            raise PowError(f"threads must be an integer from 1 to {MAX_THREADS}, got {threads!r}")
        #: the ISA whose kernel this backend runs
        self.isa: str = isa
        #: C threads per search
        self.threads: int = threads
        self._closed = False
        self._jobs: set[Any] = set()  # running jobs, so close() can cancel them
        self._lock = threading.Lock()

    @classmethod
    def available(cls) -> bool:
        return _native is not None

    @staticmethod
    def supported_isas() -> list[str]:
        """ISAs usable here, fastest first."""
        return supported_isas()

    def search(
        self,
        initial_hash: bytes,
        target: int,
        start: int = 0,
        count: int | None = None,
        *,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Solution | None:
        """Search ``start .. start+count-1`` on ``self.threads`` threads; the smallest solution.

        Polls ``cancel`` every 10 ms (the C threads check their stop flag every 1024 nonces)
        and calls ``progress`` from this thread about every 0.1 s.
        """
        mod = _require_module()
        if self._closed:
            raise PowError("this native backend has been closed")
        ih = bytes(initial_hash)
        if len(ih) != 64:
            raise PowError(f"initial hash must be 64 bytes, got {len(ih)}")
        if not isinstance(target, int) or target < 0:
            raise PowError(f"target must be a non-negative integer, got {target!r}")
        if not isinstance(start, int) or not 0 <= start < _NONCE_LIMIT:
            raise PowError(f"start nonce out of range: {start!r}")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise PowError(f"count must be an integer or None, got {count!r}")
        end = _NONCE_LIMIT if count is None else min(_NONCE_LIMIT, start + max(count, 0))
        if end <= start:
            return None
        if cancel is not None and cancel.is_set():
            raise PowCancelled("search cancelled before it started")
        job = mod.Job(self.isa, ih, min(target, _MAX_U64), start, end - 1, self.threads)
        with self._lock:
            self._jobs.add(job)
        try:
            try:
                job.start()
            except RuntimeError as e:  # no thread could be created
                raise PowError(f"native search could not start: {e}") from e
            next_report = time.monotonic() + PROGRESS_INTERVAL
            while not job.wait(POLL_INTERVAL):
                if (cancel is not None and cancel.is_set()) or self._closed:
                    job.cancel()
                    job.join()
                    raise PowCancelled(f"search cancelled after {job.trials} trials")
                if progress is not None and time.monotonic() >= next_report:
                    progress(job.trials)
                    next_report = time.monotonic() + PROGRESS_INTERVAL
            job.join()
            found = job.result()
            trials = job.trials
        finally:
            job.cancel()
            job.join()
            with self._lock:
                self._jobs.discard(job)
        if progress is not None:
            progress(trials)
        if found is None:
            if self._closed:
                raise PowCancelled("search cancelled: the backend was closed")
            return None
        nonce, tv = found
        # Never hand out a nonce the reference formula does not accept.
        ref = trial_value(nonce, ih)
        if ref != tv or ref > target or not start <= nonce < end:
            raise PowError(
                f"native {self.isa} kernel returned nonce {nonce} with trial value {tv}, "
                f"but hashlib gives {ref} (target {target}, range {start}..{end - 1})"
            )
        return Solution(nonce, tv, trials)

    def trial_values(self, initial_hash: bytes, nonces: Iterable[int]) -> list[int]:
        """Trial values computed by this backend's ISA kernel (not hashlib)."""
        mod = _require_module()
        ih = bytes(initial_hash)
        if len(ih) != 64:
            raise PowError(f"initial hash must be 64 bytes, got {len(ih)}")
        ns = list(nonces)
        for n in ns:
            if not isinstance(n, int) or not 0 <= n < _NONCE_LIMIT:
                raise PowError(f"nonce out of range: {n!r}")
        return mod.trial_values(self.isa, ih, ns)

    def close(self) -> None:
        """Cancels searches still running on this backend (they raise PowCancelled). Idempotent."""
        self._closed = True
        with self._lock:
            jobs = list(self._jobs)
        for job in jobs:
            job.cancel()

    def __repr__(self) -> str:
        return f"NativeBackend(threads={self.threads}, isa={self.isa!r})"
