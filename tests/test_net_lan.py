"""LAN peer discovery over UDP (spec 12.4): the announcement bytes, the datagram and entry
filters, the discovered-peer table and its 300 s expiry, when a node announces, and real UDP
on 127.0.0.1 (unicast stands in for the broadcast): a node records an announced peer and
dials it, ignores garbage and its own announcement, and never sends when it listens on
loopback only. Every wait is bounded."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import socket
import struct
import time
from pathlib import Path

import pytest

from bmnode.errors import MalformedMessage
from bmnode.net.lan import (
    MAX_DATAGRAM,
    DiscoveredPeers,
    LanDiscovery,
    LanMode,
    build_announcement,
    datagram_entries,
    discovered_peers,
    is_own_address,
    lan_mode,
)
from bmnode.net.settings import NetSettings, settings_from_config
from bmnode.net.socks import ProxySettings
from bmnode.net.testnet import LOOPBACK, start_node, stop_all, wait_for
from bmnode.node.config import NodeConfig, add_run_arguments, config_from_args, load_config
from bmnode.protocol.framing import frame
from bmnode.protocol.hosts import NetAddr
from bmnode.protocol.messages import Addr

NOW = 1_700_000_000


def run(coro, timeout: float = 30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Forced(random.Random):
    """An RNG whose coin always comes up ``value`` (0.0: the chooser takes the LAN peer)."""

    def __init__(self, value: float) -> None:
        super().__init__(1)
        self.value = value
        self.draws = 0

    def random(self) -> float:
        self.draws += 1
        return self.value


def entry(time_=NOW, stream=1, host="127.0.0.1", port=8444) -> NetAddr:
    return NetAddr(time=time_, stream=stream, services=1, host=host, port=port)


# ------------------------------------------------------------------------ the announcement


def test_announcement_bytes_match_the_spec_layout():
    data = build_announcement([1], 8444, NOW + 0.9)
    payload = (
        b"\x01"  # one entry
        + struct.pack(">Q", NOW)  # time = now (whole seconds)
        + struct.pack(">I", 1)  # stream
        + struct.pack(">Q", 1)  # services NODE_NETWORK
        + bytes(10) + b"\xff\xff" + bytes([127, 0, 0, 1])  # 127.0.0.1, IPv4-mapped
        + struct.pack(">H", 8444)  # our TCP listening port
    )
    header = (
        bytes.fromhex("e9beb4d9") + b"addr".ljust(12, b"\x00") + struct.pack(">I", len(payload))
        + hashlib.sha512(payload).digest()[:4]
    )
    assert data == header + payload


def test_announcement_has_one_entry_per_joined_stream():
    entries = datagram_entries(build_announcement([3, 1, 2], 9000, NOW))
    assert [(e.stream, e.host, e.port, e.time) for e in entries] == [
        (1, "127.0.0.1", 9000, NOW), (2, "127.0.0.1", 9000, NOW), (3, "127.0.0.1", 9000, NOW)
    ]


# ------------------------------------------------------------------------ datagrams


def test_datagram_with_two_framed_messages_and_other_commands():
    a = Addr((entry(port=1),)).encode()
    b = Addr((entry(port=2),)).encode()
    assert [e.port for e in datagram_entries(a + frame("ping") + b)] == [1, 2]
    assert datagram_entries(frame("ping")) == []
    assert datagram_entries(frame("inv", b"\x00")) == []


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"\x00" * 24,  # bad magic
        frame("addr", Addr((entry(),)).encode_payload())[:-1],  # truncated payload
        frame("addr", b"\x02" + entry().encode()),  # count says 2, one present
        frame("addr", Addr((entry(),)).encode_payload()) + b"x",  # trailing garbage
        bytes(MAX_DATAGRAM + 1),  # oversized
    ],
    ids=["empty", "garbage", "bad-magic", "truncated", "bad-count", "trailing", "oversized"],
)
def test_bad_datagrams_raise_malformed(data):
    with pytest.raises(MalformedMessage):
        datagram_entries(data)


def test_bad_checksum_is_refused():
    good = bytearray(Addr((entry(),)).encode())
    good[20] ^= 0xFF
    with pytest.raises(MalformedMessage, match="checksum"):
        datagram_entries(bytes(good))


# ------------------------------------------------------------------------ the entry filter


def test_entry_filter_records_source_ip_and_entry_port():
    assert discovered_peers([entry(port=8555)], "192.168.1.7", {1}, NOW) == [("192.168.1.7", 8555)]
    # The same peer twice in one datagram counts once; an IPv4-mapped source is normalised.
    assert discovered_peers([entry(), entry()], "::ffff:10.0.0.2", {1}, NOW) == [("10.0.0.2", 8444)]


def test_entry_filter_stream_time_host_port():
    src = "192.168.1.7"
    assert discovered_peers([entry(stream=2)], src, {1}, NOW) == []
    assert discovered_peers([entry(time_=NOW - 3600)], src, {1}, NOW) == [(src, 8444)]
    assert discovered_peers([entry(time_=NOW + 3600)], src, {1}, NOW) == [(src, 8444)]
    assert discovered_peers([entry(time_=NOW - 3601)], src, {1}, NOW) == []
    assert discovered_peers([entry(time_=NOW + 3601)], src, {1}, NOW) == []
    assert discovered_peers([entry(host="8.8.8.8")], src, {1}, NOW) == []  # a public host
    assert discovered_peers([entry(host="10.1.2.3")], src, {1}, NOW) == [(src, 8444)]
    assert discovered_peers([entry(port=0)], src, {1}, NOW) == []


@pytest.mark.parametrize("source", ["8.8.8.8", "2001:db8::1", "169.254.1.1", "not-an-ip"])
def test_entry_filter_refuses_sources_that_are_not_private(source):
    assert discovered_peers([entry()], source, {1}, NOW) == []


@pytest.mark.parametrize("source", ["127.0.0.1", "10.0.0.1", "172.16.5.5", "192.168.0.9", "fe80::1%eth0", "fd00::5"])
def test_entry_filter_accepts_private_sources(source):
    assert len(discovered_peers([entry()], source, {1}, NOW)) == 1


def test_own_addresses():
    assert is_own_address("127.0.0.1")
    assert is_own_address("127.0.0.5")
    assert not is_own_address("192.0.2.1")  # TEST-NET-1: nobody's address
    assert not is_own_address("nonsense")


# ------------------------------------------------------------------------ the table


def test_discovered_peers_expire_after_300_seconds():
    t = DiscoveredPeers()
    assert t.add(("10.0.0.2", 8444), 1000.0)
    assert not t.add(("10.0.0.2", 8444), 1000.0)
    t.add(("10.0.0.3", 8444), 1100.0)
    assert t.live(1300.0) == [("10.0.0.2", 8444), ("10.0.0.3", 8444)]
    assert t.live(1300.5) == [("10.0.0.3", 8444)]
    assert t.expire(1300.5) == 1 and len(t) == 1
    t.add(("10.0.0.3", 8444), 1350.0)  # a new announcement keeps it longer
    assert t.live(1600.0) == [("10.0.0.3", 8444)]
    assert t.expire(1650.5) == 1 and len(t) == 0


def test_discovered_table_is_bounded_oldest_first():
    t = DiscoveredPeers(max_size=3)
    for i in range(5):
        t.add(("10.0.0.1", 1000 + i), float(i))
    assert sorted(p[1] for p in t.live(5.0)) == [1002, 1003, 1004]


def test_chooser_coin_and_skip():
    t = DiscoveredPeers()
    never = Forced(0.0)
    assert t.choose(never, 0.0) is None and never.draws == 0  # no peer: no coin drawn
    t.add(("10.0.0.2", 8444), 0.0)
    assert t.choose(Forced(0.0), 1.0) == ("10.0.0.2", 8444)
    assert t.choose(Forced(0.49), 1.0) == ("10.0.0.2", 8444)
    assert t.choose(Forced(0.5), 1.0) is None  # the other half: the known nodes
    assert t.choose(Forced(0.0), 1.0, skip=lambda p: True) is None
    assert t.choose(Forced(0.0), 301.0) is None  # expired


def test_chooser_takes_a_lan_peer_about_half_the_time():
    t = DiscoveredPeers()
    t.add(("10.0.0.2", 8444), 0.0)
    rng = random.Random(5)
    hits = sum(t.choose(rng, 1.0) is not None for _ in range(4000))
    assert 1800 < hits < 2200


# ------------------------------------------------------------------------ when it runs


def test_lan_mode_rules():
    s = NetSettings()  # listens on 0.0.0.0: the LAN hears us
    assert lan_mode(s) == LanMode("0.0.0.0", True)
    assert lan_mode(s.with_(listen_host="192.168.1.5")) == LanMode("0.0.0.0", True)
    assert lan_mode(s.with_(listen_host="127.0.0.1")) == LanMode("127.0.0.1", False)
    assert lan_mode(s.with_(listen_host="::1")) == LanMode("127.0.0.1", False)
    assert lan_mode(s.with_(listen_host="localhost")) == LanMode("127.0.0.1", False)
    assert lan_mode(s.with_(lan_discovery=False)) is None
    assert lan_mode(s.with_(listen=False)) is None
    assert lan_mode(s.with_(proxy=ProxySettings(kind="socks5", host="127.0.0.1", port=9050))) is None


def test_config_flag_file_keys_and_settings(tmp_path: Path):
    import argparse

    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    assert NodeConfig(data_dir=tmp_path).lan_discovery is True
    cfg = config_from_args(parser.parse_args(["--data-dir", str(tmp_path), "--no-lan-discovery"]))
    assert cfg.lan_discovery is False
    assert settings_from_config(cfg).lan_discovery is False
    assert settings_from_config(NodeConfig(data_dir=tmp_path)).lan_discovery is True
    (tmp_path / "bmnode.toml").write_text("udp = false\n")  # the reference's keys.dat name
    assert load_config(tmp_path).lan_discovery is False
    (tmp_path / "bmnode.toml").write_text("no_lan_discovery = true\n")
    assert load_config(tmp_path).lan_discovery is False
    (tmp_path / "bmnode.toml").write_text("lan_discovery = 1\n")
    with pytest.raises(Exception, match="lan_discovery"):
        load_config(tmp_path)


# ------------------------------------------------------------------------ real UDP on 127.0.0.1


def _probe() -> socket.socket:
    """A UDP socket on 127.0.0.1 that collects whatever is sent to it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOOPBACK, 0))
    s.setblocking(False)
    return s


