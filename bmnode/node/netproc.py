"""The net process: a :class:`~bmnode.net.node.RelayNode` wired to the bus.

* every new valid object (received or injected) is PUBlished on ``E.objects`` as an
  ``object`` message (:class:`~bmnode.node.bus.ObjectEvent`, raw bytes + inventory hash +
  type/version/stream/expires + the relay verdict's "process" flag);
* objects to send arrive on the ``E.outbox`` PULL socket (``inject``); when the request
  carries a ``request_id`` the result is published as ``injected``;
* the ``E.net`` ROUTER answers ``inject`` (with the result) and ``get_stats`` at once;
* ``stats`` (counters, listening port, connections) is published every ``stats_interval``
  seconds for the API's clientStatus/listConnections.

:func:`net_main` is the supervisor's entry point; :class:`NetBus` is the part a test (or a
future multi-net-process layout) can drive on its own event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any

import zmq
import zmq.asyncio

from bmnode.net.node import InjectResult, RelayNode
from bmnode.net.settings import NetSettings, settings_from_config
from bmnode.node import bus
from bmnode.protocol.hashing import inventory_hash
from bmnode.protocol.validation import RelayVerdict

log = logging.getLogger("bmnode.netproc")

__all__ = ["NetBus", "STATS_INTERVAL", "net_main", "serve_with_bus"]

#: Seconds between ``stats`` publications.
STATS_INTERVAL = 5.0


class NetBus:
    """The bus sockets of one net process. Create it, build the node with
    ``on_object=netbus.on_object``, then ``await netbus.start(node)``; ``close()`` at the end."""

    def __init__(self, endpoints: bus.Endpoints, *, stats_interval: float = STATS_INTERVAL,
                 context: zmq.asyncio.Context | None = None) -> None:
        self.endpoints = endpoints
        self.stats_interval = stats_interval
        self._own_context = context is None
        self.context = context or zmq.asyncio.Context()
        self.node: RelayNode | None = None
        self.pub: zmq.asyncio.Socket | None = None
        self.pull: zmq.asyncio.Socket | None = None
        self.router: zmq.asyncio.Socket | None = None
        self.counters = {"published": 0, "injected": 0, "bad_messages": 0, "publish_dropped": 0}
        self._tasks: list[asyncio.Task] = []
        self._bound: list[str] = []
        #: Peer traffic: bytes of the connections gone since (as last seen) and of the current ones.

    async def start(self, node: RelayNode) -> None:
        """Bind the three sockets and start serving them."""
        self.node = node
        e = self.endpoints
        e.prepare()
        ctx = self.context
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, 100_000)
        self.pull = ctx.socket(zmq.PULL)
        self.router = ctx.socket(zmq.ROUTER)
        for s in (self.pub, self.pull, self.router):
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.MAXMSGSIZE, bus.MAX_BUS_MESSAGE)
        for sock, ep in ((self.pub, e.objects), (self.pull, e.outbox), (self.router, e.net)):
            sock.bind(ep)
            self._bound.append(ep)
        self._tasks = [
            asyncio.create_task(self._outbox_loop(), name="bmnode-bus-outbox"),
            asyncio.create_task(self._control_loop(), name="bmnode-bus-control"),
            asyncio.create_task(self._stats_loop(), name="bmnode-bus-stats"),
        ]
        log.info("net bus: objects on %s, outbox on %s, control on %s", e.objects, e.outbox, e.net)

    async def close(self) -> None:
        """Stop the loops, close the sockets, remove the socket files."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        for s in (self.pub, self.pull, self.router):
            if s is not None:
                s.close(0)
        self.pub = self.pull = self.router = None
        for ep in self._bound:
            bus.remove_ipc(ep)
        self._bound = []
        if self._own_context:
            self.context.term()

    # ------------------------------------------------------------------ out

    def _publish(self, msg: bus.BusMessage) -> None:
        if self.pub is None:
            return
        try:
            fut = self.pub.send_multipart(bus.encode(msg), flags=zmq.NOBLOCK)
            if isinstance(fut, asyncio.Future):
                fut.add_done_callback(_swallow)
            self.counters["published"] += 1
        except zmq.ZMQError:  # PUB never blocks; at its high-water mark it drops
            self.counters["publish_dropped"] += 1

    def on_object(self, h: bytes, obj: bytes, verdict: RelayVerdict, local: bool) -> None:
        """The RelayNode's hook: publish one new valid object."""
        hdr = verdict.header
        if hdr is None:  # cannot happen for an accepted object
            return
        self._publish(bus.ObjectEvent(
            hash=h, object=obj, object_type=hdr.object_type, version=hdr.version, stream=hdr.stream,
            expires=hdr.expires_time, process=verdict.process, local=local,
        ))

    def stats_message(self) -> bus.NetStats:
        """The current counters and connections."""
        node = self.node
        counters: dict[str, int] = {}
        conns: list[dict[str, Any]] = []
        port = 0
        if node is not None:
            for k, v in node.stats().items():
                if isinstance(v, int) and not isinstance(v, bool):
                    counters[str(k)] = v
            counters.update({f"bus_{k}": v for k, v in self.counters.items()})
            port = node.listen_port if node.settings.listen else 0
            for c in list(node.connections):
                if c.closed:
                    continue
                conns.append({
                    "host": c.host, "port": int(c.port), "inbound": not c.outbound,
                    "established": bool(c.established),
                    "user_agent": bytes(c.user_agent).decode("utf-8", "replace"),
                    "streams": list(getattr(c, "streams", ()) or ()),
                })
        return bus.NetStats(time=time.time(), pid=os.getpid(), listen_port=port, counters=counters, connections=conns)

    def _inject(self, req: bus.InjectRequest) -> bus.InjectResult:
        assert self.node is not None
        self.counters["injected"] += 1
        try:
            r: InjectResult = self.node.inject(req.object)
        except Exception as exc:  # a bug below must not kill the loop; the caller hears of it
            log.exception("inject failed")
            return bus.InjectResult(request_id=req.request_id, hash=inventory_hash(req.object), accepted=False,
                                    reason="error", message=str(exc)[:1000])
        v = r.verdict
        return bus.InjectResult(
            request_id=req.request_id, hash=r.hash, accepted=r.accepted, new=r.new, stem=r.stem,
            reason=getattr(v.reason, "value", str(v.reason))[:64], message=(v.message or "")[:1000],
        )

    # ------------------------------------------------------------------ loops

    async def _outbox_loop(self) -> None:
        assert self.pull is not None
        while True:
            frames = await self.pull.recv_multipart()
            try:
                msg = bus.decode(frames)
            except bus.BusError as exc:
                self.counters["bad_messages"] += 1
                log.warning("outbox: dropped a bad message: %s", exc)
                continue
            if not isinstance(msg, bus.InjectRequest):
                self.counters["bad_messages"] += 1
                log.warning("outbox: unexpected %s message", msg.topic)
                continue
            result = self._inject(msg)
            if msg.request_id:
                self._publish(result)

    async def _control_loop(self) -> None:
        assert self.router is not None
        while True:
            frames = await self.router.recv_multipart()
            if len(frames) < 1:
                continue
            env = [bytes(frames[0])]
            try:
                env, msg = bus.split(frames)
                if isinstance(msg, bus.InjectRequest):
                    reply: bus.BusMessage = self._inject(msg)
                elif isinstance(msg, bus.StatsRequest):
                    reply = self.stats_message()
                else:
                    self.counters["bad_messages"] += 1
                    reply = bus.ErrorReply(code="unexpected", message=f"the net process does not serve {msg.topic}")
            except bus.BusError as exc:
                self.counters["bad_messages"] += 1
                reply = bus.ErrorReply(code="bad_message", message=str(exc)[:1000])
            try:
                await self.router.send_multipart(env + bus.encode(reply), flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                pass

    async def _stats_loop(self) -> None:
        while True:
            self._publish(self.stats_message())
            await asyncio.sleep(self.stats_interval)


def _swallow(fut: "asyncio.Future[Any]") -> None:
    if not fut.cancelled():
        fut.exception()


async def serve_with_bus(settings: NetSettings, endpoints: bus.Endpoints, stop: asyncio.Event | None = None,
                         *, stats_interval: float = STATS_INTERVAL) -> RelayNode:
    """Run a node with its bus until ``stop`` (or SIGTERM/SIGINT), then stop both cleanly."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    netbus = NetBus(endpoints, stats_interval=stats_interval)
    node = RelayNode.open(settings, on_object=netbus.on_object)
    try:
        await node.start()
        await netbus.start(node)
        log.info("net process up: port %d, data %s", node.listen_port, settings.data_dir)
        await stop.wait()
        log.info("net process shutting down")
    finally:
        await netbus.close()
        await node.stop()
        for sig in installed:
            loop.remove_signal_handler(sig)
    return node


def net_main(config: Any, overrides: dict[str, Any] | None = None, *, stats_interval: float = STATS_INTERVAL,
             bus_dir: str | None = None) -> int:
    """Entry point of the net process (a :class:`~bmnode.node.config.NodeConfig`, plus
    NetSettings overrides); the bus lives in ``bus_dir`` or the data directory."""
    from bmnode.net.run import setup_logging

    setup_logging(config.log_level)
    settings = settings_from_config(config, **(overrides or {}))
    endpoints = bus.Endpoints(bus_dir or config.data_dir)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(serve_with_bus(settings, endpoints, stats_interval=stats_interval))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return 0
