"""Interoperability with MiNode (TheKysek/MiNode), a small relay node in real use.

The peer below speaks the way MiNode does, from facts read in its source: its exact version
fields (services 3, addr_recv services 1, addr_from 127.0.0.1:8444, one stream), its message
order (as server: verack then version; TLS after the peer's verack; as client: TLS right after
its own verack), a blocking ``ssl`` socket with its TLS settings (anonymous ECDH, secp256k1,
TLS 1.0 to 1.2), reads of exactly one message at a time before TLS, and its strict parsing of
what we send (version streams and clock, inv/getdata counts that must equal the number of
*distinct* hashes, 38-byte addr entries). It runs in a thread against a real loopback node;
every socket has a timeout, so a test cannot hang.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import struct
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

import pytest

import bmnode.net.testnet as testnet
from bmnode.net.tls import tls_available
from bmnode.protocol.hashing import inventory_hash

MAGIC = b"\xe9\xbe\xb4\xd9"
MINODE_SERVICES = 3  # NODE_NETWORK | NODE_SSL
MINODE_UA = b"/MiNode:0.3.3/"
I2P_DEST_OBJECT_TYPE = 0x493250
TIMEOUT = 40
SOCK_TIMEOUT = 8.0

needs_tls = pytest.mark.skipif(not tls_available(), reason="this OpenSSL cannot do anonymous ECDH on secp256k1")


def run(coro, timeout: float = TIMEOUT):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ------------------------------------------------------------------ MiNode's encodings


def var_int(n: int) -> bytes:
    if n < 0xFD:
        return struct.pack(">B", n)
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack(">H", n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + struct.pack(">I", n)
    return b"\xff" + struct.pack(">Q", n)


def read_var_int(data: bytes) -> tuple[int, bytes]:
    size = {0xFD: 3, 0xFE: 5, 0xFF: 9}.get(data[0], 1)
    raw = data[1:size] if size > 1 else data[:1]
    return int.from_bytes(raw, "big"), data[size:]


def net_addr_no_prefix(services: int, host: str, port: int) -> bytes:
    return struct.pack(">Q", services) + b"\x00" * 10 + b"\xff\xff" + socket.inet_aton(host) + struct.pack(">H", port)


def minode_version(host: str, port: int, nonce: bytes) -> bytes:
    """MiNode's version payload: addr_recv with services 1, addr_from always 127.0.0.1:8444."""
    return (
        struct.pack(">IQQ", 3, MINODE_SERVICES, int(time.time()))
        + net_addr_no_prefix(1, host, port)
        + net_addr_no_prefix(MINODE_SERVICES, "127.0.0.1", 8444)
        + nonce
        + var_int(len(MINODE_UA))
        + MINODE_UA
        + var_int(1)
        + var_int(1)
    )


def minode_parse_version(payload: bytes) -> dict:
    """MiNode's checks on a received version (any failure makes it disconnect)."""
    proto, services, ts, _recv, _from, nonce = struct.unpack(">IQQ26s26s8s", payload[:80])
    if abs(time.time() - ts) > 3600:
        raise ValueError("remote time offset is too large")
    rest = payload[80:]
    ua_len, rest = read_var_int(rest)
    ua, rest = rest[:ua_len], rest[ua_len:]
    count, rest = read_var_int(rest)
    streams = []
    while rest:
        s, rest = read_var_int(rest)
        streams.append(s)
    if count != len(streams):
        raise ValueError("malformed Version message, wrong streams_count")
    if 1 not in streams:
        raise ValueError("message not for stream 1")
    if proto != 3:
        raise ValueError(f"protocol version {proto}")
    return {"services": services, "nonce": nonce, "user_agent": ua, "streams": streams}


def minode_parse_vectors(payload: bytes, what: str) -> set[bytes]:
    """MiNode's inv/getdata parsing: the count must equal the number of distinct hashes."""
    count, rest = read_var_int(payload)
    vectors = {rest[i : i + 32] for i in range(0, len(rest), 32)}
    if count != len(vectors):
        raise ValueError(f"malformed {what} message, wrong vector_count")
    return vectors


def minode_parse_addr(payload: bytes) -> list[tuple[int, int, str, int]]:
    _count, rest = read_var_int(payload)
    out = []
    for i in range(0, len(rest), 38):
        _t, stream, services, host16, port = struct.unpack(">QIQ16sH", rest[i : i + 38])
        out.append((stream, services, socket.inet_ntoa(host16[12:]), port))
    return out


