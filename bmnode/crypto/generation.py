"""Address generation (spec 9.5, 9.6): random, deterministic (passphrase) and chan addresses.

An address is accepted when its ripe starts with ``leading_zero_bytes`` zero bytes (1 normally,
2 for the "shorter address" option). Deterministic keys are
``SHA512(passphrase || var_int(nonce))[0:32]`` with signing nonces 0, 2, 4, ... and encryption
nonces 1, 3, 5, ...; generating several addresses continues the same nonce sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

from bmnode.crypto import secp256k1 as _ec
from bmnode.crypto.addresses import Address, encode_address, parse_address
from bmnode.crypto.keys import random_private_key
from bmnode.errors import CryptoError, InvalidAddress
from bmnode.protocol.encoding import encode_var_int
from bmnode.protocol.hashing import ripe_of, sha512


@dataclass(frozen=True, slots=True)
class GeneratedAddress:
    """A new address with both key pairs; nonces are None for random addresses."""

    address: str
    version: int
    stream: int
    ripe: bytes
    priv_signing_key: bytes = field(repr=False)
    priv_encryption_key: bytes = field(repr=False)
    pub_signing_key: bytes  # 65 bytes
    pub_encryption_key: bytes  # 65 bytes
    signing_nonce: int | None = None
    encryption_nonce: int | None = None
    attempts: int = 1

    def as_address(self) -> Address:
        """The (version, stream, ripe) triple of this address."""
        return Address(self.version, self.stream, self.ripe)


def _check_params(version: int, stream: int, leading_zero_bytes: int) -> None:
    if version not in (3, 4):
        raise InvalidAddress(f"new addresses must be version 3 or 4, not {version}", "versiontoohigh")
    if stream < 1:
        raise InvalidAddress(f"stream number {stream} out of range", "otherproblem")
    if not 0 <= leading_zero_bytes <= 20:
        raise ValueError("leading_zero_bytes must be between 0 and 20")


def _as_passphrase(passphrase: bytes | str) -> bytes:
    return passphrase.encode("utf-8") if isinstance(passphrase, str) else bytes(passphrase)


def _key(passphrase: bytes, nonce: int) -> bytes:
    return sha512(passphrase + encode_var_int(nonce))[:32]


def deterministic_private_key(passphrase: bytes | str, nonce: int) -> bytes:
    """SHA512(passphrase || var_int(nonce))[0:32]."""
    return _key(_as_passphrase(passphrase), nonce)


def iter_deterministic(
    passphrase: bytes | str,
    *,
    version: int = 4,
    stream: int = 1,
    leading_zero_bytes: int = 1,
    cancel: Callable[[], bool] | None = None,
) -> Iterator[GeneratedAddress]:
    """Endless sequence of the deterministic addresses of ``passphrase``, nonces continuing.

    ``cancel`` (checked every 1000 attempts) stops the search by raising CryptoError.
    """
    _check_params(version, stream, leading_zero_bytes)
    secret = _as_passphrase(passphrase)
    prefix = b"\x00" * leading_zero_bytes
    signing_nonce, encryption_nonce = 0, 1
    while True:
        attempts = 0
        while True:
            attempts += 1
            if cancel is not None and attempts % 1000 == 0 and cancel():
                raise CryptoError("deterministic address generation cancelled")
            priv_s = _key(secret, signing_nonce)
            priv_e = _key(secret, encryption_nonce)
            used_s, used_e = signing_nonce, encryption_nonce
            signing_nonce += 2
            encryption_nonce += 2
            pub_s = _ec.point_from_secret(priv_s).raw
            pub_e = _ec.point_from_secret(priv_e).raw
            ripe = ripe_of(pub_s, pub_e)
            if ripe.startswith(prefix):
                break
        yield GeneratedAddress(
            encode_address(version, stream, ripe),
            version,
            stream,
            ripe,
            priv_s,
            priv_e,
            pub_s,
            pub_e,
            used_s,
            used_e,
            attempts,
        )


def deterministic_addresses(
    passphrase: bytes | str,
    count: int = 1,
    *,
    version: int = 4,
    stream: int = 1,
    leading_zero_bytes: int = 1,
    cancel: Callable[[], bool] | None = None,
) -> list[GeneratedAddress]:
    """The first ``count`` deterministic addresses of ``passphrase`` (API createDeterministicAddresses)."""
    if count < 1:
        raise ValueError("count must be at least 1")
    gen = iter_deterministic(
        passphrase, version=version, stream=stream, leading_zero_bytes=leading_zero_bytes, cancel=cancel
    )
    return [next(gen) for _ in range(count)]


def random_address(
    *,
    version: int = 4,
    stream: int = 1,
    leading_zero_bytes: int = 1,
    cancel: Callable[[], bool] | None = None,
) -> GeneratedAddress:
    """A new random address: one signing key, encryption keys drawn until the ripe qualifies."""
    _check_params(version, stream, leading_zero_bytes)
    prefix = b"\x00" * leading_zero_bytes
    priv_s = random_private_key()
    pub_s = _ec.point_from_secret(priv_s).raw
    attempts = 0
    while True:
        attempts += 1
        if cancel is not None and attempts % 1000 == 0 and cancel():
            raise CryptoError("random address generation cancelled")
        priv_e = random_private_key()
        pub_e = _ec.point_from_secret(priv_e).raw
        ripe = ripe_of(pub_s, pub_e)
        if ripe.startswith(prefix):
            return GeneratedAddress(
                encode_address(version, stream, ripe), version, stream, ripe, priv_s, priv_e, pub_s, pub_e,
                attempts=attempts,
            )


def chan_address(name: bytes | str, *, version: int = 4, stream: int = 1) -> GeneratedAddress:
    """The chan address for ``name``: its first deterministic address (k = 1)."""
    return next(iter_deterministic(name, version=version, stream=stream, leading_zero_bytes=1))


def join_chan(name: bytes | str, address: str) -> GeneratedAddress:
    """Re-derive the chan from ``name`` with the version/stream of ``address``; must match it.

    InvalidAddress if ``address`` does not decode (its status) or was not derived from ``name``
    (status ``"chanmismatch"``).
    """
    supplied = parse_address(address)
    derived = chan_address(name, version=supplied.version, stream=supplied.stream)
    if derived.ripe != supplied.ripe:
        raise InvalidAddress(f"chan name does not match address {derived.address}", "chanmismatch")
    return derived


def chan_matches(name: bytes | str, address: str) -> bool:
    """True if ``address`` is the chan address derived from ``name``."""
    try:
        join_chan(name, address)
    except InvalidAddress:
        return False
    return True
