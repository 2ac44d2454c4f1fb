"""The mailbox end to end: Mailbox instances in temporary directories exchange objects through a
fake in-memory network, with the PoW done by the python backend at a lowered network minimum
(1:1, so every object costs a few thousand trials).

The fake network is what the process layer will be: every finished object is taken from a
mailbox's outbox, appended to the shared object list and confirmed; every node reads the list
from where it stopped (an offline node catches up when it comes back); v4 pubkeys are looked
up in it by tag before a getpubkey is sent.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmnode.crypto.addresses import decode_address, encode_address
from bmnode.crypto.identity import Identity
from bmnode.crypto.objects import BROADCAST_TO_ADDRESS, is_ack_for
from bmnode.errors import PowError
from bmnode.mailbox import ApiError, Mailbox, MailboxConfig, Outgoing, PowJob, run_until_idle, solve_job
from bmnode.mailbox.jobs import complete, kinds
from bmnode.pow.python_backend import PythonBackend
from bmnode.pow.target import check_pow
from bmnode.protocol.constants import DAY, MSG_TTL_MAX, OBJECT_MSG, OBJECT_PUBKEY, RESEND_TTL_CAP
from bmnode.protocol.objects import parse_header, parse_object

NOW = 1_700_000_000
BACKEND = PythonBackend()
LOW = MailboxConfig(min_ntpb=1, min_extra=1)


class Net:
    """A fake network: the ordered list of every object published, and the nodes on it."""

    def __init__(self) -> None:
        self.objects: list[bytes] = []
        self.hashes: set[bytes] = set()
        self.nodes: dict[str, list] = {}  # name -> [mailbox, read position, online]

    def lookup(self, tag: bytes) -> list[bytes]:
        """Inventory lookup by tag (what the process layer gives the mailbox)."""
        out = []
        for obj in self.objects:
            p = parse_object(obj)
            if p.tag == tag:
                out.append(obj)
        return out

    def add(self, name: str, path: Path, config: MailboxConfig = LOW, *, catch_up: bool = True, **kw) -> Mailbox:
        """A node; ``catch_up=False``: it never sees the objects published before it joined."""
        kw.setdefault("inventory_lookup", self.lookup)
        mb = Mailbox(path, config, rng=random.Random(name), **kw)
        self.nodes[name] = [mb, 0 if catch_up else len(self.objects), True]
        return mb

    def replace(self, name: str, mb: Mailbox) -> None:
        self.nodes[name][0] = mb

    def publish(self, obj: bytes) -> None:
        h = Outgoing(obj, "x").hash
        if h not in self.hashes:
            self.hashes.add(h)
            self.objects.append(obj)

    def _drain_outbox(self, mb: Mailbox) -> None:
        outs = mb.outbox()
        for o in outs:
            self.publish(o.object)
        mb.confirm_published([o.hash for o in outs])

    def set_online(self, name: str, online: bool) -> None:
        self.nodes[name][2] = online

    def run(self, now: int, rounds: int = 30) -> None:
        """Work and deliver until nothing moves any more."""
        for _ in range(rounds):
            before = len(self.objects)
            for entry in self.nodes.values():
                mb, _, online = entry
                if not online:
                    continue
                run_until_idle(mb, now, BACKEND)
                self._drain_outbox(mb)
            for entry in self.nodes.values():
                mb, pos, online = entry
                if not online:
                    continue
                while entry[1] < len(self.objects):
                    obj = self.objects[entry[1]]
                    entry[1] += 1
                    mb.receive_object(obj, now)
                self._drain_outbox(mb)
            busy = any(entry[0].store.count("pow_jobs") for entry in self.nodes.values() if entry[2])
            if len(self.objects) == before and not busy:
                return
        raise AssertionError("the fake network did not settle")


@pytest.fixture
def net() -> Net:
    return Net()


def _status(mb: Mailbox, ack: str) -> str:
    return mb.get_status(ack)


def _inbox(mb: Mailbox) -> list[tuple[str, str, str, str]]:
    return [(m["fromAddress"], m["toAddress"], m["subject"], m["message"]) for m in mb.inbox_messages()]


def _two(net: Net, tmp_path: Path) -> tuple[Mailbox, Mailbox, str, str]:
    a = net.add("a", tmp_path / "a")
    b = net.add("b", tmp_path / "b")
    alice = a.create_random_address("alice", now=NOW)
    bob = b.create_random_address("bob", now=NOW)
    net.run(NOW)
    return a, b, alice, bob


# --------------------------------------------------------------------------------------------
# messages


def test_message_both_ways_with_acks(net, tmp_path):
    a, b, alice, bob = _two(net, tmp_path)
    ack1 = a.send_message(alice, bob, "hello", "hi bob", now=NOW + 10)
    assert _status(a, ack1) == "msgqueued"
    net.run(NOW + 20)
    assert _status(a, ack1) == "ackreceived"
    assert _inbox(b) == [(alice, bob, "hello", "hi bob")]
    # Bob answers: Alice's pubkey came with her message, so no getpubkey is needed.
    objects_before = len(net.objects)
    ack2 = b.send_message(bob, alice, "re: hello", "hi alice ☃", encoding=3, now=NOW + 30)
    net.run(NOW + 40)
    assert _status(b, ack2) == "ackreceived"
    assert _inbox(a) == [(bob, alice, "re: hello", "hi alice ☃")]
    types = [parse_header(o).object_type for o in net.objects[objects_before:]]
    assert sorted(types) == [OBJECT_MSG, OBJECT_MSG]  # the msg and its ack, nothing else
    # The sent records: msgid became the object's inventory hash; the ack is the one in the msg.
    rec = a.sent_message_by_ackdata(ack1)
    assert rec["status"] == "ackreceived" and rec["toAddress"] == bob and rec["ackData"] == ack1
    assert any(Outgoing(o, "msg").hash.hex() == rec["msgid"] for o in net.objects)
    assert a.sent_message(rec["msgid"]) == rec
    assert any(is_ack_for(o, bytes.fromhex(ack1)) for o in net.objects)
    inbox = b.inbox_messages()[0]
    assert inbox["encodingType"] == 2 and inbox["read"] == 0 and inbox["receivedTime"] == NOW + 20
    assert a.counters()["acksReceived"] == 1


def test_pubkey_found_in_inventory_no_getpubkey(net, tmp_path):
    """Bob's pubkey was published before Alice needed it: she finds it by tag (10.3.3)."""
    a, b, alice, bob = _two(net, tmp_path)
    a.send_message(alice, bob, "s", "b", now=NOW + 5)
    net.run(NOW + 5)
    types = [parse_header(o).object_type for o in net.objects]
    assert types.count(0) == 0  # no getpubkey on the wire


