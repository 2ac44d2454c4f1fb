"""Known nodes (spec 4.9, 5.2, 6.2, 12.1, 12.2): adding, rating, persistence, clean-up, what
goes into addr, outbound candidates, and the addr filter."""

from __future__ import annotations

import random
import sqlite3

import pytest

from bmnode.errors import MalformedMessage, StoreError
from bmnode.net import bootstrap
from bmnode.protocol.constants import NODE_NETWORK
from bmnode.protocol.hosts import NetAddr, decode_host, network_group
from bmnode.protocol.messages import Addr
from bmnode.store.knownnodes import (
    KNOWNNODES_FILE,
    KnownNodes,
    accept_probability,
    dial_group,
    filter_addr,
    normalise_host,
)

NOW = 1_730_000_000
DAY = 86400
ONION2 = "quzwelsuziwqgpt2.onion"


@pytest.fixture
def kn(tmp_path):
    k = KnownNodes(tmp_path)
    yield k
    k.close()


def public_ip(i: int) -> str:
    """Distinct public IPv4 addresses in distinct /16 groups."""
    return f"{20 + i // 250}.{i % 250}.1.1"


class ScriptedRng:
    """randrange walks the entries in order; random() returns a fixed value."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.i = -1

    def randrange(self, n: int) -> int:
        self.i += 1
        return self.i % n

    def random(self) -> float:
        return self.value


# ---------------------------------------------------------------------------- adding


def test_add_new_then_only_newer_lastseen(kn):
    assert kn.add(1, "8.8.8.8", 8444, NOW - 100) is True
    node = kn.get(1, "8.8.8.8", 8444)
    assert (node.host, node.port, node.lastseen, node.rating, node.is_self) == ("8.8.8.8", 8444, NOW - 100, 0.0, False)
    assert kn.add(1, "8.8.8.8", 8444, NOW - 200) is False
    assert kn.get(1, "8.8.8.8", 8444).lastseen == NOW - 100  # older: ignored
    assert kn.add(1, "8.8.8.8", 8444, NOW) is False
    assert kn.get(1, "8.8.8.8", 8444).lastseen == NOW  # newer: updated
    assert kn.get(2, "8.8.8.8", 8444) is None and kn.get(1, "8.8.8.8", 8445) is None
    assert kn.count() == kn.count(1) == len(kn) == 1 and kn.streams() == [1]


def test_hosts_are_normalised():
    assert normalise_host("::ffff:1.2.3.4") == "1.2.3.4"
    assert normalise_host("[2001:DB8:0::1]") == "2001:db8::1"
    assert normalise_host("QUZWELSUZIWQGPT2.onion") == ONION2
    v3 = "a" * 56 + ".onion"
    assert normalise_host(v3.upper()) == v3
    for bad in ("example.org", "1.2.3", "", "zz.onion", "fe80::1%eth0"):
        with pytest.raises(MalformedMessage):
            normalise_host(bad)
    with pytest.raises(MalformedMessage):
        normalise_host(b"1.2.3.4")  # type: ignore[arg-type]


def test_same_node_in_different_spellings(kn):
    kn.add(1, "::ffff:9.9.9.9", 8444, NOW)
    assert kn.add(1, "9.9.9.9", 8444, NOW) is False
    assert kn.get(1, "::ffff:9.9.9.9", 8444).host == "9.9.9.9"


@pytest.mark.parametrize(
    "stream, host, port",
    [(0, "8.8.8.8", 1), (-1, "8.8.8.8", 1), (1, "8.8.8.8", 0), (1, "8.8.8.8", 65536), (1, "8.8.8.8", True), (1, "nope", 1)],
)
def test_bad_entries_give_typed_errors(kn, stream, host, port):
    with pytest.raises(MalformedMessage):
        kn.add(stream, host, port, NOW)
    assert kn.count() == 0


def test_stream_limit_except_own_addresses(tmp_path):
    with KnownNodes(tmp_path, max_per_stream=3) as kn:
        for i in range(3):
            assert kn.add(1, public_ip(i), 8444, NOW)
        assert kn.add(1, public_ip(3), 8444, NOW) is False
        assert kn.get(1, public_ip(3), 8444) is None
        assert kn.add(1, public_ip(0), 8444, NOW + 5) is False  # known ones still update
        assert kn.get(1, public_ip(0), 8444).lastseen == NOW + 5
        assert kn.add(1, ONION2, 8444, NOW, is_self=True) is True
        assert kn.count(1) == 4
        assert kn.add(2, public_ip(3), 8444, NOW)  # the limit is per stream


# ---------------------------------------------------------------------------- rating


def test_rating_steps_and_clamps(kn):
    kn.add(1, "8.8.8.8", 8444, NOW)
    kn.add(3, "8.8.8.8", 8444, NOW)
    kn.add(1, "8.8.4.4", 8444, NOW)
    for _ in range(3):
        kn.increase_rating("8.8.8.8", 8444)
    assert kn.get(1, "8.8.8.8", 8444).rating == 0.3
    assert kn.get(3, "8.8.8.8", 8444).rating == 0.3  # every stream the node is in
    assert kn.get(1, "8.8.4.4", 8444).rating == 0.0
    for _ in range(20):
        kn.increase_rating("8.8.8.8", 8444)
    assert kn.get(1, "8.8.8.8", 8444).rating == 1.0
    for _ in range(15):
        kn.decrease_rating("8.8.8.8", 8444)
    assert kn.get(1, "8.8.8.8", 8444).rating == -0.5  # exactly, after ten +-0.1 steps below 1
    for _ in range(30):
        kn.decrease_rating("8.8.8.8", 8444)
    assert kn.get(1, "8.8.8.8", 8444).rating == -1.0
    kn.decrease_rating("1.1.1.1", 1)  # unknown node: nothing happens
    assert kn.count() == 3


def test_accept_probability():
    assert accept_probability(0) == pytest.approx(0.05)
    assert accept_probability(0.5) == pytest.approx(0.1)
    assert accept_probability(-1) == pytest.approx(0.025)
    assert accept_probability(0.95) == pytest.approx(1.0)
    assert accept_probability(1) == 1.0 and accept_probability(0.99) == 1.0


# ---------------------------------------------------------------------------- persistence


def test_restart_keeps_nodes_ratings_and_self_flag(tmp_path):
    with KnownNodes(tmp_path) as kn:
        kn.add(1, "8.8.8.8", 8444, NOW - 7)
        kn.add(2, "2001:db8::5", 8080, NOW)
        kn.add(1, ONION2, 8444, NOW, is_self=True)
        kn.increase_rating("8.8.8.8", 8444)
        kn.add(1, "8.8.4.4", 1, NOW)
        assert kn.remove(1, "8.8.4.4", 1) and not kn.remove(1, "8.8.4.4", 1)
    assert (tmp_path / KNOWNNODES_FILE).is_file()
    with KnownNodes(tmp_path) as kn:
        assert kn.count() == 3 and kn.streams() == [1, 2]
        n = kn.get(1, "8.8.8.8", 8444)
        assert (n.lastseen, n.rating, n.is_self) == (NOW - 7, 0.1, False)
        assert kn.get(1, ONION2, 8444).is_self
        assert kn.get(2, "2001:db8::5", 8080).lastseen == NOW
        assert kn.get(1, "8.8.4.4", 1) is None


def test_each_change_is_on_disk_without_close(tmp_path):
    kn = KnownNodes(tmp_path)
    kn.add(1, "8.8.8.8", 8444, NOW)
    kn.decrease_rating("8.8.8.8", 8444)
    con = sqlite3.connect(str(tmp_path / KNOWNNODES_FILE))
    assert con.execute("SELECT host, port, lastseen, rating FROM nodes").fetchall() == [("8.8.8.8", 8444, NOW, -0.1)]
    con.close()
    kn.close()


def test_returned_nodes_are_copies(kn):
    kn.add(1, "8.8.8.8", 8444, NOW)
    kn.get(1, "8.8.8.8", 8444).rating = 0.9
    kn.nodes(1)[0].lastseen = 0
    n = kn.get(1, "8.8.8.8", 8444)
    assert (n.rating, n.lastseen) == (0.0, NOW)


def test_corrupt_file_gives_store_error(tmp_path):
    path = tmp_path / KNOWNNODES_FILE
    path.write_bytes(b"{\"stream\": 1, \"peer\": {} } knownnodes.dat is JSON, not SQLite")
    with pytest.raises(StoreError, match="knownnodes database is not an SQLite file") as err:
        KnownNodes(tmp_path)
    assert str(path) in str(err.value) and path.read_bytes().startswith(b"{")


# ---------------------------------------------------------------------------- clean-up


def test_cleanup_boundaries(kn):
    MAX_AGE = 28 * DAY
    kn.add(1, public_ip(0), 1, NOW - MAX_AGE)  # exactly 28 days: kept
    kn.add(1, public_ip(1), 1, NOW - MAX_AGE - 1)  # older: gone
    kn.add(1, public_ip(2), 1, NOW - 10800)  # rating -0.5, exactly 3 h: kept
    kn.add(1, public_ip(3), 1, NOW - 10801)  # rating -0.5, older than 3 h: gone
    kn.add(1, public_ip(4), 1, NOW - 10801)  # rating -0.4: kept
    kn.add(1, public_ip(5), 1, NOW - 5 * DAY)  # rating -1: gone
    for _ in range(5):
        kn.decrease_rating(public_ip(2), 1)
        kn.decrease_rating(public_ip(3), 1)
    for _ in range(4):
        kn.decrease_rating(public_ip(4), 1)
    for _ in range(10):
        kn.decrease_rating(public_ip(5), 1)
    assert kn.cleanup(NOW) == 3
    left = sorted(n.host for n in kn.nodes(1))
    assert left == sorted([public_ip(0), public_ip(2), public_ip(4)])
    assert kn.cleanup(NOW) == 0


def test_cleanup_always_leaves_one_entry_per_stream(tmp_path):
    with KnownNodes(tmp_path) as kn:
        kn.add(1, public_ip(0), 1, NOW - 40 * DAY)
        kn.add(1, public_ip(1), 1, NOW - 30 * DAY)  # the most recently seen of the doomed
        kn.add(1, public_ip(2), 1, NOW - 50 * DAY)
        kn.add(2, public_ip(3), 1, NOW - 50 * DAY)
        assert kn.cleanup(NOW) == 2
        assert [n.host for n in kn.nodes(1)] == [public_ip(1)]
        assert [n.host for n in kn.nodes(2)] == [public_ip(3)]
    with KnownNodes(tmp_path) as kn:  # deletions persisted
        assert kn.count() == 2


def test_cleanup_of_chosen_streams_only(kn):
    for s in (1, 2):
        kn.add(s, public_ip(0), 1, NOW)
        kn.add(s, public_ip(1), 1, NOW - 40 * DAY)
    assert kn.cleanup(NOW, streams=[2, 5]) == 1
    assert kn.count(1) == 2 and kn.count(2) == 1


# ---------------------------------------------------------------------------- addr to send


def test_for_addr_takes_500_from_the_stream_and_250_from_each_child(tmp_path):
    with KnownNodes(tmp_path) as kn:
        for s in (1, 2, 3, 4):
            for i in range(600):
                kn.add(s, public_ip(i), 8444, NOW - 60)
        entries = kn.for_addr(1, NOW, rng=random.Random(1))
        per_stream = {s: sum(1 for e in entries if e.stream == s) for s in (1, 2, 3, 4)}
        assert per_stream == {1: 500, 2: 250, 3: 250, 4: 0}
        assert all(isinstance(e, NetAddr) and e.time == NOW - 60 and e.services == NODE_NETWORK for e in entries)
        assert len({(e.stream, e.host, e.port) for e in entries}) == len(entries)
        # Announced streams 1 and 2: stream 2 is both announced (500) and a child of 1 (250): 500.
        entries = kn.for_addr([1, 2], NOW, rng=random.Random(2))
        per_stream = {s: sum(1 for e in entries if e.stream == s) for s in (1, 2, 3, 4)}
        assert per_stream == {1: 500, 2: 500, 3: 250, 4: 250}
        assert len({(e.stream, e.host, e.port) for e in entries}) == len(entries)


def test_for_addr_filters_fresh_and_rated(kn):
    kn.add(1, "8.8.8.8", 1, NOW - 10799)  # fresh
    kn.add(1, "8.8.4.4", 2, NOW - 10800)  # lastseen must be > now - 10800
    kn.add(1, "9.9.9.9", 3, NOW)
    kn.decrease_rating("9.9.9.9", 3)  # rating < 0
    kn.add(1, "1.1.1.1", 4, NOW)
    kn.increase_rating("1.1.1.1", 4)
    kn.add(1, "2001:db8::1", 5, NOW)
    got = sorted((e.host, e.port, e.time) for e in kn.for_addr(1, NOW))
    assert got == [("1.1.1.1", 4, NOW), ("2001:db8::1", 5, NOW), ("8.8.8.8", 1, NOW - 10799)]
    assert kn.for_addr(7, NOW) == []


def test_for_addr_host_text_at_most_22_characters_as_the_reference(kn):
    """The reference's sendAddr keeps ``len(host) <= 22``: a v2 onion (exactly 22 characters)
    is gossiped; a v3 onion and an IPv6 literal longer than 22 characters are not."""
    v3 = "a" * 56 + ".onion"
    long_v6 = "2a01:4f8:c17:1234:5678:9abc:def0:1234"
    kn.add(1, ONION2, 8444, NOW)
    kn.add(1, v3, 8444, NOW)
    kn.add(1, long_v6, 8444, NOW)
    kn.add(1, "2001:db8:1234:5678::1", 8444, NOW)  # 21 characters
    kn.add(1, "255.255.255.254", 8444, NOW)
    assert len(ONION2) == 22 and len(long_v6) > 22
    got = sorted(e.host for e in kn.for_addr(1, NOW))
    assert got == sorted([ONION2, "2001:db8:1234:5678::1", "255.255.255.254"])
    # Every entry sent fits the 16-byte host field of addr.
    Addr(tuple(kn.for_addr(1, NOW))).encode()


# ---------------------------------------------------------------------------- dialing


def test_candidates_accept_by_rating(kn):
    kn.add(1, "8.8.8.8", 8444, NOW)
    assert kn.candidates(1, NOW, rng=ScriptedRng(0.049)) == [("8.8.8.8", 8444)]  # 0.049 < 0.05
    assert kn.candidates(1, NOW, rng=ScriptedRng(0.05)) == []
    for _ in range(10):
        kn.increase_rating("8.8.8.8", 8444)
    assert kn.candidates(1, NOW, rng=ScriptedRng(0.999)) == [("8.8.8.8", 8444)]  # rating 1: always
    assert kn.candidates(2, NOW) == []


def test_candidates_skip_self_old_excluded_and_same_group(kn):
    kn.add(1, ONION2, 8444, NOW, is_self=True)
    kn.add(1, "20.1.1.1", 1, NOW - 28 * DAY - 1)  # too old to dial
    kn.add(1, "30.1.1.1", 1, NOW)
    kn.add(1, "30.1.2.2", 2, NOW)  # same /16 as 30.1.1.1
    kn.add(1, "40.1.1.1", 1, NOW)
    kn.add(1, "50.1.1.1", 1, NOW)
    kn.add(1, "60.1.1.1", 1, NOW)
    got = kn.candidates(
        1,
        NOW,
        exclude=[("40.1.1.1", 1), "50.1.1.1"],
        exclude_groups=[network_group("60.1.1.1")],
        limit=10,
        rng=ScriptedRng(0.0),
    )
    assert got == [("30.1.1.1", 1)]  # 30.1.2.2 shares its group
    assert kn.candidates(1, NOW, limit=0) == []


def test_candidates_rng_draws_are_bounded(kn):
    for i in range(100):
        kn.add(1, public_ip(i), 8444, NOW)
    got = kn.candidates(1, NOW, limit=100, draws=50, rng=random.Random(5))
    assert len(got) <= 50 and len(set(got)) == len(got)
    assert len({network_group(h) for h, _ in got}) == len(got)
    everything = kn.candidates(1, NOW, limit=100, draws=1000, rng=ScriptedRng(0.0))
    assert len(everything) == 100


def test_loopback_peers_with_and_without_allow_private(kn):
    for port in (9001, 9002, 9003):
        kn.add(1, "127.0.0.1", port, NOW)
    assert len(kn.candidates(1, NOW, limit=5, rng=ScriptedRng(0.0))) == 1  # one "IPv4" group
    got = kn.candidates(1, NOW, limit=5, allow_private=True, rng=ScriptedRng(0.0))
    assert sorted(got) == [("127.0.0.1", 9001), ("127.0.0.1", 9002), ("127.0.0.1", 9003)]


def test_dial_group():
    assert dial_group("8.8.8.8", 1) == dial_group("8.8.4.4", 2) == network_group("8.8.8.8")
    assert dial_group("127.0.0.1", 1) == dial_group("10.0.0.1", 2) == "IPv4"
    assert dial_group("127.0.0.1", 1, allow_private=True) != dial_group("127.0.0.1", 2, allow_private=True)
    assert dial_group("8.8.8.8", 1, allow_private=True) == network_group("8.8.8.8")


# ---------------------------------------------------------------------------- received addr


def entry(host="8.8.8.8", port=8444, time=NOW - 60, stream=1) -> NetAddr:
    return NetAddr(time=time, stream=stream, services=1, host=host, port=port)


def test_filter_addr_rules():
    keep = [entry(), entry(host=ONION2), entry(host="2001:db8::1"), entry(time=NOW - 10799), entry(time=NOW - 1)]
    drop = [
        entry(stream=2),  # stream not joined
        entry(host="127.0.0.1"),  # private
        entry(host="10.1.2.3"),
        entry(host="192.168.0.1"),
        entry(host="fe80::1"),
        entry(time=NOW - 10800),  # must be seen strictly within 3 h
        entry(time=NOW),  # must be before now
        entry(time=NOW + 100),  # future
        entry(port=0),
        entry(host=decode_host(b"bootstrap" + bytes(7))),  # the reference's pseudo-host marker
    ]
    assert filter_addr(keep + drop, {1}, NOW) == keep
    assert filter_addr([entry(stream=2)], {1, 2}, NOW) == [entry(stream=2)]


def test_filter_addr_private_for_test_networks_and_float_now():
    loop = entry(host="127.0.0.1", port=9000)
    assert filter_addr([loop], {1}, NOW) == []
    assert filter_addr([loop], {1}, NOW, allow_private=True) == [loop]
    now_entry = entry(time=NOW)
    assert filter_addr([now_entry], {1}, NOW + 0.25) == [now_entry]  # as the reference with time.time()


def test_add_addrs_stores_in_one_go(tmp_path):
    with KnownNodes(tmp_path) as kn:
        kn.add(1, "8.8.8.8", 8444, NOW - 10)
        batch = [entry(time=NOW - 500), entry(host="8.8.4.4"), entry(host="1.1.1.1", stream=2, time=NOW - 5)]
        assert kn.add_addrs(batch) == 2
        assert kn.get(1, "8.8.8.8", 8444).lastseen == NOW - 10  # older addr time ignored
        assert kn.add_addrs([entry(time=NOW - 1)]) == 0
        assert kn.get(1, "8.8.8.8", 8444).lastseen == NOW - 1
    with KnownNodes(tmp_path) as kn:
        assert kn.count(1) == 2 and kn.get(2, "1.1.1.1", 8444).lastseen == NOW - 5


# ---------------------------------------------------------------------------- bootstrap


def test_seeding_is_explicit_and_only_into_an_empty_stream(kn):
    assert kn.count() == 0  # opening never seeds
    fake = [("8.8.8.8", 8444), ("9.9.9.9", 8080)]
    assert kn.only_defaults(fake)  # nothing known at all
    assert kn.seed_defaults(NOW, nodes=fake) == 2
    assert all(n.lastseen == NOW - 28 * DAY + 600 and n.rating == 0 for n in kn.nodes(1))
    assert kn.only_defaults(fake)
    assert kn.seed_defaults(NOW, nodes=[("1.1.1.1", 1)]) == 0  # stream 1 not empty
    kn.add(1, "1.1.1.1", 1, NOW)
    assert not kn.only_defaults(fake)


def test_bootstrap_data_is_well_formed():
    assert len(bootstrap.DEFAULT_NODES) == 9
    for host, port in bootstrap.DEFAULT_NODES:
        assert normalise_host(host) == host and 0 < port < 65536
    assert bootstrap.DEFAULT_NODE_AGE == 28 * DAY - 600
    assert {p for _, p in bootstrap.BOOTSTRAP_NAMES} == {8080, 8444}
    assert normalise_host(bootstrap.BOOTSTRAP_ONION[0]) == ONION2
