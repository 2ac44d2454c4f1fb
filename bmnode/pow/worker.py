"""A PoW worker: pulls jobs from a broker over ZeroMQ and searches them with a backend.

The same :class:`PowWorker` runs as a thread inside the broker (``inproc://``) and as a
process on another machine (``bmnode pow worker --connect tcp://HOST:PORT``). It talks the
``w.*`` messages of :mod:`bmnode.node.bus` on a DEALER socket: a heartbeat every
``interval`` seconds (which also registers it, so a restarted broker learns it again), one
job at a time searched on a separate thread, cancel within the backend's ~50 ms.
With ``server_key``/``secret_key`` it connects with CURVE (see :mod:`bmnode.pow.curve_keys`);
a refused handshake is logged (and retried: the broker may learn the key later).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from typing import Any, Sequence

import zmq

from bmnode.errors import PowCancelled
from bmnode.node import bus
from bmnode.pow.backend import PowBackend, Solution
from bmnode.pow.curve_keys import ClientCurve, HandshakeWatch, client_curve, uses_curve

log = logging.getLogger(__name__)

__all__ = ["PowWorker", "main", "run_worker"]

#: Seconds between heartbeats (the broker drops a worker after missing about three).
HEARTBEAT = 1.0


class PowWorker:
    """One worker connected to a broker's worker endpoint; ``run()`` blocks, ``start()``
    runs it on a thread. Owns ``backend`` (closed when the worker stops)."""

    def __init__(
        self,
        connect: str,
        backend: PowBackend,
        *,
        name: str | None = None,
        heartbeat: float = HEARTBEAT,
        context: zmq.Context | None = None,
        server_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        self.connect = bus.check_endpoint(connect)
        self.curve: ClientCurve | None = client_curve(server_key, secret_key, self.connect)
        #: the last security-handshake problem seen (None when fine or not known)
        self.handshake_problem: str | None = None
        self.backend = backend
        self.name = (name or f"{socket.gethostname()}-{os.getpid()}")[:64]
        self.heartbeat = float(heartbeat)
        self.context = context or zmq.Context.instance()
        self.stop_event = threading.Event()
        self.jobs_done = 0
        self._thread: threading.Thread | None = None
        self._search: threading.Thread | None = None
        self._key = ""
        self._cancel = threading.Event()
        self._trials = 0
        self._done: queue.SimpleQueue[tuple[str, Any, float]] = queue.SimpleQueue()
        self._rfd = self._wfd = -1

    # -------------------------------------------------------------- life cycle

    def start(self) -> threading.Thread:
        """Run on a daemon thread; returns it."""
        t = threading.Thread(target=self.run, name=f"pow-worker-{self.name}", daemon=True)
        self._thread = t
        t.start()
        return t

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the loop to end (cancelling a running search) and wait for its thread."""
        self.stop_event.set()
        self._cancel.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def run(self) -> None:
        """The loop: heartbeat, take jobs, report results, until :meth:`stop`."""
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 500)
        sock.setsockopt(zmq.MAXMSGSIZE, bus.MAX_POW_MESSAGE)
        if self.curve is not None:
            self.curve.apply(sock)
        watch = HandshakeWatch(sock) if uses_curve(self.connect) else None
        sock.connect(self.connect)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._rfd, zmq.POLLIN)
        log.info("PoW worker %s (backend %s) pulling jobs from %s", self.name, self.backend.name, self.connect)
        next_beat = 0.0
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                if now >= next_beat:
                    self._send(sock, self._beat())
                    next_beat = now + self.heartbeat
                events = dict(poller.poll(max(1, int(min(self.heartbeat, 0.1) * 1000))))
                if events.get(sock):
                    self._drain(sock)
                if events.get(self._rfd) or not self._done.empty():
                    self._finish(sock)
                if watch is not None:
                    self._check_handshake(watch)
        finally:
            if watch is not None:
                watch.close()
            self._cancel.set()
            searching = self._search is not None and (self._search.join(2.0) or self._search.is_alive())
            try:
                self._send(sock, bus.WorkerBye(name=self.name))
            except zmq.ZMQError:
                pass
            sock.close()
            if not searching:  # a search thread that did not stop still holds the pipe
                self.backend.close()
                for fd in (self._rfd, self._wfd):
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            log.info("PoW worker %s stopped after %d jobs", self.name, self.jobs_done)

    def _check_handshake(self, watch: HandshakeWatch) -> None:
        """Log a refused or failed handshake once per change (it keeps retrying)."""
        problem = watch.explain(self.connect, self.curve.keypair.public if self.curve else None)
        if problem != self.handshake_problem:
            if problem is not None:
                log.error("PoW worker %s: %s; retrying", self.name, problem)
            elif watch.succeeded:
                log.info("PoW worker %s: connected to %s%s", self.name, self.connect,
                         " with CURVE" if self.curve else "")
            self.handshake_problem = problem

    # -------------------------------------------------------------- messages

    def _beat(self) -> bus.WorkerHeartbeat:
        return bus.WorkerHeartbeat(
            name=self.name, backend=self.backend.name[:32], interval=self.heartbeat, job=self._key, trials=self._trials
        )

    def _send(self, sock: zmq.Socket, msg: bus.BusMessage) -> None:
        """Queue ``msg`` for the broker; dropped when the queue is full (the broker has been out
        of reach, or refusing our key, for a while): the loop goes on and keeps reconnecting."""
        try:
            sock.send_multipart(bus.encode(msg), flags=zmq.NOBLOCK)
        except zmq.Again:
            log.debug("worker %s: broker not reachable, %s dropped", self.name, msg.topic)

    def _drain(self, sock: zmq.Socket) -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = bus.decode(frames)
            except bus.BusError as exc:
                log.warning("worker %s: ignoring a bad message from the broker: %s", self.name, exc)
                continue
            if isinstance(msg, bus.WorkerJob):
                self._take(sock, msg)
            elif isinstance(msg, bus.WorkerCancel):
                if msg.key == self._key:
                    self._cancel.set()
            else:
                log.debug("worker %s: ignoring %s", self.name, msg.topic)

    def _take(self, sock: zmq.Socket, job: bus.WorkerJob) -> None:
        if self._key:
            self._send(sock, bus.WorkerFailed(key=job.key, message="busy"))
            return
        self._key = job.key
        self._trials = 0
        self._cancel = threading.Event()
        cancel = self._cancel
        self._search = threading.Thread(
            target=self._searching, args=(job, cancel), name=f"pow-search-{self.name}", daemon=True
        )
        self._search.start()

    def _progress(self, trials: int) -> None:
        self._trials = trials

    def _searching(self, job: bus.WorkerJob, cancel: threading.Event) -> None:
        t0 = time.monotonic()
        try:
            sol = self.backend.search(job.initial_hash, job.target, job.start, None, progress=self._progress, cancel=cancel)
            outcome: Any = sol
        except PowCancelled:
            outcome = "cancelled"
        except Exception as exc:  # any backend failure is reported, never kills the worker
            outcome = exc
        self._done.put((job.key, outcome, time.monotonic() - t0))
        try:
            os.write(self._wfd, b"x")
        except OSError:
            pass

    def _finish(self, sock: zmq.Socket) -> None:
        try:
            while os.read(self._rfd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        while not self._done.empty():
            key, outcome, seconds = self._done.get()
            if self._search is not None:
                self._search.join()
                self._search = None
            self._key = ""
            if isinstance(outcome, Solution):
                self.jobs_done += 1
                self._send(sock, bus.WorkerResult(
                    key=key, nonce=outcome.nonce, trial_value=outcome.trial_value,
                    trials=outcome.trials, seconds=seconds,
                ))
            elif outcome == "cancelled":
                self._send(sock, bus.WorkerFailed(key=key, cancelled=True, message="cancelled"))
            elif outcome is None:
                self._send(sock, bus.WorkerFailed(key=key, message="no nonce in the searched range"))
            else:
                log.warning("worker %s: job %s failed: %s", self.name, key, outcome)
                self._send(sock, bus.WorkerFailed(key=key, message=f"{type(outcome).__name__}: {outcome}"[:1000]))
            self._send(sock, self._beat())


def run_worker(
    connect: str, backend: str = "auto", *, threads: int | None = None, name: str | None = None,
    heartbeat: float = HEARTBEAT, server_key: str | None = None, secret_key: str | None = None,
) -> int:
    """Run a worker process until SIGTERM/SIGINT; 0 on a clean stop (CurveKeyError, before
    anything runs, when the keys are unusable)."""
    from bmnode.pow.curve_keys import is_loopback
    from bmnode.pow.registry import get_backend

    client_curve(server_key, secret_key, bus.check_endpoint(connect))  # check the keys before the backend is set up
    if server_key is None and connect.startswith("tcp://") and not is_loopback(connect):
        log.warning("connecting to %s in plaintext: give --server-key and --secret-key if the broker uses CURVE",
                    connect)
    opts: dict[str, Any] = {}
    if threads:
        opts["threads"] = threads
    worker = PowWorker(connect, get_backend(backend, **opts), name=name, heartbeat=heartbeat,
                       server_key=server_key, secret_key=secret_key)

    def _stop(_sig: int, _frame: Any) -> None:
        worker.stop_event.set()
        worker._cancel.set()

    old = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker.run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return 0


def setup_worker_logging(level: str) -> None:
    """Log lines to stderr at ``level``."""
    logging.basicConfig(level=getattr(logging, str(level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bmnode.pow.worker --connect ENDPOINT [...]``: the same as ``bmnode pow worker``."""
    from bmnode.cli import main as cli_main

    return cli_main(["pow", "worker", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
