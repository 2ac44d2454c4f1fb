"""Message encodings (spec 13): the reference's SIMPLE quirks, EXTENDED limits, bad input."""

from __future__ import annotations

import zlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmnode.errors import InvalidObject, MalformedMessage
from bmnode.protocol.msgencoding import (
    UNKNOWN_ENCODING_BODY,
    UNKNOWN_ENCODING_SUBJECT,
    DecompressionLimitExceeded,
    Encoding,
    MessageDecodeError,
    decode_message,
    encode_message,
)


def ext(m: object, level: int = 9) -> bytes:
    return zlib.compress(msgpack.packb(m, use_bin_type=True), level)


# --- SIMPLE / TRIVIAL ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data,subject,body",
    [
        (b"Subject:Hi\nBody:there", "Hi", "there"),
        (b"Subject:\nBody:only body", "", "only body"),
        (b"Subject:Hi\nBody:", "Hi", ""),
        (b"Subject:a\nb\nBody:c", "a", "c"),  # only the first line of the subject
        (b"Subject:a\r\nb\nBody:c", "a", "c"),
        (b"Subject:a\rb\nBody:c", "a", "c"),
        (b"Subject:a\x0bb\x0cc\x1cd\nBody:e", "a\x0bb\x0cc\x1cd", "e"),  # bytes.splitlines only
        (b"Subject:a\nBody:b\nBody:c", "a", "b\nBody:c"),  # first marker wins
        (b"XXXXXXXXsubj\nBody:b", "subj", "b"),  # the prefix is assumed, not checked
        (b"ab\nBody:x", "", "x"),  # marker before the 8-byte prefix ends: empty subject
        (b"\nBody:x", "", "\nBody:x"),  # marker at 0 or 1: no split
        (b"a\nBody:x", "", "a\nBody:x"),
        (b"no marker at all", "", "no marker at all"),
        (b"", "", ""),
        (b"Subject:\xff\xfe\nBody:\xc3\xa9", "\ufffd\ufffd", "\u00e9"),  # invalid UTF-8 replaced
    ],
)
@pytest.mark.parametrize("encoding", [1, 2])
def test_simple_decoding_quirks(encoding, data, subject, body):
    dm = decode_message(encoding, data)
    assert (dm.encoding, dm.subject, dm.body) == (encoding, subject, body)
    assert not dm.ignored and dm.known and dm.extended is None


def test_simple_keeps_raw_bytes():
    dm = decode_message(2, b"Subject:\xff\nBody:\xfe")
    assert (dm.raw_subject, dm.raw_body) == (b"\xff", b"\xfe")


def test_simple_subject_is_cut_at_500_bytes():
    dm = decode_message(2, b"Subject:" + b"s" * 600 + b"\nBody:b")
    assert dm.subject == "s" * 500 and dm.body == "b"
    # bytes, not characters: a 2-byte character cut in half becomes a replacement char
    dm = decode_message(2, b"Subject:" + b"s" * 499 + "\u00e9".encode() + b"\nBody:b")
    assert dm.subject == "s" * 499 + "\ufffd" and len(dm.raw_subject) == 500
    # the cut happens before the first-line rule
    dm = decode_message(2, b"Subject:" + b"s" * 500 + b"\rmore\nBody:b")
    assert dm.subject == "s" * 500


def test_encode_simple_and_trivial():
    assert encode_message(2, "Sub", "Bo\ndy") == b"Subject:Sub\nBody:Bo\ndy"
    assert encode_message(1, "ignored", "just body") == b"just body"
    assert encode_message(Encoding.SIMPLE, b"\xff", b"x") == b"Subject:\xff\nBody:x"


@given(
    subject=st.text(max_size=100).filter(lambda s: len(s.encode()) <= 500 and s.encode().splitlines() in ([], [s.encode()]) and "\nBody:" not in s),
    body=st.text(max_size=300),
)
def test_simple_round_trip(subject, body):
    dm = decode_message(2, encode_message(2, subject, body))
    assert (dm.subject, dm.body) == (subject, body)


# --- EXTENDED -----------------------------------------------------------------------------------


def test_extended_round_trip_and_reference_bytes():
    data = encode_message(3, "Sub ject", "B\u00f6dy")
    # the reference's layout: keys "", body, subject as raw str, zlib level 9
    inflated = zlib.decompress(data)
    assert inflated.startswith(b"\x83\xa0\xa7message\xa4body")
    dm = decode_message(3, data)
    assert (dm.encoding, dm.subject, dm.body) == (3, "Sub ject", "B\u00f6dy")
    assert dm.extended == {"": b"message", "body": "B\u00f6dy".encode(), "subject": b"Sub ject"}
    assert dm.to_dict()["extended"] == {"": "message", "body": "B\u00f6dy", "subject": "Sub ject"}


def test_extended_long_strings_use_str16_like_the_reference():
    inflated = zlib.decompress(encode_message(3, "", "x" * 40))
    assert b"\xda\x00\x28" + b"x" * 40 in inflated  # no str8 (0xd9) in the old msgpack spec


def test_extended_accepts_str_and_bin_values_and_defaults():
    dm = decode_message(3, ext({"": "message", "subject": b"bin subject", "body": "str body"}))
    assert (dm.subject, dm.body) == ("bin subject", "str body")
    dm = decode_message(3, ext({"": b"message"}))
    assert (dm.subject, dm.body) == ("", "")
    dm = decode_message(3, ext({"": "message", "body": b"\xff ok", "extra": [1, 2]}))
    assert dm.body == "\ufffd ok"
    assert dm.to_dict()["extended"]["extra"] == [1, 2]


