"""Objects (spec 7.1, 10): header, typed payloads, decrypted plaintexts, signed data, builders.

Pure layout code, no cryptography: parsers turn bytes into frozen dataclasses, every dataclass
re-encodes to the exact bytes it came from (var_ints are strict, so the shortest form is the
only form; bytes after a structure's last field are kept in ``trailing``), and the
``signed data`` functions give exactly what 10.3.2, 10.3.3, 10.4 and 10.5 define. Encrypting,
signing and verifying happen in ``bmnode.crypto`` on top of these.

Unknown object types and versions parse to :class:`OpaquePayload`: they are relayed, never an
error. A known type/version whose payload does not fit its layout raises
:class:`MalformedMessage` (offsets relative to the object or to the plaintext being parsed).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from typing import Any, Union

from bmnode.errors import InvalidObject, MalformedMessage
from bmnode.protocol.constants import (
    OBJECT_BROADCAST,
    OBJECT_GETPUBKEY,
    OBJECT_MSG,
    OBJECT_ONIONPEER,
    OBJECT_PUBKEY,
    OBJECT_TYPE_NAMES,
)
from bmnode.protocol.encoding import Reader, encode_var_int, u32, u64
from bmnode.protocol.hashing import double_sha512, inventory_hash, ripe_of
from bmnode.protocol.hosts import decode_peer_host, encode_onion

__all__ = [
    "BEHAVIOR_FLAGS",
    "BroadcastPayload",
    "BroadcastPlaintext",
    "EncryptedPubkeyPayload",
    "GetPubkeyPayload",
    "MsgPayload",
    "MsgPlaintext",
    "ObjectHeader",
    "OnionPeerPayload",
    "OpaquePayload",
    "ParsedObject",
    "Payload",
    "PubkeyData",
    "ackdata_of",
    "attach_nonce",
    "broadcast_signed_data",
    "describe_object",
    "encode_ackdata",
    "encode_object_body",
    "encode_object_header",
    "msg_signed_data",
    "object_tag",
    "parse_broadcast_plaintext",
    "parse_header",
    "parse_msg_plaintext",
    "parse_object",
    "parse_pubkey_data",
    "parse_pubkey_plaintext",
    "pubkey_signed_data",
    "signature_hash",
]

KEY_SIZE = 64  # public keys travel without the 0x04 prefix
RIPE_SIZE = 20
TAG_SIZE = 32
ACK_RANDOM_SIZE = 32
_MAX_U32 = 0xFFFFFFFF
_MAX_U64 = (1 << 64) - 1
_NONCE = struct.Struct(">Q")

#: Behaviour bitfield (10.1): mask -> name.
BEHAVIOR_FLAGS: dict[int, str] = {
    0x00000001: "does_ack",
    0x00000002: "include_destination",
    0x00000004: "chat",
    0x00000008: "forward_secrecy",
    0x00000010: "onion_router",
}
BEHAVIOR_DOES_ACK = 0x00000001

#: (object type, version) pairs whose first 32 payload bytes are a tag (7.1).
TAGGED = frozenset({(OBJECT_GETPUBKEY, 4), (OBJECT_PUBKEY, 4), (OBJECT_BROADCAST, 5)})


# --------------------------------------------------------------------------------------------
# small helpers


def _hex(b: bytes | None) -> str | None:
    return None if b is None else b.hex()


def _key64(key: bytes, what: str) -> bytes:
    """A public key as carried on the wire: 64 bytes (a 65-byte 0x04-prefixed key is accepted)."""
    key = bytes(key)
    if len(key) == KEY_SIZE + 1 and key[0] == 4:
        return key[1:]
    if len(key) != KEY_SIZE:
        raise InvalidObject(f"{what} must be 64 bytes (or 65 with the 04 prefix), got {len(key)}")
    return key


def _fixed(value: bytes, size: int, what: str) -> bytes:
    value = bytes(value)
    if len(value) != size:
        raise InvalidObject(f"{what} must be {size} bytes, got {len(value)}")
    return value


def _uint(value: int, maximum: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise InvalidObject(f"{what} out of range: {value!r}")
    return value


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)  # normalising fields of a frozen dataclass


def _behavior_names(bitfield: int) -> list[str]:
    return [name for mask, name in BEHAVIOR_FLAGS.items() if bitfield & mask]


def _trailing_dict(trailing: bytes) -> dict[str, str]:
    return {"trailing": trailing.hex()} if trailing else {}


# --------------------------------------------------------------------------------------------
# header


@dataclass(frozen=True)
class ObjectHeader:
    """nonce, expiresTime, objectType, version, stream, and ``header_length`` (= hdrEnd)."""

    nonce: int
    expires_time: int
    object_type: int
    version: int
    stream: int
    header_length: int

    def encode_without_nonce(self) -> bytes:
        return encode_object_header(self.expires_time, self.object_type, self.version, self.stream)

    def encode(self) -> bytes:
        return _NONCE.pack(self.nonce) + self.encode_without_nonce()

    @property
    def type_name(self) -> str:
        return OBJECT_TYPE_NAMES.get(self.object_type, "unknown")

    def to_dict(self) -> dict[str, Any]:
        return {
            "nonce": self.nonce,
            "expires_time": self.expires_time,
            "object_type": self.object_type,
            "object_type_name": self.type_name,
            "version": self.version,
            "stream": self.stream,
            "header_length": self.header_length,
        }


def encode_object_header(expires_time: int, object_type: int, version: int, stream: int) -> bytes:
    """expiresTime || objectType || var_int(version) || var_int(stream): the header minus the nonce."""
    _uint(expires_time, _MAX_U64, "expiresTime")
    _uint(object_type, _MAX_U32, "object type")
    _uint(version, _MAX_U64, "object version")
    _uint(stream, _MAX_U64, "stream")
    return u64(expires_time) + u32(object_type) + encode_var_int(version) + encode_var_int(stream)


def encode_object_body(expires_time: int, object_type: int, version: int, stream: int, payload: bytes) -> bytes:
    """The whole object without its nonce: what the PoW is computed over (8.1)."""
    return encode_object_header(expires_time, object_type, version, stream) + bytes(payload)


def attach_nonce(nonce: int, body: bytes) -> bytes:
    """be64(nonce) || body: the complete object."""
    return _NONCE.pack(_uint(nonce, _MAX_U64, "nonce")) + bytes(body)


def _read_header(r: Reader) -> ObjectHeader:
    nonce = r.u64("nonce")
    expires = r.u64("expiresTime")
    otype = r.u32("objectType")
    version = r.var_int("object version")
    stream = r.var_int("stream")
    return ObjectHeader(nonce, expires, otype, version, stream, r.pos)


def parse_header(data: bytes) -> ObjectHeader:
    """The object header (7.1); truncation or a non-minimal var_int raises MalformedMessage."""
    return _read_header(Reader(data))


# --------------------------------------------------------------------------------------------
# the pubkey body: v2/v3 object payload and the v3/v4 plaintext (10.3)


def _encode_pubkey_fields(
    bitfield: int, sign: bytes, enc: bytes, ntpb: int | None, extra: int | None
) -> bytes:
    out = u32(bitfield) + sign + enc
    if ntpb is not None:
        out += encode_var_int(ntpb) + encode_var_int(extra if extra is not None else 0)
    return out


def _read_pubkey_fields(r: Reader, with_difficulty: bool) -> tuple[int, bytes, bytes, int | None, int | None]:
    bitfield = r.u32("behavior bitfield")
    sign = r.bytes(KEY_SIZE, "public signing key")
    enc = r.bytes(KEY_SIZE, "public encryption key")
    if not with_difficulty:
        return bitfield, sign, enc, None, None
    ntpb = r.var_int("nonce_trials_per_byte")
    extra = r.var_int("extra_bytes")
    return bitfield, sign, enc, ntpb, extra


def _check_difficulty(ntpb: int | None, extra: int | None) -> None:
    if (ntpb is None) != (extra is None):
        raise InvalidObject("nonce_trials_per_byte and extra_bytes go together")
    if ntpb is not None:
        _uint(ntpb, _MAX_U64, "nonce_trials_per_byte")
        _uint(extra, _MAX_U64, "extra_bytes")  # type: ignore[arg-type]


@dataclass(frozen=True)
class PubkeyData:
    """Bitfield, keys, difficulty and signature of a pubkey (v2 has neither difficulty nor signature)."""

    behavior_bitfield: int
    pub_signing_key: bytes
    pub_encryption_key: bytes
    nonce_trials_per_byte: int | None = None
    extra_bytes: int | None = None
    signature: bytes | None = None
    trailing: bytes = b""

    def __post_init__(self) -> None:
        _uint(self.behavior_bitfield, _MAX_U32, "behavior bitfield")
        _set(self, "pub_signing_key", _key64(self.pub_signing_key, "public signing key"))
        _set(self, "pub_encryption_key", _key64(self.pub_encryption_key, "public encryption key"))
        _check_difficulty(self.nonce_trials_per_byte, self.extra_bytes)
        if self.signature is not None and self.nonce_trials_per_byte is None:
            raise InvalidObject("a signed pubkey (v3/v4) must carry nonce_trials_per_byte and extra_bytes")
        if self.trailing and self.signature is None and self.nonce_trials_per_byte is not None:
            raise InvalidObject("trailing bytes after an unsigned v3/v4 pubkey body cannot be encoded")

    def unsigned_bytes(self) -> bytes:
        """The body up to the end of extra_bytes (what a signature covers, 10.3.2/10.3.3)."""
        return _encode_pubkey_fields(
            self.behavior_bitfield,
            self.pub_signing_key,
            self.pub_encryption_key,
            self.nonce_trials_per_byte,
            self.extra_bytes,
        )

    @property
    def signed_end(self) -> int:
        """Offset in the body just after extra_bytes (after the keys for v2)."""
        return len(self.unsigned_bytes())

    def encode(self) -> bytes:
        out = self.unsigned_bytes()
        if self.signature is not None:
            out += encode_var_int(len(self.signature)) + self.signature
        return out + self.trailing

    def with_signature(self, signature: bytes) -> "PubkeyData":
        return replace(self, signature=bytes(signature))

    def storage_bytes(self, address_version: int, stream: int) -> bytes:
        """The "pubkey data" the reference stores: var_int(version) || var_int(stream) || body[:signed_end]."""
        return encode_var_int(address_version) + encode_var_int(stream) + self.unsigned_bytes()

    @property
    def ripe(self) -> bytes:
        """RIPEMD160(SHA512(04||signKey || 04||encKey)) of the embedded keys (9.2)."""
        return ripe_of(b"\x04" + self.pub_signing_key, b"\x04" + self.pub_encryption_key)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "behavior_bitfield": u32(self.behavior_bitfield).hex(),
            "behavior": _behavior_names(self.behavior_bitfield),
            "pub_signing_key": self.pub_signing_key.hex(),
            "pub_encryption_key": self.pub_encryption_key.hex(),
        }
        if self.nonce_trials_per_byte is not None:
            d["nonce_trials_per_byte"] = self.nonce_trials_per_byte
            d["extra_bytes"] = self.extra_bytes
        if self.signature is not None:
            d["signature"] = self.signature.hex()
        d["signed_end"] = self.signed_end
        d.update(_trailing_dict(self.trailing))
        return d


def _read_pubkey_data(r: Reader, address_version: int) -> PubkeyData:
    signed = address_version >= 3
    bitfield, sign, enc, ntpb, extra = _read_pubkey_fields(r, signed)
    signature = r.var_str("signature") if signed else None
    return PubkeyData(bitfield, sign, enc, ntpb, extra, signature, r.rest())


def parse_pubkey_data(data: bytes, address_version: int) -> PubkeyData:
    """A pubkey body: v2 = bitfield and keys; v3 and v4 (the decrypted plaintext) add
    difficulty and signature."""
    if address_version not in (2, 3, 4):
        raise InvalidObject(f"no pubkey layout for address version {address_version}")
    return _read_pubkey_data(Reader(data), address_version)


def parse_pubkey_plaintext(plaintext: bytes) -> PubkeyData:
    """The decrypted body of a v4 pubkey (10.3.3): same layout as a v3 payload."""
    return parse_pubkey_data(plaintext, 4)


# --------------------------------------------------------------------------------------------
# object payloads


@dataclass(frozen=True)
class GetPubkeyPayload:
    """getpubkey (10.2): ``ripe`` for versions 2/3, ``tag`` for version 4."""

    ripe: bytes | None = None
    tag: bytes | None = None
    trailing: bytes = b""

    def __post_init__(self) -> None:
        if (self.ripe is None) == (self.tag is None):
            raise InvalidObject("a getpubkey carries exactly one of ripe and tag")
        if self.ripe is not None:
            _set(self, "ripe", _fixed(self.ripe, RIPE_SIZE, "ripe"))
        if self.tag is not None:
            _set(self, "tag", _fixed(self.tag, TAG_SIZE, "tag"))

    def encode(self) -> bytes:
        return (self.ripe if self.ripe is not None else self.tag) + self.trailing  # type: ignore[operator]

    def to_dict(self) -> dict[str, Any]:
        d = {"ripe": self.ripe.hex()} if self.ripe is not None else {"tag": _hex(self.tag)}
        d.update(_trailing_dict(self.trailing))
        return d


@dataclass(frozen=True)
class EncryptedPubkeyPayload:
    """v4 pubkey (10.3.3): tag || ECIES blob of a :class:`PubkeyData` plaintext."""

    tag: bytes
    encrypted: bytes

    def __post_init__(self) -> None:
        _set(self, "tag", _fixed(self.tag, TAG_SIZE, "tag"))
        _set(self, "encrypted", bytes(self.encrypted))

    def encode(self) -> bytes:
        return self.tag + self.encrypted

    def to_dict(self) -> dict[str, Any]:
        return {"tag": self.tag.hex(), "encrypted": self.encrypted.hex()}


@dataclass(frozen=True)
class MsgPayload:
    """msg (10.4): one ECIES blob."""

    encrypted: bytes

    def encode(self) -> bytes:
        return bytes(self.encrypted)

    def to_dict(self) -> dict[str, Any]:
        return {"encrypted": bytes(self.encrypted).hex()}


@dataclass(frozen=True)
class BroadcastPayload:
    """broadcast (10.5): version 4 = ECIES blob; version 5 = tag || ECIES blob."""

    tag: bytes | None
    encrypted: bytes

    def __post_init__(self) -> None:
        if self.tag is not None:
            _set(self, "tag", _fixed(self.tag, TAG_SIZE, "tag"))
        _set(self, "encrypted", bytes(self.encrypted))

    def encode(self) -> bytes:
        return (self.tag or b"") + self.encrypted

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {} if self.tag is None else {"tag": self.tag.hex()}
        d["encrypted"] = self.encrypted.hex()
        return d


@dataclass(frozen=True)
class OnionPeerPayload:
    """onionpeer (12.5): var_int(port) || encoded onion host (kept as bytes)."""

    port: int
    host: bytes

    @classmethod
    def for_peer(cls, host: str, port: int) -> "OnionPeerPayload":
        """The payload announcing ``host:port`` (a v2 or v3 onion name; port 1..65535)."""
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port <= 0xFFFF:
            raise MalformedMessage(f"onionpeer port must be 1..65535, got {port!r}")
        return cls(port, encode_onion(host))

    def peer(self) -> tuple[str, int]:
        """(host text, port) as receivers read it (12.5); MalformedMessage for a host of no
        known encoding or a port outside 1..65535."""
        if not 0 < self.port <= 0xFFFF:
            raise MalformedMessage(f"onionpeer port {self.port} is outside 1..65535")
        return decode_peer_host(self.host), self.port

    def encode(self) -> bytes:
        return encode_var_int(self.port) + bytes(self.host)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"port": self.port, "host": bytes(self.host).hex()}
        try:
            from bmnode.protocol.hosts import decode_onion

            d["onion"] = decode_onion(bytes(self.host))
        except MalformedMessage:
            pass
        return d


@dataclass(frozen=True)
class OpaquePayload:
    """A type or version this node does not interpret; relayed as is."""

    data: bytes

    def encode(self) -> bytes:
        return bytes(self.data)

    def to_dict(self) -> dict[str, Any]:
        return {"data": bytes(self.data).hex()}


Payload = Union[
    GetPubkeyPayload,
    PubkeyData,
    EncryptedPubkeyPayload,
    MsgPayload,
    BroadcastPayload,
    OnionPeerPayload,
    OpaquePayload,
]


def _read_payload(h: ObjectHeader, r: Reader) -> Payload:
    t, v = h.object_type, h.version
    if t == OBJECT_GETPUBKEY and v in (2, 3):
        return GetPubkeyPayload(ripe=r.bytes(RIPE_SIZE, "getpubkey ripe"), trailing=r.rest())
    if t == OBJECT_GETPUBKEY and v == 4:
        return GetPubkeyPayload(tag=r.bytes(TAG_SIZE, "getpubkey tag"), trailing=r.rest())
    if t == OBJECT_PUBKEY and v in (2, 3):
        return _read_pubkey_data(r, v)
    if t == OBJECT_PUBKEY and v == 4:
        return EncryptedPubkeyPayload(r.bytes(TAG_SIZE, "pubkey tag"), r.rest())
    if t == OBJECT_MSG and v == 1:
        return MsgPayload(r.rest())
    if t == OBJECT_BROADCAST and v == 4:
        return BroadcastPayload(None, r.rest())
    if t == OBJECT_BROADCAST and v == 5:
        return BroadcastPayload(r.bytes(TAG_SIZE, "broadcast tag"), r.rest())
    if t == OBJECT_ONIONPEER and v in (2, 3):
        return OnionPeerPayload(r.var_int("onionpeer port"), r.rest())
    return OpaquePayload(r.rest())


# --------------------------------------------------------------------------------------------
# the whole object


@dataclass(frozen=True)
class ParsedObject:
    """A parsed object: header, typed payload and the original bytes (nonce first)."""

    header: ObjectHeader
    payload: Payload
    data: bytes = field(repr=False)

    @property
    def length(self) -> int:
        return len(self.data)

    @property
    def body(self) -> bytes:
        """The object without its nonce (what PoW hashes)."""
        return self.data[8:]

    @property
    def object_payload(self) -> bytes:
        return self.data[self.header.header_length :]

    @property
    def inventory_hash(self) -> bytes:
        return inventory_hash(self.data)

    @property
    def tag(self) -> bytes | None:
        """The tag of v4 getpubkey, v4 pubkey and v5 broadcast objects, else None (7.1)."""
        return getattr(self.payload, "tag", None) if (self.header.object_type, self.header.version) in TAGGED else None

    def encode(self) -> bytes:
        """Header and payload re-encoded from the parsed fields (equals ``data``)."""
        return self.header.encode() + self.payload.encode()

    def signed_prefix(self) -> bytes:
        """The object part of the signed data: obj[8:hdrEnd], plus the tag where there is one."""
        end = self.header.header_length + (TAG_SIZE if self.tag is not None else 0)
        return self.data[8:end]

    def signed_data(self, plaintext: "PubkeyData | MsgPlaintext | BroadcastPlaintext | None" = None) -> bytes:
        """Exactly the bytes the sender signed (10.3.2, 10.3.3, 10.4, 10.5).

        For a v3 pubkey the body is in the object; for v4 pubkeys, msgs and broadcasts pass
        the parsed decrypted ``plaintext``.
        """
        t, v = self.header.object_type, self.header.version
        if t == OBJECT_PUBKEY and v == 3 and isinstance(self.payload, PubkeyData):
            return self.data[8 : self.header.header_length + self.payload.signed_end]
        kinds: dict[tuple[int, int], type] = {
            (OBJECT_PUBKEY, 4): PubkeyData,
            (OBJECT_MSG, 1): MsgPlaintext,
            (OBJECT_BROADCAST, 4): BroadcastPlaintext,
            (OBJECT_BROADCAST, 5): BroadcastPlaintext,
        }
        kind = kinds.get((t, v))
        if kind is None:
            raise InvalidObject(f"{self.header.type_name} version {v} objects carry no signature")
        if not isinstance(plaintext, kind):
            raise InvalidObject(f"signed data of a {self.header.type_name} v{v} needs a {kind.__name__} plaintext")
        if t == OBJECT_MSG:
            # obj[8:20] || var_int(1) || var_int(stream): with strict var_ints this is obj[8:hdrEnd].
            return self.data[8:20] + encode_var_int(1) + encode_var_int(self.header.stream) + plaintext.unsigned_bytes()
        return self.signed_prefix() + plaintext.unsigned_bytes()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "inventory_hash": self.inventory_hash.hex(),
            "length": self.length,
            "header": self.header.to_dict(),
            "payload_kind": type(self.payload).__name__,
            "payload": self.payload.to_dict(),
        }
        tag = self.tag
        if tag is not None:
            d["tag"] = tag.hex()
        return d

    describe = to_dict


def parse_object(data: bytes) -> ParsedObject:
    """Header plus typed payload; unknown types/versions become :class:`OpaquePayload`."""
    data = bytes(data)
    r = Reader(data)
    header = _read_header(r)
    return ParsedObject(header, _read_payload(header, r), data)


def describe_object(data: bytes) -> dict[str, Any]:
    """JSON-ready description for display; a payload that does not parse is reported, not raised.

    A malformed header still raises MalformedMessage (there is nothing to describe).
    """
    data = bytes(data)
    try:
        return parse_object(data).to_dict()
    except (MalformedMessage, InvalidObject) as exc:
        header = parse_header(data)
        return {
            "inventory_hash": inventory_hash(data).hex(),
            "length": len(data),
            "header": header.to_dict(),
            "payload_kind": "malformed",
            "payload": {"data": data[header.header_length :].hex()},
            "payload_error": str(exc),
        }


def object_tag(data: bytes) -> bytes | None:
    """First 32 payload bytes of a v4 getpubkey / v4 pubkey / v5 broadcast object, else None."""
    h = parse_header(data)
    if (h.object_type, h.version) not in TAGGED or len(data) < h.header_length + TAG_SIZE:
        return None
    return bytes(data[h.header_length : h.header_length + TAG_SIZE])


# --------------------------------------------------------------------------------------------
# decrypted plaintexts of msg (10.4) and broadcast (10.5)


def _check_sender(version: int, stream: int, ntpb: int | None, extra: int | None) -> None:
    _uint(version, _MAX_U64, "sender address version")
    _uint(stream, _MAX_U64, "sender stream")
    if not 1 <= version <= 4:
        raise InvalidObject(f"unknown sender address version {version}")
    _check_difficulty(ntpb, extra)
    if (version >= 3) != (ntpb is not None):
        raise InvalidObject(
            f"sender address version {version} {'needs' if version >= 3 else 'cannot carry'} difficulty fields"
        )


def _read_sender(r: Reader) -> tuple[int, int, int, bytes, bytes, int | None, int | None]:
    start = r.pos
    version = r.var_int("sender address version")
    if not 1 <= version <= 4:
        raise InvalidObject(f"unknown sender address version {version} (at offset {r.base + start})")
    stream = r.var_int("sender stream")
    return (version, stream, *_read_pubkey_fields(r, version >= 3))


class _PlaintextMixin:
    """Shared accessors of msg and broadcast plaintexts (sender part)."""

    sender_address_version: int
    sender_stream: int
    behavior_bitfield: int
    pub_signing_key: bytes
    pub_encryption_key: bytes
    nonce_trials_per_byte: int | None
    extra_bytes: int | None
    signature: bytes | None

    def pubkey_bytes(self) -> bytes:
        """plaintext[0 : end of extra_bytes]: the sender's "pubkey data" the reference stores."""
        return (
            encode_var_int(self.sender_address_version)
            + encode_var_int(self.sender_stream)
            + _encode_pubkey_fields(
                self.behavior_bitfield,
                self.pub_signing_key,
                self.pub_encryption_key,
                self.nonce_trials_per_byte,
                self.extra_bytes,
            )
        )

    @property
    def pubkey_end(self) -> int:
        return len(self.pubkey_bytes())

    def sender_pubkey(self) -> PubkeyData:
        """The sender's bitfield, keys and difficulty as a :class:`PubkeyData` (no signature)."""
        return PubkeyData(
            self.behavior_bitfield,
            self.pub_signing_key,
            self.pub_encryption_key,
            self.nonce_trials_per_byte,
            self.extra_bytes,
        )

    @property
    def sender_ripe(self) -> bytes:
        return ripe_of(b"\x04" + self.pub_signing_key, b"\x04" + self.pub_encryption_key)

    def unsigned_bytes(self) -> bytes:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def signed_end(self) -> int:
        """Offset in the plaintext where the signed part ends (after ack data / message)."""
        return len(self.unsigned_bytes())

    def _sender_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "sender_address_version": self.sender_address_version,
            "sender_stream": self.sender_stream,
            "behavior_bitfield": u32(self.behavior_bitfield).hex(),
            "behavior": _behavior_names(self.behavior_bitfield),
            "pub_signing_key": self.pub_signing_key.hex(),
            "pub_encryption_key": self.pub_encryption_key.hex(),
        }
        if self.nonce_trials_per_byte is not None:
            d["nonce_trials_per_byte"] = self.nonce_trials_per_byte
            d["extra_bytes"] = self.extra_bytes
        return d

    def _normalise_sender(self) -> None:
        _check_sender(self.sender_address_version, self.sender_stream, self.nonce_trials_per_byte, self.extra_bytes)
        _uint(self.behavior_bitfield, _MAX_U32, "behavior bitfield")
        _set(self, "pub_signing_key", _key64(self.pub_signing_key, "public signing key"))
        _set(self, "pub_encryption_key", _key64(self.pub_encryption_key, "public encryption key"))


