"""Building and opening every object type (spec 10.2-10.6, 13): the crypto over protocol.objects.

Senders (``build_*``) return the object body without its nonce, ready for proof of work, in an
:class:`OutgoingObject` that also says which difficulty the PoW needs and what the caller must
remember (the ackdata of a msg). ECIES ephemeral key, IV and the signer can be injected so that
tests rebuild reference objects byte for byte.

Receivers (``open_*``) apply every check of the reference's object processor that needs no
database, in the reference's order, and either return a typed result or raise:

* :class:`NotForUs` - nothing here concerns us: no own key decrypts the msg, nobody we
  subscribe to sent the broadcast, the pubkey is not the one awaited, the getpubkey asks for
  somebody else (also for garbage, wrong kinds and malformed objects, since nothing showed
  they were ours). The common case on a busy node; drop silently.
* :class:`ObjectRejected` - it was for us (decrypted with our key, tag of an awaited or
  subscribed address, our getpubkey) but breaks a rule. ``reason`` says which; ``sender``
  carries the sender's pubkey data when the reference would already have stored it.

Left to the caller (they need a database): blacklist/whitelist, inbox duplicate check by
sighash, "pubkey sent less than 28 days ago", storing rows and publishing objects.
"""

from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Collection, Container, Iterable

from bmnode.crypto import ecies
from bmnode.crypto.addresses import Address, parse_address
from bmnode.crypto.derived import address_key_and_tag, broadcast_private_key
from bmnode.crypto.identity import Identity, PubkeyRecord
from bmnode.crypto.keys import public_key
from bmnode.crypto.signatures import sign, verify
from bmnode.errors import BmnodeError, CryptoError, DecryptionFailed, InvalidAddress, InvalidObject, MalformedMessage
from bmnode.pow.target import evaluate_pow, initial_hash, sender_target
from bmnode.protocol.constants import (
    DAY,
    MAX_OBJECT_SIZE_SENT,
    NETWORK_MIN_EXTRA,
    NETWORK_MIN_NTPB,
    OBJECT_BROADCAST,
    OBJECT_GETPUBKEY,
    OBJECT_MSG,
    OBJECT_ONIONPEER,
    OBJECT_PUBKEY,
)
from bmnode.protocol.encoding import Reader, u64
from bmnode.protocol.framing import decode_frame, frame
from bmnode.protocol.hosts import onionpeer_version
from bmnode.protocol.msgencoding import DecodedMessage, decode_message, encode_message
from bmnode.protocol.objects import (
    BroadcastPayload,
    BroadcastPlaintext,
    EncryptedPubkeyPayload,
    GetPubkeyPayload,
    MsgPlaintext,
    OnionPeerPayload,
    ParsedObject,
    PubkeyData,
    attach_nonce,
    broadcast_signed_data,
    encode_ackdata,
    encode_object_body,
    msg_signed_data,
    parse_broadcast_plaintext,
    parse_msg_plaintext,
    parse_object,
    parse_pubkey_plaintext,
    pubkey_signed_data,
    signature_hash,
)
from bmnode.protocol.validation import check_relay, passes_type_sanity

__all__ = [
    "BROADCAST_TO_ADDRESS",
    "DropReason",
    "Keyring",
    "NotForUs",
    "ObjectDropped",
    "ObjectRejected",
    "OpenedPubkey",
    "OutgoingObject",
    "ReceivedBroadcast",
    "ReceivedMsg",
    "Signer",
    "Subscriptions",
    "ack_message",
    "ack_ttl",
    "build_ack",
    "build_broadcast",
    "build_getpubkey",
    "build_msg",
    "build_onionpeer",
    "build_pubkey",
    "expects_ack",
    "is_ack_for",
    "object_pow_target",
    "open_broadcast",
    "open_getpubkey",
    "open_msg",
    "open_pubkey",
]

#: A signer: signed data -> DER signature (defaults to RFC 6979 SHA-256 with the identity's key).
Signer = Callable[[bytes], bytes]

#: toAddress of inbox rows made from broadcasts (10.5 step 9).
BROADCAST_TO_ADDRESS = "[Broadcast subscribers]"
#: 10.2 step 1: longer getpubkey objects are ignored.
GETPUBKEY_MAX_LENGTH = 200
#: onionpeer objects go to stream 1 whatever streams the node joined (12.5; the reference's choice).
ONIONPEER_STREAM = 1
#: 10.3.1-10.3.3: minimum whole-object length per pubkey version.
PUBKEY_MIN_LENGTHS = {2: 146, 3: 170, 4: 350}
#: 10.4 step 3: shorter msg plaintexts are ignored.
MSG_MIN_PLAINTEXT = 170


# --------------------------------------------------------------------------------------------
# why an object was dropped


