"""Hostile peers (spec 3, 4.8, 4.10, 5.3): garbage, bad checksums, oversize headers, inv floods,
silent connections, slow readers. Each is dealt with while an honest peer keeps being served.
Real TCP on 127.0.0.1; every test is bounded by a timeout."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

from bmnode.net.testnet import LOOPBACK, RawPeer, make_object, start_node, wait_for
from bmnode.protocol.constants import MAX_MESSAGE_PAYLOAD, NODE_DANDELION, NODE_NETWORK
from bmnode.protocol.encoding import encode_var_int
from bmnode.protocol.framing import frame
from bmnode.protocol.hashing import inventory_hash
from bmnode.protocol.messages import Dinv, GetData, Inv

TIMEOUT = 60


def run(coro, timeout: float = TIMEOUT):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def honest_peer(node, listen_port: int = 4000) -> RawPeer:
    peer = await RawPeer.connect(node.listen_port)
    await peer.handshake(listen_port=listen_port)
    return peer


async def still_served(node, peer: RawPeer) -> None:
    """The honest peer gets pong for ping and an inv for a newly injected object."""
    await peer.send_frame(frame("ping"))
    await peer.recv_until("pong", timeout=10)
    res = node.inject(make_object())
    deadline = time.monotonic() + 10
    while True:
        f, _ = await peer.recv_until("inv", timeout=max(0.1, deadline - time.monotonic()))
        if res.hash in Inv.decode(f.payload).hashes:
            return


def big_inv_payload(count: int) -> bytes:
    """An inv payload of ``count`` random hashes (built quickly)."""
    return encode_var_int(count) + os.urandom(32 * count)


# ------------------------------------------------------------------------ garbage


def test_garbage_closes_only_that_peer(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path)
        try:
            honest = await honest_peer(node)
            # Before the handshake.
            bad = await RawPeer.connect(node.listen_port)
            bad.writer.write(os.urandom(2000))
            assert await bad.wait_closed(5)
            # After the handshake: bad magic.
            bad = await honest_peer(node, 4001)
            bad.write(b"\x00\x01\x02\x03" + frame("ping")[4:])
            assert await bad.wait_closed(5)
            # After the handshake: checksum mismatch.
            bad = await honest_peer(node, 4002)
            f = bytearray(frame("inv", Inv((os.urandom(32),)).encode_payload()))
            f[20] ^= 0xFF
            bad.write(bytes(f))
            assert await bad.wait_closed(5)
            # A malformed version payload.
            bad = await RawPeer.connect(node.listen_port)
            bad.writer.write(frame("version", b"\x00\x00\x00\x03short"))
            assert await bad.wait_closed(5)
            await still_served(node, honest)
            assert await wait_for(lambda: len(node.connections) == 1, 5)
        finally:
            await node.stop()

    run(main())


def test_oversize_length_header_closes_before_the_payload(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path)
        try:
            honest = await honest_peer(node)
            bad = await honest_peer(node, 4001)
            header = bytes.fromhex("e9beb4d9") + b"object".ljust(12, b"\x00")
            header += (MAX_MESSAGE_PAYLOAD + 1).to_bytes(4, "big") + b"\x00" * 4
            bad.write(header)  # no payload follows: the header alone must close it
            assert await bad.wait_closed(5)
            # A header right at the limit is fine (the payload is awaited, not refused).
            edge = await honest_peer(node, 4002)
            edge.write(header[:16] + MAX_MESSAGE_PAYLOAD.to_bytes(4, "big") + b"\x00" * 4)
            assert not await edge.wait_closed(0.5)
            await still_served(node, honest)
        finally:
            await node.stop()

    run(main())


# ------------------------------------------------------------------------ inv floods


def test_inv_over_50000_entries_is_ignored(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path)
        try:
            flooder = await honest_peer(node, 4001)
            await flooder.send_frame(frame("inv", big_inv_payload(50001)))
            await flooder.send_frame(frame("dinv", big_inv_payload(50001)))
            await flooder.send_frame(frame("ping"))
            _, skipped = await flooder.recv_until("pong", timeout=10)
            assert "getdata" not in [f.command for f in skipped]
            assert len(node.downloads) == 0
            conn = next(c for c in node.connections if c.remote_listen_port == 4001)
            assert conn.ignored_oversize_inv == 2
            # Exactly 50000 is still accepted (the limit is "more than 50000").
            await flooder.send_frame(frame("inv", big_inv_payload(50000)))
            f, _ = await flooder.recv_until("getdata", timeout=10)
            assert GetData.decode(f.payload).hashes
        finally:
            await node.stop()

    run(main())


def test_repeated_50000_entry_inv_flood_is_bounded(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path, max_offers_per_peer=60_000, request_timeout=1.0)
        try:
            honest = await honest_peer(node)
            flooder = await honest_peer(node, 4001)
            for _ in range(4):
                await flooder.send_frame(frame("inv", big_inv_payload(50_000)))
            await flooder.send_frame(frame("ping"))
            await flooder.recv_until("pong", timeout=20)
            # Memory stays bounded: at most the per-peer cap of hashes is tracked ...
            assert len(node.downloads) <= 60_000
            assert node.downloads.ignored_offers >= 4 * 50_000 - 60_000
            # ... requests to it are bounded too ...
            conn = next(c for c in node.connections if c.remote_listen_port == 4001)
            assert node.downloads.inflight(conn) <= node.settings.max_inflight_per_peer
            # ... and an honest peer's object still goes through both ways.
            await still_served(node, honest)
            obj = make_object()
            h = inventory_hash(obj)
            await honest.send(Inv((h,)))
            f, _ = await honest.recv_until("getdata", timeout=10)
            assert h in GetData.decode(f.payload).hashes
            await honest.send_frame(frame("object", obj))
            assert await wait_for(lambda: node.has_object(h), 10)
            # When the flooder leaves, everything it offered is forgotten.
            flooder.close()
            assert await wait_for(lambda: len(node.downloads) == 0, 10)
        finally:
            await node.stop()

    run(main())


def test_dinv_flood_is_bounded(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path, dandelion=90, max_stem_objects=1000, dandelion_fluff_base=60)
        try:
            flooder = RawPeer(*(await asyncio.open_connection(LOOPBACK, node.listen_port)), outbound=True)
            await flooder.handshake(services=NODE_NETWORK | NODE_DANDELION, listen_port=4001)
            await flooder.send(Dinv(tuple(os.urandom(32) for _ in range(5000))))
            await flooder.send_frame(frame("ping"))
            await flooder.recv_until("pong", timeout=10)
            assert len(node.dandelion) <= 1000
        finally:
            await node.stop()

    run(main())


# ------------------------------------------------------------------------ silence and slowness


def test_slowloris_silent_connections_time_out(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path, handshake_timeout=1.0)
        try:
            silent = [await RawPeer.connect(node.listen_port) for _ in range(40)]
            honest = await honest_peer(node)
            await still_served(node, honest)
            results = await asyncio.gather(*(p.wait_closed(10) for p in silent))
            assert all(results)
            assert await wait_for(lambda: len(node.connections) == 1, 5)
            await still_served(node, honest)
        finally:
            await node.stop()

    run(main())


def test_half_open_connections_per_ip_are_capped(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path, loopback_exempt_per_ip=False, max_handshaking_per_ip=3)
        try:
            peers = [await RawPeer.connect(node.listen_port) for _ in range(8)]
            closed = await asyncio.gather(*(p.wait_closed(1.0) for p in peers))
            assert sum(closed) == 5
            assert node.counters["inbound_refused_per_ip"] == 5
        finally:
            await node.stop()

    run(main())


def test_silent_established_peer_is_dropped(tmp_path: Path):
    async def main():
        node = await start_node(tmp_path, ping_interval=0.2, idle_timeout=1.0)
        try:
            quiet = await honest_peer(node, 4001)
            chatty = await honest_peer(node, 4002)
            deadline = time.monotonic() + 2.5
            while time.monotonic() < deadline:  # the chatty one answers pings, the quiet one never reads
                await chatty.send_frame(frame("pong"))
                await asyncio.sleep(0.1)
            assert await quiet.wait_closed(5)
            assert any(c.remote_listen_port == 4002 for c in node.established)
        finally:
            await node.stop()

    run(main())


def test_peer_that_does_not_read_is_dropped(tmp_path: Path):
    async def main():
        node = await start_node(
            tmp_path, write_high_water=64 * 1024, write_hard_limit=4 << 20, drain_timeout=1.0,
            max_intersection_delay=0.0,
        )
        try:
            objs = [make_object(size=1000) for _ in range(20)]
            for o in objs:
                node.inject(o)
            hashes = [inventory_hash(o) for o in objs]
            honest = await honest_peer(node)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((LOOPBACK, node.listen_port))
            sock.setblocking(False)
            reader, writer = await asyncio.open_connection(sock=sock)
            slow = RawPeer(reader, writer, outbound=True)
            await slow.handshake(listen_port=4001)
            # Ask for ~50 MB of objects, then never read again.
            for _ in range(3):
                await slow.send(GetData(tuple(hashes * 2500)))
            conn = next(c for c in node.connections if c.remote_listen_port == 4001)
            assert await wait_for(lambda: conn.closed, 20)
            assert "drain" in conn.close_reason
            await still_served(node, honest)
            writer.close()
        finally:
            await node.stop()

    run(main())


def test_announcement_burst_to_a_slow_reader_stays_bounded(tmp_path: Path):
    """A burst of announcements is written only while the peer's buffer is below its high-water
    mark; the rest waits as pending hashes and goes out once the peer reads again."""

    async def main():
        high = 16 * 1024
        node = await start_node(tmp_path, write_high_water=high, inv_chunk=100, announce_interval=3600.0)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((LOOPBACK, node.listen_port))
            sock.setblocking(False)
            reader, writer = await asyncio.open_connection(sock=sock)
            slow = RawPeer(reader, writer, outbound=True)
            await slow.handshake(listen_port=4002)
            conn = next(c for c in node.connections if c.remote_listen_port == 4002)
            assert await wait_for(lambda: conn.established, 10)
            # a small kernel send buffer on the node's side, so the burst reaches asyncio's buffer
            conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            objs = [make_object(size=16) for _ in range(3000)]  # 96 kB of hashes in inv
            for o in objs:
                assert node.inject(o).hash is not None
            node.flush_announcements()
            buffered = conn.transport.get_write_buffer_size()
            pending = len(conn.peer.pending_inv)
            # at most the high-water mark plus one chunk (100 hashes) is buffered; the rest waits
            assert buffered <= high + 100 * 32 + 64
            assert pending > 0
            # reading again drains everything: every hash arrives exactly once
            got: list[bytes] = []
            deadline = time.monotonic() + 30
            while len(got) < len(objs) and time.monotonic() < deadline:
                f, _ = await slow.recv_until("inv", timeout=10)
                got.extend(Inv.decode(f.payload).hashes)
            assert sorted(got) == sorted(inventory_hash(o) for o in objs)
            assert conn.peer.pending_inv == []
            writer.close()
        finally:
            await node.stop()

    run(main())
