"""objects.json end to end with the private keys: identities (keys, addresses, WIFs, tags,
deterministic generation), then every object decrypted, verified, opened with the receiver
functions of bmnode.crypto.objects (compared with ``decrypted``, ``parsed``, ``signed_data``
and ``reference_result``) and rebuilt byte for byte by the builders from its inputs.

(The layout-only checks of the same entries are in test_objects_structure.py.)
"""

from __future__ import annotations

import pytest

from bmnode.crypto import ecies, signatures
from bmnode.crypto import objects as X
from bmnode.crypto.derived import address_key_and_tag, broadcast_private_key
from bmnode.crypto.generation import deterministic_addresses
from bmnode.crypto.identity import Identity, PubkeyRecord
from bmnode.crypto.keys import public_key
from bmnode.pow import target as T
from bmnode.protocol import objects as O
from bmnode.protocol.constants import OBJECT_BROADCAST, OBJECT_GETPUBKEY, OBJECT_MSG, OBJECT_PUBKEY
from bmnode.protocol.framing import frame
from bmnode.protocol.validation import RelayReason, check_relay
from tests import vectors

F = "objects"
DATA = vectors.load(F)
NOW = DATA["now"]
RAW_IDENTITIES = DATA["identities"]


def _identity(name: str) -> Identity:
    i = RAW_IDENTITIES[name]
    return Identity.from_keys(
        bytes.fromhex(i["priv_signing_key"]),
        bytes.fromhex(i["priv_encryption_key"]),
        version=i["version"],
        nonce_trials_per_byte=i["nonce_trials_per_byte"],
        extra_bytes=i["extra_bytes"],
    )


IDS = {name: _identity(name) for name in RAW_IDENTITIES}
BY_ADDRESS = {i.address: i for i in IDS.values()}
RING = X.Keyring(IDS.values())


def _hex_row(row: dict) -> dict:
    return {k: (v.hex() if isinstance(v, bytes) else v) for k, v in row.items()}


def _b(e: dict, key: str) -> bytes:
    return bytes.fromhex(e[key])


@pytest.mark.parametrize("v", vectors.params(F, "identities"))
def test_identities(v):
    entries = v[3]
    assert set(entries) == {"alice", "bob", "carol"}
    for name, e in entries.items():
        sk, ek = _b(e, "priv_signing_key"), _b(e, "priv_encryption_key")
        ident = IDS[name]
        assert ident.address == e["address"] and ident.version == e["version"] and ident.stream == 1
        assert ident.ripe.hex() == e["ripe"]
        assert ident.pub_signing_key.hex() == e["pub_signing_key"]
        assert ident.pub_encryption_key.hex() == e["pub_encryption_key"]
        assert ident.wif_signing == e["wif_signing"] and ident.wif_encryption == e["wif_encryption"]
        assert (ident.nonce_trials_per_byte, ident.extra_bytes) == (e["nonce_trials_per_byte"], e["extra_bytes"])
        assert ident.does_ack and not ident.chan and ident.checks_difficulty

        # Every way of constructing it gives the same identity.
        from_wif = Identity.from_wif(e["wif_signing"], e["wif_encryption"], address=e["address"])
        assert from_wif == ident and from_wif.signing_key.secret == sk and from_wif.encryption_key.secret == ek
        [gen] = deterministic_addresses(e["passphrase"], version=e["version"])
        assert Identity.from_generated(gen) == ident

        # Address-derived keys, tag and the broadcast key.
        assert ident.broadcast_private_key == broadcast_private_key(ident.version, 1, ident.ripe)
        if ident.version == 4:
            priv, tag = address_key_and_tag(4, 1, ident.ripe)
            assert (ident.address_private_key, ident.tag) == (priv, tag)
            assert ident.address_public_key == public_key(priv)
            assert ident.broadcast_private_key == priv
        else:
            assert ident.tag is None and ident.address_private_key is None and ident.address_public_key is None

        # The public record of the identity is what the others store (v3/v4 rows in the objects).
        rec = ident.pubkey_record()
        assert rec.address == ident.address and rec.ripe == ident.ripe
        assert PubkeyRecord.from_data(rec.data) == rec
        assert rec.data[:2] == bytes([ident.version, 1])
    vectors.take(v)


# --------------------------------------------------------------------------------------------


def _check_getpubkey(e: dict, raw: bytes, p: O.ParsedObject) -> None:
    h = p.header
    owner = BY_ADDRESS[e["requested_address"]]
    assert X.open_getpubkey(raw, RING) is owner
    assert X.open_getpubkey(p, list(IDS.values())) is owner
    [[action, arg]] = e["reference_result"]["owner_response"]
    assert action == f"sendOutOrStoreMyV{owner.version}Pubkey"
    assert arg in (owner.address, owner.ripe.hex())
    if owner.version == 4:
        assert e["parsed"]["tag"] == owner.tag.hex()
    else:
        assert e["parsed"]["ripe"] == owner.ripe.hex()
    # Nobody else answers it.
    others = [i for i in IDS.values() if i is not owner]
    with pytest.raises(X.NotForUs) as exc:
        X.open_getpubkey(raw, others)
    assert exc.value.reason is X.DropReason.NOT_FOR_US
    out = X.build_getpubkey(e["requested_address"], h.expires_time)
    assert (out.object_type, out.version, out.stream) == (OBJECT_GETPUBKEY, owner.version, 1)
    assert out.complete(h.nonce) == raw


