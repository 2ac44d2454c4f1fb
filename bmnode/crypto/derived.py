"""Keys and tags derived from an address alone (spec 9.8), known to anyone who knows the address.

``D = dSHA512(var_int(version) || var_int(stream) || ripe20)``: for v4 addresses ``D[0:32]`` is
the private key that encrypts pubkeys and v5 broadcasts and ``D[32:64]`` is the tag. v2/v3
addresses have no tag; their (v4) broadcasts are encrypted with ``SHA512(same data)[0:32]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from bmnode.crypto.addresses import Address
from bmnode.crypto.keys import public_key
from bmnode.errors import InvalidAddress
from bmnode.protocol.encoding import encode_var_int
from bmnode.protocol.hashing import double_sha512, sha512


def hashed_data(version: int, stream: int, ripe: bytes) -> bytes:
    """var_int(version) || var_int(stream) || ripe20: the input of every derivation here."""
    if len(ripe) != 20:
        raise InvalidAddress(f"ripe must be 20 bytes (leading zeros restored), got {len(ripe)}", "ripetooshort")
    return encode_var_int(version) + encode_var_int(stream) + bytes(ripe)


@dataclass(frozen=True, slots=True)
class AddressKeys:
    """Private key (32), its 65-byte public key and the 32-byte tag of a v4 address."""

    private_key: bytes
    public_key: bytes
    tag: bytes


def address_key_and_tag(version: int, stream: int, ripe: bytes) -> tuple[bytes, bytes]:
    """(D[0:32], D[32:64]): the address private key and the tag."""
    d = double_sha512(hashed_data(version, stream, ripe))
    return d[:32], d[32:]


def tag(version: int, stream: int, ripe: bytes) -> bytes:
    """The 32-byte tag (v4 getpubkey, v4 pubkey, v5 broadcast)."""
    return address_key_and_tag(version, stream, ripe)[1]


def address_keys(address: Address) -> AddressKeys:
    """Private key, public key and tag derived from a (v4) address."""
    priv, t = address_key_and_tag(address.version, address.stream, address.ripe)
    return AddressKeys(priv, public_key(priv), t)


def broadcast_private_key(version: int, stream: int, ripe: bytes) -> bytes:
    """The key that encrypts broadcasts from this address: v2/v3 SHA512(...)[0:32], v4 D[0:32]."""
    if version >= 4:
        return address_key_and_tag(version, stream, ripe)[0]
    return sha512(hashed_data(version, stream, ripe))[:32]
