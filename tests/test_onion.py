"""onionpeer objects and running as a Tor onion service (spec 2.5, 12.5): host encodings, the
builder, known nodes learnt from received objects (loopback nodes, PoW 1:1), the onion priority
when proxied, the mailbox publishing and republishing its onionpeer object (fake clock), and
the config settings. Every network test is bounded."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from bmnode.crypto.objects import build_onionpeer
from bmnode.errors import ConfigError, InvalidObject, MalformedMessage
from bmnode.mailbox import Mailbox, MailboxConfig, PowJob, run_until_idle
from bmnode.mailbox.jobs import complete
from bmnode.net.socks import ProxySettings
from bmnode.net.node import RelayNode
from bmnode.net.testnet import TEST_POW, RawPeer, make_object, node_settings, start_network, stop_all, wait_for
from bmnode.node.config import NodeConfig, load_config
from bmnode.node.mailboxproc import mailbox_config
from bmnode.pow.python_backend import PythonBackend
from bmnode.pow.target import check_pow, sender_target, solve
from bmnode.protocol.constants import DAY, OBJECT_ONIONPEER, ONIONPEER_TTL
from bmnode.protocol.encoding import encode_var_int
from bmnode.protocol.hashing import inventory_hash
from bmnode.protocol.hosts import decode_onion, decode_peer_host, encode_host, encode_onion, onionpeer_version
from bmnode.protocol.messages import ObjectMessage
from bmnode.protocol.objects import OnionPeerPayload, parse_object
from bmnode.store.knownnodes import KnownNodes

V2 = "quzwelsuziwqgpt2.onion"
V3 = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion"
NOW = 1_700_000_000
BACKEND = PythonBackend()
TIMEOUT = 60


def run(coro, timeout: float = TIMEOUT):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def solved(body: bytes, now: int) -> bytes:
    """``body`` with a nonce meeting the 1:1 test-network target at ``now``."""
    ttl = int.from_bytes(body[:8], "big") - now
    target = sender_target(len(body) + 8, ttl, *TEST_POW, min_ntpb=TEST_POW[0], min_extra=TEST_POW[1])
    return solve(body, target, BACKEND)


# ------------------------------------------------------------------------ encodings and builder


def test_v2_onion_encoding_matches_the_spec_example_and_round_trips():
    raw = encode_onion(V2)
    assert raw.hex() == "fd87d87eeb438533622e54ca2d033e7a"  # spec 2.5
    assert encode_host(V2) == raw
    assert decode_onion(raw) == V2
    assert decode_peer_host(raw) == V2
    assert onionpeer_version(V2) == 2


def test_v3_onion_encoding_round_trips_with_41_bytes():
    raw = encode_onion(V3.upper())
    assert len(raw) == 6 + 35 and raw.startswith(bytes.fromhex("fd87d87eeb43"))
    assert decode_onion(raw) == V3
    assert decode_peer_host(raw) == V3
    assert onionpeer_version(V3) == 3
    with pytest.raises(MalformedMessage):
        encode_host(V3)  # does not fit a 16-byte host field


@pytest.mark.parametrize(
    "host",
    [
        bytes.fromhex("fd87d87eeb43") + b"\x00" * 5,  # a whole base32 block, but no v2/v3 length
        bytes.fromhex("fd87d87eeb43") + b"\x00" * 11,
        bytes.fromhex("fd87d87eeb43"),
        b"\x00" * 15,
        b"",
    ],
)
def test_onionpeer_host_of_no_known_length_is_malformed(host: bytes):
    with pytest.raises(MalformedMessage):
        decode_peer_host(host)


def test_onionpeer_payload_reads_ip_hosts_as_the_reference_does():
    assert OnionPeerPayload(8444, encode_host("1.2.3.4")).peer() == ("1.2.3.4", 8444)
    assert OnionPeerPayload(8444, encode_host("2001:db8::1")).peer() == ("2001:db8::1", 8444)
    for port in (0, 65536):
        with pytest.raises(MalformedMessage):
            OnionPeerPayload(port, encode_onion(V2)).peer()


@pytest.mark.parametrize("host,version", [(V2, 2), (V3, 3)])
def test_build_onionpeer_object_layout(host: str, version: int):
    out = build_onionpeer(host, 8444, NOW + ONIONPEER_TTL)
    assert (out.object_type, out.version, out.stream) == (OBJECT_ONIONPEER, version, 1)
    assert out.expires_time == NOW + ONIONPEER_TTL
    p = parse_object(out.complete(0))
    assert isinstance(p.payload, OnionPeerPayload)
    assert p.object_payload == encode_var_int(8444) + encode_onion(host)
    assert p.payload.peer() == (host, 8444)
    assert p.encode() == out.complete(0)


@pytest.mark.parametrize("host,port", [("example.com", 8444), ("abc.onion", 8444), (V2, 0), (V2, 70000)])
def test_build_onionpeer_refuses_bad_names_and_ports(host: str, port: int):
    with pytest.raises(InvalidObject):
        build_onionpeer(host, port, NOW + ONIONPEER_TTL)


# ------------------------------------------------------------------------ net: learning from objects


def test_received_onionpeer_objects_add_known_nodes_and_are_relayed(tmp_path: Path):
    async def main():
        nodes = await start_network(tmp_path, 2)
        try:
            assert await wait_for(lambda: all(len(n.established) >= 1 for n in nodes), 10)
            now = int(nodes[0].clock())
            v2 = solved(build_onionpeer(V2, 8444, now + ONIONPEER_TTL).body, now)
            v3 = solved(build_onionpeer(V3, 9000, now + ONIONPEER_TTL).body, now)
            peer = await RawPeer.connect(nodes[0].listen_port)
            await peer.handshake()
            for obj in (v2, v3):
                await peer.send(ObjectMessage(obj))
            for obj in (v2, v3):
                assert await wait_for(lambda: nodes[1].has_object(inventory_hash(obj)), 10)
            for node in nodes:
                assert node.knownnodes.get(1, V2, 8444) is not None
                assert node.knownnodes.get(1, V3, 9000) is not None
                assert node.counters["onionpeer_learned"] == 2
            # Once: the same object again (a duplicate) and another copy with a later expiry
            # add nothing new.
            again = solved(build_onionpeer(V2, 8444, now + ONIONPEER_TTL + 60).body, now)
            await peer.send(ObjectMessage(v2))
            await peer.send(ObjectMessage(again))
            assert await wait_for(lambda: nodes[1].has_object(inventory_hash(again)), 10)
            assert nodes[0].counters["onionpeer_learned"] == 2
            assert [n.host for n in nodes[0].knownnodes.nodes(1)].count(V2) == 1
            peer.close()
        finally:
            await stop_all(nodes)

    run(main())


def test_malformed_or_private_onionpeer_objects_are_relayed_but_learn_nothing(tmp_path: Path):
    async def main():
        nodes = await start_network(tmp_path, 2)
        try:
            assert await wait_for(lambda: all(len(n.established) >= 1 for n in nodes), 10)
            def onionpeer(version: int, payload: bytes) -> bytes:
                return make_object(object_type=OBJECT_ONIONPEER, version=version, payload=payload)

            bad_host = onionpeer(3, encode_var_int(8444) + b"\xfd\x87\xd8")
            bad_port = onionpeer(2, b"\xfe\x00")  # a truncated var_int
            zero_port = onionpeer(2, encode_var_int(0) + encode_onion(V2))
            private = onionpeer(2, encode_var_int(8444) + encode_host("10.1.2.3"))
            other_version = onionpeer(7, encode_var_int(8444) + encode_onion(V2))  # relayed, not read
            objs = [bad_host, bad_port, zero_port, private, other_version]
            peer = await RawPeer.connect(nodes[0].listen_port)
            await peer.handshake()
            for obj in objs:
                await peer.send(ObjectMessage(obj))
            for obj in objs:
                assert await wait_for(lambda: nodes[1].has_object(inventory_hash(obj)), 10)
            assert nodes[0].counters["onionpeer_malformed"] == 3
            assert nodes[0].counters["onionpeer_learned"] == 0
            assert nodes[0].knownnodes.get(1, "10.1.2.3", 8444) is None
            assert nodes[0].knownnodes.get(1, V2, 8444) is None
            assert nodes[0].established  # the node is fine and kept its peers
        finally:
            await stop_all(nodes)

    run(main())


def test_own_onion_is_a_self_known_node_never_dialled(tmp_path: Path):
    async def main():
        node = RelayNode.open(node_settings(tmp_path / "n", proxy=ProxySettings(kind="socks5")), own_onion=(V3, 8444))
        await node.start()
        try:
            entry = node.knownnodes.get(1, V3, 8444)
            assert entry is not None and entry.is_self
            # Our own onion is never a dial candidate, even proxied.
            assert not node.knownnodes.candidates(1, int(node.clock()), proxied=True, limit=50, draws=500)
        finally:
            await node.stop()

    run(main())


def test_own_entries_do_not_stop_seeding_and_bootstrapping(tmp_path: Path):
    with KnownNodes(tmp_path) as kn:
        kn.add(1, V3, 8444, NOW, is_self=True)
        assert kn.only_defaults()
        assert kn.seed_defaults(NOW, [("1.2.3.4", 8444)]) == 1
        assert kn.only_defaults([("1.2.3.4", 8444)])
        kn.add(1, V2, 8444, NOW)
        assert not kn.only_defaults([("1.2.3.4", 8444)])


# ------------------------------------------------------------------------ dial priority


def test_onion_peers_are_drawn_only_through_a_proxy_and_first_when_rated(tmp_path: Path):
    kn = KnownNodes(tmp_path)
    try:
        kn.add(1, V2, 8444, NOW)
        kn.increase_rating(V2, 8444)  # rating 0.1 > 0
        kn.add(1, V3, 8444, NOW)  # rating 0: no priority
        rng = random.Random(1)
        # Without a proxy onions are never candidates.
        assert all(not kn.candidates(1, NOW, rng=rng) for _ in range(200))
        # Proxied, the positively rated onion is accepted on every draw; the unrated one only
        # with the ordinary 0.05 / (1 - rating) chance.
        counts = {V2: 0, V3: 0}
        for _ in range(400):
            for host, _ in kn.candidates(1, NOW, proxied=True, rng=rng, draws=1):
                counts[host] += 1
        assert counts[V2] > 150  # ~200 draws of V2, each accepted
        assert counts[V3] < 40  # ~200 draws of V3 at 5 %
    finally:
        kn.close()


# ------------------------------------------------------------------------ mailbox publishing


def _cfg(**kw) -> MailboxConfig:
    return MailboxConfig(min_ntpb=1, min_extra=1, onion_peer=(V2, 8444), **kw)


def test_mailbox_publishes_one_onionpeer_object_and_republishes_after_expiry(tmp_path: Path):
    mb = Mailbox(tmp_path, _cfg(), rng=random.Random(3))
    try:
        jobs = mb.tick(NOW)
        assert [j.kind for j in jobs] == ["onionpeer"]
        assert mb.tick(NOW + 1) == []  # the job is issued once
        out = complete(mb, jobs, NOW, BACKEND)
        assert [o.kind for o in out] == ["onionpeer"]
        obj = out[0].object
        p = parse_object(obj)
        assert (p.header.object_type, p.header.version, p.header.stream) == (OBJECT_ONIONPEER, 2, 1)
        assert p.payload.peer() == (V2, 8444)
        assert abs(p.header.expires_time - (NOW + 7 * DAY)) <= 300
        assert check_pow(obj, NOW, 1, 1, min_ntpb=1, min_extra=1)
        assert [o.kind for o in mb.outbox()] == ["onionpeer"]
        # Unexpired: the 2-hourly checks queue nothing.
        for t in range(NOW + 7200, p.header.expires_time, 7200):
            assert mb.tick(t) == []
        # Expired: the next check republishes.
        later = p.header.expires_time + 7200
        again = run_until_idle(mb, later, BACKEND)
        assert [o.kind for o in again] == ["onionpeer"]
        assert parse_object(again[0].object).header.expires_time > later
        assert mb.tick(later + 7200) == []
    finally:
        mb.close()


def test_mailbox_onionpeer_survives_restart_and_follows_the_check_interval(tmp_path: Path):
    mb = Mailbox(tmp_path, _cfg(onion_check_interval=60), rng=random.Random(4))
    published = run_until_idle(mb, NOW, BACKEND)
    assert [o.kind for o in published] == ["onionpeer"]
    expires = parse_object(published[0].object).header.expires_time
    mb.close()
    # A restart before expiry does not publish a second copy.
    mb = Mailbox(tmp_path, _cfg(onion_check_interval=60), rng=random.Random(5))
    try:
        assert mb.tick(NOW + 10) == []
        assert mb.tick(expires - 1) == []  # a check, still unexpired; the next one is 60 s later
        assert mb.tick(expires + 1) == []  # expired, but no check is due yet
        jobs = [j for j in mb.tick(expires + 59) if isinstance(j, PowJob)]
        assert [j.kind for j in jobs] == ["onionpeer"]
    finally:
        mb.close()


def test_mailbox_without_onion_service_publishes_nothing(tmp_path: Path):
    mb = Mailbox(tmp_path, MailboxConfig(min_ntpb=1, min_extra=1))
    try:
        assert run_until_idle(mb, NOW, BACKEND) == []
    finally:
        mb.close()


def test_changed_onion_port_is_announced_again(tmp_path: Path):
    mb = Mailbox(tmp_path, _cfg(), rng=random.Random(6))
    assert len(run_until_idle(mb, NOW, BACKEND)) == 1
    mb.close()
    mb = Mailbox(tmp_path, MailboxConfig(min_ntpb=1, min_extra=1, onion_peer=(V2, 9999)), rng=random.Random(7))
    try:
        out = run_until_idle(mb, NOW + 60, BACKEND)
        assert [parse_object(o.object).payload.peer() for o in out] == [(V2, 9999)]
    finally:
        mb.close()


# ------------------------------------------------------------------------ config


def test_onion_settings_flags_file_keys_and_defaults(tmp_path: Path):
    cfg = load_config(tmp_path, {"onion_hostname": V3.upper(), "onion_port": "9001"})
    assert (cfg.onion_hostname, cfg.onion_port, cfg.onion_peer) == (V3, 9001, (V3, 9001))
    assert mailbox_config(cfg).onion_peer == (V3, 9001)
    # The port defaults to the listen port; the reference's keys.dat names work in the file.
    (tmp_path / "bmnode.toml").write_text(f'onionhostname = "{V2}"\nlisten = "127.0.0.1:8555"\n')
    cfg = load_config(tmp_path)
    assert cfg.onion_peer == (V2, 8555)
    (tmp_path / "bmnode.toml").write_text('onionhostname = ""\nonionport = 8444\n')
    assert load_config(tmp_path).onion_peer is None
    assert NodeConfig(data_dir=tmp_path).onion_peer is None


@pytest.mark.parametrize(
    "value", ["example.com", "abc.onion", V2[:-6], "quzwelsuziwqgpt1.onion", V3.replace(".onion", "a.onion"), 5]
)
def test_bad_onion_hostname_names_the_flag(tmp_path: Path, value):
    with pytest.raises(ConfigError, match="--onion-hostname"):
        load_config(tmp_path, {"onion_hostname": value})


def test_bad_onion_port_names_the_flag(tmp_path: Path):
    with pytest.raises(ConfigError, match="--onion-port"):
        load_config(tmp_path, {"onion_hostname": V2, "onion_port": "0"})
    with pytest.raises(ConfigError, match="--onion-port"):
        load_config(tmp_path, {"onion_hostname": V2, "listen": "127.0.0.1:0"})


def test_mailbox_announces_nothing_when_stream_1_is_not_joined(tmp_path: Path):
    cfg = MailboxConfig(min_ntpb=1, min_extra=1, onion_peer=(V2, 8444), streams=frozenset({2}))
    mb = Mailbox(tmp_path, cfg)
    try:
        assert mb.tick(NOW) == []  # the net process would refuse an object of stream 1
    finally:
        mb.close()


# ------------------------------------------------------------------------ the node as an onion service


def test_config_wires_the_onion_service_into_the_net_settings(tmp_path: Path):
    from bmnode.net.settings import settings_from_config

    proxied = NodeConfig(data_dir=tmp_path, socks_proxy_type="socks5", onion_hostname=V3, onion_port=8445)
    s = settings_from_config(proxied)
    assert s.onion == (V3, 8445)
    assert s.listen  # Tor hands the service's connections to us: listening without --socks-listen
    assert not settings_from_config(NodeConfig(data_dir=tmp_path, socks_proxy_type="socks5")).listen
    assert settings_from_config(NodeConfig(data_dir=tmp_path)).onion is None


def test_onion_service_node_records_itself_and_answers_tor_peers_as_the_service(tmp_path: Path):
    """Inbound peers from Tor's address get the reference's version for an onion service:
    addr_recv 127.0.0.1:8444 and our onion port as the listening port; others get the usual one."""

    async def main():
        s = node_settings(tmp_path / "n", proxy=ProxySettings(kind="socks5", host="localhost"), onion=(V3, 8445),
                          tls=False)
        node = RelayNode.open(s)
        await node.start()
        try:
            entry = node.knownnodes.get(1, V3, 8445)
            assert entry is not None and entry.is_self
            peer = await RawPeer.connect(node.listen_port)  # from 127.0.0.1: as Tor's connections
            try:
                v = await peer.handshake()
            finally:
                peer.close()
            assert (v.addr_recv.host, v.addr_recv.port) == ("127.0.0.1", 8444)
            assert v.addr_from.port == 8445
        finally:
            await node.stop()
        plain = RelayNode.open(node_settings(tmp_path / "p", tls=False))
        await plain.start()
        try:
            peer = await RawPeer.connect(plain.listen_port)
            try:
                v = await peer.handshake()
                source_port = peer.writer.get_extra_info("sockname")[1]
            finally:
                peer.close()
            assert v.addr_from.port == plain.listen_port
            assert (v.addr_recv.host, v.addr_recv.port) == ("127.0.0.1", source_port)
        finally:
            await plain.stop()

    run(main())


# ------------------------------------------------------------------------ onion services only


def test_onion_only_needs_a_proxy_and_reaches_the_net_settings(tmp_path: Path):
    from bmnode.net.settings import settings_from_config

    with pytest.raises(ConfigError, match="--onion-only"):
        NodeConfig(data_dir=tmp_path, onion_only=True)
    cfg = NodeConfig(data_dir=tmp_path, socks_proxy_type="socks5", onion_only=True)
    assert settings_from_config(cfg).onion_only
    (tmp_path / "bmnode.toml").write_text('socksproxytype = "SOCKS5"\nonionservicesonly = true\n')
    assert load_config(tmp_path).onion_only  # the reference's keys.dat name


def test_onion_only_draws_and_dials_nothing_but_onions(tmp_path: Path):
    with KnownNodes(tmp_path) as kn:
        for i in range(20):
            kn.add(1, f"8.8.{i}.1", 8444, NOW)
        kn.add(1, V3, 8444, NOW)
        rng = random.Random(7)
        mixed = kn.candidates(1, NOW, proxied=True, limit=21, draws=2000, rng=rng)
        assert any(h != V3 for h, _ in mixed)
        only = kn.candidates(1, NOW, proxied=True, onion_only=True, limit=21, draws=2000, rng=rng)
        assert only == [(V3, 8444)]
    node = RelayNode.open(node_settings(tmp_path / "n", proxy=ProxySettings(kind="socks5"), onion_only=True))
    try:
        assert node.can_dial(V3) and not node.can_dial("8.8.8.8") and not node.can_dial("bootstrap8444.bitmessage.org")
        assert node._bootstrap_target()[0].endswith(".onion")
    finally:
        run(node.stop())
