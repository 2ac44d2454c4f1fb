"""The proof-of-work rules of spec section 8: initial hash, trial value, targets, checks.

This is the one implementation of the PoW formula; relay validation, the mailbox, the broker
and the tests all call it. The receiver's target is integer arithmetic exactly as the
reference computes it (8.3); the sender's is the real-number version (8.2).
"""

from __future__ import annotations

import hashlib
import struct
import threading
from dataclasses import dataclass

from bmnode.errors import MalformedMessage, PowError
from bmnode.pow.backend import PowBackend, ProgressCallback
from bmnode.protocol.constants import MIN_TTL, NETWORK_MIN_EXTRA, NETWORK_MIN_NTPB

__all__ = [
    "PowCheck",
    "check_pow",
    "evaluate_pow",
    "expected_trials",
    "initial_hash",
    "sender_target",
    "sender_target_real",
    "solve",
    "target",
    "trial_value",
]

_U64 = struct.Struct(">Q")
_TWO64 = 1 << 64
_MAX_U64 = _TWO64 - 1


def initial_hash(obj_without_nonce: bytes) -> bytes:
    """initialHash = SHA512(object without its 8-byte nonce) (8.1)."""
    return hashlib.sha512(obj_without_nonce).digest()


def trial_value(nonce: int, ih: bytes) -> int:
    """uint64_be(SHA512(SHA512(be64(nonce) || initialHash))[0:8]) (8.1)."""
    if not 0 <= nonce <= _MAX_U64:
        raise PowError(f"nonce out of range: {nonce}")
    d = hashlib.sha512(hashlib.sha512(_U64.pack(nonce) + ih).digest()).digest()
    return _U64.unpack_from(d)[0]


def _difficulty(ntpb: int, extra: int, min_ntpb: int, min_extra: int) -> tuple[int, int]:
    # Values below the network minimum are raised to it (8.1); a test network may lower the
    # minimum, but ntpb never drops below 1 (the divisor must stay positive).
    return max(ntpb, min_ntpb, 1), max(extra, min_extra, 0)


def _check_length(length_with_nonce: int) -> None:
    if length_with_nonce < 1:
        raise PowError(f"object length must be positive, got {length_with_nonce}")


def target(
    length_with_nonce: int,
    ttl: int,
    ntpb: int = NETWORK_MIN_NTPB,
    extra: int = NETWORK_MIN_EXTRA,
    *,
    min_ntpb: int = NETWORK_MIN_NTPB,
    min_extra: int = NETWORK_MIN_EXTRA,
) -> int:
    """Receiver's integer target (8.3): TTL floored at 300, difficulty floored at the minimums.

    ``min_ntpb``/``min_extra`` are the network floors (1000 on the real network; a private
    test network may lower them).
    """
    _check_length(length_with_nonce)
    ntpb, extra = _difficulty(ntpb, extra, min_ntpb, min_extra)
    ttl = max(ttl, MIN_TTL)
    le = length_with_nonce + extra
    return _TWO64 // (ntpb * (le + (ttl * le) // 65536))


def sender_target_real(
    length_with_nonce: int,
    ttl: int,
    ntpb: int = NETWORK_MIN_NTPB,
    extra: int = NETWORK_MIN_EXTRA,
    *,
    min_ntpb: int = NETWORK_MIN_NTPB,
    min_extra: int = NETWORK_MIN_EXTRA,
) -> float:
    """Sender's target with real-number division, evaluated in the reference's order (8.2)."""
    _check_length(length_with_nonce)
    ntpb, extra = _difficulty(ntpb, extra, min_ntpb, min_extra)
    le = length_with_nonce + extra
    return _TWO64 / (ntpb * (le + (ttl * le) / 65536))


