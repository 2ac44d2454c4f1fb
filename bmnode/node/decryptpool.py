"""Trial decryption fanned out over worker processes: the "is this msg for us?" filter.

Nearly every msg object on the network is for someone else, and finding that out costs one
ECDH per own key (spec 10.4 step 2). :class:`DecryptPool` spreads that work over worker
processes so that it scales with cores. A worker holds only the encryption private keys of
the enabled identities and chans (sent to it with a generation number whenever they change)
and answers, per blob, whether one of them opens it (MAC match, with the same
:class:`~bmnode.crypto.ecies.Decryptor` the mailbox uses). It never sees signing keys and
never touches the database: the mailbox re-opens the rare hits with the full rules.

A worker that dies is started again and its unfinished batches are sent again; a miss
computed with keys older than the current generation is tried again with the new ones, so a
message to an address created a moment ago is not lost. ``workers=0`` runs the same filter
inline (no processes), for small nodes and tests.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_connections
from typing import Any

from bmnode.crypto.ecies import Decryptor, parse_blob
from bmnode.errors import BmnodeError

log = logging.getLogger("bmnode.decryptpool")

__all__ = ["DecryptPool", "default_workers", "opens_any"]

#: Blobs per message to a worker: amortises the pipe and pickling, keeps the parent responsive.
DEFAULT_BATCH = 64
#: Batches in flight per worker: one being worked on, one waiting in the pipe.
MAX_IN_FLIGHT = 2
#: A batch whose worker died this many times is reported as misses (it is not retried forever).
MAX_ATTEMPTS = 3
#: A worker that dies within this many seconds of its start is restarted after a growing delay.
QUICK_FAILURE = 2.0
MAX_RESTART_DELAY = 30.0
_PR_SET_PDEATHSIG = 1


def default_workers(cpus: int | None = None) -> int:
    """Workers used when none is configured: one per core beyond the first, 1 to 8."""
    n = cpus if cpus is not None else len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, n - 1))


def _decryptors(secrets: Iterable[bytes]) -> list[Decryptor]:
    out = []
    for s in secrets:
        try:
            out.append(Decryptor(bytes(s)))
        except (BmnodeError, TypeError, ValueError) as exc:  # an unusable key opens nothing
            log.warning("decrypt pool: skipping an unusable key: %s", exc)
    return out


def opens_any(blob: bytes, decryptors: Sequence[Decryptor]) -> bool:
    """Whether one of ``decryptors`` opens ``blob`` (parsed once; any malformed blob is a miss)."""
    if not decryptors:
        return False
    try:
        parsed = parse_blob(blob)
    except BmnodeError:
        return False
    for d in decryptors:
        if d.try_decrypt(parsed) is not None:
            return True
    return False


def _worker_main(conn: Connection, parent: int) -> None:
    """A pool worker: ``("keys", gen, [secret32, ...])`` replaces its keys, ``("batch", id,
    [blob, ...])`` is answered with ``("done", id, gen, [indices of hits])``; EOF or
    ``("stop",)`` ends it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the pipe's EOF still ends the worker
        pass
    if os.getppid() != parent:
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    decryptors: list[Decryptor] = []
    gen = 0
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        kind = msg[0]
        if kind == "keys":
            gen, decryptors = int(msg[1]), _decryptors(msg[2])
        elif kind == "batch":
            hits = [i for i, blob in enumerate(msg[2]) if opens_any(blob, decryptors)]
            try:
                conn.send(("done", msg[1], gen, hits))
            except (BrokenPipeError, OSError):
                return
        elif kind == "stop":
            return


@dataclass
class _Batch:
    id: int
    tokens: list[Any]
    blobs: list[bytes]
    gen: int = 0
    attempts: int = 0


@dataclass
class _Worker:
    index: int
    proc: Any = None
    conn: Connection | None = None
    gen_sent: int = -1
    in_flight: dict[int, _Batch] = field(default_factory=dict)
    restarts: int = 0
    started: float = 0.0
    quick_failures: int = 0
    next_start: float = 0.0


