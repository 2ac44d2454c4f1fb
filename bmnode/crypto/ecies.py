"""ECIES as on the Bitmessage wire (spec 9.9): secp256k1 ECDH, SHA-512 KDF, AES-256-CBC, HMAC-SHA256.

Blob: ``IV(16) || 02ca || len(X) || X || len(Y) || Y || AES-256-CBC(PKCS#7) || MAC(32)`` with
``key_e || key_m = SHA512(x of r·K)`` and the MAC over everything before it.

Decryption is the node's hot path (one attempt per incoming msg/broadcast per owned key), so a
blob is parsed once (:func:`parse_blob`, the ephemeral point validated once) and then tried with
each key through a :class:`Decryptor`; the MAC is checked in constant time before anything is
decrypted. Every failure, whatever its cause, is :class:`DecryptionFailed`.
"""

from __future__ import annotations

import hashlib
import os
from hmac import compare_digest

from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers.algorithms import AES
from cryptography.hazmat.primitives.ciphers.modes import CBC
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.hmac import HMAC

from bmnode.crypto import secp256k1 as _ec
from bmnode.crypto.keys import (
    PrivateKey,
    PublicKey,
    as_private_key,
    as_public_key,
    random_private_key,
    validate_private_key,
)
from bmnode.errors import CryptoError, DecryptionFailed

CURVE_ID = 0x02CA
IV_SIZE = 16
BLOCK = 16
MAC_SIZE = 32
#: IV + curve id and two coordinate lengths + one cipher block + MAC. Coordinates count for
#: nothing here: the reference's pyelliptic writes them without leading zeros (a 31-byte X in
#: one blob of 256), so a one-block blob can be shorter than 70 + 64 bytes.
MIN_BLOB_SIZE = IV_SIZE + 6 + BLOCK + MAC_SIZE

_POINT_X_PREFIX = b"\x02\xca\x00\x20"
_LEN32 = b"\x00\x20"
_sha512 = hashlib.sha512
_SHA256 = SHA256()


def shared_keys(secret: bytes, point: _ec.Point) -> tuple[bytes, bytes]:
    """(key_e, key_m) = SHA512(X of secret·point) split in two halves."""
    h = _sha512(_ec.ecdh_x(secret, point)).digest()
    return h[:32], h[32:]


def _mac(key_m: bytes, data: bytes | memoryview) -> bytes:
    h = HMAC(key_m, _SHA256)
    h.update(data)
    return h.finalize()


def encode_point(pub65: bytes) -> bytes:
    """The 70-byte ECIES form of a 65-byte public key: 02ca 0020 X 0020 Y."""
    return _POINT_X_PREFIX + pub65[1:33] + _LEN32 + pub65[33:65]


def encrypt(
    pubkey: PublicKey | bytes,
    plaintext: bytes,
    *,
    ephemeral_privkey: bytes | None = None,
    iv: bytes | None = None,
) -> bytes:
    """Encrypt ``plaintext`` to ``pubkey``; ephemeral key and IV are random unless given (tests)."""
    recipient = as_public_key(pubkey)
    r = random_private_key() if ephemeral_privkey is None else validate_private_key(ephemeral_privkey)
    if iv is None:
        iv = os.urandom(IV_SIZE)
    elif not isinstance(iv, (bytes, bytearray)) or len(iv) != IV_SIZE:
        raise CryptoError("IV must be 16 bytes")
    if not isinstance(plaintext, (bytes, bytearray, memoryview)):
        raise CryptoError("plaintext must be bytes")
    ephemeral = _ec.point_from_secret(r)
    key_e, key_m = shared_keys(r, recipient.point)
    pad = BLOCK - len(plaintext) % BLOCK
    enc = Cipher(AES(key_e), CBC(bytes(iv))).encryptor()
    ciphertext = enc.update(bytes(plaintext) + bytes((pad,)) * pad) + enc.finalize()
    body = bytes(iv) + encode_point(ephemeral.raw) + ciphertext
    return body + _mac(key_m, body)


def _coordinate(blob: bytes, pos: int, what: str) -> tuple[bytes, int]:
    """Read a u16 length and that many bytes as a coordinate, left-padded/trimmed to 32."""
    if pos + 2 > len(blob):
        raise DecryptionFailed(f"blob truncated in the length of {what} at offset {pos}")
    n = (blob[pos] << 8) | blob[pos + 1]
    pos += 2
    if pos + n > len(blob):
        raise DecryptionFailed(f"blob truncated in {what} ({n} bytes declared) at offset {pos}")
    value = blob[pos : pos + n]
    if n > 32:
        if value[: n - 32].count(0) != n - 32:
            raise DecryptionFailed(f"{what} longer than 32 bytes at offset {pos}")
        value = value[n - 32 :]
    elif n < 32:
        value = bytes(32 - n) + value
    return value, pos + n


