"""Every entry of signatures.json: verification outcomes with SHA-1, SHA-256 and either, and
reproduction of the deterministic (RFC 6979) signatures."""

from __future__ import annotations

import hashlib

import pytest

from bmnode.crypto import keys, signatures
from bmnode.crypto import secp256k1 as ec
from tests import vectors

F = "signatures"


@pytest.mark.parametrize("v", vectors.params(F, "cases"))
def test_case(v):
    e = v[3]
    pub = bytes.fromhex(e["pubkey"])
    msg = bytes.fromhex(e["message"])
    sig = bytes.fromhex(e["signature"])
    assert hashlib.sha256(msg).hexdigest() == e["sha256_of_message"]
    assert hashlib.sha1(msg).hexdigest() == e["sha1_of_message"]

    assert signatures.verify(pub, msg, sig, digests=("sha1",)) is e["verify_sha1"]
    assert signatures.verify(pub, msg, sig, digests=("sha256",)) is e["verify_sha256"]
    assert signatures.verify(pub, msg, sig) is e["verify_accept"]
    assert signatures.verify(pub[1:], msg, sig) is e["verify_accept"]  # 64-byte key form too

    if e["private_key"] is not None:
        priv = bytes.fromhex(e["private_key"])
        assert keys.public_key(priv) == pub
        digest = "sha1" if e["verify_sha1"] else "sha256"
        ours = signatures.sign(priv, msg, digest=digest)
        assert signatures.verify(pub, msg, ours, digests=(digest,))
        r, s = signatures.decode_der(ours)
        assert s <= ec.ORDER // 2  # low S by default
        if e["name"].startswith("rfc6979_"):
            # Textbook RFC 6979 reproduces the vector byte for byte; the default differs only
            # by the low-S normalisation (same r, s or n - s).
            assert signatures.sign(priv, msg, digest=digest, low_s=False) == sig
            vr, vs = signatures.decode_der(sig)
            assert r == vr and s == min(vs, ec.ORDER - vs)
            if digest == "sha256":
                # libsecp256k1's own RFC 6979 nonce (HMAC-SHA256) agrees with ours.
                assert ec.ecdsa_sign_default(priv, hashlib.sha256(msg).digest()) == (r, s)
    vectors.take(v)
