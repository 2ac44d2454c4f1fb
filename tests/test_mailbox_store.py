"""mailbox.sqlite (bmnode.store.mailbox): schema, constraints, transactions and durability."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bmnode.errors import StoreError
from bmnode.store.mailbox import MAILBOX_FILE, AwaitingRow, IdentityRow, InboxRow, MailboxStore

NOW = 1_700_000_000
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path) -> MailboxStore:
    s = MailboxStore(tmp_path)
    yield s
    s.close()


def _inbox(msgid: bytes, sighash: bytes, received: int = NOW, to: str = "BM-to") -> InboxRow:
    return InboxRow(msgid, to, "BM-from", "subject", "body", 2, received, False, "inbox", sighash)


def _sent(store: MailboxStore, ackdata: bytes, **kw) -> int:
    values = dict(
        msgid=os.urandom(16), ackdata=ackdata, kind="msg", to_address="BM-to", from_address="BM-from",
        subject="s", body="b", encoding=2, ttl=3600, status="msgqueued", last_action=NOW, created=NOW,
    )
    values.update(kw)
    return store.add_sent(**values)


def test_file_and_reopen(tmp_path):
    s = MailboxStore(tmp_path)
    assert s.path == tmp_path / MAILBOX_FILE
    row = IdentityRow("BM-x", 4, 1, "label", True, False, b"s" * 32, b"e" * 32, 1000, 1000, 1, 0, NOW)
    assert s.add_identity(row) and not s.add_identity(row)
    s.add_subscription("BM-sub", "news")
    s.add_addressbook("BM-book", "friend")
    s.add_access("black", "BM-bad", "spam")
    s.set_setting("blackwhitelist", "white")
    sid = _sent(s, b"a" * 38)
    assert s.add_inbox(_inbox(b"m" * 32, b"h" * 32))
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError):
        s.identities()
    with MailboxStore(tmp_path / MAILBOX_FILE) as again:
        assert again.identities() == [row]
        assert again.subscriptions() == [("BM-sub", "news", True)]
        assert again.addressbook() == [("BM-book", "friend")]
        assert again.access_list("black") == [("BM-bad", "spam", True)] and again.access_list("white") == []
        assert again.get_setting("blackwhitelist") == "white" and again.get_setting("nope", "d") == "d"
        assert again.sent(sid).ackdata == b"a" * 38
        assert again.inbox_message(b"m" * 32).sighash == b"h" * 32
        con = sqlite3.connect(again.path)
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("SELECT name, version FROM schema_info").fetchall() == [("mailbox", 1)]
        con.close()


def test_wrong_files_are_refused(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database at all, not even close")
    with pytest.raises(StoreError, match="not an SQLite file"):
        MailboxStore(junk)
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not a bmnode mailbox database"):
        MailboxStore(other)
    assert junk.read_bytes().startswith(b"this is not")  # never rewritten


def test_inbox_is_unique_by_msgid_and_sighash(store):
    assert store.add_inbox(_inbox(b"1" * 32, b"a" * 32))
    assert not store.add_inbox(_inbox(b"1" * 32, b"b" * 32))  # same object
    assert not store.add_inbox(_inbox(b"2" * 32, b"a" * 32))  # same signature, other object
    assert store.has_sighash(b"a" * 32) and not store.has_sighash(b"b" * 32)
    assert store.add_inbox(_inbox(b"3" * 32, b"c" * 32, received=NOW - 5, to="BM-other"))
    assert [r.msgid for r in store.inbox()] == [b"3" * 32, b"1" * 32]  # by received time
    assert [r.msgid for r in store.inbox(to_address="BM-to")] == [b"1" * 32]
    assert store.set_inbox_read(b"1" * 32, True) and store.inbox_message(b"1" * 32).read is True
    assert store.set_inbox_folder(b"1" * 32, "trash") == 1
    assert [r.msgid for r in store.inbox()] == [b"3" * 32]
    assert len(store.inbox(folder=None)) == 2
    assert store.delete_trashed() == 1 and store.count("inbox") == 1
    store.vacuum()


def test_sent_rows_statuses_and_acks(store):
    a = _sent(store, b"a" * 38)
    b = _sent(store, b"b" * 38, status="msgsent", next_action=NOW + 100, last_action=NOW - 1)
    c = _sent(store, b"c" * 38, kind="broadcast", status="broadcastqueued")
    with pytest.raises(sqlite3.IntegrityError):
        store.con.execute("INSERT INTO sent (msgid, ackdata, kind, to_address, from_address, subject, body, "
                          "encoding, ttl, status, last_action, created) VALUES (x'00', ?, 'msg', '', '', '', '', 2, 1, "
                          "'x', 0, 0)", (b"a" * 38,))
    assert [r.id for r in store.sent_with_status(["msgsent"], due_by=NOW + 99)] == []
    assert [r.id for r in store.sent_with_status(["msgsent"], due_by=NOW + 100)] == [b]
    assert [r.id for r in store.sent_with_status(["msgqueued", "broadcastqueued"])] == [a, c]
    assert [r.id for r in store.sent_list()] == [b, a, c]  # by last action time
    assert sorted(store.watched_ackdata()) == [b"a" * 38, b"b" * 38]  # broadcasts are never acked
    assert store.acknowledge(b"b" * 38, NOW + 5) and not store.acknowledge(b"b" * 38, NOW + 6)
    assert not store.acknowledge(b"c" * 38, NOW)  # a broadcast handle is not an ack
    assert store.sent(b).status == "ackreceived" and store.sent(b).last_action == NOW + 5
    assert store.watched_ackdata() == [b"a" * 38]
    assert store.update_sent(a, status="doingmsgpow", expects_ack=True, object=b"obj")
    row = store.sent(a)
    assert (row.status, row.expects_ack, row.object) == ("doingmsgpow", True, b"obj")
    assert [r.id for r in store.sent_to("BM-to", ["doingmsgpow"])] == [a]
    with pytest.raises(KeyError):
        store.update_sent(a, bogus=1)
    with pytest.raises(KeyError):
        store.add_sent(bogus=1)
    assert not store.update_sent(a)
    assert store.set_sent_folder(folder="trash", ackdata=b"a" * 38) == 1
    assert store.sent_by_msgid(row.msgid).folder == "trash"
    assert [r.id for r in store.sent_list(from_address="BM-from")] == [c, b]  # b acked at NOW + 5


def test_transactions_roll_back_and_nest(store):
    with pytest.raises(RuntimeError):
        with store.tx():
            store.add_addressbook("BM-1", "one")
            with store.tx():
                store.add_addressbook("BM-2", "two")
            raise RuntimeError("crash in the middle")
    assert store.addressbook() == []
    with store.tx():
        store.add_addressbook("BM-1", "one")
        with store.tx():
            store.add_addressbook("BM-2", "two")
    assert len(store.addressbook()) == 2
    # An SQL error inside is reported as a StoreError naming the file, and rolled back.
    with pytest.raises(StoreError, match=str(store.path)):
        with store.tx():
            store.add_addressbook("BM-3", "three")
            store._exec("INSERT INTO nonexistent VALUES (1)")
    assert len(store.addressbook()) == 2


def test_pubkeys_keep_used_flag_and_expire(store):
    store.put_pubkey("BM-a", 4, b"data1", NOW - 100 * 86400)
    store.put_pubkey("BM-b", 3, b"data2", NOW - 100 * 86400)
    store.put_pubkey("BM-c", 4, b"data3", NOW)
    store.mark_pubkey_used("BM-a", NOW)
    store.put_pubkey("BM-a", 4, b"newer", NOW - 50 * 86400)
    a = store.pubkey("BM-a")
    assert (a.data, a.used, a.last_used) == (b"newer", True, NOW)
    assert store.expire_pubkeys(NOW - 28 * 86400) == 1  # only the unused old one
    assert [p.address for p in store.pubkeys()] == ["BM-a", "BM-c"]


def test_pubkeys_stored_as_used_are_never_expired(store):
    # A sender's pubkey from a msg/broadcast or an awaited one (usedpersonally='yes').
    store.put_pubkey("BM-s", 4, b"from a msg", NOW - 100 * 86400, used=True)
    store.put_pubkey("BM-s", 4, b"refreshed", NOW - 90 * 86400)  # a later plain store keeps the flag
    store.put_pubkey("BM-u", 3, b"unsolicited", NOW - 90 * 86400)
    assert store.pubkey("BM-s").used and not store.pubkey("BM-u").used
    assert store.expire_pubkeys(NOW - 28 * 86400) == 1
    assert [p.address for p in store.pubkeys()] == ["BM-s"]


def test_awaiting_jobs_outbox(store):
    aw = AwaitingRow("BM-x", 4, 1, b"r" * 20, b"t" * 32, 0, 0, 0)
    store.put_awaiting(aw)
    store.put_awaiting(AwaitingRow("BM-x", 4, 1, b"r" * 20, b"t" * 32, 1, NOW, NOW + 5))
    assert store.awaiting("BM-x").retry == 1 and len(store.awaiting_all()) == 1
    assert store.delete_awaiting("BM-x") and store.awaiting("BM-x") is None
    j1 = store.add_job("msg", "7", b"body", 3, 2, NOW)
    j2 = store.add_job("msg", "7", b"body2", 0, 0, NOW)
    assert [j.id for j in store.jobs_for("msg", "7")] == [j1, j2] and store.job(j1).ntpb == 3
    assert store.delete_job(j2) and not store.delete_job(j2)
    j3 = store.add_job("ack", "8", b"b", 0, 0, NOW)
    assert j3 > j2  # ids are never reused
    assert store.delete_jobs_for("msg", "7") == 1 and [j.id for j in store.jobs()] == [j3]
    store.add_outbox(b"h" * 32, "msg", b"obj", NOW + 10, NOW)
    store.add_outbox(b"h" * 32, "msg", b"obj", NOW + 10, NOW)
    store.add_outbox(b"g" * 32, "ack", b"obj2", NOW - 10, NOW)
    assert [o.hash for o in store.outbox()] == [b"h" * 32, b"g" * 32]
    assert store.expire_outbox(NOW) == 1
    assert store.delete_outbox([b"h" * 32, b"x" * 32]) == 1 and store.outbox() == []
    with pytest.raises(KeyError):
        store.count("sqlite_master")


def test_kill_9_loses_nothing_acknowledged(tmp_path):
    """A process that returned from send_message and receive_object, then died by SIGKILL."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        from bmnode.mailbox import Mailbox, MailboxConfig
        mb = Mailbox({str(tmp_path / 'node')!r}, MailboxConfig(min_ntpb=1, min_extra=1))
        alice = mb.create_random_address("alice", now={NOW})
        chan = mb.create_chan("crash test", now={NOW})
        ack = mb.send_message(alice, chan, "queued", "before the crash", now={NOW})
        jobs = mb.tick({NOW})
        print(ack, alice, len(jobs), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    ack, alice, njobs = proc.stdout.split()
    from bmnode.mailbox import Mailbox, MailboxConfig, run_until_idle
    from bmnode.pow.python_backend import PythonBackend

    mb = Mailbox(tmp_path / "node", MailboxConfig(min_ntpb=1, min_extra=1))
    assert mb.get_status(ack) == "doingmsgpow" and int(njobs) == 2  # alice's pubkey + the msg
    assert [a["address"] for a in mb.list_addresses()][0] == alice
    outs = run_until_idle(mb, NOW + 1, PythonBackend())
    assert sorted(o.kind for o in outs) == ["msg", "pubkey"]
    assert mb.get_status(ack) == "msgsentnoackexpected"
    assert [m["subject"] for m in mb.inbox_messages()] == ["queued"]
    mb.close()
