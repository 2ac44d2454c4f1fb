"""Prometheus text exposition (format 0.0.4) of a node's counters: pure, from plain dicts.

:class:`Registry` collects samples and renders them (``# HELP`` and ``# TYPE`` once per
metric, label values escaped); :func:`node_metrics` maps the sections gathered from the
node's processes (see :mod:`bmnode.api.scrape`) onto ``bmnode_*`` metric names. A section
that is missing (its process did not answer) simply gives no metrics; the gatherer reports
it with ``bmnode_scrape_error{part=...} 1``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from bmnode.protocol.validation import RelayReason

__all__ = [
    "CONTENT_TYPE", "MetricError", "Registry", "escape_help", "escape_label_value", "format_value", "node_metrics",
]

#: The Content-Type of the text format, version 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_KINDS = ("counter", "gauge")


class MetricError(ValueError):
    """A metric that the format cannot carry (bad name, kind, label) or a conflicting one."""


def escape_help(text: str) -> str:
    """HELP text escaping of the format: backslash and line feed."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def escape_label_value(text: str) -> str:
    """Label value escaping of the format: backslash, double quote and line feed."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float | int | bool) -> str:
    """A sample value as the format writes it (integers exactly, ``NaN``, ``+Inf``, ``-Inf``)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


@dataclass
class _Family:
    name: str
    kind: str
    help: str
    samples: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)


class Registry:
    """Metric families in the order first added; :meth:`render` gives the exposition text."""

    def __init__(self, prefix: str = "bmnode_") -> None:
        self.prefix = prefix
        self._families: dict[str, _Family] = {}

    def add(self, kind: str, name: str, help: str, value: float | int | bool, labels: Mapping[str, Any] | None = None) -> None:
        """One sample; the same name must keep its kind and help, a label set appears once."""
        if kind not in _KINDS:
            raise MetricError(f"metric kind must be one of {_KINDS}, not {kind!r}")
        if not _NAME.fullmatch(name) or not name.startswith(self.prefix):
            raise MetricError(f"bad metric name {name!r}: [a-zA-Z_:][a-zA-Z0-9_:]* starting with {self.prefix!r}")
        if (kind == "counter") != name.endswith("_total"):
            raise MetricError(f"metric {name!r}: counters and only counters end in _total")
        if not isinstance(value, (int, float)):
            raise MetricError(f"metric {name!r}: value {value!r} is not a number")
        key: list[tuple[str, str]] = []
        for lname, lvalue in sorted((labels or {}).items()):
            if not _LABEL.fullmatch(lname) or lname.startswith("__"):
                raise MetricError(f"metric {name!r}: bad label name {lname!r}")
            key.append((lname, str(lvalue)))
        fam = self._families.get(name)
        if fam is None:
            fam = self._families[name] = _Family(name, kind, help)
        elif fam.kind != kind or fam.help != help:
            raise MetricError(f"metric {name!r} added again with another type or help text")
        if tuple(key) in fam.samples:
            raise MetricError(f"metric {name!r} has two samples with labels {dict(key)}")
        fam.samples[tuple(key)] = value

    def counter(self, name: str, help: str, value: float | int, **labels: Any) -> None:
        """A counter sample (the name ends in ``_total``)."""
        self.add("counter", name, help, value, labels)

    def gauge(self, name: str, help: str, value: float | int | bool, **labels: Any) -> None:
        """A gauge sample."""
        self.add("gauge", name, help, value, labels)

    def names(self) -> list[str]:
        """The metric names added so far."""
        return list(self._families)

    def render(self) -> str:
        """The exposition text: per metric ``# HELP``, ``# TYPE``, then its samples."""
        lines: list[str] = []
        for fam in self._families.values():
            lines.append(f"# HELP {fam.name} {escape_help(fam.help)}")
            lines.append(f"# TYPE {fam.name} {fam.kind}")
            for key, value in fam.samples.items():
                if key:
                    body = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in key)
                    lines.append(f"{fam.name}{{{body}}} {format_value(value)}")
                else:
                    lines.append(f"{fam.name} {format_value(value)}")
        return "\n".join(lines) + "\n" if lines else ""


