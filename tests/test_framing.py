"""FrameDecoder, frame/parse_header, split_frames and decode_frame (spec section 3, 4.6)."""

from __future__ import annotations

import pytest

from bmnode.errors import MalformedMessage
from bmnode.protocol.constants import HEADER_SIZE, MAX_MESSAGE_PAYLOAD
from bmnode.protocol.framing import (
    BadChecksum,
    BadMagic,
    Frame,
    FrameDecoder,
    FramingError,
    OversizeMessage,
    TruncatedFrame,
    decode_command,
    decode_frame,
    encode_command,
    frame,
    parse_header,
    split_frames,
)

FRAMES = [
    Frame("version", bytes(range(100))),
    Frame("verack", b""),
    Frame("inv", b"\x01" + b"\xab" * 32),
    Frame("ping", b""),
    Frame("object", b"\x00" * 300),
]
STREAM = b"".join(frame(c, p) for c, p in FRAMES)


def test_frame_layout():
    raw = frame("verack")
    assert raw.hex() == "e9beb4d976657261636b00000000000000000000cf83e135"
    raw = frame("inv", b"\x00")
    h = parse_header(raw)
    assert (h.command, h.length, h.command_bytes) == ("inv", 1, b"inv" + b"\x00" * 9)
    assert h.encode() == raw[:24]
    assert decode_frame(raw) == Frame("inv", b"\x00")


def test_command_field_rules():
    assert encode_command("object") == b"object\x00\x00\x00\x00\x00\x00"
    assert encode_command("abcdefghijkl") == b"abcdefghijkl"
    with pytest.raises(FramingError):
        encode_command("abcdefghijklm")
    with pytest.raises(FramingError):
        frame("\u20ac", b"")
    # Only trailing NULs are stripped; inner padding makes a different (unknown) command.
    assert decode_command(b"inv\x00x\x00\x00\x00\x00\x00\x00\x00") == "inv\x00x"
    raw = frame("inv\x00x", b"")
    assert decode_frame(raw).command == "inv\x00x"
    assert frame(decode_frame(raw).command, b"") == raw
    # Non-ASCII bytes in the command round-trip exactly.
    weird = b"\xff\xfecmd"
    assert encode_command(decode_command(weird.ljust(12, b"\x00"))) == weird.ljust(12, b"\x00")


def test_one_byte_at_a_time():
    dec = FrameDecoder()
    got = []
    for i in range(len(STREAM)):
        got += dec.feed(STREAM[i : i + 1])
        assert dec.buffered <= HEADER_SIZE + 300
    assert got == FRAMES
    assert dec.buffered == 0 and dec.pending_header is None


def test_many_messages_in_one_read():
    dec = FrameDecoder()
    assert dec.feed(STREAM * 3) == FRAMES * 3
    assert dec.buffered == 0


@pytest.mark.parametrize("cut", range(0, len(STREAM) + 1, 7))
def test_any_split_point(cut):
    dec = FrameDecoder()
    assert dec.feed(STREAM[:cut]) + dec.feed(STREAM[cut:]) == FRAMES


def test_empty_feed_is_harmless():
    dec = FrameDecoder()
    assert dec.feed(b"") == []
    assert dec.feed(STREAM[:10]) == []
    assert dec.feed(b"") == []
    assert dec.feed(STREAM[10:]) == FRAMES


def test_oversize_rejected_after_header_only():
    head = bytes.fromhex("e9beb4d9") + encode_command("object") + (MAX_MESSAGE_PAYLOAD + 1).to_bytes(4, "big") + b"\0" * 4
    dec = FrameDecoder()
    with pytest.raises(OversizeMessage) as info:
        dec.feed(head)
    assert info.value.offset == 16
    assert dec.buffered == 0
    # A failed decoder refuses more input instead of resynchronising on garbage.
    with pytest.raises(FramingError):
        dec.feed(frame("ping"))


def test_oversize_detected_before_payload_when_fed_together():
    head = bytes.fromhex("e9beb4d9") + encode_command("x") + (2000).to_bytes(4, "big") + b"\0" * 4
    dec = FrameDecoder(max_payload=1000)
    with pytest.raises(OversizeMessage):
        dec.feed(head + b"\x00" * 2000)
    assert dec.buffered == 0


