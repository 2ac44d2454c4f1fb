"""What the XML-RPC API needs from the node: the :class:`ApiBackend` protocol and its record types.

The API layer (``bmnode/api/commands.py``) validates and decodes every argument (addresses,
base64, hex, numbers) and formats every result the way the reference does; the backend only
stores and acts, with already-decoded values (bytes for subjects/bodies/ids, canonical
``BM-`` addresses). A backend reports a refused operation by raising an exception that has
an integer ``code`` (spec 14.5) and a ``message``, such as ``bmnode.mailbox.errors.ApiError``
or :class:`BackendError` here; the API replaces the message with the reference's text for
that code where one is defined.

Optional, network-side methods (``client_status``, ``list_connections``, ``shutdown``,
``disseminate_object``, ``status_bar``) may be missing from a backend: the command then answers
error 21 saying the node does not offer it. ``await_disseminated`` (optional too) lets
``disseminatePreEncryptedMsg`` answer a nonce-0 object's hash once its PoW is done.
"""

from __future__ import annotations

import logging
import hashlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

__all__ = [
    "ApiBackend",
    "BackendError",
    "ClientStatus",
    "Connection",
    "Identity",
    "AddressBookEntry",
    "Subscription",
    "InboxMessage",
    "SentMessage",
    "NetworkBackend",
    "MailboxBackend",
]

_log = logging.getLogger("bmnode.api")


class BackendError(Exception):
    """A refused backend operation carrying a reference error number (spec 14.5)."""

    def __init__(self, code: int, message: str = "") -> None:
        self.code = code
        self.message = message
        super().__init__(f"API Error {code:04d}: {message}")


@dataclass(frozen=True, slots=True)
class Identity:
    """One of our own addresses (keys.dat section in the reference)."""

    address: str
    label: str
    enabled: bool = True
    chan: bool = False


@dataclass(frozen=True, slots=True)
class AddressBookEntry:
    """An address-book row."""

    address: str
    label: str


@dataclass(frozen=True, slots=True)
class Subscription:
    """A broadcast subscription."""

    address: str
    label: str
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class InboxMessage:
    """An inbox row: ``subject``/``body`` are the decoded text (str, or raw bytes as stored)."""

    msgid: bytes
    to_address: str
    from_address: str
    subject: str | bytes
    body: str | bytes
    encoding: int
    received: int
    read: bool = False


@dataclass(frozen=True, slots=True)
class SentMessage:
    """A sent row; ``to_address`` is ``[Broadcast subscribers]`` for broadcasts."""

    msgid: bytes
    to_address: str
    from_address: str
    subject: str | bytes
    body: str | bytes
    encoding: int
    last_action_time: int
    status: str
    ackdata: bytes


@dataclass(frozen=True, slots=True)
class ClientStatus:
    """Counters behind ``clientStatus``; ``networkStatus`` is derived from the first two fields."""

    network_connections: int = 0
    received_incoming_connections: bool = False
    messages_processed: int = 0
    broadcasts_processed: int = 0
    pubkeys_processed: int = 0
    pending_download: int = 0
    software_version: str = ""


@dataclass(frozen=True, slots=True)
class Connection:
    """One peer connection for ``listConnections``."""

    host: str
    port: int
    inbound: bool
    fully_established: bool = False
    user_agent: str = ""


