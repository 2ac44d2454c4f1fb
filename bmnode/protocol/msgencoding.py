"""Message encodings of msg and broadcast plaintexts (spec 13): 0 ignore, 1 trivial, 2 simple,
3 extended (zlib-compressed msgpack map), anything else "unknown encoding".

Decoding follows the reference exactly where users can see the difference (the SIMPLE
splitting rules, the texts shown for unknown encodings); decoding failures raise
:class:`MessageDecodeError`, after which a receiver ignores the message completely.
"""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass, field
from typing import Any

import msgpack

from bmnode.errors import InvalidObject, MalformedMessage
from bmnode.protocol.constants import ZLIB_DECOMPRESS_LIMIT

__all__ = [
    "DecodedMessage",
    "DecompressionLimitExceeded",
    "Encoding",
    "MessageDecodeError",
    "UNKNOWN_ENCODING_BODY",
    "UNKNOWN_ENCODING_SUBJECT",
    "decode_message",
    "encode_message",
]


class Encoding(enum.IntEnum):
    IGNORE = 0
    TRIVIAL = 1
    SIMPLE = 2
    EXTENDED = 3


UNKNOWN_ENCODING_SUBJECT = "Unknown encoding"
UNKNOWN_ENCODING_BODY = "The message has an unknown encoding.\nPerhaps you should upgrade Bitmessage."
#: The reference keeps only this many bytes of a SIMPLE subject.
MAX_SIMPLE_SUBJECT = 500
#: The only extended message type the reference accepts.
EXTENDED_TYPE_MESSAGE = "message"

_SUBJECT_PREFIX = b"Subject:"
_BODY_MARK = b"\nBody:"


class MessageDecodeError(MalformedMessage):
    """The message field cannot be decoded with its encoding; the message is discarded."""


class DecompressionLimitExceeded(MessageDecodeError):
    """An extended message inflates to more than the decompression limit (1 MiB)."""


