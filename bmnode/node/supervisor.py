"""The supervisor: starts the node's processes, restarts a crashed one, owns shutdown.

Generic over a list of :class:`ChildSpec` (name, module-level target, args). Each child is a
``multiprocessing`` process started with *spawn* (a fresh interpreter, nothing inherited but
the arguments), which asks the kernel to send it SIGTERM when the supervisor dies, so a
kill -9 of the node leaves no orphans. A child that exits while the node runs is started
again after a delay that doubles per quick failure (``backoff``, up to ``backoff_max``; a
child that ran ``stable_after`` seconds starts from ``backoff`` again). A child that exits
with :data:`EXIT_STOP_NODE` asks for the whole node to stop (the API's ``shutdown``).
:meth:`Supervisor.stop` (or SIGTERM/SIGINT when :meth:`run` owns the signals) sends SIGTERM
to every child in reverse start order, waits ``grace`` seconds, then SIGKILLs what is left.
States are logged and, with ``status_file``, written as JSON after every change.
"""

from __future__ import annotations

import ctypes
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_handles
from pathlib import Path
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)

__all__ = ["ChildSpec", "ChildState", "EXIT_STOP_NODE", "Supervisor"]

#: Exit status by which a child asks the supervisor to stop the whole node.
EXIT_STOP_NODE = 75

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ChildSpec:
    """One supervised process: ``target(*args, **kwargs)`` in a spawned interpreter.
    ``target`` must be importable (a module-level function); the arguments must pickle.
    ``restart=False``: run once, never restart (its exit is only reported)."""

    name: str
    target: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    restart: bool = True


@dataclass
class ChildState:
    """What the supervisor knows about one child."""

    name: str
    state: str = "new"  # new, running, backoff, stopping, stopped, exited
    pid: int | None = None
    restarts: int = 0
    last_exit: int | None = None
    started_at: float = 0.0
    next_start: float = 0.0
    failures: int = 0
    #: The restart delays chosen so far (the last 20), for status and tests.
    delays: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "state": self.state, "pid": self.pid, "restarts": self.restarts,
            "last_exit": self.last_exit, "delays": list(self.delays),
        }