@runtime_checkable
class ApiBackend(Protocol):
    """The mailbox operations every API command relies on (all synchronous, all durable)."""

    # identities -------------------------------------------------------------------------
    def list_identities(self) -> Sequence[Identity]:
        """Our addresses, in creation order."""
        ...

    def create_random_address(
        self, label: str, *, eighteen_byte_ripe: bool, total_difficulty: float, small_message_difficulty: float
    ) -> str:
        """Create, store (and publish the pubkey of) a new random v4 address; returns it.

        The difficulty multipliers apply to the network minimum; 0 means the default."""
        ...

    def create_deterministic_addresses(
        self,
        passphrase: bytes,
        count: int,
        *,
        version: int,
        stream: int,
        eighteen_byte_ripe: bool,
        total_difficulty: float,
        small_message_difficulty: float,
    ) -> Sequence[str]:
        """Derive ``count`` addresses; store the new ones and return only those (spec 14.4)."""
        ...

    def create_chan(self, passphrase: bytes) -> str:
        """Create the chan of ``passphrase`` (label ``[chan] <name>``); code 24 if it is already present."""
        ...

    def join_chan(self, passphrase: bytes, address: str) -> None:
        """Join a chan; code 18 if the name does not give ``address``, 24 if present."""
        ...

    def leave_chan(self, address: str) -> None:
        """Remove a chan; code 13 if unknown, 25 if it is not a chan."""
        ...

    def delete_address(self, address: str) -> None:
        """Remove one of our addresses; code 13 if unknown."""
        ...

    def enable_address(self, address: str, enable: bool) -> None:
        """Enable or disable an identity; code 13 if unknown."""
        ...

    # address book and subscriptions ----------------------------------------------------
    def list_address_book(self, label: str | None = None) -> Sequence[AddressBookEntry]:
        """Address-book entries, optionally only those whose label is exactly ``label``."""
        ...

    def add_address_book_entry(self, address: str, label: str) -> None:
        """Add an entry; code 16 if the address is already there."""
        ...

    def delete_address_book_entry(self, address: str) -> None:
        """Delete an entry if it exists."""
        ...

    def list_subscriptions(self) -> Sequence[Subscription]:
        """All subscriptions."""
        ...

    def add_subscription(self, address: str, label: str) -> None:
        """Subscribe; code 16 if already subscribed."""
        ...

    def delete_subscription(self, address: str) -> None:
        """Unsubscribe if subscribed."""
        ...

    # inbox ------------------------------------------------------------------------------
    def inbox_messages(self, to_address: str | None = None) -> Sequence[InboxMessage]:
        """Inbox folder (not trash), ordered by received time; optionally for one receiver."""
        ...

    def inbox_message(self, msgid: bytes) -> InboxMessage | None:
        """One inbox row by msgid (whatever its folder), or None."""
        ...

    def set_read(self, msgid: bytes, read: bool) -> None:
        """Set the read flag of an inbox row (no-op if unknown)."""
        ...

    def trash_inbox_message(self, msgid: bytes) -> None:
        """Move an inbox row to the trash (no-op if unknown)."""
        ...

    def undelete_message(self, msgid: bytes) -> None:
        """Move a trashed inbox row back to the inbox (no-op if unknown)."""
        ...

    # sent -------------------------------------------------------------------------------
    def sent_messages(self, from_address: str | None = None) -> Sequence[SentMessage]:
        """Sent folder (not trash), ordered by last action time; optionally for one sender."""
        ...

    def sent_message(self, msgid: bytes) -> SentMessage | None:
        """One sent row by msgid, or None."""
        ...

    def sent_message_by_ackdata(self, ackdata: bytes) -> SentMessage | None:
        """One sent row by ackdata, or None."""
        ...

    def trash_sent_message(self, msgid: bytes) -> None:
        """Move a sent row to the trash (no-op if unknown)."""
        ...

    def trash_sent_message_by_ackdata(self, ackdata: bytes) -> None:
        """Move the sent row with this ackdata to the trash (no-op if unknown)."""
        ...

    def delete_and_vacuum(self) -> None:
        """Delete trashed messages for good and compact the database."""
        ...

    def send_message(
        self, to_address: str, from_address: str, subject: bytes, body: bytes, *, encoding: int, ttl: int
    ) -> bytes:
        """Queue a msg (status ``msgqueued``, stored before returning); returns its ackdata.

        Codes 13 (``from_address`` is not ours) and 14 (disabled)."""
        ...

    def send_broadcast(self, from_address: str, subject: bytes, body: bytes, *, encoding: int, ttl: int) -> bytes:
        """Queue a broadcast (status ``broadcastqueued``); returns its ackdata handle. Codes 13, 14."""
        ...

    def message_status(self, ackdata: bytes) -> str | None:
        """The sent status string (spec 10.7) for this ackdata, or None when unknown."""
        ...


@runtime_checkable
class NetworkBackend(Protocol):
    """Optional network-side operations; each may be absent (the command then answers 21)."""

    def client_status(self) -> ClientStatus:
        """Connection and processing counters."""
        ...

    def list_connections(self) -> Sequence[Connection]:
        """Current peer connections, inbound and outbound."""
        ...

    def shutdown(self) -> None:
        """Stop the node; called after the ``shutdown`` reply has been sent."""
        ...

    def disseminate_object(
        self, data: bytes, nonce_trials_per_byte: int, payload_length_extra_bytes: int
    ) -> bytes | None:
        """Store and announce a complete object; its inventory hash, or None when its nonce is 0
        and the object is published once the PoW (at the given difficulty) is done."""
        ...

    def status_bar(self, message: str) -> None:
        """Show a status message (a log line for a headless node)."""
        ...



# ------------------------------------------------------------------------------ the real mailbox


