"""Handshake, version checks, TLS and keep-alive of the relay node (spec 4), over real TCP on
127.0.0.1 with a hand-driven peer. Every test is bounded by a timeout."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from bmnode.net.connection import (
    ERR_NO_STREAMS,
    ERR_OLD_PROTOCOL,
    ERR_SELF,
    ERR_SERVER_FULL,
    ERR_TIME_FUTURE,
    ERR_TIME_PAST,
    ERR_TOO_MANY_FROM_IP,
    version_check_error,
)
from bmnode.net.testnet import LOOPBACK, RawPeer, make_object, start_node, wait_for
from bmnode.net.tls import TlsEngine, TlsError, client_context, server_context, tls_available
from bmnode.protocol.constants import NODE_DANDELION, NODE_NETWORK, NODE_SSL, USER_AGENT
from bmnode.protocol.framing import frame
from bmnode.protocol.hashing import inventory_hash
from bmnode.protocol.messages import Error, Inv, Version, build_version

TIMEOUT = 30


def run(coro, timeout: float = TIMEOUT):
    """Run one test coroutine on a fresh loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ------------------------------------------------------------------------ pure checks


def _version(**kw) -> Version:
    base = dict(remote_host="127.0.0.1", remote_port=8444, nonce=b"\x01" * 8, timestamp=1_000_000)
    base.update(kw)
    return build_version(**base)


@pytest.mark.parametrize(
    "change, expected",
    [
        (dict(version=2), ERR_OLD_PROTOCOL),
        (dict(timestamp=1_000_000 + 3601), ERR_TIME_FUTURE),
        (dict(timestamp=1_000_000 - 3601), ERR_TIME_PAST),
        (dict(streams=()), ERR_NO_STREAMS),
        (dict(timestamp=1_000_000 + 3600), None),
        (dict(timestamp=1_000_000 - 3600), None),
        (dict(streams=(2,)), None),  # the reference does not require overlapping streams
        (dict(version=4), None),
    ],
)
def test_version_checks_1_to_4(change, expected):
    v = _version()
    fields = dict(
        version=v.version, services=v.services, timestamp=v.timestamp, addr_recv=v.addr_recv,
        addr_from=v.addr_from, nonce=v.nonce, user_agent=v.user_agent, streams=v.streams,
    )
    fields.update(change)
    assert version_check_error(Version(**fields), 1_000_000) == expected


def test_error_texts_are_the_reference_ones():
    assert ERR_OLD_PROTOCOL == "Your is using an old protocol. Closing connection."
    assert ERR_SERVER_FULL == "Server full, please try again later."
    assert ERR_SELF == "I'm connected to myself. Closing connection."
    assert ERR_TOO_MANY_FROM_IP == "Too many connections from your IP. Closing connection."
    assert ERR_NO_STREAMS == "We don't have shared stream interests. Closing connection."


# ------------------------------------------------------------------------ TLS engine


def test_tls_contexts_match_the_spec():
    for ctx in (server_context(), client_context()):
        assert ctx.maximum_version.name == "TLSv1_2"
        assert ctx.check_hostname is False
        assert ctx.verify_mode.name == "CERT_NONE"
        assert "AECDH-AES256-SHA" in [c["name"] for c in ctx.get_ciphers()]


@pytest.mark.skipif(not tls_available(), reason="this OpenSSL lacks AECDH/secp256k1")
def test_tls_engine_in_memory_both_roles():
    server, client = TlsEngine(server_side=True), TlsEngine(server_side=False)
    client.start()
    for _ in range(5):
        server.receive(client.outgoing())
        client.receive(server.outgoing())
    assert client.handshake_done and server.handshake_done
    assert client.cipher == server.cipher == "AECDH-AES256-SHA"
    assert client.version == "TLSv1.2"
    client.send(b"hello" * 10000)
    got = server.receive(client.outgoing())
    assert got == b"hello" * 10000
    server.send(b"back")
    assert client.receive(server.outgoing()) == b"back"


def test_tls_engine_rejects_garbage():
    server = TlsEngine(server_side=True)
    with pytest.raises(TlsError):
        server.receive(b"\x16\x03\x01\x00\x05garbagegarbage" * 4)