def sender_target(
    length_with_nonce: int,
    ttl: int,
    ntpb: int = NETWORK_MIN_NTPB,
    extra: int = NETWORK_MIN_EXTRA,
    *,
    min_ntpb: int = NETWORK_MIN_NTPB,
    min_extra: int = NETWORK_MIN_EXTRA,
) -> int:
    """floor() of the sender's real-number target, computed exactly in integers (for backends).

    ``2^64 / (ntpb * (le + ttl*le/2^16)) == 2^80 / (ntpb * le * (2^16 + ttl))``; a trial
    value (an integer) satisfies the real target iff it is <= this floor.
    """
    _check_length(length_with_nonce)
    if ttl < 0:
        raise PowError(f"a sender's TTL cannot be negative: {ttl}")
    ntpb, extra = _difficulty(ntpb, extra, min_ntpb, min_extra)
    le = length_with_nonce + extra
    return (1 << 80) // (ntpb * le * (65536 + ttl))


def expected_trials(
    length_with_nonce: int,
    ttl: int,
    ntpb: int = NETWORK_MIN_NTPB,
    extra: int = NETWORK_MIN_EXTRA,
    *,
    min_ntpb: int = NETWORK_MIN_NTPB,
    min_extra: int = NETWORK_MIN_EXTRA,
) -> float:
    """Mean number of trials to find a nonce: ntpb * (L + extra) * (1 + TTL/65536) (8.2)."""
    _check_length(length_with_nonce)
    ntpb, extra = _difficulty(ntpb, extra, min_ntpb, min_extra)
    return ntpb * (length_with_nonce + extra) * (1 + max(ttl, 0) / 65536)


@dataclass(frozen=True)
class PowCheck:
    """Everything a receiver computes about one object's PoW at one moment."""

    nonce: int
    expires_time: int
    ttl: int  # expiresTime - now, before the 300 s floor
    trial_value: int
    target: int

    @property
    def sufficient(self) -> bool:
        return self.trial_value <= self.target


def evaluate_pow(
    obj: bytes,
    now: int,
    ntpb: int = NETWORK_MIN_NTPB,
    extra: int = NETWORK_MIN_EXTRA,
    *,
    min_ntpb: int = NETWORK_MIN_NTPB,
    min_extra: int = NETWORK_MIN_EXTRA,
) -> PowCheck:
    """Trial value and receiver's target of a whole object (nonce first) at time ``now``."""
    if len(obj) < 16:
        raise MalformedMessage(f"object too short for nonce and expiresTime: {len(obj)} bytes", len(obj))
    nonce, expires = struct.unpack_from(">QQ", obj)
    ttl = expires - int(now)
    tv = trial_value(nonce, initial_hash(obj[8:]))
    tg = target(len(obj), ttl, ntpb, extra, min_ntpb=min_ntpb, min_extra=min_extra)
    return PowCheck(nonce=nonce, expires_time=expires, ttl=ttl, trial_value=tv, target=tg)


def check_pow(
    obj: bytes,
    now: int,
    ntpb: int = NETWORK_MIN_NTPB,
    extra: int = NETWORK_MIN_EXTRA,
    *,
    min_ntpb: int = NETWORK_MIN_NTPB,
    min_extra: int = NETWORK_MIN_EXTRA,
) -> bool:
    """True iff the object's PoW is sufficient at ``now`` for this difficulty (8.3)."""
    return evaluate_pow(obj, now, ntpb, extra, min_ntpb=min_ntpb, min_extra=min_extra).sufficient


def solve(
    obj_without_nonce: bytes,
    target_value: int,
    backend: PowBackend,
    *,
    start: int = 0,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> bytes:
    """Find a nonce with ``backend`` and return the complete object ``be64(nonce) || body``.

    The backend's answer is re-checked here, so a faulty backend raises PowError instead of
    producing an object that peers would drop.
    """
    ih = initial_hash(obj_without_nonce)
    sol = backend.search(ih, target_value, start, None, progress=progress, cancel=cancel)
    if sol is None:
        raise PowError(f"backend {backend.name!r} found no nonce from {start} for target {target_value}")
    if trial_value(sol.nonce, ih) > target_value:
        raise PowError(f"backend {backend.name!r} returned nonce {sol.nonce}, which does not meet the target")
    return _U64.pack(sol.nonce) + obj_without_nonce