def _check_pubkey(e: dict, raw: bytes, p: O.ParsedObject) -> None:
    h = p.header
    owner = BY_ADDRESS[e["owner_address"]]
    row = e["reference_result"]["stored_pubkey_row"]
    opened = X.open_pubkey(raw, e["owner_address"])
    assert opened.address == row["address"] == owner.address
    assert opened.record.version == row["address_version"] == h.version
    assert opened.record.data.hex() == row["data"]
    assert opened.record == owner.pubkey_record()
    assert opened.signed_data.hex() == e["signed_data"]
    assert opened.inventory_hash.hex() == e["inventory_hash"]
    parsed = opened.pubkey.to_dict()
    for k, val in e["parsed"].items():
        assert parsed[k] == val, k
    assert signatures.verify(owner.pub_signing_key, _b(e, "signed_data"), opened.pubkey.signature)
    kw = {}
    if h.version == 4:
        # Decrypt with the given address key; the tag and key are the owner's.
        assert _b(e, "address_private_key") == owner.address_private_key
        assert _b(e, "address_public_key") == owner.address_public_key
        assert _b(e, "tag") == owner.tag
        assert ecies.decrypt(_b(e, "address_private_key"), _b(e, "encrypted_blob")).hex() == e["decrypted"]
        assert opened.plaintext.hex() == e["decrypted"]
        kw = {"ephemeral_privkey": _b(e, "ecies_ephemeral_privkey"), "iv": _b(e, "ecies_iv")}
        # A v4 pubkey opens only for the awaited address.
        with pytest.raises(X.NotForUs):
            X.open_pubkey(raw)
        with pytest.raises(X.NotForUs):
            X.open_pubkey(raw, IDS["alice"].address)
    else:
        assert opened.plaintext is None
        # Any valid v3 pubkey is stored; awaiting another address it is not ours.
        assert X.open_pubkey(raw).record == opened.record
        with pytest.raises(X.NotForUs):
            X.open_pubkey(raw, IDS["alice"].address)
    out = X.build_pubkey(owner, h.expires_time, low_s=False, **kw)
    assert out.complete(h.nonce) == raw
    assert out.signature == opened.pubkey.signature


def _check_ack(e: dict, received: X.ReceivedMsg, h: O.ObjectHeader) -> bytes:
    """The ack: extracted, valid, watched by the sender; rebuilt from its parts."""
    ack = e["ack"]
    assert received.parsed.ack_data.hex() == ack["ack_message"]
    assert received.ack_object.hex() == ack["ack_object"]
    assert received.ack_problem is None
    assert received.sends_ack is e["reference_result"]["ack_published"] is True
    ackdata = _b(ack, "ackdata_watched_by_sender")
    assert X.is_ack_for(received.ack_object, ackdata) is ack["matched_by_sender"] is True
    assert X.is_ack_for(received.ack_object, {ackdata, bytes(38)})
    assert not X.is_ack_for(_b(e, "object"), {ackdata})
    # Rebuild: bucketed TTL, ackdata and body, nonce, framing.
    ah = ack["ack_object_header"]
    assert X.ack_ttl(h.expires_time - NOW) == ack["ack_ttl_bucket_seconds"] == ah["expires_time"] - NOW
    ackdata2, body = X.build_ack(ah["stream"], ah["expires_time"], ackdata[-32:])
    assert ackdata2 == ackdata
    ack_obj = O.attach_nonce(ah["nonce"], body)
    assert ack_obj == received.ack_object
    assert T.check_pow(ack_obj, NOW) and check_relay(ack_obj, NOW).reason is RelayReason.OK
    assert X.ack_message(ack_obj) == frame("object", ack_obj) == received.parsed.ack_data
    return X.ack_message(ack_obj)


