"""Interoperability with the reference client (PyBitmessage) for objects and their processing.

Objects are built here the way the reference's singleWorker lays them out (independently of
bmnode's builders, with pyelliptic's ECIES quirk of coordinates written without leading zeros)
and fed to a Mailbox; bmnode's own msgs are read back the way the reference's objectProcessor
slices them. The rest pins reference behaviours that bmnode once differed on.
"""

from __future__ import annotations

import hashlib
import hmac
import random

from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers.algorithms import AES
from cryptography.hazmat.primitives.ciphers.modes import CBC

from bmnode.crypto import ecies
from bmnode.crypto import secp256k1 as ec
from bmnode.crypto.derived import address_key_and_tag
from bmnode.crypto.identity import Identity, PubkeyRecord, chan_label
from bmnode.crypto.keys import public_key
from bmnode.crypto.objects import Keyring, ack_message, build_ack, build_msg, build_pubkey, open_msg
from bmnode.crypto.signatures import sign, verify
from bmnode.mailbox import Mailbox, MailboxConfig, run_until_idle
from bmnode.pow import target as T
from bmnode.pow.python_backend import PythonBackend
from bmnode.protocol.encoding import encode_var_int as var
from bmnode.protocol.encoding import u32, u64
from bmnode.protocol.framing import HEADER_SIZE, frame
from bmnode.protocol.hashing import double_sha512, ripe_of

NOW = 1_700_000_000
BACKEND = PythonBackend()
LOW = MailboxConfig(min_ntpb=1, min_extra=1)