class DropReason(str, enum.Enum):
    """Why an opener did not return a result."""

    # not for us
    MALFORMED = "malformed"  # header or payload does not parse (before anything showed it is ours)
    WRONG_KIND = "wrong_kind"  # not a type/version this opener handles
    BAD_LENGTH = "bad_length"  # outside the length bounds of 7.2 step 9 / 10.2 / 10.3
    NOT_FOR_US = "not_for_us"  # no own key decrypts / no own address requested
    NOT_SUBSCRIBED = "not_subscribed"  # broadcast from an address we do not follow
    NOT_AWAITED = "not_awaited"  # pubkey of another address than the one awaited
    CHAN_SILENT = "chan_silent"  # getpubkey for a chan: chans never answer (9.6)
    # for us but invalid
    WRONG_VERSION = "wrong_version"  # object version/stream differ from our address's
    DECRYPTION_FAILED = "decryption_failed"  # tag matched but the address key does not decrypt
    BAD_PLAINTEXT = "bad_plaintext"  # decrypted data does not parse
    BAD_SENDER_VERSION = "bad_sender_version"
    BAD_SENDER_STREAM = "bad_sender_stream"
    PLAINTEXT_TOO_SHORT = "plaintext_too_short"
    WRONG_DESTINATION = "wrong_destination"  # msg destination ripe is not the decrypting address's
    WRONG_RIPE = "wrong_ripe"  # keys do not belong to the address
    WRONG_TAG = "wrong_tag"  # v5 broadcast tag does not match the sender's keys
    BAD_SIGNATURE = "bad_signature"
    INSUFFICIENT_POW = "insufficient_pow"  # below the receiving address's own difficulty
    IGNORED_ENCODING = "ignored_encoding"  # broadcast with encoding 0
    UNDECODABLE = "undecodable"  # message field does not decode (13)


class ObjectDropped(BmnodeError):
    """An opener dropped the object; ``reason`` says why.

    ``identity`` is the own identity involved, if any; ``sender`` is the sender's
    :class:`PubkeyRecord` when the reference would already have stored it (the signature was
    valid) even though the message itself is dropped.
    """

    for_us = False

    def __init__(
        self,
        reason: DropReason,
        message: str,
        *,
        identity: Identity | None = None,
        sender: PubkeyRecord | None = None,
    ) -> None:
        self.reason = reason
        self.identity = identity
        self.sender = sender
        super().__init__(f"{reason.value}: {message}")


class NotForUs(ObjectDropped):
    """Nothing in this object concerns us (the usual case): drop silently."""

    for_us = False


class ObjectRejected(ObjectDropped, InvalidObject):
    """The object was for us but breaks a protocol rule."""

    for_us = True


def _not_for_us(reason: DropReason, message: str, **kw: Any) -> NotForUs:
    return NotForUs(reason, message, **kw)


def _rejected(reason: DropReason, message: str, **kw: Any) -> ObjectRejected:
    return ObjectRejected(reason, message, **kw)


# --------------------------------------------------------------------------------------------
# outgoing objects


def object_pow_target(
    body: bytes,
    now: int,
    ntpb: int = 0,
    extra: int = 0,
    *,
    min_ntpb: int = NETWORK_MIN_NTPB,
    min_extra: int = NETWORK_MIN_EXTRA,
) -> int:
    """The sender's target for an object body (without nonce) made at ``now`` (8.2, 8.4).

    ``ntpb``/``extra`` are the demanded difficulty; anything below the network minimum
    (``min_*``, 1000 on the real network), 0 included, is raised to it.
    """
    expires = int.from_bytes(bytes(body[:8]), "big")
    return sender_target(len(body) + 8, max(expires - int(now), 0), ntpb, extra, min_ntpb=min_ntpb, min_extra=min_extra)


@dataclass(frozen=True)
class OutgoingObject:
    """An object body (no nonce) ready for proof of work, and what the sender must keep.

    ``ntpb``/``extra``: difficulty demanded by the recipient (0: the network minimum).
    ``ackdata``: for a msg carrying an ack, the 38-byte value to watch for (10.6).
    """

    body: bytes
    object_type: int
    version: int
    stream: int
    expires_time: int
    ntpb: int = 0
    extra: int = 0
    ackdata: bytes | None = None
    signature: bytes | None = None

    @property
    def length(self) -> int:
        """Length of the complete object (body plus the 8-byte nonce)."""
        return len(self.body) + 8

    def initial_hash(self) -> bytes:
        """SHA512(body), what the PoW backends search with (8.1)."""
        return initial_hash(self.body)

    def pow_target(self, now: int, *, min_ntpb: int = NETWORK_MIN_NTPB, min_extra: int = NETWORK_MIN_EXTRA) -> int:
        """Target the nonce must meet when the work starts at ``now`` (8.2)."""
        return object_pow_target(self.body, now, self.ntpb, self.extra, min_ntpb=min_ntpb, min_extra=min_extra)

    def complete(self, nonce: int) -> bytes:
        """be64(nonce) || body: the object to send."""
        return attach_nonce(nonce, self.body)


def _outgoing(
    expires_time: int, object_type: int, version: int, stream: int, payload: bytes, **extra: Any
) -> OutgoingObject:
    body = encode_object_body(expires_time, object_type, version, stream, payload)
    if len(body) + 8 > MAX_OBJECT_SIZE_SENT:
        raise InvalidObject(f"object of {len(body) + 8} bytes exceeds the sending limit of {MAX_OBJECT_SIZE_SENT}")
    return OutgoingObject(body, object_type, version, stream, expires_time, **extra)


def _signature(identity: Identity, data: bytes, signer: Signer | None, low_s: bool) -> bytes:
    if signer is not None:
        return bytes(signer(data))
    return sign(identity.signing_key, data, low_s=low_s)


def _as_address(address: str | Address | Identity | PubkeyRecord) -> Address:
    if isinstance(address, Address):
        return address
    if isinstance(address, (Identity, PubkeyRecord)):
        return address.as_address()
    return parse_address(address)


def _message_field(encoding: int, subject: str | bytes, body: str | bytes, raw: bytes | None) -> bytes:
    return bytes(raw) if raw is not None else encode_message(encoding, subject, body)


