"""Builders and openers of bmnode.crypto.objects, and the Identity type.

Every round trip goes builder -> PoW (python backend, difficulty lowered to 1/1) -> relay
validation with the same lowered minimum -> opener. Objects that break one rule are crafted
from the protocol pieces so that exactly that rule fails; garbage only gives typed errors.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmnode.crypto import ecies
from bmnode.crypto import objects as X
from bmnode.crypto.addresses import Address, encode_address
from bmnode.crypto.derived import address_key_and_tag
from bmnode.crypto.generation import chan_address, random_address
from bmnode.crypto.identity import Identity, PubkeyRecord
from bmnode.crypto.keys import public_key
from bmnode.crypto.signatures import sign
from bmnode.errors import BmnodeError, CryptoError, InvalidAddress, InvalidObject
from bmnode.pow import target as T
from bmnode.pow.python_backend import PythonBackend
from bmnode.protocol import objects as O
from bmnode.protocol.constants import OBJECT_BROADCAST, OBJECT_MSG, OBJECT_PUBKEY
from bmnode.protocol.framing import frame
from bmnode.protocol.msgencoding import encode_message
from bmnode.protocol.validation import RelayReason, check_relay

NOW = 1_700_000_000
EXPIRES = NOW + 3600
LOW = {"min_ntpb": 1, "min_extra": 1}
BACKEND = PythonBackend()
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _secret(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def _ident(name: str, version: int = 4, **kw) -> Identity:
    kw.setdefault("nonce_trials_per_byte", 1)
    kw.setdefault("extra_bytes", 1)
    return Identity.from_keys(_secret(name + "/s"), _secret(name + "/e"), version=version, label=name, **kw)


ALICE = _ident("alice", 4)
BOB = _ident("bob", 4)
CAROL = _ident("carol", 3)
DAVE = _ident("dave", 2)
ALL = [ALICE, BOB, CAROL, DAVE]
RING = X.Keyring(ALL)


def _pow(body: bytes, ntpb: int = 0, extra: int = 0) -> bytes:
    """Complete ``body`` with a nonce at the lowered difficulty and check it relays."""
    obj = T.solve(body, X.object_pow_target(body, NOW, ntpb, extra, **LOW), BACKEND)
    verdict = check_relay(obj, NOW, ntpb=1, extra=1, streams={1, 2})
    assert verdict.accept, verdict.message
    return obj


def _done(out: X.OutgoingObject) -> bytes:
    assert out.length == len(out.body) + 8 and out.initial_hash() == T.initial_hash(out.body)
    obj = T.solve(out.body, out.pow_target(NOW, **LOW), BACKEND)
    assert obj == out.complete(int.from_bytes(obj[:8], "big"))
    verdict = check_relay(obj, NOW, ntpb=1, extra=1)
    assert verdict.accept and verdict.reason is RelayReason.OK, verdict.message
    return obj


def _ack_for(stream: int = 1, expires: int = NOW + 86400) -> tuple[bytes, bytes, bytes]:
    """(ackdata, ack object with PoW, framed ack message)."""
    ackdata, body = X.build_ack(stream, expires)
    obj = _pow(body)
    return ackdata, obj, X.ack_message(obj)


def _open_msg(obj: bytes, ids=RING, **kw) -> X.ReceivedMsg:
    return X.open_msg(obj, ids, now=NOW, **LOW, **kw)


def _drop(exc_type, reason, fn, *args, **kw) -> X.ObjectDropped:
    with pytest.raises(exc_type) as info:
        fn(*args, **kw)
    assert info.value.reason is reason, str(info.value)
    assert info.value.for_us is (exc_type is X.ObjectRejected)
    return info.value


# --------------------------------------------------------------------------------------------
# crafting objects that break exactly one rule


def _msg_plaintext(sender: Identity, dest_ripe: bytes, *, encoding=2, message=b"Subject:s\nBody:b", ack=b"", **over):
    fields = dict(
        sender_address_version=sender.version,
        sender_stream=sender.stream,
        behavior_bitfield=sender.behavior_bitfield,
        pub_signing_key=sender.pub_signing_key,
        pub_encryption_key=sender.pub_encryption_key,
        nonce_trials_per_byte=1000 if sender.version >= 3 else None,
        extra_bytes=1000 if sender.version >= 3 else None,
        destination_ripe=dest_ripe,
        encoding=encoding,
        message=message,
        ack_data=ack,
    )
    fields.update(over)
    return O.MsgPlaintext(**fields)


def _craft_msg(pt: O.MsgPlaintext, enc_pub: bytes, signer: Identity, stream: int = 1) -> bytes:
    sig = sign(signer.signing_key, O.msg_signed_data(EXPIRES, stream, pt))
    blob = ecies.encrypt(enc_pub, pt.with_signature(sig).encode())
    return _pow(O.encode_object_body(EXPIRES, OBJECT_MSG, 1, stream, blob))


def _craft_raw_msg(plaintext: bytes, enc_pub: bytes) -> bytes:
    return _pow(O.encode_object_body(EXPIRES, OBJECT_MSG, 1, 1, ecies.encrypt(enc_pub, plaintext)))


def _bc_plaintext(sender: Identity, *, encoding=2, message=b"Subject:s\nBody:b", **over):
    fields = dict(
        sender_address_version=sender.version,
        sender_stream=sender.stream,
        behavior_bitfield=sender.behavior_bitfield,
        pub_signing_key=sender.pub_signing_key,
        pub_encryption_key=sender.pub_encryption_key,
        nonce_trials_per_byte=1 if sender.version >= 3 else None,
        extra_bytes=1 if sender.version >= 3 else None,
        encoding=encoding,
        message=message,
    )
    fields.update(over)
    return O.BroadcastPlaintext(**fields)


def _craft_broadcast(pt: O.BroadcastPlaintext, version: int, key_priv: bytes, signer: Identity, tag=None) -> bytes:
    sig = sign(signer.signing_key, O.broadcast_signed_data(EXPIRES, version, 1, pt, tag))
    blob = ecies.encrypt(public_key(key_priv), pt.with_signature(sig).encode())
    return _pow(O.encode_object_body(EXPIRES, OBJECT_BROADCAST, version, 1, O.BroadcastPayload(tag, blob).encode()))


# --------------------------------------------------------------------------------------------
# Identity and PubkeyRecord


def test_identity_derived_values():
    assert ALICE.address == encode_address(4, 1, ALICE.ripe) and ALICE.as_address() == Address(4, 1, ALICE.ripe)
    assert ALICE.tag == address_key_and_tag(4, 1, ALICE.ripe)[1]
    assert CAROL.tag is None and CAROL.address.startswith("BM-")
    assert Identity.from_wif(ALICE.wif_signing, ALICE.wif_encryption, nonce_trials_per_byte=1, extra_bytes=1,
                             label="alice") == ALICE
    assert Identity.from_keys(ALICE.signing_key, ALICE.encryption_key, address=ALICE.address) != ALICE  # demand differs
    assert "alice" not in repr(ALICE) and ALICE.signing_key.secret.hex() not in repr(ALICE)
    with pytest.raises(AttributeError):
        ALICE.chan = True  # type: ignore[misc]
    # Same keys, other version: another address, same ripe and encryption key.
    alice3 = Identity.from_keys(ALICE.signing_key, ALICE.encryption_key, version=3)
    assert alice3.ripe == ALICE.ripe and alice3.address != ALICE.address
    assert len(X.Keyring([ALICE, alice3])._keys) == 1


def test_identity_constructors_check_input():
    with pytest.raises(InvalidAddress) as e:
        Identity.from_keys(ALICE.signing_key, BOB.encryption_key, address=ALICE.address)
    assert e.value.status == "keymismatch"
    for version in (0, 1, 5):
        with pytest.raises(InvalidAddress):
            Identity(version, 1, _secret("a"), _secret("b"))
    with pytest.raises(InvalidAddress):
        Identity(4, 0, _secret("a"), _secret("b"))
    with pytest.raises(CryptoError):
        Identity(4, 1, bytes(32), _secret("b"))
    with pytest.raises(CryptoError):
        Identity.from_wif("5Notawif", ALICE.wif_encryption)
    with pytest.raises(InvalidObject):
        Identity(4, 1, _secret("a"), _secret("b"), behavior_bitfield=1 << 32)


def test_identity_from_generated_and_chan():
    gen = random_address()
    ident = Identity.from_generated(gen)
    assert ident.address == gen.address and ident.pub_signing_key == gen.pub_signing_key
    chan = Identity.for_chan("bitmessage")
    assert chan.address == "BM-2cWy7cvHoq3f1rYMerRJp8PT653jjSuEdY"  # spec 9.6
    assert chan.chan and not chan.checks_difficulty and chan.label == "[chan] bitmessage"
    assert chan == Identity.from_generated(chan_address("bitmessage"), chan=True, label="[chan] bitmessage")


@pytest.mark.parametrize("ident", ALL, ids=lambda i: f"v{i.version}")
def test_pubkey_record_round_trip(ident):
    rec = ident.pubkey_record()
    assert rec.address == ident.address and rec.pub_encryption_key == ident.pub_encryption_key
    assert PubkeyRecord.from_data(rec.data) == rec
    assert rec.msg_difficulty() == (1000, 1000)
    assert rec.msg_difficulty(min_ntpb=1, min_extra=1) == (1, 1)
    demanding = Identity.from_keys(ident.signing_key, ident.encryption_key, version=ident.version,
                                   nonce_trials_per_byte=5000, extra_bytes=7000).pubkey_record()
    assert demanding.msg_difficulty() == ((5000, 7000) if ident.version >= 3 else (1000, 1000))


@given(st.binary(max_size=200))
@SETTINGS
def test_pubkey_record_garbage(data):
    try:
        PubkeyRecord.from_data(data)
    except BmnodeError:
        pass


def test_pubkey_record_rejects_trailing_bytes():
    with pytest.raises(BmnodeError):
        PubkeyRecord.from_data(ALICE.pubkey_record().data + b"\x00")


# --------------------------------------------------------------------------------------------
# getpubkey


@pytest.mark.parametrize("owner", ALL, ids=lambda i: f"v{i.version}")
def test_getpubkey_answered_by_the_right_identity(owner):
    out = X.build_getpubkey(owner.address, EXPIRES)
    assert (out.version, out.stream) == (owner.version, owner.stream)
    obj = _done(out)
    assert X.open_getpubkey(obj, RING) is owner
    assert X.open_getpubkey(O.parse_object(obj), ALL) is owner
    _drop(X.NotForUs, X.DropReason.NOT_FOR_US, X.open_getpubkey, obj, [i for i in ALL if i is not owner])


def test_getpubkey_rules():
    # A chan never answers.
    chan = Identity.for_chan("getpubkey chan")
    e = _drop(X.NotForUs, X.DropReason.CHAN_SILENT, X.open_getpubkey, _done(X.build_getpubkey(chan.address, EXPIRES)),
              [chan])
    assert e.identity is chan
    # Our ripe, but the v3 address of it is not ours (we own the v4 one): wrong version.
    v3_of_alice = encode_address(3, 1, ALICE.ripe)
    e = _drop(X.ObjectRejected, X.DropReason.WRONG_VERSION, X.open_getpubkey,
              _done(X.build_getpubkey(v3_of_alice, EXPIRES)), RING)
    assert e.identity is ALICE
    # Longer than 200 bytes: ignored.
    long_body = O.encode_object_body(EXPIRES, 0, 3, 1, CAROL.ripe + bytes(200))
    _drop(X.NotForUs, X.DropReason.BAD_LENGTH, X.open_getpubkey, _pow(long_body), RING)
    # Unknown version: not processed.
    _drop(X.NotForUs, X.DropReason.WRONG_KIND, X.open_getpubkey, _pow(O.encode_object_body(EXPIRES, 0, 5, 1, bytes(32))),
          RING)
    # Not a getpubkey at all.
    _drop(X.NotForUs, X.DropReason.WRONG_KIND, X.open_getpubkey, _done(X.build_pubkey(ALICE, EXPIRES)), RING)


# --------------------------------------------------------------------------------------------
# pubkey


@pytest.mark.parametrize("owner", ALL, ids=lambda i: f"v{i.version}")
def test_pubkey_round_trip(owner):
    out = X.build_pubkey(owner, EXPIRES)
    assert (out.object_type, out.version) == (OBJECT_PUBKEY, owner.version)
    obj = _done(out)
    opened = X.open_pubkey(obj, owner.address)
    assert opened.record == owner.pubkey_record() and opened.address == owner.address
    assert opened.inventory_hash == O.parse_object(obj).inventory_hash
    assert (opened.signed_data is None) is (owner.version == 2)
    assert (opened.plaintext is None) is (owner.version != 4)
    # Awaited by somebody else: not ours.
    other = BOB if owner is not BOB else ALICE
    _drop(X.NotForUs, X.DropReason.NOT_AWAITED, X.open_pubkey, obj, other.address)
    if owner.version < 4:
        assert X.open_pubkey(obj).record == opened.record
    else:
        _drop(X.NotForUs, X.DropReason.NOT_AWAITED, X.open_pubkey, obj)


def test_pubkey_signing_is_deterministic_and_high_s_verifies():
    a = X.build_pubkey(CAROL, EXPIRES)
    b = X.build_pubkey(CAROL, EXPIRES)
    assert a.body == b.body  # RFC 6979: deterministic
    c = X.build_pubkey(CAROL, EXPIRES, low_s=False)
    assert X.open_pubkey(_done(c), CAROL.address).record == CAROL.pubkey_record()


def test_pubkey_length_bounds():
    body = CAROL.pubkey_data()
    unsigned_v3 = _pow(O.encode_object_body(EXPIRES, OBJECT_PUBKEY, 3, 1, body.with_signature(b"").encode()))
    assert len(unsigned_v3) < 170
    _drop(X.NotForUs, X.DropReason.BAD_LENGTH, X.open_pubkey, unsigned_v3, CAROL.address)
    padded = O.PubkeyData(1, CAROL.pub_signing_key, CAROL.pub_encryption_key, 1, 1, bytes(72), bytes(240))
    oversized = _pow(O.encode_object_body(EXPIRES, OBJECT_PUBKEY, 3, 1, padded.encode()))
    assert len(oversized) > 440
    _drop(X.NotForUs, X.DropReason.BAD_LENGTH, X.open_pubkey, oversized)


def test_chan_never_publishes_its_pubkey():
    with pytest.raises(InvalidObject):
        X.build_pubkey(Identity.for_chan("quiet"), EXPIRES)


def test_pubkey_tampered_signature():
    bad = X.build_pubkey(CAROL, EXPIRES, signer=lambda data: sign(CAROL.signing_key, data + b"x"))
    _drop(X.ObjectRejected, X.DropReason.BAD_SIGNATURE, X.open_pubkey, _done(bad), CAROL.address)
    bad4 = X.build_pubkey(BOB, EXPIRES, signer=lambda data: sign(ALICE.signing_key, data))
    _drop(X.ObjectRejected, X.DropReason.BAD_SIGNATURE, X.open_pubkey, _done(bad4), BOB.address)


def test_v4_pubkey_with_someone_elses_keys():
    # Tagged and encrypted for BOB's address, but the keys inside (validly signed) are ALICE's.
    body = ALICE.pubkey_data()
    sig = sign(ALICE.signing_key, O.pubkey_signed_data(EXPIRES, 4, 1, body, BOB.tag))
    blob = ecies.encrypt(BOB.address_public_key, body.with_signature(sig).encode())
    obj = _pow(O.encode_object_body(EXPIRES, OBJECT_PUBKEY, 4, 1, O.EncryptedPubkeyPayload(BOB.tag, blob).encode()))
    _drop(X.ObjectRejected, X.DropReason.WRONG_RIPE, X.open_pubkey, obj, BOB.address)


def test_v4_pubkey_with_the_right_tag_and_the_wrong_key():
    out = X.build_pubkey(ALICE, EXPIRES)
    alice_obj = O.parse_object(_done(out))
    forged = O.EncryptedPubkeyPayload(BOB.tag, alice_obj.payload.encrypted).encode()
    obj = _pow(O.encode_object_body(EXPIRES, OBJECT_PUBKEY, 4, 1, forged))
    _drop(X.ObjectRejected, X.DropReason.DECRYPTION_FAILED, X.open_pubkey, obj, BOB.address)
    # Too short for a v4 pubkey, tagged for BOB.
    short = _pow(O.encode_object_body(EXPIRES, OBJECT_PUBKEY, 4, 1, BOB.tag + bytes(200)))
    _drop(X.ObjectRejected, X.DropReason.BAD_LENGTH, X.open_pubkey, short, BOB.address)
    # Garbage plaintext, properly encrypted for BOB.
    truncated_signature = b"\x00\x00\x00\x01" + bytes(128) + b"\x01\x01" + b"\xfd\xff\xff" + bytes(60)
    blob = ecies.encrypt(BOB.address_public_key, truncated_signature)
    garbled = _pow(O.encode_object_body(EXPIRES, OBJECT_PUBKEY, 4, 1, BOB.tag + blob))
    _drop(X.ObjectRejected, X.DropReason.BAD_PLAINTEXT, X.open_pubkey, garbled, BOB.address)


# --------------------------------------------------------------------------------------------
# msg and ack


@pytest.mark.parametrize(("sender", "recipient"), [(ALICE, BOB), (CAROL, ALICE), (DAVE, CAROL), (BOB, DAVE)],
                         ids=["v4-v4", "v3-v4", "v2-v3", "v4-v2"])
@pytest.mark.parametrize("encoding", [1, 2, 3])
def test_msg_round_trip_with_ack(sender, recipient, encoding):
    record = recipient.pubkey_record()
    assert X.expects_ack(record)
    ackdata, ack_obj, ack_msg = _ack_for()
    out = X.build_msg(sender, record, encoding, "Grüße", "body\nline two ☃", EXPIRES, ack_msg)
    assert out.ackdata == ackdata and (out.ntpb, out.extra) == record.msg_difficulty(min_ntpb=0, min_extra=0)
    obj = _done(out)
    r = _open_msg(obj)
    assert r.identity is recipient and r.from_address == sender.address and r.to_address == recipient.address
    assert r.sender == sender.pubkey_record()  # the plaintext carries the sender's own demand (1/1)
    if encoding == 1:
        assert (r.message.subject, r.message.body) == ("", "body\nline two ☃")
    else:
        assert (r.message.subject, r.message.body) == ("Grüße", "body\nline two ☃")
    assert r.stores_in_inbox and r.sends_ack and r.ack_object == ack_obj and r.ack_problem is None
    assert X.is_ack_for(r.ack_object, {out.ackdata}) and X.is_ack_for(r.ack_object, out.ackdata)
    assert r.difficulty_checked is (recipient.version >= 3)
    assert r.sighash == O.signature_hash(out.signature) and r.parsed.signature == out.signature
    row = r.inbox_row(NOW)
    assert row["msgid"] == r.inventory_hash and row["encodingType"] == encoding and row["toAddress"] == recipient.address
    # Same result with first-success trial decryption.
    assert _open_msg(obj, exhaustive=False).plaintext == r.plaintext


def test_trial_decryption_work(monkeypatch):
    """One attempt per distinct key; exhaustive mode tries every key, the other stops at the hit."""
    tried = []
    original = ecies.Decryptor.try_decrypt

    def counting(self, blob):
        tried.append(self)
        return original(self, blob)

    monkeypatch.setattr(ecies.Decryptor, "try_decrypt", counting)
    bob_v3 = Identity.from_keys(BOB.signing_key, BOB.encryption_key, version=3, nonce_trials_per_byte=1, extra_bytes=1)
    ring = X.Keyring([BOB, bob_v3, ALICE, CAROL, DAVE])  # BOB's key first, shared by two identities
    obj = _done(X.build_msg(ALICE, BOB.pubkey_record(), 2, "s", "b", EXPIRES))
    assert _open_msg(obj, ring).identity is BOB
    assert len(tried) == 4 and len(set(map(id, tried))) == 4
    tried.clear()
    assert _open_msg(obj, ring, exhaustive=False).identity is BOB
    assert len(tried) == 1


def test_msg_plaintext_difficulty_fields():
    out = X.build_msg(CAROL, ALICE.pubkey_record(), 2, "s", "b", EXPIRES)
    assert _open_msg(_done(out)).parsed.nonce_trials_per_byte == 1  # carol's own demand
    out = X.build_msg(CAROL, ALICE.pubkey_record(), 2, "s", "b", EXPIRES, recipient_known=True)
    assert _open_msg(_done(out)).parsed.nonce_trials_per_byte == 1000


def test_msg_to_a_chan():
    chan = Identity.for_chan("general", nonce_trials_per_byte=1, extra_bytes=1)
    member = Identity.for_chan("general", nonce_trials_per_byte=1, extra_bytes=1)
    assert not X.expects_ack(chan)
    _, _, ack_msg = _ack_for()
    with pytest.raises(InvalidObject):
        X.build_msg(ALICE, chan, 2, "s", "b", EXPIRES, ack_msg)
    out = X.build_msg(ALICE, chan, 2, "to the chan", "hello", EXPIRES)
    assert (out.ntpb, out.extra, out.ackdata) == (0, 0, None)
    obj = _done(out)
    for holder in (chan, member):
        r = _open_msg(obj, [BOB, holder])
        assert r.identity is holder and r.to_address == chan.address and r.message.subject == "to the chan"
        assert not r.difficulty_checked and not r.sends_ack
    # A chan that somehow receives a msg with an ack never publishes it.
    pt = _msg_plaintext(ALICE, chan.ripe, ack=ack_msg)
    r = _open_msg(_craft_msg(pt, chan.pub_encryption_key, ALICE), [chan])
    assert r.ack_object is not None and not r.sends_ack


def test_msg_to_own_address_uses_network_minimum():
    out = X.build_msg(ALICE, ALICE, 2, "note", "to self", EXPIRES)
    assert (out.ntpb, out.extra, out.ackdata) == (0, 0, None)
    r = _open_msg(_done(out))
    assert r.identity is ALICE and r.from_address == r.to_address == ALICE.address


def test_msg_not_for_us():
    obj = _done(X.build_msg(ALICE, BOB.pubkey_record(), 2, "s", "b", EXPIRES))
    _drop(X.NotForUs, X.DropReason.NOT_FOR_US, _open_msg, obj, [ALICE, CAROL, DAVE])
    _drop(X.NotForUs, X.DropReason.NOT_FOR_US, _open_msg, obj, [])
    _drop(X.NotForUs, X.DropReason.WRONG_KIND, _open_msg, _done(X.build_pubkey(BOB, EXPIRES)), RING)


def test_msg_wrong_destination_ripe():
    # Encrypted to BOB's key, but the destination ripe (from other keys) is not BOB's.
    impostor = PubkeyRecord(4, 1, O.PubkeyData(1, CAROL.pub_signing_key, BOB.pub_encryption_key, 1, 1))
    obj = _done(X.build_msg(ALICE, impostor, 2, "s", "b", EXPIRES))
    e = _drop(X.ObjectRejected, X.DropReason.WRONG_DESTINATION, _open_msg, obj)
    assert e.identity is BOB and e.sender is None


def test_msg_tampered_signature():
    obj = _done(X.build_msg(ALICE, BOB.pubkey_record(), 2, "s", "b", EXPIRES,
                            signer=lambda data: sign(CAROL.signing_key, data)))
    _drop(X.ObjectRejected, X.DropReason.BAD_SIGNATURE, _open_msg, obj)
    # A signature over other data (the expiry changed after signing).
    pt = _msg_plaintext(ALICE, BOB.ripe)
    sig = sign(ALICE.signing_key, O.msg_signed_data(EXPIRES + 1, 1, pt))
    blob = ecies.encrypt(BOB.pub_encryption_key, pt.with_signature(sig).encode())
    _drop(X.ObjectRejected, X.DropReason.BAD_SIGNATURE, _open_msg,
          _pow(O.encode_object_body(EXPIRES, OBJECT_MSG, 1, 1, blob)))


def test_msg_high_s_and_sha1_signatures_are_accepted():
    for signer in (lambda d: sign(ALICE.signing_key, d, low_s=False), lambda d: sign(ALICE.signing_key, d, digest="sha1")):
        obj = _done(X.build_msg(ALICE, BOB.pubkey_record(), 2, "s", "b", EXPIRES, signer=signer))
        assert _open_msg(obj).identity is BOB


def test_msg_recipient_difficulty():
    demanding = Identity.from_keys(BOB.signing_key, BOB.encryption_key, nonce_trials_per_byte=10**6, extra_bytes=10**6)
    obj = _done(X.build_msg(ALICE, BOB.pubkey_record(), 2, "s", "b", EXPIRES))
    e = _drop(X.ObjectRejected, X.DropReason.INSUFFICIENT_POW, _open_msg, obj, [demanding])
    assert e.sender == ALICE.pubkey_record()  # the sender's pubkey is still to be stored
    assert _open_msg(obj, [demanding], trusted_senders={ALICE.address}).identity is demanding
    assert _open_msg(obj, [demanding], trusted_senders=lambda a: a == ALICE.address).identity is demanding
    assert not _open_msg(obj, [demanding], check_difficulty=False).difficulty_checked
    _drop(X.ObjectRejected, X.DropReason.INSUFFICIENT_POW, _open_msg, obj, [demanding], trusted_senders={BOB.address})
    # Real-network minimum with a tiny PoW fails too.
    with pytest.raises(X.ObjectRejected):
        X.open_msg(obj, [BOB], now=NOW)


def test_msg_encoding_0_and_unknown():
    r = _open_msg(_done(X.build_msg(ALICE, BOB.pubkey_record(), 0, "", "", EXPIRES, raw_message=b"anything")))
    assert r.message.ignored and not r.stores_in_inbox and not r.sends_ack
    _, _, ack_msg = _ack_for()
    r = _open_msg(_done(X.build_msg(ALICE, BOB.pubkey_record(), 0, "", "", EXPIRES, ack_msg, raw_message=b"x")))
    assert r.ack_object is not None and not r.sends_ack
    r = _open_msg(_done(X.build_msg(ALICE, BOB.pubkey_record(), 9, "", "", EXPIRES, ack_msg, raw_message=b"?")))
    assert r.stores_in_inbox and r.sends_ack and r.message.subject == "Unknown encoding"


def test_msg_undecodable_extended_message():
    obj = _done(X.build_msg(ALICE, BOB.pubkey_record(), 3, "", "", EXPIRES, raw_message=b"not zlib"))
    e = _drop(X.ObjectRejected, X.DropReason.UNDECODABLE, _open_msg, obj)
    assert e.sender.address == ALICE.address and e.identity is BOB


def test_msg_plaintext_rules():
    short = _msg_plaintext(DAVE, BOB.ripe, message=b"").with_signature(b"\x30\x00").encode()
    assert len(short) < 170
    _drop(X.ObjectRejected, X.DropReason.PLAINTEXT_TOO_SHORT, _open_msg, _craft_raw_msg(short, BOB.pub_encryption_key))
    for version in (0, 1, 5):
        _drop(X.ObjectRejected, X.DropReason.BAD_SENDER_VERSION, _open_msg,
              _craft_raw_msg(bytes([version]) + bytes(300), BOB.pub_encryption_key))
    huge_message = b"\x04\x01" + bytes(132) + b"\x01\x01" + BOB.ripe + b"\x02" + b"\xfe\xff\xff\xff\xff" + bytes(50)
    _drop(X.ObjectRejected, X.DropReason.BAD_PLAINTEXT, _open_msg, _craft_raw_msg(huge_message, BOB.pub_encryption_key))
    pt = _msg_plaintext(ALICE, BOB.ripe, sender_stream=0)
    _drop(X.ObjectRejected, X.DropReason.BAD_SENDER_STREAM, _open_msg, _craft_msg(pt, BOB.pub_encryption_key, ALICE))


def test_msg_ack_that_cannot_be_published():
    def received_with_ack(ack: bytes) -> X.ReceivedMsg:
        pt = _msg_plaintext(ALICE, BOB.ripe, ack=ack)
        return _open_msg(_craft_msg(pt, BOB.pub_encryption_key, ALICE))

    # Expired long ago, too little PoW, not an object, bad checksum, another stream.
    _, expired_body = X.build_ack(1, NOW - 7200)
    expired = T.solve(expired_body, 2**64 - 1, BACKEND)
    _, weak_body = X.build_ack(1, NOW + 86400)
    weak = next(O.attach_nonce(n, weak_body) for n in range(1000)
                if not check_relay(O.attach_nonce(n, weak_body), NOW, ntpb=1, extra=1))
    other_stream = _pow(X.build_ack(2, NOW + 86400)[1])
    broken = bytearray(X.ack_message(_ack_for()[1]))
    broken[-1] ^= 1
    cases = [
        X.ack_message(expired),
        X.ack_message(weak),
        frame("ping", b""),
        bytes(broken),
        b"\xe9\xbe\xb4\xd9",
        X.ack_message(other_stream),
    ]
    for ack in cases:
        r = received_with_ack(ack)
        assert r.ack_object is None and r.ack_problem and not r.sends_ack and r.stores_in_inbox
    # The other stream is fine where that stream is joined.
    pt = _msg_plaintext(ALICE, BOB.ripe, ack=X.ack_message(other_stream))
    assert _open_msg(_craft_msg(pt, BOB.pub_encryption_key, ALICE), streams={1, 2}).ack_object == other_stream


def test_recipient_without_does_ack():
    quiet = Identity.from_keys(BOB.signing_key, BOB.encryption_key, behavior_bitfield=0, nonce_trials_per_byte=1,
                               extra_bytes=1)
    assert not X.expects_ack(quiet.pubkey_record())
    with pytest.raises(InvalidObject):
        X.build_msg(ALICE, quiet.pubkey_record(), 2, "s", "b", EXPIRES, _ack_for()[2])
    # If one arrives anyway, a dontsendack address does not publish it.
    r = _open_msg(_done(X.build_msg(ALICE, BOB.pubkey_record(), 2, "s", "b", EXPIRES, _ack_for()[2])), [quiet])
    assert r.ack_object is not None and not r.sends_ack


def test_build_msg_rejects_bad_ack_message():
    with pytest.raises(BmnodeError):
        X.build_msg(ALICE, BOB.pubkey_record(), 2, "s", "b", EXPIRES, b"garbage")
    with pytest.raises(InvalidObject):
        X.build_msg(ALICE, BOB.pubkey_record(), 2, "s", "b", EXPIRES, frame("ping", b""))


def test_ack_helpers():
    assert [X.ack_ttl(t) for t in (0, 3600, 86399, 86400, 7 * 86400 - 1, 7 * 86400, 28 * 86400)] == [
        86400, 86400, 86400, 7 * 86400, 7 * 86400, 28 * 86400, 28 * 86400]
    ackdata, body = X.build_ack(1, EXPIRES, b"\x11" * 32)
    assert ackdata == O.encode_ackdata(1, b"\x11" * 32) and len(ackdata) == 38 and body[8:] == ackdata
    assert len(X.build_ack(1, EXPIRES)[0]) == 38 and X.build_ack(1, EXPIRES)[0] != X.build_ack(1, EXPIRES)[0]
    assert not X.is_ack_for(b"", {ackdata}) and not X.is_ack_for(bytes(16), ackdata)
    assert X.is_ack_for(bytes(8) + body, ackdata) and not X.is_ack_for(bytes(8) + body + b"\x00", ackdata)


def test_object_size_limit():
    with pytest.raises(InvalidObject):
        X.build_msg(ALICE, BOB.pubkey_record(), 1, "", "x" * (1 << 18), EXPIRES)
    with pytest.raises(InvalidObject):
        X.build_broadcast(ALICE, 1, "", "x" * (1 << 18), EXPIRES)


# --------------------------------------------------------------------------------------------
# broadcast


@pytest.mark.parametrize("sender", [ALICE, CAROL, DAVE], ids=["v4->v5", "v3->v4", "v2->v4"])
def test_broadcast_round_trip(sender):
    out = X.build_broadcast(sender, 2, "news", "for everyone", EXPIRES)
    assert out.version == (5 if sender.version == 4 else 4)
    obj = _done(out)
    subs = X.Subscriptions([BOB, CAROL.address, Address(4, 1, ALICE.ripe), DAVE.pubkey_record(), ALICE.address])
    assert len(subs) == 4
    r = X.open_broadcast(obj, subs)
    assert r.from_address == sender.address and r.subscription == sender.as_address()
    assert (r.message.subject, r.message.body) == ("news", "for everyone")
    assert r.sender.address == sender.address and r.sighash == O.signature_hash(out.signature)
    assert r.inbox_row(NOW)["toAddress"] == X.BROADCAST_TO_ADDRESS
    _drop(X.NotForUs, X.DropReason.NOT_SUBSCRIBED, X.open_broadcast, obj, [BOB.address])
    _drop(X.NotForUs, X.DropReason.NOT_SUBSCRIBED, X.open_broadcast, obj, [])


def test_broadcast_rules():
    # Encoding 0 is ignored.
    _drop(X.ObjectRejected, X.DropReason.IGNORED_ENCODING, X.open_broadcast,
          _done(X.build_broadcast(ALICE, 0, "", "", EXPIRES, raw_message=b"x")), [ALICE.address])
    # Bad signature.
    bad = X.build_broadcast(CAROL, 2, "s", "b", EXPIRES, signer=lambda d: sign(ALICE.signing_key, d))
    _drop(X.ObjectRejected, X.DropReason.BAD_SIGNATURE, X.open_broadcast, _done(bad), [CAROL.address])
    # Undecodable message: the sender's pubkey is still reported.
    e = _drop(X.ObjectRejected, X.DropReason.UNDECODABLE, X.open_broadcast,
              _done(X.build_broadcast(ALICE, 3, "", "", EXPIRES, raw_message=b"\x78\x9c")), [ALICE.address])
    assert e.sender.address == ALICE.address
    # v5 tagged for BOB and encrypted with BOB's key, but ALICE's keys inside: the tag is wrong.
    obj = _craft_broadcast(_bc_plaintext(ALICE), 5, BOB.address_private_key, ALICE, tag=BOB.tag)
    _drop(X.ObjectRejected, X.DropReason.WRONG_TAG, X.open_broadcast, obj, [BOB.address])
    # v5 tagged for BOB, encrypted with another key.
    obj = _craft_broadcast(_bc_plaintext(BOB), 5, ALICE.address_private_key, BOB, tag=BOB.tag)
    _drop(X.ObjectRejected, X.DropReason.DECRYPTION_FAILED, X.open_broadcast, obj, [BOB.address])
    # v4 broadcast key of CAROL, but DAVE's keys inside: ripe mismatch.
    obj = _craft_broadcast(_bc_plaintext(DAVE), 4, CAROL.broadcast_private_key, DAVE)
    _drop(X.ObjectRejected, X.DropReason.WRONG_RIPE, X.open_broadcast, obj, [CAROL.address])
    # Sender versions: v4 broadcasts carry v2/v3 senders, v5 only v4 senders.
    obj = _craft_broadcast(_bc_plaintext(ALICE), 4, CAROL.broadcast_private_key, ALICE)
    _drop(X.ObjectRejected, X.DropReason.BAD_SENDER_VERSION, X.open_broadcast, obj, [CAROL.address])
    obj = _craft_broadcast(_bc_plaintext(CAROL), 5, BOB.address_private_key, CAROL, tag=BOB.tag)
    _drop(X.ObjectRejected, X.DropReason.BAD_SENDER_VERSION, X.open_broadcast, obj, [BOB.address])
    # Sender stream differs from the object's.
    obj = _craft_broadcast(_bc_plaintext(CAROL, sender_stream=2), 4, CAROL.broadcast_private_key, CAROL)
    _drop(X.ObjectRejected, X.DropReason.BAD_SENDER_STREAM, X.open_broadcast, obj, [CAROL.address])
    # Too short for a broadcast, unknown versions, other types.
    _drop(X.NotForUs, X.DropReason.BAD_LENGTH, X.open_broadcast,
          _pow(O.encode_object_body(EXPIRES, OBJECT_BROADCAST, 5, 1, ALICE.tag + bytes(100))), [ALICE.address])
    _drop(X.NotForUs, X.DropReason.WRONG_KIND, X.open_broadcast,
          _pow(O.encode_object_body(EXPIRES, OBJECT_BROADCAST, 3, 1, bytes(300))), [ALICE.address])
    _drop(X.NotForUs, X.DropReason.WRONG_KIND, X.open_broadcast,
          _done(X.build_getpubkey(ALICE.address, EXPIRES)), [ALICE.address])


# --------------------------------------------------------------------------------------------
# bad input only gives typed errors


def _samples() -> list[bytes]:
    _, _, ack = _ack_for()
    return [
        _done(X.build_getpubkey(BOB.address, EXPIRES)),
        _done(X.build_pubkey(CAROL, EXPIRES)),
        _done(X.build_pubkey(BOB, EXPIRES)),
        _done(X.build_msg(ALICE, BOB.pubkey_record(), 2, "s", "b", EXPIRES, ack)),
        _done(X.build_broadcast(ALICE, 2, "s", "b", EXPIRES)),
        _done(X.build_broadcast(CAROL, 2, "s", "b", EXPIRES)),
    ]


SAMPLES = _samples()
SUBS = X.Subscriptions([ALICE, CAROL, BOB])


def _open_all(data: bytes) -> None:
    """Every opener on ``data``: a result or an ObjectDropped, nothing else."""
    for fn in (
        lambda: X.open_getpubkey(data, RING),
        lambda: X.open_pubkey(data),
        lambda: X.open_pubkey(data, BOB.address),
        lambda: X.open_pubkey(data, CAROL.address),
        lambda: _open_msg(data),
        lambda: X.open_broadcast(data, SUBS),
    ):
        try:
            fn()
        except X.ObjectDropped:
            pass
    X.is_ack_for(data, {bytes(38)})


@given(st.binary(max_size=600))
@SETTINGS
def test_garbage_objects(data):
    _open_all(data)


@given(st.sampled_from(SAMPLES), st.data())
@SETTINGS
def test_truncated_and_flipped_objects(obj, data):
    cut = data.draw(st.integers(0, len(obj)))
    _open_all(obj[:cut])
    pos = data.draw(st.integers(0, len(obj) - 1))
    flipped = bytearray(obj)
    flipped[pos] ^= data.draw(st.integers(1, 255))
    _open_all(bytes(flipped))


@given(st.binary(max_size=400))
@SETTINGS
def test_garbage_plaintexts_for_us(plaintext):
    """Whatever decrypts with our keys, the openers reject it with a reason (never crash)."""
    msg_blob = ecies.encrypt(BOB.pub_encryption_key, plaintext)
    msg = O.attach_nonce(0, O.encode_object_body(EXPIRES, OBJECT_MSG, 1, 1, msg_blob))
    with pytest.raises(X.ObjectRejected):
        X.open_msg(msg, RING, now=NOW, check_difficulty=False)
    b5 = ecies.encrypt(ALICE.address_public_key, plaintext)
    bc = O.attach_nonce(0, O.encode_object_body(EXPIRES, OBJECT_BROADCAST, 5, 1, ALICE.tag + b5))
    with pytest.raises(X.ObjectRejected):
        X.open_broadcast(bc, SUBS)
    pk_blob = ecies.encrypt(BOB.address_public_key, plaintext)
    pk = O.attach_nonce(0, O.encode_object_body(EXPIRES, OBJECT_PUBKEY, 4, 1, BOB.tag + pk_blob))
    with pytest.raises(X.ObjectRejected):
        X.open_pubkey(pk, BOB.address)