def _secret(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


SENDER = Identity.from_keys(_secret("ref/s"), _secret("ref/e"), version=4, nonce_trials_per_byte=1, extra_bytes=1)


def _pow(body: bytes) -> bytes:
    """nonce || body at the lowered network minimum (1/1)."""
    return T.solve(body, T.sender_target(len(body) + 8, body_ttl(body), 1, 1, min_ntpb=1, min_extra=1), BACKEND)


def body_ttl(body: bytes) -> int:
    return max(int.from_bytes(body[:8], "big") - NOW, 0)


def _short_x_secret() -> bytes:
    """An ephemeral key whose public X starts with a zero byte (pyelliptic then writes 31 bytes)."""
    for i in range(10_000):
        s = _secret(f"ephemeral {i}")
        if ec.point_from_secret(s).raw[1] == 0:
            return s
    raise AssertionError("no short X found")


def pyelliptic_encrypt(pub65: bytes, plaintext: bytes, eph: bytes, iv: bytes = b"\x07" * 16) -> bytes:
    """ECIES as pyelliptic's ECC.encrypt writes it: coordinates as BN_bn2bin gives them (no
    leading zeros), AES-256-CBC with PKCS#7, HMAC-SHA256 over IV..ciphertext."""
    raw = ec.point_from_secret(eph).raw
    x, y = raw[1:33].lstrip(b"\x00"), raw[33:].lstrip(b"\x00")
    key = hashlib.sha512(ec.ecdh_x(eph, ec.point_from_bytes65(pub65))).digest()
    pad = 16 - len(plaintext) % 16
    enc = Cipher(AES(key[:32]), CBC(iv)).encryptor()
    ct = enc.update(plaintext + bytes([pad]) * pad) + enc.finalize()
    body = iv + b"\x02\xca" + len(x).to_bytes(2, "big") + x + len(y).to_bytes(2, "big") + y + ct
    return body + hmac.new(key[32:], body, hashlib.sha256).digest()


def reference_ack(stream: int, expires: int) -> tuple[bytes, bytes]:
    """(ackdata, full ack message) as generateFullAckMessage makes them (stealth level 0)."""
    ackdata = u32(2) + var(1) + var(stream) + _secret("ack random")
    return ackdata, frame("object", _pow(u64(expires) + ackdata))


def _sender_fields(s: Identity) -> bytes:
    out = var(s.version) + var(s.stream) + u32(s.behavior_bitfield) + s.pub_signing_key[1:] + s.pub_encryption_key[1:]
    if s.version >= 3:
        out += var(s.nonce_trials_per_byte) + var(s.extra_bytes)
    return out


def reference_msg(
    sender: Identity, to: PubkeyRecord, message: bytes, ack: bytes, expires: int, *, digest: str = "sha256",
    encoding: int = 2, eph: bytes | None = None, trailing: bytes = b"",
) -> bytes:
    """A msg laid out as singleWorker.sendMsg does (signature over the header from expiresTime)."""
    payload = _sender_fields(sender) + to.ripe + var(encoding) + var(len(message)) + message + var(len(ack)) + ack
    head = u64(expires) + u32(2) + var(1) + var(to.stream)
    sig = sign(sender.signing_key, head + payload, digest=digest)
    blob = pyelliptic_encrypt(to.pub_encryption_key, payload + var(len(sig)) + sig + trailing, eph or _short_x_secret())
    return _pow(head + blob)


def reference_broadcast_v5(sender: Identity, message: bytes, expires: int) -> bytes:
    """A v5 broadcast as singleWorker.sendBroadcast makes it for a v4 address."""
    priv, tag = address_key_and_tag(sender.version, sender.stream, sender.ripe)
    head = u64(expires) + u32(3) + var(5) + var(sender.stream) + tag
    data = _sender_fields(sender) + var(2) + var(len(message)) + message
    sig = sign(sender.signing_key, head + data)
    return _pow(head + pyelliptic_encrypt(public_key(priv), data + var(len(sig)) + sig, _short_x_secret()))


def reference_pubkey_v4(owner: Identity, expires: int) -> bytes:
    """A v4 pubkey as sendOutOrStoreMyV4Pubkey makes it (signed: header, tag, plaintext)."""
    priv, tag = address_key_and_tag(owner.version, owner.stream, owner.ripe)
    head = u64(expires) + u32(1) + var(4) + var(owner.stream) + tag
    data = u32(owner.behavior_bitfield) + owner.pub_signing_key[1:] + owner.pub_encryption_key[1:]
    data += var(owner.nonce_trials_per_byte) + var(owner.extra_bytes)
    sig = sign(owner.signing_key, head + data)
    return _pow(head + pyelliptic_encrypt(public_key(priv), data + var(len(sig)) + sig, _short_x_secret()))


def _bob(tmp_path) -> tuple[Mailbox, Identity]:
    mb = Mailbox(tmp_path / "bob", LOW, rng=random.Random(1))
    addr = mb.create_random_address("bob", now=NOW)
    return mb, mb.identity(addr)


# --------------------------------------------------------------------------------------------
# what the reference sends, bmnode processes


def test_ecies_opens_a_one_block_blob_with_a_31_byte_coordinate():
    """pyelliptic writes X without its leading zero byte: the blob is shorter than 134 bytes."""
    recipient = Identity.from_keys(_secret("r/s"), _secret("r/e"))
    blob = pyelliptic_encrypt(recipient.pub_encryption_key, b"hi", _short_x_secret())
    assert blob[18:20] == b"\x00\x1f" and len(blob) == 133
    assert ecies.decrypt(recipient.encryption_key, blob) == b"hi"


def test_reference_msg_is_stored_and_its_ack_published(tmp_path):
    bob_box, bob = _bob(tmp_path)
    ackdata, ack = reference_ack(1, NOW + 7 * 86400)
    for digest in ("sha256", "sha1"):  # the reference verifies both; older ones sign with SHA-1
        obj = reference_msg(SENDER, bob.pubkey_record(), f"Subject:hi {digest}\nBody:there".encode(), ack,
                            NOW + 4 * 86400, digest=digest, trailing=b"ignored" if digest == "sha1" else b"")
        out = bob_box.receive_object(obj, NOW)
        assert [o.object for o in out] == [ack[HEADER_SIZE:]]
        assert out[0].object[16:] == ackdata
    rows = [(m["fromAddress"], m["toAddress"], m["subject"], m["message"]) for m in bob_box.inbox_messages()]
    assert sorted(rows) == [(SENDER.address, bob.address, "hi sha1", "there"), (SENDER.address, bob.address, "hi sha256", "there")]
    # The sender's pubkey data came with the msg (no getpubkey needed for a reply).
    assert PubkeyRecord.from_data(bob_box.store.pubkey(SENDER.address).data) == SENDER.pubkey_record()


def test_reference_v5_broadcast_and_v4_pubkey(tmp_path):
    box = Mailbox(tmp_path / "c", LOW, rng=random.Random(2))
    me = box.create_random_address("c", now=NOW)
    box.add_subscription(SENDER.address, "ref", now=NOW)
    box.receive_object(reference_broadcast_v5(SENDER, b"Subject:news\nBody:all", NOW + 86400), NOW)
    [row] = box.inbox_messages()
    assert (row["fromAddress"], row["toAddress"], row["subject"], row["message"]) == (
        SENDER.address, "[Broadcast subscribers]", "news", "all")
    # A v4 pubkey is opened when it is awaited: a msg to an unknown address waits for it.
    other = Identity.from_keys(_secret("o/s"), _secret("o/e"), nonce_trials_per_byte=1, extra_bytes=1)
    ack = box.send_message(me, other.address, "s", "b", now=NOW)
    run_until_idle(box, NOW, BACKEND)
    assert box.get_status(ack) == "awaitingpubkey"
    box.receive_object(reference_pubkey_v4(other, NOW + 28 * 86400), NOW + 1)
    assert PubkeyRecord.from_data(box.store.pubkey(other.address).data) == other.pubkey_record()
    run_until_idle(box, NOW + 2, BACKEND)
    assert box.get_status(ack) == "msgsent"


# --------------------------------------------------------------------------------------------
# what bmnode sends, read as the reference's objectProcessor reads it


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    if first < 253:
        return first, pos + 1
    size = {253: 2, 254: 4, 255: 8}[first]
    return int.from_bytes(data[pos + 1 : pos + 1 + size], "big"), pos + 1 + size


def test_bmnode_msg_read_with_the_reference_slicing():
    bob = Identity.from_keys(_secret("b/s"), _secret("b/e"), nonce_trials_per_byte=1, extra_bytes=1)
    ackdata, ack_body = build_ack(1, NOW + 86400, _secret("r"))
    ack = ack_message(_pow(ack_body))
    out = build_msg(SENDER, bob.pubkey_record(), 2, "subj", "body", NOW + 3600, ack)
    obj = _pow(out.body)
    # processmsg: msg version and stream after the 20-byte nonce/expiresTime/type prefix.
    version, pos = _varint(obj, 20)
    stream, pos = _varint(obj, pos)
    assert (version, stream) == (1, 1)
    pt = ecies.decrypt(bob.encryption_key, obj[pos:])
    sender_version, p = _varint(pt, 0)
    sender_stream, p = _varint(pt, p)
    p += 4
    sign_key, enc_key = b"\x04" + pt[p : p + 64], b"\x04" + pt[p + 64 : p + 128]
    p += 128
    ntpb, p = _varint(pt, p)
    extra, p = _varint(pt, p)
    assert (sender_version, sender_stream, ntpb, extra) == (4, 1, 1, 1)
    assert pt[p : p + 20] == bob.ripe  # the destination ripe
    p += 20
    encoding, p = _varint(pt, p)
    length, p = _varint(pt, p)
    assert (encoding, pt[p : p + length]) == (2, b"Subject:subj\nBody:body")
    p += length
    ack_len, p = _varint(pt, p)
    ack_data = pt[p : p + ack_len]
    p += ack_len
    sig_len, q = _varint(pt, p)
    signature = pt[q : q + sig_len]
    signed = obj[8:20] + var(1) + var(stream) + pt[:p]
    assert verify(sign_key, signed, signature, digests=("sha256",))
    assert ripe_of(sign_key, enc_key) == SENDER.ripe
    # ackDataHasAValidHeader, then ackData[24:] is the object to publish.
    assert ack_data[:4] == bytes.fromhex("e9beb4d9") and ack_data[4:16].rstrip(b"\x00") == b"object"
    assert int.from_bytes(ack_data[16:20], "big") == len(ack_data) - 24
    assert ack_data[20:24] == hashlib.sha512(ack_data[24:]).digest()[:4]
    assert ack_data[24:][16:] == ackdata
    # The inbox duplicate key.
    assert open_msg(obj, Keyring([bob]), now=NOW, min_ntpb=1, min_extra=1).sighash == double_sha512(signature)[32:]


# --------------------------------------------------------------------------------------------
# reference behaviours bmnode once differed on


def test_chan_label_of_a_name_that_is_not_utf8(tmp_path):
    """createChan/joinChan: ``[chan] <name>``, or Python 2's repr of a non-UTF-8 name."""
    assert chan_label(b"general") == chan_label("general") == "[chan] general"
    assert chan_label(b"caf\xe9") == "[chan] 'caf\\xe9'"
    assert chan_label(b"it's\xff") == "[chan] \"it's\\xff\""
    box = Mailbox(tmp_path / "x", LOW)
    chan = box.create_chan(b"caf\xe9", now=NOW)
    assert {a["address"]: a["label"] for a in box.list_addresses()}[chan] == "[chan] 'caf\\xe9'"
    other = Mailbox(tmp_path / "y", LOW)
    other.join_chan(b"caf\xe9", chan, now=NOW)
    assert other.list_addresses()[0]["label"] == "[chan] 'caf\\xe9'"


def _drain(box: Mailbox, now: int) -> None:
    outs = run_until_idle(box, now, BACKEND)
    box.confirm_published([o.hash for o in outs])


def test_message_to_own_address_ignores_the_whitelist(tmp_path):
    """sendMsg puts a msg to one of our own addresses (or a chan) straight into the inbox."""
    box = Mailbox(tmp_path / "x", LOW)
    alice = box.create_random_address("alice", now=NOW)
    other = box.create_random_address("other", now=NOW)
    chan = box.create_chan("general", now=NOW)
    box.set_access_mode("white")
    box.send_message(alice, other, "note", "to myself", now=NOW)
    box.send_message(alice, chan, "hello", "chan", now=NOW)
    _drain(box, NOW)
    got = sorted((m["toAddress"], m["subject"]) for m in box.inbox_messages())
    assert got == sorted([(other, "note"), (chan, "hello")])


def test_message_to_own_disabled_address_is_stored(tmp_path):
    box = Mailbox(tmp_path / "x", LOW)
    alice = box.create_random_address("alice", now=NOW)
    off = box.create_random_address("off", now=NOW)
    box.enable_address(off, False)
    ack = box.send_message(alice, off, "s", "kept", now=NOW)
    _drain(box, NOW)
    assert box.get_status(ack) == "msgsentnoackexpected"
    assert [(m["toAddress"], m["message"]) for m in box.inbox_messages()] == [(off, "kept")]


def test_disabled_subscription_does_not_waive_the_difficulty(tmp_path):
    """isAddressInMyAddressBookSubscriptionsListOrWhitelist counts enabled subscriptions only:
    a msg to an address whose subscription is disabled carries the sender's own demand."""
    a = Mailbox(tmp_path / "a", LOW, rng=random.Random(3))
    b = Mailbox(tmp_path / "b", LOW, rng=random.Random(4))
    alice = a.create_random_address("alice", total_difficulty=3, small_message_difficulty=2, now=NOW)
    bob = b.create_random_address("bob", now=NOW)
    a.store.put_pubkey(bob, 4, b.identity(bob).pubkey_record().data, NOW)
    a.add_subscription(bob, "off", enabled=False, now=NOW)
    a.send_message(alice, bob, "s", "b", now=NOW)
    for o in run_until_idle(a, NOW, BACKEND):
        b.receive_object(o.object, NOW)
    stored = PubkeyRecord.from_data(b.store.pubkey(alice).data)
    assert (stored.pubkey.nonce_trials_per_byte, stored.pubkey.extra_bytes) == (3, 2)


def test_msg_to_a_chan_carries_the_senders_own_difficulty(tmp_path):
    """Own addresses and chans are not "known" recipients: chan members store the sender's real
    demand and a direct reply made with it is accepted."""
    a = Mailbox(tmp_path / "a", LOW, rng=random.Random(5))
    b = Mailbox(tmp_path / "b", LOW, rng=random.Random(6))
    alice = a.create_random_address("alice", total_difficulty=3, small_message_difficulty=2, now=NOW)
    chan = a.create_chan("general", now=NOW)
    b.join_chan("general", chan, now=NOW)
    bob = b.create_random_address("bob", now=NOW)
    a.send_message(alice, chan, "to all", "hi", now=NOW)
    for o in run_until_idle(a, NOW, BACKEND):
        b.receive_object(o.object, NOW)
    assert [m["subject"] for m in b.inbox_messages()] == ["to all"]
    stored = PubkeyRecord.from_data(b.store.pubkey(alice).data)
    assert (stored.pubkey.nonce_trials_per_byte, stored.pubkey.extra_bytes) == (3, 2)
    b.send_message(bob, alice, "re", "direct", now=NOW + 1)
    for o in run_until_idle(b, NOW + 1, BACKEND):
        a.receive_object(o.object, NOW + 1)
    assert sorted(m["subject"] for m in a.inbox_messages()) == ["re", "to all"]


def test_pubkeys_from_msgs_are_kept_unsolicited_ones_expire(tmp_path):
    """usedpersonally: a sender's pubkey from a msg (or broadcast, or an awaited pubkey) is kept
    for good; a v2/v3 pubkey object nobody asked for is forgotten after 28 days."""
    bob_box, bob = _bob(tmp_path)
    _, ack = reference_ack(1, NOW + 86400)
    bob_box.receive_object(reference_msg(SENDER, bob.pubkey_record(), b"Subject:s\nBody:b", ack, NOW + 3600), NOW)
    v3 = Identity.from_keys(_secret("v3/s"), _secret("v3/e"), version=3, nonce_trials_per_byte=1, extra_bytes=1)
    bob_box.receive_object(_pow(build_pubkey(v3, NOW + 3600).body), NOW)
    assert bob_box.store.pubkey(v3.address) is not None
    bob_box.tick(NOW + 29 * 86400)
    assert bob_box.store.pubkey(SENDER.address) is not None
    assert bob_box.store.pubkey(v3.address) is None
    assert bob_box.store.pubkey(bob.address) is None  # never its own
