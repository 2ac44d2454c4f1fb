"""The mailbox process: the :class:`~bmnode.mailbox.Mailbox` wired to the bus.

One thread, one poll loop over:

* ``E.objects`` (SUB, ``object``): every new valid object of the net process. msg objects
  big enough to be encrypted go through the :class:`~bmnode.node.decryptpool.DecryptPool`
  ("is it for one of our keys?"); the hits, and every other object (getpubkey, pubkey,
  broadcast, and the small msg objects that can only be acks), go to
  :meth:`Mailbox.receive_object`.
* the inventory itself (read-only SQL on ``inventory.sqlite``): a cursor (the last row id
  processed, stored in the mailbox database) is advanced every few seconds, so objects the
  net process stored while this process was down or not yet subscribed are processed too.
  Processing is idempotent (duplicates give no second inbox row and no second ack).
* the PoW broker (``E.pow``, :class:`~bmnode.pow.broker.PowClient` named ``mailbox``): every
  :class:`~bmnode.mailbox.PowJob` of :meth:`Mailbox.tick` is submitted as job ``mb<id>``; a
  nonce goes to :meth:`Mailbox.pow_done`. Jobs in flight are submitted again now and then
  (the broker answers a known job again and redoes a lost one), so a restarted broker or
  mailbox loses nothing.
* the net process (``E.net``, DEALER): finished objects are sent as ``inject`` requests and
  :meth:`Mailbox.confirm_published` is called only for those the net process answered
  (accepted, or refused for good); unanswered ones are sent again.
* the API process (``E.mailbox``, ROUTER): ``rpc`` requests call one of :data:`RPC_METHODS`
  of the mailbox and answer ``rpc.reply`` (API error numbers travel as ``error_code``).

``tick()`` runs every second and right after every event that may move a send forward.
Everything durable lives in ``mailbox.sqlite`` (written before anything is acknowledged);
this process keeps only caches, so kill -9 at any moment loses nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import zmq

from bmnode.api.notify import ApiNotifier
from bmnode.crypto.ecies import MIN_BLOB_SIZE
from bmnode.errors import BmnodeError, MalformedMessage, PowError
from bmnode.mailbox import ApiError, Mailbox, MailboxConfig, Outgoing, PowJob
from bmnode.node import bus
from bmnode.node.decryptpool import DecryptPool
from bmnode.pow.backend import Solution
from bmnode.pow.broker import PowClient, PowLimit
from bmnode.protocol.constants import OBJECT_BROADCAST, OBJECT_MSG
from bmnode.protocol.objects import parse_header
from bmnode.protocol.validation import check_relay
from bmnode.store.inventory import INVENTORY_FILE

log = logging.getLogger("bmnode.mailboxproc")

__all__ = ["RPC_METHODS", "InventoryReader", "MailboxService", "mailbox_main"]

#: Mailbox methods the API process may call over the bus (what MailboxBackend uses).
RPC_METHODS = frozenset({
    "list_addresses", "create_random_address", "create_deterministic_addresses", "create_chan", "join_chan",
    "leave_chan", "delete_address", "enable_address", "list_addressbook", "add_addressbook", "delete_addressbook",
    "list_subscriptions", "add_subscription", "delete_subscription", "inbox_messages", "inbox_messages_by_receiver",
    "inbox_message", "trash_inbox_message", "undelete_message", "sent_messages", "sent_messages_by_sender",
    "sent_message", "sent_message_by_ackdata", "trash_sent_message", "trash_sent_message_by_ackdata",
    "delete_and_vacuum", "send_message", "send_broadcast", "get_status", "counters", "disseminate_object",
    "get_deterministic_address", "inbox_message_ids", "sent_message_ids", "trash_message", "force_pow",
})
#: Calls answered by this process itself rather than the Mailbox.
RPC_LOCAL = frozenset({"ping", "node_status", "disseminated_hash"})
#: Calls after which the keys of the decrypt workers are recomputed.
IDENTITY_METHODS = frozenset({
    "create_random_address", "create_deterministic_addresses", "create_chan", "join_chan", "leave_chan",
    "delete_address", "enable_address",
})
#: Calls that only read: no tick afterwards.
READ_METHODS = frozenset({
    "list_addresses", "list_addressbook", "list_subscriptions", "inbox_messages", "inbox_messages_by_receiver",
    "sent_messages", "sent_messages_by_sender", "sent_message", "sent_message_by_ackdata", "get_status", "counters",
    "get_deterministic_address", "inbox_message_ids", "sent_message_ids", "ping", "node_status", "disseminated_hash",
})
#: Priorities of PoW jobs at the broker: what a waiting peer needs first.
PRIORITY = {"ack": 2, "msg": 2, "pubkey": 3, "getpubkey": 1, "broadcast": 1, "object": 0, "onionpeer": 0}
#: Mailbox setting holding the last inventory row id processed.
MARK_SETTING = "mailboxproc.inventory_mark"
_DONE_CACHE = 200_000
#: Objects of disseminatePreEncryptedMsg remembered (payload digest -> inventory hash).
_DISSEMINATED_CACHE = 1000
#: Object bytes read by one step of the catch-up cursor at most.
SCAN_BYTES = 8 << 20


class InventoryReader:
    """Read-only queries on the net process's ``inventory.sqlite`` (its own connection; the
    file may not exist yet). Used for the catch-up cursor and the mailbox's tag lookups."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / INVENTORY_FILE
        self._con: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection | None:
        if self._con is None:
            if not self.path.exists():
                return None
            try:
                con = sqlite3.connect(str(self.path), timeout=2.0, check_same_thread=False)
                con.execute("PRAGMA query_only = ON")
                con.execute("SELECT 1 FROM objects LIMIT 1")
            except sqlite3.Error as exc:  # not created yet (no table) or locked: try later
                log.debug("inventory not readable yet: %s", exc)
                return None
            self._con = con
        return self._con

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        con = self._db()
        if con is None:
            return []
        try:
            return con.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            log.warning("inventory query failed: %s", exc)
            self.close()
            return []

    def by_tag(self, tag: bytes) -> list[bytes]:
        """Objects whose tag is ``tag`` (the Mailbox's ``inventory_lookup``)."""
        return [bytes(r[0]) for r in self._query("SELECT data FROM objects WHERE tag = ?", (bytes(tag),))]

    def since(self, row_id: int, limit: int) -> list[tuple[int, bytes, int]]:
        """(row id, hash, object type) of the mailbox-relevant objects after ``row_id``."""
        rows = self._query(
            "SELECT id, hash, object_type FROM objects WHERE id > ? AND object_type <= 3 ORDER BY id LIMIT ?",
            (int(row_id), int(limit)),
        )
        return [(int(i), bytes(h), int(t)) for i, h, t in rows]

    def data(self, row_id: int) -> bytes | None:
        rows = self._query("SELECT data FROM objects WHERE id = ?", (int(row_id),))
        return bytes(rows[0][0]) if rows else None

    def max_id(self) -> int:
        rows = self._query("SELECT max(id) FROM objects")
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


