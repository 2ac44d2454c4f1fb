"""Own addresses and other people's public keys (spec 9, 10.1, 10.3, 8.4).

:class:`Identity` is an address this node owns: both private keys plus what the owner
publishes about itself (behaviour bitfield, demanded difficulty) and whether it is a chan.
Everything derived from it (public keys, ripe, address string, tag, address-derived and
broadcast keys, the ECIES decryptor) is computed once at construction.

:class:`PubkeyRecord` is the public counterpart: the "pubkey data" a node stores for an
address (``var_int(version) || var_int(stream) || bitfield || keys || difficulty``), which is
all a sender needs to encrypt a msg to that address.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bmnode.crypto.addresses import Address, encode_address, parse_address
from bmnode.crypto.derived import address_key_and_tag, broadcast_private_key
from bmnode.crypto.ecies import Decryptor
from bmnode.crypto.generation import GeneratedAddress, chan_address
from bmnode.crypto.keys import PrivateKey, PublicKey, as_private_key, public_key
from bmnode.crypto.wif import decode_wif, encode_wif
from bmnode.errors import InvalidAddress, InvalidObject, MalformedMessage
from bmnode.protocol.constants import NETWORK_MIN_EXTRA, NETWORK_MIN_NTPB
from bmnode.protocol.encoding import MAX_UINT64, Reader
from bmnode.protocol.hashing import ripe_of
from bmnode.protocol.objects import BEHAVIOR_DOES_ACK, PubkeyData

__all__ = ["ADDRESS_VERSIONS", "Identity", "PubkeyRecord", "chan_label"]

#: Address versions that can own keys and exchange messages (v1 is obsolete RSA).
ADDRESS_VERSIONS = (2, 3, 4)
_MAX_U32 = 0xFFFFFFFF


def chan_label(name: bytes | str) -> str:
    """The reference's label of a chan (9.6): ``[chan] <name>``, or ``[chan] <repr>`` when the
    name is not UTF-8 (Python 2's repr of the bytes, e.g. ``[chan] 'caf\\xe9'``)."""
    if isinstance(name, str):
        return f"[chan] {name}"
    try:
        return f"[chan] {bytes(name).decode('utf-8')}"
    except UnicodeDecodeError:
        return f"[chan] {repr(bytes(name))[1:]}"


def _check_version_stream(version: int, stream: int) -> None:
    if version not in ADDRESS_VERSIONS:
        raise InvalidAddress(f"address version {version} cannot be used (2, 3 or 4 only)", "versiontoohigh")
    if not isinstance(stream, int) or not 1 <= stream <= MAX_UINT64:
        raise InvalidAddress(f"stream number {stream!r} out of range", "otherproblem")


def _check_uint(value: int, maximum: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise InvalidObject(f"{what} out of range: {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# public side


@dataclass(frozen=True)
class PubkeyRecord:
    """An address's public keys, bitfield and difficulty: the "pubkey data" the reference stores.

    ``pubkey`` never carries a signature here (it has been checked, or the keys are our own).
    """

    version: int
    stream: int
    pubkey: PubkeyData
    ripe: bytes = field(init=False)
    address: str = field(init=False)

    def __post_init__(self) -> None:
        _check_version_stream(self.version, self.stream)
        pk = self.pubkey
        if (self.version >= 3) != (pk.nonce_trials_per_byte is not None):
            raise InvalidObject(f"a v{self.version} pubkey {'needs' if self.version >= 3 else 'has no'} difficulty fields")
        if pk.signature is not None or pk.trailing:
            pk = PubkeyData(pk.behavior_bitfield, pk.pub_signing_key, pk.pub_encryption_key,
                            pk.nonce_trials_per_byte, pk.extra_bytes)
            object.__setattr__(self, "pubkey", pk)
        ripe = pk.ripe
        object.__setattr__(self, "ripe", ripe)
        object.__setattr__(self, "address", encode_address(self.version, self.stream, ripe))

    @classmethod
    def from_data(cls, data: bytes) -> "PubkeyRecord":
        """Parse stored pubkey data (var_int version, var_int stream, bitfield, keys, difficulty)."""
        try:
            r = Reader(bytes(data))
            version = r.var_int("address version")
            stream = r.var_int("stream")
            if version not in ADDRESS_VERSIONS:
                raise InvalidObject(f"pubkey data of address version {version}")
            bitfield = r.u32("behavior bitfield")
            sign = r.bytes(64, "public signing key")
            enc = r.bytes(64, "public encryption key")
            ntpb = extra = None
            if version >= 3:
                ntpb = r.var_int("nonce_trials_per_byte")
                extra = r.var_int("extra_bytes")
            if not r.at_end():
                raise MalformedMessage(f"{r.remaining} bytes after the pubkey data", r.pos)
            return cls(version, stream, PubkeyData(bitfield, sign, enc, ntpb, extra))
        except InvalidAddress as exc:
            raise InvalidObject(f"pubkey data: {exc}") from None

    @property
    def data(self) -> bytes:
        """The bytes to store: var_int(version) || var_int(stream) || body up to extra_bytes."""
        return self.pubkey.storage_bytes(self.version, self.stream)

    def as_address(self) -> Address:
        """The (version, stream, ripe) triple."""
        return Address(self.version, self.stream, self.ripe)

    @property
    def pub_signing_key(self) -> bytes:
        """65-byte public signing key."""
        return b"\x04" + self.pubkey.pub_signing_key

    @property
    def pub_encryption_key(self) -> bytes:
        """65-byte public encryption key."""
        return b"\x04" + self.pubkey.pub_encryption_key

    @property
    def behavior_bitfield(self) -> int:
        """The owner's behaviour bitfield (10.1)."""
        return self.pubkey.behavior_bitfield

    @property
    def does_ack(self) -> bool:
        """The owner's node sends acknowledgements (bitfield bit 31)."""
        return bool(self.pubkey.behavior_bitfield & BEHAVIOR_DOES_ACK)

    def msg_difficulty(
        self, *, min_ntpb: int = NETWORK_MIN_NTPB, min_extra: int = NETWORK_MIN_EXTRA
    ) -> tuple[int, int]:
        """(ntpb, extra) a msg to this address must be made with (8.4): v2 gets the minimum."""
        if self.version < 3:
            return min_ntpb, min_extra
        return max(self.pubkey.nonce_trials_per_byte or 0, min_ntpb), max(self.pubkey.extra_bytes or 0, min_extra)

    def to_dict(self) -> dict[str, Any]:
        """The reference's pubkeys row: address, address_version, data (hex)."""
        return {"address": self.address, "address_version": self.version, "data": self.data.hex()}


# --------------------------------------------------------------------------------------------
# own addresses


class Identity:
    """An address this node owns, with both private keys (immutable; derived values cached).

    ``nonce_trials_per_byte``/``extra_bytes`` are the difficulty this address demands of
    senders (published in v3/v4 pubkeys, checked on receipt, 10.4 step 7); v2 addresses have
    none and always use the network minimum. ``chan`` marks a chan (9.6): it never publishes
    its pubkey, never answers getpubkey and never sends or asks for acks.
    """

    __slots__ = (
        "version",
        "stream",
        "signing_key",
        "encryption_key",
        "nonce_trials_per_byte",
        "extra_bytes",
        "behavior_bitfield",
        "chan",
        "label",
        "ripe",
        "address",
        "tag",
        "address_private_key",
        "address_public_key",
        "broadcast_private_key",
        "decryptor",
    )

    def __init__(
        self,
        version: int,
        stream: int,
        signing_key: PrivateKey | bytes,
        encryption_key: PrivateKey | bytes,
        *,
        nonce_trials_per_byte: int = NETWORK_MIN_NTPB,
        extra_bytes: int = NETWORK_MIN_EXTRA,
        behavior_bitfield: int = BEHAVIOR_DOES_ACK,
        chan: bool = False,
        label: str = "",
    ) -> None:
        _check_version_stream(version, stream)
        sk = as_private_key(signing_key)
        ek = as_private_key(encryption_key)
        _check_uint(nonce_trials_per_byte, MAX_UINT64, "nonce_trials_per_byte")
        _check_uint(extra_bytes, MAX_UINT64, "extra_bytes")
        _check_uint(behavior_bitfield, _MAX_U32, "behavior bitfield")
        ripe = ripe_of(sk.public_key.bytes65, ek.public_key.bytes65)
        if version == 4:
            addr_priv, tag = address_key_and_tag(version, stream, ripe)
            addr_pub: bytes | None = public_key(addr_priv)
        else:
            addr_priv, tag, addr_pub = None, None, None
        values = {
            "version": version,
            "stream": stream,
            "signing_key": sk,
            "encryption_key": ek,
            "nonce_trials_per_byte": nonce_trials_per_byte,
            "extra_bytes": extra_bytes,
            "behavior_bitfield": behavior_bitfield,
            "chan": bool(chan),
            "label": label,
            "ripe": ripe,
            "address": encode_address(version, stream, ripe),
            "tag": tag,
            "address_private_key": addr_priv,
            "address_public_key": addr_pub,
            "broadcast_private_key": broadcast_private_key(version, stream, ripe),
            "decryptor": Decryptor(ek),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    # Type annotations of the slots (documentation and type checkers).
    version: int
    stream: int
    signing_key: PrivateKey
    encryption_key: PrivateKey
    nonce_trials_per_byte: int
    extra_bytes: int
    behavior_bitfield: int
    chan: bool
    label: str
    #: 20-byte ripe with its leading zeros.
    ripe: bytes
    #: The BM- address string.
    address: str
    #: v4 only: D[32:64] (getpubkey, pubkey and v5 broadcast tag), else None.
    tag: bytes | None
    #: v4 only: D[0:32], the key that encrypts this address's pubkey and broadcasts, else None.
    address_private_key: bytes | None
    #: v4 only: the 65-byte public key of D[0:32], else None.
    address_public_key: bytes | None
    #: The key this address's broadcasts are encrypted to (v2/v3: SHA512(...)[0:32], v4: D[0:32]).
    broadcast_private_key: bytes
    #: ECIES decryptor of the encryption key, ready for trial decryption.
    decryptor: Decryptor

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Identity is immutable")

    # ---- construction

    @classmethod
    def from_keys(
        cls,
        signing_key: PrivateKey | bytes,
        encryption_key: PrivateKey | bytes,
        *,
        version: int = 4,
        stream: int = 1,
        address: str | None = None,
        **options: Any,
    ) -> "Identity":
        """An identity from its two private keys; with ``address``, version and stream come from
        it and the keys must produce it (else InvalidAddress, status ``"keymismatch"``)."""
        if address is not None:
            expected = parse_address(address)
            version, stream = expected.version, expected.stream
        ident = cls(version, stream, signing_key, encryption_key, **options)
        if address is not None and ident.ripe != expected.ripe:
            raise InvalidAddress(f"the private keys belong to {ident.address}, not {address}", "keymismatch")
        return ident

    @classmethod
    def from_wif(
        cls,
        signing_wif: str,
        encryption_wif: str,
        *,
        version: int = 4,
        stream: int = 1,
        address: str | None = None,
        **options: Any,
    ) -> "Identity":
        """An identity from the two WIF private keys of keys.dat (9.7); see :meth:`from_keys`."""
        return cls.from_keys(
            decode_wif(signing_wif), decode_wif(encryption_wif), version=version, stream=stream, address=address,
            **options,
        )

    @classmethod
    def from_generated(cls, generated: GeneratedAddress, **options: Any) -> "Identity":
        """An identity for a freshly generated address (random, deterministic or chan)."""
        ident = cls(generated.version, generated.stream, generated.priv_signing_key, generated.priv_encryption_key,
                    **options)
        if ident.ripe != generated.ripe or ident.address != generated.address:
            raise InvalidAddress(f"generated keys give {ident.address}, not {generated.address}", "keymismatch")
        return ident

    @classmethod
    def for_chan(cls, name: bytes | str, *, version: int = 4, stream: int = 1, **options: Any) -> "Identity":
        """The chan identity of ``name`` (9.6): deterministic keys, ``chan=True``, network difficulty."""
        options.setdefault("label", chan_label(name))
        return cls.from_generated(chan_address(name, version=version, stream=stream), chan=True, **options)

    # ---- derived values

    @property
    def pub_signing_key(self) -> bytes:
        """65-byte public signing key (04||X||Y)."""
        return self.signing_key.public_key.bytes65

    @property
    def pub_encryption_key(self) -> bytes:
        """65-byte public encryption key (04||X||Y)."""
        return self.encryption_key.public_key.bytes65

    @property
    def encryption_public_key(self) -> PublicKey:
        """The parsed public encryption key (what msgs to this address are encrypted to)."""
        return self.encryption_key.public_key

    @property
    def wif_signing(self) -> str:
        """The signing key in keys.dat form (9.7)."""
        return encode_wif(self.signing_key.secret)

    @property
    def wif_encryption(self) -> str:
        """The encryption key in keys.dat form (9.7)."""
        return encode_wif(self.encryption_key.secret)

    @property
    def does_ack(self) -> bool:
        """This address sends acknowledgements (bitfield bit 31; the reference's ``dontsendack`` clears it)."""
        return bool(self.behavior_bitfield & BEHAVIOR_DOES_ACK)

    @property
    def checks_difficulty(self) -> bool:
        """Received msgs must meet this address's own difficulty (10.4 step 7): v3+, not a chan."""
        return self.version >= 3 and not self.chan

    def as_address(self) -> Address:
        """The (version, stream, ripe) triple."""
        return Address(self.version, self.stream, self.ripe)

    def pubkey_data(self) -> PubkeyData:
        """Bitfield, 64-byte keys and (v3+) demanded difficulty, unsigned (10.3)."""
        if self.version >= 3:
            return PubkeyData(self.behavior_bitfield, self.pub_signing_key, self.pub_encryption_key,
                              self.nonce_trials_per_byte, self.extra_bytes)
        return PubkeyData(self.behavior_bitfield, self.pub_signing_key, self.pub_encryption_key)

    def pubkey_record(self) -> PubkeyRecord:
        """What others store about this address (and what sending to ourselves uses)."""
        return PubkeyRecord(self.version, self.stream, self.pubkey_data())

    # ---- identity and display

    def _key(self) -> tuple:
        return (
            self.version,
            self.stream,
            self.signing_key.secret,
            self.encryption_key.secret,
            self.nonce_trials_per_byte,
            self.extra_bytes,
            self.behavior_bitfield,
            self.chan,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash((self.address, self.chan))

    def __repr__(self) -> str:  # never shows a private key
        kind = " chan" if self.chan else ""
        return f"Identity({self.address}{kind})"
