"""Regression tests from a review of the SOCKS, LAN-discovery and onion-service additions:
settings that combine badly (a proxied onion service listening on every interface, LAN
announcements for an IPv6-only listener), Tor's address and the per-IP limits, a proxy given by
name, dials that fail with something other than an OSError or start after stop(), a proxy
outage and peer ratings, and growth under hostile input (back-off entries, LAN log lines).
Every network test runs on 127.0.0.1 and is bounded."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
from pathlib import Path

from bmnode.net.lan import MAX_DISCOVERED, LanDiscovery, LanMode, lan_mode
from bmnode.net.node import RelayNode, _tor_source
from bmnode.net.settings import NetSettings, settings_from_config
from bmnode.net.socks import ProxySettings
from bmnode.net.testnet import RawPeer, node_settings, wait_for
from bmnode.node.config import NodeConfig
from bmnode.protocol.hosts import NetAddr
from bmnode.protocol.messages import Addr

V3 = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion"
TIMEOUT = 60


def run(coro, timeout: float = TIMEOUT):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ------------------------------------------------------------------------ settings


def test_proxied_onion_service_listens_on_loopback_not_on_every_interface(tmp_path: Path):
    """Behind Tor, a node listens only for its onion service's connections; the default
    0.0.0.0 would also accept clearnet peers and tie the onion to this host's IP (the
    reference binds onionbindip, 127.0.0.1)."""
    s = settings_from_config(NodeConfig(data_dir=tmp_path, socks_proxy_type="socks5", onion_hostname=V3))
    assert s.listen and s.listen_host == "127.0.0.1"
    s6 = settings_from_config(
        NodeConfig(data_dir=tmp_path, socks_proxy_type="socks5", onion_hostname=V3, listen="[::]:8444")
    )
    assert s6.listen_host == "127.0.0.1"
    # An explicit interface is the operator's choice (Tor on another host of the LAN) ...
    explicit = NodeConfig(data_dir=tmp_path, socks_proxy_type="socks5", onion_hostname=V3, listen="10.1.2.3:8444")
    assert settings_from_config(explicit).listen_host == "10.1.2.3"
    # ... and --socks-listen or no proxy keep listening where told.
    told = NodeConfig(data_dir=tmp_path, socks_proxy_type="socks5", onion_hostname=V3, socks_listen=True)
    assert settings_from_config(told).listen_host == "0.0.0.0"
    assert settings_from_config(NodeConfig(data_dir=tmp_path, onion_hostname=V3)).listen_host == "0.0.0.0"


def test_tor_source_is_the_canonical_text_inbound_peers_get():
    assert _tor_source("localhost") == "127.0.0.1"
    assert _tor_source("[::1]") == "::1"
    assert _tor_source("0:0:0:0:0:0:0:1") == "::1"
    assert _tor_source("::ffff:10.0.0.5") == "10.0.0.5"
    assert _tor_source("tor.internal") == "tor.internal"


# ------------------------------------------------------------------------ Tor's address and the per-IP limits


def test_onion_service_peers_from_tor_are_not_refused_per_ip(tmp_path: Path):
    """Every peer of our onion service comes from Tor's address: check 5 of 4.4 and the
    handshakes-per-IP limit must not refuse the second one (the reference exempts the SOCKS
    host), even where loopback is not exempt; such peers are not recorded as known nodes."""

    async def main():
        s = node_settings(
            tmp_path / "n",
            proxy=ProxySettings(kind="socks5", host="127.0.0.1"),
            onion=(V3, 8445),
            tls=False,
            loopback_exempt_per_ip=False,
            max_handshaking_per_ip=1,
        )
        node = RelayNode.open(s)
        await node.start()
        peers = []
        try:
            peers = [await RawPeer.connect(node.listen_port) for _ in range(2)]
            for p in peers:
                v = await p.handshake(listen_port=8444)
                assert v.addr_from.port == 8445
            assert await wait_for(lambda: len(node.established) == 2, 5)
            assert node.knownnodes.get(1, "127.0.0.1", 8444) is None
        finally:
            for p in peers:
                p.close()
            await node.stop()

    run(main())


def test_per_ip_limit_still_applies_without_an_onion_service(tmp_path: Path):
    """The control: without an onion service the second peer from one IP is refused."""

    async def main():
        s = node_settings(tmp_path / "n", tls=False, loopback_exempt_per_ip=False)
        node = RelayNode.open(s)
        await node.start()
        a = b = None
        try:
            a = await RawPeer.connect(node.listen_port)
            await a.handshake()
            b = await RawPeer.connect(node.listen_port)
            await b.send_frame(b.make_version())
            f, _ = await b.recv_until("error")
            assert b"Too many connections from your IP" in f.payload
        finally:
            for p in (a, b):
                if p is not None:
                    p.close()
            await node.stop()

    run(main())


# ------------------------------------------------------------------------ dials


def test_a_dial_failing_with_a_non_network_error_is_a_clean_failed_dial(tmp_path: Path):
    """A name the IDNA codec refuses makes create_connection raise UnicodeError (not an
    OSError): it must count as one failed, backed-off dial, not an exception nobody retrieves
    (and a re-dial on every tick)."""

    async def main():
        errors = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
        node = RelayNode.open(node_settings(tmp_path / "n", tls=False))
        await node.start()
        peer = ("a" * 64 + ".example", 8444)
        try:
            node.connect(*peer)
            assert await wait_for(lambda: peer not in node._dialing, 5)
            assert node.counters["dial_failed"] == 1
            assert peer in node._retry
        finally:
            await node.stop()
        gc.collect()
        await asyncio.sleep(0)
        assert not errors

    run(main())


# ------------------------------------------------------------------------ LAN discovery


def test_a_flood_of_lan_announcements_logs_a_bounded_number_of_lines(caplog):
    """One datagram may name 1000 ports and a LAN host may send many: every new peer is
    recorded (the table is bounded), but INFO lines about them are limited per minute."""
    lan = LanDiscovery([1], port=0)
    lan.listen_port = 8444
    now = int(time.time())
    with caplog.at_level(logging.INFO, logger="bmnode.net.lan"):
        for base in (1000, 3000, 5000):
            entries = tuple(NetAddr(time=now, stream=1, host="127.0.0.1", port=base + i) for i in range(1000))
            lan.datagram_received(Addr(entries).encode(), ("192.168.7.9", 8444))
    assert len(lan.table) == MAX_DISCOVERED
    assert lan.counters["discovered"] == 3000
    lines = [r for r in caplog.records if r.name == "bmnode.net.lan" and r.levelno >= logging.INFO]
    assert 1 <= len(lines) <= 20


def test_back_off_entries_of_peers_not_dialled_for_long_are_forgotten(tmp_path: Path):
    """Every failed dial leaves a back-off entry; peers from addr gossip or LAN announcements
    never end, so entries due longer ago than the largest delay are pruned at clean-up."""
    async def main():
        node = RelayNode.open(
            node_settings(tmp_path / "n", tls=False, cleanup_interval=0.05, reconnect_delay_max=2.0)
        )
        await node.start()
        try:
            mono = time.monotonic()
            for i in range(5000):
                node._retry[(f"10.0.{i // 250}.{i % 250}", 8444)] = (mono - 10.0, 2.0)
            fresh = ("10.1.1.1", 8444)
            node._retry[fresh] = (mono + 30.0, 2.0)
            assert await wait_for(lambda: len(node._retry) == 1, 5)
            assert fresh in node._retry
        finally:
            await node.stop()

    run(main())


def test_a_proxy_given_by_name_is_resolved_for_the_onion_service(tmp_path: Path):
    """--socks-host tor (a container name): Tor's connections come from the name's address,
    so the node resolves it once at start (through the loop's resolver, not blocking)."""

    async def main():
        loop = asyncio.get_running_loop()
        real = loop.getaddrinfo
        asked = []

        async def fake(host, port, *args, **kwargs):
            if host == "tor.internal":
                asked.append(host)
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))]
            return await real(host, port, *args, **kwargs)

        loop.getaddrinfo = fake  # type: ignore[method-assign]
        s = node_settings(
            tmp_path / "n", proxy=ProxySettings(kind="socks5", host="tor.internal"), onion=(V3, 8445), tls=False,
            loopback_exempt_per_ip=False,
        )
        node = RelayNode.open(s)
        await node.start()
        peers = []
        try:
            assert asked == ["tor.internal"]
            assert node.conn_settings.tor_host == "127.0.0.1"
            peers = [await RawPeer.connect(node.listen_port) for _ in range(2)]
            for p in peers:
                v = await p.handshake()
                assert (v.addr_recv.host, v.addr_recv.port, v.addr_from.port) == ("127.0.0.1", 8444, 8445)
        finally:
            for p in peers:
                p.close()
            await node.stop()

    run(main())


