"""ECDSA over secp256k1 with strict DER encoding (spec 9.10).

Signing uses SHA-256 by default and RFC 6979 deterministic ``k`` for the chosen digest (HMAC
with that digest), computed here and handed to libsecp256k1, which does the curve arithmetic.
By default the result is normalised to low S (as libsecp256k1 always produces); ``low_s=False``
gives the textbook RFC 6979 signature, identical to pyca/cryptography's ``deterministic_signing``
and python-ecdsa (what the test vectors contain).

Verification accepts SHA-1 or SHA-256 (the reference tries both), accepts high S, rejects
non-DER encodings, and never raises on a bad signature or key: it returns False.
"""

from __future__ import annotations

import hashlib
import hmac

from bmnode.crypto import secp256k1 as _ec
from bmnode.crypto.keys import PrivateKey, PublicKey, as_private_key, as_public_key
from bmnode.errors import CryptoError

ORDER = _ec.ORDER
DIGESTS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}
#: What a receiving node must accept (SHA-1 first, like the reference).
ACCEPTED_DIGESTS = ("sha1", "sha256")


def _hash(data: bytes, digest: str) -> bytes:
    try:
        return DIGESTS[digest](data).digest()
    except KeyError:
        raise CryptoError(f"unsupported signature digest {digest!r} (use 'sha1' or 'sha256')") from None


def _representative(h: bytes) -> bytes:
    """The digest as the 32-byte big-endian message representative (SHA-1: zero-extended)."""
    return h.rjust(32, b"\x00")


def rfc6979_nonce(secret: bytes, h: bytes, digest: str = "sha256") -> bytes:
    """RFC 6979 section 3.2 ``k`` for secp256k1 (qlen 256), HMAC with ``digest``, 32 bytes."""
    hash_fn = DIGESTS[digest]
    hlen = hash_fn().digest_size
    h1 = (int.from_bytes(h, "big") % ORDER).to_bytes(32, "big")  # bits2octets; hlen <= qlen
    v = b"\x01" * hlen
    k = b"\x00" * hlen
    k = hmac.digest(k, v + b"\x00" + secret + h1, hash_fn)
    v = hmac.digest(k, v, hash_fn)
    k = hmac.digest(k, v + b"\x01" + secret + h1, hash_fn)
    v = hmac.digest(k, v, hash_fn)
    while True:
        t = b""
        while len(t) < 32:
            v = hmac.digest(k, v, hash_fn)
            t += v
        candidate = int.from_bytes(t[:32], "big")  # bits2int: leftmost 256 bits
        if 1 <= candidate < ORDER:
            return candidate.to_bytes(32, "big")
        k = hmac.digest(k, v + b"\x00", hash_fn)
        v = hmac.digest(k, v, hash_fn)


def _der_int(value: int) -> bytes:
    body = value.to_bytes((value.bit_length() + 8) // 8, "big")
    return b"\x02" + bytes((len(body),)) + body


def encode_der(r: int, s: int) -> bytes:
    """DER ``SEQUENCE { INTEGER r, INTEGER s }`` with minimal encodings."""
    body = _der_int(r) + _der_int(s)
    return b"\x30" + bytes((len(body),)) + body


def decode_der(sig: bytes) -> tuple[int, int]:
    """Strict DER decode of an ECDSA signature; CryptoError on anything OpenSSL would refuse.

    Rejected: wrong tags, long-form or wrong lengths, trailing bytes, negative or non-minimal
    integers, integers longer than 33 bytes.
    """
    if not isinstance(sig, (bytes, bytearray, memoryview)):
        raise CryptoError("signature must be bytes")
    sig = bytes(sig)
    if len(sig) < 8 or sig[0] != 0x30:
        raise CryptoError("signature is not a DER SEQUENCE")
    if sig[1] & 0x80:
        raise CryptoError("signature SEQUENCE uses a long-form length")
    if sig[1] != len(sig) - 2:
        raise CryptoError(f"signature SEQUENCE length {sig[1]} does not match {len(sig) - 2} bytes of content")
    pos = 2
    values = []
    for name in ("r", "s"):
        if pos + 2 > len(sig) or sig[pos] != 0x02:
            raise CryptoError(f"signature {name} is not an INTEGER (offset {pos})")
        n = sig[pos + 1]
        pos += 2
        if n == 0 or n > 33 or pos + n > len(sig):
            raise CryptoError(f"signature {name} has a bad length {n} (offset {pos - 1})")
        body = sig[pos : pos + n]
        if body[0] & 0x80:
            raise CryptoError(f"signature {name} is negative (offset {pos})")
        if n > 1 and body[0] == 0 and not body[1] & 0x80:
            raise CryptoError(f"signature {name} has a superfluous leading zero (offset {pos})")
        values.append(int.from_bytes(body, "big"))
        pos += n
    if pos != len(sig):
        raise CryptoError(f"trailing bytes after signature (offset {pos})")
    return values[0], values[1]


def sign(privkey: PrivateKey | bytes, data: bytes, *, digest: str = "sha256", low_s: bool = True) -> bytes:
    """DER ECDSA signature of ``data`` (hashed with ``digest``), RFC 6979 deterministic."""
    secret = as_private_key(privkey).secret
    h = _hash(data, digest)
    r, s, negated = _ec.ecdsa_sign(secret, _representative(h), rfc6979_nonce(secret, h, digest))
    if negated and not low_s:
        s = ORDER - s
    return encode_der(r, s)


def verify(
    pubkey: PublicKey | bytes,
    data: bytes,
    signature: bytes,
    *,
    digests: tuple[str, ...] = ACCEPTED_DIGESTS,
) -> bool:
    """True if ``signature`` is a valid strict-DER signature of ``data`` with any of ``digests``."""
    hashes = [_hash(data, d) for d in digests]  # an unknown digest name is a caller bug: raise
    try:
        key = as_public_key(pubkey)
        r, s = decode_der(signature)
    except CryptoError:
        return False
    return any(_ec.ecdsa_verify(key.point, _representative(h), r, s) for h in hashes)
