"""objects.json without private-key crypto: layouts, hashes, PoW, relay decisions, plaintext
parsing, signed data, message encodings, acks, and every relay_validation entry.

(The ``identities`` section is consumed by the crypto-objects tests; it is only read here.)
"""

from __future__ import annotations

import json
import zlib

import msgpack
import pytest

from bmnode.errors import InvalidObject
from bmnode.pow import target as T
from bmnode.protocol import objects as O
from bmnode.protocol.constants import OBJECT_BROADCAST, OBJECT_GETPUBKEY, OBJECT_MSG, OBJECT_PUBKEY
from bmnode.protocol.hashing import inventory_hash
from bmnode.protocol.msgencoding import decode_message, encode_message
from bmnode.protocol.validation import RelayReason, check_relay, passes_type_sanity
from tests import vectors

F = "objects"
NOW = vectors.load(F)["now"]

#: ripe of each identity, keyed by its 64-byte public signing key (hex, no 04 prefix).
RIPE_BY_SIGNING_KEY = {
    i["pub_signing_key"][2:]: i["ripe"] for i in vectors.load(F)["identities"].values()
}


def _check_header(h: O.ObjectHeader, expected: dict) -> None:
    d = h.to_dict()
    for k, val in expected.items():
        assert d[k] == val, k


def _check_fields(got: dict, expected: dict) -> None:
    assert set(expected) <= set(got)
    for k, val in expected.items():
        assert got[k] == val, k


def _rebuild(p: O.ParsedObject) -> bytes:
    h = p.header
    body = O.encode_object_body(h.expires_time, h.object_type, h.version, h.stream, p.payload.encode())
    return O.attach_nonce(h.nonce, body)


def _check_message(e: dict, pt) -> None:
    """Message encoding: decoded text, the reference's inbox row, byte-exact re-encoding."""
    dm = decode_message(pt.encoding, pt.message)
    expected = e["message_decoded"]
    assert (dm.subject, dm.body) == (expected["subject"], expected["body"])
    assert not dm.ignored and dm.known
    if "message_text" in expected:
        assert pt.message == expected["message_text"].encode("utf-8")
    if "msgpack_decoded" in expected:
        inflated = zlib.decompress(pt.message)
        assert inflated.hex() == expected["zlib_decompressed_hex"]
        assert msgpack.unpackb(inflated, raw=False) == expected["msgpack_decoded"]
        assert dm.extended == {k: v.encode() for k, v in expected["msgpack_decoded"].items()}
    assert encode_message(pt.encoding, dm.subject, dm.body) == pt.message
    row = e["reference_result"]["inbox_row"]
    assert row["msgid"] == e["inventory_hash"]
    assert (row["subject"], row["message"], row["encodingType"]) == (dm.subject, dm.body, pt.encoding)
    assert row["received"] == NOW and row["read"] == 0 and row["folder"] == "inbox"
    assert O.signature_hash(pt.signature).hex() == row["sighash"]


def _check_ack(e: dict, pt: O.MsgPlaintext) -> None:
    ack = e["ack"]
    assert pt.ack_data.hex() == ack["ack_message"]
    ack_obj = pt.ack_object()
    assert ack_obj is not None and ack_obj.hex() == ack["ack_object"]
    ap = O.parse_object(ack_obj)
    _check_header(ap.header, ack["ack_object_header"])
    assert ap.inventory_hash.hex() == ack["ack_object_inventory_hash"]
    assert ap.header.expires_time - NOW == ack["ack_ttl_bucket_seconds"]
    watched = bytes.fromhex(ack["ackdata_watched_by_sender"])
    assert O.ackdata_of(ack_obj) == watched
    assert O.encode_ackdata(ap.header.stream, watched[-32:]) == watched
    assert ack["matched_by_sender"] is True
    # A node should validate the ack object before publishing it (15.3): it is valid at now.
    assert e["reference_result"]["ack_published"] is True
    assert check_relay(ack_obj, NOW).reason is RelayReason.OK