def test_configurable_limit():
    dec = FrameDecoder(max_payload=100)
    assert dec.feed(frame("a", b"x" * 100)) == [Frame("a", b"x" * 100)]
    with pytest.raises(OversizeMessage):
        dec.feed(frame("a", b"x" * 101))
    with pytest.raises(OversizeMessage):
        split_frames(frame("a", b"x" * 101), max_payload=100)


def test_buffer_bounded_by_one_frame():
    big = frame("object", b"\x07" * 50000)
    dec = FrameDecoder(max_payload=50000)
    for i in range(0, len(big), 4096):
        out = dec.feed(big[i : i + 4096])
        assert dec.buffered <= HEADER_SIZE + 50000
    assert out == [Frame("object", b"\x07" * 50000)]


def test_bad_magic_detected_from_header():
    dec = FrameDecoder()
    bad = b"\x00" + frame("verack")[1:]
    assert dec.feed(bad[:23]) == []
    with pytest.raises(BadMagic):
        dec.feed(bad[23:])


def test_bad_checksum():
    raw = bytearray(frame("inv", b"\x01" + b"\x11" * 32))
    raw[-1] ^= 1  # payload changed, checksum not
    with pytest.raises(BadChecksum):
        FrameDecoder().feed(bytes(raw))
    with pytest.raises(BadChecksum):
        decode_frame(bytes(raw))


def test_framing_errors_are_malformed_message():
    for cls in (BadMagic, BadChecksum, OversizeMessage, TruncatedFrame):
        assert issubclass(cls, FramingError) and issubclass(cls, MalformedMessage)


def test_stop_after_keeps_surplus_for_tls():
    tls = b"\x16\x03\x01\x02\x00" + b"client hello..."
    data = frame("version", b"v") + frame("verack") + tls
    dec = FrameDecoder(stop_after=lambda f: f.command == "verack")
    assert dec.feed(data) == [Frame("version", b"v"), Frame("verack", b"")]
    assert dec.stopped
    assert dec.surplus == tls
    # Later bytes are not decoded as frames either; they join the surplus.
    assert dec.feed(b"more") == []
    assert dec.take_surplus() == tls + b"more"
    assert dec.surplus == b""


def test_stop_after_verack_split_across_reads():
    data = frame("verack") + frame("ping")
    dec = FrameDecoder(stop_after=lambda f: f.command == "verack")
    got = []
    for i in range(len(data)):
        got += dec.feed(data[i : i + 1])
    assert got == [Frame("verack", b"")]
    assert dec.surplus == frame("ping")


def test_resume_decodes_surplus():
    data = frame("verack") + frame("ping") + frame("pong")[:10]
    dec = FrameDecoder(stop_after=lambda f: f.command == "verack")
    assert dec.feed(data) == [Frame("verack", b"")]
    dec.stop_after = None
    assert dec.resume() == [Frame("ping", b"")]
    assert dec.feed(frame("pong")[10:]) == [Frame("pong", b"")]


def test_stop_mid_frame_keeps_header_and_partial_payload():
    raw = frame("inv", b"\x01" + b"\x22" * 32)
    dec = FrameDecoder()
    assert dec.feed(raw[:30]) == []
    assert dec.pending_header is not None
    dec.stop()
    assert dec.surplus == raw[:30]
    dec.feed(raw[30:])
    assert dec.surplus == raw
    assert dec.resume() == [Frame("inv", b"\x01" + b"\x22" * 32)]


def test_split_frames():
    assert split_frames(STREAM) == FRAMES
    assert split_frames(b"") == []
    with pytest.raises(TruncatedFrame):
        split_frames(STREAM[:-1])
    with pytest.raises(TruncatedFrame):
        split_frames(STREAM + STREAM[:5])


def test_decode_frame_exactness():
    raw = frame("ping")
    with pytest.raises(FramingError):
        decode_frame(raw + b"\x00")
    with pytest.raises(TruncatedFrame):
        decode_frame(frame("inv", b"\x00")[:-1])
    with pytest.raises(TruncatedFrame):
        parse_header(raw[:23])