def build_getpubkey(address: str | Address, expires_time: int) -> OutgoingObject:
    """getpubkey for ``address`` (10.2): object version = address version; ripe (v2/v3) or tag (v4)."""
    a = _as_address(address)
    if a.version not in (2, 3, 4):
        raise InvalidAddress(f"cannot request the pubkey of a version {a.version} address", "versiontoohigh")
    if a.version == 4:
        payload = GetPubkeyPayload(tag=address_key_and_tag(a.version, a.stream, a.ripe)[1])
    else:
        payload = GetPubkeyPayload(ripe=a.ripe)
    return _outgoing(expires_time, OBJECT_GETPUBKEY, a.version, a.stream, payload.encode())


def build_pubkey(
    identity: Identity,
    expires_time: int,
    *,
    ephemeral_privkey: bytes | None = None,
    iv: bytes | None = None,
    signer: Signer | None = None,
    low_s: bool = True,
) -> OutgoingObject:
    """The pubkey of ``identity`` (10.3): v2 plain, v3 signed, v4 signed and encrypted to D[0:32].

    Chans never publish their pubkey (9.6): InvalidObject.
    """
    if identity.chan:
        raise InvalidObject(f"{identity.address} is a chan: chans never publish their pubkey")
    v, s = identity.version, identity.stream
    body = identity.pubkey_data()
    if v == 2:
        return _outgoing(expires_time, OBJECT_PUBKEY, 2, s, body.encode())
    tag = identity.tag if v == 4 else None
    sig = _signature(identity, pubkey_signed_data(expires_time, v, s, body, tag), signer, low_s)
    signed = body.with_signature(sig).encode()
    if v == 3:
        return _outgoing(expires_time, OBJECT_PUBKEY, 3, s, signed, signature=sig)
    assert identity.address_public_key is not None and tag is not None
    blob = ecies.encrypt(identity.address_public_key, signed, ephemeral_privkey=ephemeral_privkey, iv=iv)
    return _outgoing(expires_time, OBJECT_PUBKEY, 4, s, EncryptedPubkeyPayload(tag, blob).encode(), signature=sig)


def build_onionpeer(host: str, port: int, expires_time: int) -> OutgoingObject:
    """The onionpeer object of a node reachable as the onion service ``host:port`` (12.5):
    version 2 for a v2 name, 3 for a v3 one, stream 1; it needs network-minimum PoW.
    A bad name or port raises InvalidObject."""
    try:
        payload = OnionPeerPayload.for_peer(host, port)
    except MalformedMessage as exc:
        raise InvalidObject(f"cannot announce {host!r}:{port!r} as an onion service: {exc}") from None
    return _outgoing(expires_time, OBJECT_ONIONPEER, onionpeer_version(host), ONIONPEER_STREAM, payload.encode())


def expects_ack(recipient: PubkeyRecord | Identity) -> bool:
    """Whether a msg to ``recipient`` should carry an ack (10.4): not to our own addresses or
    chans, and only if the recipient's bitfield has does_ack."""
    return isinstance(recipient, PubkeyRecord) and recipient.does_ack


def ack_ttl(msg_ttl: int) -> int:
    """TTL of the ack object for a msg living ``msg_ttl`` seconds (7.3), before the random jitter."""
    if msg_ttl < DAY:
        return DAY
    if msg_ttl < 7 * DAY:
        return 7 * DAY
    return 28 * DAY


def build_ack(stream: int, expires_time: int, random32: bytes | None = None) -> tuple[bytes, bytes]:
    """(ackdata, ack object body without nonce) for a msg to ``stream`` (10.6, stealth level 0).

    The ackdata is what the sender watches for; the body needs network-minimum PoW, and the
    framed result (:func:`ack_message`) goes into the msg.
    """
    ackdata = encode_ackdata(stream, os.urandom(32) if random32 is None else random32)
    return ackdata, u64(expires_time) + ackdata


def ack_message(ack_object: bytes) -> bytes:
    """The complete framed ``object`` message carried as ack data in a msg (10.6)."""
    return frame("object", ack_object)


def _ack_object_of(ack_message_bytes: bytes) -> bytes:
    f = decode_frame(ack_message_bytes)
    if f.command != "object":
        raise InvalidObject(f"ack data is a {f.command!r} message, not an object")
    if len(f.payload) < 16:
        raise InvalidObject(f"ack object of {len(f.payload)} bytes is too short")
    return f.payload


def build_msg(
    sender: Identity,
    recipient: PubkeyRecord | Identity,
    encoding: int,
    subject: str | bytes,
    body: str | bytes,
    expires_time: int,
    ack_message: bytes = b"",
    *,
    recipient_known: bool = False,
    raw_message: bytes | None = None,
    ephemeral_privkey: bytes | None = None,
    iv: bytes | None = None,
    signer: Signer | None = None,
    low_s: bool = True,
) -> OutgoingObject:
    """A msg from ``sender`` to ``recipient`` (10.4), encrypted to the recipient's encryption key.

    ``recipient`` is the recipient's stored pubkey data, or one of our own identities (sending
    to ourselves or to a chan: network-minimum PoW and never an ack). ``ack_message`` is the
    complete framed ack object (:func:`build_ack`, PoW done, :func:`ack_message`); giving one
    where :func:`expects_ack` is false raises InvalidObject. ``recipient_known``: the recipient
    is in the sender's address book/subscriptions/whitelist, so the plaintext demands only the
    network minimum. ``raw_message`` replaces the encoded subject/body (any encoding).
    """
    own = isinstance(recipient, Identity)
    record = recipient.pubkey_record() if own else recipient
    if not isinstance(record, PubkeyRecord):
        raise TypeError("recipient must be a PubkeyRecord or an Identity")
    ackdata = None
    if ack_message:
        if not expects_ack(recipient):
            raise InvalidObject(f"a msg to {record.address} must not carry an ack (own address, chan or no does_ack)")
        ackdata = _ack_object_of(ack_message)[16:]
    if sender.version >= 3:
        if recipient_known:
            ntpb, extra = NETWORK_MIN_NTPB, NETWORK_MIN_EXTRA
        else:
            ntpb, extra = sender.nonce_trials_per_byte, sender.extra_bytes
    else:
        ntpb = extra = None
    plaintext = MsgPlaintext(
        sender.version,
        sender.stream,
        sender.behavior_bitfield,
        sender.pub_signing_key,
        sender.pub_encryption_key,
        ntpb,
        extra,
        record.ripe,
        encoding,
        _message_field(encoding, subject, body, raw_message),
        bytes(ack_message),
    )
    sig = _signature(sender, msg_signed_data(expires_time, record.stream, plaintext), signer, low_s)
    blob = ecies.encrypt(
        record.pub_encryption_key, plaintext.with_signature(sig).encode(), ephemeral_privkey=ephemeral_privkey, iv=iv
    )
    demand = (0, 0) if own else record.msg_difficulty(min_ntpb=0, min_extra=0)
    return _outgoing(
        expires_time, OBJECT_MSG, 1, record.stream, blob, ntpb=demand[0], extra=demand[1], ackdata=ackdata,
        signature=sig,
    )