def test_getpubkey_path(net, tmp_path):
    """The recipient's pubkey is nowhere (it expired): getpubkey, answer, then the msg."""
    a, b, alice, bob = _two(net, tmp_path)
    later = NOW + 29 * DAY  # Bob's pubkey expired and he may answer again (28-day rule)
    net.objects.clear()
    net.hashes.clear()
    for entry in net.nodes.values():
        entry[1] = 0
    ack = a.send_message(alice, bob, "who are you", "?", now=later)
    # First step only: Alice asks, the status says so.
    jobs = a.tick(later)
    assert kinds(jobs) == ["getpubkey"] and _status(a, ack) == "doingpubkeypow"
    nonce = solve_job(jobs[0], BACKEND)
    outs = a.pow_done(jobs[0].job_id, nonce, later)
    assert kinds(outs) == ["getpubkey"] and _status(a, ack) == "awaitingpubkey"
    # A second message to Bob reuses the getpubkey that is out.
    ack_b = a.send_message(alice, bob, "second", "msg", now=later)
    assert a.tick(later) == [] and _status(a, ack_b) == "awaitingpubkey"
    net.run(later)
    assert _status(a, ack) == "ackreceived" and _status(a, ack_b) == "ackreceived"
    assert sorted(m[2] for m in _inbox(b)) == ["second", "who are you"]
    types = [parse_header(o).object_type for o in net.objects]
    assert types.count(0) == 1 and types.count(OBJECT_PUBKEY) == 1
    assert a.awaited_tags() == {}


def test_getpubkey_answered_once_per_28_days(net, tmp_path):
    b = net.add("b", tmp_path / "b")
    bob = b.create_random_address("bob", now=NOW)
    net.run(NOW)
    a = net.add("a", tmp_path / "a", inventory_lookup=None, catch_up=False)
    alice = a.create_random_address("alice", now=NOW)
    # Without an inventory lookup Alice must ask; Bob sent his pubkey moments ago: no answer.
    ack = a.send_message(alice, bob, "s", "b", now=NOW + 60)
    net.run(NOW + 60)
    assert _status(a, ack) == "awaitingpubkey"
    assert [parse_header(o).object_type for o in net.objects].count(OBJECT_PUBKEY) == 2


def test_getpubkey_is_resent_with_doubled_ttl(net, tmp_path):
    a = net.add("a", tmp_path / "a")
    alice = a.create_random_address("alice", now=NOW)
    nobody = encode_address(4, 1, b"\x00" + bytes(range(1, 20)))
    ack = a.send_message(alice, nobody, "s", "b", now=NOW)
    net.run(NOW)
    getpubkeys = [o for o in net.objects if parse_header(o).object_type == 0]
    assert len(getpubkeys) == 1 and _status(a, ack) == "awaitingpubkey"
    ttl1 = parse_header(getpubkeys[0]).expires_time - NOW
    assert abs(ttl1 - int(2.5 * DAY)) <= 300
    net.run(NOW + int(1.1 * ttl1) - 100)
    assert len([o for o in net.objects if parse_header(o).object_type == 0]) == 1
    t2 = NOW + int(1.1 * ttl1) + 10
    net.run(t2)
    getpubkeys = [o for o in net.objects if parse_header(o).object_type == 0]
    assert len(getpubkeys) == 2 and _status(a, ack) == "awaitingpubkey"
    assert abs(parse_header(getpubkeys[1]).expires_time - t2 - 5 * DAY) <= 300


def test_message_resent_after_ttl_with_doubling(net, tmp_path):
    a, b, alice, bob = _two(net, tmp_path)
    net.set_online("b", False)
    ack = a.send_message(alice, bob, "anyone?", "x", ttl=3600, now=NOW)
    net.run(NOW)
    assert _status(a, ack) == "msgsent"
    msgs = [o for o in net.objects if parse_header(o).object_type == OBJECT_MSG and len(o) > 200]
    assert len(msgs) == 1 and abs(parse_header(msgs[0]).expires_time - NOW - 3600) <= 300
    net.run(NOW + 3900)  # < 1.1 x 3600 since the send: nothing happens
    assert len([o for o in net.objects if parse_header(o).object_type == OBJECT_MSG]) == 1  # Bob is away: no ack
    t = NOW + 4000
    net.run(t)
    msgs = [o for o in net.objects if parse_header(o).object_type == OBJECT_MSG and len(o) > 200]
    assert len(msgs) == 2 and _status(a, ack) == "msgsent"
    assert abs(parse_header(msgs[1]).expires_time - t - 7200) <= 300
    # Bob comes back: he gets both copies, stores one message per copy (different signatures),
    # and his acks (same ackdata) set the status.
    net.set_online("b", True)
    net.run(t + 10)
    assert _status(a, ack) == "ackreceived"
    assert {m[2] for m in _inbox(b)} == {"anyone?"}