# ------------------------------------------------------------------------ handshake over TCP


@pytest.mark.parametrize("tls", [False, True])
def test_inbound_handshake_order_and_version_fields(tmp_path: Path, tls: bool):
    if tls and not tls_available():
        pytest.skip("no TLS here")

    async def main():
        obj = make_object()
        node = await start_node(tmp_path, tls=tls)
        try:
            node.inject(obj)
            peer = await RawPeer.connect(node.listen_port)
            services = NODE_NETWORK | (NODE_SSL if tls else 0)
            await peer.send_frame(peer.make_version(services=services, listen_port=9999))
            first = await peer.recv()
            second = await peer.recv()
            # The server answers verack first, then its own version (4.5).
            assert (first.command, second.command) == ("verack", "version")
            v = Version.decode(second.payload)
            assert v.version == 3
            assert v.services & NODE_NETWORK
            assert bool(v.services & NODE_SSL) == tls
            assert not v.services & NODE_DANDELION  # Dandelion off in test settings
            assert v.addr_from.port == node.listen_port
            assert v.user_agent == USER_AGENT
            assert v.streams == (1,)
            assert len(v.nonce) == 8
            assert abs(v.timestamp - time.time()) < 60
            peer.remote_version = v
            if tls:
                await peer.start_tls(prefix=frame("verack"))
                assert peer.tls.version == "TLSv1.2"
            else:
                await peer.send_frame(frame("verack"))
                peer.finish_plain()
            # After the handshake: addr, then the big inv listing the object.
            inv, skipped = await peer.recv_until("inv")
            assert {f.command for f in skipped} <= {"addr"}
            assert Inv.decode(inv.payload).hashes == (inventory_hash(obj),)
            # ping is answered with pong inside the (TLS) session.
            await peer.send_frame(frame("ping"))
            pong, _ = await peer.recv_until("pong")
            assert pong.payload == b""
            conn = next(iter(node.established))
            assert conn.remote_listen_port == 9999
            assert conn.tls_active == tls
            peer.close()
        finally:
            await node.stop()

    run(main())


@pytest.mark.skipif(not tls_available(), reason="no TLS here")
def test_outbound_handshake_node_is_tls_client(tmp_path: Path):
    """The node dials us: it sends version first, answers our verack/version with verack and
    then starts TLS as the TLS client (4.5, 4.6)."""

    async def main():
        accepted: asyncio.Queue[RawPeer] = asyncio.Queue()

        async def on_conn(r, w):
            await accepted.put(RawPeer(r, w, outbound=False))

        server = await asyncio.start_server(on_conn, LOOPBACK, 0)
        port = server.sockets[0].getsockname()[1]
        node = await start_node(tmp_path, peers=[(LOOPBACK, port)], tls=True)
        try:
            peer = await asyncio.wait_for(accepted.get(), 10)
            v = await peer.handshake(services=NODE_NETWORK | NODE_SSL, listen_port=port)
            assert v.services & NODE_SSL
            assert v.addr_recv.port == port  # the address it dialled
            assert peer.tls is not None and peer.tls.handshake_done
            assert await wait_for(lambda: len(node.established) == 1, 5)
            conn = node.established[0]
            assert conn.outbound and conn.tls_version == "TLSv1.2"
            await peer.send_frame(frame("ping"))
            await peer.recv_until("pong")
            peer.close()
        finally:
            await node.stop()
            server.close()

    run(main())


def test_no_tls_when_peer_does_not_offer_it(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path, tls=True)
        try:
            peer = await RawPeer.connect(node.listen_port)
            await peer.handshake(services=NODE_NETWORK)
            await peer.send_frame(frame("ping"))
            await peer.recv_until("pong")  # plaintext works
            assert peer.tls is None
            assert not node.established[0].tls_active
        finally:
            await node.stop()

    run(main())


def test_no_ssl_bit_when_tls_disabled(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path, tls=False)
        try:
            peer = await RawPeer.connect(node.listen_port)
            # We offer TLS, the node does not: the connection stays plaintext.
            v = await peer.handshake(services=NODE_NETWORK | NODE_SSL)
            assert not v.services & NODE_SSL
            await peer.send_frame(frame("ping"))
            await peer.recv_until("pong")
        finally:
            await node.stop()

    run(main())


