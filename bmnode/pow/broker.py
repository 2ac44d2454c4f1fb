"""The PoW broker: a ZeroMQ job service between PoW clients and workers.

Clients (the mailbox process, outside programs via :class:`PowClient`) talk ``pow.*``
messages to a ROUTER per client endpoint; workers talk ``w.*`` to one worker ROUTER (local
worker threads over ``inproc://``, other processes and machines over ``ipc://``/``tcp://``).
Jobs wait in a priority queue (higher priority first, then submission order) and go to one
idle worker each. Every nonce a worker returns is re-checked with
:func:`bmnode.pow.target.trial_value` before a client sees it; a worker that returns a wrong
one gets no more jobs. A worker silent for about three heartbeats is dropped and its job
dispatched again from where its last heartbeat said it was. Each client may hold at most
``max_jobs_per_client`` queued or running jobs.

Clients are keyed by (client endpoint, ``client`` name or else the connection identity): a
mailbox that restarts under the same name finds its jobs (and recent results) again, and a
client on the tcp endpoint cannot touch jobs submitted on the local ipc one.

With CURVE (:mod:`bmnode.pow.curve_keys`) the tcp endpoints only admit peers whose public
key is in the authorized folder (ZAP), traffic is encrypted, and a client on them is keyed by
its authenticated key instead of the name it gives: limits hold per key.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

import zmq

from bmnode.errors import PowError
from bmnode.node import bus
from bmnode.pow.backend import Solution
from bmnode.pow.curve_keys import (
    CLIENT_DOMAIN, WORKER_DOMAIN, ClientCurve, HandshakeWatch, ServerCurve, check_exposure, client_curve,
    server_curve, uses_curve,
)
from bmnode.pow.target import trial_value

log = logging.getLogger(__name__)

__all__ = ["BrokerConfig", "PowAuthError", "PowBroker", "PowClient", "PowLimit", "PowTimeout"]

_U64_MAX = (1 << 64) - 1
#: The broker's counters (always present in :meth:`PowBroker.snapshot`).
COUNTERS = (
    "submitted", "accepted", "refused_limit", "refused_full", "dispatched", "solved", "failed", "cancelled",
    "bad_results", "stale_results", "worker_failures", "redispatched", "workers_joined", "workers_lost",
    "bad_messages", "send_failed", "unknown_worker_messages",
)
#: Stands for "a job that is not ours" in a worker's ``job`` slot: it gets nothing until idle.
_BUSY = "?busy"


class PowTimeout(PowError):
    """No answer from the broker in time (it may still be working on the job)."""


class PowAuthError(PowError):
    """The security handshake with the broker failed (key refused, wrong server key, CURVE on
    one side only): retrying will not help until the keys are fixed."""


class PowLimit(PowError):
    """The broker refused a job (``code``: limit, invalid, duplicate)."""

    def __init__(self, message: str, code: str) -> None:
        self.code = code
        super().__init__(message)


# =========================================================================== the broker


@dataclass
class BrokerConfig:
    """Where the broker listens and how it schedules.

    ``client_endpoints``/``worker_endpoints``: ZeroMQ endpoints to bind (``tcp://...:0`` picks
    a free port; see :attr:`PowBroker.client_addresses`). ``local_workers`` threads use
    ``backend`` (registry name) with ``threads`` each."""

    client_endpoints: Sequence[str] = ()
    worker_endpoints: Sequence[str] = ()
    local_workers: int = 1
    backend: str = "auto"
    threads: int | None = None
    max_jobs_per_client: int = 256
    max_queue: int = 100_000
    #: A worker is dropped after max(worker_timeout, 3 * its heartbeat interval) of silence.
    worker_timeout: float = 3.0
    #: Heartbeat interval of the local worker threads.
    heartbeat: float = 1.0
    #: A job whose workers failed (not cancelled) this many times is reported failed.
    max_attempts: int = 3
    #: Recent results kept to answer a client that submits the same job id again.
    result_cache: int = 4096
    #: CURVE on the tcp endpoints: the broker's NAME.key_secret file and the folder of the
    #: public NAME.key files of the clients (and of the workers, unless
    #: ``curve_authorized_workers`` names another folder). None: plaintext.
    curve_secret_key: str | None = None
    curve_authorized_keys: str | None = None
    curve_authorized_workers: str | None = None
    #: Allow binding a non-loopback tcp endpoint without CURVE (refused otherwise).
    insecure: bool = False


@dataclass
class _Job:
    key: str
    owner: tuple[int, str]  # (client socket index, client name)
    route: bytes  # connection identity to answer
    job: str
    initial_hash: bytes
    target: int
    priority: int
    seq: int
    submitted: float
    start: int = 0
    worker: bytes | None = None
    dispatched: float = 0.0
    attempts: int = 0
    bad_workers: set[bytes] = field(default_factory=set)


@dataclass
class _Worker:
    ident: bytes
    name: str
    backend: str
    interval: float
    last_seen: float
    job: str | None = None
    trials: int = 0
    bad: bool = False
    done: int = 0
    idle_since: float = 0.0
    key: str = ""  # its authenticated CURVE key, if any


class PowBroker:
    """The job service. ``start()`` binds and runs it on a thread; ``stop()`` ends it."""

    def __init__(self, config: BrokerConfig, *, context: zmq.Context | None = None) -> None:
        self.config = config
        curve = bool(config.curve_secret_key or config.curve_authorized_keys or config.curve_authorized_workers)
        # A ZAP handler serves a whole context: a CURVE broker gets one of its own.
        self._own_context = context is None and curve
        self.context = context or (zmq.Context() if curve else zmq.Context.instance())
        self._curve: ServerCurve | None = None
        self._auth: Any = None
        self.stats: Counter[str] = Counter()
        self.client_addresses: list[str] = []
        self.worker_addresses: list[str] = []
        self.local_workers: list[Any] = []
        self._inproc = f"inproc://bmnode-pow-workers-{id(self):x}"
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._by_owner: dict[tuple[int, str, str], str] = {}
        self._per_owner: Counter[tuple[int, str]] = Counter()
        self._queue: list[tuple[int, int, str]] = []
        self._workers: dict[bytes, _Worker] = {}
        #: (owner, job) -> ((initial hash, target), result) of recently solved jobs
        self._results: OrderedDict[tuple[int, str, str], tuple[tuple[bytes, int], bus.PowResult]] = OrderedDict()
        self._seq = itertools.count(1)
        self._clients: list[zmq.Socket] = []
        self._secure_clients: list[bool] = []
        #: worker sockets: [0] plaintext (inproc, ipc, plaintext tcp), [1] CURVE tcp if any;
        #: a worker's id inside the broker is its socket index byte + its connection identity
        self._wsocks: list[zmq.Socket] = []

    # ------------------------------------------------------------------ life cycle

    def start(self, timeout: float = 10.0) -> "PowBroker":
        """Bind every endpoint, start the loop and the local workers; raises if binding fails
        (or, before anything is bound, if the CURVE keys are unusable or a non-loopback tcp
        endpoint would be plaintext without ``insecure``)."""
        c = self.config
        try:
            self._curve = server_curve(c.curve_secret_key, c.curve_authorized_keys, c.curve_authorized_workers)
            check_exposure([str(e).strip() for e in [*c.client_endpoints, *c.worker_endpoints]],
                           self._curve is not None, c.insecure)
            if self._curve is not None:
                self._auth = self._curve.start_authenticator(self.context)
        except BaseException:
            self._stop_auth()
            raise
        self._thread = threading.Thread(target=self._run, name="pow-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise PowError("the PoW broker did not start in time")
        if self._error is not None:
            self._thread.join(1.0)
            self._stop_auth()
            raise PowError(f"the PoW broker cannot start: {self._error}") from self._error
        self.add_local_workers(self.config.local_workers)
        return self

    def add_local_workers(self, n: int, backend: str | None = None, threads: int | None = None) -> list[Any]:
        """Start ``n`` more worker threads in this process (inproc)."""
        from bmnode.pow.registry import get_backend
        from bmnode.pow.worker import PowWorker

        out = []
        for _ in range(max(0, n)):
            opts: dict[str, Any] = {}
            if threads or self.config.threads:
                opts["threads"] = threads or self.config.threads
            be = get_backend(backend or self.config.backend, **opts)
            w = PowWorker(
                self._inproc, be, name=f"local-{len(self.local_workers)}", heartbeat=self.config.heartbeat,
                context=self.context,
            )
            w.start()
            self.local_workers.append(w)
            out.append(w)
        return out

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the local workers and the loop, close the sockets, remove ipc files."""
        for w in self.local_workers:
            w.stop(timeout)
        # a thread that did not stop still has a socket open: ending the context would hang
        stuck = any(w._thread is not None and w._thread.is_alive() for w in self.local_workers)
        self.local_workers = []
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            stuck = stuck or self._thread.is_alive()
            self._thread = None
            if not stuck:
                self._stop_auth()

    def _stop_auth(self) -> None:
        """Stop the ZAP handler and end the broker's own context (CURVE only)."""
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_context:
            self._own_context = False
            self.context.term()

    def __enter__(self) -> "PowBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> dict[str, Any]:
        """Counters and gauges (thread-safe copy)."""
        with self._lock:
            out: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
            out.update(self.stats)
            out.update(
                queued=len(self._jobs) - self._running(),
                running=self._running(),
                workers=len(self._workers),
                idle_workers=sum(1 for w in self._workers.values() if w.job is None and not w.bad),
                bad_workers=sum(1 for w in self._workers.values() if w.bad),
            )
        return out

    def worker_names(self) -> list[str]:
        with self._lock:
            return [w.name for w in self._workers.values()]

    # ------------------------------------------------------------------ the loop

    def _bind(self) -> None:
        for ep in self.config.client_endpoints:
            ep = bus.check_endpoint(ep)
            secure = self._curve is not None and uses_curve(ep)
            s = self._router()
            self._clients.append(s)
            self._secure_clients.append(secure)
            if secure:
                assert self._curve is not None
                self._curve.apply(s, CLIENT_DOMAIN)
            self._bind_one(s, ep)
            self.client_addresses.append(s.getsockopt_string(zmq.LAST_ENDPOINT))
        w = self._router()
        self._wsocks.append(w)
        w.bind(self._inproc)
        for ep in self.config.worker_endpoints:
            ep = bus.check_endpoint(ep)
            if self._curve is not None and uses_curve(ep):
                if len(self._wsocks) == 1:
                    self._wsocks.append(self._router())
                    self._curve.apply(self._wsocks[1], WORKER_DOMAIN)
                w = self._wsocks[1]
            else:
                w = self._wsocks[0]
            self._bind_one(w, ep)
            self.worker_addresses.append(w.getsockopt_string(zmq.LAST_ENDPOINT))

    def _router(self) -> zmq.Socket:
        s = self.context.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.MAXMSGSIZE, bus.MAX_POW_MESSAGE)
        return s

    @staticmethod
    def _bind_one(sock: zmq.Socket, ep: str) -> None:
        p = bus.ipc_path(ep)
        if p is not None:
            p.parent.mkdir(parents=True, exist_ok=True)
        sock.bind(ep)

    def _close(self) -> None:
        for s in self._clients + self._wsocks:
            s.close(0)
        for ep in list(self.client_addresses) + list(self.worker_addresses):
            bus.remove_ipc(ep)

    def _run(self) -> None:
        try:
            self._bind()
        except Exception as exc:
            self._error = exc
            self._close()
            self._ready.set()
            return
        self._ready.set()
        log.info("PoW broker: clients on %s, workers on %s", ", ".join(self.client_addresses) or "-",
                 ", ".join(self.worker_addresses + [self._inproc]))
        poller = zmq.Poller()
        for s in self._clients + self._wsocks:
            poller.register(s, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(100))
                with self._lock:
                    for k, ws in enumerate(self._wsocks):
                        if events.get(ws):
                            self._drain(ws, lambda env, m, user, k=k: self._on_worker(k, env, m, user), secure=k == 1)
                    for i, s in enumerate(self._clients):
                        if events.get(s):
                            self._drain(s, lambda env, m, user, i=i: self._on_client(i, env, m, user),
                                        secure=self._secure_clients[i])
                    self._check_workers(time.monotonic())
                    self._dispatch()
        except Exception:  # pragma: no cover - a bug; logged so the supervisor log shows it
            log.exception("PoW broker loop failed")
            raise
        finally:
            self._close()
            log.info("PoW broker stopped (%s)", dict(self.stats))

    def _drain(self, sock: zmq.Socket, handler: Any, secure: bool = False) -> None:
        """Handle up to 1000 waiting messages: ``handler(envelope, message, user)`` where
        ``user`` is the peer's authenticated CURVE key (Z85 text) on a ``secure`` socket."""
        for _ in range(1000):
            user: str | None = None
            try:
                if secure:
                    parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    try:
                        user = parts[-1].get("User-Id")
                    except zmq.ZMQError:
                        user = None
                    frames = [p.bytes for p in parts]
                else:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if secure and not user:  # cannot happen with ZAP enforced; never serve it anonymously
                self.stats["bad_messages"] += 1
                continue
            try:
                env, msg = bus.split(frames)
            except bus.BusError as exc:
                self.stats["bad_messages"] += 1
                log.debug("PoW broker: bad message: %s", exc)
                if len(frames) >= 1:
                    self._send(sock, [bytes(frames[0])], bus.ErrorReply(code="bad_message", message=str(exc)[:1000]))
                continue
            if len(env) != 1:
                self.stats["bad_messages"] += 1
                continue
            handler(env, msg, user)

    def _send(self, sock: zmq.Socket | None, env: list[bytes], msg: bus.BusMessage) -> None:
        if sock is None:
            return
        try:
            sock.send_multipart(env + bus.encode(msg), flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # peer gone or its queue full: the message is lost
            self.stats["send_failed"] += 1
            log.debug("PoW broker: cannot send %s: %s", msg.topic, exc)

    # ------------------------------------------------------------------ clients

    def _owner(self, index: int, route: bytes, name: str) -> tuple[int, str]:
        return (index, name or "@" + route.hex())

    def _on_client(self, index: int, env: list[bytes], msg: bus.BusMessage, user: str | None = None) -> None:
        sock = self._clients[index]
        route = env[0]
        if user is not None and hasattr(msg, "client"):
            # Authenticated: the key, not the self-declared name, owns the jobs and the limit.
            msg = dataclasses.replace(msg, client=f"key:{user}")
        if isinstance(msg, bus.PowSubmit):
            self._submit(index, sock, route, msg)
        elif isinstance(msg, bus.PowCancel):
            self._cancel(index, sock, route, msg)
        elif isinstance(msg, bus.PowStatus):
            self._status(index, sock, route, msg)
        else:
            self.stats["bad_messages"] += 1
            self._send(sock, env, bus.ErrorReply(code="unexpected", message=f"{msg.topic} is not a client request"))

    def _find(self, index: int, route: bytes, job: str, name: str) -> _Job | None:
        """The job ``job`` of this client (by name when it has one, else by connection)."""
        key = self._by_owner.get((*self._owner(index, route, name), job))
        return self._jobs.get(key) if key is not None else None

    def _submit(self, index: int, sock: zmq.Socket, route: bytes, m: bus.PowSubmit) -> None:
        self.stats["submitted"] += 1
        owner = self._owner(index, route, m.client)
        env = [route]
        cached = self._results.get((*owner, m.job))
        if cached is not None:
            if cached[0] == (m.initial_hash, m.target):  # done already: answer again, do not redo
                self._send(sock, env, bus.PowAccepted(job=m.job, queued=0))
                self._send(sock, env, cached[1])
                return
            del self._results[(*owner, m.job)]  # the id is reused for new work
        existing = self._by_owner.get((*owner, m.job))
        if existing is not None:
            j = self._jobs[existing]
            if (j.initial_hash, j.target) != (m.initial_hash, m.target):
                self._send(sock, env, bus.PowFailed(job=m.job, code="duplicate",
                                                    message="this job id is in use with another hash or target"))
                return
            j.route = route  # the client reconnected: answer the new connection
            if m.priority != j.priority:
                j.priority = m.priority
                if j.worker is None:  # re-rank it (the old heap entry no longer matches and is skipped)
                    heapq.heappush(self._queue, (-j.priority, j.seq, j.key))
            self._send(sock, env, bus.PowAccepted(job=m.job, queued=len(self._queue)))
            return
        if self._per_owner[owner] >= self.config.max_jobs_per_client:
            self.stats["refused_limit"] += 1
            self._send(sock, env, bus.PowFailed(
                job=m.job, code="limit", message=f"at most {self.config.max_jobs_per_client} jobs per client"))
            return
        if len(self._jobs) >= self.config.max_queue:
            self.stats["refused_full"] += 1
            self._send(sock, env, bus.PowFailed(job=m.job, code="limit", message="the broker's queue is full"))
            return
        seq = next(self._seq)
        key = f"j{seq}"
        j = _Job(key=key, owner=owner, route=route, job=m.job, initial_hash=m.initial_hash, target=m.target,
                 priority=m.priority, seq=seq, submitted=time.monotonic())
        self._jobs[key] = j
        self._by_owner[(*owner, m.job)] = key
        self._per_owner[owner] += 1
        self._enqueue(j)
        self.stats["accepted"] += 1
        self._send(sock, env, bus.PowAccepted(job=m.job, queued=len(self._jobs) - self._running()))

    def _enqueue(self, j: _Job) -> None:
        j.worker = None
        heapq.heappush(self._queue, (-j.priority, j.seq, j.key))

    def _running(self) -> int:
        """Jobs on a worker right now (workers are few; jobs may be many)."""
        return sum(1 for w in self._workers.values() if w.job is not None and w.job in self._jobs
                   and self._jobs[w.job].worker == w.ident)

    def _forget(self, j: _Job) -> None:
        if self._jobs.pop(j.key, None) is not None:
            self._per_owner[j.owner] -= 1
            if self._per_owner[j.owner] <= 0:
                del self._per_owner[j.owner]
        if self._by_owner.get((*j.owner, j.job)) == j.key:
            del self._by_owner[(*j.owner, j.job)]

    def _cancel(self, index: int, sock: zmq.Socket, route: bytes, m: bus.PowCancel) -> None:
        j = self._find(index, route, m.job, m.client)
        if j is None:
            self._send(sock, [route], bus.PowCancelledReply(job=m.job, found=False))
            return
        self._forget(j)
        if j.worker is not None:
            w = self._workers.get(j.worker)
            if w is not None:
                self._to_worker(w.ident, bus.WorkerCancel(key=j.key))
        self.stats["cancelled"] += 1
        self._send(sock, [route], bus.PowCancelledReply(job=m.job, found=True))

    def _status(self, index: int, sock: zmq.Socket, route: bytes, m: bus.PowStatus) -> None:
        queued = [j for j in self._jobs.values() if j.worker is None]
        running = len(self._jobs) - len(queued)
        common = dict(workers=len(self._workers), queued=len(queued), running=running)
        if not m.job:
            stats = {k: int(v) for k, v in self.stats.items()}
            self._send(sock, [route], bus.PowState(job="", state="broker", stats=stats, **common))
            return
        j = self._find(index, route, m.job, m.client)
        if j is None:
            done = (*self._owner(index, route, m.client), m.job) in self._results
            self._send(sock, [route], bus.PowState(job=m.job, state="done" if done else "unknown", **common))
        elif j.worker is None:
            order = sorted(queued, key=lambda x: (-x.priority, x.seq))
            self._send(sock, [route], bus.PowState(job=m.job, state="queued", position=order.index(j), **common))
        else:
            w = self._workers.get(j.worker)
            trials = j.start + (w.trials if w is not None else 0)
            self._send(sock, [route], bus.PowState(job=m.job, state="running", trials=min(trials, _U64_MAX), **common))

    # ------------------------------------------------------------------ workers

    def _to_worker(self, ident: bytes, msg: bus.BusMessage) -> None:
        """Send to the worker ``ident`` (socket index byte + connection identity)."""
        self._send(self._wsocks[ident[0]], [ident[1:]], msg)

    def _on_worker(self, k: int, env: list[bytes], msg: bus.BusMessage, user: str | None = None) -> None:
        ident = bytes([k]) + env[0]
        now = time.monotonic()
        w = self._workers.get(ident)
        if isinstance(msg, bus.WorkerHeartbeat):
            if w is None:
                w = _Worker(ident=ident, name=msg.name, backend=msg.backend, interval=msg.interval,
                            last_seen=now, idle_since=now, key=user or "")
                self._workers[ident] = w
                self.stats["workers_joined"] += 1
                log.info("PoW worker %s joined (backend %s%s)", msg.name, msg.backend or "?",
                         f", key {user}" if user else "")
            w.last_seen = now
            w.interval = max(0.01, msg.interval)
            if msg.job:
                if msg.job == w.job:
                    w.trials = msg.trials
                elif not self._assigned(msg.job, ident):
                    # Searching something that is not its job (we restarted, or it was
                    # cancelled): stop it, and give it nothing until it says it is idle.
                    self._to_worker(ident, bus.WorkerCancel(key=msg.job))
                    if w.job is None:
                        w.job = _BUSY
            elif w.job is not None and not self._assigned(w.job, ident):
                w.job = None  # idle, and what we thought it did is over
                w.idle_since = now
            return
        if w is None:
            # Not registered (e.g. we restarted): ask for nothing, its heartbeat will register it.
            self.stats["unknown_worker_messages"] += 1
            return
        w.last_seen = now
        if isinstance(msg, bus.WorkerResult):
            self._on_result(w, msg)
        elif isinstance(msg, bus.WorkerFailed):
            self._on_failed(w, msg)
        elif isinstance(msg, bus.WorkerBye):
            self._drop_worker(w, "left")
        else:
            self.stats["bad_messages"] += 1

    def _assigned(self, key: str, ident: bytes) -> bool:
        j = self._jobs.get(key)
        return j is not None and j.worker == ident

    def _release(self, w: _Worker, key: str) -> _Job | None:
        if w.job == key:
            w.job = None
            w.idle_since = time.monotonic()
        j = self._jobs.get(key)
        if j is None or j.worker != w.ident:
            return None  # stale: cancelled, or re-dispatched elsewhere
        return j

    def _on_result(self, w: _Worker, m: bus.WorkerResult) -> None:
        j = self._release(w, m.key)
        if j is None:
            self.stats["stale_results"] += 1
            return
        tv = trial_value(m.nonce, j.initial_hash)
        if tv > j.target or tv != m.trial_value:
            self.stats["bad_results"] += 1
            w.bad = True
            j.bad_workers.add(w.ident)
            log.warning("PoW worker %s returned a wrong nonce %d for job %s; it gets no more jobs", w.name, m.nonce, j.key)
            self._enqueue(j)
            return
        w.done += 1
        res = bus.PowResult(job=j.job, nonce=m.nonce, trial_value=tv, trials=m.trials, seconds=m.seconds, worker=w.name)
        self._forget(j)
        self._results[(*j.owner, j.job)] = ((j.initial_hash, j.target), res)
        while len(self._results) > self.config.result_cache:
            self._results.popitem(last=False)
        self.stats["solved"] += 1
        self._send(self._clients[j.owner[0]], [j.route], res)

    def _on_failed(self, w: _Worker, m: bus.WorkerFailed) -> None:
        busy = m.message == "busy"
        if busy:
            # The worker was still on another job: give it back to the queue, no attempt counted.
            j = self._jobs.get(m.key)
            if j is not None and j.worker == w.ident:
                self._enqueue(j)
            if w.job == m.key:
                w.job = _BUSY  # until a heartbeat says it is idle
            return
        j = self._release(w, m.key)
        if j is None or m.cancelled:
            return
        j.attempts += 1
        self.stats["worker_failures"] += 1
        if j.attempts >= self.config.max_attempts:
            self._forget(j)
            self.stats["failed"] += 1
            code = "no_nonce" if "no nonce" in m.message else "failed"
            self._send(self._clients[j.owner[0]], [j.route], bus.PowFailed(job=j.job, code=code, message=m.message))
        else:
            self._enqueue(j)

    def _drop_worker(self, w: _Worker, why: str) -> None:
        self._workers.pop(w.ident, None)
        log.info("PoW worker %s %s", w.name, why)
        if w.job is not None:
            j = self._jobs.get(w.job)
            if j is not None and j.worker == w.ident:
                j.start = min(_U64_MAX, j.start + max(0, w.trials))  # resume where it was
                self.stats["redispatched"] += 1
                self._enqueue(j)

    def _check_workers(self, now: float) -> None:
        for w in list(self._workers.values()):
            limit = max(self.config.worker_timeout, 3 * w.interval)
            if now - w.last_seen > limit:
                self.stats["workers_lost"] += 1
                self._drop_worker(w, f"lost (silent for {now - w.last_seen:.1f} s)")

    def _dispatch(self) -> None:
        idle = sorted((w for w in self._workers.values() if w.job is None and not w.bad), key=lambda w: w.idle_since)
        skipped: list[tuple[int, int, str]] = []
        while idle and self._queue:
            item = heapq.heappop(self._queue)
            j = self._jobs.get(item[2])
            if j is None or j.worker is not None or (-j.priority, j.seq) != item[:2]:
                continue  # cancelled, already running, or re-queued with another priority
            w = next((x for x in idle if x.ident not in j.bad_workers), None)
            if w is None:
                skipped.append(item)
                continue
            idle.remove(w)
            j.worker = w.ident
            j.dispatched = time.monotonic()
            w.job = j.key
            w.trials = 0
            self.stats["dispatched"] += 1
            self._to_worker(w.ident, bus.WorkerJob(key=j.key, initial_hash=j.initial_hash, target=j.target,
                                                   start=j.start))
        for item in skipped:
            heapq.heappush(self._queue, item)


# =========================================================================== the client


class PowClient:
    """A synchronous client of a broker's client endpoint (one thread at a time).

    ``solve()`` submits and waits; ``submit()`` + ``events()`` let a process keep many jobs
    in flight (the mailbox). Every nonce is checked again here before it is returned.

    ``server_key`` (the broker's NAME.key file or Z85 text) with ``secret_key`` (this
    client's NAME.key_secret file) speak CURVE; on tcp a refused handshake raises
    :class:`PowAuthError` at once instead of waiting out the timeout."""

    def __init__(self, endpoint: str, *, client: str = "", timeout: float = 10.0, context: zmq.Context | None = None,
                 server_key: str | None = None, secret_key: str | None = None) -> None:
        self.endpoint = bus.check_endpoint(endpoint)
        self.curve: ClientCurve | None = client_curve(server_key, secret_key, self.endpoint)
        self.client = client[:64]
        self.timeout = timeout
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, bus.MAX_POW_MESSAGE)
        if self.curve is not None:
            self.curve.apply(self.socket)
        self._watch: HandshakeWatch | None = None
        self._poller: zmq.Poller | None = None
        if uses_curve(self.endpoint):
            self._watch = HandshakeWatch(self.socket)
            self._poller = zmq.Poller()
            self._poller.register(self.socket, zmq.POLLIN)
            self._poller.register(self._watch.monitor, zmq.POLLIN)
        self.socket.connect(self.endpoint)
        self._ids = itertools.count(1)
        self._jobs: dict[str, bytes] = {}  # job -> initial hash, to re-check results
        self._targets: dict[str, int] = {}
        self._replies: list[bus.BusMessage] = []
        self._outcomes: dict[str, bus.BusMessage] = {}
        #: submitted, not yet accepted: job -> what was tracked under that id before (or None)
        self._awaiting_accept: dict[str, tuple[bytes, int] | None] = {}

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self.socket.close(0)

    def __enter__(self) -> "PowClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def _send(self, msg: bus.BusMessage) -> None:
        """Queue ``msg`` for the broker; PowTimeout instead of blocking for ever when the queue
        is full (the broker has not taken our requests for a long time: down or unreachable)."""
        try:
            self.socket.send_multipart(bus.encode(msg), flags=zmq.NOBLOCK)
        except zmq.Again:
            raise PowTimeout(f"cannot send to the PoW broker at {self.endpoint}: it has not taken this client's "
                             "earlier requests (not running or not reachable)") from None

    def _pump(self, timeout: float) -> bool:
        """Receive what is there (waiting up to ``timeout`` s for the first); False if nothing.
        PowAuthError when the security handshake failed (and none succeeded since)."""
        if self._watch is None or self._poller is None:
            ready = self.socket.poll(max(0, int(timeout * 1000)), zmq.POLLIN)
        else:
            deadline = time.monotonic() + timeout
            while True:  # a monitor event wakes the poll early: wait on unless it is a failure
                ms = max(0, int((deadline - time.monotonic()) * 1000))
                ready = dict(self._poller.poll(ms)).get(self.socket)
                problem = self._watch.explain(self.endpoint, self.curve.keypair.public if self.curve else None)
                if ready:
                    break
                if problem is not None:
                    raise PowAuthError(problem)
                if ms == 0:
                    break
        if not ready:
            return False
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return True
            try:
                msg = bus.decode(frames)
            except bus.BusError:
                continue
            self._sort(msg)

    def _sort(self, msg: bus.BusMessage) -> None:
        job = getattr(msg, "job", None)
        if isinstance(msg, bus.PowResult) and job in self._jobs:
            ih, tg = self._jobs.pop(job), self._targets.pop(job)
            if trial_value(msg.nonce, ih) > tg:
                self._outcomes[job] = bus.PowFailed(job=job, code="invalid", message="the broker returned a wrong nonce")
            else:
                self._outcomes[job] = msg
        elif isinstance(msg, bus.PowFailed) and job in self._awaiting_accept:
            previous = self._awaiting_accept.pop(job)
            if previous is None:
                self._jobs.pop(job, None)
                self._targets.pop(job, None)
            else:  # refused a second submit of a job the broker still has: keep waiting for it
                self._jobs[job], self._targets[job] = previous
            self._replies.append(msg)
        elif isinstance(msg, bus.PowFailed) and job in self._jobs:
            self._jobs.pop(job, None)
            self._targets.pop(job, None)
            self._outcomes[job] = msg
        elif isinstance(msg, bus.PowAccepted):
            self._awaiting_accept.pop(msg.job, None)
            self._replies.append(msg)
        elif isinstance(msg, (bus.PowCancelledReply, bus.PowState, bus.ErrorReply)):
            self._replies.append(msg)
        if len(self._replies) > 10_000:  # answers nobody waited for (timed-out requests)
            del self._replies[:-10_000]

    def _reply(self, pred: Any, timeout: float | None) -> bus.BusMessage:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for i, r in enumerate(self._replies):
                if pred(r):
                    return self._replies.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise PowTimeout(f"no answer from the PoW broker at {self.endpoint}")
            self._pump(left)

    # ------------------------------------------------------------------ API

    def send_submit(self, initial_hash: bytes, target: int, *, job: str | None = None, priority: int = 0) -> str:
        """Queue a submission without waiting; the acceptance shows up in :meth:`events`."""
        ih = bytes(initial_hash)
        if len(ih) != 64:
            raise PowError(f"initial hash must be 64 bytes, got {len(ih)}")
        if not isinstance(target, int) or not 0 <= target <= _U64_MAX:
            raise PowError(f"target must be in [0, 2^64), got {target!r}")
        job = job or f"c{next(self._ids)}-{time.monotonic_ns():x}"
        self._awaiting_accept[job] = (self._jobs[job], self._targets[job]) if job in self._jobs else None
        self._jobs[job] = ih
        self._targets[job] = target
        self._send(bus.PowSubmit(job=job, initial_hash=ih, target=target, priority=priority, client=self.client))
        return job

    def submit(self, initial_hash: bytes, target: int, *, job: str | None = None, priority: int = 0,
               timeout: float | None = None) -> str:
        """Submit a job and wait until the broker accepts it; its id. PowLimit if refused."""
        job = self.send_submit(initial_hash, target, job=job, priority=priority)
        r = self._reply(lambda r: getattr(r, "job", None) == job and isinstance(r, (bus.PowAccepted, bus.PowFailed)), timeout)
        if isinstance(r, bus.PowFailed):
            raise PowLimit(f"the PoW broker refused job {job}: {r.message}", r.code)
        return job

    def wait(self, job: str, timeout: float | None = None) -> Solution:
        """The solution of ``job``; PowTimeout, or PowError when the broker gave up on it."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while job not in self._outcomes:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PowTimeout(f"job {job} not done after {self.timeout if timeout is None else timeout} s")
            self._pump(left)
        return self._solution(self._outcomes.pop(job))

    @staticmethod
    def _solution(r: bus.BusMessage) -> Solution:
        if isinstance(r, bus.PowResult):
            return Solution(r.nonce, r.trial_value, r.trials)
        assert isinstance(r, bus.PowFailed)
        raise PowError(f"PoW job {r.job} failed ({r.code}): {r.message}")

    def solve(self, initial_hash: bytes, target: int, *, priority: int = 0, timeout: float | None = None) -> Solution:
        """Submit and wait for the nonce (``timeout`` covers both)."""
        t = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + t
        job = self.submit(initial_hash, target, priority=priority, timeout=t)
        try:
            return self.wait(job, max(0.0, deadline - time.monotonic()))
        except PowTimeout:
            try:
                self.cancel(job, timeout=1.0)
            except PowError:
                pass
            raise

    def cancel(self, job: str, timeout: float | None = None) -> bool:
        """Cancel a job; True if the broker still had it."""
        self._send(bus.PowCancel(job=job, client=self.client))
        r = self._reply(lambda r: isinstance(r, bus.PowCancelledReply) and r.job == job, timeout)
        self._jobs.pop(job, None)
        self._targets.pop(job, None)
        self._outcomes.pop(job, None)
        return bool(r.found)  # type: ignore[attr-defined]

    def status(self, job: str = "", timeout: float | None = None) -> bus.PowState:
        """A job's state, or (no job) the broker's counters."""
        self._send(bus.PowStatus(job=job, client=self.client))
        return self._reply(lambda r: isinstance(r, bus.PowState) and r.job == job, timeout)  # type: ignore[return-value]

    def events(self, timeout: float = 0.0) -> list[tuple[str, Solution | PowError]]:
        """Finished jobs since the last call, waiting up to ``timeout`` s for the first:
        ``(job, Solution)`` or ``(job, PowError)``. Also turns refusals of
        :meth:`send_submit` into ``(job, PowLimit)``. PowAuthError if the tcp handshake failed."""
        if not self._outcomes and not any(isinstance(r, bus.PowFailed) for r in self._replies):
            self._pump(timeout)
        else:
            self._pump(0)
        out: list[tuple[str, Solution | PowError]] = []
        for job in list(self._outcomes):
            try:
                out.append((job, self._solution(self._outcomes.pop(job))))
            except PowError as exc:
                out.append((job, exc))
        keep = []
        for r in self._replies:
            if isinstance(r, bus.PowFailed):
                out.append((r.job, PowLimit(f"the PoW broker refused job {r.job}: {r.message}", r.code)))
            elif not isinstance(r, bus.PowAccepted):
                keep.append(r)
        self._replies = keep
        return out

    @property
    def pending(self) -> int:
        """Jobs submitted and not finished."""
        return len(self._jobs)


def serve_broker(config: BrokerConfig, stop: threading.Event | None = None, *, log_level: str | None = None) -> int:
    """Run a broker until SIGTERM/SIGINT (or ``stop``): the body of ``bmnode pow serve`` and
    the node's PoW process (a supervisor :class:`~bmnode.node.supervisor.ChildSpec` target)."""
    import signal

    if log_level is not None:
        logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    stop = stop or threading.Event()
    old = {}
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGTERM, signal.SIGINT):
            old[s] = signal.signal(s, lambda *_: stop.set())
    broker = PowBroker(config)
    try:
        broker.start()
        while not stop.wait(0.5):
            pass
    finally:
        broker.stop()
        for s, h in old.items():
            signal.signal(s, h)
    return 0

