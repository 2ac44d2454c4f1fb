"""The interface every proof-of-work search backend implements (python, native, opencl).

A backend searches nonces ``start, start+1, ...`` for one whose trial value
(``uint64_be(SHA512(SHA512(be64(nonce) || initial_hash))[0:8])``) is ``<= target``.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Iterable

ProgressCallback = Callable[[int], None]
"""Called now and then from the searching thread with the number of trials done so far."""


@dataclass(frozen=True)
class Solution:
    """A nonce that satisfies the target, its trial value and the trials spent finding it."""

    nonce: int
    trial_value: int
    trials: int


class PowBackend(ABC):
    """One way of searching nonces. Instances are reusable and safe to use from one thread."""

    #: registry name, e.g. "python", "native", "opencl:0"
    name: str = "abstract"

    @classmethod
    def available(cls) -> bool:
        """True when this backend can run on this machine (extension built, device present)."""
        return True

    @abstractmethod
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
        """Search ``count`` nonces from ``start`` (``None``: up to 2**64 - 1).

        Returns the first solution found (single-threaded backends: the smallest nonce in the
        range; parallel ones: any valid nonce), ``None`` when the range holds none, and raises
        :class:`bmnode.errors.PowCancelled` within about 50 ms of ``cancel`` being set.
        """

    @abstractmethod
    def trial_values(self, initial_hash: bytes, nonces: Iterable[int]) -> list[int]:
        """Trial values of the given nonces, computed by this backend's own kernel (for tests)."""

    def close(self) -> None:
        """Release threads, device buffers and queues. Idempotent."""

    def __enter__(self) -> "PowBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