def build_broadcast(
    sender: Identity,
    encoding: int,
    subject: str | bytes,
    body: str | bytes,
    expires_time: int,
    *,
    raw_message: bytes | None = None,
    ephemeral_privkey: bytes | None = None,
    iv: bytes | None = None,
    signer: Signer | None = None,
    low_s: bool = True,
) -> OutgoingObject:
    """A broadcast (10.5): version 4 for v2/v3 senders (no tag), version 5 with the tag for v4."""
    v, s = sender.version, sender.stream
    version = 5 if v >= 4 else 4
    tag = sender.tag if version == 5 else None
    plaintext = BroadcastPlaintext(
        v,
        s,
        sender.behavior_bitfield,
        sender.pub_signing_key,
        sender.pub_encryption_key,
        sender.nonce_trials_per_byte if v >= 3 else None,
        sender.extra_bytes if v >= 3 else None,
        encoding,
        _message_field(encoding, subject, body, raw_message),
    )
    sig = _signature(sender, broadcast_signed_data(expires_time, version, s, plaintext, tag), signer, low_s)
    blob = ecies.encrypt(
        public_key(sender.broadcast_private_key),
        plaintext.with_signature(sig).encode(),
        ephemeral_privkey=ephemeral_privkey,
        iv=iv,
    )
    return _outgoing(expires_time, OBJECT_BROADCAST, version, s, BroadcastPayload(tag, blob).encode(), signature=sig)


# --------------------------------------------------------------------------------------------
# receiving: shared pieces


class Keyring:
    """Own identities prepared for the receive path (build once, reuse for every object).

    Identities sharing an encryption key (e.g. the v3 and v4 address of one passphrase) share
    one trial decryption; getpubkey lookups by ripe and tag are dictionary hits.
    """

    __slots__ = ("identities", "_keys", "_by_ripe", "_by_tag")

    def __init__(self, identities: Iterable[Identity]) -> None:
        ids = tuple(identities)
        for i in ids:
            if not isinstance(i, Identity):
                raise TypeError(f"Keyring holds Identity objects, not {type(i).__name__}")
        groups: dict[bytes, list[Identity]] = {}
        by_ripe: dict[bytes, list[Identity]] = {}
        by_tag: dict[bytes, list[Identity]] = {}
        for i in ids:
            groups.setdefault(i.encryption_key.secret, []).append(i)
            by_ripe.setdefault(i.ripe, []).append(i)
            if i.tag is not None:
                by_tag.setdefault(i.tag, []).append(i)
        self.identities = ids
        self._keys = tuple((g[0].decryptor, tuple(g)) for g in groups.values())
        self._by_ripe = {k: tuple(v) for k, v in by_ripe.items()}
        self._by_tag = {k: tuple(v) for k, v in by_tag.items()}

    def __len__(self) -> int:
        return len(self.identities)

    def by_ripe(self, ripe: bytes) -> tuple[Identity, ...]:
        """Own identities with this ripe (any version: one key pair can back a v3 and a v4 address)."""
        return self._by_ripe.get(bytes(ripe), ())

    def by_tag(self, tag: bytes) -> tuple[Identity, ...]:
        """Own v4 identities with this tag."""
        return self._by_tag.get(bytes(tag), ())

    def trial_decrypt(
        self, blob: bytes | ecies.ParsedBlob, *, exhaustive: bool = True
    ) -> tuple[bytes, tuple[Identity, ...]] | None:
        """(plaintext, identities owning the key) for the key that opens ``blob``, or None.

        The blob is parsed once; each distinct key costs one ECDH and a MAC check (AES runs
        only for the key whose MAC matches). ``exhaustive`` (the reference's way) keeps trying
        the remaining keys after a success so the time taken does not reveal which key worked.
        """
        parsed = blob if isinstance(blob, ecies.ParsedBlob) else ecies.parse_blob(blob)
        found = None
        for decryptor, owners in self._keys:
            pt = decryptor.try_decrypt(parsed)
            if pt is not None and found is None:
                found = (pt, owners)
                if not exhaustive:
                    break
        return found


def _keyring(identities: Keyring | Iterable[Identity]) -> Keyring:
    return identities if isinstance(identities, Keyring) else Keyring(identities)