@pytest.mark.parametrize(
    "data",
    [
        ext({"subject": "s", "body": "b"}),  # no type key
        ext({"": "vote", "msgid": b"x", "vote": "1"}),  # unsupported type
        ext({"": 1}),
        ext(["message"]),
        ext("message"),
        zlib.compress(b"\xc1"),  # msgpack: never-used byte
        zlib.compress(msgpack.packb({"": "message"}) + b"\x00"),  # extra data
        zlib.compress(b"\x85"),  # map truncated
        zlib.compress(b"\x91" * 5000 + b"\x00"),  # nesting deeper than the unpacker allows
        zlib.compress(b""),
        b"",
        b"not zlib at all",
        ext({"": "message", "body": "x" * 100})[:-8],  # stream cut inside the data: msgpack is partial
        b"\x78\x9c" + b"\xff" * 20,  # bad deflate data
    ],
)
def test_extended_bad_data_raises_typed_error(data):
    with pytest.raises(MessageDecodeError) as info:
        decode_message(3, data)
    assert isinstance(info.value, MalformedMessage)


@pytest.mark.parametrize(
    "value,text",
    [
        (5, "5"),
        (-(1 << 63), "-9223372036854775808"),
        (None, "None"),
        (True, "True"),
        (1.0, "1.0"),
        (1 / 3, "0.333333333333"),  # Python 2 str(float): 12 significant digits
        (["b", 1, (1 << 64) - 1], "['b', 1, 18446744073709551615L]"),
        ({"k": "it's"}, "{'k': \"it's\"}"),
    ],
)
def test_extended_non_string_values_read_as_python2_str(value, text):
    # The reference's Message.decode: a value that is not a string is shown as str(value).
    dm = decode_message(3, ext({"": "message", "subject": value, "body": value}))
    assert (dm.subject, dm.body) == (text, text)


def test_extended_stream_without_its_checksum_still_decodes():
    # The reference's decompressobj loop never asks for the end of the stream: a stream missing
    # its Adler-32 trailer inflates completely and the message is shown.
    whole = ext({"": "message", "subject": "s", "body": "b"})
    for cut in (1, 4):
        dm = decode_message(3, whole[:-cut])
        assert (dm.subject, dm.body) == ("s", "b")


def test_extended_ignores_bytes_after_the_zlib_stream():
    dm = decode_message(3, ext({"": "message", "body": "b"}) + b"junk")
    assert dm.body == "b"


def test_decompression_limit_exact_boundary():
    packed = msgpack.packb({"": "message", "body": "x" * 200})
    limit = len(packed)
    assert decode_message(3, zlib.compress(packed), max_decompressed=limit).body == "x" * 200
    with pytest.raises(DecompressionLimitExceeded):
        decode_message(3, zlib.compress(packed), max_decompressed=limit - 1)


def test_zlib_bomb_is_refused_without_inflating_it():
    # 64 MiB of zeros in ~64 KiB of zlib: refused at the 1 MiB limit, not inflated further.
    chunk = zlib.compressobj(9)
    bomb = chunk.compress(bytes(64 << 20)) + chunk.flush()  # 64 MiB -> ~64 KiB
    assert len(bomb) < 200_000
    with pytest.raises(DecompressionLimitExceeded):
        decode_message(3, bomb)
    big_but_allowed = zlib.compress(msgpack.packb({"": "message", "body": "y" * ((1 << 20) - 64)}))
    assert len(decode_message(3, big_but_allowed).body) == (1 << 20) - 64
    too_big = zlib.compress(msgpack.packb({"": "message", "body": "y" * (1 << 20)}))
    with pytest.raises(DecompressionLimitExceeded):
        decode_message(3, too_big)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200), st.text(max_size=2000))
def test_extended_round_trip_property(subject, body):
    dm = decode_message(3, encode_message(3, subject, body))
    assert (dm.subject, dm.body) == (subject, body)


# --- IGNORE, unknown -----------------------------------------------------------------------------


def test_ignore_encoding():
    dm = decode_message(0, b"whatever")
    assert dm.ignored and dm.encoding == 0 and dm.raw_body == b"whatever"


@pytest.mark.parametrize("encoding", [4, 5, 255, (1 << 64) - 1])
def test_unknown_encodings_show_the_reference_text(encoding):
    dm = decode_message(encoding, b"\x00\x01")
    assert (dm.subject, dm.body) == (UNKNOWN_ENCODING_SUBJECT, UNKNOWN_ENCODING_BODY)
    assert dm.subject == "Unknown encoding"
    assert dm.body == "The message has an unknown encoding.\nPerhaps you should upgrade Bitmessage."
    assert not dm.known and not dm.ignored and dm.encoding == encoding


@pytest.mark.parametrize("encoding", [0, 4, 99])
def test_cannot_encode_other_encodings(encoding):
    with pytest.raises(InvalidObject):
        encode_message(encoding, "s", "b")


# --- fuzz ------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=6), st.binary(max_size=300))
def test_any_bytes_decode_or_raise_typed(encoding, data):
    try:
        dm = decode_message(encoding, data)
    except MessageDecodeError:
        assert encoding == 3
    else:
        assert isinstance(dm.subject, str) and isinstance(dm.body, str)


_MSGPACK_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
_MSGPACK_VALUES = st.recursive(
    _MSGPACK_SCALARS,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10) | st.binary(max_size=10), c, max_size=4),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None)
@given(_MSGPACK_VALUES | st.dictionaries(st.sampled_from(["", "subject", "body"]), _MSGPACK_VALUES | st.just("message")))
def test_any_msgpack_value_decodes_or_raises_typed(value):
    data = zlib.compress(msgpack.packb(value, use_bin_type=True))
    try:
        dm = decode_message(3, data)
    except MessageDecodeError:
        pass
    else:
        assert dm.extended is not None