def _child_entry(parent: int, target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """First code run in a child: die with the supervisor, default signals, then the target."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: orphans are possible, nothing else changes
        pass
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os._exit(1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    result = target(*args, **kwargs)
    code = result if isinstance(result, int) and not isinstance(result, bool) else 0
    raise SystemExit(code)


class Supervisor:
    """Runs children and keeps them running. Use :meth:`run` in the main thread of
    ``bmnode run`` (it handles SIGTERM/SIGINT), or :meth:`start`/:meth:`stop` from tests."""

    def __init__(
        self,
        children: Sequence[ChildSpec],
        *,
        backoff: float = 1.0,
        backoff_max: float = 60.0,
        stable_after: float = 30.0,
        grace: float = 10.0,
        status_file: str | Path | None = None,
    ) -> None:
        names = [c.name for c in children]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique: {names}")
        self.specs = list(children)
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.grace = grace
        self.status_file = Path(status_file) if status_file else None
        self.states = {c.name: ChildState(c.name) for c in children}
        self.stop_requested = threading.Event()
        self.exit_code = 0
        self._ctx = multiprocessing.get_context("spawn")
        self._procs: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition()

    # ------------------------------------------------------------------ control

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT or :meth:`stop`; then stop every child. Returns 0,
        or 1 if a child that must not restart failed."""
        installed: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                installed[sig] = signal.signal(sig, self._on_signal)
        try:
            self._loop()
        finally:
            for sig, handler in installed.items():
                signal.signal(sig, handler)
        return self.exit_code

    def start(self) -> "Supervisor":
        """Supervise on a background thread (tests, embedding)."""
        self._thread = threading.Thread(target=self._loop, name="bmnode-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Ask for a clean shutdown and (with a thread) wait for it."""
        self.stop_requested.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.grace + 10)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every child's state, in start order."""
        with self._lock:
            return [self.states[c.name].to_dict() for c in self.specs]

    def wait_for(self, predicate: Callable[[dict[str, dict[str, Any]]], bool], timeout: float) -> bool:
        """Block until ``predicate({name: state dict})`` holds (tests); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                with self._lock:
                    view = {s.name: s.to_dict() for s in self.states.values()}
                if predicate(view):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.2))

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if not self.stop_requested.is_set():
            log.info("supervisor: %s received, stopping", signal.Signals(signum).name)
        self.stop_requested.set()
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        try:
            for spec in self.specs:
                if self.stop_requested.is_set():
                    break
                self._spawn(spec)
            while not self.stop_requested.is_set():
                now = time.monotonic()
                for spec in self.specs:
                    st = self.states[spec.name]
                    if st.state == "backoff" and now >= st.next_start:
                        self._spawn(spec)
                handles: list[Any] = [self._wake_r] + [p.sentinel for p in self._procs.values()]
                pending = [self.states[s.name].next_start for s in self.specs if self.states[s.name].state == "backoff"]
                timeout = max(0.0, min(pending) - time.monotonic()) if pending else 1.0
                ready = wait_handles(handles, timeout=min(timeout, 1.0))
                if self._wake_r in ready:
                    try:
                        while os.read(self._wake_r, 512):
                            pass
                    except (BlockingIOError, OSError):
                        pass
                self._reap(time.monotonic())
        finally:
            self._shutdown()
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _spawn(self, spec: ChildSpec) -> None:
        st = self.states[spec.name]
        proc = self._ctx.Process(
            target=_child_entry, args=(os.getpid(), spec.target, spec.args, spec.kwargs),
            name=f"bmnode-{spec.name}", daemon=False,
        )
        try:
            proc.start()
        except Exception as exc:
            log.error("supervisor: cannot start %s: %s", spec.name, exc)
            self._schedule(spec, st, None, time.monotonic())
            return
        with self._lock:
            self._procs[spec.name] = proc
            st.pid = proc.pid
            st.state = "running"
            st.started_at = time.monotonic()
        log.info("supervisor: started %s (pid %d)%s", spec.name, proc.pid,
                 f", restart {st.restarts}" if st.restarts else "")
        self._changed_state()

    def _reap(self, now: float) -> None:
        for spec in self.specs:
            proc = self._procs.get(spec.name)
            if proc is None or proc.is_alive():
                continue
            proc.join(0)
            code = proc.exitcode
            proc.close()
            del self._procs[spec.name]
            st = self.states[spec.name]
            log.warning("supervisor: %s (pid %s) exited with %s", spec.name, st.pid, _describe_exit(code))
            if code == EXIT_STOP_NODE:
                log.info("supervisor: %s asked for the node to stop", spec.name)
                with self._lock:
                    st.state, st.pid, st.last_exit = "exited", None, code
                self.stop_requested.set()
                self._changed_state()
                continue
            if not spec.restart:
                with self._lock:
                    st.state, st.pid, st.last_exit = "exited", None, code
                if code:
                    self.exit_code = 1
                self._changed_state()
                continue
            self._schedule(spec, st, code, now)

    def _schedule(self, spec: ChildSpec, st: ChildState, code: int | None, now: float) -> None:
        with self._lock:
            if st.started_at and now - st.started_at >= self.stable_after:
                st.failures = 0
            st.failures += 1
            delay = self.backoff_delay(st.failures)
            st.delays = (st.delays + [delay])[-20:]
            st.state, st.pid, st.last_exit = "backoff", None, code
            st.next_start = now + delay
            st.restarts += 1
        log.info("supervisor: restarting %s in %.1f s", spec.name, delay)
        self._changed_state()

    def backoff_delay(self, failures: int) -> float:
        """Seconds before the restart after ``failures`` quick failures in a row (1, 2, ...)."""
        return min(self.backoff_max, self.backoff * (2 ** min(max(failures, 1) - 1, 60)))

    def _shutdown(self) -> None:
        live = [(s, self._procs[s.name]) for s in reversed(self.specs) if s.name in self._procs]
        for spec, proc in live:
            with self._lock:
                self.states[spec.name].state = "stopping"
            if proc.is_alive() and proc.pid:
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        if live:
            log.info("supervisor: stopping %s", ", ".join(s.name for s, _ in live))
        deadline = time.monotonic() + self.grace
        for spec, proc in live:
            proc.join(max(0.0, deadline - time.monotonic()))
        for spec, proc in live:
            if proc.is_alive():
                log.warning("supervisor: %s did not stop in %.0f s, killing it", spec.name, self.grace)
                proc.kill()
                proc.join(5.0)
        with self._lock:
            for spec in self.specs:
                st = self.states[spec.name]
                proc = self._procs.pop(spec.name, None)
                if proc is not None:
                    st.last_exit = proc.exitcode
                    proc.close()
                if st.state != "exited":
                    st.state = "stopped"
                st.pid = None
        self._changed_state()
        log.info("supervisor: all processes stopped")

    def _changed_state(self) -> None:
        if self.status_file is not None:
            tmp = self.status_file.with_name(self.status_file.name + ".tmp")
            try:
                tmp.write_text(json.dumps({"pid": os.getpid(), "children": self.snapshot()}))
                os.replace(tmp, self.status_file)
            except OSError as exc:
                log.debug("supervisor: cannot write %s: %s", self.status_file, exc)
        with self._changed:
            self._changed.notify_all()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "an unknown status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"
