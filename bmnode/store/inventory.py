"""The object inventory (spec 5.3-5.6, 7.2 step 6 and 10, 7.3 keep-after-expiry, 11): SQLite in WAL mode.

Object bytes live only in SQLite (``inventory.sqlite`` in the data directory). What stays in
memory is a compact membership index (about 8 bytes per stored object, see
:class:`HashIndex`) and a bounded write batch: :meth:`Inventory.add` queues a row and the
net layer calls :meth:`Inventory.flush` once per event-loop tick, so a whole batch costs one
transaction. Objects are kept until 3 hours after their expiresTime (:meth:`cleanup`);
expired objects are never listed for the big ``inv``.

One connection, used from one thread (the net process's event loop).
"""

from __future__ import annotations

import sqlite3
import sys
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Collection, Iterable, Iterator

from bmnode.errors import InvalidObject
from bmnode.protocol.constants import INV_HASH_SIZE, INVENTORY_KEEP_AFTER_EXPIRY, MAX_INV_ENTRIES_SENT
from bmnode.protocol.hashing import inventory_hash
from bmnode.protocol.objects import TAGGED, ObjectHeader
from bmnode.store.schema import guarded, open_database, store_error, transaction

__all__ = ["HashIndex", "Inventory", "InventoryItem", "INVENTORY_FILE"]

INVENTORY_FILE = "inventory.sqlite"
TAG_SIZE = 32
_PREFIX = 8
_SQL_INT_MAX = (1 << 63) - 1
if array("Q").itemsize != _PREFIX:  # pragma: no cover - every supported platform has 8-byte "Q"
    raise ImportError("bmnode.store.inventory needs array('Q') items of 8 bytes")

#: Forward migrations of inventory.sqlite: list index i takes the file from version i to i+1.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE objects (
               id INTEGER PRIMARY KEY,
               hash BLOB NOT NULL UNIQUE,
               object_type INTEGER NOT NULL,
               stream INTEGER NOT NULL,
               expires INTEGER NOT NULL,
               tag BLOB,
               data BLOB NOT NULL
           )""",
        # The big inv (per stream, unexpired, paged by (expires, hash)) and clean-up by stream.
        "CREATE INDEX objects_stream_expires ON objects (stream, expires, hash)",
        "CREATE INDEX objects_tag ON objects (tag) WHERE tag IS NOT NULL",
    ],
]

_INSERT = "INSERT OR IGNORE INTO objects (hash, object_type, stream, expires, tag, data) VALUES (?, ?, ?, ?, ?, ?)"


@dataclass(frozen=True)
class InventoryItem:
    """What the inventory knows about a stored object, without its bytes."""

    hash: bytes
    object_type: int
    stream: int
    expires_time: int
    tag: bytes | None


class HashIndex:
    """Set of 32-byte inventory hashes in about 8 bytes each.

    Older hashes are kept as a sorted ``array('Q')`` of their first 8 bytes (binary search);
    hashes added since the last merge sit in a small set of full hashes (the ones peers keep
    re-announcing, answered at set speed). ``in`` is therefore exact for recent hashes and
    matches older ones on a 64-bit prefix: a false "have it" needs a 2^-64 coincidence (about
    1e-14 per lookup with 100,000 objects). :class:`Inventory` confirms in SQLite where
    exactness matters (``add``); ``get`` is always exact.
    """

    MIN_RECENT = 16384

    def __init__(self) -> None:
        self._base = array("Q")
        self._recent: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._base) + len(self._recent)

    def __contains__(self, h: bytes) -> bool:
        if h in self._recent:
            return True
        if len(h) != INV_HASH_SIZE:
            return False
        p = int.from_bytes(h[:_PREFIX], "big")
        base = self._base
        i = bisect_left(base, p)
        return i < len(base) and base[i] == p

    def in_recent(self, h: bytes) -> bool:
        """Exact membership among the hashes added since the last merge."""
        return h in self._recent

    def add(self, h: bytes) -> None:
        self._recent.add(h)

    def maybe_merge(self) -> None:
        """Fold the recent set into the sorted array once it outgrows max(16384, base/8)."""
        if len(self._recent) > max(self.MIN_RECENT, len(self._base) >> 3):
            self.merge()

    def merge(self) -> None:
        if not self._recent:
            return
        new = sorted(int.from_bytes(h[:_PREFIX], "big") for h in self._recent)
        # Two sorted runs: timsort merges them in linear time.
        self._base = array("Q", sorted(chain(self._base, new)))
        self._recent = set()

    def rebuild(self, prefixes_be: bytes) -> None:
        """Replace everything with the given concatenated big-endian 8-byte prefixes."""
        base = array("Q")
        base.frombytes(prefixes_be)
        if sys.byteorder == "little":
            base.byteswap()
        self._base = array("Q", sorted(base))
        self._recent = set()


def _tag_of(obj: bytes, header: ObjectHeader) -> bytes | None:
    """The object's tag (7.1) for the tagged (type, version) pairs, else None."""
    if (header.object_type, header.version) in TAGGED and len(obj) >= header.header_length + TAG_SIZE:
        return bytes(obj[header.header_length : header.header_length + TAG_SIZE])
    return None


