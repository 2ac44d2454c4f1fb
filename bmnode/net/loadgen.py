"""Relay load generator (issue 4): N protocol peers on loopback that offer valid objects to
one node at a chosen rate and check that the node relays every one of them.

Each peer does the real handshake (and TLS when asked) with :class:`~bmnode.net.testnet.RawPeer`,
then offers its share of the objects with ``inv``, answers the node's ``getdata`` with the
``object`` bytes, and watches the node's ``inv`` announcements. An object sent by peer A
counts as relayed once *every other* peer has had it announced; one other peer per object
(``fetch_every``) also asks for it with ``getdata`` and compares the bytes it gets back with
the ones A sent. Objects are made (with the PoW of the lowered network difficulty) before any
connection is opened, so the timed part is the node's work, not ours.

Only loopback targets are allowed (:func:`loopback_host`). :class:`NodeProcess` starts a
node (``python -m bmnode.net``, the ``bmnode run`` net process) in its own process, for the
``--spawn-node`` mode and the relay benchmark, and reads its CPU time and memory from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bmnode.errors import BmnodeError, MalformedMessage
from bmnode.net.testnet import LOOPBACK, TEST_POW, RawPeer, make_object
from bmnode.protocol.constants import (
    INV_HASH_SIZE,
    MAX_INV_ENTRIES_SENT,
    NODE_NETWORK,
    NODE_SSL,
)
from bmnode.protocol.encoding import decode_var_int, encode_var_int
from bmnode.protocol.framing import frame
from bmnode.protocol.hashing import inventory_hash
from bmnode.protocol.messages import Error

__all__ = [
    "LoadgenError",
    "LoadgenOptions",
    "LoadgenReport",
    "NodeProcess",
    "generate_objects",
    "loopback_host",
    "main",
    "proc_cpu_seconds",
    "proc_memory_kb",
    "run_loadgen",
]

HEADER_SIZE = 24
#: Hashes per getdata we send when fetching objects back.
FETCH_CHUNK = 1000
#: Fetch requests outstanding per peer (the node serves at most 50,000 queued hashes per peer).
FETCH_WINDOW = 10_000
PONG = frame("pong")


class LoadgenError(BmnodeError):
    """A load generator run that cannot start (bad target, bad options, node failed to start)."""


def loopback_host(host: str) -> str:
    """``host`` as a loopback IP literal ("localhost" means 127.0.0.1); any other address or
    name raises LoadgenError: the load generator never dials anything off this machine."""
    h = host.strip()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if h.lower() == "localhost":
        return LOOPBACK
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        raise LoadgenError(
            f"refusing target {host!r}: the load generator only connects to loopback addresses "
            f"such as {LOOPBACK} (no host names)"
        ) from None
    if not ip.is_loopback:
        raise LoadgenError(f"refusing target {host!r}: not a loopback address; the load generator only connects to {LOOPBACK}")
    return str(ip)


# ============================================================================ options / report


@dataclass
class LoadgenOptions:
    """One run: ``peers`` connections to ``host:port`` offer ``count`` objects in all at
    ``rate`` objects/s (0 = all at once), then wait for the node to relay them."""

    port: int
    host: str = LOOPBACK
    peers: int = 10
    count: int = 1000
    rate: float = 500.0
    #: Payload bytes per object (the object is about 22 bytes more).
    size: int = 64
    ttl: int = 3600
    network_pow: tuple[int, int] = TEST_POW
    tls: bool = False
    #: Every k-th object is fetched back by one other peer and compared; 0 = none.
    fetch_every: int = 1
    #: Seconds between the handshakes and the first offer (the node waits about 1 s before
    #: its first getdata to a new peer).
    warmup: float = 1.5
    #: Stop waiting when nothing happened for this long after the last offer.
    settle: float = 5.0
    #: Hard bound on the whole run after the handshakes.
    max_wait: float = 300.0
    #: Smallest interval between two offers of one peer (objects offered together share one inv).
    batch_interval: float = 0.05
    handshake_timeout: float = 20.0
    #: Processes making objects (0 = one per CPU; only used for large counts).
    gen_procs: int = 0

    def check(self) -> None:
        """Raise LoadgenError for options that cannot work."""
        self.host = loopback_host(self.host)
        if not 1 <= self.port <= 65535:
            raise LoadgenError(f"port {self.port} out of range 1..65535")
        if self.peers < 2:
            raise LoadgenError("at least 2 peers are needed (the node never announces an object back to its sender)")
        if self.peers > 1000:
            raise LoadgenError("at most 1000 peers")
        if self.count < 1:
            raise LoadgenError("count must be at least 1")
        if self.rate < 0:
            raise LoadgenError("rate must be >= 0 (0 = as fast as possible)")
        if self.size < 0 or self.ttl < 1:
            raise LoadgenError("size must be >= 0 and ttl >= 1")
        if self.fetch_every < 0:
            raise LoadgenError("fetch_every must be >= 0")


@dataclass
class LoadgenReport:
    """What happened; :attr:`ok` is False when any object went missing or came back wrong."""

    target: str
    peers: int
    tls: bool
    network_pow: str
    object_size: int
    count: int
    offered: int = 0
    #: Objects the node asked for (getdata) at least once.
    requested: int = 0
    sent: int = 0
    #: Announced to at least one other peer (the node accepted and relayed it).
    accepted: int = 0
    #: Announced to every other peer.
    announced_all: int = 0
    #: Offered objects not announced to every other peer.
    missing: int = 0
    fetch_requested: int = 0
    fetched_ok: int = 0
    fetch_wrong: int = 0
    fetch_unanswered: int = 0
    #: Announcements of an object back to the peer that sent it (the node must not do that).
    echoed: int = 0
    duplicate_announcements: int = 0
    #: Announced hashes that are not ours (the node's older inventory).
    foreign_hashes: int = 0
    getdata_unknown: int = 0
    getdata_repeated: int = 0
    unexpected_objects: int = 0
    disconnects: int = 0
    disconnect_reasons: list[str] = field(default_factory=list)
    errors_received: list[str] = field(default_factory=list)
    generate_s: float = 0.0
    handshake_s: float = 0.0
    #: First offer to last offer.
    offer_s: float = 0.0
    #: First offer to the last object announced to every other peer.
    relay_s: float = 0.0
    #: Achieved offer rate (None when everything was offered at once).
    offer_rate: float | None = None
    #: announced_all / relay_s.
    relay_rate: float = 0.0
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None
    latency_max_s: float | None = None
    #: Median latency of the first and of the last tenth of the objects (in offer order): a
    #: node that keeps up with the offered rate shows no growth between the two.
    latency_early_p50_s: float | None = None
    latency_late_p50_s: float | None = None
    loadgen_cpu_s: float = 0.0
    wall_s: float = 0.0
    #: Wall-clock time.monotonic() of the first offer (to line up with other measurements).
    first_offer_mono: float = 0.0
    last_done_mono: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.offered == self.count
            and self.missing == 0
            and self.fetch_wrong == 0
            and self.fetch_unanswered == 0
            and self.echoed == 0
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def format(self) -> str:
        """A human-readable summary."""

        def s(x: float | None) -> str:
            return "-" if x is None else f"{x:.3f} s"

        offered = "offered all at once" if self.offer_rate is None else f"offered at {self.offer_rate:,.0f}/s"
        lines = [
            f"loadgen: {self.peers} peers -> {self.target}, {self.count} objects of {self.object_size} B payload "
            f"(PoW {self.network_pow}, {'TLS' if self.tls else 'plaintext'}, {offered})",
            f"  offered {self.offered}, requested by the node {self.requested}, sent {self.sent}",
            f"  accepted (announced to another peer) {self.accepted}, announced to every other peer "
            f"{self.announced_all}, missing {self.missing}",
            f"  fetched back {self.fetched_ok} of {self.fetch_requested} (bytes equal), wrong {self.fetch_wrong}, "
            f"unanswered {self.fetch_unanswered}",
            f"  echoed to sender {self.echoed}, duplicate announcements {self.duplicate_announcements}, "
            f"foreign hashes {self.foreign_hashes}, disconnects {self.disconnects}",
            f"  relay: {self.relay_rate:,.0f} objects/s (first offer to last announcement)"
            + f"; offer -> every peer p50 {s(self.latency_p50_s)}, p99 {s(self.latency_p99_s)}, max {s(self.latency_max_s)}"
            + f" (first tenth p50 {s(self.latency_early_p50_s)}, last tenth {s(self.latency_late_p50_s)})",
            f"  objects made in {self.generate_s:.2f} s, handshakes {self.handshake_s:.2f} s, "
            f"loadgen CPU {self.loadgen_cpu_s:.2f} s, wall {self.wall_s:.2f} s",
        ]
        for e in self.errors_received[:5]:
            lines.append(f"  node said: {e}")
        for r in self.disconnect_reasons[:5]:
            lines.append(f"  disconnected: {r}")
        lines.append("  result: " + ("OK" if self.ok else "OBJECTS MISSING OR WRONG"))
        return "\n".join(lines)


# ============================================================================ objects


def _gen_chunk(args: tuple[int, int, int, int, int]) -> list[bytes]:
    n, size, ttl, ntpb, extra = args
    return [make_object(ttl=ttl, size=size, ntpb=ntpb, extra=extra) for _ in range(n)]


def generate_objects(
    count: int, *, size: int = 64, ttl: int = 3600, network_pow: tuple[int, int] = TEST_POW, procs: int = 0
) -> list[bytes]:
    """``count`` distinct valid objects (random payloads, PoW for ``network_pow``), made in
    several processes when there are many."""
    ntpb, extra = network_pow
    procs = procs or os.cpu_count() or 1
    if count < 4000 or procs <= 1:
        return _gen_chunk((count, size, ttl, ntpb, extra))
    per = math.ceil(count / (procs * 4))
    jobs = []
    left = count
    while left > 0:
        jobs.append((min(per, left), size, ttl, ntpb, extra))
        left -= per
    with ProcessPoolExecutor(procs, mp_context=get_context("spawn")) as pool:
        out: list[bytes] = []
        for chunk in pool.map(_gen_chunk, jobs):
            out.extend(chunk)
    return out


class _HashTable:
    """Vectorised lookup of received 32-byte hashes among ours (first 8 bytes as a sorted
    key, then a full comparison)."""

    def __init__(self, hashes: Sequence[bytes]) -> None:
        self.mat = np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(-1, INV_HASH_SIZE)
        keys = np.ascontiguousarray(self.mat[:, :8]).view("<u8").ravel()
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order]
        if len(self.keys) > 1 and bool(np.any(self.keys[1:] == self.keys[:-1])):
            raise LoadgenError("two generated objects share a 64-bit hash prefix; run again")

    def lookup(self, rows: np.ndarray) -> np.ndarray:
        """Index of each row's hash in ours, or -1."""
        if len(rows) == 0:
            return np.zeros(0, dtype=np.int64)
        q = np.ascontiguousarray(rows[:, :8]).view("<u8").ravel()
        pos = np.searchsorted(self.keys, q)
        pos[pos >= len(self.keys)] = 0
        idx = self.order[pos]
        ok = (self.keys[pos] == q) & np.all(self.mat[idx] == rows, axis=1)
        return np.where(ok, idx, -1)