class DecryptPool:
    """Filter blobs through ``workers`` processes (0: inline). Not thread-safe: one owner.

    ``set_keys()`` the encryption private keys, ``submit()`` (token, blob) pairs, and poll
    ``collect()`` for (token, hit) pairs (in any order); :meth:`connections` can be waited on
    with the owner's other sockets.
    """

    def __init__(self, workers: int, *, batch: int = DEFAULT_BATCH, name: str = "bmnode-decrypt") -> None:
        if workers < 0:
            raise ValueError("workers must be >= 0")
        self.batch = max(1, int(batch))
        self.name = name
        self._ctx = multiprocessing.get_context("spawn")
        self._workers = [_Worker(i) for i in range(workers)]
        self._keys: tuple[bytes, ...] = ()
        self._gen = 0
        self._inline: list[Decryptor] = []
        self._ids = itertools.count(1)
        self._queue: deque[_Batch] = deque()
        self._ready: list[tuple[Any, bool]] = []
        self._closed = False
        self.stats = {"submitted": 0, "hits": 0, "misses": 0, "retried_stale": 0, "worker_restarts": 0, "abandoned": 0}
        for w in self._workers:
            self._start(w)

    # ------------------------------------------------------------------ public

    @property
    def workers(self) -> int:
        """Number of worker processes (0: inline)."""
        return len(self._workers)

    @property
    def generation(self) -> int:
        """Incremented every time the keys change."""
        return self._gen

    def set_keys(self, secrets: Iterable[bytes]) -> bool:
        """Use these encryption private keys from now on; True if they differ from before."""
        keys = tuple(dict.fromkeys(bytes(s) for s in secrets))
        if keys == self._keys:
            return False
        self._keys = keys
        self._gen += 1
        self._inline = _decryptors(keys) if not self._workers else []
        return True

    def submit(self, items: Iterable[tuple[Any, bytes]]) -> None:
        """Queue (token, blob) pairs; their verdicts come back through :meth:`collect`."""
        self._check_open()
        tokens: list[Any] = []
        blobs: list[bytes] = []
        for token, blob in items:
            tokens.append(token)
            blobs.append(bytes(blob))
            if len(blobs) >= self.batch:
                self._enqueue(tokens, blobs)
                tokens, blobs = [], []
        if blobs:
            self._enqueue(tokens, blobs)
        self._pump()

    def collect(self, timeout: float = 0.0) -> list[tuple[Any, bool]]:
        """Verdicts ready now, waiting up to ``timeout`` s for the first when there is none."""
        self._check_open()
        self._pump()
        if not self._ready and self._workers and timeout > 0:
            conns = [w.conn for w in self._workers if w.conn is not None and w.in_flight]
            if conns:
                wait_connections(conns, timeout)
            elif self._queue:  # every worker is waiting to be restarted
                due = min(w.next_start for w in self._workers) - time.monotonic()
                time.sleep(max(0.0, min(timeout, due)))
        self._receive()
        self._pump()
        out, self._ready = self._ready, []
        return out

    @property
    def pending(self) -> int:
        """Blobs submitted whose verdict has not been collected yet."""
        queued = sum(len(b.blobs) for b in self._queue)
        flying = sum(len(b.blobs) for w in self._workers for b in w.in_flight.values())
        return queued + flying + len(self._ready)

    def connections(self) -> list[Connection]:
        """The worker pipes (readable when a verdict arrived), for the owner's poll loop."""
        return [w.conn for w in self._workers if w.conn is not None]

    def close(self, timeout: float = 2.0) -> None:
        """Stop every worker (politely, then by force)."""
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            if w.conn is not None:
                try:
                    w.conn.send(("stop",))
                except (OSError, ValueError):
                    pass
        for w in self._workers:
            self._reap(w, timeout)

    def __enter__(self) -> DecryptPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the decrypt pool is closed")

    def _start(self, w: _Worker) -> None:
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_worker_main, args=(child_end, os.getpid()), name=f"{self.name}-{w.index}", daemon=True
        )
        proc.start()
        child_end.close()
        w.proc, w.conn, w.gen_sent = proc, parent_end, -1
        w.started = time.monotonic()

    def _reap(self, w: _Worker, timeout: float) -> None:
        proc, conn = w.proc, w.conn
        w.proc = w.conn = None
        if conn is not None:
            conn.close()
        if proc is not None:
            proc.join(timeout)
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)

    def _restart(self, w: _Worker) -> None:
        """Reap a dead worker, queue its batches again, and start it now or after a back-off
        (a worker that keeps dying at once is started at most every 30 s)."""
        proc = w.proc
        self._reap(w, 0.5)
        code = proc.exitcode if proc is not None else None
        w.restarts += 1
        self.stats["worker_restarts"] += 1
        now = time.monotonic()
        w.quick_failures = w.quick_failures + 1 if now - w.started < QUICK_FAILURE else 0
        delay = min(MAX_RESTART_DELAY, 0.25 * 2 ** (w.quick_failures - 1)) if w.quick_failures else 0.0
        w.next_start = now + delay
        log.warning("decrypt worker %d died (exit %s); restarting it%s", w.index, code,
                    f" in {delay:.1f} s" if delay else "")
        lost = list(w.in_flight.values())
        w.in_flight.clear()
        for b in lost:
            b.attempts += 1
            if b.attempts >= MAX_ATTEMPTS:
                log.error("decrypt pool: a batch of %d blobs killed %d workers; treating it as not for us",
                          len(b.blobs), b.attempts)
                self.stats["abandoned"] += len(b.blobs)
                self._ready.extend((t, False) for t in b.tokens)
            else:
                self._queue.appendleft(b)
        if not self._closed and not delay:
            self._start(w)

    def _enqueue(self, tokens: list[Any], blobs: list[bytes]) -> None:
        self.stats["submitted"] += len(blobs)
        b = _Batch(next(self._ids), tokens, blobs)
        if not self._workers:
            self._run_inline(b)
        else:
            self._queue.append(b)

    def _run_inline(self, b: _Batch) -> None:
        for token, blob in zip(b.tokens, b.blobs):
            hit = opens_any(blob, self._inline)
            self.stats["hits" if hit else "misses"] += 1
            self._ready.append((token, hit))

    def _pump(self) -> None:
        """Hand queued batches to the least busy workers (at most MAX_IN_FLIGHT each)."""
        now = time.monotonic()
        for w in self._workers:
            if w.conn is None and not self._closed and now >= w.next_start:
                self._start(w)
        while self._queue:
            live = [w for w in self._workers if w.conn is not None]
            if not live:
                return
            w = min(live, key=lambda x: len(x.in_flight))
            if len(w.in_flight) >= MAX_IN_FLIGHT:
                return
            if w.proc is not None and not w.proc.is_alive():
                self._restart(w)
                continue
            b = self._queue.popleft()
            try:
                if w.gen_sent != self._gen:
                    w.conn.send(("keys", self._gen, list(self._keys)))
                    w.gen_sent = self._gen
                b.gen = self._gen
                w.in_flight[b.id] = b
                w.conn.send(("batch", b.id, b.blobs))
            except (BrokenPipeError, OSError):
                self._restart(w)

    def _receive(self) -> None:
        for w in self._workers:
            conn = w.conn
            if conn is None:
                continue
            try:
                while conn.poll():
                    msg = conn.recv()
                    if msg[0] == "done":
                        self._done(w, msg[1], int(msg[2]), msg[3])
            except (EOFError, OSError):
                self._restart(w)
                continue
            if w.in_flight and w.proc is not None and not w.proc.is_alive():
                self._restart(w)

    def _done(self, w: _Worker, batch_id: int, gen: int, hits: list[int]) -> None:
        b = w.in_flight.pop(batch_id, None)
        if b is None:
            return
        hit_set = set(hits)
        stale_tokens: list[Any] = []
        stale_blobs: list[bytes] = []
        for i, (token, blob) in enumerate(zip(b.tokens, b.blobs)):
            if i in hit_set:
                self.stats["hits"] += 1
                self._ready.append((token, True))
            elif gen != self._gen:  # the keys changed meanwhile: try the new ones
                stale_tokens.append(token)
                stale_blobs.append(blob)
            else:
                self.stats["misses"] += 1
                self._ready.append((token, False))
        if stale_blobs:
            self.stats["retried_stale"] += len(stale_blobs)
            self._queue.appendleft(_Batch(next(self._ids), stale_tokens, stale_blobs))
