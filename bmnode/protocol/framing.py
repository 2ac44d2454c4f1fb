"""Message framing (spec section 3): the 24-byte header and an incremental stream decoder.

Every error raised here is a :class:`FramingError` (a MalformedMessage): the reference closes
the connection on all of them. The command name is kept as text with trailing NULs stripped;
it is decoded as Latin-1 so that any 12 bytes round-trip exactly (a name with odd padding such
as ``inv\\x00x`` stays an unknown command, as in the reference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

from bmnode.errors import MalformedMessage
from bmnode.protocol.constants import (
    CHECKSUM_SIZE,
    COMMAND_SIZE,
    HEADER_SIZE,
    MAGIC,
    MAGIC_BYTES,
    MAX_MESSAGE_PAYLOAD,
)
from bmnode.protocol.encoding import u32
from bmnode.protocol.hashing import checksum


class FramingError(MalformedMessage):
    """The byte stream is not valid framing; the connection must be closed."""


class BadMagic(FramingError):
    """The header does not start with e9beb4d9."""


class BadChecksum(FramingError):
    """SHA512(payload)[0:4] differs from the header's checksum."""


class OversizeMessage(FramingError):
    """The header announces a payload longer than the limit (detected before reading it)."""


class TruncatedFrame(FramingError):
    """A whole buffer ended inside a header or payload."""


class Frame(NamedTuple):
    """One complete message: command (trailing NULs stripped) and payload."""

    command: str
    payload: bytes


@dataclass(frozen=True)
class Header:
    """The parsed 24-byte message header."""

    magic: int
    command: str
    length: int
    checksum: bytes
    command_bytes: bytes

    def encode(self) -> bytes:
        """The 24 header bytes again."""
        return MAGIC_BYTES + self.command_bytes + u32(self.length) + self.checksum

    def to_dict(self) -> dict[str, object]:
        """JSON-ready fields (hex for byte fields)."""
        return {
            "magic": f"{self.magic:08x}",
            "command": self.command,
            "command_hex": self.command_bytes.hex(),
            "length": self.length,
            "checksum": self.checksum.hex(),
        }


def encode_command(command: str | bytes) -> bytes:
    """The 12-byte NUL-padded command field."""
    if isinstance(command, str):
        try:
            raw = command.encode("latin-1")
        except UnicodeEncodeError:
            raise FramingError(f"command {command!r} is not representable in one byte per character") from None
    else:
        raw = bytes(command)
    if len(raw) > COMMAND_SIZE:
        raise FramingError(f"command {command!r} longer than {COMMAND_SIZE} bytes")
    return raw.ljust(COMMAND_SIZE, b"\x00")


def decode_command(field: bytes) -> str:
    """Command text of a 12-byte field: trailing NULs stripped, other bytes kept (Latin-1)."""
    return bytes(field).rstrip(b"\x00").decode("latin-1")


def frame(command: str | bytes, payload: bytes = b"") -> bytes:
    """Header (magic, padded command, length, checksum) followed by ``payload``."""
    payload = bytes(payload)
    if len(payload) > 0xFFFFFFFF:
        raise OversizeMessage(f"payload of {len(payload)} bytes does not fit the length field")
    return MAGIC_BYTES + encode_command(command) + u32(len(payload)) + checksum(payload) + payload


def parse_header(data: bytes, max_payload: int = MAX_MESSAGE_PAYLOAD) -> Header:
    """Parse the first 24 bytes of ``data``; bad magic or a length over ``max_payload`` raise."""
    if len(data) < HEADER_SIZE:
        raise TruncatedFrame(f"header needs {HEADER_SIZE} bytes, got {len(data)}", len(data))
    head = bytes(data[:HEADER_SIZE])
    if head[:4] != MAGIC_BYTES:
        raise BadMagic(f"bad magic {head[:4].hex()} (expected {MAGIC:08x})", 0)
    command_bytes = head[4 : 4 + COMMAND_SIZE]
    length = int.from_bytes(head[16:20], "big")
    if length > max_payload:
        raise OversizeMessage(f"payload length {length} exceeds the limit {max_payload}", 16)
    return Header(
        magic=MAGIC,
        command=decode_command(command_bytes),
        length=length,
        checksum=head[20 : 20 + CHECKSUM_SIZE],
        command_bytes=command_bytes,
    )


def verify_payload(header: Header, payload: bytes) -> None:
    """Raise BadChecksum unless ``payload`` matches the header's checksum."""
    actual = checksum(payload)
    if actual != header.checksum:
        raise BadChecksum(
            f"checksum {header.checksum.hex()} of {header.command!r} does not match payload ({actual.hex()})", 20
        )