def test_resend_ttl_is_capped_at_28_days(net, tmp_path):
    a, b, alice, bob = _two(net, tmp_path)
    net.set_online("b", False)
    ack = a.send_message(alice, bob, "s", "b", ttl=MSG_TTL_MAX, now=NOW)
    net.run(NOW)
    t = NOW + int(1.1 * MSG_TTL_MAX) + 1
    net.run(t)
    msgs = [o for o in net.objects if parse_header(o).object_type == OBJECT_MSG and len(o) > 200]
    assert len(msgs) == 2
    assert parse_header(msgs[1]).expires_time - t <= RESEND_TTL_CAP + 300
    assert a.sent_message_by_ackdata(ack)["status"] == "msgsent"


def test_stop_resending(net, tmp_path):
    cfg = MailboxConfig(min_ntpb=1, min_extra=1, stop_resending_after=3600)
    a = net.add("a", tmp_path / "a", cfg)
    b = net.add("b", tmp_path / "b")
    alice, bob = a.create_random_address(now=NOW), b.create_random_address(now=NOW)
    net.run(NOW)
    net.set_online("b", False)
    a.send_message(alice, bob, "s", "b", ttl=3600, now=NOW)
    net.run(NOW)
    net.run(NOW + 5 * 3600)
    assert len([o for o in net.objects if parse_header(o).object_type == OBJECT_MSG and len(o) > 200]) == 1


def test_offline_recipient_gets_the_message_later(net, tmp_path):
    a, b, alice, bob = _two(net, tmp_path)
    net.set_online("b", False)
    ack = a.send_message(alice, bob, "while you were out", "...", now=NOW + 100)
    net.run(NOW + 100)
    assert _status(a, ack) == "msgsent" and _inbox(b) == []
    net.set_online("b", True)
    net.run(NOW + 500)
    assert _status(a, ack) == "ackreceived" and len(_inbox(b)) == 1


def test_message_to_self(net, tmp_path):
    a = net.add("a", tmp_path / "a")
    alice = a.create_random_address("alice", now=NOW)
    other = a.create_random_address("other", now=NOW)
    ack = a.send_message(alice, other, "note", "to myself", encoding=1, now=NOW)
    net.run(NOW)
    assert _status(a, ack) == "msgsentnoackexpected"
    assert _inbox(a) == [(alice, other, "", "to myself")]  # trivial encoding: body only


# --------------------------------------------------------------------------------------------
# broadcasts and chans


def test_broadcast_reaches_subscribers_only(net, tmp_path):
    a = net.add("a", tmp_path / "a")
    c = net.add("c", tmp_path / "c")
    d = net.add("d", tmp_path / "d")
    alice = a.create_random_address("alice", now=NOW)
    c.create_random_address(now=NOW)
    d.create_random_address(now=NOW)
    c.add_subscription(alice, "alice's news")
    handle = a.send_broadcast(alice, "news", "the news", now=NOW + 1)
    assert _status(a, handle) == "broadcastqueued"
    net.run(NOW + 1)
    assert _status(a, handle) == "broadcastsent"
    assert _inbox(c) == [(alice, BROADCAST_TO_ADDRESS, "news", "the news")]
    assert _inbox(d) == []
    assert a.sent_messages()[0]["toAddress"] == BROADCAST_TO_ADDRESS
    # Delivered again: still one row.
    for obj in net.objects:
        c.receive_object(obj, NOW + 2)
    assert len(_inbox(c)) == 1
    # Unsubscribed: the next broadcast is not stored.
    c.delete_subscription(alice)
    a.send_broadcast(alice, "more", "news", now=NOW + 3)
    net.run(NOW + 3)
    assert len(_inbox(c)) == 1
    assert c.counters()["numberOfBroadcastsProcessed"] >= 2


def test_v3_broadcast(net, tmp_path):
    a = net.add("a", tmp_path / "a")
    c = net.add("c", tmp_path / "c")
    [old] = a.create_deterministic_addresses("old style", version=3, now=NOW)
    assert decode_address(old).version == 3
    c.add_subscription(old)
    a.send_broadcast(old, "v4 broadcast", "from a v3 address", now=NOW)
    net.run(NOW)
    assert _inbox(c) == [(old, BROADCAST_TO_ADDRESS, "v4 broadcast", "from a v3 address")]


def test_chan_message_reaches_both_members(net, tmp_path):
    a = net.add("a", tmp_path / "a")
    b = net.add("b", tmp_path / "b")
    chan = a.create_chan("general", now=NOW)
    assert chan == Identity.for_chan("general").address
    b.join_chan("general", chan, now=NOW)
    alice = a.create_random_address(now=NOW)
    net.run(NOW)
    objects_before = len(net.objects)
    ack = a.send_message(alice, chan, "to all", "hello chan", now=NOW + 5)
    net.run(NOW + 5)
    assert _status(a, ack) == "msgsentnoackexpected"
    assert _inbox(a) == [(alice, chan, "to all", "hello chan")]
    assert _inbox(b) == [(alice, chan, "to all", "hello chan")]
    # No pubkey, getpubkey or ack for a chan: only the msg itself.
    assert len(net.objects) == objects_before + 1
    listed = {x["address"]: x for x in b.list_addresses()}
    assert listed[chan]["chan"] is True and listed[chan]["label"] == "[chan] general"


def test_chan_address_matches_reference():
    """The reference's example chan (9.6)."""
    assert Identity.for_chan("bitmessage").address == "BM-2cWy7cvHoq3f1rYMerRJp8PT653jjSuEdY"


# --------------------------------------------------------------------------------------------
# duplicates, blocking, difficulty