@dataclass(frozen=True)
class MsgPlaintext(_PlaintextMixin):
    """Decrypted msg (10.4). ``signature`` None means "not signed yet" (a builder's input)."""

    sender_address_version: int
    sender_stream: int
    behavior_bitfield: int
    pub_signing_key: bytes
    pub_encryption_key: bytes
    nonce_trials_per_byte: int | None
    extra_bytes: int | None
    destination_ripe: bytes
    encoding: int
    message: bytes
    ack_data: bytes = b""
    signature: bytes | None = None
    trailing: bytes = b""

    def __post_init__(self) -> None:
        self._normalise_sender()
        _set(self, "destination_ripe", _fixed(self.destination_ripe, RIPE_SIZE, "destination ripe"))
        _uint(self.encoding, _MAX_U64, "encoding")
        _set(self, "message", bytes(self.message))
        _set(self, "ack_data", bytes(self.ack_data))
        if self.trailing and self.signature is None:
            raise InvalidObject("trailing bytes need a signature before them")

    def unsigned_bytes(self) -> bytes:
        """plaintext[0 : end of ack data]: the plaintext part of the signed data."""
        return (
            self.pubkey_bytes()
            + self.destination_ripe
            + encode_var_int(self.encoding)
            + encode_var_int(len(self.message))
            + self.message
            + encode_var_int(len(self.ack_data))
            + self.ack_data
        )

    def encode(self) -> bytes:
        if self.signature is None:
            raise InvalidObject("msg plaintext is not signed yet")
        return self.unsigned_bytes() + encode_var_int(len(self.signature)) + self.signature + self.trailing

    def with_signature(self, signature: bytes) -> "MsgPlaintext":
        return replace(self, signature=bytes(signature))

    def ack_object(self) -> bytes | None:
        """The object inside the ack data (ackData[24:]) or None when there is no ack.

        The ack must be one well-formed ``object`` message (10.4 step 12): otherwise a
        MalformedMessage (a FramingError) or InvalidObject is raised.
        """
        if not self.ack_data:
            return None
        from bmnode.protocol.framing import decode_frame

        frame = decode_frame(self.ack_data)
        if frame.command != "object":
            raise InvalidObject(f"ack data is a {frame.command!r} message, not an object")
        return frame.payload

    def to_dict(self) -> dict[str, Any]:
        d = self._sender_dict()
        d.update(
            {
                "destination_ripe": self.destination_ripe.hex(),
                "encoding": self.encoding,
                "message": self.message.hex(),
                "ack_data": self.ack_data.hex(),
            }
        )
        if self.signature is not None:
            d["signature"] = self.signature.hex()
        d["pubkey_end"] = self.pubkey_end
        d["signed_end"] = self.signed_end
        d.update(_trailing_dict(self.trailing))
        return d


