"""Wallet Import Format for private keys in keys.dat (spec 9.7).

``base58(0x80 || priv32 || SHA256(SHA256(0x80 || priv32))[0:4])`` with Bitmessage's integer
base58. Decoding checks the length, the checksum, the 0x80 prefix and the key's range.
"""

from __future__ import annotations

import hashlib

from bmnode.crypto import base58
from bmnode.crypto.keys import validate_private_key
from bmnode.errors import CryptoError, MalformedMessage

PREFIX = b"\x80"


def _checksum(payload: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]


def encode_wif(secret: bytes) -> str:
    """WIF string of a 32-byte private key."""
    payload = PREFIX + validate_private_key(secret)
    return base58.encode_bytes(payload + _checksum(payload))


def decode_wif(text: str) -> bytes:
    """The 32-byte private key in a WIF string; CryptoError if it is not a valid one."""
    if not isinstance(text, str):
        raise CryptoError("WIF must be a string")
    try:
        data = base58.decode_bytes(text.strip())
    except MalformedMessage as e:
        raise CryptoError(f"WIF is not base58: {e}") from None
    if len(data) != 37:
        raise CryptoError(f"WIF decodes to {len(data)} bytes, expected 37")
    payload, check = data[:-4], data[-4:]
    if _checksum(payload) != check:
        raise CryptoError("WIF checksum mismatch")
    if payload[:1] != PREFIX:
        raise CryptoError(f"WIF prefix is 0x{payload[0]:02x}, expected 0x80")
    return validate_private_key(payload[1:])
