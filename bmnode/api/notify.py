"""The reference's ``apinotifypath`` hook: run an external program with one event argument.

PyBitmessage runs the program named by ``apinotifypath`` with ``startingUp`` when its API
starts, ``newMessage`` when a msg is stored in the inbox (messages to ourselves included) and
``newBroadcast`` when a broadcast is stored. :class:`ApiNotifier` does the same without ever
holding up the caller: events are queued to one background thread that runs the program
without a shell (argv ``[path, event]``, no stdin, output discarded), in order, one at a time,
and kills a run that exceeds ``timeout`` seconds (with the processes it started). A missing,
failing or slow program is logged, never raised; when the queue is full, further events are
dropped (and logged).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import threading
from pathlib import Path

__all__ = ["EVENTS", "NEW_BROADCAST", "NEW_MESSAGE", "STARTING_UP", "ApiNotifier"]

log = logging.getLogger("bmnode.api.notify")

STARTING_UP = "startingUp"
NEW_MESSAGE = "newMessage"
NEW_BROADCAST = "newBroadcast"
#: The event names the reference passes (its exact spelling).
EVENTS = (STARTING_UP, NEW_MESSAGE, NEW_BROADCAST)

#: Seconds one run of the program may take before it is killed.
DEFAULT_TIMEOUT = 60.0
#: Events waiting for the program at most; more are dropped.
MAX_QUEUED = 100


class ApiNotifier:
    """Runs ``path EVENT`` for each :meth:`notify` in a background thread (never blocks)."""

    def __init__(self, path: str | Path, *, timeout: float = DEFAULT_TIMEOUT, max_queued: int = MAX_QUEUED) -> None:
        self.path = str(path)
        self.timeout = timeout
        self._queue: queue.Queue[str | None] = queue.Queue(max_queued)
        self._closed = False
        self._thread = threading.Thread(target=self._worker, name="apinotify", daemon=True)
        self._thread.start()

    def notify(self, event: str) -> bool:
        """Queue one run of the program with ``event``; False if it was dropped (queue full or closed)."""
        if event not in EVENTS:
            raise ValueError(f"unknown apinotifypath event {event!r} (expected one of {', '.join(EVENTS)})")
        if self._closed:
            return False
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            log.warning("apinotifypath: %s is not keeping up; event %s dropped", self.path, event)
            return False
        return True

    def close(self, wait: float = 0.0) -> None:
        """Stop taking events; wait up to ``wait`` seconds for the queued ones to run."""
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        if wait > 0:
            self._thread.join(wait)

    def _worker(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            self._run(event)

    def _run(self, event: str) -> None:
        argv = [self.path, event]
        try:
            proc = subprocess.Popen(  # noqa: S603 - no shell; the path is the operator's own setting
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                close_fds=True, start_new_session=True,
            )
        except OSError as exc:
            log.warning("apinotifypath: cannot run %s %s: %s", self.path, event, exc.strerror or exc)
            return
        try:
            code = proc.wait(self.timeout)
        except subprocess.TimeoutExpired:
            # The whole session it started (a script's children too): only the script would leave
            # its children running, one more set for every slow event.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                proc.kill()
            proc.wait()
            log.warning("apinotifypath: %s %s took longer than %.0f s and was killed", self.path, event, self.timeout)
            return
        if code != 0:
            log.warning("apinotifypath: %s %s exited with status %d", self.path, event, code)
        else:
            log.debug("apinotifypath: %s %s done", self.path, event)
