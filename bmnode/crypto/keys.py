"""secp256k1 key pairs (spec 9.1): validated private scalars and public keys in their wire forms.

Forms of a public key: 65 bytes ``04||X||Y`` (ripe input, API), 64 bytes ``X||Y`` (inside
pubkey/msg/broadcast payloads). :class:`PublicKey` parses either once and keeps the library's
parsed point, so repeated use (verification, encryption) costs no re-parse.
"""

from __future__ import annotations

import os

from bmnode.crypto import secp256k1 as _ec
from bmnode.errors import CryptoError

ORDER = _ec.ORDER


def _as_bytes(data: object, what: str) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise CryptoError(f"{what} must be bytes, not {type(data).__name__}")


def validate_private_key(secret: bytes) -> bytes:
    """Return ``secret`` as bytes if it is a 32-byte scalar in [1, n-1]; else CryptoError."""
    secret = _as_bytes(secret, "private key")
    if len(secret) != 32:
        raise CryptoError(f"private key must be 32 bytes, got {len(secret)}")
    if not _ec.seckey_valid(secret):
        raise CryptoError("private key out of range (must be in [1, n-1])")
    return secret


class PublicKey:
    """A public key known to be a point on secp256k1."""

    __slots__ = ("point",)

    def __init__(self, point: _ec.Point) -> None:
        self.point = point

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKey:
        """Parse the 65-byte (04||X||Y) or 64-byte (X||Y) form; CryptoError if not on the curve."""
        data = _as_bytes(data, "public key")
        if len(data) == 64:
            data = b"\x04" + data
        elif len(data) != 65:
            raise CryptoError(f"public key must be 64 or 65 bytes, got {len(data)}")
        return cls(_ec.point_from_bytes65(data))

    @property
    def bytes65(self) -> bytes:
        """04||X||Y."""
        return self.point.raw

    @property
    def bytes64(self) -> bytes:
        """X||Y, the payload form."""
        return self.point.raw[1:]

    @property
    def x(self) -> bytes:
        """X coordinate, 32 bytes."""
        return self.point.raw[1:33]

    @property
    def y(self) -> bytes:
        """Y coordinate, 32 bytes."""
        return self.point.raw[33:65]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.point.raw == self.point.raw

    def __hash__(self) -> int:
        return hash(self.point.raw)

    def __repr__(self) -> str:
        return f"PublicKey({self.point.raw.hex()})"


class PrivateKey:
    """A validated private scalar with its public key (computed on first use)."""

    __slots__ = ("secret", "_public")

    def __init__(self, secret: bytes) -> None:
        self.secret = validate_private_key(secret)
        self._public: PublicKey | None = None

    @classmethod
    def random(cls) -> PrivateKey:
        """A fresh random key."""
        return cls(random_private_key())

    @property
    def public_key(self) -> PublicKey:
        """The matching public key (derived once)."""
        if self._public is None:
            self._public = PublicKey(_ec.point_from_secret(self.secret))
        return self._public

    def __repr__(self) -> str:  # never print the secret
        return f"PrivateKey(public={self.public_key.bytes65.hex()[:18]}...)"


def random_private_key() -> bytes:
    """A uniformly random valid private key from the OS CSPRNG."""
    while True:
        secret = os.urandom(32)
        if _ec.seckey_valid(secret):
            return secret


def public_key(secret: bytes) -> bytes:
    """65-byte public key 04||X||Y of a private key."""
    return _ec.point_from_secret(validate_private_key(secret)).raw


def public_key64(secret: bytes) -> bytes:
    """64-byte public key X||Y (the payload form, without the 04)."""
    return public_key(secret)[1:]


def parse_public_key(data: bytes) -> PublicKey:
    """Parse and validate a 64- or 65-byte public key."""
    return PublicKey.from_bytes(data)


def as_public_key(key: PublicKey | bytes) -> PublicKey:
    """Accept a PublicKey or its 64/65-byte encoding."""
    return key if isinstance(key, PublicKey) else PublicKey.from_bytes(key)


def as_private_key(key: PrivateKey | bytes) -> PrivateKey:
    """Accept a PrivateKey or its 32-byte encoding."""
    return key if isinstance(key, PrivateKey) else PrivateKey(key)
