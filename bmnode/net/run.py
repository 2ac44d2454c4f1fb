"""Run one net process until SIGTERM/SIGINT: the entry behind ``bmnode run`` (issue 4: the
networking process alone) and ``python -m bmnode.net``."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from bmnode.net.node import RelayNode
from bmnode.net.settings import NetSettings, settings_from_config

log = logging.getLogger("bmnode.net")


def setup_logging(level: str) -> None:
    """Standard logging to stderr at ``level`` (DEBUG ... CRITICAL)."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


async def serve(settings: NetSettings, stop: asyncio.Event | None = None) -> RelayNode:
    """Start a node, run it until ``stop`` is set (or SIGTERM/SIGINT arrives), then stop it
    cleanly: no new peers, connections closed, inventory flushed, stores closed."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / platform
            pass
    node = RelayNode.open(settings)
    try:
        await node.start()
        log.info(
            "bmnode net process up: data %s, port %d, TLS %s, Dandelion %s, network PoW %d:%d",
            settings.data_dir,
            node.listen_port,
            "on" if node.tls_enabled else "off",
            "on" if settings.dandelion_enabled else "off",
            settings.ntpb,
            settings.extra,
        )
        status = asyncio.create_task(_log_status(node, STATUS_INTERVAL))
        await stop.wait()
        status.cancel()
        log.info("shutting down")
    finally:
        await node.stop()
        for sig in installed:
            loop.remove_signal_handler(sig)
    return node


STATUS_INTERVAL = 60.0


async def _log_status(node: RelayNode, interval: float) -> None:
    """One status line every ``interval`` seconds so an operator sees the node is alive."""
    while True:
        await asyncio.sleep(interval)
        st = node.stats()
        log.info(
            "status: %s established peers (%s in, %s out), %s objects in the inventory, %s downloads pending",
            st["established"], st["inbound"], st["outbound"], st["inventory"], st["wanted"],
        )


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_node(config: Any, **overrides: Any) -> int:
    """Run the node of a :class:`bmnode.node.config.NodeConfig` until SIGTERM/SIGINT; 0 on a
    clean shutdown. ``overrides`` set :class:`NetSettings` fields directly."""
    setup_logging(config.log_level)
    settings = settings_from_config(config, **overrides)
    loop = _new_loop()
    try:
        loop.run_until_complete(serve(settings))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return 0


__all__ = ["run_node", "serve", "setup_logging"]
