"""The full node: which processes ``bmnode run`` starts, and the supervisor that keeps them up.

Children, in start order (stopped in reverse):

* ``net``: :func:`bmnode.node.netproc.net_main`, peers and the inventory, objects on the bus;
* ``pow``: the PoW broker with one local worker (:func:`pow_main`; backend ``--pow-backend``,
  ``--pow-threads``), clients on ``E.pow``, more workers may join on ``E.pow_workers``;
* ``mailbox``: :func:`bmnode.node.mailboxproc.mailbox_main` and its trial-decryption workers;
* ``api``: :func:`bmnode.node.apiproc.api_main`, the XML-RPC API.

Each runs in its own interpreter; the supervisor restarts one that dies (with back-off) and
stops them all on SIGTERM/SIGINT or when the API's ``shutdown`` asks for it. Its state is
written to ``supervisor.json`` in the data directory.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from bmnode.node import bus
from bmnode.node.supervisor import ChildSpec, Supervisor

log = logging.getLogger("bmnode.node")

__all__ = ["STATUS_FILE", "build_children", "pow_main", "run_full_node", "setup_process_logging"]

#: The supervisor's view of its children (JSON), in the data directory.
STATUS_FILE = "supervisor.json"


def setup_process_logging(level: str, process: str) -> None:
    """Log lines to stderr tagged with the process role and pid (every child shares stderr)."""
    logging.basicConfig(
        level=getattr(logging, str(level).upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s {process}[%(process)d] %(name)s: %(message)s",
        force=True,
    )


def resolved(config: Any) -> Any:
    """The config with the defaults that depend on this machine filled in."""
    from dataclasses import replace

    from bmnode.node.decryptpool import default_workers

    if config.decrypt_workers is None:
        config = replace(config, decrypt_workers=default_workers())
    return config


def pow_main(config: Any, *, bus_dir: str | None = None) -> int:
    """Entry point of the PoW process: a broker serving the mailbox on ``E.pow`` with one
    local worker thread (``config.pow_backend`` / ``config.pow_threads``), and remote workers on
    ``config.pow_workers_bind`` (CURVE when keys are configured)."""
    from bmnode.pow.broker import serve_broker

    setup_process_logging(config.log_level, "pow")
    e = bus.Endpoints(bus_dir or config.data_dir)
    e.prepare()
    return serve_broker(pow_broker_config(config, e))


def pow_broker_config(config: Any, e: bus.Endpoints, local_workers: int = 1) -> Any:
    """The node's PoW broker: the mailbox's jobs on ``e.pow`` (ipc), the local worker on
    ``e.pow_workers``, remote workers on ``config.pow_workers_bind`` (CURVE with the node's keys)."""
    from bmnode.pow.broker import BrokerConfig

    return BrokerConfig(
        client_endpoints=[e.pow], worker_endpoints=[e.pow_workers, *config.pow_workers_bind],
        local_workers=local_workers, backend=config.pow_backend, threads=config.pow_threads,
        curve_secret_key=str(config.pow_secret_key) if config.pow_secret_key else None,
        curve_authorized_keys=str(config.pow_authorized_keys) if config.pow_authorized_keys else None,
        insecure=config.pow_insecure,
    )


def net_child(config: Any, *, bus_dir: str | None = None) -> int:
    """Entry point of the net process (its own logging set-up, then the netproc's main)."""
    from bmnode.node.netproc import net_main

    return net_main(config, bus_dir=bus_dir)


def build_children(config: Any, *, bus_dir: str | None = None) -> list[ChildSpec]:
    """The ChildSpecs of a full node for a :class:`~bmnode.node.config.NodeConfig`."""
    from bmnode.node.apiproc import api_main
    from bmnode.node.mailboxproc import mailbox_main

    config = resolved(config)
    kw = {"bus_dir": bus_dir}
    return [
        ChildSpec("net", net_child, (config,), kw),
        ChildSpec("pow", pow_main, (config,), kw),
        ChildSpec("mailbox", mailbox_main, (config,), kw),
        ChildSpec("api", api_main, (config,), kw),
    ]


def make_supervisor(config: Any, *, bus_dir: str | None = None, **options: Any) -> Supervisor:
    """A supervisor for the full node of ``config`` (not started)."""
    Path(config.data_dir).mkdir(parents=True, exist_ok=True)
    bus.Endpoints(bus_dir or config.data_dir).prepare()
    options.setdefault("status_file", Path(config.data_dir) / STATUS_FILE)
    return Supervisor(build_children(config, bus_dir=bus_dir), **options)


def check_pow_settings(config: Any) -> None:
    """Fail before any process starts (ConfigError) when the remote-worker settings cannot work:
    unreadable or mismatched CURVE keys, or a non-loopback bind in plaintext without
    ``pow_insecure``; the broker would otherwise fail and be restarted over and over."""
    from bmnode.errors import ConfigError
    from bmnode.pow.curve_keys import check_exposure, server_curve

    curve_given = config.pow_secret_key is not None or config.pow_authorized_keys is not None
    try:
        curve = server_curve(config.pow_secret_key, config.pow_authorized_keys) if curve_given else None
        check_exposure(config.pow_workers_bind, curve is not None, config.pow_insecure)
    except ConfigError as exc:
        raise ConfigError(f"PoW broker settings (--pow-workers-bind, --pow-secret-key, --pow-authorized-keys, "
                          f"--pow-insecure): {exc}") from exc


def run_full_node(config: Any) -> int:
    """``bmnode run``: supervise the full node until SIGTERM/SIGINT or the API's shutdown."""
    setup_process_logging(config.log_level, "supervisor")
    config = resolved(config)
    check_pow_settings(config)
    sup = make_supervisor(config)
    log.info(
        "bmnode full node (pid %d): data %s, peers on %s, API on %s (%s), network PoW %d:%d, "
        "PoW backend %s, %d decrypt workers", os.getpid(), config.data_dir, config.listen, config.api,
        config.api_variant, config.network_pow[0], config.network_pow[1], config.pow_backend,
        config.decrypt_workers,
    )
    code = sup.run()
    bus.Endpoints(config.data_dir).cleanup()
    log.info("bmnode stopped")
    return code


# ------------------------------------------------------------------------------ local nodes


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (for loopback test networks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalNode:
    """A full node run as a ``bmnode run`` subprocess on loopback, in its own process group:
    what ``bmnode demo``, the end-to-end tests and the latency benchmark start.

    Ports are fixed at construction (free ones unless given) so that a restart comes back on
    the same addresses; ``extra`` are more ``bmnode run`` flags.
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        name: str = "node",
        peers: tuple[int, ...] = (),
        network_pow: str = "10:10",
        api_password: str = "local-node",
        port: int | None = None,
        api_port: int | None = None,
        extra: tuple[str, ...] = (),
        log_level: str = "INFO",
    ) -> None:
        self.name = name
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.api_port = api_port or free_port()
        self.peers = tuple(peers)
        self.network_pow = network_pow
        self.api_password = api_password
        self.extra = tuple(extra)
        self.log_level = log_level
        self.proc: Any = None
        self.log_path = self.data_dir / "node.log"

    def argv(self) -> list[str]:
        args = [
            sys.executable, "-m", "bmnode.cli", "run", "--data-dir", str(self.data_dir),
            "--listen", f"127.0.0.1:{self.port}", "--no-bootstrap", "--allow-private-peers",
            "--network-pow", self.network_pow, "--api", f"127.0.0.1:{self.api_port}",
            "--api-password", self.api_password, "--log-level", self.log_level,
        ]
        for p in self.peers:
            args += ["--peer", f"127.0.0.1:{p}"]
        return args + list(self.extra)

    def start(self) -> LocalNode:
        """Start the node (returns at once; see :meth:`wait_ready`)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        log_file = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, cwd=root,
            )
        finally:
            log_file.close()
        return self

    def api(self, *, timeout: float = 60.0) -> Any:
        """A :class:`~bmnode.node.apiproc.NodeApi` for this node."""
        from bmnode.node.apiproc import NodeApi

        return NodeApi("127.0.0.1", self.api_port, "bmnode", self.api_password, timeout=timeout)

    def wait_ready(self, timeout: float = 60.0) -> Any:
        """Wait until the API (and the mailbox behind it) answers; its client."""
        api = self.api()
        try:
            api.wait_ready(timeout)
        except Exception:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}") from None
            raise
        return api

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def children(self) -> dict[str, dict[str, Any]]:
        """The supervisor's view of its children ({name: state dict}), or {}."""
        try:
            doc = json.loads((self.data_dir / STATUS_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return {c["name"]: c for c in doc.get("children", [])}

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the supervisor and wait; kills the group if it does not stop in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        return self.proc.returncode

    def kill9(self) -> None:
        """kill -9 of the supervisor and every process of the node at once (a crash)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(10)
