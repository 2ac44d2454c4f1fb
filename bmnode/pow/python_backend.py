"""Pure-Python PoW search on hashlib: always available, the baseline every benchmark compares to.

Single-threaded; it scans nonces in order, so the solution it returns is the smallest nonce at
or after ``start`` whose trial value meets the target.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import time
from typing import Iterable

from bmnode.errors import PowCancelled, PowError
from bmnode.pow.backend import PowBackend, ProgressCallback, Solution

_U64 = struct.Struct(">Q")
_NONCE_LIMIT = 1 << 64

#: Nonces per inner chunk: about 10 ms at ~1 M trials/s, so cancel is seen well within 50 ms.
CHUNK = 8192
#: Seconds between progress callbacks.
PROGRESS_INTERVAL = 0.1


class PythonBackend(PowBackend):
    """hashlib SHA-512 in a plain loop; one thread."""

    name = "python"

    def __init__(self, **_options: object) -> None:
        # Accepts and ignores options (e.g. threads=) so the registry can pass them uniformly.
        pass

    @classmethod
    def available(cls) -> bool:
        return True

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
        """Scan ``start .. start+count-1`` in order; the first hit is the smallest nonce."""
        ih = bytes(initial_hash)
        if len(ih) != 64:
            raise PowError(f"initial hash must be 64 bytes, got {len(ih)}")
        if target < 0:
            raise PowError(f"target must be non-negative, got {target}")
        if not 0 <= start < _NONCE_LIMIT:
            raise PowError(f"start nonce out of range: {start}")
        end = _NONCE_LIMIT if count is None else min(_NONCE_LIMIT, start + max(count, 0))
        if target >= _NONCE_LIMIT - 1:  # every trial value qualifies
            if start >= end:
                return None
            return Solution(start, self.trial_values(ih, [start])[0], 1)
        # digest < bound (bytes order) <=> uint64_be(digest[:8]) <= target, without slicing:
        # a 64-byte digest compares below the 8-byte bound iff its first 8 bytes are smaller.
        bound = (target + 1).to_bytes(8, "big")
        sha = hashlib.sha512
        pack = _U64.pack
        monotonic = time.monotonic
        next_report = monotonic() + PROGRESS_INTERVAL
        lo = start
        while lo < end:
            if cancel is not None and cancel.is_set():
                raise PowCancelled(f"search cancelled after {lo - start} trials")
            hi = min(lo + CHUNK, end)
            for nonce in range(lo, hi):
                if sha(sha(pack(nonce) + ih).digest()).digest() < bound:
                    tv = _U64.unpack_from(sha(sha(pack(nonce) + ih).digest()).digest())[0]
                    if progress is not None:
                        progress(nonce - start + 1)
                    return Solution(nonce, tv, nonce - start + 1)
            lo = hi
            if progress is not None and monotonic() >= next_report:
                progress(lo - start)
                next_report = monotonic() + PROGRESS_INTERVAL
        return None

    def trial_values(self, initial_hash: bytes, nonces: Iterable[int]) -> list[int]:
        """Trial values of ``nonces`` with the same hashlib calls the search uses."""
        ih = bytes(initial_hash)
        sha = hashlib.sha512
        out = []
        for n in nonces:
            if not 0 <= n < _NONCE_LIMIT:
                raise PowError(f"nonce out of range: {n}")
            out.append(_U64.unpack_from(sha(sha(_U64.pack(n) + ih).digest()).digest())[0])
        return out
