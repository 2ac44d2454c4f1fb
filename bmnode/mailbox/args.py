"""Checking and converting the arguments of the API-facing mailbox operations (spec 14.3).

Each helper returns the value in the form the mailbox uses or raises :class:`ApiError` with
the reference's number (22 decode errors, 17 labels, 1 blank passphrases, 23 booleans, ...).
"""

from __future__ import annotations

import time
from typing import Any

from bmnode.mailbox.errors import MESSAGES, ApiError
from bmnode.protocol.constants import MSG_TTL_MAX, MSG_TTL_MIN

__all__ = [
    "bool_arg",
    "clamp_ttl",
    "clock",
    "hex_arg",
    "int_arg",
    "label_arg",
    "multiplier_arg",
    "passphrase_arg",
    "text_arg",
]


def clock(now: int | float | None) -> int:
    """``now`` as whole seconds, or the current time when None."""
    return int(time.time()) if now is None else int(now)


def text_arg(value: str | bytes, what: str) -> str:
    """Subject/body text: str as is, bytes decoded as UTF-8 (invalid sequences replaced)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    raise ApiError(22, f"{MESSAGES[22]} - {what} must be text, not {type(value).__name__}")


def label_arg(value: str | bytes) -> str:
    """A label: text, or UTF-8 bytes (error 17 otherwise)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(17) from None
    raise ApiError(17)


def passphrase_arg(value: str | bytes) -> bytes:
    """A passphrase or chan name as bytes (UTF-8 for text); error 1 if blank."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, (bytes, bytearray)):
        raise ApiError(22, f"{MESSAGES[22]} - the passphrase must be text")
    if not value:
        raise ApiError(1)
    return bytes(value)


def hex_arg(value: str | bytes, what: str) -> bytes:
    """msgid/ackData: bytes as is, hex text decoded (error 22 otherwise)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str):
        raise ApiError(22, f"{MESSAGES[22]} - {what} must be a hex string. Had trouble while decoding string: {value!r}")
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise ApiError(22, f"{MESSAGES[22]} - {exc}. Had trouble while decoding string: {value!r}") from None


def bool_arg(value: Any, what: str) -> bool:
    """A real boolean (error 23 otherwise, with the reference's text)."""
    if not isinstance(value, bool):
        raise ApiError(23, f"Bool expected in {what}, saw {type(value)} instead")
    return value


def int_arg(value: Any, what: str) -> int:
    """An integer that is not a bool (error 0 otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(0, f"{what} must be an integer, not {type(value).__name__}")
    return value


def multiplier_arg(value: Any, what: str) -> float:
    """A non-negative difficulty multiplier (totalDifficulty, smallMessageDifficulty)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(0, f"{what} must be a number, not {type(value).__name__}")
    if value < 0:
        raise ApiError(0, f"{what} must not be negative")
    return float(value)


def clamp_ttl(ttl: Any) -> int:
    """A msg/broadcast TTL clamped to 1 hour ... 28 days as the API does (7.3)."""
    ttl = int_arg(ttl, "TTL")
    return min(max(ttl, MSG_TTL_MIN), MSG_TTL_MAX)
