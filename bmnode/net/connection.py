"""One peer connection (spec 3, 4): framing, the version/verack handshake, the TLS upgrade,
keep-alive and timeouts, and a bounded output buffer.

:class:`Connection` is an :class:`asyncio.Protocol`. It owns everything that is about *this*
socket; what the messages mean for the node (addr, inv, getdata, object, dinv) is the
owner's business (:class:`ConnectionOwner`, implemented by the relay node). The handshake
follows 4.4/4.5 with the reference's exact error texts; a failed check sends a fatal
``error`` and closes at once. When both sides advertise NODE_SSL the connection switches to
TLS right after the verack exchange; bytes the decoder already read past the peer's verack
go to the TLS engine, never to the plaintext parser (4.6).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from bmnode.errors import MalformedMessage
from bmnode.net.tls import TlsEngine, TlsError
from bmnode.protocol.constants import (
    DEFAULT_PORT,
    DEFAULT_STREAM,
    ERROR_FATAL,
    HANDSHAKE_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_TIME_OFFSET,
    MIN_PROTOCOL_VERSION,
    NODE_NETWORK,
    NODE_SSL,
    PING_INTERVAL,
    USER_AGENT,
)
from bmnode.protocol.encoding import MAX_UINT64
from bmnode.protocol.framing import Frame, FrameDecoder, FramingError, frame
from bmnode.protocol.hosts import encode_host
from bmnode.protocol.messages import (
    Error,
    Message,
    TooManyEntries,
    Version,
    build_version,
    decode_payload,
)

log = logging.getLogger(__name__)

# Error texts of the reference's version checks (spec 4.4), sent with fatal = 2.
ERR_OLD_PROTOCOL = "Your is using an old protocol. Closing connection."
ERR_TIME_FUTURE = "Your time is too far in the future compared to mine. Closing connection."
ERR_TIME_PAST = "Your time is too far in the past compared to mine. Closing connection."
ERR_NO_STREAMS = "We don't have shared stream interests. Closing connection."
ERR_TOO_MANY_FROM_IP = "Too many connections from your IP. Closing connection."
ERR_SERVER_FULL = "Server full, please try again later."
ERR_SELF = "I'm connected to myself. Closing connection."

#: Commands accepted before the handshake completes (3, 4.5); anything else closes.
HANDSHAKE_COMMANDS = frozenset({"version", "verack", "error"})
#: Grace given to a closing connection to flush its last bytes (e.g. a fatal error).
CLOSE_GRACE = 5.0

PING_FRAME = frame("ping")
PONG_FRAME = frame("pong")
VERACK_FRAME = frame("verack")


def peer_time_offset(v: Version, now: int) -> int:
    """The peer's clock minus ours. The timestamp is read as unsigned, as the reference
    decodes it: a negative int64 is a time far in the future, not in the past."""
    return (v.timestamp & MAX_UINT64) - now


def version_check_error(v: Version, now: int) -> str | None:
    """Checks 1-4 of spec 4.4 (protocol, clock skew, streams); the reference's error text or None."""
    if v.version < MIN_PROTOCOL_VERSION:
        return ERR_OLD_PROTOCOL
    offset = peer_time_offset(v, now)
    if offset > MAX_TIME_OFFSET:
        return ERR_TIME_FUTURE
    if offset < -MAX_TIME_OFFSET:
        return ERR_TIME_PAST
    if not v.streams:
        return ERR_NO_STREAMS
    return None


@dataclass
class ConnectionSettings:
    """What one connection needs to know about its node (timeouts in seconds, sizes in bytes)."""

    services: int = NODE_NETWORK
    listen_port: int = 8444
    streams: tuple[int, ...] = (DEFAULT_STREAM,)
    user_agent: bytes = USER_AGENT
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    ping_interval: float = PING_INTERVAL
    idle_timeout: float = IDLE_TIMEOUT
    #: Above this many buffered output bytes the connection counts as "not writable":
    #: getdata serving and announcements wait.
    write_high_water: int = 1 << 18
    #: A peer whose output buffer passes this is dropped at once.
    write_hard_limit: int = 1 << 24
    #: A peer that stays "not writable" this long is dropped.
    drain_timeout: float = 120.0
    #: When we run as an onion service: its port, and the address Tor's connections come from
    #: (the SOCKS proxy's host). An inbound peer from there reached us through the service.
    onion_port: int | None = None
    tor_host: str | None = None
    clock: Callable[[], float] = field(default=time.time)


