"""The mailbox database (``mailbox.sqlite``): identities, contacts, inbox, sent, pubkeys, work.

What the mailbox process must not lose lives here, and every change is committed before the
mailbox reports it to anyone: own identities with their private keys, subscriptions, the
address book, black/white lists, the inbox (one row per message: ``sighash`` is unique, so a
re-delivered object is never stored twice), sent messages with their pipeline state (status
string of spec 10.7, retry count, next action time, the ack object and the finished object),
pubkeys of other addresses, addresses whose pubkey we await, the proof-of-work jobs in flight
(the object body, so a restart does not re-encrypt) and the outbox of finished objects not yet
confirmed as handed to the network.

Plain SQL and row types only; the rules are in :mod:`bmnode.mailbox.service`. One connection
used by one thread at a time (the service serialises access with a lock).
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from bmnode.errors import StoreError
from bmnode.store.schema import guarded, open_database, transaction

__all__ = [
    "AwaitingRow",
    "IdentityRow",
    "InboxRow",
    "JobRow",
    "MAILBOX_FILE",
    "MailboxStore",
    "OutboxRow",
    "PubkeyRow",
    "SentRow",
]

MAILBOX_FILE = "mailbox.sqlite"
KIND = "mailbox"

#: Forward migrations of mailbox.sqlite (index i takes the file from version i to i + 1).
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE identities (
               address TEXT PRIMARY KEY,
               version INTEGER NOT NULL,
               stream INTEGER NOT NULL,
               label TEXT NOT NULL DEFAULT '',
               enabled INTEGER NOT NULL DEFAULT 1,
               chan INTEGER NOT NULL DEFAULT 0,
               signing_key BLOB NOT NULL,
               encryption_key BLOB NOT NULL,
               ntpb INTEGER NOT NULL,
               extra INTEGER NOT NULL,
               behavior INTEGER NOT NULL,
               last_pubkey_send INTEGER NOT NULL DEFAULT 0,
               created INTEGER NOT NULL
           )""",
        "CREATE TABLE subscriptions (address TEXT PRIMARY KEY, label TEXT NOT NULL, enabled INTEGER NOT NULL)",
        "CREATE TABLE addressbook (address TEXT PRIMARY KEY, label TEXT NOT NULL)",
        """CREATE TABLE access_list (
               list TEXT NOT NULL CHECK (list IN ('black', 'white')),
               address TEXT NOT NULL,
               label TEXT NOT NULL,
               enabled INTEGER NOT NULL,
               PRIMARY KEY (list, address)
           )""",
        "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE inbox (
               msgid BLOB PRIMARY KEY,
               to_address TEXT NOT NULL,
               from_address TEXT NOT NULL,
               subject TEXT NOT NULL,
               body TEXT NOT NULL,
               encoding INTEGER NOT NULL,
               received INTEGER NOT NULL,
               read INTEGER NOT NULL DEFAULT 0,
               folder TEXT NOT NULL DEFAULT 'inbox',
               sighash BLOB NOT NULL UNIQUE
           )""",
        "CREATE INDEX inbox_folder ON inbox (folder, received)",
        "CREATE INDEX inbox_to ON inbox (to_address)",
        """CREATE TABLE sent (
               id INTEGER PRIMARY KEY AUTOINCREMENT,
               msgid BLOB NOT NULL,
               ackdata BLOB NOT NULL UNIQUE,
               kind TEXT NOT NULL CHECK (kind IN ('msg', 'broadcast')),
               to_address TEXT NOT NULL,
               from_address TEXT NOT NULL,
               subject TEXT NOT NULL,
               body TEXT NOT NULL,
               encoding INTEGER NOT NULL,
               ttl INTEGER NOT NULL,
               retry INTEGER NOT NULL DEFAULT 0,
               status TEXT NOT NULL,
               last_action INTEGER NOT NULL,
               next_action INTEGER NOT NULL DEFAULT 0,
               folder TEXT NOT NULL DEFAULT 'sent',
               attempt_ttl INTEGER NOT NULL DEFAULT 0,
               expects_ack INTEGER NOT NULL DEFAULT 0,
               ack_object BLOB,
               object BLOB,
               created INTEGER NOT NULL
           )""",
        "CREATE INDEX sent_msgid ON sent (msgid)",
        "CREATE INDEX sent_status ON sent (status, next_action)",
        "CREATE INDEX sent_folder ON sent (folder, last_action)",
        "CREATE INDEX sent_to ON sent (to_address, status)",
        """CREATE TABLE pubkeys (
               address TEXT PRIMARY KEY,
               version INTEGER NOT NULL,
               data BLOB NOT NULL,
               received INTEGER NOT NULL,
               used INTEGER NOT NULL DEFAULT 0,
               last_used INTEGER NOT NULL DEFAULT 0
           )""",
        """CREATE TABLE awaiting_pubkeys (
               address TEXT PRIMARY KEY,
               version INTEGER NOT NULL,
               stream INTEGER NOT NULL,
               ripe BLOB NOT NULL,
               tag BLOB,
               retry INTEGER NOT NULL DEFAULT 0,
               getpubkey_expires INTEGER NOT NULL DEFAULT 0,
               next_action INTEGER NOT NULL DEFAULT 0
           )""",
        """CREATE TABLE pow_jobs (
               id INTEGER PRIMARY KEY AUTOINCREMENT,
               kind TEXT NOT NULL,
               ref TEXT NOT NULL,
               body BLOB NOT NULL,
               ntpb INTEGER NOT NULL,
               extra INTEGER NOT NULL,
               created INTEGER NOT NULL
           )""",
        "CREATE INDEX pow_jobs_ref ON pow_jobs (kind, ref)",
        """CREATE TABLE outbox (
               hash BLOB PRIMARY KEY,
               kind TEXT NOT NULL,
               object BLOB NOT NULL,
               expires INTEGER NOT NULL,
               created INTEGER NOT NULL
           )""",
    ],
]


# ------------------------------------------------------------------------------ row types


@dataclass(frozen=True)
class IdentityRow:
    """An own address with both private keys (32-byte secrets)."""

    address: str
    version: int
    stream: int
    label: str
    enabled: bool
    chan: bool
    signing_key: bytes
    encryption_key: bytes
    ntpb: int
    extra: int
    behavior: int
    last_pubkey_send: int
    created: int


@dataclass(frozen=True)
class InboxRow:
    """A received message as stored (subject/body decoded text)."""

    msgid: bytes
    to_address: str
    from_address: str
    subject: str
    body: str
    encoding: int
    received: int
    read: bool
    folder: str
    sighash: bytes


@dataclass(frozen=True)
class SentRow:
    """A sent message or broadcast and where its pipeline stands."""

    id: int
    msgid: bytes
    ackdata: bytes
    kind: str
    to_address: str
    from_address: str
    subject: str
    body: str
    encoding: int
    ttl: int
    retry: int
    status: str
    last_action: int
    next_action: int
    folder: str
    attempt_ttl: int
    expects_ack: bool
    ack_object: bytes | None
    object: bytes | None
    created: int


@dataclass(frozen=True)
class PubkeyRow:
    """Another address's pubkey data (10.3) and whether we ever sent to it."""

    address: str
    version: int
    data: bytes
    received: int
    used: bool
    last_used: int