def parse_msg_plaintext(plaintext: bytes) -> MsgPlaintext:
    """Every field of a decrypted msg (10.4); sender versions outside 1..4 raise InvalidObject."""
    r = Reader(plaintext)
    version, stream, bitfield, sign, enc, ntpb, extra = _read_sender(r)
    ripe = r.bytes(RIPE_SIZE, "destination ripe")
    encoding = r.var_int("encoding")
    message = r.var_str("message")
    ack = r.var_str("ack data")
    signature = r.var_str("signature")
    return MsgPlaintext(
        version, stream, bitfield, sign, enc, ntpb, extra, ripe, encoding, message, ack, signature, r.rest()
    )


@dataclass(frozen=True)
class BroadcastPlaintext(_PlaintextMixin):
    """Decrypted broadcast (10.5). ``signature`` None means "not signed yet"."""

    sender_address_version: int
    sender_stream: int
    behavior_bitfield: int
    pub_signing_key: bytes
    pub_encryption_key: bytes
    nonce_trials_per_byte: int | None
    extra_bytes: int | None
    encoding: int
    message: bytes
    signature: bytes | None = None
    trailing: bytes = b""

    def __post_init__(self) -> None:
        self._normalise_sender()
        _uint(self.encoding, _MAX_U64, "encoding")
        _set(self, "message", bytes(self.message))
        if self.trailing and self.signature is None:
            raise InvalidObject("trailing bytes need a signature before them")

    def unsigned_bytes(self) -> bytes:
        """plaintext[0 : end of message]: the plaintext part of the signed data."""
        return self.pubkey_bytes() + encode_var_int(self.encoding) + encode_var_int(len(self.message)) + self.message

    def encode(self) -> bytes:
        if self.signature is None:
            raise InvalidObject("broadcast plaintext is not signed yet")
        return self.unsigned_bytes() + encode_var_int(len(self.signature)) + self.signature + self.trailing

    def with_signature(self, signature: bytes) -> "BroadcastPlaintext":
        return replace(self, signature=bytes(signature))

    def to_dict(self) -> dict[str, Any]:
        d = self._sender_dict()
        d.update({"encoding": self.encoding, "message": self.message.hex()})
        if self.signature is not None:
            d["signature"] = self.signature.hex()
        d["pubkey_end"] = self.pubkey_end
        d["signed_end"] = self.signed_end
        d.update(_trailing_dict(self.trailing))
        return d