def test_a_proxy_outage_does_not_lower_the_ratings_of_the_peers_tried(tmp_path: Path):
    """12.2 lowers a peer's rating when a dial to it fails; when the SOCKS proxy itself is
    down it is not the peer's failure (a Tor outage would otherwise push every peer tried to
    -0.5 and clean-up would forget it). A refusal relayed by the proxy still counts."""
    peer = ("203.0.113.5", 8444)

    async def refusing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readexactly(3)  # greeting: no authentication
            writer.write(b"\x05\x00")
            head = await reader.readexactly(4)
            await reader.readexactly({1: 4, 4: 16}[head[3]] + 2)
            writer.write(b"\x05\x05\x00\x01" + bytes(6))  # REP 5: connection refused
            await writer.drain()
        finally:
            writer.close()

    async def dial_through(tmp: Path, proxy_port: int) -> float:
        node = RelayNode.open(node_settings(tmp, tls=False, peers=(peer,), listen=False,
                                            proxy=ProxySettings(kind="socks5", host="127.0.0.1", port=proxy_port)))
        node.knownnodes.add(1, *peer, int(time.time()))
        await node.start()
        try:
            assert await wait_for(lambda: node.counters["dial_failed"] >= 2, 10)
            entry = node.knownnodes.get(1, *peer)
            assert entry is not None
            return entry.rating
        finally:
            await node.stop()

    async def main():
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
        probe.close()  # nothing listens there: the proxy is down
        assert await dial_through(tmp_path / "down", closed_port) == 0.0
        server = await asyncio.start_server(refusing, "127.0.0.1", 0)
        try:
            assert await dial_through(tmp_path / "refused", server.sockets[0].getsockname()[1]) < 0
        finally:
            server.close()

    run(main())


def test_no_dial_starts_after_stop(tmp_path: Path):
    """stop() cancels the dials in flight; one asked for afterwards (a late command) must not
    start a task that nobody cancels or awaits."""

    async def main():
        node = RelayNode.open(node_settings(tmp_path / "n", tls=False))
        await node.start()
        await node.stop()
        node.connect("127.0.0.1", 9)
        assert not node._dialing

    run(main())


def test_lan_discovery_is_off_for_a_node_listening_on_one_ipv6_address():
    """Announcements are IPv4 broadcasts: a node listening on a single IPv6 address would
    announce a port its LAN peers cannot reach over IPv4. The dual-stack '::' still announces."""
    s = NetSettings()
    assert lan_mode(s.with_(listen_host="2001:db8::5")) is None
    assert lan_mode(s.with_(listen_host="fe80::1%eth0")) is None
    assert lan_mode(s.with_(listen_host="::")) == LanMode("0.0.0.0", True)
    assert lan_mode(s.with_(listen_host="::ffff:192.168.1.5")) == LanMode("0.0.0.0", True)