@pytest.mark.parametrize("v", vectors.params(F, "objects"))
def test_object(v):
    e = v[3]
    raw = bytes.fromhex(e["object"])
    assert len(raw) == e["length"]

    # Header, inventory hash, payload, byte-exact re-encoding.
    h = O.parse_header(raw)
    _check_header(h, e["header"])
    p = O.parse_object(raw)
    assert p.header == h
    assert p.inventory_hash.hex() == e["inventory_hash"] == inventory_hash(raw).hex()
    assert p.object_payload.hex() == e["object_payload"]
    assert p.encode() == raw and _rebuild(p) == raw
    assert json.loads(json.dumps(p.to_dict()))["inventory_hash"] == e["inventory_hash"]

    # PoW at now.
    pw = e["pow"]
    assert T.initial_hash(raw[8:]).hex() == pw["initial_hash"]
    chk = T.evaluate_pow(raw, NOW)
    assert (chk.trial_value, chk.ttl, chk.target) == (pw["trial_value"], pw["ttl_at_now"], pw["target_int_at_now"])
    assert chk.sufficient is pw["sufficient_at_now"]
    if "ttl_used_by_sender" in e:
        assert pw["ttl_at_now"] == e["ttl_used_by_sender"]

    # Relay decision at now.
    rd = e["relay_decision_at_now"]
    verdict = check_relay(raw, NOW)
    assert (verdict.accept, verdict.process) == (rd["accept_store_relay"], rd["process_locally"])
    assert verdict.reason is RelayReason.OK and set(rd["reference_bmobject_checks"].values()) == {"ok"}

    t = h.object_type
    payload = p.payload
    if t == OBJECT_GETPUBKEY:
        assert isinstance(payload, O.GetPubkeyPayload)
        _check_fields(payload.to_dict(), e["parsed"])
        assert p.tag == (payload.tag if h.version == 4 else None) == O.object_tag(raw)
        # The owner answers with its pubkey; for v3 the response names the requested ripe.
        [[action, arg]] = e["reference_result"]["owner_response"]
        assert action == f"sendOutOrStoreMyV{h.version}Pubkey"
        if h.version == 3:
            assert arg == payload.ripe.hex()
        with pytest.raises(InvalidObject):
            p.signed_data()
    elif t == OBJECT_PUBKEY and h.version == 3:
        assert isinstance(payload, O.PubkeyData)
        _check_fields(payload.to_dict(), e["parsed"])
        assert p.signed_data().hex() == e["signed_data"]
        assert raw[8 : h.header_length + payload.signed_end].hex() == e["signed_data"]
        unsigned = O.PubkeyData(
            payload.behavior_bitfield,
            b"\x04" + payload.pub_signing_key,
            b"\x04" + payload.pub_encryption_key,
            payload.nonce_trials_per_byte,
            payload.extra_bytes,
        )
        assert O.pubkey_signed_data(h.expires_time, 3, h.stream, unsigned).hex() == e["signed_data"]
        assert unsigned.with_signature(payload.signature).encode() == p.object_payload
        row = e["reference_result"]["stored_pubkey_row"]
        assert payload.storage_bytes(h.version, h.stream).hex() == row["data"] == raw[20 : h.header_length + payload.signed_end].hex()
        assert payload.ripe.hex() == RIPE_BY_SIGNING_KEY[payload.pub_signing_key.hex()]
        assert p.tag is None and O.object_tag(raw) is None
    elif t == OBJECT_PUBKEY and h.version == 4:
        assert isinstance(payload, O.EncryptedPubkeyPayload)
        assert payload.tag.hex() == e["tag"] == p.tag.hex() == O.object_tag(raw).hex()
        assert payload.encrypted.hex() == e["encrypted_blob"]
        pt_raw = bytes.fromhex(e["decrypted"])
        pt = O.parse_pubkey_plaintext(pt_raw)
        _check_fields(pt.to_dict(), e["parsed"])
        assert pt.encode() == pt_raw
        assert p.signed_data(pt).hex() == e["signed_data"]
        unsigned = O.PubkeyData(
            pt.behavior_bitfield, pt.pub_signing_key, pt.pub_encryption_key, pt.nonce_trials_per_byte, pt.extra_bytes
        )
        assert O.pubkey_signed_data(h.expires_time, 4, h.stream, unsigned, payload.tag).hex() == e["signed_data"]
        assert unsigned.with_signature(pt.signature).encode() == pt_raw
        row = e["reference_result"]["stored_pubkey_row"]
        assert pt.storage_bytes(h.version, h.stream).hex() == row["data"]
        assert row["address_version"] == h.version
        assert pt.ripe.hex() == RIPE_BY_SIGNING_KEY[pt.pub_signing_key.hex()]
    elif t == OBJECT_MSG:
        assert isinstance(payload, O.MsgPayload)
        assert payload.encrypted == p.object_payload
        pt_raw = bytes.fromhex(e["decrypted"])
        pt = O.parse_msg_plaintext(pt_raw)
        _check_fields(pt.to_dict(), e["parsed"])
        assert pt.encode() == pt_raw
        assert pt.signed_end == len(pt_raw) - len(pt.signature) - len(O.encode_var_int(len(pt.signature)))
        assert p.signed_data(pt).hex() == e["signed_data"]
        assert (raw[8 : h.header_length] + pt_raw[: pt.signed_end]).hex() == e["signed_data"]
        unsigned = O.MsgPlaintext(
            pt.sender_address_version,
            pt.sender_stream,
            pt.behavior_bitfield,
            pt.pub_signing_key,
            pt.pub_encryption_key,
            pt.nonce_trials_per_byte,
            pt.extra_bytes,
            pt.destination_ripe,
            pt.encoding,
            pt.message,
            pt.ack_data,
        )
        assert O.msg_signed_data(h.expires_time, h.stream, unsigned).hex() == e["signed_data"]
        assert unsigned.with_signature(pt.signature).encode() == pt_raw
        stored = e["reference_result"]["stored_sender_pubkey"]
        assert pt.pubkey_bytes().hex() == stored["data"] == pt_raw[: pt.pubkey_end].hex()
        assert stored["address_version"] == pt.sender_address_version
        assert pt.sender_ripe.hex() == RIPE_BY_SIGNING_KEY[pt.pub_signing_key.hex()]
        assert pt.destination_ripe.hex() in RIPE_BY_SIGNING_KEY.values()
        _check_message(e, pt)
        _check_ack(e, pt)
    elif t == OBJECT_BROADCAST:
        assert isinstance(payload, O.BroadcastPayload)
        if h.version == 5:
            assert payload.tag.hex() == e["tag"] == p.tag.hex() == O.object_tag(raw).hex()
            assert payload.encrypted == p.object_payload[32:]
        else:
            assert e["tag"] is None and payload.tag is None and p.tag is None
            assert payload.encrypted == p.object_payload
        pt_raw = bytes.fromhex(e["decrypted"])
        pt = O.parse_broadcast_plaintext(pt_raw)
        _check_fields(pt.to_dict(), e["parsed"])
        assert pt.encode() == pt_raw
        assert p.signed_data(pt).hex() == e["signed_data"]
        unsigned = O.BroadcastPlaintext(
            pt.sender_address_version,
            pt.sender_stream,
            pt.behavior_bitfield,
            pt.pub_signing_key,
            pt.pub_encryption_key,
            pt.nonce_trials_per_byte,
            pt.extra_bytes,
            pt.encoding,
            pt.message,
        )
        signed = O.broadcast_signed_data(h.expires_time, h.version, h.stream, unsigned, payload.tag)
        assert signed.hex() == e["signed_data"]
        assert unsigned.with_signature(pt.signature).encode() == pt_raw
        assert pt.sender_stream == h.stream
        assert pt.sender_ripe.hex() == RIPE_BY_SIGNING_KEY[pt.pub_signing_key.hex()]
        assert e["reference_result"]["inbox_row"]["toAddress"] == "[Broadcast subscribers]"
        _check_message(e, pt)
    else:  # pragma: no cover - the vector file has no other kinds
        pytest.fail(f"unexpected object kind {t}/{h.version}")
    vectors.take(v)


