"""Object relay between real nodes on 127.0.0.1 (spec 4.7, 5.3-5.6, 7.2, 11): a 5-node network
with and without TLS, the big inv for late joiners, restarts, rejection of invalid objects,
getdata de-duplication and fallback, serving rules and Dandelion. Every test is bounded."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bmnode.net.node import RelayNode
from bmnode.net.testnet import (
    LOOPBACK,
    RawPeer,
    make_object,
    start_network,
    start_node,
    stop_all,
    node_settings,
    wait_for,
)
from bmnode.net.tls import tls_available
from bmnode.pow.target import evaluate_pow
from bmnode.protocol.constants import MAX_OBJECT_PAYLOAD, MAX_TTL, NODE_DANDELION, NODE_NETWORK, NODE_SSL
from bmnode.protocol.framing import frame
from bmnode.protocol.hashing import inventory_hash
from bmnode.protocol.messages import Dinv, GetData, Inv, ObjectMessage

TIMEOUT = 60


def run(coro, timeout: float = TIMEOUT):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def hashes_of(frames, command="inv") -> set[bytes]:
    out: set[bytes] = set()
    for f in frames:
        if f.command == command:
            out.update(Inv.decode(f.payload).hashes)
    return out


async def collect(peer: RawPeer, seconds: float) -> list:
    """Every frame the peer receives during ``seconds``."""
    frames = []
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return frames
        try:
            frames.append(await peer.recv(left))
        except (asyncio.TimeoutError, TimeoutError):
            return frames


# ------------------------------------------------------------------------ the 5-node network


@pytest.mark.parametrize("tls", [False, True])
def test_five_node_network_relays_to_everyone(tmp_path: Path, tls: bool):
    if tls and not tls_available():
        pytest.skip("no TLS here")

    async def main():
        nodes = await start_network(tmp_path, 5, tls=tls)
        try:
            assert await wait_for(lambda: all(len(n.established) >= 2 for n in nodes), 15)
            if tls:
                assert all(c.tls_version == "TLSv1.2" for n in nodes for c in n.established)
            objs = [make_object() for _ in range(3)]
            for i, obj in enumerate(objs):
                res = nodes[(2 * i) % 5].inject(obj)
                assert res.accepted and res.new
            hashes = [inventory_hash(o) for o in objs]
            assert await wait_for(lambda: all(n.has_object(h) for n in nodes for h in hashes), 20)
            for n in nodes:
                for h, o in zip(hashes, objs):
                    assert n.inventory.get(h) == o
                assert n.counters["objects_rejected"] == 0
            # Each node downloaded each object it did not create exactly once.
            received = sum(n.counters["objects_accepted"] for n in nodes)
            assert received == len(objs) * 4
            assert sum(n.counters["objects_duplicate"] for n in nodes) == 0
        finally:
            await stop_all(nodes)

    run(main())


def test_object_from_a_peer_reaches_the_network_and_not_back(tmp_path: Path):
    async def main():
        nodes = await start_network(tmp_path, 3)
        try:
            assert await wait_for(lambda: all(len(n.established) >= 2 for n in nodes), 15)
            src = await RawPeer.connect(nodes[0].listen_port)
            await src.handshake(listen_port=1)
            await collect(src, 0.3)  # addr / big inv
            obj = make_object()
            h = inventory_hash(obj)
            await src.send(Inv((h,)))
            f, _ = await src.recv_until("getdata")
            assert GetData.decode(f.payload).hashes == (h,)
            await src.send(ObjectMessage(obj))
            assert await wait_for(lambda: all(n.has_object(h) for n in nodes), 10)
            # Never announced back to the peer that sent it.
            assert h not in hashes_of(await collect(src, 0.5))
        finally:
            await stop_all(nodes)

    run(main())


# ------------------------------------------------------------------------ big inv, restart


def test_late_joiner_gets_the_whole_inventory(tmp_path: Path):
    async def main():
        nodes = await start_network(tmp_path, 2, inv_chunk=7)
        late = None
        try:
            objs = [make_object() for _ in range(30)]
            for o in objs:
                assert nodes[0].inject(o).new
            hashes = {inventory_hash(o) for o in objs}
            assert await wait_for(lambda: all(nodes[1].has_object(h) for h in hashes), 15)
            late = await start_node(tmp_path / "late", peers=[nodes[1]], inv_chunk=7)
            assert await wait_for(lambda: all(late.has_object(h) for h in hashes), 15)
            assert late.inventory.count() == 30
        finally:
            await stop_all(nodes + ([late] if late else []))

    run(main())


def test_big_inv_chunks_and_exclusions(tmp_path: Path):
    """The big inv lists every unexpired object in chunks <= inv_chunk, not expired ones."""

    async def main():
        node = await start_node(tmp_path, inv_chunk=7)
        try:
            live = [make_object() for _ in range(16)]
            expired = make_object(expires=int(time.time()) - 100)  # accepted (< 1 h), not listed
            for o in live + [expired]:
                assert node.inject(o).new
            await asyncio.sleep(0.2)  # let the announcement batch go out (to nobody)
            peer = await RawPeer.connect(node.listen_port)
            await peer.handshake()
            frames = await collect(peer, 1.0)
            invs = [Inv.decode(f.payload).hashes for f in frames if f.command == "inv"]
            assert sorted(len(i) for i in invs) == [2, 7, 7]
            assert set().union(*invs) == {inventory_hash(o) for o in live}
            # addr comes before the inv (4.7).
            cmds = [f.command for f in frames]
            if "addr" in cmds:
                assert cmds.index("addr") < cmds.index("inv")
            # Announcements of new objects skip expired ones too.
            fresh, stale = make_object(), make_object(expires=int(time.time()) - 50)
            assert node.inject(stale).new and node.inject(fresh).new
            announced = hashes_of(await collect(peer, 0.5))
            assert announced == {inventory_hash(fresh)}
        finally:
            await node.stop()

    run(main())


def test_restart_keeps_inventory_and_known_nodes(tmp_path: Path):
    async def main():
        a = await start_node(tmp_path / "a")
        b = await start_node(tmp_path / "b", peers=[a])
        objs = [make_object() for _ in range(5)]
        try:
            for o in objs:
                a.inject(o)
            hashes = [inventory_hash(o) for o in objs]
            assert await wait_for(lambda: all(b.has_object(h) for h in hashes), 10)
            assert b.knownnodes.get(1, LOOPBACK, a.listen_port) is not None
            a_port = a.listen_port
        finally:
            await stop_all([b])
        # b restarts on the same data directory, without any configured peer.
        b2 = await start_node(tmp_path / "b")
        try:
            assert b2.inventory.count() == 5
            assert all(b2.inventory.get(h) == o for h, o in zip(hashes, objs))
            node = b2.knownnodes.get(1, LOOPBACK, a_port)
            assert node is not None and node.rating > 0
            # It dials the known node again by itself (private peers allowed in tests).
            assert await wait_for(lambda: any(c.outbound and c.established for c in b2.connections), 10)
        finally:
            await stop_all([b2, a])

    run(main())


# ------------------------------------------------------------------------ invalid objects


def _insufficient_pow(obj: bytes) -> bytes:
    now = int(time.time())
    nonce = int.from_bytes(obj[:8], "big")
    for n in range(nonce + 1, nonce + 10_000):
        bad = n.to_bytes(8, "big") + obj[8:]
        if not evaluate_pow(bad, now, 1, 1, min_ntpb=1, min_extra=1).sufficient:
            return bad
    raise AssertionError("no failing nonce found")


def invalid_objects() -> dict[str, bytes]:
    now = int(time.time())
    return {
        "insufficient_pow": _insufficient_pow(make_object()),
        "expired": make_object(expires=now - 3700),
        "expires_too_far": make_object(expires=now + MAX_TTL + 600),
        "stream_not_joined": make_object(stream=2),
        "bad_stream": make_object(stream=0),
        "oversize": make_object(size=MAX_OBJECT_PAYLOAD + 1, ntpb=1, extra=1),
        "malformed": b"\x00" * 19,
    }


def test_invalid_objects_are_rejected_and_not_relayed(tmp_path: Path):
    bad = invalid_objects()

    async def main():
        nodes = await start_network(tmp_path, 2)
        try:
            assert await wait_for(lambda: all(len(n.established) >= 1 for n in nodes), 10)
            peer = await RawPeer.connect(nodes[0].listen_port)
            await peer.handshake()
            for obj in bad.values():
                await peer.send(ObjectMessage(obj))
            good = make_object()
            await peer.send(ObjectMessage(good))
            assert await wait_for(lambda: nodes[1].has_object(inventory_hash(good)), 10)
            for reason, obj in bad.items():
                assert nodes[0].counters["rejected_" + reason] == 1, reason
                h = inventory_hash(obj)
                assert not nodes[0].has_object(h) and not nodes[1].has_object(h), reason
            assert nodes[0].counters["objects_rejected"] == len(bad)
            assert nodes[1].counters["objects_received"] == 1  # only the good one travelled
            # The connection is kept (drop, not close: 4.10).
            await peer.send_frame(frame("ping"))
            await peer.recv_until("pong")
            # Local injection applies the same rule.
            for reason, obj in bad.items():
                res = nodes[0].inject(obj)
                assert not res.accepted and res.verdict.reason.value == reason
        finally:
            await stop_all(nodes)

    run(main())


def test_network_pow_setting_is_enforced(tmp_path: Path):
    """A node demanding more than the object carries drops it."""

    async def main():
        node = await start_node(tmp_path, ntpb=1000, extra=1000)
        try:
            weak = make_object()  # made for 1:1
            res = node.inject(weak)
            assert not res.accepted and res.verdict.reason.value == "insufficient_pow"
        finally:
            await node.stop()

    run(main())


# ------------------------------------------------------------------------ download logic


def test_getdata_asks_one_peer_then_falls_back(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path, request_timeout=0.5)
        try:
            x = await RawPeer.connect(node.listen_port)
            await x.handshake(listen_port=1)
            y = await RawPeer.connect(node.listen_port)
            await y.handshake(listen_port=2)
            obj = make_object()
            h = inventory_hash(obj)
            await x.send(Inv((h,)))
            f, _ = await x.recv_until("getdata")
            assert GetData.decode(f.payload).hashes == (h,)
            await y.send(Inv((h,)))
            # Y is not asked while X's request is in flight ...
            early = await collect(y, 0.2)
            assert h not in hashes_of(early, "getdata")
            # ... but after X's timeout it is.
            f, _ = await y.recv_until("getdata", timeout=5)
            assert GetData.decode(f.payload).hashes == (h,)
            await y.send(ObjectMessage(obj))
            assert await wait_for(lambda: node.has_object(h), 5)
            assert node.downloads.timeouts >= 1
            assert len(node.downloads) == 0
        finally:
            await node.stop()

    run(main())


def test_getdata_moves_on_when_the_asked_peer_disconnects(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path)
        try:
            x = await RawPeer.connect(node.listen_port)
            await x.handshake(listen_port=1)
            y = await RawPeer.connect(node.listen_port)
            await y.handshake(listen_port=2)
            obj = make_object()
            h = inventory_hash(obj)
            await x.send(Inv((h,)))
            await x.recv_until("getdata")
            await y.send(Inv((h,)))
            x.close()
            f, _ = await y.recv_until("getdata", timeout=5)
            assert h in GetData.decode(f.payload).hashes
        finally:
            await node.stop()

    run(main())


def test_serving_and_anti_intersection_delay(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path, max_intersection_delay=0.6)
        try:
            objs = [make_object() for _ in range(3)]
            for o in objs:
                node.inject(o)
            hashes = [inventory_hash(o) for o in objs]
            peer = await RawPeer.connect(node.listen_port)
            await peer.handshake()
            await peer.send(GetData(tuple(hashes)))
            got = []
            while len(got) < 3:
                f, _ = await peer.recv_until("object")
                got.append(f.payload)
            assert sorted(got) == sorted(objs)
            # Asking for something we lack starts the delay: the next getdata is ignored ...
            await peer.send(GetData((os.urandom(32),)))
            await asyncio.sleep(0.05)
            await peer.send(GetData((hashes[0],)))
            assert "object" not in [f.command for f in await collect(peer, 0.3)]
            # ... until it has passed.
            await asyncio.sleep(0.5)
            await peer.send(GetData((hashes[0],)))
            f, _ = await peer.recv_until("object", timeout=5)
            assert f.payload == objs[0]
        finally:
            await node.stop()

    run(main())


def test_duplicate_offers_are_not_downloaded_twice(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path)
        try:
            obj = make_object()
            node.inject(obj)
            h = inventory_hash(obj)
            peer = await RawPeer.connect(node.listen_port)
            await peer.handshake()
            await peer.send(Inv((h,)))
            await peer.send(ObjectMessage(obj))  # unsolicited duplicate: dropped silently
            frames = await collect(peer, 0.4)
            assert h not in hashes_of(frames, "getdata")
            assert node.counters["objects_duplicate"] == 1
        finally:
            await node.stop()

    run(main())


# ------------------------------------------------------------------------ Dandelion (11)


async def _stem_servers(n: int, dandelion: bool = True):
    """n listening raw peers; returns (server objects, queue of accepted RawPeers, ports)."""
    q: asyncio.Queue[RawPeer] = asyncio.Queue()

    async def on_conn(r, w):
        await q.put(RawPeer(r, w, outbound=False))

    servers = [await asyncio.start_server(on_conn, LOOPBACK, 0) for _ in range(n)]
    return servers, q, [s.sockets[0].getsockname()[1] for s in servers]


def test_dandelion_stem_goes_to_one_child_then_fluffs(tmp_path: Path):
    async def main():
        servers, q, ports = await _stem_servers(2)
        node = await start_node(
            tmp_path, peers=[(LOOPBACK, p) for p in ports], dandelion=100,
            dandelion_fluff_base=8.0, dandelion_fluff_mean=0.01,
        )
        try:
            services = NODE_NETWORK | NODE_DANDELION
            peers = [await asyncio.wait_for(q.get(), 10) for _ in range(2)]
            for p in peers:
                v = await p.handshake(services=services, listen_port=9)
                assert v.services & NODE_DANDELION
            assert await wait_for(lambda: len(node.dandelion.stems) == 2, 5)
            inbound = await RawPeer.connect(node.listen_port)
            await inbound.handshake(listen_port=7)
            obj = make_object()
            res = node.inject(obj)
            assert res.stem
            h = res.hash
            # Wait (bounded) until a stem child has the dinv, then a little more for any stray inv.
            frames: list[list] = [[], []]
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not any(h in hashes_of(fs, "dinv") for fs in frames):
                for i, p in enumerate(peers):
                    frames[i] += await collect(p, 0.1)
            for i, p in enumerate(peers):
                frames[i] += await collect(p, 0.2)
            dinvs = [hashes_of(fs, "dinv") for fs in frames]
            invs = [hashes_of(fs, "inv") for fs in frames]
            # Exactly one stem child hears of it, with a dinv (stem probability 100 %).
            assert sorted(h in d for d in dinvs) == [False, True]
            assert not any(h in i for i in invs)
            child = peers[[h in d for d in dinvs].index(True)]
            other = peers[[h in d for d in dinvs].index(False)]
            # A non-child asking for it is treated as asking for a missing object.
            await other.send(GetData((h,)))
            assert "object" not in [f.command for f in await collect(other, 0.3)]
            await child.send(GetData((h,)))
            f, _ = await child.recv_until("object")
            assert f.payload == obj
            # Not in the big inv of a new peer while in stem phase.
            late = await RawPeer.connect(node.listen_port)
            await late.handshake(listen_port=8)
            assert h not in hashes_of(await collect(late, 0.3))
            # After the fluff deadline everyone gets a plain inv (the child excepted).
            f, _ = await inbound.recv_until("inv", timeout=20)
            assert h in Inv.decode(f.payload).hashes
            assert h not in node.dandelion
            assert node.counters["fluffed"] == 1
        finally:
            await node.stop()
            for s in servers:
                s.close()

    run(main())


def test_dandelion_child_without_support_gets_inv(tmp_path: Path):
    async def main():
        servers, q, ports = await _stem_servers(1)
        node = await start_node(tmp_path, peers=[(LOOPBACK, ports[0])], dandelion=100, dandelion_fluff_base=30)
        try:
            peer = await asyncio.wait_for(q.get(), 10)
            await peer.handshake(services=NODE_NETWORK, listen_port=9)
            assert await wait_for(lambda: len(node.dandelion.stems) == 1, 5)
            res = node.inject(make_object())
            f, _ = await peer.recv_until("inv", timeout=5)
            assert res.hash in Inv.decode(f.payload).hashes
            assert res.hash in node.dandelion  # still stem locally
        finally:
            await node.stop()
            for s in servers:
                s.close()

    run(main())


def test_dinv_received_is_forwarded_to_one_stem_only(tmp_path: Path):
    async def main():
        servers, q, ports = await _stem_servers(1)
        node = await start_node(tmp_path, peers=[(LOOPBACK, ports[0])], dandelion=100, dandelion_fluff_base=30)
        try:
            stem = await asyncio.wait_for(q.get(), 10)
            await stem.handshake(services=NODE_NETWORK | NODE_DANDELION, listen_port=9)
            assert await wait_for(lambda: len(node.dandelion.stems) == 1, 5)
            parent = await RawPeer.connect(node.listen_port)
            await parent.handshake(services=NODE_NETWORK | NODE_DANDELION, listen_port=5)
            bystander = await RawPeer.connect(node.listen_port)
            await bystander.handshake(listen_port=6)
            obj = make_object()
            h = inventory_hash(obj)
            await parent.send(Dinv((h,)))
            f, _ = await parent.recv_until("getdata")
            assert h in GetData.decode(f.payload).hashes
            await parent.send(ObjectMessage(obj))
            f, _ = await stem.recv_until("dinv", timeout=5)
            assert h in Dinv.decode(f.payload).hashes
            assert h not in hashes_of(await collect(bystander, 0.4))
            assert node.dandelion.child(h) is not None
            # Someone else fluffs it: a normal inv of the hash ends the stem phase at once.
            await bystander.send(Inv((h,)))
            f, _ = await parent.recv_until("inv", timeout=5)
            assert h in Inv.decode(f.payload).hashes
            assert h not in node.dandelion
        finally:
            await node.stop()
            for s in servers:
                s.close()

    run(main())


def test_dandelion_off_means_no_service_bit_and_dinv_ignored(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path, dandelion=0)
        try:
            peer = await RawPeer.connect(node.listen_port)
            v = await peer.handshake(services=NODE_NETWORK | NODE_DANDELION)
            assert not v.services & NODE_DANDELION
            await peer.send(Dinv((os.urandom(32),)))
            assert "getdata" not in [f.command for f in await collect(peer, 0.3)]
            assert node.counters["dinv_ignored"] == 1
            res = node.inject(make_object())
            assert not res.stem
            f, _ = await peer.recv_until("inv", timeout=5)
            assert res.hash in Inv.decode(f.payload).hashes
        finally:
            await node.stop()

    run(main())


# ------------------------------------------------------------------------ maintenance


def test_scheduled_cleanup_removes_long_expired_objects(tmp_path: Path):
    async def main():
        clock = [time.time()]
        node = RelayNode.open(node_settings(tmp_path, cleanup_interval=0.1), clock=lambda: clock[0])
        await node.start()
        try:
            obj = make_object(ttl=400)
            assert node.inject(obj).new
            h = inventory_hash(obj)
            clock[0] += 400 + 10800 + 5  # 3 h after expiry
            assert await wait_for(lambda: not node.has_object(h), 5)
            assert node.counters["cleanup_objects"] == 1
        finally:
            await node.stop()

    run(main())


def test_bmnode_run_shuts_down_cleanly_on_sigterm(tmp_path: Path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen(
        # --relay-only: this is the net process's own shutdown; the full node's is in test_fullnode.py
        [sys.executable, "-m", "bmnode.cli", "run", "--relay-only", "--data-dir", str(tmp_path),
         "--listen", "127.0.0.1:0", "--no-bootstrap", "--network-pow", "1:1", "--log-level", "INFO"],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        port = None
        deadline = time.monotonic() + 20
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if "listening on 127.0.0.1:" in line:
                port = int(line.rsplit(":", 1)[1].split()[0])
        assert port, "the node did not report its port"

        async def talk():
            peer = await RawPeer.connect(port)
            v = await peer.handshake(services=NODE_NETWORK)
            assert v.services & NODE_SSL == (NODE_SSL if tls_available() else 0)
            await peer.send(ObjectMessage(make_object()))
            await asyncio.sleep(0.3)
            peer.close()

        run(talk(), 20)
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=20)[1]
        assert proc.returncode == 0
        assert "node stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The object it received was flushed to the inventory before exit.
    from bmnode.store.inventory import Inventory

    with Inventory(tmp_path) as inv:
        assert inv.count() == 1


def test_bootstrap_list_is_used_only_when_enabled(tmp_path: Path):
    """With bootstrap off nothing is seeded or dialled; with it on the node would dial a
    bootstrap name (recorded here instead of dialled: tests never leave 127.0.0.1)."""
    from bmnode.net.bootstrap import BOOTSTRAP_NAMES

    async def main():
        dialled: dict[str, list] = {"off": [], "on": []}
        for mode, boot in (("off", False), ("on", True)):
            node = RelayNode.open(node_settings(tmp_path / mode, bootstrap=boot, tick_interval=0.02))
            node._dial = dialled[mode].append  # type: ignore[method-assign]
            await node.start()
            try:
                await asyncio.sleep(0.2)
                if boot:
                    assert node.knownnodes.count() > 0  # the default nodes were seeded
                else:
                    assert node.knownnodes.count() == 0
            finally:
                await node.stop()
        assert dialled["off"] == []
        assert dialled["on"] and all(d in BOOTSTRAP_NAMES or d[1] > 0 for d in dialled["on"])
        assert any(d in BOOTSTRAP_NAMES for d in dialled["on"])

    run(main())


# ------------------------------------------------------------------------ pure logic


def test_download_tracker_one_request_per_hash_and_fallback():
    from bmnode.net.download import DownloadTracker

    t: DownloadTracker[str] = DownloadTracker(request_timeout=10, max_inflight_per_peer=2)
    for p in "abc":
        t.add_peer(p)
    h1, h2, h3 = (bytes([i]) * 32 for i in range(3))
    have = {h3}.__contains__
    assert t.offered("a", [h1, h2, h3], have, 0.0) == 2  # h3 we already have
    assert t.offered("b", [h1], have, 0.0) == 0  # known: b is just another offerer
    assert t.next_requests("b", 0.0, 10) == []  # nothing queued at b
    assert t.next_requests("a", 0.0, 10) == [h1, h2]
    assert t.inflight("a") == 2
    assert t.expire(5.0) == set()
    woken = t.expire(10.0)  # a did not deliver: h1 moves to b, h2 has nobody else
    assert woken == {"b"}
    assert h2 not in t and h1 in t
    assert t.next_requests("b", 10.0, 10) == [h1]
    offerers, asked = t.received(h1)
    assert asked == "b" and set(offerers) == {"b"}
    assert len(t) == 0 and t.inflight("b") == 0


def test_download_tracker_bounds_and_peer_removal():
    from bmnode.net.download import DownloadTracker

    t: DownloadTracker[str] = DownloadTracker(max_queued_per_peer=3, max_wanted=4)
    t.add_peer("a")
    t.add_peer("b")
    hs = [bytes([i]) * 32 for i in range(10)]
    never = lambda h: False  # noqa: E731
    assert t.offered("a", hs, never, 0) == 3
    assert t.ignored_offers == 7
    assert t.offered("b", hs[5:], never, 0) == 1  # global cap of 4
    assert t.offered("ghost", hs, never, 0) == 0  # unknown peer
    t.offered("b", hs[:1], never, 0)
    t.next_requests("a", 0, 10)
    woken = t.remove_peer("a", 1.0)
    assert woken == {"b"}
    assert set(t.next_requests("b", 1.0, 10)) == {hs[0], hs[5]}
    assert len(t) == 2


def test_dandelion_state_rules():
    import random

    from bmnode.net.dandelion import LOCAL, DandelionState

    d: DandelionState[str] = DandelionState(stem_probability=90, fluff_base=10, fluff_mean=30, rng=random.Random(1))
    assert d.add_stem("s1") == [] and d.add_stem("s2") == [] and d.add_stem("s3") == []
    assert d.stems == ["s1", "s2"]
    h = b"\x01" * 32
    child = d.add(h, LOCAL, 1, 0.0)
    assert child in ("s1", "s2") and d.child(h) == child
    assert d.child_for(LOCAL) == child  # the node map is stable
    assert d.child_for("s1") == "s2" and d.child_for("s2") == "s1"  # never back to the parent
    assert d.due(9.9) == []  # the deadline is at least 10 s away
    orphans = d.remove_peer(child, 5.0)
    assert orphans == [h] and d.child(h) is None
    assert d.add_stem("s3") == [h] and d.child(h) == "s3"
    (due_h, obj), = d.due(1e9)
    assert due_h == h and obj.stream == 1 and h not in d
    fluffs = sum(d.fluff_decision() for _ in range(10_000))
    assert 800 < fluffs < 1400  # 11 % (randint(1, 100) >= 90)
    off: DandelionState[str] = DandelionState(stem_probability=0)
    assert not off.enabled and off.add_stem("x") == []


def test_configured_peer_is_redialled_after_it_restarts(tmp_path: Path):
    async def main():
        b = await start_node(tmp_path / "b")
        port = b.listen_port
        a = await start_node(tmp_path / "a", peers=[b])
        b2 = None
        try:
            assert await wait_for(lambda: len(a.established) == 1, 10)
            await b.stop()
            assert await wait_for(lambda: not a.established, 10)
            b2 = await start_node(tmp_path / "b", listen_port=port)
            assert await wait_for(lambda: len(a.established) == 1, 15)
            obj = make_object()
            b2.inject(obj)
            assert await wait_for(lambda: a.has_object(inventory_hash(obj)), 10)
        finally:
            await stop_all([a] + ([b2] if b2 else []))

    run(main())


def test_dandelion_stem_without_a_next_hop_fluffs_at_once(tmp_path: Path):
    """Two Dandelion nodes, A dials B. B has no outbound stem: its own objects are announced at
    once, and A's stem object (dinv to B) is fluffed by B on arrival, not at the deadline."""

    async def main():
        slow = dict(dandelion=100, dandelion_fluff_base=120.0, dandelion_fluff_mean=0.01)
        b = await start_node(tmp_path / "b", **slow)
        a = await start_node(tmp_path / "a", peers=[b], **slow)
        try:
            assert await wait_for(lambda: len(a.dandelion.stems) == 1 and b.stats()["established"] == 1, 10)
            res_b = b.inject(make_object())
            assert not res_b.stem
            assert await wait_for(lambda: a.has_object(res_b.hash), 10)
            res_a = a.inject(make_object())
            assert res_a.stem  # A's stem is B
            assert await wait_for(lambda: b.has_object(res_a.hash), 10)
            assert await wait_for(lambda: res_a.hash not in b.dandelion, 5)
            assert b.counters["fluffed"] >= 1
        finally:
            await a.stop()
            await b.stop()

    run(main())
