"""Every entry of ecies.json: byte-exact encryption with injected ephemeral key and IV (every
intermediate value), and the accept/reject outcome of each decryption case."""

from __future__ import annotations

import pytest

from bmnode.crypto import ecies, keys
from bmnode.crypto import secp256k1 as ec
from bmnode.errors import DecryptionFailed
from tests import vectors

F = "ecies"


@pytest.mark.parametrize("v", vectors.params(F, "encrypt"))
def test_encrypt(v):
    e = v[3]
    recipient = bytes.fromhex(e["recipient_pubkey"])
    eph = bytes.fromhex(e["ephemeral_privkey"])
    plaintext = bytes.fromhex(e["plaintext"])
    blob = bytes.fromhex(e["blob"])

    assert keys.public_key(eph).hex() == e["ephemeral_pubkey"]
    point = keys.parse_public_key(recipient).point
    assert ec.ecdh_x(eph, point).hex() == e["ecdh_x"]
    key_e, key_m = ecies.shared_keys(eph, point)
    assert (key_e.hex(), key_m.hex()) == (e["key_e"], e["key_m"])

    out = ecies.encrypt(recipient, plaintext, ephemeral_privkey=eph, iv=bytes.fromhex(e["iv"]))
    assert out == blob
    assert out[86:-32].hex() == e["ciphertext"]
    assert out[-32:].hex() == e["mac"]
    assert out[16:86] == ecies.encode_point(bytes.fromhex(e["ephemeral_pubkey"]))

    # The receiving side: the parsed blob opens with the shared keys (this is all that can be
    # checked for docs_example, whose recipient private key is unknown)...
    parsed = ecies.parse_blob(blob)
    assert parsed.iv.hex() == e["iv"] and parsed.point.raw.hex() == e["ephemeral_pubkey"]
    assert parsed.open(key_e, key_m) == plaintext
    # ... and, where the recipient key is known, the full decryption gives the plaintext back.
    if e["recipient_privkey"] is not None:
        priv = bytes.fromhex(e["recipient_privkey"])
        assert keys.public_key(priv) == recipient
        assert ecies.decrypt(priv, blob) == plaintext
        assert ecies.Decryptor(priv).decrypt(parsed) == plaintext
    else:
        with pytest.raises(DecryptionFailed):
            ecies.decrypt(eph, blob)  # the ephemeral key is not the recipient's
    vectors.take(v)


@pytest.mark.parametrize("v", vectors.params(F, "decrypt"))
def test_decrypt(v):
    e = v[3]
    priv = bytes.fromhex(e["recipient_privkey"])
    blob = bytes.fromhex(e["blob"])
    dec = ecies.Decryptor(priv)
    if e["valid"]:
        expected = bytes.fromhex(e["plaintext"])
        assert ecies.decrypt(priv, blob) == expected
        assert dec.decrypt(blob) == expected
        assert dec.try_decrypt(blob) == expected
    else:
        assert e["plaintext"] is None
        with pytest.raises(DecryptionFailed):
            ecies.decrypt(priv, blob)
        with pytest.raises(DecryptionFailed):
            dec.decrypt(blob)
        assert dec.try_decrypt(blob) is None
    vectors.take(v)