class _Scan:
    """One batch of the catch-up cursor: done when every object in ``pending`` is processed."""

    def __init__(self, max_id: int, pending: set[bytes]) -> None:
        self.max_id = max_id
        self.pending = pending


class MailboxService:
    """The mailbox process's state and loop (see the module docstring). ``open()``, then
    ``run(stop)`` or repeated ``step()``; ``close()`` at the end."""

    def __init__(
        self,
        data_dir: str | Path,
        endpoints: bus.Endpoints,
        *,
        config: MailboxConfig | None = None,
        decrypt_workers: int = 1,
        tick_interval: float = 1.0,
        scan_interval: float = 2.0,
        scan_batch: int = 1000,
        inject_timeout: float = 10.0,
        pow_resubmit: float = 20.0,
        clock: Callable[[], float] = time.time,
        notify: Callable[[str], Any] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        #: Called with ``newMessage`` / ``newBroadcast`` when one is stored in the inbox
        #: (the reference's apinotifypath events); must not block (see ApiNotifier).
        self.notify = notify
        self.endpoints = endpoints
        self.config = config or MailboxConfig()
        self.decrypt_workers = decrypt_workers
        self.tick_interval = tick_interval
        self.scan_interval = scan_interval
        self.scan_batch = scan_batch
        self.inject_timeout = inject_timeout
        self.pow_resubmit = pow_resubmit
        self.clock = clock
        self.counters = {
            "objects": 0, "pool_hits": 0, "pool_misses": 0, "processed": 0, "published": 0, "confirmed": 0,
            "inject_refused": 0, "pow_submitted": 0, "pow_done": 0, "pow_errors": 0, "rpc": 0, "rpc_errors": 0,
            "scanned": 0, "bad_messages": 0,
        }
        self.mailbox: Mailbox | None = None
        self.pool: DecryptPool | None = None
        self.inventory = InventoryReader(self.data_dir)
        self._ctx: zmq.Context | None = None
        self._sub: zmq.Socket | None = None
        self._net: zmq.Socket | None = None
        self._rpc: zmq.Socket | None = None
        self._pow: PowClient | None = None
        self._done: OrderedDict[bytes, None] = OrderedDict()
        self._inflight: dict[bytes, bytes] = {}  # hash -> object, waiting for the decrypt pool
        self._pool_buf: list[tuple[bytes, bytes]] = []
        self._outgoing: dict[bytes, tuple[Outgoing, float]] = {}  # hash -> (object, last sent)
        self._requests: dict[int, bytes] = {}  # inject request id -> hash
        self._next_request = 1
        self._jobs: dict[str, tuple[PowJob, float]] = {}  # broker job name -> (job, last submitted)
        self._retry_jobs_at = 0.0
        self._mark = 0
        self._scan: _Scan | None = None
        self._next_tick = 0.0
        self._next_scan = 0.0
        self._next_housekeeping = 0.0
        self._tick_due = True
        #: sha512(object without its nonce) -> inventory hash, for objects handed in through the
        #: API (``disseminate_object``): how the API learns the hash once the PoW is done.
        self._disseminated: OrderedDict[bytes, bytes] = OrderedDict()

    # ------------------------------------------------------------------ life cycle

    def open(self) -> MailboxService:
        """Open the mailbox, start the decrypt pool, connect and bind the sockets."""
        self.mailbox = Mailbox(self.data_dir, self.config, inventory_lookup=self.inventory.by_tag)
        self.pool = DecryptPool(self.decrypt_workers)
        self._refresh_keys()
        self._mark = int(self.mailbox.store.get_setting(MARK_SETTING, "0") or 0)
        e = self.endpoints
        e.prepare()
        self._ctx = zmq.Context()
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.SUBSCRIBE, bus.ObjectEvent.topic.encode("ascii"))
        self._sub.setsockopt(zmq.RCVHWM, 100_000)
        self._net = self._ctx.socket(zmq.DEALER)
        self._rpc = self._ctx.socket(zmq.ROUTER)
        for s in (self._sub, self._net, self._rpc):
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.MAXMSGSIZE, bus.MAX_BUS_MESSAGE)
        self._sub.connect(e.objects)
        self._net.connect(e.net)
        self._rpc.bind(e.mailbox)
        self._pow = PowClient(e.pow, client="mailbox", context=self._ctx)
        for out in self.mailbox.outbox():  # finished before a crash, never confirmed
            self._publish(out)
        log.info("mailbox process up: %d identities, %d decrypt workers, inventory cursor at %d",
                 len(self.mailbox.list_addresses()), self.pool.workers, self._mark)
        return self

    def close(self) -> None:
        """Stop the pool, close the sockets and the database."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        if self._pow is not None:
            self._pow.close()
            self._pow = None
        for s in (self._sub, self._net, self._rpc):
            if s is not None:
                s.close(0)
        if self._rpc is not None:
            bus.remove_ipc(self.endpoints.mailbox)
        self._sub = self._net = self._rpc = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        self.inventory.close()
        if self.mailbox is not None:
            self.mailbox.close()
            self.mailbox = None

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set."""
        while not stop.is_set():
            self.step(0.25)

    # ------------------------------------------------------------------ the loop

    def step(self, timeout: float = 0.25) -> None:
        """Wait up to ``timeout`` s for something to do, then do everything that is ready."""
        assert self.pool is not None and self._pow is not None
        now = time.monotonic()
        wait = max(0.0, min(timeout, self._next_tick - now)) if not self._tick_due else 0.0
        if self._pool_buf or self._inflight and not self.pool.workers:
            wait = 0.0
        poller = zmq.Poller()
        for s in (self._sub, self._net, self._rpc, self._pow.socket):
            poller.register(s, zmq.POLLIN)
        for conn in self.pool.connections():
            poller.register(conn.fileno(), zmq.POLLIN)
        ready = dict(poller.poll(int(wait * 1000)))
        if self._sub in ready:
            self._drain_objects()
        if self._rpc in ready:
            self._drain_rpc()
        if self._net in ready:
            self._drain_net()
        self._flush_pool()
        for token, hit in self.pool.collect(0):
            self._verdict(token, hit)
        if self._pow.pending or self._pow.socket in ready:
            self._pow_events()
        self._timers()

    def _timers(self) -> None:
        now = time.monotonic()
        if now >= self._next_scan and self._scan is None:
            self._next_scan = now + self.scan_interval
            if self._catch_up():  # a full batch: more to read at once
                self._next_scan = now
        if self._tick_due or now >= self._next_tick:
            self._tick_due = False
            self._next_tick = now + self.tick_interval
            self._run(lambda m, t: m.tick(t))
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + 1.0
            self._resend_injects(now)
            self._resubmit_jobs(now)

    def _now(self) -> int:
        return int(self.clock())

    def _run(self, action: Callable[[Mailbox, int], Iterable[PowJob | Outgoing]]) -> None:
        """Call the mailbox and carry out the PoW jobs and objects it returns."""
        assert self.mailbox is not None
        stored = self._inbox_count()
        try:
            results = list(action(self.mailbox, self._now()))
        except BmnodeError as exc:
            log.error("mailbox call failed: %s", exc)
            return
        except Exception:  # a bug: logged, and the process goes on serving the API
            log.exception("mailbox call failed")
            return
        finally:
            # Outside receive_object only a msg of ours to ourselves (or a chan) reaches the inbox.
            self._notify_stored(stored, OBJECT_MSG)
        self._carry_out(results)

    def _inbox_count(self) -> int:
        return self.mailbox.inbox_stored_count() if self.notify is not None and self.mailbox is not None else 0

    def _notify_stored(self, before: int, object_type: int | None) -> None:
        """Fire newMessage/newBroadcast once per inbox row stored since ``before``."""
        if self.notify is None or self.mailbox is None:
            return
        new = self.mailbox.inbox_stored_count() - before
        if new <= 0:
            return
        event = "newBroadcast" if object_type == OBJECT_BROADCAST else "newMessage"
        for _ in range(new):
            try:
                self.notify(event)
            except Exception:  # noqa: BLE001 - a hook must never stop the mailbox
                log.exception("apinotifypath hook failed")

    def _carry_out(self, results: Iterable[PowJob | Outgoing]) -> None:
        for r in results:
            if isinstance(r, Outgoing):
                self._publish(r)
            elif isinstance(r, PowJob):
                self._submit_job(r)

    # ------------------------------------------------------------------ objects in

    def _drain_objects(self) -> None:
        assert self._sub is not None
        for _ in range(10_000):
            try:
                frames = self._sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = bus.decode(frames)
            except bus.BusError as exc:
                self.counters["bad_messages"] += 1
                log.warning("dropped a bad bus message: %s", exc)
                continue
            if isinstance(msg, bus.ObjectEvent) and msg.process:
                self.counters["objects"] += 1
                self._object(msg.hash, msg.object, msg.object_type)

    def _object(self, h: bytes, obj: bytes, object_type: int) -> None:
        """One relay-valid object: to the decrypt pool or straight to the mailbox."""
        if h in self._done or h in self._inflight:
            return
        if object_type == OBJECT_MSG:
            try:
                hdr = parse_header(obj)
            except MalformedMessage:
                self._finish(h)
                return
            payload = obj[hdr.header_length:]
            if len(payload) >= MIN_BLOB_SIZE:  # smaller ones cannot be encrypted: maybe our acks
                self._inflight[h] = obj
                self._pool_buf.append((h, payload))
                return
        self._process(h, obj)

    def _flush_pool(self) -> None:
        if self._pool_buf and self.pool is not None:
            buf, self._pool_buf = self._pool_buf, []
            self.pool.submit(buf)

    def _verdict(self, h: bytes, hit: bool) -> None:
        obj = self._inflight.pop(h, None)
        if obj is None:
            return
        if hit:
            self.counters["pool_hits"] += 1
            self._process(h, obj)
        else:
            self.counters["pool_misses"] += 1
            self._finish(h)

    def _process(self, h: bytes, obj: bytes) -> None:
        assert self.mailbox is not None
        stored = self._inbox_count()
        try:
            acks = self.mailbox.receive_object(obj, self._now(), validated=True)
        except Exception:  # a bug must not stop the mailbox; the object is logged and skipped
            log.exception("processing object %s failed", h.hex())
            acks = []
        if self.notify is not None:
            try:
                object_type: int | None = parse_header(obj).object_type
            except MalformedMessage:
                object_type = None
            self._notify_stored(stored, object_type)
        self.counters["processed"] += 1
        for out in acks:
            self._publish(out)
        self._tick_due = True
        self._finish(h)

    def _finish(self, h: bytes) -> None:
        self._done[h] = None
        if len(self._done) > _DONE_CACHE:
            self._done.popitem(last=False)
        scan = self._scan
        if scan is not None:
            scan.pending.discard(h)
            if not scan.pending:
                self._advance_mark(scan.max_id)

    # ------------------------------------------------------------------ the catch-up cursor

    def _advance_mark(self, row_id: int) -> None:
        self._scan = None
        if row_id != self._mark and self.mailbox is not None:
            self._mark = row_id
            self.mailbox.store.set_setting(MARK_SETTING, str(row_id))

    def _catch_up(self) -> bool:
        """Process inventory rows after the cursor; True if a full batch was read."""
        rows = self.inventory.since(self._mark, self.scan_batch)
        if not rows:
            if self._mark and self.inventory.max_id() < self._mark:
                log.info("the inventory was renumbered; scanning it again from the start")
                self._advance_mark(0)
            return False
        now = self._now()
        cfg = self.config
        pending: set[bytes] = set()
        todo: list[tuple[bytes, bytes, int]] = []
        size = 0
        last = rows[0][0]
        for row_id, h, _ in rows:
            if size >= SCAN_BYTES:
                break
            last = row_id
            if h in self._done:
                continue
            if h in self._inflight:
                pending.add(h)
                continue
            obj = self.inventory.data(row_id)
            if obj is None:
                continue
            verdict = check_relay(obj, now, streams=cfg.streams, ntpb=cfg.min_ntpb, extra=cfg.min_extra)
            if not verdict.accept or not verdict.process or verdict.header is None:
                self._done[h] = None
                continue
            self.counters["scanned"] += 1
            pending.add(h)
            todo.append((h, obj, verdict.header.object_type))
            size += len(obj)
        # The cursor moves past these rows only once every one of them is processed.
        self._scan = _Scan(last, pending)
        for h, obj, object_type in todo:
            self._object(h, obj, object_type)
        if self._scan is not None and not self._scan.pending:
            self._advance_mark(last)
        self._flush_pool()
        return len(rows) >= self.scan_batch or last != rows[-1][0]

    # ------------------------------------------------------------------ keys

    def _refresh_keys(self) -> None:
        """Give the decrypt workers the encryption keys of the enabled identities and chans."""
        assert self.mailbox is not None and self.pool is not None
        secrets = []
        for row in self.mailbox.list_addresses():
            if not row["enabled"]:
                continue
            ident = self.mailbox.identity(row["address"])
            if ident is not None:
                secrets.append(ident.encryption_key.secret)
        if self.pool.set_keys(secrets):
            log.info("decrypt workers: %d keys (generation %d)", len(set(secrets)), self.pool.generation)

    # ------------------------------------------------------------------ objects out

    def _publish(self, out: Outgoing) -> None:
        """Hand a finished object to the net process (again after ``inject_timeout``)."""
        assert self._net is not None
        h = out.hash
        if out.kind == "object":
            self._disseminated[hashlib.sha512(out.object[8:]).digest()] = h
            while len(self._disseminated) > _DISSEMINATED_CACHE:
                self._disseminated.popitem(last=False)
        rid = self._next_request
        self._next_request += 1
        self._requests[rid] = h
        self._outgoing[h] = (out, time.monotonic())
        try:
            self._net.send_multipart(
                bus.encode(bus.InjectRequest(object=out.object, request_id=rid, kind=out.kind)), zmq.NOBLOCK
            )
            self.counters["published"] += 1
        except zmq.ZMQError as exc:  # net not there: retried by _resend_injects
            log.debug("cannot hand %s to the net process yet: %s", h.hex(), exc)

    def _drain_net(self) -> None:
        assert self._net is not None and self.mailbox is not None
        confirmed = []
        for _ in range(10_000):
            try:
                frames = self._net.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                msg = bus.decode(frames)
            except bus.BusError as exc:
                self.counters["bad_messages"] += 1
                log.warning("bad answer from the net process: %s", exc)
                continue
            if isinstance(msg, bus.ErrorReply):
                log.warning("the net process refused a request: %s %s", msg.code, msg.message)
                continue
            if not isinstance(msg, bus.InjectResult):
                continue
            h = self._requests.pop(msg.request_id, None)
            if h is None or h not in self._outgoing:
                continue
            if not msg.accepted:
                if msg.reason == "error":
                    continue  # sent again later
                self.counters["inject_refused"] += 1
                log.warning("the net process refused our %s %s: %s %s", self._outgoing[h][0].kind, h.hex(),
                            msg.reason, msg.message)
            del self._outgoing[h]
            confirmed.append(h)
        if confirmed:
            self.counters["confirmed"] += self.mailbox.confirm_published(confirmed)

    def _resend_injects(self, now: float) -> None:
        late = [out for out, sent in self._outgoing.values() if now - sent >= self.inject_timeout]
        if late:
            stale = {o.hash for o in late}
            self._requests = {rid: h for rid, h in self._requests.items() if h not in stale}
            for out in late:
                self._publish(out)

    # ------------------------------------------------------------------ proof of work

    def _submit_job(self, job: PowJob) -> None:
        assert self._pow is not None
        name = f"mb{job.job_id}"
        self._jobs[name] = (job, time.monotonic())
        try:
            self._pow.send_submit(job.initial_hash, job.target, job=name, priority=PRIORITY.get(job.kind, 0))
            self.counters["pow_submitted"] += 1
        except (PowError, zmq.ZMQError) as exc:
            log.warning("cannot submit PoW job %s: %s", name, exc)

    def _resubmit_jobs(self, now: float) -> None:
        """Submit long-running jobs again (the broker answers known ones, redoes lost ones)."""
        for name, (job, sent) in list(self._jobs.items()):
            if now - sent >= self.pow_resubmit:
                self._submit_job(job)
        if self._retry_jobs_at and now >= self._retry_jobs_at:
            self._retry_jobs_at = 0.0
            self._reissue()

    def _reissue(self) -> None:
        """Submit every stored job the broker is not working on for us."""
        assert self.mailbox is not None
        for job in self.mailbox.pending_jobs(self._now()):
            if f"mb{job.job_id}" not in self._jobs:
                self._submit_job(job)

    def _pow_events(self) -> None:
        assert self._pow is not None
        for name, result in self._pow.events(0):
            entry = self._jobs.get(name)
            if entry is None:
                continue
            job = entry[0]
            if isinstance(result, Solution):
                del self._jobs[name]
                self.counters["pow_done"] += 1
                self._run(lambda m, t, j=job, n=result.nonce: m.pow_done(j.job_id, n, t))
                continue
            self.counters["pow_errors"] += 1
            if isinstance(result, PowLimit) and result.code == "duplicate":
                # The broker still runs this id with an older target (from before a restart).
                try:
                    self._pow.cancel(name, timeout=2.0)
                except PowError:
                    pass
                self._submit_job(job)
            else:
                log.warning("PoW job %s (%s) failed: %s; retrying", name, job.kind, result)
                del self._jobs[name]
                self._retry_jobs_at = time.monotonic() + 5.0

    # ------------------------------------------------------------------ RPC from the API process

    def _drain_rpc(self) -> None:
        assert self._rpc is not None
        for _ in range(1000):
            try:
                frames = self._rpc.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                env, msg = bus.split(frames)
            except bus.BusError as exc:
                self.counters["bad_messages"] += 1
                reply: bus.BusMessage = bus.ErrorReply(code="bad_message", message=str(exc)[:1000])
                env = [bytes(frames[0])] if frames else []
            else:
                if isinstance(msg, bus.RpcRequest):
                    reply = self._call(msg)
                else:
                    reply = bus.ErrorReply(code="unexpected", message=f"the mailbox does not serve {msg.topic}")
            try:
                self._rpc.send_multipart(env + bus.encode(reply), zmq.NOBLOCK)
            except bus.BusError as exc:  # a result msgpack cannot carry
                log.error("cannot encode the answer to %s: %s", getattr(msg, "method", "?"), exc)
                self._rpc.send_multipart(env + bus.encode(bus.RpcReply(
                    id=getattr(msg, "id", 0), ok=False, error_code=21, error=f"Unexpected API Failure - {exc}")))
            except zmq.ZMQError:
                pass

    def _call(self, req: bus.RpcRequest) -> bus.RpcReply:
        assert self.mailbox is not None
        self.counters["rpc"] += 1
        method = req.method
        try:
            if method == "disseminated_hash":
                result: Any = self.disseminated_hash(*req.args, **req.kwargs)
            elif method in RPC_LOCAL:
                result = self.status() if method == "node_status" else {"pid": _pid()}
            elif method in RPC_METHODS:
                result = getattr(self.mailbox, method)(*req.args, **req.kwargs)
            else:
                raise ApiError(20, f"Invalid method: {method}")
        except ApiError as exc:
            self.counters["rpc_errors"] += 1
            return bus.RpcReply(id=req.id, ok=False, error_code=exc.code, error=exc.message[:10_000])
        except Exception as exc:
            self.counters["rpc_errors"] += 1
            if not isinstance(exc, (BmnodeError, TypeError)):
                log.exception("mailbox call %s failed", method)
            return bus.RpcReply(id=req.id, ok=False, error_code=21, error=f"Unexpected API Failure - {exc}"[:10_000])
        if method in IDENTITY_METHODS:
            self._refresh_keys()
        if method == "disseminate_object":
            for out in self.mailbox.outbox():
                if out.hash not in self._outgoing:
                    self._publish(out)
        if method not in READ_METHODS:
            self._tick_due = True
        return bus.RpcReply(id=req.id, ok=True, result=result)

    def disseminated_hash(self, digest: bytes) -> str | None:
        """The inventory hash (hex) of the published object whose bytes after the nonce have
        this SHA-512 ``digest`` (an object of disseminatePreEncryptedMsg whose PoW is done), else
        None. A digest, not the object: the API polls this while it waits."""
        if not isinstance(digest, (bytes, bytearray)) or len(digest) != 64:
            raise ApiError(22, "Decode error - expected the 64-byte SHA-512 digest of the object after its nonce")
        h = self._disseminated.get(bytes(digest))
        return None if h is None else h.hex()

    def status(self) -> dict[str, Any]:
        """Counters of this process, the pool and the mailbox (the ``node_status`` call)."""
        assert self.mailbox is not None and self.pool is not None
        return {
            "pid": _pid(),
            "process": dict(self.counters),
            "pool": dict(self.pool.stats, workers=self.pool.workers, generation=self.pool.generation,
                         pending=self.pool.pending),
            "mailbox": self.mailbox.counters(),
            "outgoing": len(self._outgoing),
            "pow_jobs": len(self._jobs),
            "inventory_mark": self._mark,
        }