def test_duplicate_delivery_is_stored_once_and_acked_once(net, tmp_path):
    a, b, alice, bob = _two(net, tmp_path)
    a.send_message(alice, bob, "once", "only", now=NOW + 1)
    outs = run_until_idle(a, NOW + 1, BACKEND)
    [msg] = [o.object for o in outs if o.kind == "msg"]
    first = b.receive_object(msg, NOW + 2)
    assert kinds(first) == ["ack"]
    assert b.receive_object(msg, NOW + 3) == []
    assert b.receive_object(msg, NOW + 4) == []
    assert len(b.inbox_messages()) == 1
    # A restarted recipient does not store or ack it again either.
    b.close()
    b2 = Mailbox(tmp_path / "b", LOW)
    assert b2.receive_object(msg, NOW + 5) == [] and len(b2.inbox_messages()) == 1


def test_blacklist_and_whitelist(net, tmp_path):
    a, b, alice, bob = _two(net, tmp_path)
    b.add_to_list("black", alice, "spammer")
    ack = a.send_message(alice, bob, "buy", "now", now=NOW + 1)
    net.run(NOW + 1)
    assert _inbox(b) == [] and _status(a, ack) == "msgsent"  # no inbox row, no ack
    b.remove_from_list("black", alice)
    b.set_access_mode("white")
    a.send_message(alice, bob, "again", "x", now=NOW + 2)
    net.run(NOW + 2)
    assert _inbox(b) == []
    b.add_to_list("white", alice)
    a.send_message(alice, bob, "friend", "x", now=NOW + 3)
    net.run(NOW + 3)
    assert [m[2] for m in _inbox(b)] == ["friend"]
    with pytest.raises(ApiError) as e:
        b.set_access_mode("grey")
    assert e.value.code == 0


def test_recipient_difficulty_is_used_and_checked(net, tmp_path):
    a = net.add("a", tmp_path / "a")
    b = net.add("b", tmp_path / "b")
    alice = a.create_random_address(now=NOW)
    bob = b.create_random_address(total_difficulty=3, small_message_difficulty=2, now=NOW)
    net.run(NOW)
    ack = a.send_message(alice, bob, "s", "b", now=NOW + 1)
    jobs = a.tick(NOW + 1)
    assert kinds(jobs) == ["ack"] and (jobs[0].ntpb, jobs[0].extra) == (1, 1)
    outs = a.pow_done(jobs[0].job_id, solve_job(jobs[0], BACKEND), NOW + 1)
    [msg_job] = [j for j in outs if isinstance(j, PowJob)]
    assert msg_job.kind == "msg" and (msg_job.ntpb, msg_job.extra) == (3, 2)
    [msg_out] = [o for o in a.pow_done(msg_job.job_id, solve_job(msg_job, BACKEND), NOW + 1) if isinstance(o, Outgoing)]
    assert check_pow(msg_out.object, NOW + 1, 3, 2, min_ntpb=1, min_extra=1)
    # Bob checks his demand: a msg whose PoW meets only the network minimum is ignored...
    weak = Mailbox(tmp_path / "weak", LOW)
    weak_alice = weak.create_random_address(now=NOW)
    weak.store.put_pubkey(bob, 4, _pubkey_data_with_difficulty(b, bob, 1, 1), NOW)
    weak.send_message(weak_alice, bob, "cheap", "x", now=NOW + 1)
    [weak_ack] = [j for j in weak.tick(NOW + 1) if j.kind == "ack"]
    [cheap_job] = weak.pow_done(weak_ack.job_id, solve_job(weak_ack, BACKEND), NOW + 1)
    nonce = _nonce_between(cheap_job, NOW + 1, (1, 1), (3, 2))
    [cheap] = [o.object for o in weak.pow_done(cheap_job.job_id, nonce, NOW + 1) if o.kind == "msg"]
    assert b.receive_object(cheap, NOW + 1) == [] and b.inbox_messages() == []
    # ...unless the sender is in Bob's address book.
    b.add_addressbook(weak_alice, "friend")
    assert kinds(b.receive_object(cheap, NOW + 2)) == ["ack"]
    assert [m["fromAddress"] for m in b.inbox_messages()] == [weak_alice]
    b.receive_object(msg_out.object, NOW + 2)
    assert len(b.inbox_messages()) == 2
    assert _status(a, ack) == "msgsent"


def _nonce_between(job: PowJob, now: int, enough: tuple[int, int], too_little_for: tuple[int, int]) -> int:
    """A nonce whose PoW meets ``enough`` but not ``too_little_for`` (receiver's rule at ``now``)."""
    start = 0
    while True:
        sol = BACKEND.search(job.initial_hash, job.target, start)
        obj = sol.nonce.to_bytes(8, "big") + job.body
        assert check_pow(obj, now, *enough, min_ntpb=1, min_extra=1)
        if not check_pow(obj, now, *too_little_for, min_ntpb=1, min_extra=1):
            return sol.nonce
        start = sol.nonce + 1


def _pubkey_data_with_difficulty(mb: Mailbox, address: str, ntpb: int, extra: int) -> bytes:
    from bmnode.crypto.identity import PubkeyRecord
    from bmnode.protocol.objects import PubkeyData

    ident = mb.identity(address)
    pk = ident.pubkey_data()
    rec = PubkeyRecord(ident.version, ident.stream, PubkeyData(pk.behavior_bitfield, pk.pub_signing_key, pk.pub_encryption_key, ntpb, extra))
    return rec.data


def test_too_difficult(net, tmp_path):
    cfg = MailboxConfig(min_ntpb=1, min_extra=1, max_acceptable_ntpb=10)
    a = net.add("a", tmp_path / "a", cfg)
    b = net.add("b", tmp_path / "b")
    alice = a.create_random_address(now=NOW)
    bob = b.create_random_address(total_difficulty=50, now=NOW)
    net.run(NOW)
    ack = a.send_message(alice, bob, "s", "b", now=NOW + 1)
    net.run(NOW + 1)
    assert _status(a, ack) == "toodifficult"