class Subscriptions:
    """Addresses whose broadcasts we follow, prepared for :func:`open_broadcast`.

    v2/v3 addresses: one trial decryption each with their broadcast key (v4 broadcasts);
    v4 addresses: looked up by tag (v5 broadcasts).
    """

    __slots__ = ("addresses", "_legacy", "_by_tag")

    def __init__(self, addresses: Iterable[str | Address | Identity | PubkeyRecord]) -> None:
        seen: dict[Address, None] = {}
        for a in addresses:
            addr = _as_address(a)
            if addr.version not in (2, 3, 4):
                raise InvalidAddress(f"cannot subscribe to a version {addr.version} address", "versiontoohigh")
            seen.setdefault(addr, None)
        self.addresses = tuple(seen)
        self._legacy = tuple(
            (a, ecies.Decryptor(broadcast_private_key(a.version, a.stream, a.ripe))) for a in self.addresses if a.version < 4
        )
        by_tag = {}
        for a in self.addresses:
            if a.version == 4:
                priv, tag = address_key_and_tag(a.version, a.stream, a.ripe)
                by_tag[tag] = (a, ecies.Decryptor(priv))
        self._by_tag = by_tag

    def __len__(self) -> int:
        return len(self.addresses)


def _subscriptions(subs: Subscriptions | Iterable[str | Address | Identity | PubkeyRecord]) -> Subscriptions:
    return subs if isinstance(subs, Subscriptions) else Subscriptions(subs)


def _parse(obj: bytes | ParsedObject, object_type: int, what: str) -> ParsedObject:
    if isinstance(obj, ParsedObject):
        p = obj
    else:
        try:
            p = parse_object(obj)
        except (MalformedMessage, InvalidObject) as exc:
            raise _not_for_us(DropReason.MALFORMED, f"{what}: {exc}") from None
    if p.header.object_type != object_type:
        raise _not_for_us(DropReason.WRONG_KIND, f"a {p.header.type_name} object is not a {what}")
    return p


def _peek_sender_version(plaintext: bytes) -> int | None:
    try:
        return Reader(plaintext).var_int()
    except MalformedMessage:
        return None


def _sender_record(pt: MsgPlaintext | BroadcastPlaintext) -> PubkeyRecord:
    return PubkeyRecord(pt.sender_address_version, pt.sender_stream, pt.sender_pubkey())


def _decode(
    encoding: int, message: bytes, sender: PubkeyRecord, identity: Identity | None = None
) -> DecodedMessage:
    try:
        return decode_message(encoding, message)
    except MalformedMessage as exc:
        raise _rejected(DropReason.UNDECODABLE, str(exc), identity=identity, sender=sender) from None


def _inbox_row(
    msgid: bytes, to_address: str, from_address: str, message: DecodedMessage, sighash: bytes, received: int
) -> dict[str, Any]:
    return {
        "msgid": msgid,
        "toAddress": to_address,
        "fromAddress": from_address,
        "subject": message.subject,
        "received": int(received),
        "message": message.body,
        "folder": "inbox",
        "encodingType": message.encoding,
        "read": 0,
        "sighash": sighash,
    }


# --------------------------------------------------------------------------------------------
# getpubkey (10.2)


def open_getpubkey(obj: bytes | ParsedObject, identities: Keyring | Iterable[Identity]) -> Identity:
    """The own identity that must answer this getpubkey with its pubkey (10.2 steps 1-6).

    Step 7 (not more than once in 28 days) needs the last send time: the caller's. A chan
    never answers: NotForUs with reason CHAN_SILENT and the chan as ``identity``.
    """
    p = _parse(obj, OBJECT_GETPUBKEY, "getpubkey")
    h = p.header
    if p.length > GETPUBKEY_MAX_LENGTH or not passes_type_sanity(h, p.length):
        raise _not_for_us(DropReason.BAD_LENGTH, f"getpubkey of {p.length} bytes")
    if h.version not in (2, 3, 4) or not isinstance(p.payload, GetPubkeyPayload):
        raise _not_for_us(DropReason.WRONG_KIND, f"getpubkey version {h.version}")
    ring = _keyring(identities)
    if h.version == 4:
        candidates = ring.by_tag(p.payload.tag)  # type: ignore[arg-type]
    else:
        candidates = ring.by_ripe(p.payload.ripe)  # type: ignore[arg-type]
    if not candidates:
        raise _not_for_us(DropReason.NOT_FOR_US, "the requested address is not ours")
    matching = [i for i in candidates if i.version == h.version and i.stream == h.stream]
    if not matching:
        raise _rejected(
            DropReason.WRONG_VERSION,
            f"requested version {h.version} stream {h.stream}, ours is {candidates[0].address}",
            identity=candidates[0],
        )
    answering = [i for i in matching if not i.chan]
    if not answering:
        raise _not_for_us(DropReason.CHAN_SILENT, f"{matching[0].address} is a chan", identity=matching[0])
    return answering[0]


# --------------------------------------------------------------------------------------------
# pubkey (10.3)


@dataclass(frozen=True)
class OpenedPubkey:
    """A verified pubkey: ``record`` is what to store; the rest is what it was checked from."""

    record: PubkeyRecord
    pubkey: PubkeyData  # as received, with its signature (v3/v4)
    inventory_hash: bytes
    signed_data: bytes | None  # None for v2
    plaintext: bytes | None  # v4: the decrypted body

    @property
    def address(self) -> str:
        """The address the keys belong to."""
        return self.record.address