def _hash_rows(payload: bytes) -> np.ndarray | None:
    """The hashes of an inv/getdata payload as an (n, 32) array; None when malformed."""
    try:
        n, used = decode_var_int(payload, 0)
    except MalformedMessage:
        return None
    if len(payload) - used != n * INV_HASH_SIZE:
        return None
    if n == 0:
        return np.zeros((0, INV_HASH_SIZE), dtype=np.uint8)
    return np.frombuffer(payload, dtype=np.uint8, offset=used, count=n * INV_HASH_SIZE).reshape(n, INV_HASH_SIZE)


def _hash_list_frames(command: str, hashes: Sequence[bytes], chunk: int) -> bytes:
    out = []
    for i in range(0, len(hashes), chunk):
        part = hashes[i : i + chunk]
        out.append(frame(command, encode_var_int(len(part)) + b"".join(part)))
    return b"".join(out)


# ============================================================================ the run


class _Peer:
    """One load-generating connection."""

    def __init__(self, run: "_Run", pid: int, raw: RawPeer) -> None:
        self.run = run
        self.pid = pid
        self.raw = raw
        self.got = np.zeros(run.count, dtype=bool)
        self.fetch_queue: list[int] = []
        self.pending_fetch: set[int] = set()
        self.closed = False
        self.close_reason = ""
        self.task: asyncio.Task | None = None

    # -- output
    def write(self, data: bytes) -> None:
        if not self.closed:
            try:
                self.raw.write(data)
            except Exception as exc:  # TLS engine or transport failure
                self._close(f"write failed: {exc}")

    def _close(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            self.run.disconnects += 1
            self.run.disconnect_reasons.append(f"peer {self.pid}: {reason}")
            self.run.progress()
            try:
                self.raw.close()
            except Exception:
                pass

    # -- input
    async def read_loop(self) -> None:
        raw = self.raw
        try:
            pending = raw.frames
            raw.frames = []
            for f in pending:
                self.handle(f.command, f.payload)
            await raw.writer.drain()
            while not self.closed:
                data = await raw.reader.read(1 << 20)
                if not data:
                    self._close("node closed the connection")
                    break
                if raw.tls is not None:
                    data = raw.tls.receive(data)
                    out = raw.tls.outgoing()
                    if out:
                        raw.writer.write(out)
                    if not data:
                        continue
                for f in raw.decoder.feed(data):
                    self.handle(f.command, f.payload)
                await raw.writer.drain()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._close(f"{type(exc).__name__}: {exc}")

    def handle(self, command: str, payload: bytes) -> None:
        if command == "inv":
            self.on_inv(payload)
        elif command == "getdata":
            self.on_getdata(payload)
        elif command == "object":
            self.on_object(payload)
        elif command == "ping":
            self.write(PONG)
        elif command == "error":
            try:
                self.run.errors.append(Error.decode(payload).text)
            except MalformedMessage:
                self.run.errors.append("(malformed error message)")

    def on_getdata(self, payload: bytes) -> None:
        run = self.run
        rows = _hash_rows(payload)
        if rows is None:
            run.getdata_unknown += 1
            return
        idx = run.table.lookup(rows)
        mine = idx[idx >= 0]
        mine = mine[run.origin[mine] == self.pid]
        run.getdata_unknown += len(rows) - len(mine)
        if not len(mine):
            return
        first = mine[np.isnan(run.sent_t[mine])]
        run.getdata_repeated += len(mine) - len(first)
        run.sent_t[first] = time.monotonic()
        run.sent += len(mine)
        frames = run.frames
        self.write(b"".join([frames[i] for i in mine.tolist()]))
        run.progress()

    def on_inv(self, payload: bytes) -> None:
        run = self.run
        rows = _hash_rows(payload)
        if rows is None:
            return
        idx = run.table.lookup(rows)
        known = idx[idx >= 0]
        run.foreign_hashes += len(idx) - len(known)
        if not len(known):
            return
        uniq = np.unique(known)
        fresh = uniq[~self.got[uniq]]
        run.duplicate_announcements += len(known) - len(fresh)
        if not len(fresh):
            return
        self.got[fresh] = True
        org = run.origin[fresh]
        run.echoed += int(np.count_nonzero(org == self.pid))
        others = fresh[org != self.pid]
        if not len(others):
            return
        now = time.monotonic()
        c = run.counts[others] + 1
        run.counts[others] = c
        run.first_t[others[c == 1]] = now
        done = others[c == run.n_peers - 1]
        if len(done):
            run.done_t[done] = now
            run.completed += len(done)
        if run.opts.fetch_every:
            want = others[run.fetcher[others] == self.pid]
            if len(want):
                self.fetch_queue.extend(want.tolist())
                self.request_more()
        run.progress()

    def request_more(self) -> None:
        room = FETCH_WINDOW - len(self.pending_fetch)
        if room <= 0 or not self.fetch_queue:
            return
        take, self.fetch_queue = self.fetch_queue[:room], self.fetch_queue[room:]
        self.pending_fetch.update(take)
        self.run.fetch_requested += len(take)
        hashes = [self.run.hashes[i] for i in take]
        self.write(_hash_list_frames("getdata", hashes, FETCH_CHUNK))

    def on_object(self, payload: bytes) -> None:
        run = self.run
        i = run.index.get(inventory_hash(payload))
        if i is None or i not in self.pending_fetch:
            run.unexpected_objects += 1
            return
        self.pending_fetch.discard(i)
        if memoryview(run.frames[i])[HEADER_SIZE:] == payload:
            run.fetched_ok += 1
        else:  # same hash, other bytes: cannot happen short of a hash collision
            run.fetch_wrong += 1
        if self.fetch_queue and len(self.pending_fetch) < FETCH_WINDOW // 2:
            self.request_more()
        run.progress()


class _Run:
    """Shared state of one run (arrays indexed by object number)."""

    def __init__(self, opts: LoadgenOptions, objects: Sequence[bytes]) -> None:
        self.opts = opts
        self.count = len(objects)
        self.n_peers = opts.peers
        self.frames = [frame("object", o) for o in objects]
        self.hashes = [inventory_hash(o) for o in objects]
        self.index = {h: i for i, h in enumerate(self.hashes)}
        self.table = _HashTable(self.hashes)
        n = self.count
        self.origin = np.arange(n, dtype=np.int64) % opts.peers
        if opts.fetch_every:
            self.fetcher = np.where(np.arange(n) % opts.fetch_every == 0, (self.origin + 1) % opts.peers, -1)
        else:
            self.fetcher = np.full(n, -1, dtype=np.int64)
        self.counts = np.zeros(n, dtype=np.int32)
        self.offer_t = np.full(n, np.nan)
        self.sent_t = np.full(n, np.nan)
        self.first_t = np.full(n, np.nan)
        self.done_t = np.full(n, np.nan)
        self.completed = 0
        self.offered = 0
        self.first_offer = 0.0
        self.last_offer = 0.0
        self.sent = 0
        self.echoed = 0
        self.duplicate_announcements = 0
        self.foreign_hashes = 0
        self.getdata_unknown = 0
        self.getdata_repeated = 0
        self.unexpected_objects = 0
        self.fetch_requested = 0
        self.fetched_ok = 0
        self.fetch_wrong = 0
        self.disconnects = 0
        self.disconnect_reasons: list[str] = []
        self.errors: list[str] = []
        self.events = 0
        self.peers: list[_Peer] = []

    def progress(self) -> None:
        self.events += 1

    def fetch_pending(self) -> int:
        return sum(len(p.pending_fetch) + len(p.fetch_queue) for p in self.peers if not p.closed)


async def _connect(opts: LoadgenOptions, services: int) -> RawPeer:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(opts.host, opts.port, limit=1 << 22), opts.handshake_timeout
    )
    raw = RawPeer(reader, writer, outbound=True)
    try:
        # listen_port 0: the node records no address for us and never dials us back.
        await raw.handshake(opts.handshake_timeout, services=services, listen_port=0)
    except BaseException:
        writer.close()
        raise
    return raw