class Inventory:
    """Stored objects by inventory hash, with batched writes (call :meth:`flush` once per tick).

    ``path`` is the database file, or a directory in which ``inventory.sqlite`` is used.
    Corrupt or unreadable files raise :class:`~bmnode.errors.StoreError`.
    """

    def __init__(self, path: str | Path, *, max_pending: int = 2000, max_pending_bytes: int = 8 << 20) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / INVENTORY_FILE
        self.path = path
        self.max_pending = max(1, int(max_pending))
        self.max_pending_bytes = max(1, int(max_pending_bytes))
        self._pending: dict[bytes, tuple[bytes, int, int, int, bytes | None, bytes]] = {}
        self._pending_bytes = 0
        self._index = HashIndex()
        self._con: sqlite3.Connection | None = open_database(path, "inventory", MIGRATIONS)
        self._count = 0
        try:
            self._load_index()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ internals

    @property
    def _db(self) -> sqlite3.Connection:
        if self._con is None:
            raise ValueError("the inventory is closed")
        return self._con

    def _load_index(self) -> None:
        with guarded(self.path, "reading the inventory index"):
            rows = self._db.execute("SELECT substr(hash, 1, 8) FROM objects ORDER BY hash")
            prefixes = b"".join(row[0] for row in rows)
        if len(prefixes) % _PREFIX:
            raise store_error(self.path, "the inventory database holds damaged hashes:")
        self._index.rebuild(prefixes)
        self._count = len(prefixes) // _PREFIX

    def _stored(self, h: bytes) -> bool:
        with guarded(self.path, "looking up an object"):
            return self._db.execute("SELECT 1 FROM objects WHERE hash = ?", (h,)).fetchone() is not None

    # ------------------------------------------------------------------ writing

    def add(self, obj: bytes, header: ObjectHeader, now: int, *, inv_hash: bytes | None = None) -> bool:
        """Queue a validated object (``header`` from ``check_relay``); True if it is new.

        Not stored (False) when already present or already past the clean-up horizon
        (expiresTime < now - 10800). ``inv_hash`` saves recomputing dSHA512 when known.
        Flushes first when the batch is full, so memory stays bounded.
        """
        if self._con is None:
            raise ValueError("the inventory is closed")
        obj = bytes(obj)
        h = inventory_hash(obj) if inv_hash is None else bytes(inv_hash)
        if len(h) != INV_HASH_SIZE:
            raise InvalidObject(f"inventory hash must be {INV_HASH_SIZE} bytes, got {len(h)}")
        expires, stream = header.expires_time, header.stream
        if not 0 <= expires <= _SQL_INT_MAX or not 0 <= stream <= _SQL_INT_MAX:
            raise InvalidObject(f"expiresTime {expires} / stream {stream} out of range for the inventory")
        if expires < now - INVENTORY_KEEP_AFTER_EXPIRY:
            return False
        if h in self._index and (self._index.in_recent(h) or self._stored(h)):
            return False
        if len(self._pending) >= self.max_pending or self._pending_bytes >= self.max_pending_bytes:
            self.flush()
        self._pending[h] = (h, header.object_type, stream, expires, _tag_of(obj, header), obj)
        self._pending_bytes += len(obj)
        self._index.add(h)
        self._count += 1
        return True

    def add_many(self, items: Iterable[tuple[bytes, ObjectHeader]], now: int) -> list[bytes]:
        """Add several validated objects and flush; returns the hashes of those that were new."""
        new = []
        for obj, header in items:
            h = inventory_hash(obj)
            if self.add(obj, header, now, inv_hash=h):
                new.append(h)
        self.flush()
        return new

    @property
    def pending(self) -> int:
        """Objects queued and not yet written."""
        return len(self._pending)

    def flush(self) -> int:
        """Write the queued objects in one transaction; returns how many were written."""
        if not self._pending:
            return 0
        rows = list(self._pending.values())
        with guarded(self.path, "writing objects"):
            with transaction(self._db) as con:
                con.executemany(_INSERT, rows)
        self._pending.clear()
        self._pending_bytes = 0
        self._index.maybe_merge()
        return len(rows)

    def cleanup(self, now: int) -> int:
        """Delete objects with expiresTime < now - 10800 (7.2: kept 3 h after expiry); returns how many."""
        self.flush()
        cutoff = int(now) - INVENTORY_KEEP_AFTER_EXPIRY
        deleted = 0
        with guarded(self.path, "deleting expired objects"):
            streams = [row[0] for row in self._db.execute("SELECT DISTINCT stream FROM objects")]
            with transaction(self._db) as con:
                for stream in streams:
                    cur = con.execute("DELETE FROM objects WHERE stream = ? AND expires < ?", (stream, cutoff))
                    deleted += cur.rowcount
        if deleted:
            self._load_index()
        return deleted

    # ------------------------------------------------------------------ reading

    def has(self, h: bytes) -> bool:
        """Whether the object is stored or queued (see :class:`HashIndex` for the exactness)."""
        return h in self._index

    __contains__ = has

    def get(self, h: bytes) -> bytes | None:
        """The whole object (nonce included), or None."""
        h = bytes(h)
        row = self._pending.get(h)
        if row is not None:
            return row[5]
        if h not in self._index:
            return None
        with guarded(self.path, "reading an object"):
            found = self._db.execute("SELECT data FROM objects WHERE hash = ?", (h,)).fetchone()
        return None if found is None else bytes(found[0])

    def info(self, h: bytes) -> InventoryItem | None:
        """Type, stream, expiry and tag of a stored object, without reading its bytes."""
        h = bytes(h)
        row = self._pending.get(h)
        if row is not None:
            return InventoryItem(h, row[1], row[2], row[3], row[4])
        if h not in self._index:
            return None
        with guarded(self.path, "reading an object"):
            found = self._db.execute(
                "SELECT object_type, stream, expires, tag FROM objects WHERE hash = ?", (h,)
            ).fetchone()
        if found is None:
            return None
        return InventoryItem(h, found[0], found[1], found[2], None if found[3] is None else bytes(found[3]))

    def unexpired_hashes(self, stream: int, now: int, exclude: Collection[bytes] = ()) -> list[bytes]:
        """Hashes of stream ``stream`` with expiresTime > now, minus ``exclude`` (the stem set):
        the big ``inv`` of 4.7. Prefer :meth:`iter_unexpired` for bounded memory."""
        out: list[bytes] = []
        for chunk in self.iter_unexpired(stream, now, exclude, chunk_size=MAX_INV_ENTRIES_SENT):
            out.extend(chunk)
        return out

    def iter_unexpired(
        self, stream: int, now: int, exclude: Collection[bytes] = (), *, chunk_size: int = MAX_INV_ENTRIES_SENT
    ) -> Iterator[list[bytes]]:
        """The same hashes in lists of at most ``chunk_size`` (one ``inv`` each); each chunk is
        its own query, so writes may happen between chunks. Never yields an empty list."""
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.flush()
        if not 0 <= stream <= _SQL_INT_MAX:
            return
        last_expires, last_hash = int(now), None
        while True:
            with guarded(self.path, "listing unexpired objects"):
                if last_hash is None:
                    rows = self._db.execute(
                        "SELECT expires, hash FROM objects WHERE stream = ? AND expires > ? "
                        "ORDER BY expires, hash LIMIT ?",
                        (stream, last_expires, chunk_size),
                    ).fetchall()
                else:
                    rows = self._db.execute(
                        "SELECT expires, hash FROM objects WHERE stream = ? AND (expires, hash) > (?, ?) "
                        "ORDER BY expires, hash LIMIT ?",
                        (stream, last_expires, last_hash, chunk_size),
                    ).fetchall()
            if not rows:
                return
            last_expires, last_hash = rows[-1]
            chunk = [bytes(r[1]) for r in rows if r[1] not in exclude] if exclude else [bytes(r[1]) for r in rows]
            if chunk:
                yield chunk
            if len(rows) < chunk_size:
                return

    def by_tag(self, tag: bytes, object_type: int | None = None) -> list[bytes]:
        """Every stored object whose tag (first 32 payload bytes of a tagged type, 7.1) is ``tag``."""
        self.flush()
        with guarded(self.path, "looking up objects by tag"):
            if object_type is None:
                rows = self._db.execute("SELECT data FROM objects WHERE tag = ?", (bytes(tag),)).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT data FROM objects WHERE tag = ? AND object_type = ?", (bytes(tag), object_type)
                ).fetchall()
        return [bytes(r[0]) for r in rows]

    def count(self) -> int:
        """Number of objects stored or queued."""
        return self._count

    __len__ = count

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Flush the batch and close the database (idempotent)."""
        if self._con is None:
            return
        try:
            self.flush()
        finally:
            self._con.close()
            self._con = None

    def __enter__(self) -> "Inventory":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