class ParsedBlob:
    """An encrypted blob split into its fields, with the ephemeral point already validated."""

    __slots__ = ("iv", "point", "ciphertext", "mac", "signed")

    def __init__(
        self, iv: bytes, point: _ec.Point, ciphertext: memoryview, mac: bytes, signed: memoryview
    ) -> None:
        self.iv = iv
        self.point = point
        self.ciphertext = ciphertext
        self.mac = mac
        #: everything the MAC covers (all but the last 32 bytes)
        self.signed = signed

    def open(self, key_e: bytes, key_m: bytes) -> bytes:
        """Check the MAC (constant time) then decrypt and unpad; DecryptionFailed otherwise."""
        if not compare_digest(_mac(key_m, self.signed), self.mac):
            raise DecryptionFailed("MAC mismatch")
        dec = Cipher(AES(key_e), CBC(self.iv)).decryptor()
        padded = dec.update(self.ciphertext) + dec.finalize()
        pad = padded[-1]
        if not 1 <= pad <= BLOCK or padded[-pad:].count(pad) != pad:
            raise DecryptionFailed("invalid PKCS#7 padding")
        return padded[:-pad]


def parse_blob(blob: bytes) -> ParsedBlob:
    """Split a blob into IV, ephemeral point, ciphertext and MAC; DecryptionFailed if malformed."""
    if not isinstance(blob, bytes):
        if not isinstance(blob, (bytearray, memoryview)):
            raise DecryptionFailed(f"blob must be bytes, not {type(blob).__name__}")
        blob = bytes(blob)
    size = len(blob)
    if size < MIN_BLOB_SIZE:
        raise DecryptionFailed(f"blob of {size} bytes is shorter than the minimum {MIN_BLOB_SIZE}")
    # The curve id (bytes 16-18) is ignored, as the reference does; it is covered by the MAC.
    if blob[18:20] == _LEN32 and blob[52:54] == _LEN32:  # what every sender writes
        x, y, pos = blob[20:52], blob[54:86], 86
    else:
        x, pos = _coordinate(blob, 18, "ephemeral X")
        y, pos = _coordinate(blob, pos, "ephemeral Y")
    ct_len = size - MAC_SIZE - pos
    if ct_len < BLOCK or ct_len % BLOCK:
        raise DecryptionFailed(f"ciphertext length {ct_len} is not a positive multiple of 16 (offset {pos})")
    try:
        point = _ec.point_from_bytes65(b"\x04" + x + y)
    except CryptoError:
        raise DecryptionFailed("ephemeral public key is not a point on secp256k1") from None
    end = size - MAC_SIZE
    view = memoryview(blob)
    return ParsedBlob(blob[:IV_SIZE], point, view[pos:end], blob[end:], view[:end])


class Decryptor:
    """A private key prepared for repeated trial decryption (validated once)."""

    __slots__ = ("_secret",)

    def __init__(self, privkey: PrivateKey | bytes) -> None:
        self._secret = as_private_key(privkey).secret

    def decrypt(self, blob: bytes | ParsedBlob) -> bytes:
        """Plaintext, or DecryptionFailed if this key cannot open the blob."""
        return _decrypt(self._secret, blob)

    def try_decrypt(self, blob: bytes | ParsedBlob) -> bytes | None:
        """Plaintext, or None when this key cannot open the blob (the trial-decryption form)."""
        try:
            return self.decrypt(blob)
        except DecryptionFailed:
            return None


def decrypt(privkey: PrivateKey | bytes, blob: bytes | ParsedBlob) -> bytes:
    """Decrypt ``blob`` with ``privkey``; DecryptionFailed on any failure (bad key, MAC, format)."""
    try:
        secret = as_private_key(privkey).secret
    except CryptoError as e:
        raise DecryptionFailed(f"unusable private key: {e}") from None
    return _decrypt(secret, blob)


def _decrypt(secret: bytes, blob: bytes | ParsedBlob) -> bytes:
    """The one decryption path: parse (unless parsed), ECDH, KDF, MAC check, AES, unpad."""
    parsed = blob if isinstance(blob, ParsedBlob) else parse_blob(blob)
    key_e, key_m = shared_keys(secret, parsed.point)
    return parsed.open(key_e, key_m)