class FrameDecoder:
    """Incremental decoder for a TCP byte stream.

    ``feed(data)`` returns the frames completed by ``data``. It holds at most one header plus
    one payload of ``max_payload`` bytes: a header announcing more is refused before any of
    its payload is read. Set ``stop_after`` to a predicate (e.g. ``lambda f: f.command ==
    "verack"``): after the first frame it accepts, decoding stops and every later byte is kept
    in :attr:`surplus` (for a TLS engine, spec 4.6) until :meth:`take_surplus` or
    :meth:`resume`. After a framing error the decoder refuses further input.
    """

    def __init__(
        self,
        max_payload: int = MAX_MESSAGE_PAYLOAD,
        stop_after: Callable[[Frame], bool] | None = None,
    ) -> None:
        self.max_payload = max_payload
        self.stop_after = stop_after
        self._buf = bytearray()
        self._header: Header | None = None
        self._surplus = bytearray()
        self._stopped = False
        self._error: FramingError | None = None

    @property
    def stopped(self) -> bool:
        """True once ``stop_after`` matched (or :meth:`stop` was called)."""
        return self._stopped

    @property
    def surplus(self) -> bytes:
        """Bytes received after decoding stopped, not yet taken."""
        return bytes(self._surplus)

    @property
    def buffered(self) -> int:
        """Bytes of the incomplete frame currently held (never above 24 + max_payload)."""
        return len(self._buf)

    @property
    def pending_header(self) -> Header | None:
        """The header of the frame whose payload is still being received, if any."""
        return self._header

    def stop(self) -> None:
        """Stop now: bytes of an incomplete frame and any later input go to :attr:`surplus`."""
        if not self._stopped:
            self._stopped = True
            pending = (self._header.encode() if self._header is not None else b"") + bytes(self._buf)
            self._surplus[:0] = pending
            self._buf.clear()
            self._header = None

    def take_surplus(self) -> bytes:
        """Return and forget the surplus bytes."""
        out = bytes(self._surplus)
        self._surplus.clear()
        return out

    def resume(self) -> list[Frame]:
        """Leave the stopped state and decode the surplus as ordinary input."""
        self._stopped = False
        data = self.take_surplus()
        return self.feed(data)

    def feed(self, data: bytes) -> list[Frame]:
        """Consume ``data``; return the frames it completed, in order."""
        if self._error is not None:
            raise FramingError(f"decoder already failed: {self._error}")
        if self._stopped:
            self._surplus += data
            return []
        frames: list[Frame] = []
        view = memoryview(data)
        pos = 0
        end = len(view)
        try:
            while True:
                if self._header is None:
                    take = min(HEADER_SIZE - len(self._buf), end - pos)
                    self._buf += view[pos : pos + take]
                    pos += take
                    if len(self._buf) < HEADER_SIZE:
                        break
                    self._header = parse_header(self._buf, self.max_payload)
                    self._buf.clear()
                header = self._header
                take = min(header.length - len(self._buf), end - pos)
                self._buf += view[pos : pos + take]
                pos += take
                if len(self._buf) < header.length:
                    break
                payload = bytes(self._buf)
                self._buf.clear()
                self._header = None
                verify_payload(header, payload)
                f = Frame(header.command, payload)
                frames.append(f)
                if self.stop_after is not None and self.stop_after(f):
                    self._stopped = True
                    self._surplus += view[pos:end]
                    break
                if pos >= end:
                    break
        except FramingError as exc:
            self._error = exc
            self._buf.clear()
            self._header = None
            raise
        return frames


def split_frames(data: bytes, max_payload: int = MAX_MESSAGE_PAYLOAD) -> list[Frame]:
    """All frames of a complete buffer (e.g. a file of framed messages); leftovers raise."""
    decoder = FrameDecoder(max_payload)
    frames = decoder.feed(data)
    if decoder.buffered or decoder.pending_header is not None:
        raise TruncatedFrame(f"buffer ends inside a frame ({decoder.buffered} bytes pending)", len(data))
    return frames


def decode_frame(packet: bytes, max_payload: int = MAX_MESSAGE_PAYLOAD) -> Frame:
    """Exactly one framed message; missing or extra bytes raise."""
    header = parse_header(packet, max_payload)
    total = HEADER_SIZE + header.length
    if len(packet) < total:
        raise TruncatedFrame(f"packet has {len(packet)} bytes, header announces {total}", len(packet))
    if len(packet) > total:
        raise FramingError(f"{len(packet) - total} bytes after the framed message", total)
    payload = bytes(packet[HEADER_SIZE:total])
    verify_payload(header, payload)
    return Frame(header.command, payload)
