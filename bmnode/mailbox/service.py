"""The mailbox: identities, contacts, receiving and the send pipeline, with no sockets or processes.

:class:`Mailbox` owns ``mailbox.sqlite`` (:mod:`bmnode.store.mailbox`) and applies the rules of
spec sections 7.3, 8.4, 9.5, 9.6, 10 and 13 on top of the builders and openers of
:mod:`bmnode.crypto.objects`. The process layer feeds it objects and the clock and carries out
what it asks for:

* :meth:`Mailbox.receive_object` takes every valid object from the network: matches acks of
  our sent messages (10.6), answers getpubkey for our addresses (10.2), stores pubkeys (10.3)
  and unblocks the sends waiting for them, trial-decrypts msgs with a :class:`Keyring` of the
  enabled identities and chans (10.4), opens broadcasts of subscribed addresses (10.5), stores
  each message once, and returns the embedded ack objects to publish.
* :meth:`Mailbox.tick` advances every pending send from its stored state and returns
  :class:`PowJob` s; :meth:`Mailbox.pow_done` takes a nonce and returns the finished objects
  (:class:`Outgoing`) and follow-up jobs. Statuses are the reference's (10.7).
* The operations the XML-RPC API needs (14.4) return plain Python values and raise
  :class:`ApiError` with the reference's numbers for bad arguments.

Every state change is committed to SQLite before the call returns, and objects to publish
stay in the outbox until :meth:`Mailbox.confirm_published`, so a crash at any point loses
nothing and a new Mailbox on the same file resumes every pending send.
Thread-safe: one lock serialises every public call.
"""


from __future__ import annotations

import os
import random
import threading
from pathlib import Path
from typing import Callable, Iterable

from bmnode.crypto.addresses import Address, parse_address
from bmnode.crypto.derived import address_key_and_tag
from bmnode.crypto.identity import Identity, PubkeyRecord
from bmnode.crypto.objects import (
    BROADCAST_TO_ADDRESS,
    Keyring,
    ObjectDropped,
    ReceivedBroadcast,
    ReceivedMsg,
    Subscriptions,
    ack_message,
    ack_ttl,
    build_ack,
    build_broadcast,
    build_getpubkey,
    build_msg,
    build_pubkey,
    object_pow_target,
    open_broadcast,
    open_getpubkey,
    open_msg,
    open_pubkey,
)
from bmnode.errors import CryptoError, InvalidAddress, InvalidObject, MalformedMessage, PowError
from bmnode.mailbox.accounts import AccountsMixin
from bmnode.mailbox.args import clamp_ttl, clock, hex_arg, int_arg, text_arg
from bmnode.mailbox.base import MailboxConfig, Counters, locked, log
from bmnode.mailbox.errors import FROM_ADDRESS_NOT_FOUND, MESSAGES, ApiError, check_address
from bmnode.mailbox.folders import FoldersMixin
from bmnode.mailbox.jobs import Outgoing, PowJob
from bmnode.mailbox.onion import OnionPeerMixin
from bmnode.mailbox.status import (
    ACKRECEIVED,
    AWAITINGPUBKEY,
    BADKEY,
    BROADCASTQUEUED,
    BROADCASTSENT,
    DOINGBROADCASTPOW,
    DOINGMSGPOW,
    DOINGPUBKEYPOW,
    FORCEPOW,
    MSGQUEUED,
    MSGSENT,
    MSGSENTNOACKEXPECTED,
    NOTFOUND,
    SENT_STATUSES,
    TOODIFFICULT,
    WAITING_FOR_PUBKEY,
)
from bmnode.pow.target import check_pow
from bmnode.protocol.constants import (
    DAY,
    GETPUBKEY_TTL,
    MAX_MESSAGE_TEXT,
    MSG_TTL_DEFAULT,
    NETWORK_MIN_EXTRA,
    NETWORK_MIN_NTPB,
    OBJECT_BROADCAST,
    OBJECT_GETPUBKEY,
    OBJECT_MSG,
    OBJECT_PUBKEY,
    PUBKEY_TTL,
    RESEND_FACTOR,
    RESEND_TTL_CAP,
)
from bmnode.protocol.hashing import inventory_hash
from bmnode.protocol.objects import ParsedObject, attach_nonce, encode_ackdata, parse_header, parse_object
from bmnode.protocol.validation import check_relay, passes_type_sanity
from bmnode.store.mailbox import MAILBOX_FILE, AwaitingRow, InboxRow, MailboxStore, SentRow

__all__ = ["Mailbox", "MailboxConfig", "SENT_STATUSES"]

#: The reference's 28-day rule for answering getpubkey (10.2 step 7) and keeping unused pubkeys.
PUBKEY_RESEND_INTERVAL = 28 * DAY
UNUSED_PUBKEY_LIFETIME = 28 * DAY
#: A PoW job whose object would live less than this when issued is rebuilt instead.
MIN_JOB_LIFETIME = 600
#: Finished objects kept in the outbox at most this long after their expiry.
OUTBOX_GRACE = 3600


