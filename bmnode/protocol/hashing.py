"""The hashes of spec section 2.7: SHA-512, double SHA-512, checksums, inventory hashes, ripe."""

from __future__ import annotations

import hashlib


def sha512(data: bytes) -> bytes:
    return hashlib.sha512(data).digest()


def double_sha512(data: bytes) -> bytes:
    """dSHA512(x) = SHA512(SHA512(x))."""
    return hashlib.sha512(hashlib.sha512(data).digest()).digest()


def checksum(payload: bytes) -> bytes:
    """Message header checksum: SHA512(payload)[0:4]."""
    return hashlib.sha512(payload).digest()[:4]


def inventory_hash(obj: bytes) -> bytes:
    """Inventory vector of a whole object (nonce included): dSHA512(obj)[0:32]."""
    return double_sha512(obj)[:32]


def _ripemd160_impl():
    try:
        hashlib.new("ripemd160", b"")
        return lambda data: hashlib.new("ripemd160", data).digest()
    except ValueError:  # OpenSSL 3 without the legacy provider
        from bmnode.protocol._ripemd160 import ripemd160 as pure

        return pure


_ripemd160 = _ripemd160_impl()


def ripemd160(data: bytes) -> bytes:
    return _ripemd160(data)


def ripe_of(sign_pub65: bytes, enc_pub65: bytes) -> bytes:
    """ripe = RIPEMD160(SHA512(pubSigningKey65 || pubEncryptionKey65)), 20 bytes."""
    return ripemd160(hashlib.sha512(sign_pub65 + enc_pub65).digest())