def open_pubkey(
    obj: bytes | ParsedObject, address: str | Address | Identity | PubkeyRecord | None = None
) -> OpenedPubkey:
    """Check a pubkey object (10.3) and return the pubkey data to store.

    v2/v3 are read directly (v3 signature verified); with ``address`` the keys must belong to
    it, without one any valid pubkey is returned (the reference stores every valid v3 pubkey).
    v4 pubkeys open only for the awaited ``address``: tag, decryption with D[0:32], signature
    and ripe are checked (10.3.3 steps 1-5).
    """
    p = _parse(obj, OBJECT_PUBKEY, "pubkey")
    h = p.header
    if h.version not in PUBKEY_MIN_LENGTHS:
        raise _not_for_us(DropReason.WRONG_KIND, f"pubkey version {h.version}")
    wanted = None if address is None else _as_address(address)
    if h.version in (2, 3):
        return _open_plain_pubkey(p, wanted)
    return _open_encrypted_pubkey(p, wanted)


def _check_pubkey_length(p: ParsedObject, for_us: bool) -> None:
    minimum = PUBKEY_MIN_LENGTHS[p.header.version]
    if p.length < minimum or not passes_type_sanity(p.header, p.length):
        exc = _rejected if for_us else _not_for_us
        raise exc(DropReason.BAD_LENGTH, f"v{p.header.version} pubkey of {p.length} bytes (minimum {minimum})")


def _open_plain_pubkey(p: ParsedObject, wanted: Address | None) -> OpenedPubkey:
    h = p.header
    _check_pubkey_length(p, False)
    pk = p.payload
    assert isinstance(pk, PubkeyData)
    try:
        record = PubkeyRecord(h.version, h.stream, pk)
    except (InvalidAddress, InvalidObject) as exc:
        raise _not_for_us(DropReason.MALFORMED, f"pubkey: {exc}") from None
    if wanted is not None and record.as_address() != wanted:
        raise _not_for_us(DropReason.NOT_AWAITED, f"pubkey of {record.address}, not of {wanted}")
    signed = None
    if h.version == 3:
        signed = p.signed_data()
        if not verify(pk.pub_signing_key, signed, pk.signature):  # type: ignore[arg-type]
            raise _rejected(DropReason.BAD_SIGNATURE, f"v3 pubkey of {record.address}")
    return OpenedPubkey(record, pk, p.inventory_hash, signed, None)


def _open_encrypted_pubkey(p: ParsedObject, wanted: Address | None) -> OpenedPubkey:
    h = p.header
    if wanted is None:
        raise _not_for_us(DropReason.NOT_AWAITED, "a v4 pubkey opens only for the address awaited")
    payload = p.payload
    assert isinstance(payload, EncryptedPubkeyPayload)
    if wanted.version != 4 or wanted.stream != h.stream:
        raise _not_for_us(DropReason.NOT_AWAITED, f"v4 pubkey in stream {h.stream} is not for {wanted}")
    priv, tag = address_key_and_tag(wanted.version, wanted.stream, wanted.ripe)
    if payload.tag != tag:
        raise _not_for_us(DropReason.NOT_AWAITED, f"tag {payload.tag.hex()} is not the tag of {wanted}")
    _check_pubkey_length(p, True)
    try:
        plaintext = ecies.decrypt(priv, payload.encrypted)
    except DecryptionFailed as exc:
        raise _rejected(DropReason.DECRYPTION_FAILED, f"v4 pubkey for {wanted}: {exc}") from None
    try:
        pk = parse_pubkey_plaintext(plaintext)
    except (MalformedMessage, InvalidObject) as exc:
        raise _rejected(DropReason.BAD_PLAINTEXT, f"v4 pubkey plaintext: {exc}") from None
    signed = p.signed_data(pk)
    if not verify(pk.pub_signing_key, signed, pk.signature):  # type: ignore[arg-type]
        raise _rejected(DropReason.BAD_SIGNATURE, f"v4 pubkey for {wanted}")
    if pk.ripe != wanted.ripe:
        raise _rejected(DropReason.WRONG_RIPE, f"the keys in the v4 pubkey tagged for {wanted} belong elsewhere")
    return OpenedPubkey(PubkeyRecord(4, h.stream, pk), pk, p.inventory_hash, signed, plaintext)


# --------------------------------------------------------------------------------------------
# msg (10.4)


@dataclass(frozen=True)
class ReceivedMsg:
    """A msg that passed every database-free check of 10.4.

    To do with it (after the caller's blacklist and sighash-duplicate checks): store
    ``sender.data`` for ``sender.address``; if :attr:`stores_in_inbox`, store
    :meth:`inbox_row`; if :attr:`sends_ack`, insert and announce ``ack_object``.
    """

    identity: Identity
    inventory_hash: bytes
    plaintext: bytes
    parsed: MsgPlaintext
    signed_data: bytes
    sender: PubkeyRecord
    message: DecodedMessage
    sighash: bytes
    ack_object: bytes | None  # well-formed and valid for relay at ``now``; None otherwise
    ack_problem: str | None  # why ack data present was not usable
    difficulty_checked: bool

    @property
    def to_address(self) -> str:
        """The own address that received it."""
        return self.identity.address

    @property
    def from_address(self) -> str:
        """The sender's address, from the keys in the plaintext (10.4 step 6)."""
        return self.sender.address

    @property
    def encoding(self) -> int:
        """The message encoding (13)."""
        return self.parsed.encoding

    @property
    def stores_in_inbox(self) -> bool:
        """Encoding 0 (IGNORE) makes no inbox entry and no ack (10.4 steps 11-12)."""
        return not self.message.ignored

    @property
    def sends_ack(self) -> bool:
        """Publish ``ack_object``: there is a valid one, encoding != 0, our address is neither a
        chan nor without does_ack (``dontsendack``)."""
        return (
            self.ack_object is not None
            and self.stores_in_inbox
            and not self.identity.chan
            and self.identity.does_ack
        )

    def inbox_row(self, received: int) -> dict[str, Any]:
        """The reference's inbox row (msgid and sighash as bytes)."""
        return _inbox_row(self.inventory_hash, self.to_address, self.from_address, self.message, self.sighash, received)