def _expires_of(obj_or_body: bytes, *, body: bool) -> int:
    """expiresTime of an object body (no nonce) or of a complete object."""
    start = 0 if body else 8
    return int.from_bytes(obj_or_body[start : start + 8], "big")


class Mailbox(AccountsMixin, FoldersMixin, OnionPeerMixin):
    """Identities, contacts, inbox/sent and the send pipeline of one node (see module doc).

    ``data_dir``: the directory holding ``mailbox.sqlite`` (or the file path itself).
    ``rng``: the source of the TTL jitter (tests pass a seeded one).
    ``inventory_lookup``: tag -> objects with that tag in the node's inventory; before asking
    the network for a v4 pubkey the mailbox tries the pubkey objects it already has (10.3.3).
    """

    def __init__(
        self,
        data_dir: str | Path,
        config: MailboxConfig | None = None,
        *,
        rng: random.Random | None = None,
        inventory_lookup: Callable[[bytes], Iterable[bytes]] | None = None,
    ) -> None:
        self.config = config or MailboxConfig()
        path = Path(data_dir)
        if path.is_dir() or not path.suffix:
            path.mkdir(parents=True, exist_ok=True)
            path = path / MAILBOX_FILE
        self.store = MailboxStore(path)
        self._lock = threading.RLock()
        self._rng = rng or random.SystemRandom()
        self._inventory_lookup = inventory_lookup
        self._issued: set[int] = set()
        self._counters = Counters()
        self._last_housekeeping = 0
        self._ids: dict[str, Identity] = {}
        self._enabled: set[str] = set()
        self._keyring = Keyring(())
        self._subs = Subscriptions(())
        self._trusted: frozenset[str] = frozenset()
        self._blocked: Callable[[str], bool] = lambda a: False
        self._watched: set[bytes] = set()
        self._awaited_tags: dict[bytes, Address] = {}
        self._reload_identities()
        self._reload_contacts()
        self._watched = set(self.store.watched_ackdata())
        self._reload_awaited()

    # ------------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self.store.close()

    def __enter__(self) -> "Mailbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------ receiving

    @locked
    def receive_object(self, obj: bytes, now: int | None = None, *, validated: bool = False) -> list[Outgoing]:
        """Process one object from the network; returns acks to publish. Never raises on bad
        input: invalid, foreign or malformed objects are simply ignored.

        ``validated``: the object already passed relay validation (7.2) in the net process,
        so it is not checked again here (the type-specific sanity check still applies).
        """
        now = clock(now)
        try:
            data = bytes(obj)
        except TypeError:
            return []
        cfg = self.config
        if not validated:
            verdict = check_relay(data, now, streams=cfg.streams, ntpb=cfg.min_ntpb, extra=cfg.min_extra)
            if not verdict.accept:
                return []
        # 10.6: before any type processing, every object is compared with the watched ackdata.
        if self._watched and len(data) > 16:
            tail = data[16:]
            if tail in self._watched:
                self._ack_received(tail, now)
        try:
            parsed = parse_object(data)
        except (MalformedMessage, InvalidObject):
            return []
        if not passes_type_sanity(parsed.header, parsed.length):
            return []
        t = parsed.header.object_type
        if t == OBJECT_GETPUBKEY:
            self._receive_getpubkey(parsed, now)
        elif t == OBJECT_PUBKEY:
            self._receive_pubkey(parsed, now)
        elif t == OBJECT_MSG:
            return self._receive_msg(parsed, now)
        elif t == OBJECT_BROADCAST:
            self._receive_broadcast(parsed, now)
        return []

    def _ack_received(self, ackdata: bytes, now: int) -> None:
        if self.store.acknowledge(ackdata, now):
            self._counters.acks += 1
            log.info("ack received for %s", ackdata.hex())
        self._watched.discard(ackdata)

    def _receive_getpubkey(self, p: ParsedObject, now: int) -> None:
        self._counters.getpubkeys += 1
        try:
            ident = open_getpubkey(p, self._keyring)
        except ObjectDropped:
            return
        row = self.store.identity(ident.address)
        if row is None or not row.enabled:
            return
        if now - row.last_pubkey_send < PUBKEY_RESEND_INTERVAL:  # 10.2 step 7
            return
        if self.store.jobs_for("pubkey", ident.address):
            return
        self._queue_pubkey(ident, now)

    def _receive_pubkey(self, p: ParsedObject, now: int) -> None:
        self._counters.pubkeys += 1
        wanted = None
        if p.header.version == 4:
            tag = p.tag
            wanted = self._awaited_tags.get(tag) if tag is not None else None
            if wanted is None:
                return  # 10.3.3: only a node waiting for this tag decrypts it
        try:
            opened = open_pubkey(p, wanted)
        except ObjectDropped:
            return
        with self.store.tx():
            self._store_pubkey(opened.record, now, used=wanted is not None)

    def _store_pubkey(self, record: PubkeyRecord, now: int, *, used: bool = True) -> None:
        """Store a sender's or awaited pubkey (kept for good, as the reference's usedpersonally);
        ``used=False`` for a v2/v3 pubkey object nobody asked for (expires after 28 days)."""
        self.store.put_pubkey(record.address, record.version, record.data, now, used=used)
        self._pubkey_arrived(record.address, now)

    def _pubkey_arrived(self, address: str, now: int) -> None:
        """Unblock the sends waiting for ``address``'s pubkey (they go back to msgqueued)."""
        waiting = self.store.sent_to(address, WAITING_FOR_PUBKEY)
        aw = self.store.awaiting(address)
        if aw is None and not waiting:
            return
        with self.store.tx():
            self.store.delete_awaiting(address)
            for job in self.store.jobs_for("getpubkey", address):
                self.store.delete_job(job.id)
            for row in waiting:
                self.store.update_sent(row.id, status=MSGQUEUED, next_action=0, last_action=now)
        if aw is not None and aw.tag is not None:
            self._awaited_tags.pop(aw.tag, None)

    def _receive_msg(self, p: ParsedObject, now: int) -> list[Outgoing]:
        self._counters.messages += 1
        if not len(self._keyring):
            return []
        cfg = self.config
        try:
            received = open_msg(
                p,
                self._keyring,
                now=now,
                trusted_senders=self._is_trusted,
                min_ntpb=cfg.min_ntpb,
                min_extra=cfg.min_extra,
                streams=cfg.streams,
                exhaustive=cfg.exhaustive_trial_decryption,
            )
        except ObjectDropped as exc:
            if exc.sender is not None:  # the reference stored the sender's pubkey before failing
                with self.store.tx():
                    self._store_pubkey(exc.sender, now)
            return []
        return self.accept_msg(received, now)

    @locked
    def accept_msg(self, received: ReceivedMsg, now: int | None = None, *, local: bool = False) -> list[Outgoing]:
        """The database half of receiving a msg (10.4 steps 6, 8, 10-12) for a msg opened by
        :func:`open_msg` (e.g. in a trial-decryption worker): store the sender's pubkey, apply
        the black/white list, store the message once, return the ack to publish.

        ``local``: a msg this node sent to one of its own addresses or a chan; like the
        reference's sendMsg, it goes into the inbox whatever the black/white list says."""
        now = clock(now)
        r = received
        with self.store.tx():
            if not local:  # our own keys need no pubkeys row
                self._store_pubkey(r.sender, now)
            if not local and self._blocked(r.from_address):
                log.info("msg from blocked address %s dropped", r.from_address)
                return []
            if not r.stores_in_inbox:
                return []
            row = InboxRow(
                msgid=r.inventory_hash, to_address=r.to_address, from_address=r.from_address,
                subject=r.message.subject, body=r.message.body, encoding=r.encoding, received=now,
                read=False, folder="inbox", sighash=r.sighash,
            )
            if self.store.has_sighash(r.sighash) or not self.store.add_inbox(row):
                return []  # 10.4 step 10: a duplicate gets no second row and no second ack
            self._counters.inbox_stored += 1
            if r.sends_ack and self.config.send_acks and r.ack_object is not None:
                return [self._publish(r.ack_object, "ack", now)]
        return []

    def _receive_broadcast(self, p: ParsedObject, now: int) -> None:
        self._counters.broadcasts += 1
        if not len(self._subs):
            return
        try:
            received = open_broadcast(p, self._subs)
        except ObjectDropped as exc:
            if exc.sender is not None:
                with self.store.tx():
                    self._store_pubkey(exc.sender, now)
            return
        self.accept_broadcast(received, now)

    @locked
    def accept_broadcast(self, received: ReceivedBroadcast, now: int | None = None) -> bool:
        """Store an opened broadcast (10.5 steps 7-9) once; True if a new inbox row was made."""
        now = clock(now)
        r = received
        with self.store.tx():
            self._store_pubkey(r.sender, now)
            if self.store.has_sighash(r.sighash):
                return False
            stored = self.store.add_inbox(
                InboxRow(
                    msgid=r.inventory_hash, to_address=BROADCAST_TO_ADDRESS, from_address=r.from_address,
                    subject=r.message.subject, body=r.message.body, encoding=r.encoding, received=now,
                    read=False, folder="inbox", sighash=r.sighash,
                )
            )
        if stored:
            self._counters.inbox_stored += 1
        return stored

    def _publish(self, obj: bytes, kind: str, now: int) -> Outgoing:
        """Record a finished object in the outbox (inside the caller's transaction)."""
        out = Outgoing(bytes(obj), kind)
        self.store.add_outbox(out.hash, kind, out.object, out.expires_time, now)
        return out

    # ------------------------------------------------------------------------ sending: API side

    @staticmethod
    def _check_content(subject: str | bytes, body: str | bytes, encoding: int, ttl: int) -> tuple[str, str, int, int]:
        if isinstance(encoding, bool) or encoding not in (1, 2, 3):
            raise ApiError(6)
        subject_s, body_s = text_arg(subject, "subject"), text_arg(body, "message")
        if len(subject_s.encode("utf-8")) + len(body_s.encode("utf-8")) > MAX_MESSAGE_TEXT:
            raise ApiError(27)
        return subject_s, body_s, encoding, clamp_ttl(ttl)

    def _check_sender(self, from_address: str) -> tuple[str, Address]:
        frm, addr = check_address(from_address, streams=self.config.streams)
        row = self.store.identity(frm)
        if row is None:
            raise ApiError(13, FROM_ADDRESS_NOT_FOUND)
        if not row.enabled:
            raise ApiError(14)
        return frm, addr

    @locked
    def send_message(
        self,
        from_address: str,
        to_address: str,
        subject: str | bytes,
        body: str | bytes,
        encoding: int = 2,
        ttl: int = MSG_TTL_DEFAULT,
        now: int | None = None,
    ) -> str:
        """Queue a msg (status ``msgqueued``); returns its ackdata in hex (the API's handle).

        Encodings 1, 2, 3 (error 6 otherwise); subject + body at most 2^18 - 500 bytes (27);
        TTL clamped to 1 hour ... 28 days; both addresses checked (7-12); ``from_address`` must
        be an own enabled address (13, 14).
        """
        now = clock(now)
        subject_s, body_s, encoding, ttl = self._check_content(subject, body, encoding, ttl)
        to, to_addr = check_address(to_address, streams=self.config.streams)
        frm, _ = self._check_sender(from_address)
        ackdata = encode_ackdata(to_addr.stream, os.urandom(32))
        self.store.add_sent(
            msgid=os.urandom(16), ackdata=ackdata, kind="msg", to_address=to, from_address=frm,
            subject=subject_s, body=body_s, encoding=encoding, ttl=ttl, retry=0, status=MSGQUEUED,
            last_action=now, next_action=0, folder="sent", created=now,
        )
        self._watched.add(ackdata)
        log.info("msg %s from %s to %s queued", ackdata.hex(), frm, to)
        return ackdata.hex()

    @locked
    def send_broadcast(
        self,
        from_address: str,
        subject: str | bytes,
        body: str | bytes,
        encoding: int = 2,
        ttl: int = MSG_TTL_DEFAULT,
        now: int | None = None,
    ) -> str:
        """Queue a broadcast (status ``broadcastqueued``); returns its handle (ackdata-shaped, hex)."""
        now = clock(now)
        subject_s, body_s, encoding, ttl = self._check_content(subject, body, encoding, ttl)
        frm, from_addr = self._check_sender(from_address)
        handle = encode_ackdata(from_addr.stream, os.urandom(32))
        self.store.add_sent(
            msgid=os.urandom(16), ackdata=handle, kind="broadcast", to_address=BROADCAST_TO_ADDRESS,
            from_address=frm, subject=subject_s, body=body_s, encoding=encoding, ttl=ttl, retry=0,
            status=BROADCASTQUEUED, last_action=now, next_action=0, folder="sent", created=now,
        )
        return handle.hex()

    @locked
    def force_pow(self, ackdata: str | bytes) -> bool:
        """Send a ``toodifficult`` msg anyway (status ``forcepow``); False if it is not one."""
        row = self.store.sent_by_ackdata(hex_arg(ackdata, "ackData"))
        if row is None or row.status != TOODIFFICULT:
            return False
        return self.store.update_sent(row.id, status=FORCEPOW, next_action=0)

    @locked
    def get_status(self, ackdata: str | bytes) -> str:
        """The status string of the sent message with this ackdata, or ``notfound`` (error 15 if
        shorter than 38 bytes / 76 hex characters)."""
        if isinstance(ackdata, str) and len(ackdata) < 76 or isinstance(ackdata, (bytes, bytearray)) and len(ackdata) < 38:
            raise ApiError(15)
        row = self.store.sent_by_ackdata(hex_arg(ackdata, "ackData"))
        return NOTFOUND if row is None else row.status

    # ------------------------------------------------------------------------ sending: the pipeline

    @locked
    def tick(self, now: int | None = None) -> list[PowJob | Outgoing]:
        """Advance every pending send from its stored state; returns the new PoW jobs.

        Resends msgs whose ack did not come within 1.1 x TTL (TTL doubled per retry, at most
        28 days) and getpubkeys left unanswered; builds acks, msgs, broadcasts, getpubkeys,
        pubkeys and our onionpeer object (12.5) as PoW jobs. Jobs issued before (and not
        finished) are not repeated; after a restart every stored job is issued again.
        """
        now = clock(now)
        self._housekeeping(now)
        self._drop_stale_jobs(now)
        for row in self.store.sent_with_status([MSGSENT], due_by=now):
            self._resend(row, now)
        self._check_awaiting(now)
        for row in self.store.sent_with_status([MSGQUEUED, FORCEPOW], due_by=now):
            self._advance_msg(row, now)
        for row in self.store.sent_with_status([BROADCASTQUEUED], due_by=now):
            self._advance_broadcast(row, now)
        self._check_onionpeer(now)
        return list(self._issue_jobs(now))

    def _housekeeping(self, now: int) -> None:
        if now - self._last_housekeeping < self.config.housekeeping_interval:
            return
        self._last_housekeeping = now
        with self.store.tx():
            self.store.expire_pubkeys(now - UNUSED_PUBKEY_LIFETIME)
            self.store.expire_outbox(now - OUTBOX_GRACE)

    def _stopped_resending(self, created: int, now: int) -> bool:
        limit = self.config.stop_resending_after
        return bool(limit) and now - created > limit

    def _resend(self, row: SentRow, now: int) -> None:
        if self._stopped_resending(row.created, now):
            self.store.update_sent(row.id, next_action=2**62)  # keep msgsent, stop looking
            return
        log.info("no ack for %s after %d s: resending (retry %d)", row.ackdata.hex(), row.attempt_ttl, row.retry + 1)
        self.store.update_sent(row.id, status=MSGQUEUED, retry=row.retry + 1, next_action=0, last_action=now)

    def _check_awaiting(self, now: int) -> None:
        for aw in self.store.awaiting_all():
            waiting = [r for r in self.store.sent_to(aw.address, WAITING_FOR_PUBKEY) if r.folder == "sent"]
            if not waiting:
                with self.store.tx():
                    self.store.delete_awaiting(aw.address)
                    self.store.delete_jobs_for("getpubkey", aw.address)
                if aw.tag is not None:
                    self._awaited_tags.pop(aw.tag, None)
                continue
            if not aw.getpubkey_expires or aw.next_action > now or self.store.jobs_for("getpubkey", aw.address):
                continue
            if all(self._stopped_resending(r.created, now) for r in waiting):
                continue
            with self.store.tx():
                aw = AwaitingRow(aw.address, aw.version, aw.stream, aw.ripe, aw.tag, aw.retry + 1, 0, 0)
                self.store.put_awaiting(aw)
                self._queue_getpubkey(aw, now)
                for r in waiting:
                    self.store.update_sent(r.id, status=DOINGPUBKEYPOW, last_action=now)

    def _recipient(self, to_address: str) -> Identity | PubkeyRecord | None:
        own = self._ids.get(to_address)
        if own is not None:
            return own
        row = self.store.pubkey(to_address)
        if row is None:
            return None
        try:
            return PubkeyRecord.from_data(row.data)
        except (InvalidObject, MalformedMessage) as exc:
            log.warning("stored pubkey of %s is unusable (%s); asking again", to_address, exc)
            return None

    def _too_difficult(self, record: PubkeyRecord) -> bool:
        cfg = self.config
        ntpb, extra = record.msg_difficulty(min_ntpb=cfg.min_ntpb, min_extra=cfg.min_extra)
        return bool(cfg.max_acceptable_ntpb and ntpb > cfg.max_acceptable_ntpb) or bool(
            cfg.max_acceptable_extra and extra > cfg.max_acceptable_extra
        )

    def _advance_msg(self, row: SentRow, now: int) -> None:
        sender = self._ids.get(row.from_address)
        if sender is None:
            log.warning("msg %s: sender %s is no longer an own address; retrying in an hour", row.ackdata.hex(), row.from_address)
            self.store.update_sent(row.id, next_action=now + 3600)
            return
        recipient = self._recipient(row.to_address)
        if recipient is None and self._pubkey_from_inventory(row.to_address, now):
            recipient = self._recipient(row.to_address)
        if recipient is None:
            self._need_pubkey(row, now)
            return
        if isinstance(recipient, PubkeyRecord) and row.status != FORCEPOW and self._too_difficult(recipient):
            self.store.update_sent(row.id, status=TOODIFFICULT, last_action=now)
            return
        ttl = min(row.ttl * (2 ** row.retry), RESEND_TTL_CAP)
        expects = isinstance(recipient, PubkeyRecord) and recipient.does_ack
        with self.store.tx():
            self.store.update_sent(
                row.id, status=DOINGMSGPOW, attempt_ttl=ttl, expects_ack=expects, ack_object=None, last_action=now
            )
            if expects:
                assert isinstance(recipient, PubkeyRecord)
                _, body = build_ack(recipient.stream, now + ack_ttl(ttl) + self._jitter(), row.ackdata[-32:])
                if body[8:] != row.ackdata:  # the recipient's stream differs from the address's
                    self.store.update_sent(row.id, status=BADKEY)
                    return
                self.store.add_job("ack", str(row.id), body, 0, 0, now)
            else:
                self._queue_msg(row.id, sender, recipient, b"", ttl, now)

    def _queue_msg(self, sent_id: int, sender: Identity, recipient: Identity | PubkeyRecord, ack_msg: bytes, ttl: int, now: int) -> None:
        row = self.store.sent(sent_id)
        assert row is not None
        try:
            out = build_msg(
                sender, recipient, row.encoding, row.subject, row.body, now + ttl + self._jitter(), ack_msg,
                recipient_known=self._is_trusted(row.to_address),
            )
        except (CryptoError, InvalidObject, InvalidAddress) as exc:
            log.warning("msg %s cannot be built: %s", row.ackdata.hex(), exc)
            self.store.update_sent(sent_id, status=BADKEY, last_action=now)
            return
        self.store.add_job("msg", str(sent_id), out.body, out.ntpb, out.extra, now)
        if isinstance(recipient, PubkeyRecord):
            self.store.mark_pubkey_used(recipient.address, now)

    def _pubkey_from_inventory(self, address: str, now: int) -> bool:
        """Try the v4 pubkey objects with ``address``'s tag already in the inventory (10.3.3)."""
        if self._inventory_lookup is None:
            return False
        try:
            a = parse_address(address)
        except InvalidAddress:
            return False
        if a.version != 4:
            return False
        for obj in self._lookup(address_key_and_tag(a.version, a.stream, a.ripe)[1]):
            try:
                p = parse_object(obj)
                if p.header.object_type != OBJECT_PUBKEY:
                    continue
                opened = open_pubkey(p, a)
            except (ObjectDropped, MalformedMessage, InvalidObject):
                continue
            with self.store.tx():
                self._store_pubkey(opened.record, now)
            return True
        return False

    def _need_pubkey(self, row: SentRow, now: int) -> None:
        """No pubkey for the recipient: reuse a pending or unexpired getpubkey, else send one."""
        try:
            a = parse_address(row.to_address)
        except InvalidAddress as exc:
            log.warning("msg %s: bad recipient %s: %s", row.ackdata.hex(), row.to_address, exc)
            self.store.update_sent(row.id, status=BADKEY, last_action=now)
            return
        with self.store.tx():
            aw = self.store.awaiting(row.to_address)
            if aw is None:
                tag = address_key_and_tag(a.version, a.stream, a.ripe)[1] if a.version == 4 else None
                aw = AwaitingRow(row.to_address, a.version, a.stream, a.ripe, tag, 0, 0, 0)
                self.store.put_awaiting(aw)
                if tag is not None:
                    self._awaited_tags[tag] = a
            if self.store.jobs_for("getpubkey", aw.address):
                status = DOINGPUBKEYPOW
            elif aw.getpubkey_expires > now:
                status = AWAITINGPUBKEY
            else:
                self._queue_getpubkey(aw, now)
                status = DOINGPUBKEYPOW
            self.store.update_sent(row.id, status=status, last_action=now)

    def _queue_getpubkey(self, aw: AwaitingRow, now: int) -> None:
        ttl = min(GETPUBKEY_TTL * (2 ** aw.retry), RESEND_TTL_CAP) + self._jitter()
        out = build_getpubkey(Address(aw.version, aw.stream, aw.ripe), now + ttl)
        self.store.add_job("getpubkey", aw.address, out.body, 0, 0, now)

    def _queue_pubkey(self, ident: Identity, now: int) -> None:
        if ident.chan:
            return  # 9.6: chans never publish their pubkey
        out = build_pubkey(ident, now + PUBKEY_TTL + self._jitter())
        self.store.add_job("pubkey", ident.address, out.body, 0, 0, now)

    def _advance_broadcast(self, row: SentRow, now: int) -> None:
        sender = self._ids.get(row.from_address)
        if sender is None:
            self.store.update_sent(row.id, next_action=now + 3600)
            return
        ttl = row.ttl
        try:
            out = build_broadcast(sender, row.encoding, row.subject, row.body, now + ttl + self._jitter())
        except (CryptoError, InvalidObject) as exc:
            log.warning("broadcast %s cannot be built: %s", row.ackdata.hex(), exc)
            self.store.update_sent(row.id, status=BADKEY, last_action=now)
            return
        with self.store.tx():
            self.store.add_job("broadcast", str(row.id), out.body, 0, 0, now)
            self.store.update_sent(row.id, status=DOINGBROADCASTPOW, attempt_ttl=ttl, last_action=now)

    # ------------------------------------------------------------------------ jobs

    def _drop_stale_jobs(self, now: int) -> None:
        """A job whose object would be (nearly) expired is dropped and its owner rebuilt."""
        for job in self.store.jobs():
            if _expires_of(job.body, body=True) - now >= MIN_JOB_LIFETIME:
                continue
            log.info("PoW job %d (%s) went stale; rebuilding", job.id, job.kind)
            with self.store.tx():
                self.store.delete_job(job.id)
                self._issued.discard(job.id)
                if job.kind in ("ack", "msg", "broadcast"):
                    row = self.store.sent(int(job.ref))
                    if row is not None:
                        status = BROADCASTQUEUED if job.kind == "broadcast" else MSGQUEUED
                        self.store.update_sent(row.id, status=status, next_action=0)
                elif job.kind == "getpubkey":
                    for r in self.store.sent_to(job.ref, WAITING_FOR_PUBKEY):
                        self.store.update_sent(r.id, status=MSGQUEUED, next_action=0)

    def _issue_jobs(self, now: int) -> Iterable[PowJob]:
        cfg = self.config
        for job in self.store.jobs():
            if job.id in self._issued:
                continue
            target = object_pow_target(job.body, now, job.ntpb, job.extra, min_ntpb=cfg.min_ntpb, min_extra=cfg.min_extra)
            self._issued.add(job.id)
            yield PowJob(job.id, job.kind, job.body, target, max(job.ntpb, cfg.min_ntpb), max(job.extra, cfg.min_extra))

    @locked
    def pending_jobs(self, now: int | None = None) -> list[PowJob]:
        """Every stored PoW job again (for a PoW broker that lost its queue)."""
        self._issued.clear()
        return list(self._issue_jobs(clock(now)))

    @locked
    def pow_done(self, job_id: int, nonce: int, now: int | None = None) -> list[PowJob | Outgoing]:
        """Attach ``nonce`` to job ``job_id``'s object and move its owner on.

        Returns the finished object to publish (:class:`Outgoing`, also kept in the outbox until
        confirmed) and any follow-up job (after an ack's PoW, the msg's). An unknown or already
        finished job gives ``[]``; a nonce that misses the target raises PowError (the job stays).
        """
        now = clock(now)
        job = self.store.job(job_id)
        self._issued.discard(int(job_id))
        if job is None:
            return []
        obj = attach_nonce(int(nonce), job.body)
        cfg = self.config
        if not check_pow(obj, now, job.ntpb, job.extra, min_ntpb=cfg.min_ntpb, min_extra=cfg.min_extra):
            raise PowError(f"nonce {nonce} does not meet the target of PoW job {job_id} ({job.kind})")
        out: list[PowJob | Outgoing] = []
        with self.store.tx():
            self.store.delete_job(job.id)
            handler = getattr(self, f"_done_{job.kind}")
            out.extend(handler(job.ref, obj, now))
        out.extend(self._issue_jobs(now))
        return out

    def _done_object(self, ref: str, obj: bytes, now: int) -> list[Outgoing]:
        return [self._publish(obj, "object", now)]

    def _done_pubkey(self, ref: str, obj: bytes, now: int) -> list[Outgoing]:
        if self.store.identity(ref) is None:
            return []  # deleted meanwhile
        self.store.set_last_pubkey_send(ref, now)
        return [self._publish(obj, "pubkey", now)]

    def _done_getpubkey(self, ref: str, obj: bytes, now: int) -> list[Outgoing]:
        aw = self.store.awaiting(ref)
        if aw is None:
            return []  # the pubkey arrived meanwhile
        expires = _expires_of(obj, body=False)
        ttl = max(expires - now, 0)
        self.store.put_awaiting(
            AwaitingRow(aw.address, aw.version, aw.stream, aw.ripe, aw.tag, aw.retry, expires, now + int(RESEND_FACTOR * ttl))
        )
        for r in self.store.sent_to(ref, [DOINGPUBKEYPOW]):
            self.store.update_sent(r.id, status=AWAITINGPUBKEY, last_action=now)
        return [self._publish(obj, "getpubkey", now)]

    def _done_ack(self, ref: str, obj: bytes, now: int) -> list[Outgoing]:
        row = self.store.sent(int(ref))
        if row is None or row.status != DOINGMSGPOW:
            return []
        sender = self._ids.get(row.from_address)
        recipient = self._recipient(row.to_address)
        if sender is None or not isinstance(recipient, PubkeyRecord):
            self.store.update_sent(row.id, status=MSGQUEUED, next_action=0)
            return []
        self.store.update_sent(row.id, ack_object=obj)
        self._queue_msg(row.id, sender, recipient, ack_message(obj), row.attempt_ttl, now)
        return []

    def _done_msg(self, ref: str, obj: bytes, now: int) -> list[Outgoing]:
        row = self.store.sent(int(ref))
        if row is None:
            return []
        h = inventory_hash(obj)
        if row.status == ACKRECEIVED:  # an ack of an earlier copy came while this one was in work
            status, next_action = ACKRECEIVED, 0
        elif row.expects_ack:
            status, next_action = MSGSENT, now + int(RESEND_FACTOR * row.attempt_ttl)
        else:
            status, next_action = MSGSENTNOACKEXPECTED, 0
        self.store.update_sent(row.id, msgid=h, object=obj, status=status, next_action=next_action, last_action=now)
        out = [self._publish(obj, "msg", now)]
        own = self._ids.get(row.to_address)
        if own is not None:
            # To ourselves or a chan: our own node stores it too (9.6), as the reference's sendMsg
            # does: with the recipient's key alone (enabled or not), no difficulty or list check.
            try:
                received = open_msg(obj, Keyring([own]), now=now, check_difficulty=False, streams=[own.stream])
            except ObjectDropped as exc:  # pragma: no cover - we just built it
                log.warning("msg %s to own address %s does not open: %s", row.ackdata.hex(), own.address, exc)
            else:
                out.extend(self.accept_msg(received, now, local=True))
        log.info("msg %s sent as %s (%s)", row.ackdata.hex(), h.hex(), status)
        return out

    def _done_broadcast(self, ref: str, obj: bytes, now: int) -> list[Outgoing]:
        row = self.store.sent(int(ref))
        if row is None:
            return []
        h = inventory_hash(obj)
        self.store.update_sent(row.id, msgid=h, object=obj, status=BROADCASTSENT, last_action=now)
        return [self._publish(obj, "broadcast", now)]

    # ------------------------------------------------------------------------ outbox

    @locked
    def outbox(self) -> list[Outgoing]:
        """Finished objects not yet confirmed as handed to the network (re-send after a restart)."""
        return [Outgoing(r.object, r.kind) for r in self.store.outbox()]

    @locked
    def confirm_published(self, hashes: Iterable[bytes]) -> int:
        """The net process has these objects (by inventory hash): drop them from the outbox."""
        with self.store.tx():
            return self.store.delete_outbox(hashes)

    @locked
    def awaited_tags(self) -> dict[bytes, str]:
        """Tags of v4 addresses whose pubkey we await: the process layer looks for pubkey
        objects with these tags in the inventory and hands them to :meth:`receive_object`."""
        return {tag: a.encode() for tag, a in self._awaited_tags.items()}

    @locked
    def disseminate_object(self, obj: bytes | str, ntpb: int = NETWORK_MIN_NTPB, extra: int = NETWORK_MIN_EXTRA,
                           now: int | None = None) -> str | None:
        """A complete object from outside (API disseminatePreEncryptedMsg): with a nonce, it is
        published at once and its inventory hash (hex) returned; with nonce 0 a PoW job at the
        given difficulty is queued and None returned (the object is published when done)."""
        now = clock(now)
        data = hex_arg(obj, "object")
        cfg = self.config
        try:
            parse_header(data)
        except MalformedMessage as exc:
            raise ApiError(22, f"{MESSAGES[22]} - not an object: {exc}") from None
        if int.from_bytes(data[:8], "big") != 0:
            verdict = check_relay(data, now, streams=cfg.streams, ntpb=cfg.min_ntpb, extra=cfg.min_extra)
            if not verdict.accept:
                raise ApiError(21, f"{MESSAGES[21]} - {verdict.message}")
            with self.store.tx():
                out = self._publish(data, "object", now)
            return out.hash.hex()
        ntpb, extra = int_arg(ntpb, "nonceTrialsPerByte"), int_arg(extra, "payloadLengthExtraBytes")
        self.store.add_job("object", "", data[8:], ntpb, extra, now)
        return None

    # ------------------------------------------------------------------------ status

    @locked
    def counters(self) -> dict[str, int]:
        """Objects processed since start (clientStatus) and a few more figures."""
        c = self._counters
        return {
            "numberOfMessagesProcessed": c.messages,
            "numberOfBroadcastsProcessed": c.broadcasts,
            "numberOfPubkeysProcessed": c.pubkeys,
            "getpubkeysProcessed": c.getpubkeys,
            "acksReceived": c.acks,
            "inboxStored": c.inbox_stored,
            "pendingPowJobs": self.store.count("pow_jobs"),
            "outbox": self.store.count("outbox"),
            "identities": len(self._ids),
        }

    @locked
    def inbox_stored_count(self) -> int:
        """New inbox rows (messages and broadcasts) stored since start: a cheap way for the
        process layer to notice arrivals (the ``apinotifypath`` events)."""
        return self._counters.inbox_stored