# --------------------------------------------------------------------------------------------
# crash and restart


def test_restart_mid_pipeline_resumes_and_delivers_once(net, tmp_path):
    a, b, alice, bob = _two(net, tmp_path)
    ack = a.send_message(alice, bob, "survive", "the crash", now=NOW + 1)
    jobs = a.tick(NOW + 1)
    assert kinds(jobs) == ["ack"] and _status(a, ack) == "doingmsgpow"
    # Crash with the ack's PoW in flight: a new Mailbox on the same file issues the same job.
    a.close()
    a = Mailbox(tmp_path / "a", LOW, inventory_lookup=net.lookup)
    net.replace("a", a)
    again = a.tick(NOW + 2)
    assert kinds(again) == ["ack"] and again[0].body == jobs[0].body
    assert a.tick(NOW + 2) == []  # issued once per process lifetime
    outs = a.pow_done(again[0].job_id, solve_job(again[0], BACKEND), NOW + 2)
    [msg_job] = outs
    # Crash with the msg's PoW in flight.
    a.close()
    a = Mailbox(tmp_path / "a", LOW, inventory_lookup=net.lookup)
    net.replace("a", a)
    [msg_again] = a.tick(NOW + 3)
    assert msg_again.kind == "msg" and msg_again.body == msg_job.body
    outs = a.pow_done(msg_again.job_id, solve_job(msg_again, BACKEND), NOW + 3)
    assert kinds(outs) == ["msg"] and _status(a, ack) == "msgsent"
    assert a.pow_done(msg_again.job_id, 0, NOW + 3) == []  # a late duplicate answer is ignored
    # Crash before the object reached the network: the outbox still has it.
    a.close()
    a = Mailbox(tmp_path / "a", LOW, inventory_lookup=net.lookup)
    net.replace("a", a)
    assert [o.object for o in a.outbox()] == [outs[0].object]
    assert a.tick(NOW + 4) == []
    net.run(NOW + 4)
    assert _status(a, ack) == "ackreceived"
    assert _inbox(b) == [(alice, bob, "survive", "the crash")]
    assert a.outbox() == []


def test_restart_while_awaiting_pubkey(net, tmp_path):
    a = net.add("a", tmp_path / "a", inventory_lookup=None)
    alice = a.create_random_address(now=NOW)
    run_until_idle(a, NOW, BACKEND)
    later = NOW + 29 * DAY
    b = net.add("b", tmp_path / "b")
    bob = b.create_random_address(now=NOW)
    run_until_idle(b, NOW, BACKEND)  # Bob's pubkey is made but never reaches the network
    b.confirm_published([o.hash for o in b.outbox()])
    ack = a.send_message(alice, bob, "s", "b", now=later)
    net.set_online("b", False)
    net.run(later)
    assert _status(a, ack) == "awaitingpubkey" and len(a.awaited_tags()) == 1
    a.close()
    a = Mailbox(tmp_path / "a", LOW)
    net.replace("a", a)
    assert len(a.awaited_tags()) == 1 and a.tick(later + 1) == []  # the getpubkey is still out
    net.set_online("b", True)
    net.run(later + 2)
    assert _status(a, ack) == "ackreceived" and len(_inbox(b)) == 1


def test_stale_job_is_rebuilt(net, tmp_path):
    a, b, alice, bob = _two(net, tmp_path)
    ack = a.send_message(alice, bob, "s", "b", ttl=3600, now=NOW + 1)
    [ack_job] = a.tick(NOW + 1)
    a.close()
    a = Mailbox(tmp_path / "a", LOW, inventory_lookup=net.lookup)
    net.replace("a", a)
    # Back after a week: the old job's object would be expired; it is dropped and rebuilt.
    t = NOW + 7 * DAY
    [fresh] = a.tick(t)
    assert fresh.kind == "ack" and fresh.job_id != ack_job.job_id and fresh.expires_time > t
    complete(a, [fresh], t, BACKEND)
    net.run(t)
    assert _status(a, ack) == "ackreceived"


def test_bad_nonce_is_refused_and_job_kept(net, tmp_path):
    a = net.add("a", tmp_path / "a")
    a.create_random_address(now=NOW)
    [job] = a.tick(NOW)
    assert job.kind == "pubkey"
    bad = next(n for n in range(1000) if not check_pow(
        (n).to_bytes(8, "big") + job.body, NOW, 1, 1, min_ntpb=1, min_extra=1))
    with pytest.raises(PowError):
        a.pow_done(job.job_id, bad, NOW)
    [again] = a.tick(NOW)
    assert again.job_id == job.job_id
    assert kinds(a.pow_done(job.job_id, solve_job(job, BACKEND), NOW)) == ["pubkey"]


# --------------------------------------------------------------------------------------------
# garbage from the network


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400))
def test_garbage_objects_are_ignored(tmp_path_factory, data):
    mb = _garbage_box(tmp_path_factory)
    assert mb.receive_object(data, NOW) == []


_BOXES: dict[str, Mailbox] = {}


def _garbage_box(factory) -> Mailbox:
    if "g" not in _BOXES:
        mb = Mailbox(factory.mktemp("garbage"), LOW)
        mb.create_random_address(now=NOW)
        mb.add_subscription(mb.create_random_address(now=NOW))
        _BOXES["g"] = mb
    return _BOXES["g"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=600), flip=st.integers(min_value=0, max_value=4800))
