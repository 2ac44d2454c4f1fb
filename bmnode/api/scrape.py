"""Gathering the metrics of ``GET /metrics`` from the parts of a node, each bounded in time.

A part is a named callable returning sections for :func:`bmnode.api.metrics.node_metrics`
(or None: nothing to report). Every part runs in its own thread and the scrape waits at most
``timeout`` seconds for all of them together: a part that fails or does not answer in time is
left out and reported as ``bmnode_scrape_error{part=...} 1``. A part still busy from an
earlier scrape is not started again: the new scrape waits for that call instead (so concurrent
scrapes share one call, and a hung process cannot pile up threads).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Mapping

from bmnode.api.metrics import node_metrics

__all__ = ["Part", "Scraper", "backend_parts"]

_log = logging.getLogger("bmnode.api.metrics")

#: A part of the node: returns ``{section name: value}`` or None.
Part = Callable[[], "Mapping[str, Any] | None"]


class _Run:
    """One call of a part in its own thread."""

    def __init__(self, name: str, fn: Part) -> None:
        self.done = threading.Event()
        self.value: Mapping[str, Any] | None = None
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), name=f"metrics-{name}", daemon=True)
        self.thread.start()

    def _run(self, fn: Part) -> None:
        try:
            self.value = fn()
        except Exception as exc:  # noqa: BLE001 - any failure of a part is reported, not raised
            self.error = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            self.done.set()


class Scraper:
    """``scraper()`` is the exposition text of the node: its parts gathered in parallel within
    ``timeout`` seconds, then rendered by :func:`~bmnode.api.metrics.node_metrics`."""

    def __init__(self, parts: Mapping[str, Part], *, version: str, timeout: float = 3.0) -> None:
        self.parts = dict(parts)
        self.version = version
        self.timeout = timeout
        self._busy: dict[str, _Run] = {}
        self._failing: set[str] = set()
        self._lock = threading.Lock()

    def gather(self) -> tuple[dict[str, Any], dict[str, str]]:
        """(sections, errors): what the parts answered within the bound, and why the others did not."""
        runs: dict[str, _Run] = {}
        errors: dict[str, str] = {}
        with self._lock:
            for name, fn in self.parts.items():
                prev = self._busy.get(name)
                if prev is not None and not prev.done.is_set():
                    runs[name] = prev
                else:
                    runs[name] = self._busy[name] = _Run(name, fn)
        deadline = time.monotonic() + self.timeout
        sections: dict[str, Any] = {}
        for name, run in runs.items():
            if not run.done.wait(max(0.0, deadline - time.monotonic())):
                errors[name] = f"no answer within {self.timeout:g} s"
            elif run.error is not None:
                errors[name] = run.error
            elif run.value is not None:
                sections.update(run.value)
        self._log_changes(errors)
        return sections, errors

    def _log_changes(self, errors: Mapping[str, str]) -> None:
        with self._lock:
            for name in sorted(set(errors) - self._failing):
                _log.warning("metrics: the %s part left out: %s", name, errors[name])
            for name in sorted(self._failing - set(errors)):
                _log.info("metrics: the %s part answers again", name)
            self._failing = set(errors)

    def __call__(self) -> str:
        t0 = time.monotonic()
        sections, errors = self.gather()
        return node_metrics(sections, errors, version=self.version, parts=self.parts,
                            duration=time.monotonic() - t0)


def backend_parts(commands: Any) -> dict[str, Part]:
    """The default part of an API server without a node behind it: the backend's
    ``client_status`` and ``list_connections`` (called under the commands' lock)."""

    def backend() -> dict[str, Any]:
        out: dict[str, Any] = {}
        status = commands.call_backend("client_status")
        if status is not None:
            out["client_status"] = {
                "numberOfMessagesProcessed": int(status.messages_processed),
                "numberOfBroadcastsProcessed": int(status.broadcasts_processed),
                "numberOfPubkeysProcessed": int(status.pubkeys_processed),
                "pendingDownload": int(status.pending_download),
            }
        conns = commands.call_backend("list_connections")
        if conns is not None:
            out["connections"] = [{"inbound": bool(c.inbound), "established": bool(c.fully_established)} for c in conns]
        return out

    return {"backend": backend}
