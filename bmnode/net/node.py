"""The relay node (spec 4.4-4.10, 5, 6, 7.2, 11): listen, dial, validate, store, announce, serve.

:class:`RelayNode` owns the connections of one net process. Every received object goes
through :func:`bmnode.protocol.validation.check_relay` once before it is stored in the
:class:`~bmnode.store.inventory.Inventory` and announced (batched, shuffled ``inv`` about once
a second) to every established peer in its stream except those that announced or sent it.
Downloads ask one peer per object (:class:`~bmnode.net.download.DownloadTracker`); getdata is
served from the inventory while the peer's output buffer has room. Locally injected objects
go through Dandelion's stem phase when enabled (:class:`~bmnode.net.dandelion.DandelionState`).

All of it runs on one asyncio event loop; nothing here blocks except short SQLite calls.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import random
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

from bmnode.errors import MalformedMessage
from bmnode.net.bootstrap import BOOTSTRAP_NAMES, BOOTSTRAP_ONION
from bmnode.net.connection import (
    ERR_SELF,
    ERR_SERVER_FULL,
    ERR_TOO_MANY_FROM_IP,
    Connection,
    ConnectionSettings,
)
from bmnode.net.dandelion import LOCAL, DandelionState
from bmnode.net.download import DownloadTracker
from bmnode.net.lan import LanDiscovery
from bmnode.net.settings import NetSettings
from bmnode.net.socks import ProxyError, ProxyRefused, ProxySettings, open_via_proxy
from bmnode.net.tls import tls_available
from bmnode.protocol.constants import (
    MAX_ADDR_ENTRIES,
    NODE_DANDELION,
    NODE_NETWORK,
    NODE_SSL,
    OBJECT_ONIONPEER,
)
from bmnode.protocol.encoding import encode_var_int
from bmnode.protocol.framing import frame
from bmnode.protocol.hashing import inventory_hash
from bmnode.protocol.hosts import is_public
from bmnode.protocol.messages import (
    Addr,
    Dinv,
    GetData,
    Inv,
    Message,
    ObjectMessage,
    Version,
)
from bmnode.protocol.objects import OnionPeerPayload, parse_object
from bmnode.protocol.validation import RelayVerdict, check_relay
from bmnode.store.inventory import Inventory
from bmnode.store.knownnodes import KnownNodes, dial_group, filter_addr, is_onion

log = logging.getLogger(__name__)

Peer = tuple[str, int]
#: Seconds between one-off bootstrap connection attempts (12.3).
BOOTSTRAP_RETRY = 300.0
#: At most one warning this often that the SOCKS proxy itself is unreachable.
PROXY_WARN_INTERVAL = 60.0
#: Called for every new valid object: (inventory hash, object bytes, verdict, local?).
ObjectHook = Callable[[bytes, bytes, RelayVerdict, bool], None]


@dataclass
class PeerState:
    """The node's per-connection bookkeeping (kept in ``Connection.peer``)."""

    streams: frozenset[int] = frozenset()
    serve_queue: deque[bytes] = field(default_factory=deque)
    pending_inv: list[bytes] = field(default_factory=list)
    #: getdata received before this (monotonic) time is served only then (anti-intersection delay).
    serve_after: float = 0.0
    #: getdata is ignored until this time (after the peer asked for something we lack).
    skip_getdata_until: float = 0.0
    #: our first getdata to this peer waits until then.
    getdata_after: float = 0.0
    big_inv_task: asyncio.Task | None = None
    serve_timer: asyncio.TimerHandle | None = None
    download_timer: asyncio.TimerHandle | None = None


@dataclass(frozen=True)
class InjectResult:
    """What :meth:`RelayNode.inject` did with a local object."""

    hash: bytes
    verdict: RelayVerdict
    new: bool
    stem: bool

    @property
    def accepted(self) -> bool:
        return self.verdict.accept


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tor_source(proxy_host: str) -> str:
    """The address Tor's connections to our onion service come from: the SOCKS proxy's host
    (``localhost`` meaning 127.0.0.1, as inbound peers are recorded by IP; an IP literal in
    the canonical text that inbound peers get, e.g. ``[::1]`` as ``::1``)."""
    if proxy_host.lower() == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(proxy_host.strip("[]"))
    except ValueError:
        return proxy_host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