# ------------------------------------------------------------------------------ node mapping

#: One mapping: (key in the source dict, metric name, help, labels). A ``_total`` name is a counter.
_Row = tuple[str, str, str, dict[str, str]]

_SENT = "Object hashes announced to peers (per peer)."
_RECEIVED = "Object hashes announced by peers."
_OPENED = "Peer connections opened."
_REFUSED = "Inbound connections refused."
_DIALS = "Outbound connection attempts."
_BYTES = "Bytes exchanged with peers since start, closed connections included."
#: net process counters and gauges (``RelayNode.stats()`` plus the bus's)
_NET: tuple[_Row, ...] = (
    ("objects_received", "bmnode_objects_received_total", "Objects received from peers.", {}),
    ("objects_accepted", "bmnode_objects_accepted_total", "Received objects that passed the relay rules and were stored.", {}),
    ("objects_duplicate", "bmnode_objects_duplicate_total", "Received objects already in the inventory.", {}),
    ("objects_injected", "bmnode_objects_injected_total", "Objects of this node stored and sent out.", {}),
    ("inject_rejected", "bmnode_objects_inject_rejected_total", "Objects of this node refused by the relay rules.", {}),
    ("objects_served", "bmnode_objects_served_total", "Objects sent to peers in answer to getdata.", {}),
    ("inv_sent", "bmnode_inv_hashes_sent_total", _SENT, {"kind": "inv"}),
    ("stem_announced", "bmnode_inv_hashes_sent_total", _SENT, {"kind": "dandelion_stem"}),
    ("inv_received", "bmnode_inv_hashes_received_total", _RECEIVED, {"kind": "inv"}),
    ("dinv_received", "bmnode_inv_hashes_received_total", _RECEIVED, {"kind": "dinv"}),
    ("getdata_sent", "bmnode_getdata_hashes_sent_total", "Objects requested from peers.", {}),
    ("getdata_received", "bmnode_getdata_hashes_received_total", "Objects requested by peers.", {}),
    ("getdata_ignored", "bmnode_getdata_hashes_ignored_total", "Object requests of peers not served (over the limits).", {}),
    ("getdata_missing", "bmnode_getdata_missing_total", "Object requests of peers for objects this node lacks.", {}),
    ("fluffed", "bmnode_dandelion_fluffed_total", "Dandelion stem objects turned into normal announcements.", {}),
    ("connections_inbound", "bmnode_peer_connections_opened_total", _OPENED, {"direction": "inbound"}),
    ("connections_outbound", "bmnode_peer_connections_opened_total", _OPENED, {"direction": "outbound"}),
    ("established", "bmnode_peer_handshakes_total", "Peer connections that completed the version handshake.", {}),
    ("closed_before_established", "bmnode_peer_handshakes_failed_total",
     "Peer connections closed before the handshake completed.", {}),
    ("inbound_refused_full", "bmnode_peer_inbound_refused_total", _REFUSED, {"reason": "full"}),
    ("inbound_refused_per_ip", "bmnode_peer_inbound_refused_total", _REFUSED, {"reason": "per_ip"}),
    ("dial_ok", "bmnode_peer_dials_total", _DIALS, {"result": "ok"}),
    ("dial_failed", "bmnode_peer_dials_total", _DIALS, {"result": "failed"}),
    ("dial_failed_proxy", "bmnode_peer_dials_total", _DIALS, {"result": "proxy_failed"}),
    ("addr_received", "bmnode_addr_entries_received_total", "Node addresses received in addr messages.", {}),
    ("addr_learned", "bmnode_addr_entries_learned_total", "Node addresses added to the known nodes.", {}),
    ("addr_sent", "bmnode_addr_entries_sent_total", "Node addresses sent in addr messages.", {}),
    ("download_timeouts", "bmnode_download_timeouts_total", "Requested objects that did not arrive in time.", {}),
    ("cleanup_objects", "bmnode_inventory_expired_removed_total", "Expired objects removed from the inventory.", {}),
    ("bus_publish_dropped", "bmnode_net_bus_events_dropped_total",
     "Object events the net process could not publish on the bus (queue full).", {}),
    ("bus_bad_messages", "bmnode_net_bus_bad_messages_total",
     "Malformed or unexpected bus messages the net process dropped.", {}),
    ("bytes_received", "bmnode_peer_bytes_total", _BYTES, {"direction": "received"}),
    ("bytes_sent", "bmnode_peer_bytes_total", _BYTES, {"direction": "sent"}),
)
_NET_GAUGES: tuple[_Row, ...] = (
    ("inventory", "bmnode_inventory_objects", "Objects in the inventory.", {}),
    ("wanted", "bmnode_objects_wanted", "Objects announced by peers and not yet received.", {}),
    ("stem_objects", "bmnode_dandelion_stem_objects", "Objects in the Dandelion stem phase.", {}),
    ("pending_announcements", "bmnode_announcements_pending", "New objects waiting to be announced.", {}),
)
#: the mailbox's own counters (``Mailbox.counters()``, with the clientStatus names)
_PROCESSED: tuple[_Row, ...] = (
    ("numberOfMessagesProcessed", "bmnode_messages_processed_total",
     "msg objects processed (clientStatus numberOfMessagesProcessed).", {}),
    ("numberOfBroadcastsProcessed", "bmnode_broadcasts_processed_total",
     "Broadcast objects processed (clientStatus numberOfBroadcastsProcessed).", {}),
    ("numberOfPubkeysProcessed", "bmnode_pubkeys_processed_total",
     "Pubkey objects processed (clientStatus numberOfPubkeysProcessed).", {}),
)
_MAILBOX: tuple[_Row, ...] = _PROCESSED + (
    ("getpubkeysProcessed", "bmnode_getpubkeys_processed_total", "Getpubkey objects processed.", {}),
    ("acksReceived", "bmnode_acks_received_total", "Acknowledgements received for messages this node sent.", {}),
    ("inboxStored", "bmnode_inbox_stored_total", "Messages and broadcasts stored in the inbox.", {}),
    ("pendingPowJobs", "bmnode_pow_jobs_pending", "Proof-of-work jobs of the mailbox not done yet.", {}),
    ("outbox", "bmnode_outbox_objects", "Finished objects not yet confirmed by the net process.", {}),
    ("identities", "bmnode_identities", "Identities (addresses and chans) of this node.", {}),
)
#: the mailbox process (``MailboxService.status()``: its counters and two gauges)
_PROCESS: tuple[_Row, ...] = (
    ("objects", "bmnode_mailbox_objects_total", "Object events the mailbox process received from the net process.", {}),
    ("scanned", "bmnode_mailbox_objects_scanned_total", "Objects the mailbox process read from the inventory (catch-up).", {}),
    ("processed", "bmnode_mailbox_objects_processed_total", "Objects given to the mailbox for processing.", {}),
    ("published", "bmnode_mailbox_objects_published_total", "Objects handed to the net process (including retries).", {}),
    ("confirmed", "bmnode_mailbox_objects_confirmed_total", "Objects the net process confirmed.", {}),
    ("inject_refused", "bmnode_mailbox_objects_refused_total", "Objects of this node the net process refused.", {}),
    ("pow_submitted", "bmnode_mailbox_pow_submitted_total", "PoW jobs submitted to the broker (including resubmissions).", {}),
    ("pow_done", "bmnode_mailbox_pow_done_total", "PoW jobs done.", {}),
    ("pow_errors", "bmnode_mailbox_pow_errors_total", "PoW jobs the broker refused or failed.", {}),
    ("rpc", "bmnode_mailbox_rpc_total", "API calls served by the mailbox process.", {}),
    ("rpc_errors", "bmnode_mailbox_rpc_errors_total", "API calls that ended in an error.", {}),
    ("bad_messages", "bmnode_mailbox_bad_bus_messages_total", "Malformed bus messages the mailbox process dropped.", {}),
)
_PROCESS_GAUGES: tuple[_Row, ...] = (
    ("outgoing", "bmnode_mailbox_objects_unconfirmed", "Objects handed to the net process and not yet confirmed.", {}),
    ("pow_jobs", "bmnode_mailbox_pow_jobs_in_flight", "PoW jobs submitted to the broker and not answered yet.", {}),
)
_POOL_RESULTS = "Trial-decryption results."
#: the trial-decryption pool (``DecryptPool.stats`` plus workers, pending, generation)
_POOL: tuple[_Row, ...] = (
    ("submitted", "bmnode_decrypt_pool_submitted_total", "msg objects given to the trial-decryption workers.", {}),
    ("hits", "bmnode_decrypt_pool_results_total", _POOL_RESULTS, {"result": "hit"}),
    ("misses", "bmnode_decrypt_pool_results_total", _POOL_RESULTS, {"result": "miss"}),
    ("retried_stale", "bmnode_decrypt_pool_retried_total", "Objects tried again because the keys changed meanwhile.", {}),
    ("worker_restarts", "bmnode_decrypt_pool_worker_restarts_total", "Trial-decryption workers restarted after dying.", {}),
    ("abandoned", "bmnode_decrypt_pool_abandoned_total", "Objects given up after their worker died repeatedly.", {}),
    ("workers", "bmnode_decrypt_pool_workers", "Trial-decryption worker processes.", {}),
    ("pending", "bmnode_decrypt_pool_pending", "msg objects waiting for a trial-decryption result.", {}),
    ("generation", "bmnode_decrypt_pool_key_generation", "How many times the workers' key set changed.", {}),
)
_POW_REFUSED = "PoW jobs the broker refused."
#: PoW broker counters (the ``stats`` of its ``pow.state`` overview)
_POW: tuple[_Row, ...] = (
    ("submitted", "bmnode_pow_broker_jobs_submitted_total", "PoW jobs submitted to the broker.", {}),
    ("solved", "bmnode_pow_broker_jobs_solved_total", "PoW jobs the broker's workers solved.", {}),
    ("failed", "bmnode_pow_broker_jobs_failed_total", "PoW jobs that failed.", {}),
    ("cancelled", "bmnode_pow_broker_jobs_cancelled_total", "PoW jobs cancelled by their client.", {}),
    ("refused_limit", "bmnode_pow_broker_jobs_refused_total", _POW_REFUSED, {"reason": "client_limit"}),
    ("refused_full", "bmnode_pow_broker_jobs_refused_total", _POW_REFUSED, {"reason": "full"}),
    ("workers_joined", "bmnode_pow_broker_workers_joined_total", "PoW workers that registered with the broker.", {}),
    ("workers_lost", "bmnode_pow_broker_workers_lost_total", "PoW workers the broker stopped hearing from.", {}),
    ("bad_results", "bmnode_pow_broker_bad_results_total", "Nonces from workers that failed the broker's check.", {}),
)
#: The relay rules' refusal reasons (always exported, 0 until one happens).
_REJECT_REASONS = tuple(r.value for r in RelayReason if r not in (RelayReason.OK, RelayReason.NOT_PROCESSABLE))