# ------------------------------------------------------------------------ refusals with exact texts


async def _refused(peer: RawPeer, **version_fields) -> str:
    """Send a version; expect an error (fatal 2) instead of verack, then the close."""
    await peer.send_frame(peer.make_version(**version_fields))
    f = await peer.recv()
    assert f.command == "error", f"expected error, got {f.command}"
    e = Error.decode(f.payload)
    assert e.fatal == 2 and e.ban_time == 0 and e.inventory_vector == b""
    assert await peer.wait_closed(5)
    return e.text


@pytest.mark.parametrize(
    "fields, text",
    [
        (dict(version=2), ERR_OLD_PROTOCOL),
        (dict(timestamp_delta=3700), ERR_TIME_FUTURE),
        (dict(timestamp_delta=-3700), ERR_TIME_PAST),
        (dict(streams=()), ERR_NO_STREAMS),
    ],
)
def test_version_refusals_over_tcp(tmp_path: Path, fields: dict, text: str):
    async def main():
        node = await start_node(tmp_path)
        try:
            peer = await RawPeer.connect(node.listen_port)
            f = dict(fields)
            if "timestamp_delta" in f:
                f["timestamp"] = int(time.time()) + f.pop("timestamp_delta")
            assert await _refused(peer, **f) == text
            assert not node.established
        finally:
            await node.stop()

    run(main())


def test_self_connection_detected(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path)
        try:
            node.connect(LOOPBACK, node.listen_port)
            assert await wait_for(lambda: node.counters["closed_before_established"] >= 2, 10)
            assert not node.established
            assert (LOOPBACK, node.listen_port) in node._self_addrs
            # A raw peer replaying the nonce the node uses on another connection is refused too.
            p1 = await RawPeer.connect(node.listen_port)
            v = await p1.handshake()
            p2 = await RawPeer.connect(node.listen_port)
            assert await _refused(p2, nonce=v.nonce) == ERR_SELF
            p1.close()
        finally:
            await node.stop()

    run(main())


def test_too_many_connections_from_ip(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path, loopback_exempt_per_ip=False)
        try:
            p1 = await RawPeer.connect(node.listen_port)
            await p1.handshake()
            p2 = await RawPeer.connect(node.listen_port)
            assert await _refused(p2, listen_port=1234) == ERR_TOO_MANY_FROM_IP
            # The first connection is unaffected.
            await p1.send_frame(frame("ping"))
            await p1.recv_until("pong")
        finally:
            await node.stop()

    run(main())


def test_server_full(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path, max_inbound=1)
        try:
            p1 = await RawPeer.connect(node.listen_port)
            await p1.handshake(listen_port=1111)
            p2 = await RawPeer.connect(node.listen_port)
            assert await _refused(p2, listen_port=2222) == ERR_SERVER_FULL
        finally:
            await node.stop()

    run(main())


def test_command_before_handshake_closes(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path)
        try:
            peer = await RawPeer.connect(node.listen_port)
            await peer.send_frame(Inv((os.urandom(32),)).encode())
            assert await peer.wait_closed(5)
            # Also after our version but before the verack exchange completes.
            peer = await RawPeer.connect(node.listen_port)
            await peer.send_frame(peer.make_version())
            await peer.recv()
            await peer.recv()
            await peer.send_frame(frame("ping"))
            assert await peer.wait_closed(5)
        finally:
            await node.stop()

    run(main())


def test_error_and_unknown_commands_are_ignored(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path)
        try:
            peer = await RawPeer.connect(node.listen_port)
            # An error before the handshake is only logged.
            await peer.send_frame(Error(fatal=1, error_text=b"hello").encode())
            await peer.handshake()
            await peer.send_frame(frame("whatever", b"\x00" * 100))
            await peer.send_frame(frame("portcheck"))
            await peer.send_frame(Error(fatal=2, error_text=b"bye").encode())
            await peer.send_frame(frame("inv", b"\x05\x00"))  # malformed inv: ignored, kept
            await peer.send_frame(frame("ping"))
            await peer.recv_until("pong")
            assert node.established[0].malformed == 1
        finally:
            await node.stop()

    run(main())