def _drain(s: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(s.recv(65536))
        except BlockingIOError:
            return out


async def _sender(dest_port: int, announced_port: int, interval: float = 0.1) -> LanDiscovery:
    """An announcing endpoint aimed (unicast) at 127.0.0.1:dest_port."""
    lan = LanDiscovery(
        [1], bind_host=LOOPBACK, port=0, announce=True, announce_host=LOOPBACK, announce_port=dest_port,
        interval=interval,
    )
    assert await lan.start(announced_port)
    return lan


def test_announced_peer_is_recorded_then_dialled(tmp_path: Path):
    async def main():
        relay = await start_node(tmp_path / "relay", lan_discovery=False)
        node = await start_node(tmp_path / "node", lan_discovery=True, lan_port=0)
        sender = None
        try:
            assert node.lan is not None and node.lan.running and not node.lan.announcing
            node.lan.rng = Forced(0.0)  # the chooser takes the LAN peer whenever one exists
            assert node.knownnodes.count() == 0 and not node.outbound()
            sender = await _sender(node.lan.bound_port, relay.listen_port)
            peer = (LOOPBACK, relay.listen_port)
            assert await wait_for(lambda: peer in node.lan.table, 10)
            assert await wait_for(
                lambda: any(c.dialled == peer and c.established for c in node.outbound()), 15
            ), node.counters
            assert node.counters["lan_dials"] >= 1
            assert any(not c.outbound for c in relay.established)
        finally:
            if sender is not None:
                await sender.stop()
            await stop_all([node, relay])

    run(main())


def test_discovered_peer_is_not_written_to_known_nodes(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path / "node", lan_discovery=True, lan_port=0, max_outbound=0)
        sender = None
        try:
            sender = await _sender(node.lan.bound_port, 40123)
            assert await wait_for(lambda: (LOOPBACK, 40123) in node.lan.table, 10)
            assert node.knownnodes.count() == 0
        finally:
            if sender is not None:
                await sender.stop()
            await stop_all([node])

    run(main())


def test_own_announcement_is_not_recorded(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path / "node", lan_discovery=True, lan_port=0)
        sender = None
        try:
            node.lan.rng = Forced(0.0)
            sender = await _sender(node.lan.bound_port, node.listen_port)  # our own TCP port
            assert await wait_for(lambda: node.lan.counters["own"] >= 2, 10)
            assert len(node.lan.table) == 0
            assert node.counters["lan_dials"] == 0
        finally:
            if sender is not None:
                await sender.stop()
            await stop_all([node])

    run(main())


def test_garbage_datagrams_are_ignored_without_harm(tmp_path: Path, caplog):
    async def main():
        node = await start_node(tmp_path / "node", lan_discovery=True, lan_port=0, max_outbound=0)
        try:
            dest = (LOOPBACK, node.lan.bound_port)
            bad_sum = bytearray(build_announcement([1], 9001, time.time()))
            bad_sum[20] ^= 1
            junk = [
                b"", b"\x00", bytes(range(256)) * 10, bytes(bad_sum), frame("ping"),
                frame("version", b"\x00" * 90), bytes(MAX_DATAGRAM + 100),
                build_announcement([2], 9002, time.time()),  # a stream we did not join
                build_announcement([1], 9003, time.time() - 7200),  # too old
            ]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for d in junk:
                    s.sendto(d, dest)
                assert await wait_for(lambda: node.lan.counters["ignored"] >= len(junk), 10), node.lan.counters
                s.sendto(build_announcement([1], 9004, time.time()), dest)
                assert await wait_for(lambda: (LOOPBACK, 9004) in node.lan.table, 10)
            assert [p for p in node.lan.table.live(time.monotonic())] == [(LOOPBACK, 9004)]
            assert node.lan.running and node.listen_port
        finally:
            await stop_all([node])

    with caplog.at_level(logging.DEBUG, logger="bmnode.net.lan"):
        run(main())
    notes = [r for r in caplog.records if "ignored a datagram" in r.getMessage()]
    assert len(notes) == 1  # rate-limited: one line, not one per datagram


def test_loopback_only_node_never_sends(tmp_path: Path):
    async def main():
        probe = _probe()
        port = probe.getsockname()[1]
        node = await start_node(
            tmp_path / "node", lan_discovery=True, lan_port=0, lan_announce_host=LOOPBACK, lan_announce_port=port,
            lan_announce_interval=0.05,
        )
        control = None
        try:
            assert node.lan is not None and node.lan.running and not node.lan.announcing
            assert not node.lan.announce()
            await asyncio.sleep(0.5)
            assert _drain(probe) == []
            # Control: an announcing endpoint aimed at the same probe does arrive.
            control = await _sender(port, 40999, interval=0.05)
            got: list[bytes] = []
            assert await wait_for(lambda: got.extend(_drain(probe)) or got, 5)
            assert datagram_entries(got[0])[0].port == 40999
        finally:
            if control is not None:
                await control.stop()
            await stop_all([node])
            probe.close()

    run(main())


def test_busy_udp_port_leaves_the_node_running_without_lan(tmp_path: Path, caplog):
    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
            blocker.bind((LOOPBACK, 0))  # no SO_REUSEADDR: nobody can share it
            port = blocker.getsockname()[1]
            node = await start_node(tmp_path / "node", lan_discovery=True, lan_port=port)
            try:
                assert node.lan is None
                assert node.listen_port > 0
                node._maintain_outbound(time.monotonic())  # the chooser copes without LAN
            finally:
                await stop_all([node])

    with caplog.at_level(logging.WARNING, logger="bmnode.net.lan"):
        run(main())
    assert len([r for r in caplog.records if "LAN discovery off" in r.getMessage()]) == 1


def test_lan_discovery_off_means_no_socket(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path / "node", lan_discovery=False)
        try:
            assert node.lan is None
        finally:
            await stop_all([node])

    run(main())


class _FakeTransport:
    """Records sendto calls instead of sending (the broadcast path without a network)."""

    def __init__(self, fail: OSError | None = None) -> None:
        self.sent: list[tuple[bytes, tuple]] = []
        self.fail = fail

    def sendto(self, data: bytes, addr: tuple) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append((data, addr))


def test_default_announcement_goes_to_the_broadcast_address_on_8444():
    import errno

    lan = LanDiscovery([1], clock=lambda: NOW)
    lan.listen_port = 8555
    lan._transport = _FakeTransport()  # type: ignore[assignment]
    assert lan.announce()
    (data, addr), = lan._transport.sent
    assert addr == ("255.255.255.255", 8444)
    assert data == build_announcement([1], 8555, NOW)
    # No route for broadcasts (a host without a LAN): announcing stops, as in the reference.
    lan._transport = _FakeTransport(OSError(errno.ENETUNREACH, "Network is unreachable"))  # type: ignore[assignment]
    assert not lan.announce()
    assert not lan.announcing and not lan.announce()