def _num(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    return None


def _rows(reg: Registry, source: Mapping[str, Any], rows: Iterable[_Row], *, missing: int | None = None) -> None:
    """A sample per row whose key ``source`` has as a number (or ``missing`` when absent)."""
    for key, name, help, labels in rows:
        v = _num(source.get(key, missing))
        if v is not None:
            reg.add("counter" if name.endswith("_total") else "gauge", name, help, v, labels)


def _connections(reg: Registry, conns: Iterable[Mapping[str, Any]]) -> None:
    counts = {(d, s): 0 for d in ("inbound", "outbound") for s in ("established", "handshake")}
    for c in conns:
        key = ("inbound" if c.get("inbound") else "outbound", "established" if c.get("established") else "handshake")
        counts[key] += 1
    for (direction, state), n in counts.items():
        reg.gauge("bmnode_peer_connections", "Open peer connections by direction and handshake state.", n,
                  direction=direction, state=state)


def _net(reg: Registry, counters: Mapping[str, Any]) -> None:
    # The net process counts from its start and leaves out what has not happened yet: 0.
    _rows(reg, counters, _NET, missing=0)
    rejected = dict.fromkeys(_REJECT_REASONS, 0)
    for key, v in counters.items():
        if key.startswith("rejected_") and _num(v) is not None:
            rejected[key[len("rejected_"):]] = v
    for reason, v in sorted(rejected.items()):
        reg.counter("bmnode_objects_rejected_total", "Received objects refused by the relay rules, by reason.",
                    v, reason=reason)
    _rows(reg, counters, _NET_GAUGES)


def _mailbox(reg: Registry, status: Mapping[str, Any]) -> None:
    _rows(reg, status.get("mailbox") or {}, _MAILBOX)
    _rows(reg, status.get("process") or {}, _PROCESS)
    _rows(reg, status, _PROCESS_GAUGES)
    _rows(reg, status.get("pool") or {}, _POOL)


def _pow(reg: Registry, state: Mapping[str, Any]) -> None:
    _rows(reg, state.get("stats") or {}, _POW, missing=0)
    _rows(reg, state, (("workers", "bmnode_pow_broker_workers", "PoW workers registered with the broker.", {}),))
    _rows(reg, state, [(key, "bmnode_pow_broker_jobs", "PoW jobs at the broker by state.", {"state": key})
                       for key in ("queued", "running")])


def _client_status(reg: Registry, cs: Mapping[str, Any], *, processed: bool, wanted: bool) -> None:
    """What a backend's clientStatus says, for the parts no process section gave."""
    if processed:
        _rows(reg, cs, _PROCESSED)
    if wanted:
        _rows(reg, {"wanted": cs.get("pendingDownload")}, _NET_GAUGES)


def _processes(reg: Registry, children: Iterable[Mapping[str, Any]]) -> None:
    for c in children:
        name = str(c.get("name", ""))
        if not name:
            continue
        reg.gauge("bmnode_process_up", "Whether the node's child process is running (supervisor view).",
                  1 if c.get("state") == "running" else 0, process=name)
        restarts = _num(c.get("restarts"))
        if restarts is not None:
            reg.counter("bmnode_process_restarts_total", "Restarts of the node's child process by the supervisor.",
                        restarts, process=name)


def node_metrics(sections: Mapping[str, Any], errors: Mapping[str, str], *, version: str,
                 parts: Iterable[str] = (), duration: float | None = None) -> str:
    """The exposition text of a node from what its parts answered.

    ``sections``: ``connections`` (list of ``{inbound, established}``), ``net`` (net process
    counters), ``mailbox`` (the mailbox process's ``node_status``), ``pow`` (the PoW broker's
    overview: workers, queued, running, stats), ``processes`` (the
    supervisor's children), ``client_status`` (a backend's clientStatus dict, used for what
    no process section gives). ``errors``: part name -> reason, for the parts that did not
    answer; every name of ``parts`` not in ``errors`` is reported as answered."""
    reg = Registry()
    reg.gauge("bmnode_up", "1 while the node's API answers.", 1)
    reg.gauge("bmnode_build_info", "The node's software version (always 1).", 1, version=version)
    for part in sorted(set(parts) | set(errors)):
        reg.gauge("bmnode_scrape_error", "1 when a part of the node did not answer this scrape (its metrics are left out).",
                  1 if part in errors else 0, part=part)
    if duration is not None:
        reg.gauge("bmnode_scrape_duration_seconds", "Time taken to gather these metrics.", round(duration, 6))
    if "connections" in sections:
        _connections(reg, sections["connections"])
    if "net" in sections:
        _net(reg, sections["net"])
    if "mailbox" in sections:
        _mailbox(reg, sections["mailbox"])
    if "pow" in sections:
        _pow(reg, sections["pow"])
    if "client_status" in sections:
        _client_status(reg, sections["client_status"], processed="mailbox" not in sections,
                       wanted="net" not in sections)
    if "processes" in sections:
        _processes(reg, sections["processes"])
    return reg.render()
