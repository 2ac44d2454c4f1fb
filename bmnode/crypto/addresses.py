"""Bitmessage address encoding and decoding (spec 9.3, 9.4), with the reference's status strings.

:func:`decode_address` never raises: like the reference's ``decodeAddress`` it returns a
status (``success``, ``invalidcharacters``, ``checksumfailed``, ``varintmalformed``,
``versiontoohigh``, ``encodingproblem``, ``ripetooshort``, ``ripetoolong``) with
``(version, stream, ripe)`` filled in on success and ``(0, 0, b"")`` otherwise.
:func:`parse_address` is the strict form that raises :class:`InvalidAddress`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from bmnode.crypto import base58
from bmnode.errors import InvalidAddress, MalformedMessage
from bmnode.protocol.encoding import MAX_UINT64, Reader, encode_var_int
from bmnode.protocol.hashing import double_sha512

PREFIX = "BM-"
SUCCESS = "success"
#: Only ASCII whitespace is stripped (the reference strips a byte string).
_WHITESPACE = " \t\n\r\x0b\x0c"


@dataclass(frozen=True, slots=True)
class Address:
    """A decoded address: version, stream and the 20-byte ripe (leading zeros restored)."""

    version: int
    stream: int
    ripe: bytes

    def encode(self) -> str:
        """The BM- string of this address."""
        return encode_address(self.version, self.stream, self.ripe)

    def __str__(self) -> str:
        return self.encode()


class DecodedAddress(NamedTuple):
    """Result of :func:`decode_address`, in the reference's (status, version, stream, ripe) order."""

    status: str
    version: int
    stream: int
    ripe: bytes

    @property
    def ok(self) -> bool:
        """True when the status is ``success``."""
        return self.status == SUCCESS

    def address(self) -> Address:
        """The decoded Address; InvalidAddress if decoding failed."""
        if not self.ok:
            raise InvalidAddress(f"address does not decode: {self.status}", self.status)
        return Address(self.version, self.stream, self.ripe)


def _fail(status: str) -> DecodedAddress:
    return DecodedAddress(status, 0, 0, b"")


def address_checksum(data: bytes) -> bytes:
    """dSHA512(data)[0:4]."""
    return double_sha512(data)[:4]


def encode_address_data(data: bytes) -> str:
    """``BM-`` + base58(data || checksum): the encoding step shared by every address."""
    return PREFIX + base58.encode_bytes(data + address_checksum(data))


def strip_ripe(version: int, ripe: bytes) -> bytes:
    """The ripe as stored in an address: v2/v3 drop at most two leading zeros, v4 drops all."""
    if version == 4:
        return ripe.lstrip(b"\x00")
    if ripe[:2] == b"\x00\x00":
        return ripe[2:]
    if ripe[:1] == b"\x00":
        return ripe[1:]
    return ripe


def encode_address(version: int, stream: int, ripe: bytes) -> str:
    """Encode a version 2, 3 or 4 address for ``stream`` from a 20-byte ripe."""
    if version not in (2, 3, 4):
        raise InvalidAddress(f"cannot encode address version {version} (2, 3 or 4 only)", "versiontoohigh")
    if not 1 <= stream <= MAX_UINT64:
        raise InvalidAddress(f"stream number {stream} out of range", "otherproblem")
    if not isinstance(ripe, (bytes, bytearray)) or len(ripe) != 20:
        size = len(ripe) if isinstance(ripe, (bytes, bytearray)) else 0
        status = "ripetooshort" if size < 20 else "ripetoolong"
        raise InvalidAddress(f"ripe must be 20 bytes, got {size} ({type(ripe).__name__})", status)
    data = encode_var_int(version) + encode_var_int(stream) + strip_ripe(version, bytes(ripe))
    return encode_address_data(data)


def _lenient_var_int(data: bytes) -> tuple[int, int]:
    """The reference's decodeVarint: strict, except that empty input reads as (0, 0 bytes)."""
    if not data:
        return 0, 0
    r = Reader(data)
    return r.var_int(), r.pos


def decode_address(address: str) -> DecodedAddress:
    """Decode like the reference's ``decodeAddress``; never raises, the status says what failed."""
    if isinstance(address, (bytes, bytearray)):
        try:
            address = bytes(address).decode("ascii")
        except UnicodeDecodeError:
            return _fail("invalidcharacters")
    if not isinstance(address, str):
        return _fail("invalidcharacters")
    s = address.strip(_WHITESPACE)
    if s.startswith(PREFIX):
        s = s[len(PREFIX) :]
    try:
        n = base58.decode(s)
    except MalformedMessage:
        return _fail("invalidcharacters")
    if n == 0:
        return _fail("invalidcharacters")
    data = base58.int_to_bytes(n)
    if address_checksum(data[:-4]) != data[-4:]:
        return _fail("checksumfailed")
    # As in the reference, the var_ints are read from data that still includes the checksum.
    try:
        version, v_len = _lenient_var_int(data[:9])
    except MalformedMessage:
        return _fail("varintmalformed")
    if version == 0 or version > 4:
        return _fail("versiontoohigh")
    try:
        stream, s_len = _lenient_var_int(data[v_len:])
    except MalformedMessage:
        return _fail("varintmalformed")
    if version == 1:
        return DecodedAddress(SUCCESS, version, stream, data[-24:-4])
    embedded = data[v_len + s_len : -4]
    if version in (2, 3):
        if len(embedded) < 18:
            return _fail("ripetooshort")
        if len(embedded) > 20:
            return _fail("ripetoolong")
        return DecodedAddress(SUCCESS, version, stream, embedded.rjust(20, b"\x00"))
    if embedded[:1] == b"\x00":
        return _fail("encodingproblem")
    if len(embedded) > 20:
        return _fail("ripetoolong")
    if len(embedded) < 4:
        return _fail("ripetooshort")
    return DecodedAddress(SUCCESS, version, stream, embedded.rjust(20, b"\x00"))


def parse_address(address: str) -> Address:
    """Strict decode: the Address, or InvalidAddress carrying the reference's status string."""
    result = decode_address(address)
    if not result.ok:
        raise InvalidAddress(f"invalid Bitmessage address {str(address)[:80]!r}: {result.status}", result.status)
    return Address(result.version, result.stream, result.ripe)
