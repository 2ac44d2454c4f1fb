"""Private loopback test networks: cheap valid objects and N relay nodes on 127.0.0.1.

Used by the network tests, the relay benchmark and the load generator. Nodes listen on
ephemeral ports of 127.0.0.1 only, never bootstrap, and use a lowered network PoW (default
1:1) so objects are made in milliseconds with the pure-Python backend.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from bmnode.net.node import RelayNode
from bmnode.net.settings import NetSettings
from bmnode.net.tls import TlsEngine
from bmnode.pow.python_backend import PythonBackend
from bmnode.pow.target import sender_target, solve
from bmnode.protocol.constants import MIN_TTL, NODE_NETWORK, NODE_SSL, OBJECT_MSG, USER_AGENT
from bmnode.protocol.framing import Frame, FrameDecoder, frame
from bmnode.protocol.messages import Message, Version, build_version
from bmnode.protocol.objects import encode_object_body

LOOPBACK = "127.0.0.1"
TEST_POW = (1, 1)

_BACKEND = PythonBackend()


def make_object(
    *,
    ttl: int = 3600,
    payload: bytes | None = None,
    size: int = 64,
    object_type: int = OBJECT_MSG,
    version: int = 1,
    stream: int = 1,
    ntpb: int = TEST_POW[0],
    extra: int = TEST_POW[1],
    now: float | None = None,
    expires: int | None = None,
) -> bytes:
    """A complete object (nonce first) with enough PoW for ``ntpb``/``extra`` at ``now``.

    ``payload`` defaults to ``size`` random bytes (so every object is distinct); ``expires``
    overrides ``now + ttl`` (for expired or far-future objects).
    """
    now_i = int(time.time() if now is None else now)
    exp = now_i + ttl if expires is None else expires
    body = encode_object_body(exp, object_type, version, stream, os.urandom(size) if payload is None else payload)
    pow_ttl = max(exp - now_i, MIN_TTL)
    target = sender_target(len(body) + 8, pow_ttl, ntpb, extra, min_ntpb=ntpb, min_extra=extra)
    return solve(body, target, _BACKEND)


def node_settings(data_dir: Path | None = None, **overrides: Any) -> NetSettings:
    """NetSettings for a loopback test node: ephemeral port, no bootstrap, private peers
    allowed, PoW 1:1, Dandelion off, no LAN discovery socket, short timers. ``overrides``
    change any field."""
    s = NetSettings(
        data_dir=data_dir,
        listen_host=LOOPBACK,
        listen_port=0,
        bootstrap=False,
        allow_private_peers=True,
        ntpb=TEST_POW[0],
        extra=TEST_POW[1],
        dandelion=0,
        announce_interval=0.05,
        tick_interval=0.05,
        first_getdata_delay=0.0,
        max_intersection_delay=0.5,
        reconnect_delay=0.2,
        reconnect_delay_max=2.0,
        connect_timeout=5.0,
        lan_discovery=False,
    )
    for k, v in overrides.items():
        if not hasattr(s, k):
            raise TypeError(f"unknown net setting {k!r}")
        setattr(s, k, v)
    return s


async def start_node(data_dir: Path, peers: Iterable[RelayNode | tuple[str, int]] = (), **overrides: Any) -> RelayNode:
    """Open stores in ``data_dir`` and start a test node that dials ``peers``."""
    addrs = tuple((LOOPBACK, p.listen_port) if isinstance(p, RelayNode) else p for p in peers)
    node = RelayNode.open(node_settings(Path(data_dir), peers=addrs, **overrides))
    await node.start()
    return node


async def start_network(
    base_dir: Path, n: int, *, edges: Sequence[tuple[int, int]] | None = None, **overrides: Any
) -> list[RelayNode]:
    """``n`` test nodes in ``base_dir/node<i>``; node i dials node j for each (i, j) in
    ``edges`` (default: a ring plus chords, so every node has 2-4 peers)."""
    if edges is None:
        edges = [(i, (i + 1) % n) for i in range(n)] if n > 2 else [(1, 0)] if n == 2 else []
        if n > 4:
            edges = list(edges) + [(i, (i + 2) % n) for i in range(0, n, 2)]
    nodes: list[RelayNode] = []
    for i in range(n):
        nodes.append(await start_node(Path(base_dir) / f"node{i}", **overrides))
    for i, j in edges:
        node = nodes[i]
        node.settings.peers = tuple(node.settings.peers) + ((LOOPBACK, nodes[j].listen_port),)
    return nodes


async def wait_for(predicate: Any, timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds pass; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        await asyncio.sleep(interval)


async def stop_all(nodes: Iterable[RelayNode]) -> None:
    """Stop every node (errors ignored so all get stopped)."""
    for node in nodes:
        try:
            await node.stop()
        except Exception:
            pass


class RawPeer:
    """A hand-driven protocol peer over asyncio streams (tests, load generation): send any
    bytes, read frames, do the handshake (and TLS) step by step or in one call."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, outbound: bool) -> None:
        self.reader = reader
        self.writer = writer
        self.outbound = outbound
        self._seen: set[str] = set()
        self.decoder = FrameDecoder(stop_after=self._stop_after)
        self.frames: list[Frame] = []
        self.tls: TlsEngine | None = None
        self.remote_version: Version | None = None
        self.eof = False

    def _stop_after(self, f: Frame) -> bool:
        if f.command in ("version", "verack"):
            self._seen.add(f.command)
        return len(self._seen) == 2

    @classmethod
    async def connect(cls, port: int, host: str = LOOPBACK) -> "RawPeer":
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, outbound=True)

    # -- output
    def write(self, data: bytes) -> None:
        """Raw bytes to the socket (through TLS once it is up)."""
        if self.tls is not None:
            self.tls.send(data)
            data = self.tls.outgoing()
        self.writer.write(data)

    async def send_frame(self, data: bytes) -> None:
        self.write(data)
        await self.writer.drain()

    async def send(self, msg: Message) -> None:
        await self.send_frame(msg.encode())

    # -- input
    async def _fill(self, timeout: float) -> None:
        data = await asyncio.wait_for(self.reader.read(1 << 16), timeout)
        if not data:
            self.eof = True
            raise EOFError("peer closed the connection")
        if self.tls is not None:
            data = self.tls.receive(data)
            out = self.tls.outgoing()
            if out:
                self.writer.write(out)
        self.frames.extend(self.decoder.feed(data))

    async def recv(self, timeout: float = 5.0) -> Frame:
        """The next frame (EOFError when the peer closes, TimeoutError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while not self.frames:
            await self._fill(max(0.0, deadline - time.monotonic()))
        return self.frames.pop(0)

    async def recv_until(self, command: str, timeout: float = 5.0) -> tuple[Frame, list[Frame]]:
        """Skip frames until one with ``command``; returns it and the skipped ones."""
        deadline = time.monotonic() + timeout
        skipped = []
        while True:
            f = await self.recv(max(0.0, deadline - time.monotonic()))
            if f.command == command:
                return f, skipped
            skipped.append(f)

    async def wait_closed(self, timeout: float = 5.0) -> bool:
        """True if the peer closes the connection within ``timeout`` (frames are discarded)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                await self._fill(max(0.0, deadline - time.monotonic()))
                self.frames.clear()
        except EOFError:
            return True
        except (asyncio.TimeoutError, TimeoutError):
            return False
        except (ConnectionError, OSError):
            return True

    # -- handshake
    def make_version(
        self,
        *,
        services: int = NODE_NETWORK,
        nonce: bytes | None = None,
        timestamp: int | None = None,
        streams: Sequence[int] = (1,),
        listen_port: int = 8444,
        user_agent: bytes = USER_AGENT,
        version: int = 3,
    ) -> bytes:
        """A framed version message with these fields."""
        v = build_version(
            remote_host=LOOPBACK,
            remote_port=8444,
            nonce=nonce or os.urandom(8),
            timestamp=int(time.time()) if timestamp is None else timestamp,
            services=services,
            listen_port=listen_port,
            user_agent=user_agent,
            streams=streams,
        )
        if version != 3 or not streams:
            v = Version(
                version=version, services=v.services, timestamp=v.timestamp, addr_recv=v.addr_recv,
                addr_from=v.addr_from, nonce=v.nonce, user_agent=v.user_agent, streams=tuple(streams),
            )
        return v.encode()

    async def handshake(self, timeout: float = 5.0, *, tls_in_one_write: bool = True, **version_fields: Any) -> Version:
        """The whole exchange of 4.5 in this peer's role, then TLS when both sides offer it.

        As the client, ``tls_in_one_write`` sends the verack and the TLS ClientHello in one
        segment (the node must hand the surplus to TLS)."""
        services = version_fields.get("services", NODE_NETWORK)
        if self.outbound:
            await self.send_frame(self.make_version(**version_fields))
            got = {}
            while len(got) < 2:
                f = await self.recv(timeout)
                got[f.command] = f
            self.remote_version = Version.decode(got["version"].payload)
        else:
            f, _ = await self.recv_until("version", timeout)
            self.remote_version = Version.decode(f.payload)
            await self.send_frame(frame("verack") + self.make_version(**version_fields))
        use_tls = bool(services & NODE_SSL and self.remote_version.services & NODE_SSL)
        if self.outbound:
            if use_tls and tls_in_one_write:
                await self.start_tls(prefix=frame("verack"), timeout=timeout)
            else:
                await self.send_frame(frame("verack"))
                if use_tls:
                    await self.start_tls(timeout=timeout)
        else:
            await self.recv_until("verack", timeout)
            if use_tls:
                await self.start_tls(timeout=timeout)
        if not use_tls:
            self.finish_plain()
        return self.remote_version

    def finish_plain(self) -> None:
        """The verack exchange is over and there is no TLS: decode what follows as frames."""
        self.decoder.stop_after = None
        self.frames.extend(self.decoder.resume())

    async def start_tls(self, *, prefix: bytes = b"", timeout: float = 5.0) -> None:
        """TLS handshake in this peer's role; ``prefix`` (plaintext) goes out in the same write."""
        self.decoder.stop_after = None
        self.tls = TlsEngine(server_side=not self.outbound)
        self.tls.start()
        self.writer.write(prefix + self.tls.outgoing())
        surplus = self.decoder.take_surplus()
        self.decoder.resume()
        plain = self.tls.receive(surplus) if surplus else b""
        out = self.tls.outgoing()
        if out:
            self.writer.write(out)
        deadline = time.monotonic() + timeout
        while not self.tls.handshake_done:
            data = await asyncio.wait_for(self.reader.read(1 << 16), max(0.0, deadline - time.monotonic()))
            if not data:
                self.eof = True
                raise EOFError("peer closed the connection during the TLS handshake")
            plain += self.tls.receive(data)
            out = self.tls.outgoing()
            if out:
                self.writer.write(out)
        await self.writer.drain()
        if plain:
            self.frames.extend(self.decoder.feed(plain))

    def close(self) -> None:
        self.writer.close()


__all__ = ["RawPeer", "LOOPBACK", "TEST_POW", "make_object", "node_settings", "start_network", "start_node", "stop_all", "wait_for"]
