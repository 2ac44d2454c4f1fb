"""Primitive wire encodings (spec section 2): fixed integers, var_int, var_str, var_int_list.

``Reader`` walks a buffer and raises :class:`MalformedMessage` (with the offset) on any
truncation or non-minimal var_int, as the reference's strict decoder does.
"""

from __future__ import annotations

import struct

from bmnode.errors import MalformedMessage

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")

MAX_UINT64 = (1 << 64) - 1


def encode_var_int(value: int) -> bytes:
    """Shortest var_int encoding of ``value`` (0 <= value < 2**64)."""
    if value < 0 or value > MAX_UINT64:
        raise MalformedMessage(f"var_int out of range: {value}")
    if value < 0xFD:
        return bytes((value,))
    if value <= 0xFFFF:
        return b"\xfd" + _U16.pack(value)
    if value <= 0xFFFFFFFF:
        return b"\xfe" + _U32.pack(value)
    return b"\xff" + _U64.pack(value)


def encode_var_str(data: bytes | str) -> bytes:
    """var_int(length) || data; ``str`` is encoded as UTF-8."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return encode_var_int(len(data)) + data


def encode_var_int_list(values: list[int] | tuple[int, ...]) -> bytes:
    """var_int(count) followed by each value as a var_int."""
    return encode_var_int(len(values)) + b"".join(encode_var_int(v) for v in values)


def u8(value: int) -> bytes:
    return struct.pack(">B", value)


def u16(value: int) -> bytes:
    return _U16.pack(value)


def u32(value: int) -> bytes:
    return _U32.pack(value)


def u64(value: int) -> bytes:
    return _U64.pack(value)


def i64(value: int) -> bytes:
    return _I64.pack(value)


class Reader:
    """Sequential decoder over ``data``; ``base`` is added to offsets in error messages."""

    __slots__ = ("data", "pos", "base")

    def __init__(self, data: bytes, pos: int = 0, base: int = 0) -> None:
        self.data = bytes(data) if not isinstance(data, bytes) else data
        self.pos = pos
        self.base = base

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def _need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.data):
            raise MalformedMessage(
                f"truncated {what}: need {n} bytes, {max(0, len(self.data) - self.pos)} left",
                self.base + self.pos,
            )

    def bytes(self, n: int, what: str = "field") -> bytes:
        self._need(n, what)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out

    def u8(self, what: str = "uint8") -> int:
        self._need(1, what)
        v = self.data[self.pos]
        self.pos += 1
        return v

    def u16(self, what: str = "uint16") -> int:
        self._need(2, what)
        (v,) = _U16.unpack_from(self.data, self.pos)
        self.pos += 2
        return v

    def u32(self, what: str = "uint32") -> int:
        self._need(4, what)
        (v,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return v

    def u64(self, what: str = "uint64") -> int:
        self._need(8, what)
        (v,) = _U64.unpack_from(self.data, self.pos)
        self.pos += 8
        return v

    def i64(self, what: str = "int64") -> int:
        self._need(8, what)
        (v,) = _I64.unpack_from(self.data, self.pos)
        self.pos += 8
        return v

    def var_int(self, what: str = "var_int") -> int:
        """Strict var_int: truncation and non-minimal forms raise MalformedMessage."""
        start = self.pos
        self._need(1, what)
        first = self.data[self.pos]
        if first < 0xFD:
            self.pos += 1
            return first
        self.pos += 1
        if first == 0xFD:
            self._need(2, what)
            (v,) = _U16.unpack_from(self.data, self.pos)
            self.pos += 2
            minimum = 0xFD
        elif first == 0xFE:
            self._need(4, what)
            (v,) = _U32.unpack_from(self.data, self.pos)
            self.pos += 4
            minimum = 0x10000
        else:
            self._need(8, what)
            (v,) = _U64.unpack_from(self.data, self.pos)
            self.pos += 8
            minimum = 0x100000000
        if v < minimum:
            self.pos = start
            raise MalformedMessage(f"non-minimal {what} encoding of {v}", self.base + start)
        return v

    def var_str(self, what: str = "var_str", limit: int | None = None) -> bytes:
        """var_int length then that many bytes; ``limit`` caps the declared length."""
        start = self.pos
        n = self.var_int(f"{what} length")
        if limit is not None and n > limit:
            raise MalformedMessage(f"{what} length {n} exceeds limit {limit}", self.base + start)
        return self.bytes(n, what)

    def var_int_list(self, what: str = "var_int_list", limit: int | None = None) -> list[int]:
        start = self.pos
        n = self.var_int(f"{what} count")
        if limit is not None and n > limit:
            raise MalformedMessage(f"{what} count {n} exceeds limit {limit}", self.base + start)
        # Each item takes at least one byte: refuse impossible counts before looping.
        if n > self.remaining:
            raise MalformedMessage(
                f"{what} count {n} larger than the {self.remaining} bytes left", self.base + start
            )
        return [self.var_int(f"{what} item") for _ in range(n)]


def decode_var_int(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Decode one strict var_int at ``offset``; returns (value, bytes consumed)."""
    r = Reader(data, offset)
    v = r.var_int()
    return v, r.pos - offset