def test_damaged_real_objects_are_ignored(tmp_path_factory, cut, flip):
    if "pair" not in _BOXES:
        net = Net()
        base = tmp_path_factory.mktemp("damaged")
        a = net.add("a", base / "a")
        b = net.add("b", base / "b")
        alice, bob = a.create_random_address(now=NOW), b.create_random_address(now=NOW)
        net.run(NOW)
        a.send_message(alice, bob, "s", "b", now=NOW)
        net.run(NOW)
        _BOXES["pair"] = b
        _BOXES["objects"] = net.objects  # type: ignore[assignment]
    b = _BOXES["pair"]
    for obj in _BOXES["objects"]:  # type: ignore[union-attr]
        damaged = bytearray(obj[:cut] if cut else obj)
        if damaged and flip // 8 < len(damaged):
            damaged[flip // 8] ^= 1 << (flip % 8)
        assert isinstance(b.receive_object(bytes(damaged), NOW), list)
    assert len(b.inbox_messages()) == 1


# --------------------------------------------------------------------------------------------
# API-level operations and their errors (14.4, 14.5)


def _code(fn, *args, **kw) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args, **kw)
    assert str(info.value) == f"API Error {info.value.code:04d}: {info.value.message}"
    return info.value


@pytest.fixture
def box(tmp_path) -> Mailbox:
    mb = Mailbox(tmp_path / "box", LOW)
    yield mb
    mb.close()


def _raw_address(data: bytes) -> str:
    from bmnode.crypto.addresses import encode_address_data

    return encode_address_data(data)


RIPE = bytes(range(1, 21))
BAD_ADDRESSES = [
    ("BM-2cWzSnwjJ7yRP3nLEWUV5LisTZyREWSzUL", 8, "Checksum failed for address: BM-2cWzSnwjJ7yRP3nLEWUV5LisTZyREWSzUL"),
    ("BM-0OIl", 9, "Invalid characters in address: BM-0OIl"),
    ("", 9, "Invalid characters in address: BM-"),
    (_raw_address(b"\x05\x01" + RIPE), 10, None),
    (_raw_address(b"\xfd\x00\x04\x01" + RIPE), 26, None),
    (_raw_address(b"\x04\x01\x01\x02\x03"), 7, None),
    (_raw_address(b"\x01\x01" + RIPE), 11, None),
    (encode_address(4, 2, b"\x00" + RIPE[1:]), 12, "The stream number must be 1. Others aren't supported. Check the address."),
]


@pytest.mark.parametrize(("address", "code", "text"), BAD_ADDRESSES)
def test_address_arguments_give_the_reference_errors(box, address, code, text):
    alice = box.create_random_address(now=NOW)
    for call in (
        lambda: box.send_message(alice, address, "s", "b"),
        lambda: box.send_message(address, alice, "s", "b"),
        lambda: box.add_addressbook(address, "x"),
        lambda: box.add_subscription(address),
        lambda: box.delete_address(address),
        lambda: box.join_chan("name", address),
    ):
        e = _code(call)
        assert e.code == code
        if text is not None:
            assert e.message == text
    if code == 7:
        assert e.message.endswith(": ripetooshort")


def test_addresses_without_prefix_are_accepted(box):
    alice = box.create_random_address(now=NOW)
    assert box.add_addressbook("  " + alice[3:] + " ", "me") == alice
    assert box.list_addressbook() == [{"label": "me", "address": alice}]
    box.enable_address(alice[3:], False)
    assert box.list_addresses()[0]["enabled"] is False


def test_send_message_checks(box):
    alice = box.create_random_address(now=NOW)
    bob = box.create_random_address(now=NOW)
    stranger = encode_address(4, 1, b"\x00" + RIPE[1:])
    for enc in (0, 4, True):
        assert _code(box.send_message, alice, bob, "s", "b", enc).code == 6
    assert _code(box.send_message, alice, bob, "s", "x" * (2**18 - 500)).code == 27
    box.send_message(alice, bob, "", "x" * (2**18 - 500))  # exactly at the limit
    e = _code(box.send_message, stranger, bob, "s", "b")
    assert e.code == 13 and e.message == "Could not find your fromAddress in the keys.dat file."
    box.enable_address(alice, False)
    assert _code(box.send_message, alice, bob, "s", "b").code == 14
    assert _code(box.send_broadcast, alice, "s", "b").code == 14
    assert _code(box.send_broadcast, stranger, "s", "b").code == 13
    box.enable_address(alice, True)
    # TTL is clamped to 1 hour ... 28 days; the status starts at msgqueued.
    short = box.send_message(alice, stranger, "s", "b", 2, 10, now=NOW)
    long = box.send_message(alice, stranger, b"s", b"b", 3, 10**9, now=NOW)
    assert box.store.sent_by_ackdata(bytes.fromhex(short)).ttl == 3600
    assert box.store.sent_by_ackdata(bytes.fromhex(long)).ttl == MSG_TTL_MAX
    assert len(short) == 76 and box.get_status(short) == "msgqueued"
    assert _code(box.send_message, alice, bob, "s", "b", 2, "soon").code == 0


def test_get_status(box):
    assert _code(box.get_status, "00").code == 15
    assert _code(box.get_status, "zz" * 38).code == 22
    assert box.get_status("00" * 38) == "notfound"
    alice = box.create_random_address(now=NOW)
    handle = box.send_broadcast(alice, "s", "b", now=NOW)
    assert box.get_status(handle) == "broadcastqueued"
    assert box.get_status(bytes.fromhex(handle)) == "broadcastqueued"