async def _offer(run: _Run) -> None:
    """Offer every object with inv at the configured rate (progress kept in ``run``)."""
    opts = run.opts
    n_peers = opts.peers
    count = run.count
    t0 = run.first_offer = run.last_offer = time.monotonic()
    offered = 0
    while offered < count:
        now = time.monotonic()
        due = count if opts.rate <= 0 else min(count, int((now - t0) * opts.rate) + 1)
        if due > offered:
            for peer in run.peers:
                first = offered + (peer.pid - offered) % n_peers
                idxs = range(first, due, n_peers)
                if not idxs:
                    continue
                if peer.closed:
                    continue
                peer.write(_hash_list_frames("inv", [run.hashes[i] for i in idxs], MAX_INV_ENTRIES_SENT))
                run.offer_t[first:due:n_peers] = now
                run.offered += len(idxs)
            offered = due
            run.last_offer = now
            await asyncio.gather(*(p.raw.writer.drain() for p in run.peers if not p.closed), return_exceptions=True)
        if offered >= count:
            break
        next_due = t0 + offered / opts.rate
        await asyncio.sleep(max(opts.batch_interval, next_due - time.monotonic()))


async def run_loadgen(opts: LoadgenOptions, objects: Sequence[bytes] | None = None) -> LoadgenReport:
    """Connect ``opts.peers`` peers, offer the objects (made here unless given), wait until
    the node relayed them all (or nothing happens for ``opts.settle`` s) and report."""
    opts.check()
    wall0 = time.monotonic()
    cpu0 = time.process_time()
    report = LoadgenReport(
        target=f"{opts.host}:{opts.port}",
        peers=opts.peers,
        tls=opts.tls,
        network_pow=f"{opts.network_pow[0]}:{opts.network_pow[1]}",
        object_size=opts.size,
        count=opts.count,
    )
    if objects is None:
        t = time.monotonic()
        loop = asyncio.get_running_loop()
        objects = await loop.run_in_executor(
            None,
            lambda: generate_objects(opts.count, size=opts.size, ttl=opts.ttl, network_pow=opts.network_pow, procs=opts.gen_procs),
        )
        report.generate_s = time.monotonic() - t
    else:
        objects = list(objects)
        if len(objects) != opts.count:
            raise LoadgenError(f"{len(objects)} objects given for count {opts.count}")
    run = _Run(opts, objects)

    services = NODE_NETWORK | (NODE_SSL if opts.tls else 0)
    t = time.monotonic()
    results = await asyncio.gather(*(_connect(opts, services) for _ in range(opts.peers)), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        for r in results:
            if isinstance(r, RawPeer):
                r.close()
        raise LoadgenError(
            f"{len(failures)} of {opts.peers} peers could not connect/handshake with {report.target}: "
            f"{type(failures[0]).__name__}: {failures[0]}"
        )
    report.handshake_s = time.monotonic() - t
    run.peers = [_Peer(run, i, raw) for i, raw in enumerate(results)]  # type: ignore[arg-type]
    for p in run.peers:
        p.task = asyncio.create_task(p.read_loop(), name=f"loadgen-peer-{p.pid}")
    try:
        await asyncio.sleep(opts.warmup)
        hard = wall0 + opts.max_wait
        try:
            await asyncio.wait_for(_offer(run), max(0.0, hard - time.monotonic()))
        except TimeoutError:
            pass  # the node stopped reading: report what was offered
        offered = run.offered
        report.offered = offered
        report.first_offer_mono = run.first_offer
        report.offer_s = run.last_offer - run.first_offer
        # Wait for the relay to finish, or for nothing to happen for `settle` seconds.
        seen = -1
        quiet_since = time.monotonic()
        while True:
            now = time.monotonic()
            if run.completed >= offered and run.fetch_pending() == 0:
                break
            if all(p.closed for p in run.peers) or now >= hard:
                break
            if run.events != seen:
                seen = run.events
                quiet_since = now
            elif now - quiet_since >= opts.settle:
                break
            await asyncio.sleep(0.02)
    finally:
        for p in run.peers:
            if p.task is not None:
                p.task.cancel()
        for p in run.peers:
            if p.task is not None:
                try:
                    await p.task
                except (asyncio.CancelledError, Exception):
                    pass
            try:
                p.raw.close()
            except Exception:
                pass
    _fill_report(report, run, opts)
    report.loadgen_cpu_s = time.process_time() - cpu0
    report.wall_s = time.monotonic() - wall0
    return report


def _fill_report(report: LoadgenReport, run: _Run, opts: LoadgenOptions) -> None:
    offered_mask = ~np.isnan(run.offer_t)
    done_mask = ~np.isnan(run.done_t)
    report.requested = int(np.count_nonzero(~np.isnan(run.sent_t)))
    report.sent = run.sent
    report.accepted = int(np.count_nonzero(~np.isnan(run.first_t)))
    report.announced_all = int(np.count_nonzero(done_mask))
    report.missing = int(np.count_nonzero(offered_mask & ~done_mask)) + (report.count - report.offered)
    report.fetch_requested = run.fetch_requested
    report.fetched_ok = run.fetched_ok
    report.fetch_wrong = run.fetch_wrong
    report.fetch_unanswered = sum(len(p.pending_fetch) + len(p.fetch_queue) for p in run.peers)
    report.echoed = run.echoed
    report.duplicate_announcements = run.duplicate_announcements
    report.foreign_hashes = run.foreign_hashes
    report.getdata_unknown = run.getdata_unknown
    report.getdata_repeated = run.getdata_repeated
    report.unexpected_objects = run.unexpected_objects
    report.disconnects = run.disconnects
    report.disconnect_reasons = run.disconnect_reasons[:20]
    report.errors_received = run.errors[:20]
    if opts.rate > 0 and report.offer_s > 0:
        report.offer_rate = max(report.offered - 1, 0) / report.offer_s
    if report.announced_all:
        done = np.sort(run.done_t[done_mask])
        report.last_done_mono = float(done[-1])
        report.relay_s = float(done[-1] - report.first_offer_mono)
        if report.relay_s > 0:
            report.relay_rate = report.announced_all / report.relay_s
        lat = run.done_t[done_mask] - run.offer_t[done_mask]
        report.latency_p50_s = float(np.percentile(lat, 50))
        report.latency_p99_s = float(np.percentile(lat, 99))
        report.latency_max_s = float(lat.max())
        order = np.argsort(run.offer_t[done_mask], kind="stable")
        tenth = max(1, len(order) // 10)
        report.latency_early_p50_s = float(np.median(lat[order[:tenth]]))
        report.latency_late_p50_s = float(np.median(lat[order[-tenth:]]))


# ============================================================================ node process


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` in seconds (from /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of process ``pid`` in KiB (from /proc/PID/status)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


_UP_LINE = re.compile(r"bmnode net process up: .*?port (\d+)")


class NodeProcess:
    """A relay node (``python -m bmnode.net``, what ``bmnode run`` starts) in its own process,
    listening on 127.0.0.1 (any free port), never bootstrapping. Its log (INFO: the port is
    read from it) goes to ``node.log`` in the data directory."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        network_pow: tuple[int, int] = TEST_POW,
        tls: bool = True,
        dandelion: bool = True,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.network_pow = network_pow
        self.tls = tls
        self.dandelion = dandelion
        self.extra_args = list(extra_args)
        self.log_path = self.data_dir / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._log_start = 0

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise LoadgenError("node process not started")
        return self.proc.pid

    def command(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "bmnode.net",
            "--data-dir", str(self.data_dir),
            "--listen", f"{LOOPBACK}:0",
            "--no-bootstrap",
            "--network-pow", f"{self.network_pow[0]}:{self.network_pow[1]}",
            "--log-level", "INFO",
        ]
        if not self.tls:
            cmd.append("--no-tls")
        if not self.dandelion:
            cmd.append("--no-dandelion")
        return cmd + self.extra_args

    def start(self, timeout: float = 30.0) -> int:
        """Start the node and wait until it listens; returns its port."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            self._log_start = self.log_path.stat().st_size
        except OSError:
            self._log_start = 0
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=root)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = _UP_LINE.search(self.log_tail(20_000))
            if m:
                self.port = int(m.group(1))
                return self.port
            if self.proc.poll() is not None:
                raise LoadgenError(f"node exited with status {self.proc.returncode}:\n{self.log_tail(2000)}")
            time.sleep(0.05)
        self.stop()
        raise LoadgenError(f"node did not start listening within {timeout:.0f} s:\n{self.log_tail(2000)}")

    def log_tail(self, n: int = 4000) -> str:
        """The last ``n`` bytes this process logged (earlier runs in the same directory excluded)."""
        try:
            data = self.log_path.read_bytes()[self._log_start :]
        except OSError:
            return ""
        return data[-n:].decode("utf-8", "replace")

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def memory_kb(self) -> dict[str, int]:
        return proc_memory_kb(self.pid)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (clean shutdown), then SIGKILL after ``timeout``; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def __enter__(self) -> "NodeProcess":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ============================================================================ command line


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="tools/loadgen",
        description="Act as N peers on loopback that offer valid objects to a bmnode relay and check that "
        "every object is announced to the other peers and served back byte for byte.",
    )
    tgt = ap.add_mutually_exclusive_group(required=True)
    tgt.add_argument("--target", metavar="HOST:PORT", help="the node to load (loopback only, e.g. 127.0.0.1:8444)")
    tgt.add_argument(
        "--spawn-node", action="store_true",
        help="start a node (python -m bmnode.net) on 127.0.0.1 in a temporary data directory and load it",
    )
    ap.add_argument("--peers", type=int, default=10, help="connections acting as peers (default 10, at least 2)")
    ap.add_argument("--count", type=int, default=1000, help="objects to offer in all (default 1000)")
    ap.add_argument("--rate", type=float, default=500.0, help="objects/s offered in all, spread over the peers; 0 = all at once (default 500)")
    ap.add_argument("--duration", type=float, default=None, help="offer for this many seconds: count = rate x duration")
    ap.add_argument("--size", type=int, default=64, help="payload bytes per object (default 64)")
    ap.add_argument("--ttl", type=int, default=3600, help="object time to live in seconds (default 3600)")
    ap.add_argument(
        "--network-pow", metavar="NTPB:EXTRA", default=f"{TEST_POW[0]}:{TEST_POW[1]}",
        help="PoW difficulty of the objects; must match the node's --network-pow (default 1:1)",
    )
    ap.add_argument("--tls", action="store_true", help="offer TLS (NODE_SSL) on every connection")
    ap.add_argument("--fetch-every", type=int, default=1, help="fetch back every k-th object with getdata and compare; 0 = never (default 1)")
    ap.add_argument("--warmup", type=float, default=1.5, help="seconds between the handshakes and the first offer (default 1.5)")
    ap.add_argument("--settle", type=float, default=5.0, help="stop waiting after this many seconds without progress (default 5)")
    ap.add_argument("--max-wait", type=float, default=300.0, help="hard limit on a run in seconds (default 300)")
    ap.add_argument("--gen-procs", type=int, default=0, help="processes making objects (default: one per CPU)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    return ap


def main(argv: list[str] | None = None) -> int:
    """``tools/loadgen``: 0 when every object was relayed and served back intact, 1 when some
    went missing or came back wrong, 2 when the run could not start."""
    from bmnode.node.config import ConfigError, parse_host_port, parse_network_pow

    args = _parser().parse_args(argv)
    try:
        pow_ = parse_network_pow(args.network_pow, where="--network-pow")
        count = args.count
        if args.duration is not None:
            if args.duration <= 0 or args.rate <= 0:
                raise LoadgenError("--duration needs a positive --rate and duration")
            count = max(1, int(args.rate * args.duration))
        host, port = LOOPBACK, 1
        if args.target:
            hp = parse_host_port(args.target, where="--target")
            host, port = loopback_host(hp.host), hp.port
        opts = LoadgenOptions(
            port=port, host=host, peers=args.peers, count=count, rate=args.rate, size=args.size, ttl=args.ttl,
            network_pow=pow_, tls=args.tls, fetch_every=args.fetch_every, warmup=args.warmup,
            settle=args.settle, max_wait=args.max_wait, gen_procs=args.gen_procs,
        )
        opts.check()
    except (LoadgenError, ConfigError) as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2

    node: NodeProcess | None = None
    tmp: tempfile.TemporaryDirectory[str] | None = None
    try:
        if args.spawn_node:
            tmp = tempfile.TemporaryDirectory(prefix="bmnode-loadgen-")
            node = NodeProcess(Path(tmp.name) / "node", network_pow=pow_)
            opts.port = node.start()
        report = asyncio.run(run_loadgen(opts))
    except LoadgenError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.stop()
        if tmp is not None:
            tmp.cleanup()
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
