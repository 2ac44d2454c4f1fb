"""Every entry of addresses.json: keys and ripe, address codec and statuses, deterministic and
chan generation with exact nonces, address-derived keys and tags, WIF, base58."""

from __future__ import annotations

import hashlib

import pytest

from bmnode.crypto import addresses, base58, derived, generation, keys, wif
from bmnode.errors import InvalidAddress
from bmnode.protocol.hashing import ripe_of
from tests import vectors

F = "addresses"


@pytest.mark.parametrize("v", vectors.params(F, "key_to_address"))
def test_key_to_address(v):
    e = v[3]
    pub_s = keys.public_key(bytes.fromhex(e["priv_signing_key"]))
    pub_e = keys.public_key(bytes.fromhex(e["priv_encryption_key"]))
    assert pub_s.hex() == e["pub_signing_key"]
    assert pub_e.hex() == e["pub_encryption_key"]
    assert keys.public_key64(bytes.fromhex(e["priv_signing_key"])) == pub_s[1:]
    assert hashlib.sha512(pub_s + pub_e).hexdigest() == e["sha512_of_pubkeys"]
    ripe = ripe_of(pub_s, pub_e)
    assert ripe.hex() == e["ripe"]
    checked = 0
    for version in (2, 3, 4):
        expected = e.get(f"address_v{version}")
        if expected is None:
            continue
        assert addresses.encode_address(version, 1, ripe) == expected
        assert addresses.parse_address(expected) == addresses.Address(version, 1, ripe)
        checked += 1
    assert checked >= 2
    vectors.take(v)


@pytest.mark.parametrize("v", vectors.params(F, "encode"))
def test_encode(v):
    e = v[3]
    ripe = bytes.fromhex(e["ripe"])
    assert addresses.encode_address(e["version"], e["stream"], ripe) == e["address"]
    assert str(addresses.Address(e["version"], e["stream"], ripe)) == e["address"]
    # ... and it decodes back to the same triple, leading zeros restored.
    assert addresses.decode_address(e["address"]) == ("success", e["version"], e["stream"], ripe)
    vectors.take(v)


@pytest.mark.parametrize("v", vectors.params(F, "decode"))
def test_decode(v):
    e = v[3]
    result = addresses.decode_address(e["address"])
    assert result.status == e["status"]
    assert (result.version, result.stream, result.ripe.hex()) == (e["version"], e["stream"], e["ripe"])
    if e["status"] == "success":
        assert addresses.parse_address(e["address"]) == addresses.Address(e["version"], e["stream"], result.ripe)
    else:
        with pytest.raises(InvalidAddress) as info:
            addresses.parse_address(e["address"])
        assert info.value.status == e["status"]
    vectors.take(v)


@pytest.mark.parametrize("v", vectors.params(F, "deterministic"))
def test_deterministic(v):
    e = v[3]
    passphrase = bytes.fromhex(e["passphrase_hex"])
    assert e["passphrase"].encode("utf-8") == passphrase
    assert e["leading_zero_bytes_required"] == (2 if e["eighteen_byte_ripe"] else 1)
    generated = generation.deterministic_addresses(
        e["passphrase"],  # str: hashed as UTF-8
        e["count"],
        version=e["address_version"],
        stream=e["stream"],
        leading_zero_bytes=e["leading_zero_bytes_required"],
    )
    assert len(generated) == len(e["addresses"]) == e["count"]
    for g, x in zip(generated, e["addresses"]):
        assert g.address == x["address"]
        assert (g.signing_nonce, g.encryption_nonce) == (x["signing_nonce"], x["encryption_nonce"])
        assert g.attempts == x["attempts_for_this_address"]
        assert g.ripe.hex() == x["ripe"]
        assert g.priv_signing_key.hex() == x["priv_signing_key"]
        assert g.priv_encryption_key.hex() == x["priv_encryption_key"]
        assert g.pub_signing_key.hex() == x["pub_signing_key"]
        assert g.pub_encryption_key.hex() == x["pub_encryption_key"]
        assert generation.deterministic_private_key(passphrase, x["signing_nonce"]) == g.priv_signing_key
        assert wif.encode_wif(g.priv_signing_key) == x["wif_signing"]
        assert wif.encode_wif(g.priv_encryption_key) == x["wif_encryption"]
        assert wif.decode_wif(x["wif_encryption"]) == g.priv_encryption_key
        assert g.ripe.startswith(b"\x00" * e["leading_zero_bytes_required"])
        assert addresses.parse_address(g.address) == g.as_address()
    vectors.take(v)


@pytest.mark.parametrize("v", vectors.params(F, "chans"))
def test_chans(v):
    e = v[3]
    chan = generation.chan_address(e["chan_name"])
    assert chan.address == e["address"]
    assert (chan.signing_nonce, chan.encryption_nonce) == (e["signing_nonce"], e["encryption_nonce"])
    assert chan.ripe.hex() == e["ripe"]
    assert chan.priv_signing_key.hex() == e["priv_signing_key"]
    assert chan.priv_encryption_key.hex() == e["priv_encryption_key"]
    assert wif.encode_wif(chan.priv_signing_key) == e["wif_signing"]
    assert wif.encode_wif(chan.priv_encryption_key) == e["wif_encryption"]
    # Joining: the address must be the one derived from the name.
    assert generation.join_chan(e["chan_name"], e["address"]).address == e["address"]
    assert generation.chan_matches(e["chan_name"], e["address"])
    assert not generation.chan_matches(e["chan_name"] + "x", e["address"])
    with pytest.raises(InvalidAddress) as info:
        generation.join_chan(e["chan_name"].upper() + "!", e["address"])
    assert info.value.status == "chanmismatch"
    vectors.take(v)


@pytest.mark.parametrize("v", vectors.params(F, "address_derived_keys"))
def test_address_derived_keys(v):
    e = v[3]
    address = addresses.parse_address(e["address"])
    assert (address.version, address.stream, address.ripe.hex()) == (e["version"], e["stream"], e["ripe"])
    data = derived.hashed_data(address.version, address.stream, address.ripe)
    assert data.hex() == e["hashed_data"]
    assert hashlib.sha512(hashlib.sha512(data).digest()).hexdigest() == e["double_sha512"]
    if e["version"] >= 4:
        k = derived.address_keys(address)
        assert k.private_key.hex() == e["private_key"]
        assert k.public_key.hex() == e["public_key"]
        assert k.tag.hex() == e["tag"]
        assert derived.tag(address.version, address.stream, address.ripe) == k.tag
        # v5 broadcasts from a v4 address use the same key as its pubkey.
        assert derived.broadcast_private_key(address.version, address.stream, address.ripe) == k.private_key
    else:
        b = derived.broadcast_private_key(address.version, address.stream, address.ripe)
        assert b.hex() == e["broadcast_private_key"]
        assert keys.public_key(b).hex() == e["broadcast_public_key"]
    vectors.take(v)


@pytest.mark.parametrize("v", vectors.params(F, "wif"))
def test_wif(v):
    e = v[3]
    secret = bytes.fromhex(e["private_key"])
    assert wif.encode_wif(secret) == e["wif"]
    assert wif.decode_wif(e["wif"]) == secret
    vectors.take(v)


@pytest.mark.parametrize("v", vectors.params(F, "base58"))
def test_base58(v):
    e = v[3]
    assert base58.encode(e["integer"]) == e["base58"]
    assert base58.decode(e["base58"]) == e["integer"]
    vectors.take(v)
