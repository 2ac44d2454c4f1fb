"""Relay validation of received objects (spec 7.2): the one function every process uses.

Steps 1-5, 7 and 8 decide whether an object is stored and relayed; step 9 (type-specific
length checks) only decides whether it is also handed to local processing. Step 6 (duplicate
detection) belongs to the inventory. The clock is a parameter so tests and vectors can fix it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Collection

from bmnode.errors import MalformedMessage
from bmnode.pow.target import evaluate_pow
from bmnode.protocol.constants import (
    BROADCAST_MIN_LENGTH,
    BROADCAST_MIN_VERSION,
    GETPUBKEY_MIN_LENGTH,
    MAX_EXPIRED_AGE,
    MAX_OBJECT_PAYLOAD,
    MAX_STREAM,
    MAX_TTL,
    MIN_STREAM,
    NETWORK_MIN_EXTRA,
    NETWORK_MIN_NTPB,
    OBJECT_BROADCAST,
    OBJECT_GETPUBKEY,
    OBJECT_PUBKEY,
    PUBKEY_MAX_LENGTH,
    PUBKEY_MIN_LENGTH,
)
from bmnode.protocol.objects import ObjectHeader, parse_header

__all__ = ["RelayReason", "RelayVerdict", "check_relay", "passes_type_sanity"]

DEFAULT_STREAMS: frozenset[int] = frozenset({1})


class RelayReason(enum.Enum):
    """Why an object was accepted or dropped (7.2)."""

    OK = "ok"
    MALFORMED = "malformed"  # step 1
    OVERSIZE = "oversize"  # step 2
    INSUFFICIENT_POW = "insufficient_pow"  # step 3
    EXPIRES_TOO_FAR = "expires_too_far"  # step 4
    EXPIRED = "expired"  # step 5
    BAD_STREAM = "bad_stream"  # step 7
    STREAM_NOT_JOINED = "stream_not_joined"  # step 8
    NOT_PROCESSABLE = "not_processable"  # step 9: stored and relayed, not processed locally


@dataclass(frozen=True)
class RelayVerdict:
    """The decision: ``accept`` = store and relay; ``process`` = also hand to local processing."""

    accept: bool
    process: bool
    reason: RelayReason
    message: str
    header: ObjectHeader | None = None

    def __bool__(self) -> bool:
        return self.accept

    def to_dict(self) -> dict[str, Any]:
        return {
            "accept": self.accept,
            "process": self.process,
            "reason": self.reason.value,
            "message": self.message,
        }


def _drop(reason: RelayReason, message: str, header: ObjectHeader | None = None) -> RelayVerdict:
    return RelayVerdict(False, False, reason, message, header)


def passes_type_sanity(header: ObjectHeader, length: int) -> bool:
    """Step 9: the whole-object length (and version) bounds for local processing."""
    t = header.object_type
    if t == OBJECT_GETPUBKEY:
        return length >= GETPUBKEY_MIN_LENGTH
    if t == OBJECT_PUBKEY:
        return PUBKEY_MIN_LENGTH <= length <= PUBKEY_MAX_LENGTH
    if t == OBJECT_BROADCAST:
        return length >= BROADCAST_MIN_LENGTH and header.version >= BROADCAST_MIN_VERSION
    return True


def check_relay(
    obj: bytes,
    now: int,
    *,
    streams: Collection[int] = DEFAULT_STREAMS,
    ntpb: int = NETWORK_MIN_NTPB,
    extra: int = NETWORK_MIN_EXTRA,
    accept_mismatch: bool = False,
    max_payload: int = MAX_OBJECT_PAYLOAD,
) -> RelayVerdict:
    """Apply 7.2 steps 1-5, 7, 8 (drop) and 9 (store and relay, don't process) at time ``now``.

    ``ntpb``/``extra`` are the network minimum difficulty, used both as the values and as the
    floor below which nothing is accepted: 1000/1000 on the real network; a private test
    network may pass smaller values. ``accept_mismatch`` is the reference's setting that
    accepts objects of streams not joined.
    """
    obj = bytes(obj)
    now = int(now)
    try:
        header = parse_header(obj)
    except MalformedMessage as exc:
        return _drop(RelayReason.MALFORMED, f"malformed object header: {exc}")
    payload_len = len(obj) - header.header_length
    if payload_len > max_payload:
        return _drop(RelayReason.OVERSIZE, f"object payload of {payload_len} bytes exceeds {max_payload}", header)
    pow_check = evaluate_pow(obj, now, ntpb, extra, min_ntpb=ntpb, min_extra=extra)
    if not pow_check.sufficient:
        return _drop(
            RelayReason.INSUFFICIENT_POW,
            f"insufficient proof of work: trial value {pow_check.trial_value} > target {pow_check.target}",
            header,
        )
    ttl = header.expires_time - now
    if ttl > MAX_TTL:
        return _drop(RelayReason.EXPIRES_TOO_FAR, f"expires {ttl} s from now, more than {MAX_TTL} s", header)
    if ttl < -MAX_EXPIRED_AGE:
        return _drop(RelayReason.EXPIRED, f"expired {-ttl} s ago, more than {MAX_EXPIRED_AGE} s", header)
    if not MIN_STREAM <= header.stream <= MAX_STREAM:
        return _drop(RelayReason.BAD_STREAM, f"invalid stream number {header.stream}", header)
    if header.stream not in streams and not accept_mismatch:
        return _drop(RelayReason.STREAM_NOT_JOINED, f"stream {header.stream} is not one this node joined", header)
    if not passes_type_sanity(header, len(obj)):
        return RelayVerdict(
            True,
            False,
            RelayReason.NOT_PROCESSABLE,
            f"{header.type_name} v{header.version} of {len(obj)} bytes fails the type sanity check: "
            "stored and relayed, but not processed",
            header,
        )
    return RelayVerdict(True, True, RelayReason.OK, "ok", header)