# ------------------------------------------------------------------------ timers


def test_handshake_timeout_closes_silent_peer(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path, handshake_timeout=0.5)
        try:
            peer = await RawPeer.connect(node.listen_port)
            assert await peer.wait_closed(5)
            # A peer that completes the handshake in time is kept after the timeout.
            ok = await RawPeer.connect(node.listen_port)
            await ok.handshake()
            await asyncio.sleep(1.0)
            await ok.send_frame(frame("ping"))
            await ok.recv_until("pong")
        finally:
            await node.stop()

    run(main())


def test_handshake_timeout_also_for_slow_handshake(tmp_path: Path):
    """A peer dribbling its version byte by byte cannot hold the slot past the timeout: the
    node closes it before the version is complete (the timeout is not reset by traffic)."""

    async def main():
        node = await start_node(tmp_path, handshake_timeout=0.6)
        try:
            peer = await RawPeer.connect(node.listen_port)
            data = peer.make_version()
            assert len(data) > 60  # dribbling all of it takes several timeouts
            closed_early = False
            for b in data:
                try:
                    await peer.send_frame(bytes([b]))
                except (ConnectionError, OSError):
                    closed_early = True
                    break
                await asyncio.sleep(0.05)
                if peer.reader.at_eof():
                    closed_early = True
                    break
            assert closed_early
            assert await wait_for(lambda: not node.connections, 5)
        finally:
            await node.stop()

    run(main())


def test_keepalive_ping_and_idle_close(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path, ping_interval=0.3, idle_timeout=1.5)
        try:
            peer = await RawPeer.connect(node.listen_port)
            await peer.handshake()
            ping, _ = await peer.recv_until("ping", timeout=5)
            assert ping.payload == b""
            # We never answer: the node drops us after the idle timeout.
            assert await peer.wait_closed(5)
        finally:
            await node.stop()

    run(main())


@pytest.mark.skipif(not tls_available(), reason="no TLS here")
def test_tls_handshake_failure_closes(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path, tls=True)
        try:
            peer = await RawPeer.connect(node.listen_port)
            await peer.send_frame(peer.make_version(services=NODE_NETWORK | NODE_SSL))
            await peer.recv()
            await peer.recv()
            # verack, then something that is not a TLS ClientHello.
            await peer.send_frame(frame("verack") + b"\x16\x03\x01\x00\x08notatls!" + os.urandom(64))
            assert await peer.wait_closed(5)
            assert await wait_for(lambda: not node.connections, 5)
            assert node.counters["closed_before_established"] == 1
        finally:
            await node.stop()

    run(main())


def test_rating_falls_when_closed_before_established(tmp_path: Path):
    async def main():
        async def slam(r, w):
            w.close()

        server = await asyncio.start_server(slam, LOOPBACK, 0)
        port = server.sockets[0].getsockname()[1]
        node = await start_node(tmp_path, max_outbound=0)
        try:
            node.knownnodes.add(1, LOOPBACK, port, int(time.time()))
            node.connect(LOOPBACK, port)
            assert await wait_for(lambda: node.knownnodes.get(1, LOOPBACK, port).rating < 0, 10)
            assert node.knownnodes.get(1, LOOPBACK, port).rating == pytest.approx(-0.1)
        finally:
            await node.stop()
            server.close()

    run(main())


@pytest.mark.skipif(not tls_available(), reason="no TLS here")
@pytest.mark.parametrize("one_write", [True, False])
def test_tls_after_verack_with_and_without_surplus(tmp_path: Path, one_write: bool):
    """The ClientHello may arrive in the same segment as the verack (surplus bytes that must
    go to TLS, not to the plaintext parser) or separately."""

    async def main():
        node = await start_node(tmp_path, tls=True)
        try:
            peer = await RawPeer.connect(node.listen_port)
            await peer.handshake(services=NODE_NETWORK | NODE_SSL, tls_in_one_write=one_write)
            assert peer.tls is not None and peer.tls.handshake_done
            await peer.send_frame(frame("ping"))
            await peer.recv_until("pong")
            assert node.established[0].tls_cipher == "AECDH-AES256-SHA"
        finally:
            await node.stop()

    run(main())
