"""Host addresses and net_addr (spec sections 2.5, 2.6, 4.9).

A host travels as 16 bytes: IPv4-mapped IPv6, plain IPv6, or a Tor v2 onion behind the
``fd87d87eeb43`` prefix. This module converts between that form and text, classifies hosts as
public/private exactly as the reference does, computes the outbound network group, and
encodes/decodes the 38-byte and 26-byte net_addr structures.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from bmnode.errors import MalformedMessage
from bmnode.protocol.constants import (
    DEFAULT_PORT,
    DEFAULT_STREAM,
    HOST_SIZE,
    NET_ADDR_SHORT_SIZE,
    NET_ADDR_SIZE,
    NODE_NETWORK,
    SERVICE_NAMES,
)
from bmnode.protocol.encoding import Reader, u16, u32, u64

IPV4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"
ONION_PREFIX = bytes.fromhex("fd87d87eeb43")
ONION_V2_CHARS = 16
ONION_V3_CHARS = 56

_BASE32_NAME = re.compile(r"^[a-z2-7]+$")


def _onion_label(host: str) -> str | None:
    """The base32 label of ``name.onion`` (lower-case), or None when ``host`` is no onion name."""
    if not host.lower().endswith(".onion"):
        return None
    return host[: -len(".onion")].lower()


def encode_onion(host: str) -> bytes:
    """Full onion encoding: prefix + base32-decoded name (16 bytes for v2, 41 for v3).

    The v3 form is what onionpeer objects carry (spec 12.5); only v2 fits a 16-byte host field.
    """
    label = _onion_label(host)
    if label is None or len(label) not in (ONION_V2_CHARS, ONION_V3_CHARS) or not _BASE32_NAME.match(label):
        raise MalformedMessage(f"not a Tor v2/v3 onion name: {host!r}")
    try:
        raw = base64.b32decode(label.upper())
    except (binascii.Error, ValueError) as exc:  # pragma: no cover - regex already filters
        raise MalformedMessage(f"bad base32 in onion name {host!r}: {exc}") from None
    return ONION_PREFIX + raw


def decode_onion(data: bytes) -> str:
    """Inverse of :func:`encode_onion` for any length after the prefix (multiple of 5 bytes)."""
    if not data.startswith(ONION_PREFIX):
        raise MalformedMessage("onion host does not start with fd87d87eeb43", 0)
    rest = data[len(ONION_PREFIX) :]
    if not rest or len(rest) % 5:
        raise MalformedMessage(f"onion host body of {len(rest)} bytes is not a whole base32 block", len(ONION_PREFIX))
    return base64.b32encode(rest).decode("ascii").lower() + ".onion"


def onionpeer_version(host: str) -> int:
    """Object version of an onionpeer about ``host`` (12.5): 2 for a v2 (16-character) onion
    name, 3 for a v3 one; anything else raises MalformedMessage."""
    encoded = encode_onion(host)
    return 2 if len(encoded) == len(ONION_PREFIX) + ONION_V2_CHARS * 5 // 8 else 3


def decode_peer_host(data: bytes) -> str:
    """Text form of the host of an onionpeer payload (12.5), as the reference reads it: a v2 or
    v3 onion (prefix + 10 or 35 bytes) or a plain 16-byte IPv4/IPv6 field. Other lengths raise
    MalformedMessage; whether the host is public is for the caller to check."""
    data = bytes(data)
    if data.startswith(ONION_PREFIX):
        if len(data) - len(ONION_PREFIX) not in (ONION_V2_CHARS * 5 // 8, ONION_V3_CHARS * 5 // 8):
            raise MalformedMessage(f"onion host of {len(data)} bytes is neither a v2 (16) nor a v3 (41) encoding")
        return decode_onion(data)
    return decode_host(data)


def encode_host(host: str | bytes, *, truncate: bool = False) -> bytes:
    """16-byte host field for an IPv4/IPv6 literal or a v2 onion name (raw 16 bytes pass through).

    A v3 onion does not fit; with ``truncate=True`` its encoding is cut to 16 bytes, as the
    reference does in ``version``. Anything else raises :class:`MalformedMessage`.
    """
    if isinstance(host, (bytes, bytearray, memoryview)):
        raw = bytes(host)
        if len(raw) != HOST_SIZE:
            raise MalformedMessage(f"host field must be {HOST_SIZE} bytes, got {len(raw)}")
        return raw
    if not isinstance(host, str):
        raise MalformedMessage(f"host must be str or bytes, not {type(host).__name__}")
    if _onion_label(host) is not None:
        encoded = encode_onion(host)
        if len(encoded) > HOST_SIZE:
            if not truncate:
                raise MalformedMessage(f"Tor v3 onion {host!r} does not fit in a 16-byte host field")
            encoded = encoded[:HOST_SIZE]
        return encoded
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise MalformedMessage(f"not an IP address or onion name: {host!r}") from None
    if isinstance(ip, ipaddress.IPv4Address):
        return IPV4_MAPPED_PREFIX + ip.packed
    return ip.packed


def decode_host(data: bytes) -> str:
    """Text form of a 16-byte host field: dotted IPv4, compressed IPv6, or ``name.onion``."""
    if len(data) != HOST_SIZE:
        raise MalformedMessage(f"host field must be {HOST_SIZE} bytes, got {len(data)}")
    data = bytes(data)
    if data[:12] == IPV4_MAPPED_PREFIX:
        return str(ipaddress.IPv4Address(data[12:]))
    if data[:6] == ONION_PREFIX:
        return decode_onion(data)
    return ipaddress.IPv6Address(data).compressed


def host_kind(host: str | bytes) -> str:
    """``"ipv4"``, ``"ipv6"`` or ``"onion"`` for a host (text or 16-byte field)."""
    raw = encode_host(host, truncate=True)
    if raw[:12] == IPV4_MAPPED_PREFIX:
        return "ipv4"
    if raw[:6] == ONION_PREFIX:
        return "onion"
    return "ipv6"


def _is_private_ipv4(b: bytes) -> bool:
    # 127/8, 10/8, 192.168/16, 172.16/12 -- nothing else (spec 2.5).
    return b[0] == 127 or b[0] == 10 or (b[0] == 192 and b[1] == 168) or (b[0] == 172 and 16 <= b[1] <= 31)


def _is_private_ipv6(b: bytes) -> bool:
    # ::1, fe80::/10, fc00::/7 (spec 2.5).
    return b == b"\x00" * 15 + b"\x01" or (b[0] == 0xFE and (b[1] & 0xC0) == 0x80) or (b[0] & 0xFE) == 0xFC


def is_public(host: str | bytes) -> bool:
    """True unless the host is one of the private ranges of spec 2.5 (onions are public)."""
    raw = encode_host(host, truncate=True)
    if raw[:12] == IPV4_MAPPED_PREFIX:
        return not _is_private_ipv4(raw[12:])
    if raw[:6] == ONION_PREFIX:
        return True
    return not _is_private_ipv6(raw)


def network_group(host: str | bytes) -> str:
    """Outbound diversity key of spec 4.9: IPv4 /16, IPv6 first 12 bytes, onion name, or
    ``"IPv4"``/``"IPv6"`` for private addresses. Two peers share a group iff the keys are equal."""
    raw = encode_host(host, truncate=True)
    if raw[:12] == IPV4_MAPPED_PREFIX:
        if _is_private_ipv4(raw[12:]):
            return "IPv4"
        return f"ipv4:{raw[12]}.{raw[13]}"
    if raw[:6] == ONION_PREFIX:
        return decode_host(raw) if isinstance(host, (bytes, bytearray, memoryview)) else host.lower()
    if _is_private_ipv6(raw):
        return "IPv6"
    return "ipv6:" + raw[:12].hex()


def service_names(services: int) -> list[str]:
    """Names of the set service bits, lowest first; unknown bits appear as ``bit<n>``."""
    names = []
    for bit in range(64):
        mask = 1 << bit
        if services & mask:
            names.append(SERVICE_NAMES.get(mask, f"bit{bit}"))
    return names


def _check_uint(value: int, bits: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise MalformedMessage(f"{what} out of range for uint{bits}: {value!r}")
    return value


@dataclass(frozen=True)
class NetAddr:
    """A peer address. The 38-byte form (in ``addr``) carries time and stream; the 26-byte form
    (in ``version``) has only services, host and port, and decodes with time=0, stream=0."""

    time: int = 0
    stream: int = DEFAULT_STREAM
    services: int = NODE_NETWORK
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT

    def __post_init__(self) -> None:
        # Normalise the host to its canonical text so equal addresses compare equal.
        object.__setattr__(self, "host", decode_host(encode_host(self.host)))
        _check_uint(self.port, 16, "port")
        _check_uint(self.services, 64, "services")
        _check_uint(self.time, 64, "time")
        _check_uint(self.stream, 32, "stream")

    @property
    def host_bytes(self) -> bytes:
        """The 16-byte wire form of ``host``."""
        return encode_host(self.host)

    def encode(self) -> bytes:
        """38-byte form: time u64, stream u32, services u64, host 16, port u16."""
        return u64(self.time) + u32(self.stream) + u64(self.services) + self.host_bytes + u16(self.port)

    def encode_short(self) -> bytes:
        """26-byte form used in version: services u64, host 16, port u16."""
        return u64(self.services) + self.host_bytes + u16(self.port)

    @classmethod
    def read(cls, r: Reader) -> "NetAddr":
        """Read a 38-byte net_addr from ``r`` (truncation raises MalformedMessage)."""
        sub = Reader(r.bytes(NET_ADDR_SIZE, "net_addr (38 bytes)"), base=r.base + r.pos - NET_ADDR_SIZE)
        time = sub.u64("net_addr time")
        stream = sub.u32("net_addr stream")
        services = sub.u64("net_addr services")
        host = decode_host(sub.bytes(HOST_SIZE, "net_addr host"))
        port = sub.u16("net_addr port")
        return cls(time=time, stream=stream, services=services, host=host, port=port)

    @classmethod
    def read_short(cls, r: Reader) -> "NetAddr":
        """Read a 26-byte net_addr (no time/stream) from ``r``."""
        sub = Reader(r.bytes(NET_ADDR_SHORT_SIZE, "net_addr (26 bytes)"), base=r.base + r.pos - NET_ADDR_SHORT_SIZE)
        services = sub.u64("net_addr services")
        host = decode_host(sub.bytes(HOST_SIZE, "net_addr host"))
        port = sub.u16("net_addr port")
        return cls(time=0, stream=0, services=services, host=host, port=port)

    @classmethod
    def decode(cls, data: bytes) -> "NetAddr":
        """Exactly one 38-byte net_addr."""
        if len(data) != NET_ADDR_SIZE:
            raise MalformedMessage(f"net_addr must be {NET_ADDR_SIZE} bytes, got {len(data)}")
        return cls.read(Reader(data))

    @classmethod
    def decode_short(cls, data: bytes) -> "NetAddr":
        """Exactly one 26-byte net_addr."""
        if len(data) != NET_ADDR_SHORT_SIZE:
            raise MalformedMessage(f"short net_addr must be {NET_ADDR_SHORT_SIZE} bytes, got {len(data)}")
        return cls.read_short(Reader(data))

    def to_dict(self, short: bool = False) -> dict[str, Any]:
        """JSON-ready fields; ``short`` omits time and stream (the version form)."""
        out: dict[str, Any] = {}
        if not short:
            out["time"] = self.time
            out["stream"] = self.stream
        out.update(
            services=self.services,
            service_names=service_names(self.services),
            host=self.host,
            host_hex=self.host_bytes.hex(),
            port=self.port,
            public=is_public(self.host),
        )
        return out
