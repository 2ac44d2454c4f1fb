"""Opening bmnode's SQLite files: WAL mode, a schema-version table per file, forward migrations.

Every database file holds one ``schema_info`` row naming what the file is (``inventory``,
``knownnodes``) and its schema version. Opening applies the missing migrations in order, each
in its own transaction. A file that is not SQLite, is damaged, belongs to something else or
was written by a newer bmnode raises :class:`StoreError` naming the file and what to do; the
file itself is never deleted or rewritten.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from bmnode.errors import StoreError

__all__ = ["Migration", "open_database", "store_error", "transaction", "guarded"]

#: One migration: the statements that take a file from version ``i`` to ``i + 1``.
Migration = Sequence[str]

SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_MS = 5000


def _advice(path: Path) -> str:
    return (
        f"stop the node, move {path} aside (the node then starts with a new empty file) "
        "or restore it from a backup; bmnode never deletes it"
    )


def store_error(path: Path, what: str, exc: BaseException | None = None) -> StoreError:
    """A StoreError for ``path`` with the SQLite reason (if any) and the operator's next step."""
    reason = f": {exc}" if exc is not None else ""
    return StoreError(f"{what} {path}{reason}; {_advice(path)}")


@contextmanager
def guarded(path: Path, action: str) -> Iterator[None]:
    """Turn any sqlite3 error raised inside into a StoreError that says which file and action."""
    try:
        yield
    except sqlite3.DatabaseError as exc:  # includes OperationalError, IntegrityError, ...
        raise store_error(path, f"database error while {action} in", exc) from exc


@contextmanager
def transaction(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT on an autocommit connection, ROLLBACK on any exception."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
    except BaseException:
        if con.in_transaction:
            con.rollback()
        raise
    con.execute("COMMIT")


def _check_file(path: Path, kind: str) -> None:
    if path.exists() and not path.is_file():
        raise StoreError(f"the {kind} database {path} is not a regular file; remove or rename what is there")
    if path.is_file():
        try:
            with path.open("rb") as f:
                head = f.read(len(SQLITE_MAGIC))
        except OSError as exc:
            raise StoreError(f"cannot read the {kind} database {path}: {exc.strerror}; check its permissions") from exc
        if head and head != SQLITE_MAGIC[: len(head)]:
            raise store_error(path, f"the {kind} database is not an SQLite file (corrupt or replaced):")
        if 0 < len(head) < len(SQLITE_MAGIC):
            raise store_error(path, f"the {kind} database is truncated:")


def _version(con: sqlite3.Connection, path: Path, kind: str) -> int:
    tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "schema_info" not in tables:
        if tables:
            raise StoreError(
                f"{path} is an SQLite database but not a bmnode {kind} database (tables: "
                f"{', '.join(sorted(tables))}); point bmnode at another data directory or move the file aside"
            )
        return 0
    rows = con.execute("SELECT name, version FROM schema_info").fetchall()
    if len(rows) != 1 or rows[0][0] != kind:
        found = ", ".join(str(r[0]) for r in rows) or "nothing"
        raise StoreError(f"{path} is a bmnode database of kind {found}, not {kind}; move the file aside")
    version = rows[0][1]
    if not isinstance(version, int) or version < 1:
        raise store_error(path, f"the {kind} database has a damaged schema_info row ({version!r}) in")
    return version


def _migrate(con: sqlite3.Connection, kind: str, current: int, migrations: Sequence[Migration]) -> None:
    for version in range(current, len(migrations)):
        with transaction(con):
            if version == 0:
                con.execute("CREATE TABLE schema_info (name TEXT PRIMARY KEY, version INTEGER NOT NULL)")
                con.execute("INSERT INTO schema_info (name, version) VALUES (?, 0)", (kind,))
            for statement in migrations[version]:
                con.execute(statement)
            con.execute("UPDATE schema_info SET version = ? WHERE name = ?", (version + 1, kind))


def open_database(
    path: str | Path, kind: str, migrations: Sequence[Migration], *, check_same_thread: bool = True
) -> sqlite3.Connection:
    """Open (creating if absent) the ``kind`` database at ``path`` in WAL mode with
    ``synchronous=NORMAL``, migrated to ``len(migrations)``. Autocommit connection: callers
    group writes with :func:`transaction`. ``check_same_thread=False`` lets a caller that
    serialises access itself (a lock) use the connection from several threads."""
    path = Path(path)
    _check_file(path, kind)
    try:
        con = sqlite3.connect(
            str(path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=check_same_thread
        )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the {kind} database {path}: {exc}; check that the directory exists and is writable") from exc
    try:
        mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"cannot put the {kind} database {path} in WAL mode (got {mode!r}); is the file system writable?")
        con.execute("PRAGMA synchronous=NORMAL")
        current = _version(con, path, kind)
        if current > len(migrations):
            raise StoreError(
                f"the {kind} database {path} has schema version {current}, newer than this bmnode "
                f"understands ({len(migrations)}); upgrade bmnode or use another data directory"
            )
        _migrate(con, kind, current, migrations)
    except StoreError:
        con.close()
        raise
    except sqlite3.DatabaseError as exc:
        con.close()
        raise store_error(path, f"the {kind} database is corrupt or unreadable:", exc) from exc
    return con