def test_deterministic_addresses(box):
    tiger = b"TIGER, tiger, burning bright. In the forests of the night"
    assert box.get_deterministic_address(tiger, 4, 1) == "BM-2cWzSnwjJ7yRP3nLEWUV5LisTZyREWSzUK"
    assert box.get_deterministic_address(tiger, 3, 1) == "BM-2DBPTgeSawWYZceFD69AbDT5q4iUWtj1ZN"
    assert box.list_addresses() == []  # not saved
    e = _code(box.get_deterministic_address, tiger, 5, 1)
    assert e.code == 2 and e.message == "The address version number currently must be 3 or 4. 5 isn't supported."
    assert _code(box.get_deterministic_address, tiger, 4, 2).code == 3
    assert _code(box.get_deterministic_address, b"", 4, 1).code == 1
    made = box.create_deterministic_addresses(tiger, 2, now=NOW)
    assert made[0] == "BM-2cWzSnwjJ7yRP3nLEWUV5LisTZyREWSzUK" and len(made) == 2
    # Already present: not re-added, left out of the result; the third one is new.
    again = box.create_deterministic_addresses(tiger, 3, now=NOW)
    assert len(again) == 1 and again[0] not in made
    assert [a["address"] for a in box.list_addresses()] == made + again
    assert {a["label"] for a in box.list_addresses()} == {"unused API address"}
    # Their pubkeys are published (one job each); chans' never.
    assert kinds(box.tick(NOW)) == ["pubkey"] * 3
    e = _code(box.create_deterministic_addresses, tiger, 1, 2)
    assert e.code == 2 and e.message.endswith("2 isn't supported.")
    assert _code(box.create_deterministic_addresses, tiger, 1, 4, 2).code == 3
    assert _code(box.create_deterministic_addresses, tiger, 0).code == 4
    assert _code(box.create_deterministic_addresses, tiger, 1000).code == 5
    assert _code(box.create_deterministic_addresses, "", 1).code == 1
    e = _code(box.create_deterministic_addresses, tiger, 1, 4, 1, 1)
    assert e.code == 23 and e.message.startswith("Bool expected in eighteenByteRipe")
    short = box.create_deterministic_addresses("short one", 1, 0, 0, True, now=NOW)[0]
    assert decode_address(short).ripe[:2] == b"\x00\x00"


def test_random_addresses(box):
    a = box.create_random_address(b"caf\xc3\xa9", now=NOW)
    short = box.create_random_address("s", True, 2, 3, now=NOW)
    listed = box.list_addresses()
    assert listed[0] == {"label": "café", "address": a, "stream": 1, "enabled": True, "chan": False}
    assert decode_address(short).ripe[:2] == b"\x00\x00" and decode_address(short).version == 4
    ident = box.identity(short)
    assert (ident.nonce_trials_per_byte, ident.extra_bytes) == (2, 3)
    assert _code(box.create_random_address, b"\xff\xfe").code == 17
    assert _code(box.create_random_address, "x", "yes").code == 23
    box.set_label(a, "renamed")
    assert box.list_addresses()[0]["label"] == "renamed"


def test_chans(box):
    chan = box.create_chan("general", now=NOW)
    assert _code(box.create_chan, "general").code == 24
    assert _code(box.create_chan, "").code == 1
    assert _code(box.join_chan, "general", chan).code == 24
    other = Identity.for_chan("other").address
    assert _code(box.join_chan, "general", other).code == 18
    assert _code(box.join_chan, "", other).code == 1
    box.join_chan("other", other, now=NOW)
    assert box.tick(NOW) == []  # chans never publish a pubkey
    alice = box.create_random_address(now=NOW)
    assert _code(box.leave_chan, alice).code == 25
    assert _code(box.leave_chan, encode_address(4, 1, b"\x00" + RIPE[1:])).code == 13
    box.leave_chan(other)
    assert [a["address"] for a in box.list_addresses()] == [chan, alice]
    assert _code(box.delete_address, other).code == 13
    assert _code(box.enable_address, other).code == 13
    box.delete_address(chan)
    assert [a["address"] for a in box.list_addresses()] == [alice]


def test_addressbook_and_subscriptions(box):
    alice = Identity.for_chan("x").address
    assert box.add_addressbook(alice, "Alice") == alice
    e = _code(box.add_addressbook, alice, "again")
    assert e.code == 16 and e.message == "You already have this address in your address book."
    assert _code(box.add_addressbook, alice, b"\xff").code == 17
    bob = Identity.for_chan("y").address
    box.add_addressbook(bob, "Bob")
    assert box.list_addressbook("Bob") == [{"label": "Bob", "address": bob}]
    box.delete_addressbook(bob)
    box.delete_addressbook(bob)  # "if it existed"
    assert box.list_addressbook() == [{"label": "Alice", "address": alice}]
    box.add_subscription(alice, "news")
    e = _code(box.add_subscription, alice)
    assert e.code == 16 and e.message == "You are already subscribed to that address."
    assert box.list_subscriptions() == [{"label": "news", "address": alice, "enabled": True}]
    box.delete_subscription("not even an address")
    box.delete_subscription(alice[3:])
    assert box.list_subscriptions() == []


def test_inbox_sent_queries_and_trash(net, tmp_path):
    a, b, alice, bob = _two(net, tmp_path)
    acks = [a.send_message(alice, bob, f"s{i}", f"b{i}", now=NOW + i) for i in range(3)]
    net.run(NOW + 10)
    ids = b.inbox_message_ids()
    assert len(ids) == 3 and [m["msgid"] for m in b.inbox_messages()] == ids
    assert b.inbox_messages_by_receiver(bob) == b.inbox_messages()
    assert b.inbox_messages_by_receiver(alice) == []
    m = b.inbox_message(ids[0], True)
    assert m["read"] == 1 and b.inbox_message(ids[0])["read"] == 1
    assert b.inbox_message(ids[0], False)["read"] == 0
    assert _code(b.inbox_message, ids[0], "yes").code == 23
    assert _code(b.inbox_message, "xyz").code == 22
    assert b.inbox_message("00" * 32) is None
    assert b.trash_message(ids[0]) == 1
    assert b.inbox_message_ids() == ids[1:] and b.inbox_message(ids[0]) is not None
    assert b.undelete_message(ids[0]) == 1 and b.inbox_message_ids() == ids
    b.trash_inbox_message(ids[1])
    assert b.delete_and_vacuum() == 1 and b.inbox_message(ids[1]) is None
    # Sent side.
    sent = a.sent_messages()
    assert [s["ackData"] for s in sent] == acks and all(s["status"] == "ackreceived" for s in sent)
    assert a.sent_message_ids() == [s["msgid"] for s in sent]
    assert a.sent_messages_by_sender(alice) == sent and a.sent_messages_by_sender(bob) == []
    assert a.trash_sent_message(sent[0]["msgid"]) == 1
    assert a.trash_sent_message_by_ackdata(acks[1]) == 1
    assert a.sent_message_ids() == [sent[2]["msgid"]]
    assert a.sent_message_by_ackdata(acks[0])["msgid"] == sent[0]["msgid"]  # still there
    assert a.undelete_message(sent[0]["msgid"]) == 1
    assert len(a.sent_messages()) == 2
    c = a.counters()
    assert c["numberOfPubkeysProcessed"] >= 1 and c["numberOfMessagesProcessed"] >= 3