def parse_broadcast_plaintext(plaintext: bytes) -> BroadcastPlaintext:
    """Every field of a decrypted broadcast (10.5); sender versions outside 1..4 raise InvalidObject."""
    r = Reader(plaintext)
    version, stream, bitfield, sign, enc, ntpb, extra = _read_sender(r)
    encoding = r.var_int("encoding")
    message = r.var_str("message")
    signature = r.var_str("signature")
    return BroadcastPlaintext(version, stream, bitfield, sign, enc, ntpb, extra, encoding, message, signature, r.rest())


# --------------------------------------------------------------------------------------------
# signed data for senders (from fields, before the object exists)


def pubkey_signed_data(expires_time: int, version: int, stream: int, body: PubkeyData, tag: bytes | None = None) -> bytes:
    """v3: header-without-nonce || body[:signed_end]; v4: header-without-nonce || tag || body[:signed_end]."""
    if version == 3:
        if tag is not None:
            raise InvalidObject("a v3 pubkey has no tag")
        prefix = encode_object_header(expires_time, OBJECT_PUBKEY, 3, stream)
    elif version == 4:
        if tag is None:
            raise InvalidObject("a v4 pubkey's signed data includes the tag")
        prefix = encode_object_header(expires_time, OBJECT_PUBKEY, 4, stream) + _fixed(tag, TAG_SIZE, "tag")
    else:
        raise InvalidObject(f"pubkey version {version} is not signed")
    if body.nonce_trials_per_byte is None:
        raise InvalidObject("a signed pubkey body needs nonce_trials_per_byte and extra_bytes")
    return prefix + body.unsigned_bytes()