#: relay_validation "reason" texts -> our reasons.
REASONS = {
    "ok": RelayReason.OK,
    "expired": RelayReason.EXPIRED,
    "expires too far in the future": RelayReason.EXPIRES_TOO_FAR,
    "unwanted stream": RelayReason.STREAM_NOT_JOINED,
    "invalid stream": RelayReason.BAD_STREAM,
    "insufficient pow": RelayReason.INSUFFICIENT_POW,
    "stored and relayed, but not processed (type sanity check)": RelayReason.NOT_PROCESSABLE,
}


@pytest.mark.parametrize("v", vectors.params(F, "relay_validation"))
def test_relay_validation(v):
    e = v[3]
    raw = bytes.fromhex(e["object"])
    h = O.parse_header(raw)
    _check_header(h, e["header"])
    assert inventory_hash(raw).hex() == e["inventory_hash"]
    verdict = check_relay(raw, e["now"])
    assert (verdict.accept, verdict.process) == (e["accept_store_relay"], e["process_locally"])
    assert verdict.reason is REASONS[e["reason"]]
    assert verdict.header == h and verdict.message

    # The individual reference checks agree with our building blocks.
    ref = e["reference_bmobject_checks"]
    assert T.check_pow(raw, e["now"]) is (ref["pow"] == "ok")
    assert passes_type_sanity(h, len(raw)) is (ref["by_type"] == "ok")
    lifetime_ok = -3600 <= h.expires_time - e["now"] <= 2430000
    assert lifetime_ok is (ref["eol"] == "ok")
    # MiNode only differs where it keeps objects for 3 h after expiry.
    if e["minode_is_valid"] != verdict.accept:
        assert verdict.reason is RelayReason.EXPIRED and h.expires_time + 10800 >= e["now"]

    # Processable objects (unknown types included, opaquely) parse and re-encode; the others
    # can still be described for display.
    if verdict.process:
        assert O.parse_object(raw).encode() == raw
    assert O.describe_object(raw)["inventory_hash"] == e["inventory_hash"]
    vectors.take(v)
