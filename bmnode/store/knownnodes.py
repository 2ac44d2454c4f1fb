"""Known nodes per stream (spec 4.9, 5.2, 6.1, 6.2, 12.1-12.3), persisted in SQLite.

Each stream maps ``(host, port)`` to ``lastseen``, ``rating`` (-1 ... 1, starts at 0) and a
``self`` flag. The whole list (at most 20000 entries per stream) is kept in memory and every
change is written through to ``knownnodes.sqlite`` in one transaction per call. The addr
filter of 5.2 and the outbound network group are pure functions the net layer calls.
"""

from __future__ import annotations

import ipaddress
import random
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Collection, Iterable

from bmnode.errors import MalformedMessage
from bmnode.protocol.constants import (
    ADDR_FRESHNESS,
    KNOWN_NODE_MAX_AGE,
    KNOWN_NODES_MAX_PER_STREAM,
    MAX_STREAM,
    NODE_NETWORK,
)
from bmnode.protocol.hosts import NetAddr, decode_host, encode_host, encode_onion, is_public, network_group
from bmnode.store.schema import guarded, open_database, transaction

__all__ = [
    "KNOWNNODES_FILE",
    "KnownNode",
    "KnownNodes",
    "accept_probability",
    "dial_group",
    "filter_addr",
    "is_onion",
    "normalise_host",
]

