"""The SQLite inventory: batching, restart, clean-up boundaries, big-inv listing, tags, the
compact hash index, and typed errors for damaged files (spec 5.3-5.6, 7.2, 7.3, 11)."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmnode.errors import InvalidObject, StoreError
from bmnode.protocol.constants import INVENTORY_KEEP_AFTER_EXPIRY
from bmnode.protocol.hashing import inventory_hash
from bmnode.protocol.objects import ObjectHeader, attach_nonce, encode_object_body, parse_header
from bmnode.store import inventory as inventory_mod
from bmnode.store import schema
from bmnode.store.inventory import INVENTORY_FILE, HashIndex, Inventory
from bmnode.store.knownnodes import KnownNodes

NOW = 1_730_000_000

_counter = iter(range(1 << 62))


def obj(
    expires: int = NOW + 3600,
    object_type: int = 2,
    version: int = 1,
    stream: int = 1,
    payload: bytes | None = None,
) -> tuple[bytes, ObjectHeader]:
    """A distinct object (the inventory does not check PoW: its caller has validated it)."""
    n = next(_counter)
    if payload is None:
        payload = n.to_bytes(8, "big") + b"payload"
    data = attach_nonce(n, encode_object_body(expires, object_type, version, stream, payload))
    return data, parse_header(data)


def rows_on_disk(path: Path) -> int:
    """Rows committed to the file, seen through a separate connection."""
    con = sqlite3.connect(str(path))
    try:
        return con.execute("SELECT count(*) FROM objects").fetchone()[0]
    finally:
        con.close()


@pytest.fixture
def inv(tmp_path):
    i = Inventory(tmp_path)
    yield i
    i.close()


# ---------------------------------------------------------------------------- basics


def test_add_get_has_and_duplicates(inv, tmp_path):
    data, header = obj()
    h = inventory_hash(data)
    assert not inv.has(h) and inv.get(h) is None and h not in inv
    assert inv.add(data, header, NOW) is True
    assert inv.has(h) and h in inv and inv.get(h) == data  # served while still queued
    assert inv.add(data, header, NOW) is False  # duplicate in the batch
    assert inv.count() == len(inv) == 1
    assert inv.flush() == 1 and inv.pending == 0
    assert inv.get(h) == data
    assert inv.add(data, header, NOW) is False  # duplicate on disk
    assert inv.count() == 1 and rows_on_disk(tmp_path / INVENTORY_FILE) == 1


def test_directory_or_file_path(tmp_path):
    with Inventory(tmp_path) as a:
        assert a.path == tmp_path / INVENTORY_FILE
    custom = tmp_path / "other.db"
    with Inventory(custom) as b:
        assert b.path == custom
    assert custom.is_file()


def test_database_is_wal(inv):
    assert inv._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert inv._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_inv_hash_argument_and_info(inv):
    data, header = obj(object_type=1, version=4, payload=bytes(range(32)) + b"rest")
    h = inventory_hash(data)
    assert inv.add(data, header, NOW, inv_hash=h)
    for _ in range(2):  # queued, then stored
        item = inv.info(h)
        assert item is not None
        assert (item.hash, item.object_type, item.stream, item.expires_time, item.tag) == (
            h, 1, 1, NOW + 3600, bytes(range(32))
        )
        inv.flush()
    assert inv.info(b"\x00" * 32) is None


def test_add_many_returns_new_hashes_and_flushes(inv, tmp_path):
    items = [obj() for _ in range(5)]
    new = inv.add_many(items + items[:2], NOW)
    assert new == [inventory_hash(d) for d, _ in items]
    assert inv.pending == 0 and rows_on_disk(tmp_path / INVENTORY_FILE) == 5


# ---------------------------------------------------------------------------- batching


def test_nothing_is_written_before_flush_and_everything_after(inv, tmp_path):
    for _ in range(10):
        inv.add(*obj(), NOW)
    assert inv.pending == 10
    assert rows_on_disk(tmp_path / INVENTORY_FILE) == 0
    assert inv.flush() == 10
    assert inv.flush() == 0
    assert rows_on_disk(tmp_path / INVENTORY_FILE) == 10


def test_full_batch_is_flushed_before_taking_more(tmp_path):
    with Inventory(tmp_path, max_pending=3) as inv:
        for _ in range(3):
            inv.add(*obj(), NOW)
        assert inv.pending == 3 and rows_on_disk(inv.path) == 0
        inv.add(*obj(), NOW)
        assert inv.pending == 1 and rows_on_disk(inv.path) == 3


def test_batch_bytes_bound(tmp_path):
    with Inventory(tmp_path, max_pending=10_000, max_pending_bytes=1000) as inv:
        big = bytes(600)
        inv.add(*obj(payload=big), NOW)
        inv.add(*obj(payload=big), NOW)  # 1200 bytes queued: the next add flushes first
        assert rows_on_disk(inv.path) == 0
        inv.add(*obj(payload=big), NOW)
        assert rows_on_disk(inv.path) == 2 and inv.pending == 1


def test_failed_flush_raises_store_error_and_loses_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(schema, "BUSY_TIMEOUT_MS", 50)
    inv = Inventory(tmp_path)
    items = [obj() for _ in range(4)]
    for d, h in items:
        inv.add(d, h, NOW)
    blocker = sqlite3.connect(str(inv.path), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StoreError, match=r"writing objects.*inventory\.sqlite.*locked"):
        inv.flush()
    assert inv.pending == 4 and all(inv.get(inventory_hash(d)) == d for d, _ in items)
    blocker.execute("ROLLBACK")
    blocker.close()
    assert inv.flush() == 4
    inv.close()
    with Inventory(tmp_path) as again:
        assert again.count() == 4


# ---------------------------------------------------------------------------- restart


def test_restart_keeps_the_inventory(tmp_path):
    items = [obj(expires=NOW + 100 * i) for i in range(1, 21)]
    tagged = obj(object_type=3, version=5, payload=b"T" * 32 + b"blob")
    with Inventory(tmp_path) as inv:
        for d, h in items + [tagged]:
            inv.add(d, h, NOW)
        # close() flushes the batch
    with Inventory(tmp_path) as inv:
        assert inv.count() == 21
        for d, _ in items:
            assert inv.has(inventory_hash(d)) and inv.get(inventory_hash(d)) == d
            assert inv.add(d, parse_header(d), NOW) is False
        assert inv.by_tag(b"T" * 32) == [tagged[0]]
        assert len(inv.unexpired_hashes(1, NOW)) == 21


def test_unflushed_objects_are_not_on_disk_after_a_crash(tmp_path):
    inv = Inventory(tmp_path)
    a, b = obj(), obj()
    inv.add(*a, NOW)
    inv.flush()
    inv.add(*b, NOW)
    inv._con.close()  # the process dies without close()/flush()
    inv._con = None
    with Inventory(tmp_path) as again:
        assert again.has(inventory_hash(a[0])) and not again.has(inventory_hash(b[0]))
        assert again.count() == 1


# ---------------------------------------------------------------------------- clean-up


def test_cleanup_boundary_is_exactly_three_hours_after_expiry(inv):
    keep = obj(expires=NOW - INVENTORY_KEEP_AFTER_EXPIRY)  # expiresTime == now - 10800: kept
    gone = obj(expires=NOW - INVENTORY_KEEP_AFTER_EXPIRY - 1)  # one second older: deleted
    fresh = obj(expires=NOW + 10)
    for d, h in (keep, gone, fresh):
        assert inv.add(d, h, NOW - 5000)
    assert inv.cleanup(NOW) == 1  # flushes the batch first
    assert inv.has(inventory_hash(keep[0])) and inv.get(inventory_hash(keep[0])) == keep[0]
    assert not inv.has(inventory_hash(gone[0])) and inv.get(inventory_hash(gone[0])) is None
    assert inv.count() == 2
    assert inv.cleanup(NOW) == 0
    assert inv.cleanup(NOW + 1) == 1  # now keep's turn
    assert inv.count() == 1 and inv.has(inventory_hash(fresh[0]))


def test_cleanup_covers_every_stream_and_persists(tmp_path):
    with Inventory(tmp_path) as inv:
        for stream in (1, 2, 7):
            inv.add(*obj(expires=NOW - 20000, stream=stream), NOW - 20000)
            inv.add(*obj(expires=NOW + 20000, stream=stream), NOW - 20000)
        assert inv.cleanup(NOW) == 3
    with Inventory(tmp_path) as inv:
        assert inv.count() == 3 and rows_on_disk(inv.path) == 3


def test_object_past_the_cleanup_horizon_is_not_stored(inv):
    d, h = obj(expires=NOW - INVENTORY_KEEP_AFTER_EXPIRY - 1)
    assert inv.add(d, h, NOW) is False
    assert not inv.has(inventory_hash(d)) and inv.count() == 0


# ---------------------------------------------------------------------------- big inv


def test_unexpired_hashes_excludes_expired_other_streams_and_excluded(inv):
    expired_now = obj(expires=NOW)  # expiresTime == now: expired, never announced
    live = [obj(expires=NOW + 1 + i) for i in range(5)]
    other_stream = obj(expires=NOW + 100, stream=2)
    recently_expired = obj(expires=NOW - 60)
    for d, h in [expired_now, other_stream, recently_expired] + live:
        inv.add(d, h, NOW)
    live_hashes = [inventory_hash(d) for d, _ in live]
    assert sorted(inv.unexpired_hashes(1, NOW)) == sorted(live_hashes)
    stem = {live_hashes[0], live_hashes[3]}
    assert sorted(inv.unexpired_hashes(1, NOW, exclude=stem)) == sorted(set(live_hashes) - stem)
    assert inv.unexpired_hashes(2, NOW) == [inventory_hash(other_stream[0])]
    assert inv.unexpired_hashes(3, NOW) == []
    assert inv.unexpired_hashes(1 << 64, NOW) == []


def test_iter_unexpired_chunks_are_bounded_complete_and_never_empty(inv):
    items = [obj(expires=NOW + 1000 + (i % 3)) for i in range(10)]  # equal expiries: paging by (expires, hash)
    for d, h in items:
        inv.add(d, h, NOW)
    chunks = list(inv.iter_unexpired(1, NOW, chunk_size=3))
    assert [len(c) for c in chunks] == [3, 3, 3, 1]
    flat = [h for c in chunks for h in c]
    assert len(flat) == len(set(flat)) == 10
    assert set(flat) == {inventory_hash(d) for d, _ in items}
    # Excluding a whole page yields no empty list.
    first_page = set(chunks[0])
    chunks = list(inv.iter_unexpired(1, NOW, exclude=first_page, chunk_size=3))
    assert all(chunks) and {h for c in chunks for h in c} == set(flat) - first_page
    with pytest.raises(ValueError):
        list(inv.iter_unexpired(1, NOW, chunk_size=0))


def test_writes_between_chunks_do_not_break_paging(inv):
    for i in range(6):
        inv.add(*obj(expires=NOW + 100 + i), NOW)
    it = inv.iter_unexpired(1, NOW, chunk_size=2)
    seen = list(next(it))
    inv.add(*obj(expires=NOW + 5000), NOW)  # sorts after everything listed so far
    inv.flush()
    for chunk in it:
        seen.extend(chunk)
    assert len(seen) == len(set(seen)) == 7


# ---------------------------------------------------------------------------- tags


def test_by_tag_indexes_only_tagged_types():
    tag = b"\xab" * 32
    cases = [
        ((0, 4), True),  # getpubkey v4
        ((1, 4), True),  # pubkey v4
        ((3, 5), True),  # broadcast v5
        ((0, 3), False),  # getpubkey v3 carries a ripe
        ((1, 3), False),
        ((3, 4), False),
        ((2, 1), False),  # msg
    ]
    with tempfile.TemporaryDirectory() as d, Inventory(d) as inv:
        expected = []
        for (otype, version), tagged in cases:
            data, header = obj(object_type=otype, version=version, payload=tag + b"more")
            inv.add(data, header, NOW)
            if tagged:
                expected.append(data)
        short = obj(object_type=1, version=4, payload=tag[:31])  # too short to have a tag
        inv.add(*short, NOW)
        assert sorted(inv.by_tag(tag)) == sorted(expected)
        assert inv.by_tag(tag, object_type=1) == [expected[1]]
        assert inv.by_tag(b"\x00" * 32) == []
        assert inv.info(inventory_hash(short[0])).tag is None


# ---------------------------------------------------------------------------- the index


def test_hash_index_merge_and_membership():
    idx = HashIndex()
    hashes = [os.urandom(32) for _ in range(300)]
    for h in hashes[:200]:
        idx.add(h)
    idx.merge()
    for h in hashes[200:]:
        idx.add(h)
    assert len(idx) == 300
    assert all(h in idx for h in hashes)
    assert not any(os.urandom(32) in idx for _ in range(200))
    assert b"short" not in idx and b"" not in idx
    idx.merge()
    idx.merge()  # nothing recent: no-op
    assert len(idx) == 300 and all(h in idx for h in hashes)


def test_maybe_merge_threshold(monkeypatch):
    monkeypatch.setattr(HashIndex, "MIN_RECENT", 4)
    idx = HashIndex()
    for _ in range(4):
        idx.add(os.urandom(32))
    idx.maybe_merge()
    assert len(idx._recent) == 4
    idx.add(os.urandom(32))
    idx.maybe_merge()
    assert len(idx._recent) == 0 and len(idx._base) == 5


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), max_size=60), st.integers(0, 60))
def test_hash_index_behaves_as_a_set(hashes, merge_at):
    idx = HashIndex()
    for i, h in enumerate(hashes):
        if i == merge_at:
            idx.merge()
        idx.add(h)
    base = list(idx._base)
    assert base == sorted(base)
    assert all(h in idx for h in hashes)
    prefixes = {h[:8] for h in hashes}
    probe = bytes(32)
    assert (probe in idx) == (probe[:8] in prefixes)


def test_inventory_index_after_merges_and_exact_add(tmp_path, monkeypatch):
    monkeypatch.setattr(HashIndex, "MIN_RECENT", 8)
    with Inventory(tmp_path) as inv:
        items = [obj() for _ in range(50)]
        for d, h in items:
            inv.add(d, h, NOW)
            inv.flush()  # merges whenever the recent set outgrows the threshold
        assert len(inv._index._base) > 0
        assert all(inv.has(inventory_hash(d)) for d, _ in items)
        assert all(inv.add(d, h, NOW) is False for d, h in items)
        # A hash sharing a stored hash's 64-bit prefix: has() may say yes (documented), but
        # add() checks SQLite and stores it, and get() is exact.
        merged = next(inventory_hash(d) for d, _ in items if not inv._index.in_recent(inventory_hash(d)))
        twin = merged[:8] + b"\xff" * 24
        other, header = obj()
        assert inv.get(twin) is None
        assert inv.add(other, header, NOW, inv_hash=twin) is True
        inv.flush()
        assert inv.get(twin) == other


def test_index_is_rebuilt_after_cleanup(tmp_path):
    with Inventory(tmp_path) as inv:
        old = [obj(expires=NOW - 20000) for _ in range(5)]
        new = [obj(expires=NOW + 20000) for _ in range(5)]
        for d, h in old + new:
            inv.add(d, h, NOW - 20000)
        assert inv.cleanup(NOW) == 5
        assert not any(inv.has(inventory_hash(d)) for d, _ in old)
        assert all(inv.has(inventory_hash(d)) for d, _ in new)
        assert all(inv.add(d, h, NOW - 20000) for d, h in old)  # can be stored again


# ---------------------------------------------------------------------------- bad input


def test_bad_arguments_give_typed_errors(inv):
    data, header = obj()
    with pytest.raises(InvalidObject, match="32 bytes"):
        inv.add(data, header, NOW, inv_hash=b"\x01" * 31)
    huge = ObjectHeader(0, 1 << 63, 2, 1, 1, header.header_length)
    with pytest.raises(InvalidObject, match="out of range"):
        inv.add(data, huge, NOW)
    assert inv.count() == 0
    assert not inv.has(b"") and not inv.has(b"\x00" * 31) and inv.get(b"xyz") is None


def test_closed_inventory(tmp_path):
    inv = Inventory(tmp_path)
    inv.close()
    inv.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        inv.add(*obj(), NOW)
    with pytest.raises(ValueError, match="closed"):
        inv.unexpired_hashes(1, NOW)


# ---------------------------------------------------------------------------- damaged files


def _assert_untouched(path: Path, content: bytes) -> None:
    assert path.is_file() and path.read_bytes() == content


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a database at all, just some text that someone put here.......",
        b"SQLit",  # truncated header
        os.urandom(8192),
    ],
    ids=["text", "truncated", "random"],
)
def test_garbage_file_gives_store_error_and_is_kept(tmp_path, content):
    path = tmp_path / INVENTORY_FILE
    path.write_bytes(content)
    with pytest.raises(StoreError) as err:
        Inventory(tmp_path)
    msg = str(err.value)
    assert str(path) in msg and "move" in msg and "never deletes" in msg
    _assert_untouched(path, content)


def test_damaged_pages_give_store_error(tmp_path):
    with Inventory(tmp_path) as inv:
        for _ in range(200):
            inv.add(*obj(payload=os.urandom(300)), NOW)
    path = tmp_path / INVENTORY_FILE
    raw = bytearray(path.read_bytes())
    page = int.from_bytes(raw[16:18], "big")
    assert len(raw) > 4 * page
    raw[page:] = b"\xa5" * (len(raw) - page)  # keep the header page, wreck every other page
    path.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="corrupt or unreadable") as err:
        Inventory(tmp_path)
    assert str(path) in str(err.value)
    _assert_untouched(path, bytes(raw))


def test_a_directory_in_place_of_the_file(tmp_path):
    (tmp_path / INVENTORY_FILE).mkdir()
    with pytest.raises(StoreError, match="not a regular file"):
        Inventory(tmp_path)


def test_missing_directory(tmp_path):
    with pytest.raises(StoreError, match="cannot open the inventory database"):
        Inventory(tmp_path / "nope" / INVENTORY_FILE)


def test_foreign_sqlite_database(tmp_path):
    path = tmp_path / INVENTORY_FILE
    con = sqlite3.connect(str(path))
    con.execute("CREATE TABLE inventory (hash BLOB)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not a bmnode inventory database"):
        Inventory(path)


def test_knownnodes_file_is_not_an_inventory(tmp_path):
    KnownNodes(tmp_path / "k.sqlite").close()
    with pytest.raises(StoreError, match="kind knownnodes, not inventory"):
        Inventory(tmp_path / "k.sqlite")


def test_newer_schema_is_refused(tmp_path):
    Inventory(tmp_path).close()
    con = sqlite3.connect(str(tmp_path / INVENTORY_FILE))
    con.execute("UPDATE schema_info SET version = 99")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="schema version 99, newer"):
        Inventory(tmp_path)


def test_forward_migration_from_an_older_version(tmp_path, monkeypatch):
    Inventory(tmp_path).close()  # version 1
    extra = ["CREATE TABLE migrated_marker (x INTEGER)"]
    monkeypatch.setattr(inventory_mod, "MIGRATIONS", inventory_mod.MIGRATIONS + [extra])
    with Inventory(tmp_path) as inv:
        assert inv._db.execute("SELECT version FROM schema_info").fetchone()[0] == 2
        assert inv._db.execute("SELECT count(*) FROM migrated_marker").fetchone()[0] == 0