@dataclass(frozen=True)
class AwaitingRow:
    """An address whose pubkey we need; ``getpubkey_expires`` is 0 until a getpubkey is out."""

    address: str
    version: int
    stream: int
    ripe: bytes
    tag: bytes | None
    retry: int
    getpubkey_expires: int
    next_action: int


@dataclass(frozen=True)
class JobRow:
    """A proof-of-work job: the object body (no nonce) and the difficulty it needs."""

    id: int
    kind: str
    ref: str
    body: bytes
    ntpb: int
    extra: int
    created: int


@dataclass(frozen=True)
class OutboxRow:
    """A finished object not yet confirmed as handed to the network."""

    hash: bytes
    kind: str
    object: bytes
    expires: int
    created: int


def _row(cls: type, row: Sequence[Any] | None) -> Any:
    if row is None:
        return None
    values = list(row)
    for i, f in enumerate(cls.__dataclass_fields__.values()):
        if f.type in ("bool",) and values[i] is not None:
            values[i] = bool(values[i])
        elif f.type in ("bytes", "bytes | None") and values[i] is not None:
            values[i] = bytes(values[i])
    return cls(*values)


def _cols(cls: type) -> str:
    return ", ".join(cls.__dataclass_fields__)


_IDENTITY_COLS = _cols(IdentityRow)
_INBOX_COLS = _cols(InboxRow)
_SENT_COLS = _cols(SentRow)
_PUBKEY_COLS = _cols(PubkeyRow)
_AWAITING_COLS = _cols(AwaitingRow)
_JOB_COLS = _cols(JobRow)
_OUTBOX_COLS = _cols(OutboxRow)


