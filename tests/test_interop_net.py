"""Network-layer behaviour checked against the reference client's source (PyBitmessage):
the points where an audit found bmnode diverging, each pinned by a test. TCP tests use
127.0.0.1 only and are bounded in time."""

from __future__ import annotations

import asyncio
import ssl
import struct
import time
import warnings
from pathlib import Path

import pytest

import bmnode.net.testnet as testnet
from bmnode.net.connection import ERR_TIME_FUTURE, ERR_TIME_PAST, peer_time_offset, version_check_error
from bmnode.net.tls import CIPHERS, CURVE, TlsEngine, tls_available
from bmnode.protocol.constants import MAX_VERSION_STREAMS, NODE_NETWORK, NODE_SSL
from bmnode.protocol.framing import frame
from bmnode.protocol.messages import Version, build_version

TIMEOUT = 30
NOW = 1_730_000_000


def run(coro, timeout: float = TIMEOUT):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ------------------------------------------------------------------------ version


def _version_payload(timestamp_bytes: bytes) -> bytes:
    v = build_version(remote_host="127.0.0.1", remote_port=8444, nonce=b"\x02" * 8, timestamp=NOW)
    raw = v.encode_payload()
    return raw[:12] + timestamp_bytes + raw[20:]


@pytest.mark.parametrize(
    "timestamp_bytes, expected",
    [
        (b"\xff" * 8, ERR_TIME_FUTURE),  # 2**64 - 1 for the reference ('Q'), -1 as int64
        (b"\x80" + b"\x00" * 7, ERR_TIME_FUTURE),  # 2**63: future, not past
        (struct.pack(">Q", NOW - 3601), ERR_TIME_PAST),
        (struct.pack(">Q", NOW + 3600), None),
    ],
)
def test_version_timestamp_is_read_unsigned_as_the_reference(timestamp_bytes, expected):
    """bmproto.bm_command_version decodes the timestamp with 'Q': a timestamp with the top bit
    set is far in the future, so the error text is the 'future' one."""
    v = Version.decode(_version_payload(timestamp_bytes))
    assert version_check_error(v, NOW) == expected
    assert peer_time_offset(v, NOW) == int.from_bytes(timestamp_bytes, "big") - NOW


def test_version_streams_capped_at_160000():
    """protocol.assembleVersionMessage sends at most 160000 streams, lowest first."""
    v = build_version(
        remote_host="127.0.0.1",
        remote_port=8444,
        nonce=b"\x03" * 8,
        timestamp=NOW,
        streams=range(MAX_VERSION_STREAMS + 5, 0, -1),
    )
    assert len(v.streams) == MAX_VERSION_STREAMS
    assert v.streams[0] == 1 and v.streams[-1] == MAX_VERSION_STREAMS
    assert Version.decode(v.encode_payload()).streams == v.streams


# ------------------------------------------------------------------------ TLS versions