@dataclass(frozen=True)
class DecodedMessage:
    """Subject and body as shown to the user, plus what the decoder saw.

    ``raw_subject``/``raw_body`` are the undecoded bytes (the reference stores bytes; text is
    UTF-8 decoded with replacement). ``ignored`` is true for encoding 0 (no inbox entry,
    no ack); ``extended`` is the decoded msgpack map of an encoding-3 message.
    """

    encoding: int
    subject: str
    body: str
    raw_subject: bytes = b""
    raw_body: bytes = b""
    ignored: bool = False
    known: bool = True
    extended: dict[str, Any] | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "encoding": self.encoding,
            "subject": self.subject,
            "body": self.body,
            "ignored": self.ignored,
            "known_encoding": self.known,
        }
        if self.extended is not None:
            d["extended"] = _jsonable(self.extended)
        return d


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return _text(value)
    if isinstance(value, dict):
        return {str(_jsonable(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _decode_simple(encoding: int, data: bytes) -> DecodedMessage:
    # The reference's routine, on bytes as in Python 2: split at the first "\nBody:" found
    # after position 1, assume an 8-byte "Subject:" prefix without checking it, keep 500 bytes
    # of subject and only its first line (bytes.splitlines: \n, \r, \r\n).
    i = data.find(_BODY_MARK)
    if i > 1:
        subject = data[8:i][:MAX_SIMPLE_SUBJECT]
        body = data[i + len(_BODY_MARK) :]
    else:
        subject, body = b"", data
    if subject:
        subject = subject.splitlines()[0]
    return DecodedMessage(encoding, _text(subject), _text(body), subject, body)


def _inflate(data: bytes, limit: int) -> bytes:
    """zlib-decompress at most ``limit`` bytes; producing more raises, never allocating more."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise MessageDecodeError(f"extended message: bad zlib data ({exc})") from None
    if len(out) > limit:
        raise DecompressionLimitExceeded(f"extended message inflates to more than {limit} bytes")
    # A stream cut short (no end marker or checksum) is not an error: like the reference's
    # decompressobj loop, whatever it inflated to goes to msgpack, which refuses partial data.
    return out


def _py2_str(value: Any, nested: bool = False) -> bytes:
    """What the reference's Python 2 ``str(value)`` gives for a non-string msgpack value.

    Scalars are exact; in containers, strings appear as Python 2 reprs (key order is msgpack's).
    """
    if isinstance(value, bytes):
        return repr(value)[1:].encode() if nested else value
    if isinstance(value, bool) or value is None:
        return str(value).encode()
    if isinstance(value, int):  # beyond 64-bit signed, Python 2 has a long: its repr ends in L
        return (str(value) + ("L" if nested and not -(1 << 63) <= value < 1 << 63 else "")).encode()
    if isinstance(value, float):
        text = repr(value) if nested else format(value, ".12g")
        if text.lstrip("-").isdigit():
            text += ".0"
        return text.encode()
    if isinstance(value, (list, tuple)):
        return b"[" + b", ".join(_py2_str(v, True) for v in value) + b"]"
    if isinstance(value, dict):
        return b"{" + b", ".join(_py2_str(k, True) + b": " + _py2_str(v, True) for k, v in value.items()) + b"}"
    return repr(value).encode("utf-8", "replace")


def _field_text(m: dict[Any, Any], key: bytes) -> tuple[str, bytes]:
    # The reference takes str/bin values as they are and any other value as Python 2 str(value).
    value = m.get(key, b"")
    raw = value if isinstance(value, bytes) else _py2_str(value)
    return _text(raw), raw


def _decode_extended(data: bytes, limit: int) -> DecodedMessage:
    raw = _inflate(data, limit)
    try:
        # raw=True: msgpack str and bin both come back as bytes, invalid UTF-8 never raises here.
        m = msgpack.unpackb(raw, raw=True, strict_map_key=False)
    except Exception as exc:  # the C unpacker raises several unrelated types on bad input
        raise MessageDecodeError(f"extended message: bad msgpack data ({type(exc).__name__}: {exc})") from None
    if not isinstance(m, dict):
        raise MessageDecodeError(f"extended message: msgpack value is a {type(m).__name__}, not a map")
    if b"" not in m:
        raise MessageDecodeError("extended message: the message type key \"\" is missing")
    mtype = m[b""]
    if not isinstance(mtype, bytes) or mtype != EXTENDED_TYPE_MESSAGE.encode():
        raise MessageDecodeError(f"extended message: unsupported message type {_jsonable(mtype)!r}")
    subject, raw_subject = _field_text(m, b"subject")
    body, raw_body = _field_text(m, b"body")
    extended = {_text(k) if isinstance(k, bytes) else repr(k): v for k, v in m.items()}
    return DecodedMessage(Encoding.EXTENDED, subject, body, raw_subject, raw_body, extended=extended)


def decode_message(encoding: int, data: bytes, *, max_decompressed: int = ZLIB_DECOMPRESS_LIMIT) -> DecodedMessage:
    """Subject and body of a message field with its encoding (13).

    Encoding 0 gives an ``ignored`` result; unknown encodings give the reference's
    "Unknown encoding" texts. Bad extended data raises :class:`MessageDecodeError`.
    """
    data = bytes(data)
    if encoding == Encoding.IGNORE:
        return DecodedMessage(Encoding.IGNORE, "", "", b"", data, ignored=True)
    if encoding in (Encoding.TRIVIAL, Encoding.SIMPLE):
        return _decode_simple(int(encoding), data)
    if encoding == Encoding.EXTENDED:
        return _decode_extended(data, max_decompressed)
    return DecodedMessage(int(encoding), UNKNOWN_ENCODING_SUBJECT, UNKNOWN_ENCODING_BODY, b"", data, known=False)


def _as_bytes(text: str | bytes) -> bytes:
    return text.encode("utf-8") if isinstance(text, str) else bytes(text)


def encode_message(encoding: int, subject: str | bytes, body: str | bytes) -> bytes:
    """The message field for encodings 1 (body only), 2 and 3, as the reference writes them.

    Extended messages are byte-identical to the reference's: map keys in the order
    ``""``, ``body``, ``subject``, msgpack raw str types (no str8), zlib level 9.
    """
    if encoding == Encoding.TRIVIAL:
        return _as_bytes(body)
    if encoding == Encoding.SIMPLE:
        return _SUBJECT_PREFIX + _as_bytes(subject) + _BODY_MARK + _as_bytes(body)
    if encoding == Encoding.EXTENDED:
        m = {b"": EXTENDED_TYPE_MESSAGE.encode(), b"body": _as_bytes(body), b"subject": _as_bytes(subject)}
        return zlib.compress(msgpack.packb(m, use_bin_type=False), 9)
    raise InvalidObject(f"cannot encode a message with encoding {encoding}")