def _pid() -> int:
    return os.getpid()


def mailbox_config(config: Any) -> MailboxConfig:
    """The MailboxConfig of a :class:`~bmnode.node.config.NodeConfig`."""
    return MailboxConfig(
        min_ntpb=config.network_pow[0],
        min_extra=config.network_pow[1],
        streams=frozenset(config.streams),
        onion_peer=config.onion_peer,
    )


def mailbox_main(config: Any, *, bus_dir: str | None = None) -> int:
    """Entry point of the mailbox process (a :class:`~bmnode.node.config.NodeConfig`)."""
    from bmnode.node.fullnode import setup_process_logging

    setup_process_logging(config.log_level, "mailbox")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    from bmnode.node.decryptpool import default_workers

    workers = config.decrypt_workers if config.decrypt_workers is not None else default_workers()
    notify_path = getattr(config, "api_notify_path", None)
    notifier = ApiNotifier(notify_path) if notify_path else None
    service = MailboxService(
        config.data_dir, bus.Endpoints(bus_dir or config.data_dir), config=mailbox_config(config),
        decrypt_workers=workers, notify=notifier.notify if notifier is not None else None,
    )
    try:
        service.open()
        service.run(stop)
    finally:
        service.close()
        if notifier is not None:
            notifier.close(wait=2.0)
    log.info("mailbox process stopped")
    return 0