def _tls10_context(server_side: bool) -> ssl.SSLContext:
    """What a reference node on Python < 2.7.9 uses: PROTOCOL_TLSv1 (TLS 1.0 only)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers(CIPHERS)
    ctx.set_ecdh_curve(CURVE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1
    return ctx


def _tls10_engine(server_side: bool) -> TlsEngine:
    engine = TlsEngine(server_side=server_side)
    engine._obj = _tls10_context(server_side).wrap_bio(engine._in, engine._out, server_side=server_side)
    return engine


def _pump(a: TlsEngine, b: TlsEngine) -> None:
    for _ in range(10):
        b.receive(a.outgoing())
        a.receive(b.outgoing())
        if a.handshake_done and b.handshake_done:
            return


def _tls10_possible() -> bool:
    """This OpenSSL can do TLS 1.0 with the anonymous cipher at all (both ends TLS 1.0 only)."""
    try:
        client, server = _tls10_engine(False), _tls10_engine(True)
        client.start()
        _pump(client, server)
        return client.handshake_done and server.handshake_done
    except Exception:
        return False


needs_tls10 = pytest.mark.skipif(
    not (tls_available() and _tls10_possible()), reason="this OpenSSL cannot do anonymous ECDH over TLS 1.0"
)


@needs_tls10
@pytest.mark.parametrize("we_are_server", [True, False])
def test_tls_accepts_a_tls10_only_reference_peer(we_are_server: bool):
    """The reference sets no TLS floor (tls.py; PROTOCOL_TLSv1 on Python < 2.7.9), so a peer
    limited to TLS 1.0 must still complete the handshake with us, in either role."""
    ours = TlsEngine(server_side=we_are_server)
    theirs = _tls10_engine(server_side=not we_are_server)
    client, server = (theirs, ours) if we_are_server else (ours, theirs)
    client.start()
    _pump(client, server)
    assert client.handshake_done and server.handshake_done
    assert ours.version == "TLSv1" and ours.cipher == "AECDH-AES256-SHA"
    theirs.send(b"version")
    assert ours.receive(theirs.outgoing()) == b"version"


@pytest.mark.skipif(not tls_available(), reason="no TLS here")
def test_tls_between_modern_peers_is_still_tls12():
    client, server = TlsEngine(server_side=False), TlsEngine(server_side=True)
    client.start()
    _pump(client, server)
    assert client.version == server.version == "TLSv1.2"


@needs_tls10
def test_tls10_reference_client_completes_the_handshake_over_tcp(tmp_path: Path, monkeypatch):
    """End to end: a TLS 1.0-only client dials the node, upgrades after the verack exchange and
    gets a pong inside TLS."""
    monkeypatch.setattr(testnet, "TlsEngine", lambda server_side: _tls10_engine(server_side))

    async def main():
        node = await testnet.start_node(tmp_path, tls=True)
        try:
            peer = await testnet.RawPeer.connect(node.listen_port)
            await peer.handshake(services=NODE_NETWORK | NODE_SSL)
            assert peer.tls is not None and peer.tls.version == "TLSv1"
            await peer.send_frame(frame("ping"))
            await peer.recv_until("pong")
            assert await testnet.wait_for(lambda: len(node.established) == 1, 5)
            assert node.established[0].tls_version == "TLSv1"
            peer.close()
        finally:
            await node.stop()

    run(main())



# ------------------------------------------------------------------------ keep-alive


def test_quiet_peer_that_answers_pings_is_kept_while_we_keep_sending(tmp_path: Path):
    """The reference pings only after 300 s without traffic in *either* direction (its lastTx
    counts writes too), so a reference peer that only receives our announcements never sends
    anything of its own. The node must still ping it when it has heard nothing for the ping
    interval, and keep it when it answers pong, however busy our side of the connection is."""

    async def main():
        node = await testnet.start_node(tmp_path, ping_interval=0.3, idle_timeout=2.0, announce_interval=0.05)
        try:
            peer = await testnet.RawPeer.connect(node.listen_port)
            await peer.handshake()
            pings = 0
            deadline = time.monotonic() + 3.5
            while time.monotonic() < deadline:
                node.inject(testnet.make_object())  # our side of the connection stays busy
                try:
                    f = await peer.recv(timeout=0.1)
                except (asyncio.TimeoutError, TimeoutError):
                    continue
                if f.command == "ping":
                    pings += 1
                    await peer.send_frame(frame("pong"))
            assert pings >= 2
            assert len(node.established) == 1  # not dropped as idle
            await peer.send_frame(frame("ping"))
            await peer.recv_until("pong")
        finally:
            await node.stop()

    run(main())


# ------------------------------------------------------------------------ known nodes


def test_lastseen_updated_when_an_established_connection_closes(tmp_path: Path):
    """tcp.py handle_close: a peer we were fully connected to is re-added with lastseen = now
    when the connection ends, so a connection that lasted hours leaves a fresh entry."""

    async def main():
        node = await testnet.start_node(tmp_path)
        try:
            peer = await testnet.RawPeer.connect(node.listen_port)
            await peer.handshake(listen_port=9999)
            assert await testnet.wait_for(lambda: len(node.established) == 1, 5)
            first = node.knownnodes.get(1, testnet.LOOPBACK, 9999)
            assert first is not None and first.rating == pytest.approx(0.1)
            later = int(time.time()) + 5000
            node.clock = lambda: later
            peer.close()
            assert await testnet.wait_for(lambda: not node.connections, 5)
            after = node.knownnodes.get(1, testnet.LOOPBACK, 9999)
            assert after.lastseen == later
            assert after.rating == pytest.approx(0.1)  # closing does not rate again
        finally:
            await node.stop()

    run(main())
