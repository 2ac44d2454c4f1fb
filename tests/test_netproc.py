"""The net process on the bus: started by the supervisor with a loopback config, it relays an
object pushed on the outbox to a second node and publishes it; objects from the peer are
published too; the control socket answers inject and get_stats; garbage is refused; a
kill -9 of the process is followed by a restart with a working bus. Bounded in time."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import zmq
import zmq.asyncio

from bmnode.net.testnet import LOOPBACK, make_object, start_node, wait_for
from bmnode.node import bus
from bmnode.node.config import NodeConfig
from bmnode.node.netproc import net_main
from bmnode.node.supervisor import ChildSpec, Supervisor
from bmnode.protocol.constants import OBJECT_MSG
from bmnode.protocol.hashing import inventory_hash

TIMEOUT = 90
FAST = dict(announce_interval=0.05, tick_interval=0.05, first_getdata_delay=0.0, max_intersection_delay=0.3,
            reconnect_delay=0.2, reconnect_delay_max=1.0)


def net_config(data_dir) -> NodeConfig:
    return NodeConfig(data_dir=data_dir, listen="127.0.0.1:0", bootstrap=False, network_pow="1:1",
                      dandelion=False, allow_private_peers=True, log_level="WARNING", max_outbound=0)


class Bus:
    """The test's side of the net process's sockets."""

    def __init__(self, e: bus.Endpoints) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        for t in (b"object", b"injected", b"stats"):
            self.sub.setsockopt(zmq.SUBSCRIBE, t)
        self.sub.connect(e.objects)
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.connect(e.outbox)
        self.ctl = self.ctx.socket(zmq.DEALER)
        self.ctl.connect(e.net)
        for s in (self.sub, self.push, self.ctl):
            s.setsockopt(zmq.LINGER, 0)
        self.seen: list[bus.BusMessage] = []

    async def next(self, pred, timeout: float = 20.0) -> bus.BusMessage:
        """The first published message (already seen or new) matching ``pred``."""
        for m in self.seen:
            if pred(m):
                self.seen.remove(m)
                return m
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no such message on the bus")
            if not await self.sub.poll(int(left * 1000)):
                continue
            m = bus.decode(await self.sub.recv_multipart())
            if pred(m):
                return m
            if not isinstance(m, bus.NetStats):
                self.seen.append(m)

    async def request(self, msg_or_frames, timeout: float = 5.0) -> bus.BusMessage:
        frames = msg_or_frames if isinstance(msg_or_frames, list) else bus.encode(msg_or_frames)
        await self.ctl.send_multipart(frames)
        if not await self.ctl.poll(int(timeout * 1000)):
            raise TimeoutError("no answer from the net process")
        return bus.decode(await self.ctl.recv_multipart())

    async def stats(self, pred=lambda s: True, timeout: float = 30.0) -> bus.NetStats:
        deadline = time.monotonic() + timeout
        while True:
            try:
                s = await self.request(bus.StatsRequest(), timeout=2.0)
                if isinstance(s, bus.NetStats) and pred(s):
                    return s
            except TimeoutError:
                # the process may be (re)starting: a DEALER resends nothing, so use a fresh one
                self.ctl.close(0)
                self.ctl = self.ctx.socket(zmq.DEALER)
                self.ctl.setsockopt(zmq.LINGER, 0)
                self.ctl.connect(self._net)
            if time.monotonic() > deadline:
                raise TimeoutError("the net process did not report the expected stats")
            await asyncio.sleep(0.1)

    def close(self) -> None:
        for s in (self.sub, self.push, self.ctl):
            s.close(0)
        self.ctx.term()


@pytest.fixture
def net_process(tmp_path):
    e = bus.Endpoints(tmp_path / "net")
    sup = Supervisor([ChildSpec("net", net_main, (net_config(tmp_path / "net"), FAST), {"stats_interval": 0.2})],
                     backoff=0.1, grace=10)
    sup.start()
    yield sup, e
    sup.stop(30)


def test_net_process_relays_and_publishes(tmp_path, net_process):
    sup, e = net_process

    async def scenario():
        b = Bus(e)
        b._net = e.net  # type: ignore[attr-defined]
        peer = None
        try:
            first = await b.stats()
            assert first.listen_port > 0 and first.pid == sup.snapshot()[0]["pid"]
            await b.next(lambda m: isinstance(m, bus.NetStats))  # the subscription is live
            peer = await start_node(tmp_path / "peer", peers=[(LOOPBACK, first.listen_port)], **FAST)
            assert await wait_for(lambda: len(peer.established) == 1, 20)
            st = await b.stats(lambda s: any(c["established"] for c in s.connections))
            conn = st.connections[0]
            assert conn["host"] == LOOPBACK and conn["inbound"] is True and conn["user_agent"].startswith("/")
            assert st.counters["established"] >= 1

            # 1. an object pushed on the outbox: injected, published, relayed to the peer
            obj = make_object(size=100)
            h = inventory_hash(obj)
            await b.push.send_multipart(bus.encode(bus.InjectRequest(object=obj, request_id=11, kind="msg")))
            res = await b.next(lambda m: isinstance(m, bus.InjectResult) and m.request_id == 11)
            assert res.accepted and res.new and res.hash == h
            ev = await b.next(lambda m: isinstance(m, bus.ObjectEvent) and m.hash == h)
            assert ev.object == obj and ev.local is True and ev.process is True
            assert ev.object_type == OBJECT_MSG and ev.stream == 1 and ev.expires == int.from_bytes(obj[8:16], "big")
            assert await wait_for(lambda: peer.has_object(h), 20)

            # 2. an object from the peer: stored by the net process and published (not local)
            obj2 = make_object(size=120)
            h2 = inventory_hash(obj2)
            assert peer.inject(obj2).accepted
            ev2 = await b.next(lambda m: isinstance(m, bus.ObjectEvent) and m.hash == h2)
            assert ev2.object == obj2 and ev2.local is False

            # 3. the control socket: inject with the answer, the same object again, an invalid one
            obj3 = make_object(size=90)
            r3 = await b.request(bus.InjectRequest(object=obj3, request_id=5))
            assert isinstance(r3, bus.InjectResult) and r3.accepted and r3.new and r3.hash == inventory_hash(obj3)
            again = await b.request(bus.InjectRequest(object=obj3, request_id=6))
            assert isinstance(again, bus.InjectResult) and not again.new
            expired = make_object(expires=int(time.time()) - 4 * 3600)
            r4 = await b.request(bus.InjectRequest(object=expired, request_id=7))
            assert isinstance(r4, bus.InjectResult) and not r4.accepted and r4.reason
            assert await wait_for(lambda: peer.has_object(inventory_hash(obj3)), 20)
            assert not peer.has_object(inventory_hash(expired))

            # 4. garbage: an error answer on the control socket, silence on the outbox, no crash
            bad = await b.request([b"inject", b"\xc1"])
            assert isinstance(bad, bus.ErrorReply) and bad.code == "bad_message"
            other = await b.request(bus.PowCancel(job="x"))
            assert isinstance(other, bus.ErrorReply) and other.code == "unexpected"
            await b.push.send_multipart([b"inject", b"junk"])
            await b.push.send_multipart(bus.encode(bus.WorkerBye(name="x")))
            obj5 = make_object(size=50)
            await b.push.send_multipart(bus.encode(bus.InjectRequest(object=obj5)))  # no request id: no answer
            ev5 = await b.next(lambda m: isinstance(m, bus.ObjectEvent) and m.hash == inventory_hash(obj5))
            assert ev5.local
            st = await b.stats()
            assert st.counters["bus_bad_messages"] == 4
            assert not any(isinstance(m, bus.InjectResult) and m.request_id == 0 for m in b.seen)
            assert sup.snapshot()[0]["restarts"] == 0
        finally:
            if peer is not None:
                await peer.stop()
            b.close()

    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))
    sup.stop(30)
    assert sup.snapshot()[0]["last_exit"] == 0  # a clean exit on SIGTERM
    for name in ("objects", "outbox", "net"):
        assert not e.path(name).exists()  # socket files cleaned up


def test_net_process_killed_is_restarted_with_its_bus(tmp_path, net_process):
    sup, e = net_process

    async def scenario():
        b = Bus(e)
        b._net = e.net  # type: ignore[attr-defined]
        try:
            first = await b.stats()
            os.kill(first.pid, signal.SIGKILL)
            assert await asyncio.to_thread(
                sup.wait_for, lambda v: v["net"]["restarts"] == 1 and v["net"]["state"] == "running", 30
            )
            second = await b.stats(lambda s: s.pid != first.pid)
            assert second.pid == sup.snapshot()[0]["pid"]
            # PUB/SUB drops what is published before the subscriber has reconnected: wait for it
            await b.next(lambda m: isinstance(m, bus.NetStats) and m.pid == second.pid, 30)
            # the restarted process binds the same (stale) socket files and serves them
            obj = make_object()
            r = await b.request(bus.InjectRequest(object=obj, request_id=1))
            assert isinstance(r, bus.InjectResult) and r.accepted
            ev = await b.next(lambda m: isinstance(m, bus.ObjectEvent) and m.hash == inventory_hash(obj), 20)
            assert ev.object == obj
        finally:
            b.close()

    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))
