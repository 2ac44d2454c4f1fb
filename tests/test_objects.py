"""Object layouts (bmnode.protocol.objects): builders, parsers, round trips and bad input."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmnode.errors import InvalidObject, MalformedMessage
from bmnode.protocol import objects as O
from bmnode.protocol.encoding import encode_var_int
from bmnode.protocol.framing import frame
from bmnode.protocol.hashing import double_sha512, inventory_hash
from tests import vectors

TYPED_ERRORS = (MalformedMessage, InvalidObject)
EXPIRES = 1_730_003_600
SIGN = bytes(range(64))
ENC = bytes(range(64, 128))
RIPE = bytes(range(20))
TAG = bytes(range(100, 132))


def _vector(name: str) -> dict:
    return next(o for o in vectors.load("objects")["objects"] if o["name"] == name)


def obj(object_type: int, version: int, payload: bytes, stream: int = 1, nonce: int = 7) -> bytes:
    return O.attach_nonce(nonce, O.encode_object_body(EXPIRES, object_type, version, stream, payload))


def msg_pt(**kw) -> O.MsgPlaintext:
    fields = dict(
        sender_address_version=4,
        sender_stream=1,
        behavior_bitfield=1,
        pub_signing_key=SIGN,
        pub_encryption_key=ENC,
        nonce_trials_per_byte=1000,
        extra_bytes=1000,
        destination_ripe=RIPE,
        encoding=2,
        message=b"Subject:s\nBody:b",
        ack_data=b"",
        signature=b"\x30\x06sig",
    )
    fields.update(kw)
    return O.MsgPlaintext(**fields)


def bc_pt(**kw) -> O.BroadcastPlaintext:
    fields = dict(
        sender_address_version=3,
        sender_stream=1,
        behavior_bitfield=1,
        pub_signing_key=SIGN,
        pub_encryption_key=ENC,
        nonce_trials_per_byte=1000,
        extra_bytes=1000,
        encoding=2,
        message=b"Subject:s\nBody:b",
        signature=b"sig",
    )
    fields.update(kw)
    return O.BroadcastPlaintext(**fields)


# --- header -------------------------------------------------------------------------------------


def test_header_layout():
    raw = obj(0x746F72, 3, b"", stream=300, nonce=0x0102030405060708)
    assert raw[:8] == bytes.fromhex("0102030405060708")
    assert raw[8:16] == EXPIRES.to_bytes(8, "big")
    assert raw[16:20] == b"\x00\x74\x6f\x72"
    assert raw[20:] == b"\x03" + b"\xfd\x01\x2c"
    h = O.parse_header(raw)
    assert (h.nonce, h.expires_time, h.object_type, h.version, h.stream, h.header_length) == (
        0x0102030405060708,
        EXPIRES,
        0x746F72,
        3,
        300,
        24,
    )
    assert h.encode() == raw and h.type_name == "onionpeer"


@pytest.mark.parametrize("cut", range(0, 22))
def test_truncated_header(cut):
    raw = obj(2, 1, b"")
    with pytest.raises(MalformedMessage) as info:
        O.parse_header(raw[:cut])
    assert info.value.offset is not None and info.value.offset <= cut


def test_non_minimal_var_ints_in_header():
    base = bytes(8) + EXPIRES.to_bytes(8, "big") + (2).to_bytes(4, "big")
    with pytest.raises(MalformedMessage) as info:
        O.parse_header(base + b"\xfd\x00\x01" + b"\x01")
    assert info.value.offset == 20
    with pytest.raises(MalformedMessage) as info:
        O.parse_header(base + b"\x01" + b"\xfe\x00\x00\x00\x01")
    assert info.value.offset == 21


def test_header_builder_rejects_out_of_range_values():
    with pytest.raises(InvalidObject):
        O.encode_object_header(-1, 0, 1, 1)
    with pytest.raises(InvalidObject):
        O.encode_object_header(0, 1 << 32, 1, 1)
    with pytest.raises(InvalidObject):
        O.encode_object_header(0, 0, 1 << 64, 1)
    with pytest.raises(InvalidObject):
        O.attach_nonce(1 << 64, b"")


# --- payload kinds ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "otype,version,payload,kind",
    [
        (0, 2, RIPE, O.GetPubkeyPayload(ripe=RIPE)),
        (0, 3, RIPE + b"xx", O.GetPubkeyPayload(ripe=RIPE, trailing=b"xx")),
        (0, 4, TAG, O.GetPubkeyPayload(tag=TAG)),
        (1, 2, b"\x00\x00\x00\x01" + SIGN + ENC, O.PubkeyData(1, SIGN, ENC)),
        (1, 4, TAG + b"blob", O.EncryptedPubkeyPayload(TAG, b"blob")),
        (2, 1, b"blob", O.MsgPayload(b"blob")),
        (3, 4, b"blob", O.BroadcastPayload(None, b"blob")),
        (3, 5, TAG + b"blob", O.BroadcastPayload(TAG, b"blob")),
        (0x746F72, 2, b"\xfd\x20\xfc" + bytes.fromhex("fd87d87eeb438533622e54ca2d033e7a"),
         O.OnionPeerPayload(8444, bytes.fromhex("fd87d87eeb438533622e54ca2d033e7a"))),
        # unknown types and versions are kept opaque
        (0, 1, b"x", O.OpaquePayload(b"x")),
        (0, 5, b"", O.OpaquePayload(b"")),
        (1, 5, b"x" * 200, O.OpaquePayload(b"x" * 200)),
        (2, 2, b"blob", O.OpaquePayload(b"blob")),
        (3, 3, b"old", O.OpaquePayload(b"old")),
        (0x746F72, 4, b"", O.OpaquePayload(b"")),
        (42, 1, b"HELLO", O.OpaquePayload(b"HELLO")),
        ((1 << 32) - 1, (1 << 64) - 1, b"", O.OpaquePayload(b"")),
    ],
)
def test_payload_kinds_round_trip(otype, version, payload, kind):
    raw = obj(otype, version, payload)
    p = O.parse_object(raw)
    assert p.payload == kind
    assert p.encode() == raw and p.object_payload == payload and p.body == raw[8:]
    assert p.inventory_hash == inventory_hash(raw) and p.length == len(raw)
    d = json.loads(json.dumps(p.to_dict()))
    assert d["header"]["object_type"] == otype and d["payload_kind"] == type(kind).__name__
    assert p.describe() == p.to_dict()
    tagged = (otype, version) in {(0, 4), (1, 4), (3, 5)}
    assert p.tag == (TAG if tagged else None) == O.object_tag(raw)


def test_onionpeer_describes_the_onion_name():
    host = bytes.fromhex("fd87d87eeb438533622e54ca2d033e7a")
    d = O.parse_object(obj(0x746F72, 2, encode_var_int(8444) + host)).to_dict()
    assert d["payload"] == {"port": 8444, "host": host.hex(), "onion": "quzwelsuziwqgpt2.onion"}
    d = O.parse_object(obj(0x746F72, 2, encode_var_int(1) + b"\x01\x02")).to_dict()
    assert "onion" not in d["payload"]


@pytest.mark.parametrize(
    "otype,version,payload",
    [
        (0, 3, RIPE[:19]),
        (0, 4, TAG[:31]),
        (1, 2, b"\x00\x00\x00\x01" + SIGN + ENC[:63]),
        (1, 3, b"\x00\x00\x00\x01" + SIGN + ENC + b"\xfd\x03"),
        (1, 3, b"\x00\x00\x00\x01" + SIGN + ENC + b"\xfd\x03\xe8\xfd\x03\xe8"),  # no signature
        (1, 3, b"\x00\x00\x00\x01" + SIGN + ENC + b"\xfd\x03\xe8\xfd\x03\xe8" + b"\xff" + b"\xff" * 8),  # huge sig length
        (1, 3, b"\x00\x00\x00\x01" + SIGN + ENC + b"\xfd\x00\x10\x01" + b"\x00"),  # non-minimal ntpb
        (1, 4, TAG[:5]),
        (3, 5, TAG[:31]),
        (0x746F72, 3, b""),
        (0x746F72, 3, b"\xfe\x00\x00\x01"),
    ],
)
def test_malformed_known_payloads(otype, version, payload):
    raw = obj(otype, version, payload)
    with pytest.raises(MalformedMessage) as info:
        O.parse_object(raw)
    assert 22 <= info.value.offset <= len(raw)
    # still describable for display, with the error
    d = O.describe_object(raw)
    assert d["payload_kind"] == "malformed" and d["payload_error"] and d["inventory_hash"] == inventory_hash(raw).hex()
    json.dumps(d)


def test_describe_object_needs_a_header():
    with pytest.raises(MalformedMessage):
        O.describe_object(b"\x00" * 10)
    assert O.object_tag(obj(0, 4, TAG[:10])) is None


# --- pubkey bodies ------------------------------------------------------------------------------


def test_pubkey_v3_body_and_signed_data():
    body = O.PubkeyData(1, b"\x04" + SIGN, ENC, 1000, 2000)
    assert body.pub_signing_key == SIGN  # 65-byte keys are normalised
    unsigned = body.unsigned_bytes()
    assert unsigned == b"\x00\x00\x00\x01" + SIGN + ENC + b"\xfd\x03\xe8\xfd\x07\xd0"
    assert body.signed_end == len(unsigned) == 138
    signed = body.with_signature(b"S" * 71)
    payload = signed.encode()
    assert payload == unsigned + b"\x47" + b"S" * 71
    raw = obj(1, 3, payload)
    p = O.parse_object(raw)
    assert p.payload == signed
    sd = O.pubkey_signed_data(EXPIRES, 3, 1, body)
    assert sd == raw[8 : 22 + 138] == p.signed_data()
    assert signed.storage_bytes(3, 1) == raw[20 : 22 + 138]
    assert O.parse_pubkey_data(payload, 3) == signed


def test_pubkey_v4_signed_data_includes_the_tag():
    body = O.PubkeyData(1, SIGN, ENC, 1000, 1000)
    plaintext = body.with_signature(b"sig").encode()
    assert O.parse_pubkey_plaintext(plaintext) == body.with_signature(b"sig")
    raw = obj(1, 4, TAG + b"encrypted")
    p = O.parse_object(raw)
    expected = raw[8:22] + TAG + body.unsigned_bytes()
    assert p.signed_data(O.parse_pubkey_plaintext(plaintext)) == expected
    assert O.pubkey_signed_data(EXPIRES, 4, 1, body, TAG) == expected
    with pytest.raises(InvalidObject):
        O.pubkey_signed_data(EXPIRES, 4, 1, body)  # tag missing
    with pytest.raises(InvalidObject):
        O.pubkey_signed_data(EXPIRES, 3, 1, body, TAG)
    with pytest.raises(InvalidObject):
        O.pubkey_signed_data(EXPIRES, 2, 1, body)
    with pytest.raises(InvalidObject):
        O.pubkey_signed_data(EXPIRES, 3, 1, O.PubkeyData(1, SIGN, ENC))
    with pytest.raises(InvalidObject):
        p.signed_data(msg_pt())  # wrong plaintext kind
    with pytest.raises(InvalidObject):
        p.signed_data()


@pytest.mark.parametrize(
    "kw",
    [
        dict(pub_signing_key=SIGN[:63]),
        dict(pub_encryption_key=b"\x05" + ENC),
        dict(behavior_bitfield=1 << 32),
        dict(behavior_bitfield=-1),
        dict(nonce_trials_per_byte=1000),  # extra missing
        dict(nonce_trials_per_byte=1 << 64, extra_bytes=1),
        dict(signature=b"sig"),  # signed but no difficulty
    ],
)
def test_pubkey_data_rejects_bad_fields(kw):
    fields = dict(behavior_bitfield=1, pub_signing_key=SIGN, pub_encryption_key=ENC)
    fields.update(kw)
    with pytest.raises(InvalidObject):
        O.PubkeyData(**fields)


def test_pubkey_ripe_matches_identity():
    e = vectors.load("objects")["identities"]["carol"]
    body = O.PubkeyData(1, bytes.fromhex(e["pub_signing_key"]), bytes.fromhex(e["pub_encryption_key"]))
    assert body.ripe.hex() == e["ripe"]


def test_parse_pubkey_data_versions():
    with pytest.raises(InvalidObject):
        O.parse_pubkey_data(b"", 5)
    v2 = O.parse_pubkey_data(b"\x00\x00\x00\x01" + SIGN + ENC + b"tail", 2)
    assert v2.signature is None and v2.trailing == b"tail" and v2.encode().endswith(b"tail")


# --- msg and broadcast plaintexts -----------------------------------------------------------------


def test_msg_plaintext_layout():
    ack = frame("object", obj(2, 1, b"ackpayload"))
    pt = msg_pt(ack_data=ack, sender_address_version=3)
    raw = pt.encode()
    expected_prefix = b"\x03\x01" + b"\x00\x00\x00\x01" + SIGN + ENC + b"\xfd\x03\xe8\xfd\x03\xe8"
    assert raw.startswith(expected_prefix)
    assert pt.pubkey_end == len(expected_prefix) and pt.pubkey_bytes() == expected_prefix
    rest = raw[len(expected_prefix) :]
    assert rest == RIPE + b"\x02" + bytes([len(pt.message)]) + pt.message + bytes([len(ack)]) + ack + b"\x05\x30\x06sig"
    assert pt.signed_end == len(raw) - 6
    assert O.parse_msg_plaintext(raw) == pt
    assert pt.ack_object() == obj(2, 1, b"ackpayload")
    assert msg_pt().ack_object() is None
    assert pt.sender_pubkey() == O.PubkeyData(1, SIGN, ENC, 1000, 1000)
    assert pt.sender_ripe == pt.sender_pubkey().ripe
    d = json.loads(json.dumps(pt.to_dict()))
    assert d["signed_end"] == pt.signed_end and d["behavior"] == ["does_ack"]


def test_msg_plaintext_v2_sender_has_no_difficulty():
    pt = msg_pt(sender_address_version=2, nonce_trials_per_byte=None, extra_bytes=None)
    raw = pt.encode()
    assert raw[:2 + 4 + 128 + 20] == b"\x02\x01\x00\x00\x00\x01" + SIGN + ENC + RIPE
    assert O.parse_msg_plaintext(raw) == pt
    with pytest.raises(InvalidObject):
        msg_pt(sender_address_version=2)  # v2 cannot carry difficulty
    with pytest.raises(InvalidObject):
        msg_pt(nonce_trials_per_byte=None, extra_bytes=None)  # v4 needs it


def test_msg_signed_data():
    pt = msg_pt()
    raw = obj(2, 1, b"blob")
    p = O.parse_object(raw)
    expected = raw[8:20] + b"\x01\x01" + pt.unsigned_bytes()
    assert p.signed_data(pt) == expected == O.msg_signed_data(EXPIRES, 1, pt)
    unsigned = msg_pt(signature=None)
    assert unsigned.unsigned_bytes() == pt.unsigned_bytes()
    assert unsigned.with_signature(pt.signature) == pt
    with pytest.raises(InvalidObject):
        unsigned.encode()


def test_ack_data_must_be_one_object_message():
    with pytest.raises(InvalidObject):
        msg_pt(ack_data=frame("ping", b"")).ack_object()
    good = frame("object", b"x" * 30)
    bad_checksum = good[:20] + bytes(4) + good[24:]
    for bad in (bad_checksum, good[:-1], good + b"\x00", b"\x00" * 23, b"\x01" * 40):
        with pytest.raises(MalformedMessage):
            msg_pt(ack_data=bad).ack_object()


def test_broadcast_plaintext_and_signed_data():
    pt = bc_pt()
    raw_pt = pt.encode()
    assert O.parse_broadcast_plaintext(raw_pt) == pt
    assert pt.signed_end == len(raw_pt) - 4 and pt.unsigned_bytes() == raw_pt[: pt.signed_end]
    v4 = obj(3, 4, b"blob")
    v5 = obj(3, 5, TAG + b"blob")
    assert O.parse_object(v4).signed_data(pt) == v4[8:22] + pt.unsigned_bytes() == O.broadcast_signed_data(
        EXPIRES, 4, 1, pt
    )
    assert O.parse_object(v5).signed_data(pt) == v5[8:22] + TAG + pt.unsigned_bytes() == O.broadcast_signed_data(
        EXPIRES, 5, 1, pt, TAG
    )
    for args in ((4, TAG), (5, None), (3, None)):
        with pytest.raises(InvalidObject):
            O.broadcast_signed_data(EXPIRES, args[0], 1, pt, args[1])
    with pytest.raises(InvalidObject):
        bc_pt(signature=None).encode()


@pytest.mark.parametrize("version", [0, 5, 255, 1 << 40])
def test_unknown_sender_versions(version):
    raw = encode_var_int(version) + msg_pt().encode()[1:]
    with pytest.raises(InvalidObject):
        O.parse_msg_plaintext(raw)
    with pytest.raises(InvalidObject):
        O.parse_broadcast_plaintext(encode_var_int(version) + bc_pt().encode()[1:])
    with pytest.raises(InvalidObject):
        msg_pt(sender_address_version=version)


@pytest.mark.parametrize("parse,make", [(O.parse_msg_plaintext, msg_pt), (O.parse_broadcast_plaintext, bc_pt)])
def test_plaintext_trailing_bytes_are_kept(parse, make):
    raw = make().encode() + b"\x00" * 5  # e.g. left-over padding
    pt = parse(raw)
    assert pt.trailing == b"\x00" * 5 and pt.encode() == raw
    assert pt.to_dict()["trailing"] == "0000000000"
    with pytest.raises(InvalidObject):
        make(signature=None, trailing=b"x")


@pytest.mark.parametrize(
    "parse,raw",
    [
        (O.parse_msg_plaintext, bytes.fromhex(_vector("msg_encoding2")["decrypted"])),
        (O.parse_msg_plaintext, bytes.fromhex(_vector("msg_encoding3_extended")["decrypted"])),
        (O.parse_broadcast_plaintext, bytes.fromhex(_vector("broadcast_v4")["decrypted"])),
        (O.parse_broadcast_plaintext, bytes.fromhex(_vector("broadcast_v5")["decrypted"])),
        (O.parse_pubkey_plaintext, bytes.fromhex(_vector("pubkey_v4")["decrypted"])),
        (O.parse_object, bytes.fromhex(_vector("pubkey_v3")["object"])),
    ],
)
def test_every_truncation_is_a_typed_error(parse, raw):
    assert parse(raw).encode() == raw
    for cut in range(len(raw)):
        with pytest.raises(MalformedMessage) as info:
            parse(raw[:cut])
        assert info.value.offset is not None and info.value.offset <= cut


def test_hostile_lengths():
    # a 2^64-1 message length must fail at once, not allocate or loop
    head = msg_pt().pubkey_bytes() + RIPE + b"\x02"
    with pytest.raises(MalformedMessage) as info:
        O.parse_msg_plaintext(head + b"\xff" + b"\xff" * 8 + b"rest")
    assert info.value.offset == len(head) + 9 and "need 18446744073709551615 bytes" in str(info.value)
    # a non-minimal length is refused where it starts
    with pytest.raises(MalformedMessage) as info:
        O.parse_msg_plaintext(head + b"\xff\x00\x00\x00\x00\x00\x00\x00\x05" + b"x" * 5)
    assert info.value.offset == len(head)
    # a huge signature length in an object payload
    payload = O.PubkeyData(1, SIGN, ENC, 1000, 1000).unsigned_bytes() + b"\xff" + b"\xff" * 8
    with pytest.raises(MalformedMessage):
        O.parse_object(obj(1, 3, payload))


# --- acks and hashes ------------------------------------------------------------------------------


def test_ackdata_and_sighash():
    rnd = bytes(range(32))
    ackdata = O.encode_ackdata(1, rnd)
    assert ackdata == b"\x00\x00\x00\x02\x01\x01" + rnd and len(ackdata) == 38
    ack_obj = O.attach_nonce(5, EXPIRES.to_bytes(8, "big") + ackdata)
    assert O.ackdata_of(ack_obj) == ackdata
    assert O.parse_object(ack_obj).payload == O.MsgPayload(rnd)
    with pytest.raises(InvalidObject):
        O.encode_ackdata(1, rnd[:31])
    with pytest.raises(MalformedMessage):
        O.ackdata_of(b"\x00" * 15)
    assert O.signature_hash(b"sig") == double_sha512(b"sig")[32:]


# --- properties -----------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_parse_object(data):
    try:
        p = O.parse_object(data)
    except TYPED_ERRORS:
        return
    assert p.encode() == data
    json.dumps(p.to_dict())


_TYPES = st.sampled_from([0, 1, 2, 3, 0x746F72, 42])


@settings(max_examples=500, deadline=None)
@given(_TYPES, st.integers(min_value=0, max_value=6), st.binary(max_size=300))
def test_fuzz_known_types(otype, version, payload):
    raw = obj(otype, version, payload)
    try:
        p = O.parse_object(raw)
    except TYPED_ERRORS:
        return
    assert p.encode() == raw


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_plaintext_parsers(data):
    for parse in (O.parse_msg_plaintext, O.parse_broadcast_plaintext, O.parse_pubkey_plaintext):
        try:
            pt = parse(data)
        except TYPED_ERRORS:
            continue
        assert pt.encode() == data
        json.dumps(pt.to_dict())


_KEYS = st.binary(min_size=64, max_size=64)
_U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)


@st.composite
def msg_plaintexts(draw) -> O.MsgPlaintext:
    version = draw(st.integers(min_value=1, max_value=4))
    difficulty = version >= 3
    return O.MsgPlaintext(
        version,
        draw(_U64),
        draw(st.integers(min_value=0, max_value=(1 << 32) - 1)),
        draw(_KEYS),
        draw(_KEYS),
        draw(_U64) if difficulty else None,
        draw(_U64) if difficulty else None,
        draw(st.binary(min_size=20, max_size=20)),
        draw(_U64),
        draw(st.binary(max_size=300)),
        draw(st.binary(max_size=100)),
        draw(st.binary(max_size=80)),
        draw(st.binary(max_size=10)),
    )


@settings(max_examples=200, deadline=None)
@given(msg_plaintexts())
def test_msg_plaintext_round_trip(pt):
    raw = pt.encode()
    assert O.parse_msg_plaintext(raw) == pt
    assert raw[: pt.signed_end] == pt.unsigned_bytes()
    assert raw[: pt.pubkey_end] == pt.pubkey_bytes()


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=4),
    _U64,
    _KEYS,
    _KEYS,
    _U64,
    _U64,
    _U64,
    st.binary(max_size=300),
    st.binary(max_size=80),
)
def test_broadcast_plaintext_round_trip(version, stream, sign, enc, ntpb, extra, encoding, message, sig):
    difficulty = version >= 3
    pt = O.BroadcastPlaintext(
        version, stream, 1, sign, enc, ntpb if difficulty else None, extra if difficulty else None, encoding, message, sig
    )
    raw = pt.encode()
    assert O.parse_broadcast_plaintext(raw) == pt
    assert raw[: pt.signed_end] == pt.unsigned_bytes()


@settings(max_examples=200, deadline=None)
@given(_U64, _U64, st.integers(min_value=0, max_value=(1 << 32) - 1), _U64, _U64, st.binary(max_size=100))
def test_object_round_trip(nonce, expires, otype, version, stream, payload):
    raw = O.attach_nonce(nonce, O.encode_object_body(expires, otype, version, stream, payload))
    h = O.parse_header(raw)
    assert (h.nonce, h.expires_time, h.object_type, h.version, h.stream) == (nonce, expires, otype, version, stream)
    assert h.encode() + payload == raw
