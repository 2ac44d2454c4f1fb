"""LAN peer discovery over UDP (spec 12.4), as the reference client does it.

A listening node broadcasts a framed ``addr`` every 60 s to ``<broadcast>:8444``: one entry
per joined stream, ``time = now``, ``host = 127.0.0.1``, ``port`` = its TCP listening port.
A receiver looks only at datagrams from private/local source addresses, keeps the entries of a
joined stream with ``|time - now| <= 3600`` and a non-public host, and records
``(source IP, entry port)`` for 300 s. The outbound chooser then tries such a peer with
probability 1/2. Nothing learnt here is written to the known nodes; a discovered peer gets
there only as any outbound peer does, once a connection to it is fully established (as the
reference's ``tcp.py``).

The pure parts (announcement bytes, datagram decoding, the entry filter, the table with its
expiry, the on/off decision) come first; :class:`LanDiscovery` is the asyncio endpoint.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import random
import socket
import time
from collections import Counter
from typing import TYPE_CHECKING, Callable, Collection, Iterable, NamedTuple

from bmnode.errors import MalformedMessage
from bmnode.protocol.constants import (
    DEFAULT_PORT,
    HEADER_SIZE,
    MAX_ADDR_ENTRIES,
    MAX_TIME_OFFSET,
    NET_ADDR_SIZE,
    NODE_NETWORK,
)
from bmnode.protocol.framing import TruncatedFrame, parse_header, verify_payload
from bmnode.protocol.hosts import NetAddr, is_public
from bmnode.protocol.messages import Addr

if TYPE_CHECKING:
    from bmnode.net.settings import NetSettings

log = logging.getLogger(__name__)

Peer = tuple[str, int]

#: The reference's announcement period and discovered-peer lifetime (seconds).
ANNOUNCE_INTERVAL = 60.0
PEER_LIFETIME = 300.0
#: ``<broadcast>`` is Python's name for INADDR_BROADCAST (255.255.255.255).
BROADCAST = "<broadcast>"
#: Chance that the outbound chooser tries a discovered peer first (4.9).
CHOICE_PROBABILITY = 0.5
#: Largest datagram looked at: one addr of the most entries a node sends (1000).
MAX_DATAGRAM = HEADER_SIZE + 9 + MAX_ADDR_ENTRIES * NET_ADDR_SIZE
#: Discovered peers kept at most (a LAN host could announce many ports); the oldest go first.
MAX_DISCOVERED = 1000
#: At most one debug line this often about ignored datagrams.
IGNORED_LOG_INTERVAL = 60.0
#: At most this many "peer announced itself" lines per IGNORED_LOG_INTERVAL (one datagram can
#: name 1000 ports, and a LAN host can send many): the rest are counted and summed up later.
NEW_PEER_LOG_BURST = 10
#: Announced host: the reference writes 127.0.0.1, receivers use the datagram's source.
ANNOUNCED_HOST = "127.0.0.1"


# ------------------------------------------------------------------------------ pure parts


def build_announcement(streams: Iterable[int], listen_port: int, now: float) -> bytes:
    """The framed ``addr`` datagram announcing us: one entry per joined stream (those that fit
    a net_addr's uint32), ``time = now``, services NODE_NETWORK, 127.0.0.1, our TCP port."""
    t = int(now)
    entries = tuple(
        NetAddr(time=t, stream=s, services=NODE_NETWORK, host=ANNOUNCED_HOST, port=listen_port)
        for s in sorted(set(streams))
        if 1 <= s <= 0xFFFFFFFF
    )
    return Addr(entries).encode()


def datagram_entries(data: bytes) -> list[NetAddr]:
    """The net_addrs of the ``addr`` messages framed in one datagram (other commands are
    skipped). Raises :class:`MalformedMessage` for an oversized, truncated or garbled datagram,
    a bad checksum, or an ``addr`` payload that does not decode."""
    data = bytes(data)
    if len(data) > MAX_DATAGRAM:
        raise MalformedMessage(f"datagram of {len(data)} bytes is over the {MAX_DATAGRAM}-byte limit")
    if not data:
        raise TruncatedFrame("empty datagram", 0)
    entries: list[NetAddr] = []
    pos = 0
    while pos < len(data):
        header = parse_header(data[pos:], MAX_DATAGRAM)
        end = pos + HEADER_SIZE + header.length
        if end > len(data):
            raise TruncatedFrame(f"datagram ends inside the {header.command!r} payload", len(data))
        payload = data[pos + HEADER_SIZE : end]
        verify_payload(header, payload)
        if header.command == "addr":
            entries.extend(Addr.decode(payload).entries)
        pos = end
    return entries


def _plain_ip(host: str) -> str | None:
    """``host`` as a canonical IP literal (IPv6 scope dropped), or None if it is none."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def discovered_peers(entries: Iterable[NetAddr], source_ip: str, streams: Collection[int], now: float) -> list[Peer]:
    """The peers an announcement from ``source_ip`` makes known (12.4): none unless the
    source is private/local; else ``(source_ip, entry.port)`` for each entry of a joined
    stream with ``|time - now| <= 3600``, a non-public host and a port above 0."""
    source = _plain_ip(source_ip)
    if source is None or is_public(source):
        return []
    out: list[Peer] = []
    for e in entries:
        if e.stream not in streams or abs(e.time - now) > MAX_TIME_OFFSET or e.port <= 0:
            continue
        if is_public(e.host):
            continue
        peer = (source, e.port)
        if peer not in out:
            out.append(peer)
    return out


class LanMode(NamedTuple):
    """How LAN discovery runs: the UDP address bound and whether we announce ourselves."""

    bind_host: str
    announce: bool


def _is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    ip = _plain_ip(host)
    return ip is not None and ipaddress.ip_address(ip).is_loopback


def lan_mode(settings: "NetSettings") -> LanMode | None:
    """None when LAN discovery is off: turned off, the node accepts no inbound peers (no port
    to announce), or a SOCKS proxy carries the outgoing connections (announcing would reveal
    a node that hides behind Tor, and a LAN peer cannot be dialled through it). A node
    listening on loopback only binds 127.0.0.1 and never announces; any other listener binds
    the UDP port on every IPv4 interface (broadcasts reach only such a socket) and announces,
    unless it listens on one IPv6 address only (announcements are IPv4 broadcasts)."""
    if not settings.lan_discovery or not settings.listen or settings.proxy is not None:
        return None
    if _is_loopback_host(settings.listen_host):
        return LanMode("127.0.0.1", False)
    ip = _plain_ip(settings.listen_host)
    if ip is not None and ":" in ip and ipaddress.ip_address(ip) != ipaddress.IPv6Address("::"):
        # One IPv6 address: our port is not reachable over IPv4, where announcements go.
        return None
    return LanMode("0.0.0.0", True)


class DiscoveredPeers:
    """Peers found by LAN discovery, each kept ``lifetime`` seconds after its last
    announcement (monotonic times passed in), at most ``max_size`` (oldest dropped)."""

    def __init__(self, lifetime: float = PEER_LIFETIME, max_size: int = MAX_DISCOVERED) -> None:
        self.lifetime = lifetime
        self.max_size = max_size
        self._seen: dict[Peer, float] = {}

    def add(self, peer: Peer, now: float) -> bool:
        """Record (or refresh) ``peer`` seen at ``now``; True if it was not known."""
        new = peer not in self._seen
        self._seen.pop(peer, None)
        self._seen[peer] = now  # re-inserted: the dict stays ordered oldest first
        while len(self._seen) > self.max_size:
            del self._seen[next(iter(self._seen))]
        return new

    def expire(self, now: float) -> int:
        """Forget peers not announced within ``lifetime``; how many went."""
        old = [p for p, t in self._seen.items() if now - t > self.lifetime]
        for p in old:
            del self._seen[p]
        return len(old)

    def live(self, now: float) -> list[Peer]:
        """The peers announced within ``lifetime`` of ``now``."""
        return [p for p, t in self._seen.items() if now - t <= self.lifetime]

    def choose(self, rng: random.Random, now: float, skip: Callable[[Peer], bool] = lambda p: False) -> Peer | None:
        """With probability 1/2 (when a live peer exists) a random live peer for which
        ``skip`` is false; else None (the chooser falls back to the known nodes)."""
        live = self.live(now)
        if not live or rng.random() >= CHOICE_PROBABILITY:
            return None
        eligible = [p for p in live if not skip(p)]
        return rng.choice(eligible) if eligible else None

    def __contains__(self, peer: object) -> bool:
        return peer in self._seen

    def __len__(self) -> int:
        return len(self._seen)


def is_own_address(ip: str) -> bool:
    """Whether ``ip`` is an address of this host. Connecting a UDP socket sends nothing; the
    kernel routes to its own addresses locally and picks that very address as the source."""
    plain = _plain_ip(ip)
    if plain is None:
        return False
    if ipaddress.ip_address(plain).is_loopback:
        return True
    family = socket.AF_INET6 if ":" in plain else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((plain, 9))
            return _plain_ip(s.getsockname()[0]) == plain
    except OSError:
        return False


# ------------------------------------------------------------------------------ the endpoint


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: "LanDiscovery") -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
        self.owner.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.owner.error_received(exc)


class LanDiscovery:
    """The UDP endpoint: announces us every ``interval`` seconds (when ``announce``) and
    records the peers others announce in :attr:`table`. ``await start(listen_port)`` /
    ``await stop()``; a port that cannot be bound is logged once and discovery stays off."""

    def __init__(
        self,
        streams: Collection[int],
        *,
        bind_host: str = "0.0.0.0",
        port: int = DEFAULT_PORT,
        announce: bool = True,
        announce_host: str = BROADCAST,
        announce_port: int | None = None,
        interval: float = ANNOUNCE_INTERVAL,
        lifetime: float = PEER_LIFETIME,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.streams = frozenset(streams)
        self.bind_host = bind_host
        self.port = port
        self.announcing = announce
        self.announce_host = announce_host
        self.announce_port = announce_port
        self.interval = interval
        self.clock = clock
        #: The coin of the outbound chooser (replace it to force a choice in tests).
        self.rng = rng or random.Random()
        self.table = DiscoveredPeers(lifetime)
        self.counters: Counter[str] = Counter()
        self.listen_port = 0
        self.bound_port = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task | None = None
        self._own_cache: dict[str, bool] = {}
        self._ignored_logged_at = -IGNORED_LOG_INTERVAL
        self._ignored_quiet = 0
        self._new_window_at = -IGNORED_LOG_INTERVAL
        self._new_logged = 0
        self._new_quiet = 0

    @classmethod
    def from_settings(
        cls, settings: "NetSettings", *, clock: Callable[[], float] = time.time, rng: random.Random | None = None
    ) -> "LanDiscovery | None":
        """The endpoint ``settings`` ask for, or None when LAN discovery is off (:func:`lan_mode`)."""
        mode = lan_mode(settings)
        if mode is None:
            return None
        return cls(
            settings.streams,
            bind_host=mode.bind_host,
            port=settings.lan_port,
            announce=mode.announce,
            announce_host=settings.lan_announce_host,
            announce_port=settings.lan_announce_port,
            interval=settings.lan_announce_interval,
            lifetime=settings.lan_peer_lifetime,
            clock=clock,
            rng=rng,
        )

    @property
    def running(self) -> bool:
        return self._transport is not None

    async def start(self, listen_port: int) -> bool:
        """Bind the UDP port and start announcing ``listen_port``; False (logged once) if the
        port cannot be bound, and the node carries on without LAN discovery."""
        self.listen_port = listen_port
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            # As the reference: several nodes of one host may share the port for broadcasts.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setblocking(False)
            sock.bind((self.bind_host, self.port))
            transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
        except OSError as exc:
            sock.close()
            log.warning(
                "LAN discovery off: cannot bind UDP %s:%d (%s); the node runs without it",
                self.bind_host, self.port, exc.strerror or exc,
            )
            return False
        self._transport = transport  # type: ignore[assignment]
        self.bound_port = sock.getsockname()[1]
        log.info(
            "LAN discovery on UDP %s:%d (%s)", self.bind_host, self.bound_port,
            "announcing every %gs" % self.interval if self.announcing else "listening only, not announcing",
        )
        if self.announcing:
            self._task = loop.create_task(self._announce_loop(), name="bmnode-lan-announce")
        return True

    async def stop(self) -> None:
        """Stop announcing and close the socket (idempotent)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def _announce_loop(self) -> None:
        while self.announcing and self._transport is not None:
            self.announce()
            await asyncio.sleep(self.interval)

    def announce(self) -> bool:
        """Send one announcement now; False when not running or not announcing."""
        if self._transport is None or not self.announcing:
            return False
        data = build_announcement(self.streams, self.listen_port, self.clock())
        dest_port = self.announce_port if self.announce_port is not None else (self.port or self.bound_port)
        # The literal address: uvloop does not know Python's "<broadcast>" alias.
        dest_host = "255.255.255.255" if self.announce_host == BROADCAST else self.announce_host
        try:
            self._transport.sendto(data, (dest_host, dest_port))
        except OSError as exc:
            self.error_received(exc)
            return False
        self.counters["announced"] += 1
        return True

    def error_received(self, exc: Exception) -> None:
        """A send failed: no route for broadcasts (a host without a LAN) ends announcing, as
        in the reference; other errors are only noted."""
        code = getattr(exc, "errno", None)
        if code in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL) and self.announcing:
            self.announcing = False
            log.info("LAN discovery: no route for the announcement (%s); not announcing any more", exc)
        else:
            self.counters["send_errors"] += 1
            log.debug("LAN discovery: socket error %s", exc)

    def _is_own(self, ip: str) -> bool:
        own = self._own_cache.get(ip)
        if own is None:
            own = is_own_address(ip)
            if len(self._own_cache) >= 256:
                self._own_cache.clear()
            self._own_cache[ip] = own
        return own

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        """Record the peers of one datagram; anything unusable is counted and ignored."""
        self.counters["datagrams"] += 1
        source = str(addr[0]) if addr else "?"
        try:
            entries = datagram_entries(data)
        except MalformedMessage as exc:
            self._ignore(source, str(exc))
            return
        if not entries:
            self._ignore(source, "no addr entries")
            return
        now = self.clock()
        peers = discovered_peers(entries, source, self.streams, now)
        if not peers:
            self._ignore(source, "no usable entry (public source or host, other stream, time off, port 0)")
            return
        mono = time.monotonic()
        for peer in peers:
            if peer[1] == self.listen_port and self._is_own(peer[0]):
                self.counters["own"] += 1
                continue
            if self.table.add(peer, mono):
                self._log_new(peer, mono)
            self.counters["discovered"] += 1

    def _log_new(self, peer: Peer, mono: float) -> None:
        """Note a newly discovered peer at INFO, at most NEW_PEER_LOG_BURST per interval."""
        if mono - self._new_window_at >= IGNORED_LOG_INTERVAL:
            if self._new_quiet:
                log.info("LAN discovery: %d more peers announced themselves (not logged one by one)",
                         self._new_quiet)
            self._new_window_at, self._new_logged, self._new_quiet = mono, 0, 0
        if self._new_logged < NEW_PEER_LOG_BURST:
            self._new_logged += 1
            log.info("LAN discovery: peer %s:%d announced itself", *peer)
        else:
            self._new_quiet += 1

    def _ignore(self, source: str, reason: str) -> None:
        self.counters["ignored"] += 1
        mono = time.monotonic()
        if mono - self._ignored_logged_at >= IGNORED_LOG_INTERVAL:
            log.debug(
                "LAN discovery: ignored a datagram from %s: %s (%d more ignored since the last note)",
                source, reason, self._ignored_quiet,
            )
            self._ignored_logged_at = mono
            self._ignored_quiet = 0
        else:
            self._ignored_quiet += 1

    def choose(self, skip: Callable[[Peer], bool]) -> Peer | None:
        """The outbound chooser's LAN draw (4.9): with probability 1/2 a discovered peer."""
        mono = time.monotonic()
        self.table.expire(mono)
        return self.table.choose(self.rng, mono, skip)


__all__ = [
    "ANNOUNCE_INTERVAL",
    "BROADCAST",
    "DiscoveredPeers",
    "LanDiscovery",
    "LanMode",
    "MAX_DATAGRAM",
    "PEER_LIFETIME",
    "build_announcement",
    "datagram_entries",
    "discovered_peers",
    "is_own_address",
    "lan_mode",
]
