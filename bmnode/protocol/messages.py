"""Network command payloads (spec sections 4.2, 5): one frozen dataclass per command.

``decode_payload(command, payload)`` turns a frame into a message object and raises only
:class:`MalformedMessage` subclasses; ``encode_message(msg)`` produces the framed bytes again
(byte for byte for anything that decoded, except ignored trailing bytes). ``describe`` gives
JSON-ready dicts for the CLI. Error classes tell the network layer what to do:

* :class:`~bmnode.protocol.framing.FramingError` (from framing) - close the connection;
* :class:`TooManyEntries` - an inv/dinv over 50000 entries (a getdata over what fits one
  message): ignore the message;
* any other :class:`MalformedMessage` - the payload does not fit the command: ignore it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Iterator

from bmnode.errors import MalformedMessage
from bmnode.protocol.constants import (
    DEFAULT_PORT,
    DEFAULT_STREAM,
    INV_HASH_SIZE,
    MAX_INV_ENTRIES,
    MAX_INV_ENTRIES_SENT,
    MAX_MESSAGE_PAYLOAD,
    MAX_VERSION_STREAMS,
    NET_ADDR_SIZE,
    NODE_NETWORK,
    PROTOCOL_VERSION,
    USER_AGENT,
)
from bmnode.protocol.encoding import (
    MAX_UINT64,
    Reader,
    encode_var_int,
    encode_var_int_list,
    encode_var_str,
    i64,
    u32,
    u64,
)
from bmnode.protocol.framing import (
    HEADER_SIZE,
    Frame,
    decode_frame,
    encode_command,
    frame,
    parse_header,
    split_frames,
)
from bmnode.protocol.hashing import inventory_hash
from bmnode.protocol.objects import parse_header as parse_object_header
from bmnode.protocol.hosts import NetAddr, encode_host, service_names


class TooManyEntries(MalformedMessage):
    """An inv/dinv announcing more than MAX_INV_ENTRIES hashes (or a getdata more than fits
    one message): ignore it, keep the peer."""


def _check_uint(value: Any, bits: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise MalformedMessage(f"{what} out of range for uint{bits}: {value!r}")
    return value


def _check_var_int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_UINT64:
        raise MalformedMessage(f"{what} out of var_int range: {value!r}")
    return value


def _as_bytes(value: Any, what: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise MalformedMessage(f"{what} must be bytes or str, not {type(value).__name__}")


def _text(data: bytes) -> str:
    """Display form of wire text: UTF-8, undecodable bytes shown as \\xNN escapes."""
    return data.decode("utf-8", errors="backslashreplace")


class Message:
    """Base of all command messages."""

    command: ClassVar[str] = ""

    def encode_payload(self) -> bytes:  # pragma: no cover - overridden
        """The payload bytes of this message."""
        raise NotImplementedError

    @classmethod
    def decode(cls, payload: bytes) -> "Message":  # pragma: no cover - overridden
        """Decode a payload of this command; raises MalformedMessage (or a subclass)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (hex for bytes, hosts as text, services as int and names)."""
        return {}

    def encode(self) -> bytes:
        """The framed message (header + payload)."""
        return frame(self.command, self.encode_payload())


# --- version -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Version(Message):
    """``version`` (spec 4.2). Decoded in wire order; trailing bytes are ignored."""

    command: ClassVar[str] = "version"

    version: int = PROTOCOL_VERSION
    services: int = NODE_NETWORK
    timestamp: int = 0
    addr_recv: NetAddr = field(default_factory=lambda: NetAddr(stream=0))
    addr_from: NetAddr = field(default_factory=lambda: NetAddr(stream=0))
    nonce: bytes = b"\x00" * 8
    user_agent: bytes = USER_AGENT
    streams: tuple[int, ...] = (DEFAULT_STREAM,)

    def __post_init__(self) -> None:
        _check_uint(self.version, 32, "version")
        _check_uint(self.services, 64, "services")
        if not isinstance(self.timestamp, int) or not -(1 << 63) <= self.timestamp < (1 << 63):
            raise MalformedMessage(f"timestamp out of int64 range: {self.timestamp!r}")
        nonce = _as_bytes(self.nonce, "nonce")
        if len(nonce) != 8:
            raise MalformedMessage(f"nonce must be 8 bytes, got {len(nonce)}")
        object.__setattr__(self, "nonce", nonce)
        object.__setattr__(self, "user_agent", _as_bytes(self.user_agent, "user_agent"))
        streams = tuple(self.streams)
        for s in streams:
            _check_var_int(s, "stream")
        object.__setattr__(self, "streams", streams)
        for name in ("addr_recv", "addr_from"):
            if not isinstance(getattr(self, name), NetAddr):
                raise MalformedMessage(f"{name} must be a NetAddr")

    def encode_payload(self) -> bytes:
        return (
            u32(self.version)
            + u64(self.services)
            + i64(self.timestamp)
            + self.addr_recv.encode_short()
            + self.addr_from.encode_short()
            + self.nonce
            + encode_var_str(self.user_agent)
            + encode_var_int_list(self.streams)
        )

    @classmethod
    def decode(cls, payload: bytes) -> "Version":
        r = Reader(payload)
        return cls(
            version=r.u32("version"),
            services=r.u64("services"),
            timestamp=r.i64("timestamp"),
            addr_recv=NetAddr.read_short(r),
            addr_from=NetAddr.read_short(r),
            nonce=r.bytes(8, "nonce"),
            user_agent=r.var_str("user_agent"),
            streams=tuple(r.var_int_list("streams")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "services": self.services,
            "services_hex": f"{self.services:016x}",
            "service_names": service_names(self.services),
            "timestamp": self.timestamp,
            "addr_recv": self.addr_recv.to_dict(short=True),
            "addr_from": self.addr_from.to_dict(short=True),
            "nonce": self.nonce.hex(),
            "user_agent": _text(self.user_agent),
            "user_agent_hex": self.user_agent.hex(),
            "streams": list(self.streams),
        }


def build_version(
    *,
    remote_host: str | bytes,
    remote_port: int,
    nonce: bytes,
    timestamp: int,
    services: int = NODE_NETWORK,
    listen_port: int = DEFAULT_PORT,
    user_agent: bytes | str = USER_AGENT,
    streams: Iterable[int] = (DEFAULT_STREAM,),
    remote_services: int = NODE_NETWORK,
) -> Version:
    """Our own ``version``: addr_recv = the peer as we see it (services 1), addr_from =
    127.0.0.1 with our services and listening port, streams sorted ascending and at most the
    first 160000 of them, the protocol's sender-side limit (spec 4.2).

    ``nonce`` is the random per-connection nonce; ``timestamp`` is our clock's now. A v3
    onion ``remote_host`` is truncated to 16 bytes as the reference does.
    """
    recv = NetAddr(time=0, stream=0, services=remote_services, host=encode_host(remote_host, truncate=True), port=remote_port)
    sender = NetAddr(time=0, stream=0, services=services, host="127.0.0.1", port=listen_port)
    return Version(
        version=PROTOCOL_VERSION,
        services=services,
        timestamp=timestamp,
        addr_recv=recv,
        addr_from=sender,
        nonce=nonce,
        user_agent=user_agent,
        streams=tuple(sorted(set(streams))[:MAX_VERSION_STREAMS]),
    )


# --- empty-payload commands --------------------------------------------------------------


@dataclass(frozen=True)
class _Empty(Message):
    """A command whose payload is empty; any payload received is ignored (as the reference does)."""

    def encode_payload(self) -> bytes:
        return b""

    @classmethod
    def decode(cls, payload: bytes) -> "_Empty":
        return cls()


@dataclass(frozen=True)
class Verack(_Empty):
    """``verack`` (spec 5.1)."""

    command: ClassVar[str] = "verack"


@dataclass(frozen=True)
class Ping(_Empty):
    """``ping`` (spec 5.7): answer with pong."""

    command: ClassVar[str] = "ping"


@dataclass(frozen=True)
class Pong(_Empty):
    """``pong`` (spec 5.7)."""

    command: ClassVar[str] = "pong"


@dataclass(frozen=True)
class Portcheck(_Empty):
    """``portcheck`` (spec 5.9): internal to the reference; a node ignores it."""

    command: ClassVar[str] = "portcheck"


# --- addr --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Addr(Message):
    """``addr`` (spec 5.2): count, then count 38-byte net_addrs; nothing may follow them."""

    command: ClassVar[str] = "addr"

    entries: tuple[NetAddr, ...] = ()

    def __post_init__(self) -> None:
        entries = tuple(self.entries)
        for e in entries:
            if not isinstance(e, NetAddr):
                raise MalformedMessage("addr entries must be NetAddr")
        object.__setattr__(self, "entries", entries)

    def encode_payload(self) -> bytes:
        return encode_var_int(len(self.entries)) + b"".join(e.encode() for e in self.entries)

    @classmethod
    def decode(cls, payload: bytes) -> "Addr":
        r = Reader(payload)
        count = r.var_int("addr count")
        if count * NET_ADDR_SIZE != r.remaining:
            raise MalformedMessage(
                f"addr count {count} needs {count * NET_ADDR_SIZE} bytes, {r.remaining} present", r.pos
            )
        return cls(tuple(NetAddr.read(r) for _ in range(count)))

    def to_dict(self) -> dict[str, Any]:
        return {"count": len(self.entries), "entries": [e.to_dict() for e in self.entries]}


# --- inv / getdata / dinv ----------------------------------------------------------------


@dataclass(frozen=True)
class _HashList(Message):
    """var_int count followed by exactly count 32-byte inventory hashes."""

    hashes: tuple[bytes, ...] = ()

    max_entries: ClassVar[int] = MAX_INV_ENTRIES

    def __post_init__(self) -> None:
        hashes = tuple(self.hashes)
        for h in hashes:
            if not isinstance(h, (bytes, bytearray, memoryview)):
                raise MalformedMessage(f"inventory hash must be bytes, not {type(h).__name__}")
        hashes = tuple(bytes(h) for h in hashes)
        for h in hashes:
            if len(h) != INV_HASH_SIZE:
                raise MalformedMessage(f"inventory hash must be {INV_HASH_SIZE} bytes, got {len(h)}")
        object.__setattr__(self, "hashes", hashes)

    def encode_payload(self) -> bytes:
        return encode_var_int(len(self.hashes)) + b"".join(self.hashes)

    @classmethod
    def decode(cls, payload: bytes) -> "_HashList":
        r = Reader(payload)
        count = r.var_int(f"{cls.command} count")
        if count > cls.max_entries:
            raise TooManyEntries(f"{cls.command} with {count} entries (limit {cls.max_entries})", 0)
        start = r.pos
        if count * INV_HASH_SIZE != r.remaining:
            raise MalformedMessage(
                f"{cls.command} count {count} needs {count * INV_HASH_SIZE} bytes of hashes, {r.remaining} present",
                start,
            )
        data = bytes(payload)
        return cls(tuple(data[start + i * INV_HASH_SIZE : start + (i + 1) * INV_HASH_SIZE] for i in range(count)))

    @classmethod
    def batches(cls, hashes: Iterable[bytes], size: int = MAX_INV_ENTRIES_SENT) -> Iterator["_HashList"]:
        """Split ``hashes`` into messages of at most ``size`` entries (none for an empty input)."""
        if size < 1:
            raise ValueError("batch size must be positive")
        batch: list[bytes] = []
        for h in hashes:
            batch.append(h)
            if len(batch) == size:
                yield cls(tuple(batch))
                batch = []
        if batch:
            yield cls(tuple(batch))

    def to_dict(self) -> dict[str, Any]:
        return {"count": len(self.hashes), "hashes": [h.hex() for h in self.hashes]}


@dataclass(frozen=True)
class Inv(_HashList):
    """``inv`` (spec 5.3): objects the sender has."""

    command: ClassVar[str] = "inv"


@dataclass(frozen=True)
class GetData(_HashList):
    """``getdata`` (spec 5.4): objects the sender wants. The reference applies no count limit
    on receipt (only the message size limit), so neither do we beyond what fits one message."""

    command: ClassVar[str] = "getdata"

    max_entries: ClassVar[int] = MAX_MESSAGE_PAYLOAD // INV_HASH_SIZE


@dataclass(frozen=True)
class Dinv(_HashList):
    """``dinv`` (spec 5.10): Dandelion stem announcement, same layout as inv."""

    command: ClassVar[str] = "dinv"


# --- object ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectMessage(Message):
    """``object`` (spec 5.6): the raw object bytes; parsing is bmnode.protocol.objects' job."""

    command: ClassVar[str] = "object"

    data: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", _as_bytes(self.data, "object"))

    @property
    def inventory_hash(self) -> bytes:
        """dSHA512(object)[0:32], the object's inventory vector."""
        return inventory_hash(self.data)

    def encode_payload(self) -> bytes:
        return self.data

    @classmethod
    def decode(cls, payload: bytes) -> "ObjectMessage":
        return cls(bytes(payload))

    def to_dict(self) -> dict[str, Any]:
        """Length, inventory hash, the object header's fields (when it parses) and the raw hex."""
        out: dict[str, Any] = {"length": len(self.data), "inventory_hash": self.inventory_hash.hex()}
        try:
            header = parse_object_header(self.data)
        except MalformedMessage as exc:
            out["header_error"] = str(exc)
        else:
            out.update(header.to_dict())
            out["object_payload_length"] = len(self.data) - header.header_length
        out["object"] = self.data.hex()
        return out