def test_disabled_identity_neither_decrypts_nor_answers(net, tmp_path):
    a, b, alice, bob = _two(net, tmp_path)
    b.enable_address(bob, False)
    ack = a.send_message(alice, bob, "s", "b", now=NOW + 1)
    net.run(NOW + 1)
    assert _status(a, ack) == "msgsent" and b.inbox_messages() == []
    b.enable_address(bob, True)
    a2 = a.send_message(alice, bob, "t", "b", now=NOW + 2)
    net.run(NOW + 2)
    assert _status(a, a2) == "ackreceived" and [m["subject"] for m in b.inbox_messages()] == ["t"]


def test_disseminate_object(box):
    from bmnode.protocol.objects import encode_object_body

    body = encode_object_body(NOW + 3600, 42, 1, 1, b"payload")
    assert box.disseminate_object(b"\x00" * 8 + body, 1, 1, now=NOW) is None
    [job] = box.tick(NOW)
    assert job.kind == "object"
    [out] = box.pow_done(job.job_id, solve_job(job, BACKEND), NOW)
    assert out.object[8:] == body
    done = out.object.hex()
    assert box.disseminate_object(done, now=NOW) == out.hash.hex()
    assert _code(box.disseminate_object, "00", now=NOW).code == 22
    bad = next(n for n in range(1, 10**4) if not check_pow(n.to_bytes(8, "big") + body, NOW, 1, 1, min_ntpb=1, min_extra=1))
    assert _code(box.disseminate_object, bad.to_bytes(8, "big") + body, now=NOW).code == 21  # PoW too weak


# --------------------------------------------------------------------------------------------
# options and odds and ends


def test_force_pow_sends_a_too_difficult_message(net, tmp_path):
    cfg = MailboxConfig(min_ntpb=1, min_extra=1, max_acceptable_ntpb=2)
    a = net.add("a", tmp_path / "a", cfg)
    b = net.add("b", tmp_path / "b")
    alice = a.create_random_address(now=NOW)
    bob = b.create_random_address(total_difficulty=3, now=NOW)
    net.run(NOW)
    ack = a.send_message(alice, bob, "worth it", "x", now=NOW + 1)
    net.run(NOW + 1)
    assert _status(a, ack) == "toodifficult" and not a.force_pow("00" * 38)
    assert a.force_pow(ack) and _status(a, ack) == "forcepow"
    net.run(NOW + 2)
    assert _status(a, ack) == "ackreceived" and not a.force_pow(ack)


def test_subscribing_opens_broadcasts_already_in_the_inventory(net, tmp_path):
    a = net.add("a", tmp_path / "a")
    alice = a.create_random_address(now=NOW)
    a.send_broadcast(alice, "old news", "from before", now=NOW)
    net.run(NOW)
    c = net.add("c", tmp_path / "c", catch_up=False)
    c.add_subscription(alice, "alice", now=NOW + 5)
    assert _inbox(c) == [(alice, BROADCAST_TO_ADDRESS, "old news", "from before")]


def test_validated_objects_skip_the_relay_check(net, tmp_path):
    a, b, alice, bob = _two(net, tmp_path)
    a.send_message(alice, bob, "s", "b", now=NOW)
    [msg] = [o.object for o in run_until_idle(a, NOW, BACKEND) if o.kind == "msg"]
    expired_view = NOW + 30 * DAY  # the relay check would drop it as expired at this time...
    assert b.receive_object(msg, expired_view) == [] and b.inbox_messages() == []
    # ...but the net process vouches for it (it validated it on arrival).
    b.receive_object(msg, NOW + 1, validated=True)
    assert len(b.inbox_messages()) == 1


def test_without_acks(net, tmp_path):
    cfg = MailboxConfig(min_ntpb=1, min_extra=1, send_acks=False)
    a = net.add("a", tmp_path / "a")
    b = net.add("b", tmp_path / "b", cfg)
    alice = a.create_random_address(now=NOW)
    bob = b.create_random_address(now=NOW)  # advertises no does_ack
    assert b.identity(bob).does_ack is False
    net.run(NOW)
    ack = a.send_message(alice, bob, "s", "b", now=NOW + 1)
    net.run(NOW + 1)
    assert _status(a, ack) == "msgsentnoackexpected" and len(_inbox(b)) == 1


def test_concurrent_api_calls(tmp_path):
    """The API calls from several threads at once; the lock keeps every call whole."""
    import threading

    mb = Mailbox(tmp_path / "box", LOW)
    alice = mb.create_random_address(now=NOW)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(15):
                mb.send_message(alice, alice, f"{i}-{j}", "x", now=NOW)
                mb.add_addressbook(encode_address(4, 1, b"\x00" + bytes([i + 1, j + 1]) + RIPE[3:]), f"{i}/{j}")
                mb.sent_messages()
                mb.tick(NOW)
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(mb.sent_messages()) == 90 and len(mb.list_addressbook()) == 90
    mb.close()