def minode_context(server: bool) -> ssl.SSLContext:
    """MiNode's TLS settings (connection.py _do_tls_handshake)."""
    ctx = ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH if server else ssl.Purpose.SERVER_AUTH)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("AECDH-AES256-SHA@SECLEVEL=0")
    ctx.set_ecdh_curve("secp256k1")
    ctx.options = ssl.OP_ALL | ssl.OP_NO_SSLv2 | ssl.OP_NO_SSLv3 | ssl.OP_SINGLE_ECDH_USE | ssl.OP_CIPHER_SERVER_PREFERENCE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class MiNodePeer:
    """A blocking MiNode-style connection (run it in a thread)."""

    def __init__(self, sock: socket.socket, *, server: bool) -> None:
        sock.settimeout(SOCK_TIMEOUT)
        self.s: socket.socket = sock
        self.server = server
        self.nonce = os.urandom(8)
        self.remote: dict | None = None
        self.received: list[tuple[str, bytes]] = []

    def send(self, command: str, payload: bytes = b"") -> None:
        header = MAGIC + command.encode().ljust(12, b"\x00") + struct.pack(">L", len(payload))
        self.s.sendall(header + hashlib.sha512(payload).digest()[:4] + payload)

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))  # never more than the message: no over-read
            if not chunk:
                raise ConnectionError("closed by the node")
            buf += chunk
        return buf

    def read(self) -> tuple[str, bytes]:
        magic, command, length, checksum = struct.unpack(">4s12sL4s", self._exact(24))
        if magic != MAGIC:
            raise ValueError("magic_bytes do not match")
        payload = self._exact(length)
        if hashlib.sha512(payload).digest()[:4] != checksum:
            raise ValueError("wrong payload checksum")
        cmd = command.rstrip(b"\x00").decode()
        self.received.append((cmd, payload))
        self.check(cmd, payload)
        return cmd, payload

    def check(self, cmd: str, payload: bytes) -> None:
        """Parse what we got as MiNode would: a ValueError there is a MiNode disconnect."""
        if cmd in ("inv", "getdata"):
            minode_parse_vectors(payload, cmd)
        elif cmd == "addr":
            minode_parse_addr(payload)

    def read_until(self, pred: Callable[[str, bytes], bool], timeout: float = 6.0) -> tuple[str, bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cmd, payload = self.read()
            if pred(cmd, payload):
                return cmd, payload
        raise TimeoutError("expected message not received")

    def on_version(self, payload: bytes) -> None:
        self.remote = minode_parse_version(payload)

    def handshake_as_client(self, host: str, port: int) -> None:
        """MiNode dials: version; on the node's version: verack, then TLS when it has NODE_SSL."""
        self.send("version", minode_version(host, port, self.nonce))
        while self.remote is None:
            cmd, payload = self.read()
            if cmd == "version":
                self.on_version(payload)
        self.send("verack")
        time.sleep(0.2)  # MiNode's loop: TLS once its buffers are empty, one tick later
        self._maybe_tls()

    def handshake_as_server(self, host: str, port: int) -> None:
        """The node dials MiNode: on its version, verack then our version; TLS after its verack."""
        cmd, payload = self.read()
        assert cmd == "version", cmd
        self.on_version(payload)
        self.send("verack")
        self.send("version", minode_version(host, port, self.nonce))
        while True:
            cmd, _ = self.read()
            if cmd == "verack":
                break
        time.sleep(0.2)
        self._maybe_tls()

    def _maybe_tls(self) -> None:
        assert self.remote is not None
        if self.remote["services"] & 2:
            self.s = minode_context(self.server).wrap_socket(self.s, server_side=self.server)
            self.s.settimeout(SOCK_TIMEOUT)

    def close(self) -> None:
        try:
            self.s.close()
        except OSError:
            pass


def in_thread(fn: Callable[[], object]) -> "asyncio.Future[object]":
    return asyncio.get_running_loop().run_in_executor(None, fn)


# ------------------------------------------------------------------ handshake both ways


@pytest.mark.parametrize("tls", [pytest.param(True, marks=needs_tls), False])
def test_minode_dials_the_node_handshake_tls_and_object(tmp_path: Path, tls: bool):
    """MiNode as client: the node accepts its version, MiNode accepts ours, TLS comes up with
    MiNode's settings, and an object MiNode announces is fetched and stored."""
    obj = testnet.make_object()
    h = inventory_hash(obj)

    async def main():
        node = await testnet.start_node(tmp_path, tls=tls)
        peer = None
        try:

            def script():
                nonlocal peer
                peer = MiNodePeer(socket.create_connection(("127.0.0.1", node.listen_port), 5), server=False)
                peer.handshake_as_client("127.0.0.1", node.listen_port)
                peer.send("inv", var_int(1) + h)
                _, payload = peer.read_until(lambda c, p: c == "getdata")
                assert minode_parse_vectors(payload, "getdata") == {h}
                peer.send("object", obj)
                peer.send("pong")  # old MiNode's keep-alive: an unsolicited pong
                peer.send("ping")
                peer.read_until(lambda c, p: c == "pong")
                return peer.s.version() if isinstance(peer.s, ssl.SSLSocket) else None

            version = await in_thread(script)
            assert peer is not None and peer.remote is not None
            assert peer.remote["streams"] == [1]
            assert bool(peer.remote["services"] & 2) == tls
            assert version == ("TLSv1.2" if tls else None)
            assert await testnet.wait_for(lambda: node.inventory.has(h), 5)
            assert len(node.established) == 1
            conn = node.established[0]
            assert conn.user_agent == MINODE_UA and conn.remote_listen_port == 8444
            assert conn.tls_version == ("TLSv1.2" if tls else None)
        finally:
            if peer is not None:
                peer.close()
            await node.stop()

    run(main())


@pytest.mark.parametrize("tls", [pytest.param(True, marks=needs_tls), False])
def test_node_dials_minode_handshake_tls_and_serves_getdata(tmp_path: Path, tls: bool):
    """MiNode as server (verack then version, TLS server after our verack): the node completes
    the handshake as TLS client, announces a new object with an inv MiNode can parse and
    serves MiNode's getdata."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)
    port = listener.getsockname()[1]
    obj = testnet.make_object()
    h = inventory_hash(obj)

    async def main():
        node = await testnet.start_node(tmp_path, peers=[("127.0.0.1", port)], tls=tls)
        peer = None
        established = threading.Event()
        try:

            def script():
                nonlocal peer
                sock, addr = listener.accept()
                peer = MiNodePeer(sock, server=True)
                peer.handshake_as_server(addr[0], addr[1])
                established.set()
                _, payload = peer.read_until(lambda c, p: c == "inv" and h in minode_parse_vectors(p, "inv"))
                peer.send("getdata", var_int(1) + h)
                _, got = peer.read_until(lambda c, p: c == "object")
                return got

            fut = in_thread(script)
            assert await testnet.wait_for(established.is_set, 10)
            assert await testnet.wait_for(lambda: len(node.established) == 1, 5)
            node.inject(obj)
            got = await fut
            assert got == obj
            assert peer is not None and peer.remote is not None and peer.remote["streams"] == [1]
            assert node.established[0].tls_version == ("TLSv1.2" if tls else None)
        finally:
            if peer is not None:
                peer.close()
            listener.close()
            await node.stop()

    run(main())


# ------------------------------------------------------------------ inventory and objects


def test_minode_big_inv_of_10000_is_requested_in_parsable_getdata(tmp_path: Path):
    """MiNode sends its inventory in inv messages of up to 10000 hashes: the node keeps the
    connection and asks for them with getdata messages MiNode parses (no duplicates)."""
    hashes = [os.urandom(32) for _ in range(10000)]

    async def main():
        node = await testnet.start_node(tmp_path, tls=False)
        peer = None
        try:

            def script():
                nonlocal peer
                peer = MiNodePeer(socket.create_connection(("127.0.0.1", node.listen_port), 5), server=False)
                peer.handshake_as_client("127.0.0.1", node.listen_port)
                peer.send("inv", var_int(len(hashes)) + b"".join(hashes))
                asked: set[bytes] = set()
                _, payload = peer.read_until(lambda c, p: c == "getdata")
                asked |= minode_parse_vectors(payload, "getdata")
                return asked

            asked = await in_thread(script)
            assert asked and asked <= set(hashes)
            assert len(node.established) == 1
        finally:
            if peer is not None:
                peer.close()
            await node.stop()

    run(main())


def test_objects_minode_relays_are_dropped_or_kept_without_disconnect(tmp_path: Path):
    """MiNode relays objects up to 3 h past expiry (the node drops those older than 1 h, quietly)
    and objects of its own types (an I2P destination, type 0x493250), which the node stores
    and relays like any unknown type."""
    now = int(time.time())
    stale = testnet.make_object(expires=now - 2 * 3600)
    i2p = testnet.make_object(object_type=I2P_DEST_OBJECT_TYPE, ttl=2 * 3600, size=387)
    hs, hi = inventory_hash(stale), inventory_hash(i2p)

    async def main():
        node = await testnet.start_node(tmp_path, tls=False)
        peer = None
        try:

            def script():
                nonlocal peer
                peer = MiNodePeer(socket.create_connection(("127.0.0.1", node.listen_port), 5), server=False)
                peer.handshake_as_client("127.0.0.1", node.listen_port)
                peer.send("inv", var_int(2) + hs + hi)
                asked: set[bytes] = set()
                while asked != {hs, hi}:
                    _, payload = peer.read_until(lambda c, p: c == "getdata")
                    asked |= minode_parse_vectors(payload, "getdata")
                peer.send("object", stale)
                peer.send("object", i2p)
                peer.send("ping")
                peer.read_until(lambda c, p: c == "pong")

            await in_thread(script)
            assert await testnet.wait_for(lambda: node.inventory.has(hi), 5)
            assert not node.inventory.has(hs)
            assert len(node.established) == 1
        finally:
            if peer is not None:
                peer.close()
            await node.stop()

    run(main())


def test_minode_addr_is_learnt_and_ours_parses(tmp_path: Path):
    """MiNode's addr (entries with services 1 or 3, stream 1, time now) is accepted; the node's
    own addr messages parse as 38-byte entries of stream 1."""

    async def main():
        node = await testnet.start_node(tmp_path, tls=False, max_outbound=0)  # never dials 127.0.0.5
        node.knownnodes.add(1, "127.0.0.5", 8444, int(time.time()))
        peer = None
        try:

            def script():
                nonlocal peer
                peer = MiNodePeer(socket.create_connection(("127.0.0.1", node.listen_port), 5), server=False)
                peer.handshake_as_client("127.0.0.1", node.listen_port)
                entry = struct.pack(">QI", int(time.time()), 1) + net_addr_no_prefix(1, "127.0.0.9", 8555)
                peer.send("addr", var_int(1) + entry)
                peer.send("ping")
                peer.read_until(lambda c, p: c == "pong")
                return [e for c, p in peer.received if c == "addr" for e in minode_parse_addr(p)]

            ours = await in_thread(script)
            assert ours and all(stream == 1 for stream, _s, _h, _p in ours)
            assert ("127.0.0.5", 8444) in {(h_, p_) for _st, _sv, h_, p_ in ours}
            assert await testnet.wait_for(lambda: node.counters["addr_learned"] >= 1, 5)
        finally:
            if peer is not None:
                peer.close()
            await node.stop()

    run(main())


# ------------------------------------------------------------------ keep-alive


def test_node_pings_a_talking_peer_it_has_sent_nothing_to(tmp_path: Path):
    """MiNode drops a peer after 600 s without a message *from* it, and old MiNode keeps its
    side alive with an unsolicited pong every 300 s (newer ones with a ping). A peer that keeps
    talking to us while we have nothing to say must still hear from us: the node pings when it
    has sent nothing for the ping interval, not only when it has heard nothing."""

    async def main():
        node = await testnet.start_node(tmp_path, tls=False, ping_interval=0.6, idle_timeout=30.0)
        peer = None
        try:

            def script():
                nonlocal peer
                peer = MiNodePeer(socket.create_connection(("127.0.0.1", node.listen_port), 5), server=False)
                peer.handshake_as_client("127.0.0.1", node.listen_port)
                peer.s.settimeout(0.1)
                heard = []
                deadline = time.monotonic() + 2.5
                while time.monotonic() < deadline:
                    peer.send("pong")  # old MiNode's keep-alive, sent more often than the interval
                    try:
                        heard.append(peer.read()[0])
                    except (TimeoutError, socket.timeout):
                        pass
                return heard

            heard = await in_thread(script)
            assert "ping" in heard
            assert len(node.established) == 1
        finally:
            if peer is not None:
                peer.close()
            await node.stop()

    run(main())


# ------------------------------------------------------------------ Dandelion


def test_stem_child_without_dandelion_gets_inv_never_dinv(tmp_path: Path):
    """MiNode does not know Dandelion (services 3, no NODE_DANDELION, no dinv handler): when it
    is the stem child of our own object it is told with a plain inv it can parse and then fetch."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)
    port = listener.getsockname()[1]
    obj = testnet.make_object()
    h = inventory_hash(obj)

    async def main():
        node = await testnet.start_node(tmp_path, peers=[("127.0.0.1", port)], tls=False, dandelion=100)
        peer = None
        established = threading.Event()
        try:

            def script():
                nonlocal peer
                sock, addr = listener.accept()
                peer = MiNodePeer(sock, server=True)
                peer.handshake_as_server(addr[0], addr[1])
                established.set()
                peer.read_until(lambda c, p: c in ("inv", "dinv") and h in minode_parse_vectors(p, c))
                peer.send("getdata", var_int(1) + h)
                _, got = peer.read_until(lambda c, p: c == "object")
                return got

            fut = in_thread(script)
            assert await testnet.wait_for(established.is_set, 10)
            assert await testnet.wait_for(lambda: len(node.established) == 1, 5)
            result = node.inject(obj)
            assert result.stem  # MiNode is our only stem: the object is in stem phase
            assert await fut == obj
            assert peer is not None and "dinv" not in [c for c, _ in peer.received]
        finally:
            if peer is not None:
                peer.close()
            listener.close()
            await node.stop()

    run(main())
