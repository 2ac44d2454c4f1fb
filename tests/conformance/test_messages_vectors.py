"""Every entry of messages.json: framed messages field by field, and invalid framings."""

from __future__ import annotations

from typing import Any

import pytest

from bmnode.protocol import framing, messages
from bmnode.protocol.encoding import encode_var_int_list, encode_var_str, i64, u32, u64
from bmnode.protocol.framing import (
    BadChecksum,
    BadMagic,
    FrameDecoder,
    FramingError,
    OversizeMessage,
    decode_frame,
    parse_header,
)
from bmnode.protocol.hashing import checksum
from bmnode.protocol.messages import Error, ObjectMessage, Portcheck, Unknown, Version
from tests import vectors

F = "messages"


def assert_subset(expected: Any, actual: Any, path: str = "") -> None:
    """Every key/value of ``expected`` appears in ``actual`` (recursively)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), path
        for k, v in expected.items():
            assert k in actual, f"{path}.{k} missing"
            assert_subset(v, actual[k], f"{path}.{k}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), path
        for i, (a, b) in enumerate(zip(expected, actual)):
            assert_subset(a, b, f"{path}[{i}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def _version_field_bytes(msg: Version, name: str) -> bytes:
    return {
        "version": u32(msg.version),
        "services": u64(msg.services),
        "timestamp": i64(msg.timestamp),
        "addr_recv": msg.addr_recv.encode_short(),
        "addr_from": msg.addr_from.encode_short(),
        "nonce": msg.nonce,
        "user_agent": encode_var_str(msg.user_agent),
        "streams": encode_var_int_list(msg.streams),
    }[name]


@pytest.mark.parametrize("v", vectors.params(F, "messages"))
def test_message(v):
    e = v[3]
    packet = bytes.fromhex(e["packet"])
    payload = bytes.fromhex(e["payload"])

    header = parse_header(packet)
    assert header.to_dict() == e["header"]
    assert header.encode() == packet[:24]

    f = decode_frame(packet)
    assert f.command == e["header"]["command"]
    assert f.payload == payload and len(payload) == e["header"]["length"]

    msg = messages.decode_payload(f.command, f.payload)
    assert msg.command == f.command
    fields = msg.to_dict()
    assert_subset(e["fields"], fields)
    if e["fields"]:
        # No field of the vector may be dropped; ours may add display extras only.
        assert set(e["fields"]) <= set(fields)

    # Typed attributes agree with the vector too (not only the display dict).
    if isinstance(msg, Version):
        fl = e["fields"]
        assert (msg.version, msg.services, msg.timestamp) == (fl["version"], fl["services"], fl["timestamp"])
        assert msg.nonce.hex() == fl["nonce"] and msg.user_agent.decode() == fl["user_agent"]
        assert list(msg.streams) == fl["streams"]
        for name, (start, end) in e["field_offsets"].items():
            assert payload[start:end] == _version_field_bytes(msg, name), name
        assert max(end for _, end in e["field_offsets"].values()) == len(payload)
    if isinstance(msg, ObjectMessage):
        assert msg.data == payload
        assert msg.inventory_hash.hex() == e["fields"]["inventory_hash"]
    if isinstance(msg, Error):
        assert msg.text == e["fields"]["error_text"]
    if e["name"] == "unknown_command":
        # portcheck is reference-internal: decoded as Portcheck, handled like an unknown command.
        assert isinstance(msg, Portcheck)
        assert isinstance(messages.decode_payload("portcheck\x00x", b""), Unknown)

    # Byte-for-byte re-encoding, through both entry points.
    assert msg.encode_payload() == payload
    assert messages.encode_message(msg) == packet
    assert messages.decode_message(packet) == msg

    # The stream decoder sees the same frame, even one byte at a time.
    dec = FrameDecoder()
    got = []
    for i in range(len(packet)):
        got += dec.feed(packet[i : i + 1])
    assert got == [f] and dec.buffered == 0
    vectors.take(v)


def test_build_version_matches_reference():
    """Our version builder reproduces the reference's version_outbound byte for byte."""
    e = next(x for x in vectors.entries(F, "messages") if x["name"] == "version_outbound")
    fl = e["fields"]
    msg = messages.build_version(
        remote_host=fl["addr_recv"]["host"],
        remote_port=fl["addr_recv"]["port"],
        nonce=bytes.fromhex(fl["nonce"]),
        timestamp=fl["timestamp"],
        services=fl["services"],
        listen_port=fl["addr_from"]["port"],
        user_agent=fl["user_agent"],
        streams=fl["streams"],
    )
    assert msg.encode() == bytes.fromhex(e["packet"])


def test_build_version_sorts_streams():
    e = next(x for x in vectors.entries(F, "messages") if x["name"] == "version_three_streams")
    fl = e["fields"]
    msg = messages.build_version(
        remote_host=fl["addr_recv"]["host"],
        remote_port=fl["addr_recv"]["port"],
        nonce=bytes.fromhex(fl["nonce"]),
        timestamp=fl["timestamp"],
        services=fl["services"],
        user_agent=fl["user_agent"],
        streams=[3, 1, 2],
    )
    assert msg.encode() == bytes.fromhex(e["packet"])


@pytest.mark.parametrize("v", vectors.params(F, "invalid_framing"))
def test_invalid_framing(v):
    e = v[3]
    name = e["name"]
    if name == "empty_payload_checksum":
        assert checksum(b"").hex() == e["value"]
        assert framing.frame("verack")[20:24].hex() == e["value"]
    elif name == "oversize_length":
        head = bytes.fromhex(e["header_only"])
        assert len(head) == 24
        with pytest.raises(OversizeMessage):
            parse_header(head)
        dec = FrameDecoder()
        with pytest.raises(OversizeMessage):
            dec.feed(head)  # refused from the header alone, payload never read
        assert dec.buffered == 0
        # The limit is exactly 1600100: the same header with length 1600100 is accepted.
        ok = head[:16] + (1600100).to_bytes(4, "big") + head[20:]
        assert parse_header(ok).length == 1600100
    else:
        packet = bytes.fromhex(e["packet"])
        expected = {"bad_magic": BadMagic, "bad_checksum": BadChecksum}[name]
        assert e["expected"] == "close connection"
        with pytest.raises(expected):
            decode_frame(packet)
        with pytest.raises(expected):
            FrameDecoder().feed(packet)
        with pytest.raises(FramingError):
            messages.decode_message(packet)
    vectors.take(v)