def _is_trusted(trusted: Container[str] | Callable[[str], bool] | None, address: str) -> bool:
    if trusted is None:
        return False
    if callable(trusted):
        return bool(trusted(address))
    return address in trusted


def open_msg(
    obj: bytes | ParsedObject,
    identities: Keyring | Iterable[Identity],
    *,
    now: int | None = None,
    trusted_senders: Container[str] | Callable[[str], bool] | None = None,
    check_difficulty: bool = True,
    min_ntpb: int = NETWORK_MIN_NTPB,
    min_extra: int = NETWORK_MIN_EXTRA,
    streams: Collection[int] | None = None,
    exhaustive: bool = True,
) -> ReceivedMsg:
    """Trial-decrypt a msg with every own key and apply 10.4 steps 1-7, 9 and the ack part of 12.

    ``trusted_senders`` (addresses, or a predicate) are the address book/subscriptions/
    whitelist whose msgs skip the receiving address's own difficulty (step 7);
    ``check_difficulty=False`` skips it for everyone. ``min_ntpb``/``min_extra`` are the
    network minimum (a test network may lower them). The ack object is kept only if it is a
    well-formed framed ``object`` that passes relay validation at ``now`` in ``streams``
    (default: the receiving address's stream), as 15.3 advises.
    """
    now = int(time.time()) if now is None else int(now)
    p = _parse(obj, OBJECT_MSG, "msg")
    h = p.header
    if h.version != 1:
        raise _not_for_us(DropReason.WRONG_KIND, f"msg version {h.version}")
    ring = _keyring(identities)
    try:
        blob = ecies.parse_blob(p.object_payload)
    except DecryptionFailed as exc:
        raise _not_for_us(DropReason.NOT_FOR_US, f"undecryptable blob: {exc}") from None
    hit = ring.trial_decrypt(blob, exhaustive=exhaustive)
    if hit is None:
        raise _not_for_us(DropReason.NOT_FOR_US, "no own key decrypts this msg")
    plaintext, owners = hit
    who = owners[0]

    # step 3
    version = _peek_sender_version(plaintext)
    if version is not None and not 2 <= version <= 4:
        raise _rejected(DropReason.BAD_SENDER_VERSION, f"sender address version {version}", identity=who)
    if len(plaintext) < MSG_MIN_PLAINTEXT:
        raise _rejected(
            DropReason.PLAINTEXT_TOO_SHORT, f"plaintext of {len(plaintext)} bytes (< {MSG_MIN_PLAINTEXT})", identity=who
        )
    try:
        pt = parse_msg_plaintext(plaintext)
    except (MalformedMessage, InvalidObject) as exc:
        raise _rejected(DropReason.BAD_PLAINTEXT, f"msg plaintext: {exc}", identity=who) from None
    if pt.sender_stream == 0:
        raise _rejected(DropReason.BAD_SENDER_STREAM, "sender stream 0", identity=who)

    # step 4: the destination ripe names the address whose key opened it
    recipients = [i for i in owners if i.ripe == pt.destination_ripe]
    if not recipients:
        raise _rejected(
            DropReason.WRONG_DESTINATION,
            f"destination ripe {pt.destination_ripe.hex()} is not {who.address}'s",
            identity=who,
        )
    identity = recipients[0]

    # step 5
    signed = p.signed_data(pt)
    if not verify(pt.pub_signing_key, signed, pt.signature):  # type: ignore[arg-type]
        raise _rejected(DropReason.BAD_SIGNATURE, "msg signature does not verify", identity=identity)

    # step 6
    try:
        sender = _sender_record(pt)
    except (InvalidAddress, InvalidObject) as exc:
        raise _rejected(DropReason.BAD_SENDER_STREAM, f"sender address: {exc}", identity=identity) from None

    # step 7
    checked = check_difficulty and identity.checks_difficulty and not _is_trusted(trusted_senders, sender.address)
    if checked:
        pw = evaluate_pow(
            p.data, now, identity.nonce_trials_per_byte, identity.extra_bytes, min_ntpb=min_ntpb, min_extra=min_extra
        )
        if not pw.sufficient:
            raise _rejected(
                DropReason.INSUFFICIENT_POW,
                f"trial value {pw.trial_value} > target {pw.target} demanded by {identity.address}",
                identity=identity,
                sender=sender,
            )

    # step 9
    message = _decode(pt.encoding, pt.message, sender, identity)

    # step 12 (validity only; whether to publish is ReceivedMsg.sends_ack)
    ack_obj, problem = None, None
    if pt.ack_data:
        try:
            candidate = _ack_object_of(pt.ack_data)
        except (MalformedMessage, InvalidObject) as exc:
            problem = f"ack data is not a framed object: {exc}"
        else:
            verdict = check_relay(
                candidate,
                now,
                streams=frozenset({identity.stream}) if streams is None else streams,
                ntpb=min_ntpb,
                extra=min_extra,
            )
            if verdict.accept:
                ack_obj = candidate
            else:
                problem = f"ack object not valid for relay: {verdict.message}"

    return ReceivedMsg(
        identity=identity,
        inventory_hash=p.inventory_hash,
        plaintext=plaintext,
        parsed=pt,
        signed_data=signed,
        sender=sender,
        message=message,
        sighash=signature_hash(pt.signature),  # type: ignore[arg-type]
        ack_object=ack_obj,
        ack_problem=problem,
        difficulty_checked=checked,
    )