class RelayNode:
    """One net process's peers, relay logic and timers. ``await start()`` / ``await stop()``."""

    def __init__(
        self,
        settings: NetSettings,
        inventory: Inventory,
        knownnodes: KnownNodes,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_object: ObjectHook | None = None,
        owns_stores: bool = False,
        own_onion: tuple[str, int] | None = None,
    ) -> None:
        self.settings = settings
        self.inventory = inventory
        self.knownnodes = knownnodes
        self.clock = clock
        self.rng = rng or random.Random()
        self.on_object = on_object
        self.owns_stores = owns_stores
        s = settings
        self.tls_enabled = bool(s.tls and tls_available())
        self.services = NODE_NETWORK | (NODE_SSL if self.tls_enabled else 0) | (NODE_DANDELION if s.dandelion_enabled else 0)
        self.streams = frozenset(s.streams)
        self.conn_settings = ConnectionSettings(
            services=self.services,
            listen_port=s.listen_port,
            streams=tuple(sorted(self.streams)),
            user_agent=s.user_agent,
            handshake_timeout=s.handshake_timeout,
            ping_interval=s.ping_interval,
            idle_timeout=s.idle_timeout,
            write_high_water=s.write_high_water,
            write_hard_limit=s.write_hard_limit,
            drain_timeout=s.drain_timeout,
            onion_port=s.onion[1] if s.onion else None,
            tor_host=_tor_source(s.proxy.host) if (s.onion and s.proxy is not None) else None,
            clock=clock,
        )
        self.connections: set[Connection] = set()
        self._nonces: dict[bytes, Connection] = {}
        self.downloads: DownloadTracker[Connection] = DownloadTracker(
            request_timeout=s.request_timeout,
            max_inflight_per_peer=s.max_inflight_per_peer,
            max_queued_per_peer=s.max_offers_per_peer,
            max_wanted=s.max_wanted,
            rng=self.rng,
        )
        self.dandelion: DandelionState[Connection] = DandelionState(
            stem_probability=s.dandelion,
            fluff_base=s.dandelion_fluff_base,
            fluff_mean=s.dandelion_fluff_mean,
            refresh_interval=s.dandelion_refresh,
            rng=self.rng,
        )
        #: Objects to announce at the next batch: hash -> (stream, expires, peers that have it).
        self._announce: dict[bytes, tuple[int, int, set[Connection]]] = {}
        #: Stem objects to announce to one child each.
        self._stem_out: dict[Connection, list[bytes]] = {}
        self._dl_dirty: set[Connection] = set()
        self._dl_scheduled = False
        self._serve_dirty: set[Connection] = set()
        self._serve_scheduled = False
        self._flush_scheduled = False
        self._dialing: dict[Peer, asyncio.Task] = {}
        self._retry: dict[Peer, tuple[float, float]] = {}
        self._self_addrs: set[Peer] = set()
        #: Our own onion service (host, port), if we run as one: a known node of stream 1
        #: flagged ``self`` (never dialled), as the reference records its ``onionhostname``.
        own_onion = own_onion if own_onion is not None else s.onion
        self.own_onion: Peer | None = (own_onion[0].lower(), own_onion[1]) if own_onion else None
        if self.own_onion is not None:
            self._self_addrs.add(self.own_onion)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._last_cleanup = 0.0
        self._next_bootstrap = 0.0
        self._proxy_warned_at = -PROXY_WARN_INTERVAL
        self.listen_port = s.listen_port
        self.counters: Counter[str] = Counter()
        self.started_at = 0.0
        #: LAN peer discovery (12.4); None when off.
        self.lan: LanDiscovery | None = LanDiscovery.from_settings(s, clock=clock, rng=self.rng)

    # ================================================================== life cycle

    @classmethod
    def open(cls, settings: NetSettings, **kwargs: object) -> "RelayNode":
        """A node with its inventory and known nodes opened in ``settings.data_dir``."""
        if settings.data_dir is None:
            raise ValueError("settings.data_dir is needed to open the stores")
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        inv = Inventory(settings.data_dir)
        try:
            kn = KnownNodes(settings.data_dir)
        except BaseException:
            inv.close()
            raise
        return cls(settings, inv, kn, owns_stores=True, **kwargs)  # type: ignore[arg-type]

    async def start(self) -> None:
        """Listen (if configured) and start the timers, the announcer and the dialer."""
        if self._running:
            return
        self._loop = asyncio.get_running_loop()
        self._running = True
        self.started_at = time.monotonic()
        s = self.settings
        if s.listen:
            self._server = await self._loop.create_server(
                lambda: Connection(self, self.conn_settings, outbound=False),
                host=s.listen_host,
                port=s.listen_port,
                reuse_address=True,
                backlog=256,
            )
            self.listen_port = self._server.sockets[0].getsockname()[1]
            self.conn_settings.listen_port = self.listen_port
            log.info("listening on %s:%d (services %#x)", s.listen_host, self.listen_port, self.services)
        if s.proxy is not None:
            log.info(
                "outbound peers through the %s%s", s.proxy,
                "" if s.listen else "; not accepting inbound peers (socks_listen is off)",
            )
        if self.lan is not None and not await self.lan.start(self.listen_port):
            self.lan = None
        await self._resolve_tor_host()
        if s.bootstrap:
            seeded = self.knownnodes.seed_defaults(int(self.clock()))
            if seeded:
                log.info("seeded %d default nodes", seeded)
        if self.own_onion is not None:
            try:
                self.knownnodes.add(1, *self.own_onion, int(self.clock()), is_self=True)
            except Exception as exc:
                log.warning("cannot record our onion service %s:%d: %s", *self.own_onion, exc)
        self.dandelion.refresh([], time.monotonic(), force=True)
        self._tasks = [
            asyncio.create_task(self._tick_loop(), name="bmnode-net-tick"),
            asyncio.create_task(self._announce_loop(), name="bmnode-net-announce"),
        ]

    async def _resolve_tor_host(self) -> None:
        """A proxy given by name (``--socks-host tor``, a container): the address Tor's
        connections to our onion service come from is what it resolves to, as the reference
        resolves ``sockshostname`` once at start. Unresolvable: logged, the name stays."""
        name = self.conn_settings.tor_host
        if name is None or self._loop is None:
            return
        try:
            ipaddress.ip_address(name)
            return
        except ValueError:
            pass
        try:
            infos = await asyncio.wait_for(self._loop.getaddrinfo(name, None, type=socket.SOCK_STREAM), 10.0)
        except (OSError, asyncio.TimeoutError, UnicodeError) as exc:
            log.warning("cannot resolve the SOCKS host %s (%s): peers of the onion service will look "
                        "like ordinary inbound peers", name, exc)
            return
        addrs = [_tor_source(str(info[4][0]).split("%", 1)[0]) for info in infos]
        if addrs:
            # IPv4 first: Tor reaches a service target such as 127.0.0.1 or a LAN address.
            self.conn_settings.tor_host = sorted(addrs, key=lambda a: ":" in a)[0]

    async def stop(self) -> None:
        """Stop listening and dialing, close every connection, flush the inventory."""
        if not self._running:
            return
        self._running = False
        if self._server is not None:
            self._server.close()
        if self.lan is not None:
            await self.lan.stop()
        for t in self._tasks + list(self._dialing.values()):
            t.cancel()
        for t in self._tasks + list(self._dialing.values()):
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        for c in list(self.connections):
            c.close("node shutting down")
        deadline = time.monotonic() + 2.0
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for c in list(self.connections):
            c.abort("node shutting down")
        await asyncio.sleep(0)
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            except (asyncio.TimeoutError, Exception):
                pass
            self._server = None
        self.inventory.flush()
        if self.owns_stores:
            self.inventory.close()
            self.knownnodes.close()
        log.info("node stopped")

    async def __aenter__(self) -> "RelayNode":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ================================================================== queries

    @property
    def established(self) -> list[Connection]:
        return [c for c in self.connections if c.established]

    def outbound(self, *, established_only: bool = False) -> list[Connection]:
        return [c for c in self.connections if c.outbound and not c.closed and (c.established or not established_only)]

    def inbound(self) -> list[Connection]:
        return [c for c in self.connections if not c.outbound and not c.closed]

    def stats(self) -> dict[str, object]:
        """Counters and gauges for metrics and benchmarks."""
        out: dict[str, object] = dict(self.counters)
        out.update(
            connections=len(self.connections),
            established=len(self.established),
            inbound=len(self.inbound()),
            outbound=len(self.outbound()),
            inventory=self.inventory.count(),
            wanted=len(self.downloads),
            stem_objects=len(self.dandelion),
            pending_announcements=len(self._announce),
            download_timeouts=self.downloads.timeouts,
            ignored_offers=self.downloads.ignored_offers,
        )
        out["bytes_received"], out["bytes_sent"] = self.peer_bytes()
        return out

    def peer_bytes(self) -> tuple[int, int]:
        """Bytes received from and sent to peers since start, closed connections included."""
        live = list(self.connections)
        return (self.counters["closed_bytes_received"] + sum(int(c.bytes_in) for c in live),
                self.counters["closed_bytes_sent"] + sum(int(c.bytes_out) for c in live))

    def has_object(self, h: bytes) -> bool:
        """Whether the inventory holds ``h``."""
        return self.inventory.has(h)

    # ================================================================== local objects

    def inject(self, obj: bytes) -> InjectResult:
        """Validate a locally created object with the relay rules, store it and send it out
        (through the Dandelion stem when enabled, 11 rule 1; else announced to everyone)."""
        obj = bytes(obj)
        now = int(self.clock())
        h = inventory_hash(obj)
        verdict = self._check(obj, now)
        if not verdict.accept:
            self.counters["inject_rejected"] += 1
            return InjectResult(h, verdict, False, False)
        assert verdict.header is not None
        if not self.inventory.add(obj, verdict.header, now, inv_hash=h):
            return InjectResult(h, verdict, False, h in self.dandelion)
        self.counters["objects_injected"] += 1
        self.downloads.forget(h)
        self._schedule_flush()
        # Stem phase only when there is a stem to hand it to: a node without outbound peers
        # announces its own objects at once instead of holding them until the fluff deadline.
        child = self.dandelion.child_for(LOCAL) if self.dandelion.enabled and self._running else None
        stem = child is not None
        if stem:
            self.dandelion.add(h, LOCAL, verdict.header.stream, time.monotonic())
            self._stem_out.setdefault(child, []).append(h)
        else:
            self._queue_announce(h, verdict.header.stream, verdict.header.expires_time, ())
        if self.on_object is not None:
            self.on_object(h, obj, verdict, True)
        return InjectResult(h, verdict, True, stem)

    def _check(self, obj: bytes, now: int) -> RelayVerdict:
        s = self.settings
        return check_relay(
            obj, now, streams=self.streams, ntpb=s.ntpb, extra=s.extra, accept_mismatch=s.accept_mismatch
        )

    # ================================================================== ConnectionOwner

    def connection_opened(self, conn: Connection) -> bool:
        if not self._running:
            return False
        s = self.settings
        if not conn.outbound:
            inbound = self.inbound()
            if len(inbound) >= s.max_inbound + s.inbound_headroom:
                self.counters["inbound_refused_full"] += 1
                return False
            if not self._per_ip_exempt(conn):
                waiting = sum(1 for c in inbound if c.host == conn.host and not c.established)
                if waiting >= s.max_handshaking_per_ip:
                    self.counters["inbound_refused_per_ip"] += 1
                    return False
        conn.peer = PeerState()
        self.connections.add(conn)
        self._nonces[conn.nonce] = conn
        self.counters["connections_outbound" if conn.outbound else "connections_inbound"] += 1
        return True

    def admit(self, conn: Connection, version: Version) -> str | None:
        """Checks 5-7 of 4.4."""
        s = self.settings
        exempt = self._per_ip_exempt(conn)
        if not conn.outbound:
            others = [c for c in self.connections if c is not conn and not c.outbound and not c.closed]
            if not exempt and any(c.host == conn.host for c in others):
                return ERR_TOO_MANY_FROM_IP
            # Check 6. Its first half (same IP and listening port already connected) can only
            # match where check 5 already did, so the capacity half is what remains.
            if len(others) + 1 > s.max_inbound:
                return ERR_SERVER_FULL
        if version.nonce in self._nonces:
            me = self._nonces[version.nonce]
            if me.outbound and me.dialled:
                self._mark_self(me.dialled)
            if conn.outbound and conn.dialled:
                self._mark_self(conn.dialled)
            return ERR_SELF
        return None

    def _per_ip_exempt(self, conn: Connection) -> bool:
        """Whether the per-IP limits (check 5 of 4.4, handshakes per IP) spare ``conn``:
        loopback peers (when configured) and every peer that reached our onion service, since
        they all come from Tor's address (the reference exempts the SOCKS host)."""
        return (self.settings.loopback_exempt_per_ip and _is_loopback(conn.host)) or conn.via_onion_service()

    def _mark_self(self, addr: Peer) -> None:
        self._self_addrs.add(addr)
        for stream in self.streams:
            try:
                self.knownnodes.add(stream, addr[0], addr[1], int(self.clock()), is_self=True)
            except Exception:  # a host name (not an IP) cannot be recorded: fine
                pass

    def connection_established(self, conn: Connection) -> None:
        st: PeerState = conn.peer  # type: ignore[assignment]
        st.streams = frozenset(conn.streams)
        mono = time.monotonic()
        now = int(self.clock())
        self.counters["established"] += 1
        log.info(
            "%s peer %s:%d established (%s, services %#x, %s)",
            "outbound" if conn.outbound else "inbound",
            conn.host,
            conn.port,
            conn.user_agent.decode("utf-8", "replace"),
            conn.services,
            conn.tls_version or "plaintext",
        )
        self._record_peer(conn, now)
        st.serve_after = mono + self._intersection_delay()
        st.getdata_after = mono + self.settings.first_getdata_delay
        self.downloads.add_peer(conn)
        if conn.outbound and self.dandelion.enabled:
            for h in self.dandelion.add_stem(conn):
                if self.inventory.has(h):
                    self._stem_out.setdefault(conn, []).append(h)
        self._send_addr(conn, now)
        st.big_inv_task = asyncio.get_running_loop().create_task(self._send_big_inv(conn))

    def _record_peer(self, conn: Connection, now: int, *, rate: bool = True) -> None:
        """Known nodes (6.2, 12.2): outbound = the dialled address; inbound = (IP, listen port).
        ``lastseen`` becomes ``now``; ``rate`` also raises the rating (on establishment)."""
        if conn.outbound and conn.dialled:
            host, port = conn.dialled
        else:
            host, port = conn.host, conn.remote_listen_port
            if conn.via_onion_service():
                return  # Tor's address, not the peer's (the reference skips these too)
            if port <= 0 or not (self.settings.allow_private_peers or is_public(host)):
                return
        for s in conn.streams[:16]:
            if s in self.streams:
                try:
                    self.knownnodes.add(s, host, port, now)
                except Exception as exc:  # a host name we dialled, not an IP
                    log.debug("not recording %s:%d: %s", host, port, exc)
        if not rate:
            return
        try:
            self.knownnodes.increase_rating(host, port)
        except Exception:
            pass
        self._retry.pop((host, port), None)

    def message_received(self, conn: Connection, msg: Message) -> None:
        if isinstance(msg, ObjectMessage):
            self._on_object(conn, msg.data)
        elif isinstance(msg, Inv):
            self._on_inv(conn, msg.hashes)
        elif isinstance(msg, GetData):
            self._on_getdata(conn, msg.hashes)
        elif isinstance(msg, Dinv):
            if self.dandelion.enabled:
                self._on_dinv(conn, msg.hashes)
            else:
                self.counters["dinv_ignored"] += 1
        elif isinstance(msg, Addr):
            self._on_addr(conn, msg)
        else:  # portcheck and unknown commands (one counter: names are peer-chosen)
            self.counters["ignored_messages"] += 1

    def connection_writable(self, conn: Connection) -> None:
        st: PeerState = conn.peer  # type: ignore[assignment]
        if st.pending_inv:
            self._flush_inv(conn)
        if st.serve_queue:
            self._schedule_serve(conn)
        if conn.reading_paused and len(st.serve_queue) < self.settings.max_serve_queue // 2:
            conn.resume_reading()

    def connection_closed(self, conn: Connection) -> None:
        if conn in self.connections:
            # Traffic of closed connections, so that peer byte totals are exact.
            self.counters["closed_bytes_received"] += int(conn.bytes_in)
            self.counters["closed_bytes_sent"] += int(conn.bytes_out)
        self.connections.discard(conn)
        if self._nonces.get(conn.nonce) is conn:
            del self._nonces[conn.nonce]
        st = conn.peer if isinstance(conn.peer, PeerState) else None
        if st is None:
            return
        if st.big_inv_task is not None and not st.big_inv_task.done():
            st.big_inv_task.cancel()
        for timer in (st.serve_timer, st.download_timer):
            if timer is not None:
                timer.cancel()
        st.serve_queue.clear()
        st.pending_inv.clear()
        self._dl_dirty.discard(conn)
        self._serve_dirty.discard(conn)
        self._stem_out.pop(conn, None)
        mono = time.monotonic()
        for peer in self.downloads.remove_peer(conn, mono):
            self._schedule_download(peer)
        self.dandelion.remove_peer(conn, mono)
        if conn.outbound and conn.dialled:
            # Also after a good connection, wait a little before dialling it again.
            self._backoff(conn.dialled)
        if conn.established_at is not None:
            # As the reference (tcp.py handle_close): a peer we were fully connected to was
            # seen until now, so a long connection does not leave a stale lastseen behind.
            self._record_peer(conn, int(self.clock()), rate=False)
        else:
            self.counters["closed_before_established"] += 1
            if conn.outbound and conn.dialled:
                try:
                    self.knownnodes.decrease_rating(*conn.dialled)
                except Exception:
                    pass
        log.info("peer %s:%d closed: %s", conn.host, conn.port, conn.close_reason)

    # ================================================================== addr

    def _send_addr(self, conn: Connection, now: int) -> None:
        streams = [s for s in conn.streams[:16] if 1 <= s <= 0xFFFFFFFF]
        if not streams:
            return
        entries = self.knownnodes.for_addr(streams, now, rng=self.rng)
        for i in range(0, len(entries), MAX_ADDR_ENTRIES):
            conn.send(Addr(tuple(entries[i : i + MAX_ADDR_ENTRIES])))
        self.counters["addr_sent"] += len(entries)

    def _on_addr(self, conn: Connection, msg: Addr) -> None:
        kept = filter_addr(msg.entries, self.streams, self.clock(), allow_private=self.settings.allow_private_peers)
        self.counters["addr_received"] += len(msg.entries)
        if kept:
            self.counters["addr_learned"] += self.knownnodes.add_addrs(kept)

    # ================================================================== inventory sync

    async def _send_big_inv(self, conn: Connection) -> None:
        """All unexpired objects of the peer's streams, minus stem objects, in inv chunks (4.7)."""
        st: PeerState = conn.peer  # type: ignore[assignment]
        now = int(self.clock())
        try:
            for stream in sorted(st.streams & self.streams):
                chunks = self.inventory.iter_unexpired(
                    stream, now, self.dandelion.hashes(), chunk_size=self.settings.inv_chunk
                )
                for chunk in chunks:
                    await conn.wait_writable()
                    conn.send(Inv(tuple(chunk)))
                    self.counters["big_inv_hashes"] += len(chunk)
                    await asyncio.sleep(0)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # never let a store error kill the loop silently
            log.exception("big inv to %r failed", conn)
            conn.close("internal error while sending the inventory")

    def _on_inv(self, conn: Connection, hashes: tuple[bytes, ...]) -> None:
        self.counters["inv_received"] += len(hashes)
        if not hashes:
            return
        announce = self._announce
        if announce or len(self.dandelion):
            for h in hashes:
                a = announce.get(h)
                if a is not None:
                    a[2].add(conn)
                if h in self.dandelion and self.inventory.has(h):
                    # Someone already fluffed our stem object: leave stem phase (11 rule 4).
                    stream = self.dandelion.stream(h)
                    child = self.dandelion.child(h)
                    self.dandelion.remove(h)
                    if stream is not None:
                        self._queue_announce(h, stream, self._expiry(h), (conn,) + ((child,) if child else ()))
        if self.downloads.offered(conn, hashes, self.inventory.has, time.monotonic()):
            self._schedule_download(conn)

    def _on_dinv(self, conn: Connection, hashes: tuple[bytes, ...]) -> None:
        """11 rule 3: new hashes enter stem phase with the node-map child of this peer."""
        self.counters["dinv_received"] += len(hashes)
        mono = time.monotonic()
        plain = []
        for h in hashes:
            if h in self.dandelion or self.inventory.has(h):
                continue
            if len(self.dandelion) >= self.settings.max_stem_objects:
                plain.append(h)
                continue
            self.dandelion.add(h, conn, None, mono)
            plain.append(h)
        if plain and self.downloads.offered(conn, plain, self.inventory.has, mono):
            self._schedule_download(conn)

    def _schedule_download(self, conn: Connection) -> None:
        self._dl_dirty.add(conn)
        if not self._dl_scheduled and self._loop is not None:
            self._dl_scheduled = True
            self._loop.call_soon(self._run_downloads)

    def _run_downloads(self) -> None:
        self._dl_scheduled = False
        dirty, self._dl_dirty = self._dl_dirty, set()
        mono = time.monotonic()
        for conn in dirty:
            if not conn.established:
                continue
            st: PeerState = conn.peer  # type: ignore[assignment]
            if mono < st.getdata_after:
                if st.download_timer is None and self._loop is not None:
                    st.download_timer = self._loop.call_at(
                        self._loop.time() + (st.getdata_after - mono), self._download_timer_fired, conn
                    )
                continue
            hashes = self.downloads.next_requests(conn, mono, self.settings.max_inflight_per_peer)
            chunk = self.settings.getdata_chunk
            for i in range(0, len(hashes), chunk):
                conn.send(GetData(tuple(hashes[i : i + chunk])))
            if hashes:
                self.counters["getdata_sent"] += len(hashes)

    def _download_timer_fired(self, conn: Connection) -> None:
        st: PeerState = conn.peer  # type: ignore[assignment]
        st.download_timer = None
        self._schedule_download(conn)

    def _on_object(self, conn: Connection, data: bytes) -> None:
        self.counters["objects_received"] += 1
        h = inventory_hash(data)
        offerers, asked = self.downloads.received(h)
        if asked is not None:
            self._schedule_download(asked)
        stem = h in self.dandelion
        if self.inventory.has(h):
            if stem:
                # A normal copy of our stem object: someone fluffed it (cycle detection, rule 4).
                stream = self.dandelion.stream(h)
                child = self.dandelion.child(h)
                self.dandelion.remove(h)
                if stream is not None:
                    self._queue_announce(h, stream, self._expiry(h), [conn, *offerers, *((child,) if child else ())])
            else:
                self.counters["objects_duplicate"] += 1
                a = self._announce.get(h)
                if a is not None:
                    a[2].add(conn)
            return
        now = int(self.clock())
        verdict = self._check(data, now)
        if not verdict.accept:
            self.counters["objects_rejected"] += 1
            self.counters["rejected_" + verdict.reason.value] += 1
            log.debug("dropped object %s from %r: %s", h.hex()[:16], conn, verdict.message)
            return
        assert verdict.header is not None
        if not self.inventory.add(data, verdict.header, now, inv_hash=h):
            self.counters["objects_duplicate"] += 1
            return
        self.counters["objects_accepted"] += 1
        self._schedule_flush()
        stream = verdict.header.stream
        child = self.dandelion.child(h) if stem else None
        if stem and child is None and not self.dandelion.stems:
            # The stem ends here (no outbound stem to pass it to): fluff now rather than
            # holding the object until its deadline, 10-40+ s later.
            self.dandelion.remove(h)
            self.counters["fluffed"] += 1
            stem = False
        if stem:
            # A stem object we asked for after a dinv: only its child hears of it (rule 2).
            self.dandelion.set_stream(h, stream, time.monotonic())
            if child is not None and not child.closed:
                self._stem_out.setdefault(child, []).append(h)
        else:
            self._queue_announce(h, stream, verdict.header.expires_time, [conn, *offerers])
        if verdict.process and verdict.header.object_type == OBJECT_ONIONPEER:
            self._learn_onionpeer(data, stream)
        if self.on_object is not None:
            try:
                self.on_object(h, data, verdict, False)
            except Exception:
                log.exception("object hook failed")

    def _learn_onionpeer(self, data: bytes, stream: int) -> None:
        """12.5: the public host an accepted onionpeer object announces becomes a known node of
        the object's stream. A malformed payload is only logged (the object is still relayed)."""
        try:
            payload = parse_object(data).payload
            if not isinstance(payload, OnionPeerPayload):
                return  # a version other than 2/3: relayed, not interpreted
            host, port = payload.peer()
        except MalformedMessage as exc:
            self.counters["onionpeer_malformed"] += 1
            log.debug("ignoring the host of onionpeer object %s: %s", inventory_hash(data).hex()[:16], exc)
            return
        if not is_public(host):
            log.debug("ignoring onionpeer object announcing the private address %s:%d", host, port)
            return
        try:
            is_self = (host, port) in self._self_addrs
            added = self.knownnodes.add(stream, host, port, int(self.clock()), is_self=is_self)
        except Exception as exc:
            log.debug("not recording onion peer %s:%d: %s", host, port, exc)
            return
        if added:
            self.counters["onionpeer_learned"] += 1
            log.debug("learnt %s:%d (stream %d) from an onionpeer object", host, port, stream)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_inventory)

    def _flush_inventory(self) -> None:
        self._flush_scheduled = False
        try:
            self.inventory.flush()
        except Exception:
            log.exception("inventory flush failed")

    # ================================================================== announcements

    def _queue_announce(self, h: bytes, stream: int, expires: int, have: Iterable[Connection]) -> None:
        entry = self._announce.get(h)
        if entry is None:
            self._announce[h] = (stream, expires, set(have))
        else:
            entry[2].update(have)

    def _expiry(self, h: bytes) -> int:
        info = self.inventory.info(h)
        return info.expires_time if info is not None else 0

    async def _announce_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.announce_interval)
            try:
                self.flush_announcements()
            except Exception:
                log.exception("announcement batch failed")

    def flush_announcements(self) -> None:
        """Send the batched announcements now: inv to every established peer in the object's
        stream that does not have it; stem objects to their child (dinv, or inv by chance)."""
        self._flush_inventory()
        batch, self._announce = self._announce, {}
        stem_out, self._stem_out = self._stem_out, {}
        now = int(self.clock())
        if batch:
            # One shuffle per batch (not per peer): every peer gets the new hashes in a random
            # order unrelated to arrival, at O(batch) instead of O(batch x peers) cost.
            items_all = list(batch.items())
            self.rng.shuffle(items_all)
            by_stream: dict[int, list[tuple[bytes, set[Connection]]]] = {}
            for h, (stream, expires, have) in items_all:
                if expires > now:  # expired objects are never announced (7.2)
                    by_stream.setdefault(stream, []).append((h, have))
            for conn in list(self.connections):
                if not conn.established:
                    continue
                st: PeerState = conn.peer  # type: ignore[assignment]
                out = st.pending_inv
                for stream, items in by_stream.items():
                    if stream in st.streams:
                        out.extend(h for h, have in items if conn not in have)
                if out:
                    self._flush_inv(conn)
        for child, hashes in stem_out.items():
            if not child.established:
                continue
            fluff: list[bytes] = []
            stem: list[bytes] = []
            for h in hashes:
                if self.dandelion.fluff_decision() or not child.services & NODE_DANDELION:
                    fluff.append(h)
                else:
                    stem.append(h)
            for i in range(0, len(fluff), self.settings.inv_chunk):
                child.send(Inv(tuple(fluff[i : i + self.settings.inv_chunk])))
            for i in range(0, len(stem), self.settings.inv_chunk):
                child.send(Dinv(tuple(stem[i : i + self.settings.inv_chunk])))
            self.counters["stem_announced"] += len(hashes)

    def _flush_inv(self, conn: Connection) -> None:
        st: PeerState = conn.peer  # type: ignore[assignment]
        if not conn.writable:
            if len(st.pending_inv) > self.settings.max_pending_inv:
                conn.abort("peer does not drain (announcement backlog)")
            return
        # Write chunks only while the peer's buffer is below its high-water mark; the rest
        # stays pending (32-byte hashes shared with other peers) until it drains, so a burst
        # cannot make the node buffer whole inv messages for every slow peer.
        out = st.pending_inv
        size = min(self.settings.inv_chunk, self.settings.announce_chunk)
        sent = 0
        while sent < len(out) and conn.writable:
            chunk = out[sent : sent + size]
            conn.send_frame(frame("inv", encode_var_int(len(chunk)) + b"".join(chunk)))
            sent += len(chunk)
        st.pending_inv = out[sent:]
        self.counters["inv_sent"] += sent

    # ================================================================== serving getdata

    def _intersection_delay(self) -> float:
        """5.5: ceil(log20(max known nodes + 2)) * (0.2 + pending announcements / 2), capped."""
        known = max((self.knownnodes.count(s) for s in self.streams), default=0)
        delay = math.ceil(math.log(known + 2, 20)) * (0.2 + len(self._announce) / 2.0)
        return min(delay, self.settings.max_intersection_delay)

    def _on_getdata(self, conn: Connection, hashes: tuple[bytes, ...]) -> None:
        st: PeerState = conn.peer  # type: ignore[assignment]
        self.counters["getdata_received"] += len(hashes)
        if time.monotonic() < st.skip_getdata_until:
            self.counters["getdata_ignored"] += len(hashes)
            return
        room = self.settings.max_serve_queue - len(st.serve_queue)
        if room < len(hashes):
            self.counters["getdata_ignored"] += len(hashes) - max(room, 0)
            hashes = hashes[: max(room, 0)]
        st.serve_queue.extend(hashes)
        if len(st.serve_queue) >= self.settings.max_serve_queue and not conn.writable:
            conn.pause_reading()
        self._schedule_serve(conn)

    def _schedule_serve(self, conn: Connection) -> None:
        st: PeerState = conn.peer  # type: ignore[assignment]
        if self._loop is None:
            return
        wait = st.serve_after - time.monotonic()
        if wait > 0:
            if st.serve_timer is None:
                st.serve_timer = self._loop.call_later(wait, self._serve_timer_fired, conn)
            return
        self._serve_dirty.add(conn)
        if not self._serve_scheduled:
            self._serve_scheduled = True
            self._loop.call_soon(self._run_serve)

    def _serve_timer_fired(self, conn: Connection) -> None:
        st: PeerState = conn.peer  # type: ignore[assignment]
        st.serve_timer = None
        if not conn.closed:
            self._schedule_serve(conn)

    def _run_serve(self) -> None:
        self._serve_scheduled = False
        dirty, self._serve_dirty = self._serve_dirty, set()
        for conn in dirty:
            if conn.established:
                self._serve(conn)

    def _serve(self, conn: Connection) -> None:
        st: PeerState = conn.peer  # type: ignore[assignment]
        q = st.serve_queue
        budget = self.settings.serve_batch
        served = 0
        while q and budget > 0 and conn.writable:
            h = q.popleft()
            data = None
            if h not in self.dandelion or self.dandelion.child(h) is conn:
                data = self.inventory.get(h)
            if data is None:
                # A request for something we lack (or a stem object not offered to it).
                self.counters["getdata_missing"] += 1
                q.clear()
                st.skip_getdata_until = time.monotonic() + self._intersection_delay()
                break
            conn.send_frame(frame("object", data))
            served += 1
            budget -= 1
        self.counters["objects_served"] += served
        if q and conn.writable:
            self._schedule_serve(conn)

    # ================================================================== timers and dialing

    async def _tick_loop(self) -> None:
        while True:
            try:
                self._tick()
            except Exception:
                log.exception("housekeeping failed")
            await asyncio.sleep(self.settings.tick_interval)

    def _tick(self) -> None:
        mono = time.monotonic()
        for conn in list(self.connections):
            conn.tick(mono)
        for peer in self.downloads.expire(mono):
            self._schedule_download(peer)
        self._dandelion_tick(mono)
        self._maintain_outbound(mono)
        if mono - self._last_cleanup >= self.settings.cleanup_interval:
            self._last_cleanup = mono
            self._prune_retry(mono)
            self.cleanup()

    def cleanup(self) -> None:
        """Drop objects 3 h past expiry and stale known nodes (7.2, 12.2)."""
        now = int(self.clock())
        removed = self.inventory.cleanup(now)
        forgotten = self.knownnodes.cleanup(now, self.streams)
        if removed or forgotten:
            log.info("clean-up: %d expired objects, %d known nodes removed", removed, forgotten)
        self.counters["cleanup_objects"] += removed

    def _dandelion_tick(self, mono: float) -> None:
        if not self.dandelion.enabled:
            return
        outbound = self.outbound(established_only=True)
        handed = self.dandelion.refresh(outbound, mono) or {}
        if len(self.dandelion.stems) < self.dandelion.max_stems:
            # Fewer stems than wanted (one disconnected): take another outbound peer now.
            for c in outbound:
                got = self.dandelion.add_stem(c)
                if got:
                    handed[c] = got
        for stem, hashes in handed.items():
            held = [h for h in hashes if self.inventory.has(h)]
            if held:
                self._stem_out.setdefault(stem, []).extend(held)
        for h, o in self.dandelion.due(mono):
            if o.stream is not None and self.inventory.has(h):
                self.counters["fluffed"] += 1
                self._queue_announce(h, o.stream, self._expiry(h), (o.child,) if o.child is not None else ())

    def _connected_addrs(self) -> set[Peer]:
        out: set[Peer] = set()
        for c in self.connections:
            if c.outbound and c.dialled:
                out.add(c.dialled)
            elif c.remote_listen_port:
                out.add((c.host, c.remote_listen_port))
        return out

    def _maintain_outbound(self, mono: float) -> None:
        if not self._running:
            return
        s = self.settings
        connected = self._connected_addrs() | set(self._dialing)
        for peer in s.peers:
            if peer in connected or peer in self._self_addrs or not self.can_dial(peer[0]):
                continue
            due, _ = self._retry.get(peer, (0.0, 0.0))
            if mono >= due:
                self._dial(peer)
        if s.bootstrap and mono >= self._next_bootstrap and not self.outbound(established_only=True):
            self._next_bootstrap = mono + BOOTSTRAP_RETRY
            if self.knownnodes.only_defaults():
                # 12.3: nothing but the built-in list is known; ask a bootstrap host for addresses.
                self._dial(self._bootstrap_target())
        want = s.max_outbound - len([c for c in self.outbound() if not c.dialled or c.dialled not in s.peers])
        want -= len([p for p in self._dialing if p not in s.peers])
        room = s.max_half_open - len(self._dialing)
        want = min(want, room)
        if want <= 0:
            return
        exclude: set[Peer | str] = set(connected) | self._self_addrs
        exclude.update((h, self.listen_port) for h in ("127.0.0.1", "::1", s.listen_host))
        groups = {
            dial_group(c.dialled[0], c.dialled[1], allow_private=s.allow_private_peers)
            for c in self.outbound()
            if c.dialled
        }
        if self.lan is not None:
            want -= self._dial_discovered(want, exclude, groups, mono)
            if want <= 0:
                return
        now = int(self.clock())
        for stream in sorted(self.streams):
            try:
                picks = self.knownnodes.candidates(
                    stream,
                    now,
                    exclude,
                    exclude_groups=groups,
                    allow_private=s.allow_private_peers,
                    proxied=s.proxy is not None,
                    onion_only=s.onion_only,
                    limit=want,
                    rng=self.rng,
                )
            except Exception:
                log.exception("choosing outbound peers failed")
                return
            for peer in picks:
                if not s.allow_private_peers and not is_public(peer[0]):
                    continue
                if not self.can_dial(peer[0]):
                    continue
                due, _ = self._retry.get(peer, (0.0, 0.0))
                if mono < due:
                    continue
                self._dial(peer)
                want -= 1
            if want <= 0:
                return

    def _dial_discovered(self, want: int, exclude: set[Peer | str], groups: set[str], mono: float) -> int:
        """4.9: each free outbound slot first tries, with probability 1/2, a peer found by LAN
        discovery (12.4), skipping connected, own, backed-off and same-group ones; how many dialled."""
        assert self.lan is not None
        allow = self.settings.allow_private_peers

        def skip(p: Peer) -> bool:
            return (
                p in exclude
                or p in self._dialing
                or mono < self._retry.get(p, (0.0, 0.0))[0]
                or dial_group(p[0], p[1], allow_private=allow) in groups
            )

        dialled = 0
        for _ in range(want):
            peer = self.lan.choose(skip)
            if peer is None:
                continue
            exclude.add(peer)
            groups.add(dial_group(peer[0], peer[1], allow_private=allow))
            self.counters["lan_dials"] += 1
            self._dial(peer)
            dialled += 1
        return dialled

    def can_dial(self, host: str) -> bool:
        """Whether ``host`` may be dialled: .onion peers only through a proxy (without one the
        name would go to the local resolver, a leak, and fail); with ``onion_only``, nothing else."""
        if self.settings.onion_only:
            return self.settings.proxy is not None and is_onion(host)
        return self.settings.proxy is not None or not is_onion(host)

    def _bootstrap_target(self) -> Peer:
        """12.3 target: a bootstrap name; through SOCKS5, half of the time the reference's
        bootstrap onion instead. Behind a proxy the name is resolved by the proxy."""
        proxy = self.settings.proxy
        if self.settings.onion_only and proxy is not None:
            return BOOTSTRAP_ONION
        if proxy is not None and proxy.kind == "socks5" and self.rng.random() < 0.5:
            return BOOTSTRAP_ONION
        return self.rng.choice(BOOTSTRAP_NAMES)

    def _prune_retry(self, mono: float) -> None:
        """Forget back-off entries due longer ago than the largest delay: every failed dial
        adds one (peers from addr gossip or LAN announcements are endless), and such an old
        entry only remembers how long the last delay was."""
        stale = mono - self.settings.reconnect_delay_max
        for peer in [p for p, (due, _) in self._retry.items() if due < stale and p not in self._dialing]:
            del self._retry[peer]

    def _backoff(self, peer: Peer) -> None:
        """Do not dial ``peer`` again before a delay that doubles per failure (up to a cap)."""
        _, delay = self._retry.get(peer, (0.0, 0.0))
        delay = min(max(delay * 2, self.settings.reconnect_delay), self.settings.reconnect_delay_max)
        self._retry[peer] = (time.monotonic() + delay, delay)

    def connect(self, host: str, port: int) -> None:
        """Dial ``host:port`` now (once)."""
        self._dial((host, port))

    def _dial(self, peer: Peer) -> None:
        if peer in self._dialing or self._loop is None or not self._running:
            return  # (stopped: a dial now would outlive stop(), which cancels only earlier ones)
        if not self.can_dial(peer[0]):
            log.debug("not dialling %s:%d: %s", *peer,
                      "only onion services (--onion-only)" if self.settings.onion_only else ".onion peers need a SOCKS proxy")
            return
        self._dialing[peer] = self._loop.create_task(self._dial_task(peer))

    async def _dial_task(self, peer: Peer) -> None:
        host, port = peer
        assert self._loop is not None
        proxy = self.settings.proxy
        try:
            if proxy is None:
                await asyncio.wait_for(
                    self._loop.create_connection(
                        lambda: Connection(self, self.conn_settings, outbound=True, dialled=peer), host, port
                    ),
                    self.settings.connect_timeout,
                )
            else:
                await asyncio.wait_for(self._dial_proxied(peer, proxy), self.settings.proxy_timeout)
            self.counters["dial_ok"] += 1
        except (OSError, asyncio.TimeoutError) as exc:
            self.counters["dial_failed"] += 1
            if proxy is not None:
                self._log_proxy_failure(peer, proxy, exc)
            else:
                log.debug("dialling %s:%d failed: %s", host, port, exc)
            if not (isinstance(exc, ProxyError) and not isinstance(exc, ProxyRefused)):
                # 12.2: the peer failed us. Not when the proxy itself is down, refuses us or
                # is no SOCKS proxy: a Tor outage would push every peer tried to -0.5 and
                # below, and clean-up would then forget them.
                try:
                    self.knownnodes.decrease_rating(host, port)
                except Exception:
                    pass
            self._backoff(peer)
        except Exception as exc:
            # Not a network failure (e.g. a name the IDNA codec refuses): still one failed
            # dial, backed off, instead of an exception no one retrieves and a re-dial per tick.
            self.counters["dial_failed"] += 1
            log.warning("cannot dial %s:%d: %s", host, port, exc)
            self._backoff(peer)
        finally:
            self._dialing.pop(peer, None)

    async def _dial_proxied(self, peer: Peer, proxy: ProxySettings) -> None:
        """Connect through the proxy, then run the usual connection (handshake, TLS) on it."""
        assert self._loop is not None
        sock = await open_via_proxy(proxy, peer[0], peer[1])
        try:
            await self._loop.create_connection(
                lambda: Connection(self, self.conn_settings, outbound=True, dialled=peer, proxied=True), sock=sock
            )
        except BaseException:
            sock.close()
            raise

    def _log_proxy_failure(self, peer: Peer, proxy: ProxySettings, exc: BaseException) -> None:
        """Why a proxied dial failed: the proxy's refusal (its reply code's meaning) at DEBUG,
        INFO for configured peers; a proxy that is down, silent or not SOCKS as a WARNING at
        most once a minute (every dial fails the same way then)."""
        self.counters["dial_failed_proxy"] += 1
        where = f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"
        if isinstance(exc, asyncio.TimeoutError):
            reason = f"no answer from the {proxy} within {self.settings.proxy_timeout:g} s"
        else:
            reason = str(exc) or type(exc).__name__
        if isinstance(exc, ProxyRefused):
            # The peer's failure (most known nodes are gone): as visible as a direct failed
            # dial, except for the peers the operator configured.
            level = logging.INFO if peer in self.settings.peers else logging.DEBUG
            log.log(level, "dialling %s through the %s failed: %s", where, proxy, reason)
            return
        mono = time.monotonic()
        if mono - self._proxy_warned_at >= PROXY_WARN_INTERVAL:
            self._proxy_warned_at = mono
            log.warning("dialling %s failed: %s", where, reason)
        else:
            log.debug("dialling %s failed: %s", where, reason)


__all__ = ["InjectResult", "PeerState", "RelayNode"]
