"""Bitmessage base58 (spec 9.3): a plain integer conversion, most significant digit first.

Unlike Bitcoin's Base58Check, leading zero bytes are not written as leading ``1`` digits and
``encode(0) == "1"``. Decoding long strings uses divide and conquer so that hostile input
cannot make it quadratic.
"""

from __future__ import annotations

from bmnode.errors import MalformedMessage

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
_CHUNK = 64  # digits converted directly; longer strings are split in halves


def encode(n: int) -> str:
    """Base58 digits of the non-negative integer ``n``."""
    if n < 0:
        raise ValueError("base58 encodes non-negative integers only")
    if n == 0:
        return ALPHABET[0]
    out = []
    while n:
        n, rem = divmod(n, 58)
        out.append(ALPHABET[rem])
    return "".join(reversed(out))


def _value(s: str, lo: int, hi: int) -> int:
    if hi - lo <= _CHUNK:
        n = 0
        for c in s[lo:hi]:
            n = n * 58 + _INDEX[c]
        return n
    mid = (lo + hi) // 2
    return _value(s, lo, mid) * 58 ** (hi - mid) + _value(s, mid, hi)


def decode(s: str) -> int:
    """Integer value of base58 digits; MalformedMessage (with the offset) on a foreign character.

    The empty string decodes to 0, like the reference.
    """
    for i, c in enumerate(s):
        if c not in _INDEX:
            raise MalformedMessage(f"character {c!r} is not in the base58 alphabet", i)
    return _value(s, 0, len(s))


def int_to_bytes(n: int) -> bytes:
    """Minimal big-endian bytes of ``n`` (empty for 0)."""
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def encode_bytes(data: bytes) -> str:
    """Base58 of the big-endian integer value of ``data`` (leading zero bytes are lost)."""
    return encode(int.from_bytes(data, "big"))


def decode_bytes(s: str) -> bytes:
    """Minimal big-endian bytes of the base58 value of ``s``."""
    return int_to_bytes(decode(s))