def is_ack_for(obj: bytes, watched: bytes | Container[bytes]) -> bool:
    """Whether ``obj`` acknowledges a sent msg (10.6): ``obj[16:]`` equals a watched ackdata.

    ``watched`` is one ackdata or a set of them. Never raises on short input.
    """
    if len(obj) <= 16:
        return False
    tail = bytes(obj[16:])
    if isinstance(watched, (bytes, bytearray)):
        return tail == bytes(watched)
    return tail in watched


# --------------------------------------------------------------------------------------------
# broadcast (10.5)


@dataclass(frozen=True)
class ReceivedBroadcast:
    """A broadcast that passed 10.5 steps 1-8 (the caller does the sighash duplicate check)."""

    subscription: Address
    inventory_hash: bytes
    plaintext: bytes
    parsed: BroadcastPlaintext
    signed_data: bytes
    sender: PubkeyRecord
    message: DecodedMessage
    sighash: bytes

    @property
    def from_address(self) -> str:
        """The sender's address, from the keys in the plaintext."""
        return self.sender.address

    @property
    def encoding(self) -> int:
        """The message encoding (13)."""
        return self.parsed.encoding

    def inbox_row(self, received: int) -> dict[str, Any]:
        """The reference's inbox row (toAddress ``[Broadcast subscribers]``)."""
        return _inbox_row(
            self.inventory_hash, BROADCAST_TO_ADDRESS, self.from_address, self.message, self.sighash, received
        )


def open_broadcast(
    obj: bytes | ParsedObject,
    subscriptions: Subscriptions | Iterable[str | Address | Identity | PubkeyRecord],
) -> ReceivedBroadcast:
    """Open a broadcast from an address we subscribe to and apply 10.5 steps 1-8."""
    p = _parse(obj, OBJECT_BROADCAST, "broadcast")
    h = p.header
    if h.version not in (4, 5):
        raise _not_for_us(DropReason.WRONG_KIND, f"broadcast version {h.version}")
    if not passes_type_sanity(h, p.length):
        raise _not_for_us(DropReason.BAD_LENGTH, f"broadcast of {p.length} bytes")
    subs = _subscriptions(subscriptions)
    payload = p.payload
    assert isinstance(payload, BroadcastPayload)

    # step 2
    if h.version == 4:
        try:
            blob = ecies.parse_blob(payload.encrypted)
        except DecryptionFailed as exc:
            raise _not_for_us(DropReason.NOT_SUBSCRIBED, f"undecryptable blob: {exc}") from None
        found = None
        for addr, decryptor in subs._legacy:
            pt_bytes = decryptor.try_decrypt(blob)
            if pt_bytes is not None:
                found = (addr, pt_bytes)
                break
        if found is None:
            raise _not_for_us(DropReason.NOT_SUBSCRIBED, "no subscribed v2/v3 address's broadcast key decrypts it")
        subscription, plaintext = found
    else:
        entry = subs._by_tag.get(payload.tag)  # type: ignore[arg-type]
        if entry is None:
            raise _not_for_us(DropReason.NOT_SUBSCRIBED, f"tag {payload.tag.hex()} is not a subscribed address's")  # type: ignore[union-attr]
        subscription, decryptor = entry
        try:
            plaintext = decryptor.decrypt(payload.encrypted)
        except DecryptionFailed as exc:
            raise _rejected(DropReason.DECRYPTION_FAILED, f"v5 broadcast tagged for {subscription}: {exc}") from None

    # step 3
    version = _peek_sender_version(plaintext)
    allowed = (2, 3) if h.version == 4 else (4,)
    if version is not None and version not in allowed:
        raise _rejected(DropReason.BAD_SENDER_VERSION, f"sender version {version} in a v{h.version} broadcast")
    try:
        pt = parse_broadcast_plaintext(plaintext)
    except (MalformedMessage, InvalidObject) as exc:
        raise _rejected(DropReason.BAD_PLAINTEXT, f"broadcast plaintext: {exc}") from None

    # step 4
    if pt.sender_stream != h.stream:
        raise _rejected(DropReason.BAD_SENDER_STREAM, f"sender stream {pt.sender_stream} in a stream {h.stream} object")

    # step 5
    ripe = pt.sender_ripe
    if h.version == 4:
        if ripe != subscription.ripe:
            raise _rejected(DropReason.WRONG_RIPE, f"keys do not belong to {subscription}")
    elif address_key_and_tag(pt.sender_address_version, pt.sender_stream, ripe)[1] != payload.tag:
        raise _rejected(DropReason.WRONG_TAG, "the tag is not the sender's")

    # step 6
    if pt.encoding == 0:
        raise _rejected(DropReason.IGNORED_ENCODING, "broadcast with encoding 0")

    # step 7
    signed = p.signed_data(pt)
    if not verify(pt.pub_signing_key, signed, pt.signature):  # type: ignore[arg-type]
        raise _rejected(DropReason.BAD_SIGNATURE, "broadcast signature does not verify")
    try:
        sender = _sender_record(pt)
    except (InvalidAddress, InvalidObject, CryptoError) as exc:
        raise _rejected(DropReason.BAD_SENDER_STREAM, f"sender address: {exc}") from None

    # step 8
    message = _decode(pt.encoding, pt.message, sender)
    return ReceivedBroadcast(
        subscription=subscription,
        inventory_hash=p.inventory_hash,
        plaintext=plaintext,
        parsed=pt,
        signed_data=signed,
        sender=sender,
        message=message,
        sighash=signature_hash(pt.signature),  # type: ignore[arg-type]
    )