# --- error -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Error(Message):
    """``error`` (spec 5.8): fatal, ban time, related inventory vector, text. Trailing bytes ignored."""

    command: ClassVar[str] = "error"

    fatal: int = 0
    ban_time: int = 0
    inventory_vector: bytes = b""
    error_text: bytes = b""

    def __post_init__(self) -> None:
        _check_var_int(self.fatal, "fatal")
        _check_var_int(self.ban_time, "ban_time")
        object.__setattr__(self, "inventory_vector", _as_bytes(self.inventory_vector, "inventory_vector"))
        object.__setattr__(self, "error_text", _as_bytes(self.error_text, "error_text"))

    @property
    def text(self) -> str:
        """The error text for display (UTF-8, odd bytes escaped)."""
        return _text(self.error_text)

    def encode_payload(self) -> bytes:
        return (
            encode_var_int(self.fatal)
            + encode_var_int(self.ban_time)
            + encode_var_str(self.inventory_vector)
            + encode_var_str(self.error_text)
        )

    @classmethod
    def decode(cls, payload: bytes) -> "Error":
        r = Reader(payload)
        return cls(
            fatal=r.var_int("fatal"),
            ban_time=r.var_int("ban time"),
            inventory_vector=r.var_str("inventory vector"),
            error_text=r.var_str("error text"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "fatal": self.fatal,
            "ban_time": self.ban_time,
            "inventory_vector": self.inventory_vector.hex(),
            "error_text": self.text,
        }


# --- unknown -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Unknown(Message):
    """Any command we do not understand, kept opaque (unknown commands must be ignored)."""

    command: str = ""  # type: ignore[misc]  # an instance field here, a ClassVar elsewhere
    payload: bytes = b""

    def __post_init__(self) -> None:
        if encode_command(self.command).rstrip(b"\x00") != self.command.encode("latin-1"):
            raise MalformedMessage(f"command {self.command!r} ends with NUL bytes")
        object.__setattr__(self, "payload", _as_bytes(self.payload, "payload"))

    def encode_payload(self) -> bytes:
        return self.payload

    @classmethod
    def decode(cls, payload: bytes) -> "Unknown":  # pragma: no cover - needs the command
        raise MalformedMessage("Unknown messages are built by decode_payload(command, payload)")

    def to_dict(self) -> dict[str, Any]:
        return {"length": len(self.payload), "payload": self.payload.hex()}


COMMANDS: dict[str, type[Message]] = {
    cls.command: cls
    for cls in (Version, Verack, Addr, Inv, GetData, Dinv, ObjectMessage, Ping, Pong, Error, Portcheck)
}


def decode_payload(command: str, payload: bytes) -> Message:
    """Message object for a frame's command and payload; unknown commands give :class:`Unknown`."""
    cls = COMMANDS.get(command)
    if cls is None:
        return Unknown(command, bytes(payload))
    return cls.decode(bytes(payload))


def decode_frame_message(f: Frame) -> Message:
    """:func:`decode_payload` for a :class:`Frame`."""
    return decode_payload(f.command, f.payload)


def encode_payload(msg: Message) -> bytes:
    """The payload bytes of ``msg``."""
    return msg.encode_payload()


def encode_message(msg: Message) -> bytes:
    """``msg`` framed: header + payload."""
    return msg.encode()


def decode_message(packet: bytes) -> Message:
    """One complete framed packet to a message (framing errors and payload errors both raise)."""
    return decode_frame_message(decode_frame(packet))


def describe(msg: Message) -> dict[str, Any]:
    """JSON-ready description: the command and every field of the message."""
    return {"command": msg.command, "fields": msg.to_dict()}


def describe_packets(data: bytes) -> list[dict[str, Any]]:
    """Describe every framed message in ``data`` (header + fields); a payload that does not
    decode is reported with its error instead of raising. Framing errors still raise."""
    out: list[dict[str, Any]] = []
    pos = 0
    for f in split_frames(data):
        header = parse_header(data[pos : pos + HEADER_SIZE])
        pos += HEADER_SIZE + header.length
        entry: dict[str, Any] = {"command": f.command, "header": header.to_dict()}
        try:
            entry["fields"] = decode_payload(f.command, f.payload).to_dict()
        except MalformedMessage as exc:
            entry["error"] = {"type": type(exc).__name__, "message": str(exc)}
            entry["payload"] = f.payload.hex()
        out.append(entry)
    return out


__all__ = [
    "Addr",
    "COMMANDS",
    "Dinv",
    "Error",
    "GetData",
    "Inv",
    "Message",
    "ObjectMessage",
    "Ping",
    "Pong",
    "Portcheck",
    "TooManyEntries",
    "Unknown",
    "Verack",
    "Version",
    "build_version",
    "decode_frame_message",
    "decode_message",
    "decode_payload",
    "describe",
    "describe_packets",
    "encode_message",
    "encode_payload",
]