class MailboxBackend:
    """:class:`ApiBackend` (and :class:`NetworkBackend`) over :class:`bmnode.mailbox.Mailbox`.

    The mailbox returns API-shaped dicts with text subjects and hex ids; this adapter turns them
    into the record types above. The network side comes from optional hooks given by the node:
    ``connections()`` (current peers), ``pending_download()`` (objects announced but not yet
    received), ``shutdown()`` and ``software_version``; without its hook ``listConnections`` or
    ``shutdown`` answers 21 (``clientStatus`` still works, with zero connections).
    """

    def __init__(
        self,
        mailbox: Any,
        *,
        connections: Callable[[], Sequence[Connection]] | None = None,
        pending_download: Callable[[], int] | None = None,
        shutdown: Callable[[], None] | None = None,
        software_version: str = "",
        disseminate_wait: float = 0.0,
    ) -> None:
        self.mailbox = mailbox
        #: Seconds ``await_disseminated`` waits for the PoW of a nonce-0 object (0: not at all).
        self.disseminate_wait = disseminate_wait
        self._connections = connections
        self._pending_download = pending_download
        self._shutdown = shutdown
        self._software_version = software_version
        #: Like the reference's flag: once an inbound peer has been seen it stays True.
        self._had_inbound = False
        # Without their hook these commands are absent (the API then answers error 21).
        if connections is None:
            self.list_connections = None  # type: ignore[assignment]
        if shutdown is None:
            self.shutdown = None  # type: ignore[assignment]

    # identities -------------------------------------------------------------------------
    def list_identities(self) -> list[Identity]:
        return [
            Identity(r["address"], r["label"], bool(r["enabled"]), bool(r["chan"])) for r in self.mailbox.list_addresses()
        ]

    def create_random_address(
        self, label: str, *, eighteen_byte_ripe: bool, total_difficulty: float, small_message_difficulty: float
    ) -> str:
        return self.mailbox.create_random_address(label, eighteen_byte_ripe, total_difficulty, small_message_difficulty)

    def create_deterministic_addresses(
        self,
        passphrase: bytes,
        count: int,
        *,
        version: int,
        stream: int,
        eighteen_byte_ripe: bool,
        total_difficulty: float,
        small_message_difficulty: float,
    ) -> list[str]:
        return self.mailbox.create_deterministic_addresses(
            passphrase, count, version, stream, eighteen_byte_ripe, total_difficulty, small_message_difficulty
        )

    def create_chan(self, passphrase: bytes) -> str:
        return self.mailbox.create_chan(passphrase)

    def join_chan(self, passphrase: bytes, address: str) -> None:
        self.mailbox.join_chan(passphrase, address)

    def leave_chan(self, address: str) -> None:
        self.mailbox.leave_chan(address)

    def delete_address(self, address: str) -> None:
        self.mailbox.delete_address(address)

    def enable_address(self, address: str, enable: bool) -> None:
        self.mailbox.enable_address(address, enable)

    # address book and subscriptions ----------------------------------------------------
    def list_address_book(self, label: str | None = None) -> list[AddressBookEntry]:
        return [AddressBookEntry(r["address"], r["label"]) for r in self.mailbox.list_addressbook(label)]

    def add_address_book_entry(self, address: str, label: str) -> None:
        self.mailbox.add_addressbook(address, label)

    def delete_address_book_entry(self, address: str) -> None:
        self.mailbox.delete_addressbook(address)

    def list_subscriptions(self) -> list[Subscription]:
        return [Subscription(r["address"], r["label"], bool(r["enabled"])) for r in self.mailbox.list_subscriptions()]

    def add_subscription(self, address: str, label: str) -> None:
        self.mailbox.add_subscription(address, label)

    def delete_subscription(self, address: str) -> None:
        self.mailbox.delete_subscription(address)

    # inbox ------------------------------------------------------------------------------
    @staticmethod
    def _inbox(r: dict[str, Any]) -> InboxMessage:
        return InboxMessage(
            bytes.fromhex(r["msgid"]), r["toAddress"], r["fromAddress"], r["subject"], r["message"],
            int(r["encodingType"]), int(r["receivedTime"]), bool(r["read"]),
        )

    def inbox_messages(self, to_address: str | None = None) -> list[InboxMessage]:
        rows = self.mailbox.inbox_messages() if to_address is None else self.mailbox.inbox_messages_by_receiver(to_address)
        return [self._inbox(r) for r in rows]

    def inbox_message(self, msgid: bytes) -> InboxMessage | None:
        r = self.mailbox.inbox_message(msgid)
        return None if r is None else self._inbox(r)

    def set_read(self, msgid: bytes, read: bool) -> None:
        self.mailbox.inbox_message(msgid, read)

    def trash_inbox_message(self, msgid: bytes) -> None:
        self.mailbox.trash_inbox_message(msgid)

    def undelete_message(self, msgid: bytes) -> None:
        self.mailbox.undelete_message(msgid)

    # sent -------------------------------------------------------------------------------
    @staticmethod
    def _sent(r: dict[str, Any]) -> SentMessage:
        return SentMessage(
            bytes.fromhex(r["msgid"]), r["toAddress"], r["fromAddress"], r["subject"], r["message"],
            int(r["encodingType"]), int(r["lastActionTime"]), r["status"], bytes.fromhex(r["ackData"]),
        )

    def sent_messages(self, from_address: str | None = None) -> list[SentMessage]:
        rows = self.mailbox.sent_messages() if from_address is None else self.mailbox.sent_messages_by_sender(from_address)
        return [self._sent(r) for r in rows]

    def sent_message(self, msgid: bytes) -> SentMessage | None:
        r = self.mailbox.sent_message(msgid)
        return None if r is None else self._sent(r)

    def sent_message_by_ackdata(self, ackdata: bytes) -> SentMessage | None:
        r = self.mailbox.sent_message_by_ackdata(ackdata)
        return None if r is None else self._sent(r)

    def trash_sent_message(self, msgid: bytes) -> None:
        self.mailbox.trash_sent_message(msgid)

    def trash_sent_message_by_ackdata(self, ackdata: bytes) -> None:
        self.mailbox.trash_sent_message_by_ackdata(ackdata)

    def delete_and_vacuum(self) -> None:
        self.mailbox.delete_and_vacuum()

    def send_message(
        self, to_address: str, from_address: str, subject: bytes, body: bytes, *, encoding: int, ttl: int
    ) -> bytes:
        return bytes.fromhex(self.mailbox.send_message(from_address, to_address, subject, body, encoding, ttl))

    def send_broadcast(self, from_address: str, subject: bytes, body: bytes, *, encoding: int, ttl: int) -> bytes:
        return bytes.fromhex(self.mailbox.send_broadcast(from_address, subject, body, encoding, ttl))

    def message_status(self, ackdata: bytes) -> str | None:
        status = self.mailbox.get_status(ackdata)
        return None if status == "notfound" else status

    # network side -----------------------------------------------------------------------
    def client_status(self) -> ClientStatus:
        conns = list(self._connections()) if self._connections is not None else []
        if any(c.inbound for c in conns):
            self._had_inbound = True
        counters = self.mailbox.counters()
        return ClientStatus(
            network_connections=len(conns),
            received_incoming_connections=self._had_inbound,
            messages_processed=int(counters.get("numberOfMessagesProcessed", 0)),
            broadcasts_processed=int(counters.get("numberOfBroadcastsProcessed", 0)),
            pubkeys_processed=int(counters.get("numberOfPubkeysProcessed", 0)),
            pending_download=int(self._pending_download()) if self._pending_download is not None else 0,
            software_version=self._software_version,
        )

    def list_connections(self) -> list[Connection]:
        assert self._connections is not None
        return list(self._connections())

    def shutdown(self) -> None:
        assert self._shutdown is not None
        self._shutdown()

    def disseminate_object(
        self, data: bytes, nonce_trials_per_byte: int, payload_length_extra_bytes: int
    ) -> bytes | None:
        result = self.mailbox.disseminate_object(data, nonce_trials_per_byte, payload_length_extra_bytes)
        return None if result is None else bytes.fromhex(result)

    def await_disseminated(self, data: bytes, *, poll: float = 0.25) -> bytes | None:
        """The inventory hash of a nonce-0 object of ``disseminate_object`` once the node has done
        its PoW and published it (the reference answers only then), or None after
        ``disseminate_wait`` seconds (the object is still published when its PoW is done)."""
        lookup = getattr(self.mailbox, "disseminated_hash", None)
        if lookup is None or self.disseminate_wait <= 0:
            return None
        deadline = time.monotonic() + self.disseminate_wait
        digest = hashlib.sha512(bytes(data[8:])).digest()  # polled: the digest, not the object
        while True:
            found = lookup(digest)
            if found is not None:
                return bytes.fromhex(found)
            left = deadline - time.monotonic()
            if left <= 0:
                _log.info("disseminatePreEncryptedMsg: PoW not done within %.0f s; answering without a hash",
                          self.disseminate_wait)
                return None
            time.sleep(min(poll, left))

    def status_bar(self, message: str) -> None:
        _log.info("statusBar: %s", message)