class ConnectionOwner(Protocol):
    """The relay node as seen from a connection."""

    def connection_opened(self, conn: "Connection") -> bool:
        """A TCP connection exists (before any byte); False refuses it (closed at once)."""

    def admit(self, conn: "Connection", version: Version) -> str | None:
        """Checks 5-7 of spec 4.4 (per-IP, server full, self-connection): error text or None."""

    def connection_established(self, conn: "Connection") -> None:
        """The handshake (and TLS, if any) finished: send addr and the big inv."""

    def message_received(self, conn: "Connection", msg: Message) -> None:
        """A decoded message other than version/verack/ping/pong, after establishment."""

    def connection_writable(self, conn: "Connection") -> None:
        """The output buffer drained below the low-water mark."""

    def connection_closed(self, conn: "Connection") -> None:
        """The transport is gone; forget the connection."""


class State(enum.Enum):
    """Life cycle of a connection."""

    CONNECTING = "connecting"
    HANDSHAKE = "handshake"
    TLS = "tls"
    ESTABLISHED = "established"
    CLOSING = "closing"
    CLOSED = "closed"


class Connection(asyncio.Protocol):
    """One TCP peer. ``outbound`` = we dialled it (TCP client, TLS client, sends version first)."""

    def __init__(
        self,
        owner: ConnectionOwner,
        settings: ConnectionSettings,
        *,
        outbound: bool,
        dialled: tuple[str, int] | None = None,
        nonce: bytes | None = None,
        proxied: bool = False,
    ) -> None:
        self.owner = owner
        self.settings = settings
        self.outbound = outbound
        self.dialled = dialled
        #: Dialled through a SOCKS proxy: the socket's peer is the proxy, the peer is ``dialled``.
        self.proxied = proxied
        self.nonce = nonce if nonce is not None else os.urandom(8)
        self.state = State.CONNECTING
        self.transport: asyncio.Transport | None = None
        self.host = dialled[0] if dialled else ""
        self.port = dialled[1] if dialled else 0
        # Remote's version data.
        self.remote_version: Version | None = None
        self.services = 0
        self.streams: tuple[int, ...] = ()
        self.user_agent = b""
        self.remote_listen_port = 0
        self.time_offset = 0
        # Handshake bookkeeping.
        self.sent_version = False
        self.sent_verack = False
        self.got_version = False
        self.got_verack = False
        self._seen_handshake: set[str] = set()
        self._decoder = FrameDecoder(stop_after=self._stop_after)
        self._tls: TlsEngine | None = None
        self._tls_backlog: list[bytes] = []
        # Timing (monotonic) and flow control.
        now = time.monotonic()
        self.created_at = now
        self.established_at: float | None = None
        self.last_recv = now
        self.last_send = now
        self.last_ping = now
        self.closing_at: float | None = None
        self.close_reason = ""
        self.write_paused = False
        self.paused_since = 0.0
        self.reading_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        # Counters.
        self.bytes_in = 0
        self.bytes_out = 0
        self.messages_in = 0
        self.messages_out = 0
        self.malformed = 0
        self.ignored_oversize_inv = 0
        #: Free slot for the owner's per-connection state.
        self.peer: object = None

    # ------------------------------------------------------------------ properties

    @property
    def established(self) -> bool:
        """True once the handshake (and TLS, if used) completed and until closing."""
        return self.state is State.ESTABLISHED

    @property
    def closed(self) -> bool:
        return self.state in (State.CLOSING, State.CLOSED)

    @property
    def tls_active(self) -> bool:
        """True when the connection runs (or negotiates) TLS."""
        return self._tls is not None

    @property
    def tls_cipher(self) -> str | None:
        return self._tls.cipher if self._tls is not None and self._tls.handshake_done else None

    @property
    def tls_version(self) -> str | None:
        return self._tls.version if self._tls is not None and self._tls.handshake_done else None

    @property
    def write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    @property
    def writable(self) -> bool:
        """Established, not closing and the output buffer is below the high-water mark."""
        return self.state is State.ESTABLISHED and not self.write_paused

    def __repr__(self) -> str:
        d = "out" if self.outbound else "in"
        return f"<Connection {d} {self.host}:{self.port} {self.state.value}>"

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=self.settings.write_high_water, low=self.settings.write_high_water // 4)
        peer = None if self.proxied else transport.get_extra_info("peername")
        if peer:
            host = str(peer[0]).split("%", 1)[0]
            if host.startswith("::ffff:") and "." in host:
                host = host[len("::ffff:") :]
            self.host = host
            if not self.outbound:
                self.port = int(peer[1])
        self.state = State.HANDSHAKE
        if not self.owner.connection_opened(self):
            self.abort("too many connections")
            return
        if self.outbound:
            self._send_version()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_recv = time.monotonic()
        self.bytes_in += len(data)
        if self._tls is not None:
            was_done = self._tls.handshake_done
            try:
                data = self._tls.receive(data)
            except TlsError as exc:
                self._flush_tls()
                self.abort(f"TLS: {exc}")
                return
            self._flush_tls()
            if not was_done and self._tls.handshake_done:
                self._tls_finished()
                if self.closed:
                    return
            if not data:
                return
        self._feed(data)

    def eof_received(self) -> bool | None:
        self.close("peer closed the connection")
        return None

    def pause_writing(self) -> None:
        self.write_paused = True
        self.paused_since = time.monotonic()

    def resume_writing(self) -> None:
        self.write_paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)
        if self.state is State.ESTABLISHED:
            self.owner.connection_writable(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.close_reason:
            self.close_reason = f"connection lost: {exc}"
        elif not self.close_reason:
            self.close_reason = "connection closed"
        self.state = State.CLOSED
        waiters, self._drain_waiters = self._drain_waiters, []
        for w in waiters:
            if not w.done():
                w.set_exception(ConnectionError(self.close_reason))
        log.debug("%r closed: %s", self, self.close_reason)
        self.owner.connection_closed(self)

    # ------------------------------------------------------------------ input

    def _stop_after(self, f: Frame) -> bool:
        # Decoding stops right after the frame that completes the peer's side of the
        # version/verack exchange: what follows may be TLS (4.6).
        if f.command in ("version", "verack"):
            self._seen_handshake.add(f.command)
        return len(self._seen_handshake) == 2

    def _feed(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
        except FramingError as exc:
            self.abort(f"framing error: {exc}")
            return
        self._handle_frames(frames)
        if self._decoder.stopped and self.state is State.HANDSHAKE:
            self._verack_exchange_done()

    def _handle_frames(self, frames: list[Frame]) -> None:
        for f in frames:
            if self.closed:
                return
            self.messages_in += 1
            if self.state is State.ESTABLISHED:
                self._handle_established(f)
            else:
                self._handle_handshake(f)

    def _handle_handshake(self, f: Frame) -> None:
        cmd = f.command
        if cmd not in HANDSHAKE_COMMANDS:
            self.abort(f"command {cmd!r} before the handshake completed")
            return
        if cmd == "verack":
            self.got_verack = True
        elif cmd == "error":
            self._log_error(f.payload)
        elif cmd == "version" and not self.got_version:
            self._handle_version(f.payload)

    def _handle_version(self, payload: bytes) -> None:
        try:
            v = Version.decode(payload)
        except MalformedMessage as exc:
            self.abort(f"malformed version: {exc}")
            return
        self.got_version = True
        self.remote_version = v
        self.services = v.services
        self.streams = v.streams
        self.user_agent = v.user_agent
        self.remote_listen_port = v.addr_from.port
        now = int(self.settings.clock())
        self.time_offset = peer_time_offset(v, now)
        error = version_check_error(v, now)
        if error is None:
            error = self.owner.admit(self, v)
        if error is not None:
            log.info("%r refused: %s", self, error)
            self.send_frame(Error(fatal=ERROR_FATAL, ban_time=0, inventory_vector=b"", error_text=error.encode()).encode())
            self.close(f"version refused: {error}")
            return
        self.send_frame(VERACK_FRAME)
        self.sent_verack = True
        if not self.outbound:
            self._send_version()

    def via_onion_service(self) -> bool:
        """An inbound peer that reached our onion service (it comes from Tor's address)."""
        s = self.settings
        return not self.outbound and s.onion_port is not None and s.tor_host is not None and self.host == s.tor_host

    def _send_version(self) -> None:
        remote, remote_port, listen_port = self.host, self.port, self.settings.listen_port
        try:
            encode_host(remote, truncate=True)
        except MalformedMessage:
            # A DNS name dialled through a proxy: its address is unknown here (the reference
            # then sends 127.0.0.1 too).
            remote = "127.0.0.1"
        if self.via_onion_service():
            # As the reference for a peer that came in over Tor: it sees us as the service.
            remote, remote_port, listen_port = "127.0.0.1", DEFAULT_PORT, self.settings.onion_port
        v = build_version(
            remote_host=remote,
            remote_port=remote_port,
            nonce=self.nonce,
            timestamp=int(self.settings.clock()),
            services=self.settings.services,
            listen_port=listen_port,
            user_agent=self.settings.user_agent,
            streams=self.settings.streams,
        )
        self.send_frame(v.encode())
        self.sent_version = True

    def _verack_exchange_done(self) -> None:
        if not (self.sent_verack and self.got_verack and self.got_version):
            # Cannot happen unless the version was refused (then we are closing).
            if not self.closed:
                self.abort("handshake out of order")
            return
        self._decoder.stop_after = None
        if self.settings.services & NODE_SSL and self.services & NODE_SSL:
            self.state = State.TLS
            self._tls = TlsEngine(server_side=not self.outbound)
            surplus = self._decoder.take_surplus()
            try:
                self._tls.start()
                plain = self._tls.receive(surplus) if surplus else b""
            except TlsError as exc:
                self._flush_tls()
                self.abort(f"TLS: {exc}")
                return
            self._flush_tls()
            if self._tls.handshake_done:
                self._tls_finished()
                if plain and not self.closed:
                    self._feed(plain)
            return
        frames = self._decoder.resume()
        self._set_established()
        if not self.closed:
            self._handle_frames(frames)

    def _tls_finished(self) -> None:
        assert self._tls is not None
        log.debug("%r TLS up: %s %s", self, self._tls.version, self._tls.cipher)
        self._decoder.resume()
        backlog, self._tls_backlog = self._tls_backlog, []
        for data in backlog:
            self._write_tls(data)
        self._set_established()

    def _set_established(self) -> None:
        self.state = State.ESTABLISHED
        self.established_at = time.monotonic()
        self.owner.connection_established(self)

    def _handle_established(self, f: Frame) -> None:
        cmd = f.command
        if cmd == "ping":
            self.send_frame(PONG_FRAME)
            return
        if cmd in ("pong", "version", "verack"):
            return
        if cmd == "error":
            self._log_error(f.payload)
            return
        try:
            msg = decode_payload(cmd, f.payload)
        except TooManyEntries as exc:
            self.ignored_oversize_inv += 1
            log.info("%r: ignored %s", self, exc)
            return
        except MalformedMessage as exc:
            self.malformed += 1
            log.debug("%r: ignored malformed %s: %s", self, cmd, exc)
            return
        self.owner.message_received(self, msg)

    def _log_error(self, payload: bytes) -> None:
        try:
            e = Error.decode(payload)
        except MalformedMessage:
            log.debug("%r sent a malformed error message", self)
            return
        log.info("%r says (fatal=%d): %s", self, e.fatal, e.text)

    # ------------------------------------------------------------------ output

    def send_frame(self, data: bytes) -> None:
        """Write one framed message (through TLS when active); drops a peer that does not drain."""
        if self.closed or self.transport is None:
            return
        self.messages_out += 1
        self.last_send = time.monotonic()
        if self._tls is not None:
            if not self._tls.handshake_done:
                self._tls_backlog.append(data)
                return
            self._write_tls(data)
        else:
            self.bytes_out += len(data)
            self.transport.write(data)
        if self.transport.get_write_buffer_size() > self.settings.write_hard_limit:
            self.abort("peer does not drain its output (buffer over the hard limit)")

    def send(self, msg: Message) -> None:
        """Frame and write ``msg``."""
        self.send_frame(msg.encode())

    def _write_tls(self, data: bytes) -> None:
        assert self._tls is not None
        try:
            self._tls.send(data)
        except TlsError as exc:
            self.abort(f"TLS: {exc}")
            return
        self._flush_tls()

    def _flush_tls(self) -> None:
        if self._tls is None or self.transport is None or self.transport.is_closing():
            return
        out = self._tls.outgoing()
        if out:
            self.bytes_out += len(out)
            self.transport.write(out)

    async def wait_writable(self) -> None:
        """Return when the output buffer is below the high-water mark (raise if the peer is gone)."""
        while self.write_paused:
            if self.closed:
                raise ConnectionError(self.close_reason or "closed")
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(fut)
            await fut
        if self.closed:
            raise ConnectionError(self.close_reason or "closed")

    def pause_reading(self) -> None:
        """Stop reading from the socket (back-pressure while this peer's requests pile up)."""
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    # ------------------------------------------------------------------ closing

    def close(self, reason: str) -> None:
        """Close after flushing what is buffered (at most CLOSE_GRACE seconds)."""
        if self.closed:
            return
        self.state = State.CLOSING
        self.close_reason = reason
        self.closing_at = time.monotonic()
        log.debug("%r closing: %s", self, reason)
        if self.transport is not None:
            self.transport.close()

    def abort(self, reason: str) -> None:
        """Close now, discarding buffered output (hostile or broken peers)."""
        if self.state is State.CLOSED:
            return
        if not self.closed:
            self.close_reason = reason
            log.debug("%r aborting: %s", self, reason)
        self.state = State.CLOSING
        if self.closing_at is None:
            self.closing_at = time.monotonic()
        if self.transport is not None:
            self.transport.abort()

    def tick(self, now: float) -> None:
        """Timers (called about once a second): handshake timeout, keep-alive, idle close, drain."""
        if self.state is State.CLOSED:
            return
        if self.state is State.CLOSING:
            if self.closing_at is not None and now - self.closing_at > CLOSE_GRACE:
                self.abort(self.close_reason)
            return
        s = self.settings
        if self.state is not State.ESTABLISHED:
            if now - self.created_at > s.handshake_timeout:
                self.abort("handshake timeout")
            return
        if self.write_paused and now - self.paused_since > s.drain_timeout:
            self.abort("peer does not drain its output")
            return
        if now - self.last_recv > s.idle_timeout:
            self.abort(f"no data for {s.idle_timeout:.0f} s")
            return
        # Ping after ping_interval without a byte *from* the peer (at most once per interval),
        # even while we are sending: a reference peer pings only when no traffic passed in
        # either direction, so one that just receives would otherwise stay silent until the
        # idle timeout above dropped it. Also after ping_interval without a byte *to* the
        # peer, even while it talks: MiNode drops a peer it has not heard from for 600 s and
        # keeps its own side alive with unsolicited pongs (older) or pings every 300 s.
        if now - max(min(self.last_recv, self.last_send), self.last_ping) >= s.ping_interval:
            self.last_ping = now
            self.send_frame(PING_FRAME)


__all__ = [
    "ERR_NO_STREAMS",
    "ERR_OLD_PROTOCOL",
    "ERR_SELF",
    "ERR_SERVER_FULL",
    "ERR_TIME_FUTURE",
    "ERR_TIME_PAST",
    "ERR_TOO_MANY_FROM_IP",
    "Connection",
    "ConnectionOwner",
    "ConnectionSettings",
    "State",
    "peer_time_offset",
    "version_check_error",
]