def msg_signed_data(expires_time: int, stream: int, plaintext: MsgPlaintext) -> bytes:
    """expiresTime || objectType(2) || var_int(1) || var_int(stream) || plaintext[:end of ack data]."""
    return encode_object_header(expires_time, OBJECT_MSG, 1, stream) + plaintext.unsigned_bytes()


def broadcast_signed_data(
    expires_time: int, version: int, stream: int, plaintext: BroadcastPlaintext, tag: bytes | None = None
) -> bytes:
    """v4: header-without-nonce || plaintext[:end of message]; v5 puts the tag before the plaintext."""
    prefix = encode_object_header(expires_time, OBJECT_BROADCAST, version, stream)
    if version == 5:
        if tag is None:
            raise InvalidObject("a v5 broadcast's signed data includes the tag")
        prefix += _fixed(tag, TAG_SIZE, "tag")
    elif version == 4:
        if tag is not None:
            raise InvalidObject("a v4 broadcast has no tag")
    else:
        raise InvalidObject(f"broadcast version {version} is not supported")
    return prefix + plaintext.unsigned_bytes()


# --------------------------------------------------------------------------------------------
# acknowledgements and duplicate detection


def encode_ackdata(stream: int, random_bytes: bytes) -> bytes:
    """Stealth-level-0 ackdata (10.6): uint32(2) || var_int(1) || var_int(stream) || 32 random bytes."""
    return u32(OBJECT_MSG) + encode_var_int(1) + encode_var_int(_uint(stream, _MAX_U64, "stream")) + _fixed(
        random_bytes, ACK_RANDOM_SIZE, "ack random bytes"
    )


def ackdata_of(obj: bytes) -> bytes:
    """obj[16:]: what a sender compares with its watched ackdata for every object received."""
    if len(obj) < 16:
        raise MalformedMessage(f"object too short: {len(obj)} bytes", len(obj))
    return bytes(obj[16:])


def signature_hash(signature: bytes) -> bytes:
    """sighash = dSHA512(signature)[32:64], the inbox duplicate key (10.4 step 10)."""
    return double_sha512(bytes(signature))[32:64]