# ------------------------------------------------------------------------------ the store


class MailboxStore:
    """``mailbox.sqlite`` in a data directory. Group related writes with :meth:`tx`; a write
    outside :meth:`tx` is committed on its own before the call returns."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            self.path = self.path / MAILBOX_FILE
        self._con = open_database(self.path, KIND, MIGRATIONS, check_same_thread=False)
        self._depth = 0

    # ---- plumbing

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._con is not None:
            self._con.close()
            self._con = None  # type: ignore[assignment]

    def __enter__(self) -> "MailboxStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def con(self) -> sqlite3.Connection:
        """The open connection (StoreError once closed)."""
        if self._con is None:
            raise StoreError(f"the mailbox database {self.path} is closed")
        return self._con

    @contextmanager
    def tx(self) -> Iterator["MailboxStore"]:
        """One transaction for everything inside (re-entrant: inner blocks join the outer)."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        with guarded(self.path, "writing"):
            self._depth = 1
            try:
                with transaction(self.con):
                    yield self
            finally:
                self._depth = 0

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        with guarded(self.path, "accessing"):
            return self.con.execute(sql, params)

    def _one(self, cls: type, sql: str, params: Sequence[Any] = ()) -> Any:
        return _row(cls, self._exec(sql, params).fetchone())

    def _all(self, cls: type, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return [_row(cls, r) for r in self._exec(sql, params).fetchall()]

    # ---- settings

    def get_setting(self, key: str, default: str | None = None) -> str | None:
        """A stored setting, or ``default``."""
        row = self._exec("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return default if row is None else str(row[0])

    def set_setting(self, key: str, value: str) -> None:
        """Store a setting."""
        self._exec("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, str(value)))

    # ---- identities

    def add_identity(self, row: IdentityRow) -> bool:
        """Insert an identity; False if the address is already present."""
        cur = self._exec(
            f"INSERT OR IGNORE INTO identities ({_IDENTITY_COLS}) VALUES ({', '.join('?' * 13)})",
            (
                row.address, row.version, row.stream, row.label, int(row.enabled), int(row.chan),
                row.signing_key, row.encryption_key, row.ntpb, row.extra, row.behavior,
                row.last_pubkey_send, row.created,
            ),
        )
        return cur.rowcount == 1

    def identity(self, address: str) -> IdentityRow | None:
        """The identity with this address, or None."""
        return self._one(IdentityRow, f"SELECT {_IDENTITY_COLS} FROM identities WHERE address = ?", (address,))

    def identities(self) -> list[IdentityRow]:
        """All identities, in creation order."""
        return self._all(IdentityRow, f"SELECT {_IDENTITY_COLS} FROM identities ORDER BY rowid")

    def set_identity_enabled(self, address: str, enabled: bool) -> bool:
        """Enable/disable an identity; False if unknown."""
        cur = self._exec("UPDATE identities SET enabled = ? WHERE address = ?", (int(enabled), address))
        return cur.rowcount == 1

    def set_identity_label(self, address: str, label: str) -> bool:
        """Relabel an identity; False if unknown."""
        cur = self._exec("UPDATE identities SET label = ? WHERE address = ?", (label, address))
        return cur.rowcount == 1

    def set_last_pubkey_send(self, address: str, when: int) -> None:
        """Remember when this address's pubkey was last published (10.2 step 7)."""
        self._exec("UPDATE identities SET last_pubkey_send = ? WHERE address = ?", (int(when), address))

    def delete_identity(self, address: str) -> bool:
        """Delete an identity and its keys; False if unknown."""
        return self._exec("DELETE FROM identities WHERE address = ?", (address,)).rowcount == 1

    # ---- subscriptions, address book, black/white lists

    def add_subscription(self, address: str, label: str, enabled: bool = True) -> bool:
        """Subscribe; False if already subscribed."""
        cur = self._exec(
            "INSERT OR IGNORE INTO subscriptions (address, label, enabled) VALUES (?, ?, ?)",
            (address, label, int(enabled)),
        )
        return cur.rowcount == 1

    def delete_subscription(self, address: str) -> bool:
        """Unsubscribe; False if not subscribed."""
        return self._exec("DELETE FROM subscriptions WHERE address = ?", (address,)).rowcount == 1

    def subscriptions(self) -> list[tuple[str, str, bool]]:
        """(address, label, enabled), in the order they were added."""
        rows = self._exec("SELECT address, label, enabled FROM subscriptions ORDER BY rowid").fetchall()
        return [(r[0], r[1], bool(r[2])) for r in rows]

    def set_subscription_enabled(self, address: str, enabled: bool) -> bool:
        """Enable/disable a subscription; False if unknown."""
        cur = self._exec("UPDATE subscriptions SET enabled = ? WHERE address = ?", (int(enabled), address))
        return cur.rowcount == 1

    def add_addressbook(self, address: str, label: str) -> bool:
        """Add an address book entry; False if the address is there already."""
        cur = self._exec("INSERT OR IGNORE INTO addressbook (address, label) VALUES (?, ?)", (address, label))
        return cur.rowcount == 1

    def delete_addressbook(self, address: str) -> bool:
        """Delete an address book entry; False if absent."""
        return self._exec("DELETE FROM addressbook WHERE address = ?", (address,)).rowcount == 1

    def addressbook(self) -> list[tuple[str, str]]:
        """(address, label), in the order they were added."""
        return [(r[0], r[1]) for r in self._exec("SELECT address, label FROM addressbook ORDER BY rowid").fetchall()]

    def add_access(self, which: str, address: str, label: str, enabled: bool = True) -> bool:
        """Add to the black or white list; False if present."""
        cur = self._exec(
            "INSERT OR IGNORE INTO access_list (list, address, label, enabled) VALUES (?, ?, ?, ?)",
            (which, address, label, int(enabled)),
        )
        return cur.rowcount == 1

    def delete_access(self, which: str, address: str) -> bool:
        """Remove from the black or white list; False if absent."""
        return self._exec("DELETE FROM access_list WHERE list = ? AND address = ?", (which, address)).rowcount == 1

    def access_list(self, which: str) -> list[tuple[str, str, bool]]:
        """(address, label, enabled) of the black or white list."""
        rows = self._exec(
            "SELECT address, label, enabled FROM access_list WHERE list = ? ORDER BY rowid", (which,)
        ).fetchall()
        return [(r[0], r[1], bool(r[2])) for r in rows]

    # ---- inbox

    def add_inbox(self, row: InboxRow) -> bool:
        """Store a received message; False (nothing written) if its msgid or sighash is known."""
        cur = self._exec(
            f"INSERT OR IGNORE INTO inbox ({_INBOX_COLS}) VALUES ({', '.join('?' * 10)})",
            (
                row.msgid, row.to_address, row.from_address, row.subject, row.body, row.encoding,
                row.received, int(row.read), row.folder, row.sighash,
            ),
        )
        return cur.rowcount == 1

    def has_sighash(self, sighash: bytes) -> bool:
        """Whether a message with this signature hash is stored (10.4 step 10)."""
        return self._exec("SELECT 1 FROM inbox WHERE sighash = ?", (sighash,)).fetchone() is not None

    def inbox_message(self, msgid: bytes) -> InboxRow | None:
        """The inbox row with this msgid (any folder), or None."""
        return self._one(InboxRow, f"SELECT {_INBOX_COLS} FROM inbox WHERE msgid = ?", (msgid,))

    def inbox(self, folder: str | None = "inbox", to_address: str | None = None) -> list[InboxRow]:
        """Messages of ``folder`` (None: every folder), optionally only to ``to_address``, by time."""
        where, params = [], []
        if folder is not None:
            where.append("folder = ?")
            params.append(folder)
        if to_address is not None:
            where.append("to_address = ?")
            params.append(to_address)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        return self._all(InboxRow, f"SELECT {_INBOX_COLS} FROM inbox {clause} ORDER BY received, rowid", params)

    def set_inbox_read(self, msgid: bytes, read: bool) -> bool:
        """Set the read flag; False if unknown."""
        return self._exec("UPDATE inbox SET read = ? WHERE msgid = ?", (int(read), msgid)).rowcount == 1

    def set_inbox_folder(self, msgid: bytes, folder: str) -> int:
        """Move inbox rows with this msgid to ``folder``; how many."""
        return self._exec("UPDATE inbox SET folder = ? WHERE msgid = ?", (folder, msgid)).rowcount

    # ---- sent

    def add_sent(self, **values: Any) -> int:
        """Insert a sent row from keyword values (columns of :class:`SentRow` except id); its id."""
        cols = [c for c in SentRow.__dataclass_fields__ if c != "id" and c in values]
        unknown = set(values) - set(cols)
        if unknown:
            raise KeyError(f"unknown sent columns: {sorted(unknown)}")
        cur = self._exec(
            f"INSERT INTO sent ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            [int(values[c]) if isinstance(values[c], bool) else values[c] for c in cols],
        )
        return int(cur.lastrowid)

    def update_sent(self, sent_id: int, **values: Any) -> bool:
        """Set columns of one sent row."""
        if not values:
            return False
        bad = set(values) - (set(SentRow.__dataclass_fields__) - {"id"})
        if bad:
            raise KeyError(f"unknown sent columns: {sorted(bad)}")
        assignments = ", ".join(f"{c} = ?" for c in values)
        params = [int(v) if isinstance(v, bool) else v for v in values.values()]
        return self._exec(f"UPDATE sent SET {assignments} WHERE id = ?", [*params, sent_id]).rowcount == 1

    def sent(self, sent_id: int) -> SentRow | None:
        """The sent row with this id, or None."""
        return self._one(SentRow, f"SELECT {_SENT_COLS} FROM sent WHERE id = ?", (sent_id,))

    def sent_by_msgid(self, msgid: bytes) -> SentRow | None:
        """The (first) sent row with this msgid, or None."""
        return self._one(SentRow, f"SELECT {_SENT_COLS} FROM sent WHERE msgid = ? ORDER BY id LIMIT 1", (msgid,))

    def sent_by_ackdata(self, ackdata: bytes) -> SentRow | None:
        """The sent row with this ackdata, or None."""
        return self._one(SentRow, f"SELECT {_SENT_COLS} FROM sent WHERE ackdata = ?", (ackdata,))

    def sent_list(self, folder: str | None = "sent", from_address: str | None = None) -> list[SentRow]:
        """Sent rows of ``folder`` (None: all), optionally from one address, by last action time."""
        where, params = [], []
        if folder is not None:
            where.append("folder = ?")
            params.append(folder)
        if from_address is not None:
            where.append("from_address = ?")
            params.append(from_address)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        return self._all(SentRow, f"SELECT {_SENT_COLS} FROM sent {clause} ORDER BY last_action, id", params)

    def sent_with_status(self, statuses: Iterable[str], *, due_by: int | None = None, folder: str | None = "sent") -> list[SentRow]:
        """Rows whose status is one of ``statuses`` (and ``next_action <= due_by`` if given)."""
        sts = list(statuses)
        where = [f"status IN ({', '.join('?' * len(sts))})"]
        params: list[Any] = list(sts)
        if due_by is not None:
            where.append("next_action <= ?")
            params.append(int(due_by))
        if folder is not None:
            where.append("folder = ?")
            params.append(folder)
        return self._all(SentRow, f"SELECT {_SENT_COLS} FROM sent WHERE {' AND '.join(where)} ORDER BY id", params)

    def sent_to(self, to_address: str, statuses: Iterable[str]) -> list[SentRow]:
        """Sent rows to ``to_address`` in one of ``statuses`` (any folder)."""
        sts = list(statuses)
        return self._all(
            SentRow,
            f"SELECT {_SENT_COLS} FROM sent WHERE to_address = ? AND status IN ({', '.join('?' * len(sts))}) ORDER BY id",
            [to_address, *sts],
        )

    def watched_ackdata(self) -> list[bytes]:
        """Ackdata of every msg not yet acknowledged (10.6: compared with every object)."""
        rows = self._exec("SELECT ackdata FROM sent WHERE kind = 'msg' AND status != 'ackreceived'").fetchall()
        return [bytes(r[0]) for r in rows]

    def set_sent_folder(self, *, folder: str, msgid: bytes | None = None, ackdata: bytes | None = None) -> int:
        """Move sent rows (by msgid, else by ackdata) to ``folder``; how many."""
        if msgid is not None:
            return self._exec("UPDATE sent SET folder = ? WHERE msgid = ?", (folder, msgid)).rowcount
        return self._exec("UPDATE sent SET folder = ? WHERE ackdata = ?", (folder, ackdata)).rowcount

    def acknowledge(self, ackdata: bytes, when: int) -> bool:
        """Mark the msg with this ackdata ``ackreceived``; False if none was waiting."""
        cur = self._exec(
            "UPDATE sent SET status = 'ackreceived', last_action = ? WHERE ackdata = ? AND kind = 'msg' "
            "AND status != 'ackreceived'",
            (int(when), ackdata),
        )
        return cur.rowcount == 1

    def delete_trashed(self) -> int:
        """Delete every trashed inbox and sent row; the number deleted."""
        n = self._exec("DELETE FROM inbox WHERE folder = 'trash'").rowcount
        n += self._exec("DELETE FROM sent WHERE folder = 'trash'").rowcount
        return n

    def vacuum(self) -> None:
        """Compact the file."""
        self._exec("VACUUM")

    # ---- pubkeys of other addresses

    def put_pubkey(self, address: str, version: int, data: bytes, when: int, *, used: bool = False) -> None:
        """Store (or refresh) the pubkey data of ``address``, keeping its "used" flag; ``used``
        sets it (the reference's usedpersonally='yes': pubkeys that came with a msg or broadcast,
        or that we awaited, are never expired)."""
        self._exec(
            "INSERT INTO pubkeys (address, version, data, received, used) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (address) DO UPDATE SET version = excluded.version, data = excluded.data, "
            "received = excluded.received, used = max(used, excluded.used)",
            (address, int(version), bytes(data), int(when), int(bool(used))),
        )

    def pubkey(self, address: str) -> PubkeyRow | None:
        """The stored pubkey of ``address``, or None."""
        return self._one(PubkeyRow, f"SELECT {_PUBKEY_COLS} FROM pubkeys WHERE address = ?", (address,))

    def pubkeys(self) -> list[PubkeyRow]:
        """Every stored pubkey."""
        return self._all(PubkeyRow, f"SELECT {_PUBKEY_COLS} FROM pubkeys ORDER BY rowid")

    def mark_pubkey_used(self, address: str, when: int) -> None:
        """We sent to this address: keep its pubkey beyond 28 days."""
        self._exec("UPDATE pubkeys SET used = 1, last_used = ? WHERE address = ?", (int(when), address))

    def expire_pubkeys(self, older_than: int) -> int:
        """Forget pubkeys never used by us and received before ``older_than``."""
        return self._exec("DELETE FROM pubkeys WHERE used = 0 AND received < ?", (int(older_than),)).rowcount

    # ---- addresses awaiting their pubkey

    def put_awaiting(self, row: AwaitingRow) -> None:
        """Insert or replace an awaited-pubkey row."""
        self._exec(
            f"INSERT OR REPLACE INTO awaiting_pubkeys ({_AWAITING_COLS}) VALUES ({', '.join('?' * 8)})",
            (row.address, row.version, row.stream, row.ripe, row.tag, row.retry, row.getpubkey_expires, row.next_action),
        )

    def awaiting(self, address: str) -> AwaitingRow | None:
        """The awaited-pubkey row of ``address``, or None."""
        return self._one(AwaitingRow, f"SELECT {_AWAITING_COLS} FROM awaiting_pubkeys WHERE address = ?", (address,))

    def awaiting_all(self) -> list[AwaitingRow]:
        """Every address whose pubkey we await."""
        return self._all(AwaitingRow, f"SELECT {_AWAITING_COLS} FROM awaiting_pubkeys ORDER BY rowid")

    def delete_awaiting(self, address: str) -> bool:
        """Stop awaiting ``address``'s pubkey; False if we were not."""
        return self._exec("DELETE FROM awaiting_pubkeys WHERE address = ?", (address,)).rowcount == 1

    # ---- proof-of-work jobs

    def add_job(self, kind: str, ref: str, body: bytes, ntpb: int, extra: int, when: int) -> int:
        """Store a PoW job (object body without nonce); its id (never reused)."""
        cur = self._exec(
            "INSERT INTO pow_jobs (kind, ref, body, ntpb, extra, created) VALUES (?, ?, ?, ?, ?, ?)",
            (kind, str(ref), bytes(body), int(ntpb), int(extra), int(when)),
        )
        return int(cur.lastrowid)

    def job(self, job_id: int) -> JobRow | None:
        """The PoW job with this id, or None."""
        return self._one(JobRow, f"SELECT {_JOB_COLS} FROM pow_jobs WHERE id = ?", (int(job_id),))

    def jobs(self) -> list[JobRow]:
        """Every stored PoW job, oldest first."""
        return self._all(JobRow, f"SELECT {_JOB_COLS} FROM pow_jobs ORDER BY id")

    def jobs_for(self, kind: str, ref: str) -> list[JobRow]:
        """PoW jobs of one kind for one owner (sent row id or address)."""
        return self._all(JobRow, f"SELECT {_JOB_COLS} FROM pow_jobs WHERE kind = ? AND ref = ? ORDER BY id", (kind, str(ref)))

    def delete_job(self, job_id: int) -> bool:
        """Forget a PoW job; False if unknown."""
        return self._exec("DELETE FROM pow_jobs WHERE id = ?", (int(job_id),)).rowcount == 1

    def delete_jobs_for(self, kind: str, ref: str) -> int:
        """Forget the PoW jobs of one kind for one owner; how many."""
        return self._exec("DELETE FROM pow_jobs WHERE kind = ? AND ref = ?", (kind, str(ref))).rowcount

    # ---- outbox

    def add_outbox(self, hash_: bytes, kind: str, obj: bytes, expires: int, when: int) -> None:
        """Keep a finished object until the net process has it (duplicates ignored)."""
        self._exec(
            "INSERT OR IGNORE INTO outbox (hash, kind, object, expires, created) VALUES (?, ?, ?, ?, ?)",
            (bytes(hash_), kind, bytes(obj), int(expires), int(when)),
        )

    def outbox(self) -> list[OutboxRow]:
        """Objects not yet confirmed as handed to the network, oldest first."""
        return self._all(OutboxRow, f"SELECT {_OUTBOX_COLS} FROM outbox ORDER BY created, rowid")

    def delete_outbox(self, hashes: Iterable[bytes]) -> int:
        """The net process has these objects; how many were dropped."""
        n = 0
        for h in hashes:
            n += self._exec("DELETE FROM outbox WHERE hash = ?", (bytes(h),)).rowcount
        return n

    def expire_outbox(self, before: int) -> int:
        """Drop outbox objects that expired before ``before``; how many."""
        return self._exec("DELETE FROM outbox WHERE expires < ?", (int(before),)).rowcount

    # ---- statistics

    def count(self, table: str) -> int:
        """Rows in one of the mailbox tables."""
        if table not in {"identities", "subscriptions", "addressbook", "inbox", "sent", "pubkeys",
                         "awaiting_pubkeys", "pow_jobs", "outbox"}:
            raise KeyError(table)
        return int(self._exec(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