KNOWNNODES_FILE = "knownnodes.sqlite"
RATING_STEP = 0.1
MIN_RATING = -1.0
MAX_RATING = 1.0
#: Entries at or below this rating are forgotten once not seen for 3 hours (12.2).
FORGET_RATING = -0.5
#: addr after the handshake (6.2): this many from each announced stream, half from each child.
ADDR_SEND_PER_STREAM = 500
ADDR_SEND_PER_CHILD = 250
#: Random draws per outbound choice (4.9).
DIAL_DRAWS = 50
#: addr after the handshake: only hosts whose text form is at most this long (the reference's
#: ``len(host) <= 22`` in tcp.py sendAddr): IPv4, v2 onions and short IPv6 literals go out;
#: v3 onions (which do not fit the 16-byte host field) and long IPv6 literals do not.
ADDR_SEND_MAX_HOST_TEXT = 22
#: Bytes that mark the reference's leftover "bootstrap" pseudo-hosts in addr (5.2).
_BOOTSTRAP_MARK = b"bootstrap"

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE nodes (
               stream INTEGER NOT NULL,
               host TEXT NOT NULL,
               port INTEGER NOT NULL,
               lastseen INTEGER NOT NULL,
               rating REAL NOT NULL DEFAULT 0,
               self INTEGER NOT NULL DEFAULT 0,
               PRIMARY KEY (stream, host, port)
           ) WITHOUT ROWID""",
    ],
]

_UPSERT = (
    "INSERT INTO nodes (stream, host, port, lastseen, rating, self) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (stream, host, port) DO UPDATE SET "
    "lastseen = excluded.lastseen, rating = excluded.rating, self = excluded.self"
)
_DELETE = "DELETE FROM nodes WHERE stream = ? AND host = ? AND port = ?"

Peer = tuple[str, int]


@dataclass(slots=True)
class KnownNode:
    """One known node of one stream."""

    host: str
    port: int
    lastseen: int
    rating: float = 0.0
    is_self: bool = False


# ------------------------------------------------------------------------------ pure rules


def normalise_host(host: str) -> str:
    """Canonical text of an IP literal (IPv4 dotted, IPv6 compressed, brackets dropped) or an
    onion name (lower-case, v2 or v3); anything else raises MalformedMessage."""
    if not isinstance(host, str):
        raise MalformedMessage(f"host must be text, not {type(host).__name__}")
    if host.lower().endswith(".onion"):
        encode_onion(host)  # validates
        return host.lower()
    try:
        if "%" in host:  # a scoped IPv6 address means nothing to another node
            raise ValueError(host)
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise MalformedMessage(f"not an IP address or onion name: {host!r}") from None
    return decode_host(encode_host(host))


def is_onion(host: str) -> bool:
    """Whether ``host`` is a ``.onion`` name (reachable only through a SOCKS proxy)."""
    return host.lower().endswith(".onion")


def _check_port(port: int) -> int:
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port <= 0xFFFF:
        raise MalformedMessage(f"port must be 1..65535, got {port!r}")
    return port


def _check_stream(stream: int) -> int:
    if not isinstance(stream, int) or isinstance(stream, bool) or not 1 <= stream <= MAX_STREAM:
        raise MalformedMessage(f"stream must be 1..{MAX_STREAM}, got {stream!r}")
    return stream


def filter_addr(
    entries: Iterable[NetAddr], streams: Collection[int], now: float, *, allow_private: bool = False
) -> list[NetAddr]:
    """The entries of a received ``addr`` worth remembering (5.2): stream joined, not a
    "bootstrap" pseudo-host, public host (private ones too with ``allow_private``, for test
    networks), ``now - 10800 < time < now`` and ``port > 0``. Pass ``now`` as ``time.time()``
    (a float, as the reference does): with a whole-second ``now`` an entry stamped this very
    second is skipped."""
    kept = []
    for e in entries:
        if e.stream not in streams:
            continue
        if e.host_bytes.startswith(_BOOTSTRAP_MARK):
            continue
        if not allow_private and not is_public(e.host):
            continue
        if not (now - ADDR_FRESHNESS < e.time < now) or e.port <= 0:
            continue
        kept.append(e)
    return kept


def dial_group(host: str, port: int, *, allow_private: bool = False) -> str:
    """Outbound diversity key (4.9): the network group of ``host``. With ``allow_private``
    (test networks on 127.0.0.1) a private host is its own group per port, so several
    loopback peers can be dialled at once."""
    if allow_private and not is_public(host):
        return f"private:{host}:{port}"
    return network_group(host)


def accept_probability(rating: float) -> float:
    """Chance that a drawn known node is dialled (4.9): 0.05 / (1 - rating), 1 at rating 1."""
    if rating >= MAX_RATING:
        return 1.0
    return min(1.0, 0.05 / (1.0 - rating))


def _clamp_rating(value: float) -> float:
    # Rounded so that repeated +-0.1 steps land exactly on tenths (-0.5 compares as -0.5).
    return round(min(MAX_RATING, max(MIN_RATING, value)), 6)


# ------------------------------------------------------------------------------ the store


class KnownNodes:
    """Persisted known nodes per stream. ``path`` is the database file, or a directory in
    which ``knownnodes.sqlite`` is used. Corrupt files raise :class:`~bmnode.errors.StoreError`."""

    def __init__(self, path: str | Path, *, max_per_stream: int = KNOWN_NODES_MAX_PER_STREAM) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / KNOWNNODES_FILE
        self.path = path
        self.max_per_stream = int(max_per_stream)
        self._con: sqlite3.Connection | None = open_database(path, "knownnodes", MIGRATIONS)
        self._streams: dict[int, dict[Peer, KnownNode]] = {}
        with guarded(path, "loading known nodes"):
            rows = self._db.execute("SELECT stream, host, port, lastseen, rating, self FROM nodes").fetchall()
        for stream, host, port, lastseen, rating, is_self in rows:
            self._streams.setdefault(stream, {})[(host, port)] = KnownNode(
                host, port, int(lastseen), float(rating), bool(is_self)
            )

    @property
    def _db(self) -> sqlite3.Connection:
        if self._con is None:
            raise ValueError("the known-nodes store is closed")
        return self._con

    def _write(self, upserts: list[tuple[int, KnownNode]], deletes: list[tuple[int, Peer]] = ()) -> None:
        if not upserts and not deletes:
            return
        with guarded(self.path, "writing known nodes"):
            with transaction(self._db) as con:
                if upserts:
                    con.executemany(
                        _UPSERT,
                        [(s, n.host, n.port, n.lastseen, n.rating, int(n.is_self)) for s, n in upserts],
                    )
                if deletes:
                    con.executemany(_DELETE, [(s, h, p) for s, (h, p) in deletes])

    # -------------------------------------------------------------- adding and rating

    def _add(self, stream: int, host: str, port: int, lastseen: int, is_self: bool) -> tuple[bool, KnownNode | None]:
        """(added?, node to write or None)."""
        nodes = self._streams.setdefault(stream, {})
        key = (host, port)
        node = nodes.get(key)
        if node is not None:
            changed = False
            if lastseen > node.lastseen:
                node.lastseen = lastseen
                changed = True
            if is_self and not node.is_self:
                node.is_self = True
                changed = True
            return False, node if changed else None
        if not is_self and len(nodes) >= self.max_per_stream:
            return False, None
        node = KnownNode(host, port, lastseen, 0.0, is_self)
        nodes[key] = node
        return True, node

    def add(self, stream: int, host: str, port: int, lastseen: int, *, is_self: bool = False) -> bool:
        """Remember a node (12.1): True if it was new. A known node only gets a newer
        ``lastseen``; a full stream (20000) takes no new entries except our own (``is_self``)."""
        stream, port = _check_stream(stream), _check_port(port)
        added, node = self._add(stream, normalise_host(host), port, int(lastseen), is_self)
        if node is not None:
            self._write([(stream, node)])
        return added

    def add_addrs(self, entries: Iterable[NetAddr]) -> int:
        """Remember entries already passed through :func:`filter_addr`, in one transaction;
        returns how many were new."""
        new = 0
        writes: dict[tuple[int, Peer], KnownNode] = {}
        for e in entries:
            stream = _check_stream(e.stream)
            added, node = self._add(stream, normalise_host(e.host), _check_port(e.port), int(e.time), False)
            new += added
            if node is not None:
                writes[(stream, (node.host, node.port))] = node
        self._write([(s, n) for (s, _), n in writes.items()])
        return new

    def _rate(self, host: str, port: int, delta: float) -> None:
        key = (normalise_host(host), port)
        writes = []
        for stream, nodes in self._streams.items():
            node = nodes.get(key)
            if node is not None:
                rating = _clamp_rating(node.rating + delta)
                if rating != node.rating:
                    node.rating = rating
                    writes.append((stream, node))
        self._write(writes)

    def increase_rating(self, host: str, port: int) -> None:
        """+0.1 (max 1) in every stream: a connection to the node became fully established (12.2)."""
        self._rate(host, port, RATING_STEP)

    def decrease_rating(self, host: str, port: int) -> None:
        """-0.1 (min -1) in every stream: a connection closed before it was established (12.2)."""
        self._rate(host, port, -RATING_STEP)

    def remove(self, stream: int, host: str, port: int) -> bool:
        """Forget one entry; True if it was there."""
        key = (normalise_host(host), port)
        nodes = self._streams.get(stream, {})
        if nodes.pop(key, None) is None:
            return False
        self._write([], [(stream, key)])
        return True

    # -------------------------------------------------------------- reading

    def get(self, stream: int, host: str, port: int) -> KnownNode | None:
        """A copy of the entry, or None."""
        node = self._streams.get(stream, {}).get((normalise_host(host), port))
        return None if node is None else replace(node)

    def nodes(self, stream: int) -> list[KnownNode]:
        """Copies of every entry of ``stream``."""
        return [replace(n) for n in self._streams.get(stream, {}).values()]

    def streams(self) -> list[int]:
        """Streams with at least one entry."""
        return sorted(s for s, nodes in self._streams.items() if nodes)

    def count(self, stream: int | None = None) -> int:
        if stream is None:
            return sum(len(n) for n in self._streams.values())
        return len(self._streams.get(stream, {}))

    def __len__(self) -> int:
        return self.count()

    # -------------------------------------------------------------- maintenance

    def cleanup(self, now: int, streams: Iterable[int] | None = None) -> int:
        """Periodic clean-up (12.2) of ``streams`` (default: all): forget entries not seen for
        more than 28 days, and those not seen for more than 3 hours with rating <= -0.5; at
        least one entry (the most recently seen) stays in each stream. Returns how many went."""
        deletes: list[tuple[int, Peer]] = []
        for stream in list(self._streams) if streams is None else streams:
            nodes = self._streams.get(stream)
            if not nodes:
                continue
            doomed = [
                key
                for key, n in nodes.items()
                if now - n.lastseen > KNOWN_NODE_MAX_AGE
                or (now - n.lastseen > ADDR_FRESHNESS and n.rating <= FORGET_RATING)
            ]
            if len(doomed) == len(nodes):
                keep = max(doomed, key=lambda k: (nodes[k].lastseen, nodes[k].rating))
                doomed.remove(keep)
            for key in doomed:
                del nodes[key]
                deletes.append((stream, key))
        self._write([], deletes)
        return len(deletes)

    def seed_defaults(self, now: int, nodes: Iterable[Peer] | None = None, stream: int | None = None) -> int:
        """Insert the built-in default nodes (12.3; ``nodes`` replaces the list) with
        lastseen = now - 28 days + 10 min, only into a stream holding nothing but our own
        (``self``) entries. Call it only when bootstrapping is enabled; returns how many were
        inserted."""
        from bmnode.net.bootstrap import DEFAULT_NODE_AGE, DEFAULT_NODES, DEFAULT_NODES_STREAM

        nodes = DEFAULT_NODES if nodes is None else nodes
        stream = DEFAULT_NODES_STREAM if stream is None else stream
        if any(not n.is_self for n in self._streams.get(stream, {}).values()):
            return 0
        lastseen = int(now) - DEFAULT_NODE_AGE
        writes = []
        for host, port in nodes:
            added, node = self._add(_check_stream(stream), normalise_host(host), _check_port(port), lastseen, False)
            if added and node is not None:
                writes.append((stream, node))
        self._write(writes)
        return len(writes)

    def only_defaults(self, defaults: Iterable[Peer] | None = None) -> bool:
        """True when nothing but built-in default nodes (or ``defaults``) and our own entries
        (``self``) are known: the one-off bootstrap connection of 12.3 is then due."""
        from bmnode.net.bootstrap import DEFAULT_NODES

        defaults = DEFAULT_NODES if defaults is None else defaults
        allowed = {(normalise_host(h), p) for h, p in defaults}
        return all(key in allowed or n.is_self for nodes in self._streams.values() for key, n in nodes.items())

    # -------------------------------------------------------------- gossip and dialing

    def for_addr(self, streams: int | Iterable[int], now: int, *, rng: random.Random | None = None) -> list[NetAddr]:
        """The ``addr`` entries to send once after the handshake (6.2): for each stream the
        peer announced, up to 500 random entries of it and up to 250 of each child stream
        (2s, 2s+1); only nodes seen within 3 hours (lastseen > now - 10800), rating >= 0 and
        a host text of at most 22 characters (the reference's rule: v2 onions are sent, v3
        onions and long IPv6 literals are not). A stream gets 500 if the peer announced it,
        else 250; none repeats."""
        rng = rng or random
        wanted: dict[int, int] = {}
        for s in [streams] if isinstance(streams, int) else streams:
            wanted[s] = ADDR_SEND_PER_STREAM
            for child in (2 * s, 2 * s + 1):
                wanted[child] = max(wanted.get(child, 0), ADDR_SEND_PER_CHILD)
        out: list[NetAddr] = []
        for stream, limit in wanted.items():
            nodes = self._streams.get(stream)
            if not nodes or not 1 <= stream <= 0xFFFFFFFF:  # net_addr carries a uint32 stream
                continue
            fresh = [
                n
                for n in nodes.values()
                if n.lastseen > now - ADDR_FRESHNESS and n.rating >= 0 and len(n.host) <= ADDR_SEND_MAX_HOST_TEXT
            ]
            for n in rng.sample(fresh, min(limit, len(fresh))):
                out.append(NetAddr(time=n.lastseen, stream=stream, services=NODE_NETWORK, host=n.host, port=n.port))
        return out

    def candidates(
        self,
        stream: int,
        now: int,
        exclude: Collection[Peer | str] = (),
        *,
        exclude_groups: Collection[str] = (),
        allow_private: bool = False,
        proxied: bool = False,
        onion_only: bool = False,
        limit: int = 1,
        draws: int = DIAL_DRAWS,
        rng: random.Random | None = None,
    ) -> list[Peer]:
        """Up to ``limit`` peers of ``stream`` to dial (4.9): ``draws`` random entries, each
        accepted with probability 0.05 / (1 - rating); skipped: our own (``self``) entries,
        entries older than 28 days, anything in ``exclude`` (connected or own (host, port)
        pairs; a bare host excludes every port of it), and any peer whose :func:`dial_group`
        is in ``exclude_groups`` (those of the current outbound connections) or equals that of
        a peer already chosen. Onion peers are drawn only when ``proxied`` (a SOCKS proxy is
        set), and then one with a positive rating is always accepted (the reference's priority);
        ``onion_only`` draws nothing else."""
        rng = rng or random
        nodes = self._streams.get(stream)
        if not nodes or limit < 1:
            return []
        keys = list(nodes)
        groups = set(exclude_groups)
        chosen: list[Peer] = []
        for _ in range(draws):
            key = keys[rng.randrange(len(keys))]
            node = nodes[key]
            if node.is_self or now - node.lastseen > KNOWN_NODE_MAX_AGE:
                continue
            if key in exclude or key[0] in exclude or key in chosen:
                continue
            rating = node.rating
            if onion_only and not is_onion(key[0]):
                continue
            if is_onion(key[0]):
                if not proxied:
                    continue
                if rating > 0:
                    rating = MAX_RATING
            if rng.random() >= accept_probability(rating):
                continue
            group = dial_group(key[0], key[1], allow_private=allow_private)
            if group in groups:
                continue
            groups.add(group)
            chosen.append(key)
            if len(chosen) >= limit:
                break
        return chosen

    # -------------------------------------------------------------- lifetime

    def close(self) -> None:
        """Close the database (idempotent); every change is already written."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> "KnownNodes":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