def _check_msg(e: dict, raw: bytes, p: O.ParsedObject) -> None:
    h = p.header
    sender, recipient = BY_ADDRESS[e["from_address"]], BY_ADDRESS[e["to_address"]]
    assert _b(e, "recipient_priv_encryption_key") == recipient.encryption_key.secret
    assert ecies.decrypt(_b(e, "recipient_priv_encryption_key"), p.object_payload).hex() == e["decrypted"]

    r = X.open_msg(raw, RING, now=NOW)
    assert r.identity is recipient and r.to_address == e["to_address"] and r.from_address == e["from_address"]
    assert r.plaintext.hex() == e["decrypted"]
    assert r.signed_data.hex() == e["signed_data"]
    assert signatures.verify(sender.pub_signing_key, r.signed_data, r.parsed.signature)
    parsed = r.parsed.to_dict()
    for k, val in e["parsed"].items():
        assert parsed[k] == val, k
    assert r.difficulty_checked
    res = e["reference_result"]
    assert _hex_row(r.inbox_row(NOW)) == res["inbox_row"]
    assert r.stores_in_inbox
    assert r.sender.to_dict() == res["stored_sender_pubkey"]
    assert r.sender == sender.pubkey_record()
    assert (r.message.subject, r.message.body) == (e["message_decoded"]["subject"], e["message_decoded"]["body"])
    ack_msg = _check_ack(e, r, h)

    # The sender rebuilds the object from the recipient's stored pubkey (from pubkey_v4).
    pubkey_row = next(o for o in DATA["objects"] if o["name"] == "pubkey_v4")["reference_result"]["stored_pubkey_row"]
    record = PubkeyRecord.from_data(bytes.fromhex(pubkey_row["data"]))
    assert record.address == recipient.address and X.expects_ack(record)
    out = X.build_msg(
        sender,
        record,
        r.encoding,
        r.message.subject,
        r.message.body,
        h.expires_time,
        ack_msg,
        ephemeral_privkey=_b(e, "ecies_ephemeral_privkey"),
        iv=_b(e, "ecies_iv"),
        low_s=False,
    )
    assert out.complete(h.nonce) == raw
    assert out.ackdata.hex() == e["ack"]["ackdata_watched_by_sender"]
    assert (out.object_type, out.version, out.stream) == (OBJECT_MSG, 1, 1)
    assert (out.ntpb, out.extra) == (1000, 1000)
    assert out.pow_target(NOW) == T.sender_target(len(raw), h.expires_time - NOW)

    # Trial decryption with keys that are not the recipient's finds nothing.
    with pytest.raises(X.NotForUs) as exc:
        X.open_msg(raw, [IDS["alice"], IDS["carol"]], now=NOW)
    assert exc.value.reason is X.DropReason.NOT_FOR_US and not exc.value.for_us


def _check_broadcast(e: dict, raw: bytes, p: O.ParsedObject) -> None:
    h = p.header
    sender = BY_ADDRESS[e["from_address"]]
    assert _b(e, "broadcast_private_key") == sender.broadcast_private_key
    assert _b(e, "broadcast_public_key") == public_key(sender.broadcast_private_key)
    payload = p.payload
    assert (payload.tag.hex() if payload.tag else None) == e["tag"] == (sender.tag.hex() if sender.tag else None)
    assert ecies.decrypt(_b(e, "broadcast_private_key"), payload.encrypted).hex() == e["decrypted"]

    subs = X.Subscriptions([IDS["alice"].address, IDS["carol"].address, IDS["bob"].address])
    r = X.open_broadcast(raw, subs)
    assert r.subscription == sender.as_address() and r.from_address == e["from_address"]
    assert r.plaintext.hex() == e["decrypted"] and r.signed_data.hex() == e["signed_data"]
    parsed = r.parsed.to_dict()
    for k, val in e["parsed"].items():
        assert parsed[k] == val, k
    assert _hex_row(r.inbox_row(NOW)) == e["reference_result"]["inbox_row"]
    assert r.sender == sender.pubkey_record()
    assert (r.message.subject, r.message.body) == (e["message_decoded"]["subject"], e["message_decoded"]["body"])
    # Not subscribed to the sender: not for us.
    with pytest.raises(X.NotForUs) as exc:
        X.open_broadcast(raw, [IDS["bob"].address])
    assert exc.value.reason is X.DropReason.NOT_SUBSCRIBED

    out = X.build_broadcast(
        sender,
        r.encoding,
        r.message.subject,
        r.message.body,
        h.expires_time,
        ephemeral_privkey=_b(e, "ecies_ephemeral_privkey"),
        iv=_b(e, "ecies_iv"),
        low_s=False,
    )
    assert (out.object_type, out.version) == (OBJECT_BROADCAST, 5 if sender.version == 4 else 4)
    assert out.complete(h.nonce) == raw


@pytest.mark.parametrize("v", vectors.params(F, "objects"))
def test_object_end_to_end(v):
    e = v[3]
    raw = bytes.fromhex(e["object"])
    p = O.parse_object(raw)
    assert T.check_pow(raw, NOW)
    t = p.header.object_type
    if t == OBJECT_GETPUBKEY:
        _check_getpubkey(e, raw, p)
    elif t == OBJECT_PUBKEY:
        _check_pubkey(e, raw, p)
    elif t == OBJECT_MSG:
        _check_msg(e, raw, p)
    elif t == OBJECT_BROADCAST:
        _check_broadcast(e, raw, p)
    else:  # pragma: no cover - the vector file has no other kinds
        pytest.fail(f"unexpected object type {t}")
    vectors.take(v)
