"""What every part of the :class:`~bmnode.mailbox.service.Mailbox` shares: its settings, the
lock every public call takes, and the in-memory caches rebuilt from the database when
identities or contacts change (the trial-decryption Keyring above all)."""

from __future__ import annotations

import functools
import logging
import random
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, TypeVar

from bmnode.crypto.addresses import Address
from bmnode.crypto.identity import Identity
from bmnode.crypto.objects import Keyring, Subscriptions
from bmnode.errors import BmnodeError
from bmnode.protocol.constants import NETWORK_MIN_EXTRA, NETWORK_MIN_NTPB, TTL_JITTER
from bmnode.protocol.objects import BEHAVIOR_DOES_ACK

if TYPE_CHECKING:  # pragma: no cover
    from bmnode.mailbox.jobs import Outgoing
    from bmnode.protocol.objects import ParsedObject
    from bmnode.store.mailbox import MailboxStore

__all__ = ["Counters", "MailboxBase", "MailboxConfig", "locked"]

log = logging.getLogger("bmnode.mailbox")

T = TypeVar("T")


@dataclass(frozen=True)
class MailboxConfig:
    """Mailbox settings.

    ``min_ntpb``/``min_extra``: the network minimum difficulty (1000/1000 on the real network,
    lowered on a test network); new addresses demand this much (times the API multipliers).
    ``max_acceptable_*``: above this a recipient's demand makes the send ``toodifficult``
    (0: no limit). ``stop_resending_after``: seconds after queueing when resends stop
    (0: never). ``ttl_jitter``: the random +-seconds added to every TTL (7.3).
    ``onion_peer``: (onion name, port) of this node's Tor onion service, announced with an
    onionpeer object (12.5) checked every ``onion_check_interval`` seconds (~2 h); None: none.
    """

    min_ntpb: int = NETWORK_MIN_NTPB
    min_extra: int = NETWORK_MIN_EXTRA
    streams: frozenset[int] = frozenset({1})
    max_acceptable_ntpb: int = 0
    max_acceptable_extra: int = 0
    stop_resending_after: int = 0
    ttl_jitter: int = TTL_JITTER
    send_acks: bool = True
    exhaustive_trial_decryption: bool = True
    housekeeping_interval: int = 3600
    onion_peer: tuple[str, int] | None = None
    onion_check_interval: int = 7200

    def __post_init__(self) -> None:
        for name in ("min_ntpb", "min_extra"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer")
        object.__setattr__(self, "streams", frozenset(self.streams))
        if self.onion_peer is not None:
            host, port = self.onion_peer
            object.__setattr__(self, "onion_peer", (str(host).lower(), int(port)))


@dataclass
class Counters:
    """Objects processed since start (the API's clientStatus reports some of them)."""

    messages: int = 0
    broadcasts: int = 0
    pubkeys: int = 0
    getpubkeys: int = 0
    acks: int = 0
    inbox_stored: int = 0


def locked(fn: Callable[..., T]) -> Callable[..., T]:
    """Run the method holding the mailbox's lock (the API may call from several threads)."""

    @functools.wraps(fn)
    def wrapper(self: "MailboxBase", *args: Any, **kwargs: Any) -> T:
        with self._lock:
            return fn(self, *args, **kwargs)

    return wrapper


class MailboxBase:
    """Shared state of the mailbox parts; :class:`~bmnode.mailbox.service.Mailbox` fills it in."""

    config: MailboxConfig
    store: "MailboxStore"
    _lock: threading.RLock
    _rng: random.Random
    _inventory_lookup: Callable[[bytes], Iterable[bytes]] | None
    _counters: Counters
    _ids: dict[str, Identity]
    _enabled: set[str]
    _keyring: Keyring
    _subs: Subscriptions
    _trusted: frozenset[str]
    _blocked: Callable[[str], bool]
    _awaited_tags: dict[bytes, Address]

    def _reload_identities(self) -> None:
        ids: dict[str, Identity] = {}
        enabled: set[str] = set()
        for row in self.store.identities():
            try:
                ident = Identity(
                    row.version, row.stream, row.signing_key, row.encryption_key,
                    nonce_trials_per_byte=row.ntpb, extra_bytes=row.extra, behavior_bitfield=row.behavior,
                    chan=row.chan, label=row.label,
                )
            except BmnodeError as exc:  # a damaged row must not stop the node
                log.error("identity %s in %s is unusable: %s", row.address, self.store.path, exc)
                continue
            ids[ident.address] = ident
            if row.enabled:
                enabled.add(ident.address)
        self._ids = ids
        self._enabled = enabled
        # The hot path: built once here, reused for every msg until identities change.
        self._keyring = Keyring(ids[a] for a in ids if a in enabled)
        self._reload_trusted()

    def _reload_contacts(self) -> None:
        subs = self.store.subscriptions()
        self._subs = Subscriptions(a for a, _, enabled in subs if enabled)
        self._reload_trusted()
        mode = self.store.get_setting("blackwhitelist", "black")
        black = {a for a, _, e in self.store.access_list("black") if e}
        white = {a for a, _, e in self.store.access_list("white") if e}
        if mode == "white":
            self._blocked = lambda a: a not in white
        else:
            self._blocked = lambda a: a in black

    def _reload_trusted(self) -> None:
        # 10.4 step 7 / 8.4: the address book and the enabled subscriptions and whitelist entries,
        # as the reference's isAddressInMyAddressBookSubscriptionsListOrWhitelist. Our own
        # addresses are not in it: a msg to one of them or to a chan carries the sender's own
        # demand (chan members reply with it), and msgs to ourselves skip the check anyway.
        trusted = {a for a, _ in self.store.addressbook()}
        trusted |= {a for a, _, e in self.store.subscriptions() if e}
        trusted |= {a for a, _, e in self.store.access_list("white") if e}
        self._trusted = frozenset(trusted)

    def _reload_awaited(self) -> None:
        self._awaited_tags = {
            row.tag: Address(row.version, row.stream, row.ripe)
            for row in self.store.awaiting_all()
            if row.tag is not None
        }

    def _jitter(self) -> int:
        j = self.config.ttl_jitter
        return self._rng.randrange(-j, j) if j > 0 else 0

    def _is_trusted(self, address: str) -> bool:
        return address in self._trusted

    def _behavior(self) -> int:
        """Behaviour bitfield of new addresses (10.1): does_ack unless acks are switched off."""
        return BEHAVIOR_DOES_ACK if self.config.send_acks else 0

    def _lookup(self, tag: bytes) -> list[bytes]:
        """Objects with this tag in the node's inventory (empty without an inventory lookup)."""
        if self._inventory_lookup is None:
            return []
        try:
            return list(self._inventory_lookup(tag))
        except BmnodeError as exc:
            log.warning("inventory lookup for tag %s failed: %s", tag.hex(), exc)
            return []

    # Implemented by the pipeline and receive parts (service.py).
    def _queue_pubkey(self, ident: Identity, now: int) -> None:
        raise NotImplementedError

    def _receive_broadcast(self, p: "ParsedObject", now: int) -> None:
        raise NotImplementedError

    def _publish(self, obj: bytes, kind: str, now: int) -> "Outgoing":
        raise NotImplementedError
