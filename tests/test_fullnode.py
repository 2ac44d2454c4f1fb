"""End to end: full nodes (``bmnode run`` subprocesses: supervisor, net, PoW, mailbox, API) on
loopback at network PoW 1:1, driven through the XML-RPC API.

Two nodes, alice and bob, are shared by the tests of this file, in order: messages both ways
with acks (bob's pubkey unknown at first), a broadcast, a chan, the API's authentication and
error codes, a node offline at send time, kill -9 of the whole sending node mid-send, and a
crashed child process. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path

import pytest

from bmnode.node.apiproc import NodeApi, NodeApiError
from bmnode.node.fullnode import LocalNode, free_port
from tests import waiting

WAIT = 60.0
PASSWORD = "test-password"
FLAGS = ("--no-dandelion", "--decrypt-workers", "1", "--no-tls")


def wait_until(what: str, check, timeout: float = WAIT):
    return waiting.wait_until(what, check, timeout, 0.1)


# ------------------------------------------------------------------ the mailbox process, in-process


def _msg_objects(tmp: Path):
    """A recipient mailbox directory with one identity, and msg objects to it made by another
    mailbox (at network PoW 1:1): (recipient dir, recipient address, [objects], config)."""
    from bmnode.mailbox import Mailbox, MailboxConfig, run_until_idle
    from bmnode.pow.registry import get_backend

    cfg = MailboxConfig(min_ntpb=1, min_extra=1)
    backend = get_backend("python")
    now = int(time.time())
    with Mailbox(tmp / "r", cfg) as r, Mailbox(tmp / "s", cfg) as s:
        to = r.create_random_address("r")
        frm = s.create_random_address("s")
        pubkeys = run_until_idle(r, now, backend)
        for i in range(2):
            s.send_message(frm, to, f"catch-up {i}", "body", 2, 3600, now)
        run_until_idle(s, now, backend)  # s asks for r's pubkey ...
        for out in pubkeys:  # ... and gets it
            s.receive_object(out.object, now)
        msgs = [o.object for o in run_until_idle(s, now, backend) if o.kind == "msg"]
    assert len(msgs) == 2
    return tmp / "r", to, msgs, cfg


def _service(data_dir: Path, cfg):
    from bmnode.node import bus
    from bmnode.node.mailboxproc import MailboxService

    return MailboxService(data_dir, bus.Endpoints(data_dir), config=cfg, decrypt_workers=0, scan_interval=0.05).open()


def test_mailbox_process_catches_up_with_the_inventory_once(tmp_path):
    """Objects the net process stored while no mailbox process ran are processed when it
    starts (the inventory cursor), and never a second time after a restart."""
    from bmnode.protocol.objects import parse_header
    from bmnode.store.inventory import Inventory

    rdir, _, msgs, cfg = _msg_objects(tmp_path)
    with Inventory(rdir) as inv:
        for obj in msgs:
            assert inv.add(obj, parse_header(obj), int(time.time()))
    svc = _service(rdir, cfg)
    try:
        wait_until("inbox", lambda: (svc.step(0.05), len(svc.mailbox.inbox_messages()) == 2)[1], 20)
        assert {m["subject"] for m in svc.mailbox.inbox_messages()} == {"catch-up 0", "catch-up 1"}
        assert svc.counters["scanned"] == 2
        wait_until("cursor saved", lambda: (svc.step(0.05), svc.status()["inventory_mark"] == 2)[1], 10)
    finally:
        svc.close()
    svc = _service(rdir, cfg)  # a restart: nothing is read again
    try:
        for _ in range(10):
            svc.step(0.05)
        assert svc.counters["scanned"] == 0 and len(svc.mailbox.inbox_messages()) == 2
    finally:
        svc.close()


def test_mailbox_process_answers_rpc_with_reference_error_codes(tmp_path):
    import threading

    from bmnode.api.backend import BackendError
    from bmnode.node import bus
    from bmnode.node.apiproc import RpcClient

    svc = _service(tmp_path, None)
    stop = threading.Event()
    loop = threading.Thread(target=svc.run, args=(stop,), daemon=True)
    loop.start()
    client = RpcClient(bus.Endpoints(tmp_path).mailbox, timeout=10)
    try:
        addr = client.call("create_random_address", "label")
        assert client.call("list_addresses")[0]["address"] == addr
        assert client.call("ping")["pid"] == os.getpid()
        for method, args, code in [
            ("no_such_method", [], 20),
            ("_reload_identities", [], 20),  # private methods are not callable
            ("send_message", ["BM-2cWzSnwjJ7yRP3nLEWUV5LisTZyREWSzUK", addr, "s", "b"], 13),
            ("get_status", ["00"], 15),
            ("create_chan", [""], 1),
            ("list_addresses", ["unexpected argument"], 21),
        ]:
            with pytest.raises(BackendError) as e:
                client.call(method, *args)
            assert e.value.code == code, (method, e.value)
        assert svc.status()["pool"]["generation"] >= 1  # the new identity's key reached the filter
    finally:
        client.close()
        stop.set()
        loop.join(10)
        svc.close()


# ------------------------------------------------------------------ full nodes


class Pair:
    """alice and bob, each dialling the other."""

    def __init__(self, base: Path) -> None:
        pa, pb = free_port(), free_port()
        self.alice = LocalNode(base / "alice", name="alice", port=pa, peers=(pb,), network_pow="1:1",
                               api_password=PASSWORD, extra=FLAGS)
        self.bob = LocalNode(base / "bob", name="bob", port=pb, peers=(pa,), network_pow="1:1",
                             api_password=PASSWORD, extra=FLAGS)

    def start(self) -> Pair:
        self.alice.start()
        self.bob.start()
        self.a = self.alice.wait_ready(WAIT)
        self.b = self.bob.wait_ready(WAIT)
        return self

    def close(self) -> None:
        for n in (self.alice, self.bob):
            if n.running():
                n.stop(20)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    p = Pair(tmp_path_factory.mktemp("fullnode"))
    try:
        yield p.start()
    finally:
        p.close()


@pytest.fixture(scope="module")
def addresses(pair):
    """alice's random address; bob's is made later (test 1 needs it unknown at first)."""
    return {"alice": pair.a.call("createRandomAddress", NodeApi.b64("alice"))}


def inbox_from(api: NodeApi, sender: str, subject: str | None = None) -> list[dict]:
    return [m for m in api.inbox() if m["fromAddress"] == sender and (subject is None or m["subject"] == subject)]


def statuses_until(api: NodeApi, ackdata: str, final: str, timeout: float = WAIT) -> list[str]:
    seen: list[str] = []

    def check():
        st = api.status(ackdata)
        if not seen or seen[-1] != st:
            seen.append(st)
        return st == final

    try:
        wait_until(f"status {final}", check, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; statuses seen: {seen}") from None
    return seen


def test_messages_both_ways_with_acks_pubkey_unknown_at_first(pair, addresses):
    a, b = pair.a, pair.b
    alice = addresses["alice"]
    passphrase = NodeApi.b64("bob's passphrase for the test")
    bob = a.call("getDeterministicAddress", passphrase, 4, 1)  # nobody has its pubkey yet

    ack = a.call("sendMessage", bob, alice, NodeApi.b64("hello bob"), NodeApi.b64("first message"))
    assert len(ack) == 76
    seen = statuses_until(a, ack, "awaitingpubkey")  # the getpubkey went out; nobody answers yet
    assert seen[0] in ("msgqueued", "doingpubkeypow", "awaitingpubkey")

    made = b.call("createDeterministicAddresses", passphrase, 1)
    assert made == {"addresses": [bob]}
    addresses["bob"] = bob
    seen = statuses_until(a, ack, "ackreceived")
    assert "msgsent" in seen or seen[-1] == "ackreceived"
    got = inbox_from(b, alice, "hello bob")
    assert len(got) == 1 and got[0]["message"] == "first message" and got[0]["toAddress"] == bob

    reply = b.call("sendMessage", alice, bob, NodeApi.b64("re: hello"), NodeApi.b64("answer"), 3)
    statuses_until(b, reply, "ackreceived")
    back = inbox_from(a, bob, "re: hello")
    assert len(back) == 1 and back[0]["encodingType"] == 3
    sent = a.call("getSentMessageByAckData", ack)["sentMessage"][0]
    assert sent["status"] == "ackreceived" and sent["toAddress"] == bob


def test_broadcast_reaches_a_subscriber(pair, addresses):
    a, b = pair.a, pair.b
    alice = addresses["alice"]
    assert b.call("addSubscription", alice, NodeApi.b64("alice's news")) == "Added subscription."
    handle = a.call("sendBroadcast", alice, NodeApi.b64("news"), NodeApi.b64("to every subscriber"))
    statuses_until(a, handle, "broadcastsent")
    got = wait_until("broadcast at bob", lambda: inbox_from(b, alice, "news"))
    assert got[0]["toAddress"] == "[Broadcast subscribers]" and got[0]["message"] == "to every subscriber"
    assert not inbox_from(a, alice, "news")  # not subscribed to itself


def test_chan_message_reaches_both_members(pair):
    a, b = pair.a, pair.b
    name = NodeApi.b64("bmnode test chan")
    chan = a.call("createChan", name)
    assert b.call("joinChan", name, chan) == "success"
    ack = a.call("sendMessage", chan, chan, NodeApi.b64("to the chan"), NodeApi.b64("hello members"))
    wait_until("chan message at alice", lambda: inbox_from(a, chan, "to the chan"))
    got = wait_until("chan message at bob", lambda: inbox_from(b, chan, "to the chan"))
    assert got[0]["toAddress"] == chan and got[0]["message"] == "hello members"
    assert a.status(ack) in ("msgsent", "msgsentnoackexpected", "ackreceived")


def test_api_refuses_wrong_credentials(pair):
    wrong = NodeApi("127.0.0.1", pair.alice.api_port, "bmnode", "not the password")
    with pytest.raises(NodeApiError) as e:
        wrong.call("helloWorld", "a", "b")
    assert "401" in str(e.value)
    proxy = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{pair.alice.api_port}/")  # no credentials at all
    with pytest.raises(xmlrpc.client.ProtocolError) as e2:
        proxy.helloWorld("a", "b")
    assert e2.value.errcode == 401
    assert pair.a.call("helloWorld", "a", "b") == "a-b"


def test_api_bad_arguments_give_the_reference_error_codes(pair, addresses):
    a = pair.a
    alice, bob = addresses["alice"], addresses["bob"]

    def code(method, *params):
        with pytest.raises(NodeApiError) as e:
            a.call(method, *params)
        return e.value.code

    assert code("createDeterministicAddresses", "", 1) == 1
    assert code("createDeterministicAddresses", NodeApi.b64("x"), 0) == 4
    assert code("sendMessage", bob, "BM-2cWzSnwjJ7yRP3nLEWUV5LisTZyREWSzUK", NodeApi.b64("s"), NodeApi.b64("b")) == 13
    assert code("sendMessage", bob[:-1] + ("a" if bob[-1] != "a" else "b"), alice, "", "") == 8
    assert code("getStatus", "00") == 15
    assert a.call("addSubscription", bob, NodeApi.b64("bob")) == "Added subscription."
    assert code("addSubscription", bob, NodeApi.b64("bob again")) == 16
    assert code("addSubscription", "BM-notanaddress") == 8  # base58, bad checksum
    assert code("addSubscription", "BM-0OIl0OIl") == 9  # not base58
    assert code("createChan", "") == 1
    assert code("leaveChan", alice) == 25
    assert code("noSuchCommand") == 20
    assert code("helloWorld", "only one") == 0
    # The legacy variant's exact text, as existing tools parse it.
    raw = a.raw("getStatus", "00")
    assert raw == "API Error 0015: Invalid ackData object size."


def test_node_offline_at_send_time_gets_the_message_when_it_comes_up(pair, addresses):
    alice, bob = addresses["alice"], addresses["bob"]
    assert pair.bob.stop(20) == 0
    ack = pair.a.call("sendMessage", bob, alice, NodeApi.b64("while you were away"), NodeApi.b64("offline"))
    statuses_until(pair.a, ack, "msgsent")  # bob's pubkey is known: sent into the network (alice's inventory)
    pair.bob.start()
    pair.b = pair.bob.wait_ready(WAIT)
    got = wait_until("message at bob after restart", lambda: inbox_from(pair.b, alice, "while you were away"))
    assert len(got) == 1
    statuses_until(pair.a, ack, "ackreceived")


def test_kill9_mid_send_then_restart_delivers_exactly_once(pair, addresses):
    """kill -9 of alice's whole node while it does the PoW of a message (bob's second address
    demands 20000x the network minimum, about 90 M trials: a few seconds of work; 1000x with
    the pure-Python backend) and right
    after queueing two more; after a restart each of the three arrives exactly once and is
    acknowledged."""
    alice = addresses["alice"]
    hard = pair.b.call("createRandomAddress", NodeApi.b64("hard to reach"), False, _hard_multiplier(), 1)
    slow = pair.a.call("sendMessage", hard, alice, NodeApi.b64("crash test slow"), NodeApi.b64("x"))
    # A PoW search ends at a random moment (exponential with a mean of a few seconds), so
    # now and then it is over before a 0.1 s poll sees `doingmsgpow`: wait for "at or past".
    wait_until("slow message at or past its PoW", lambda: pair.a.status(slow) in PAST_POW, 2 * WAIT)
    time.sleep(0.2)  # usually the msg's own PoW (after the ack's, which is quick) is running now
    fast = [pair.a.call("sendMessage", addresses["bob"], alice, NodeApi.b64(f"crash test {i}"), NodeApi.b64("x"))
            for i in range(2)]
    before = [pair.a.status(a) for a in [slow, *fast]]
    pair.alice.kill9()  # supervisor and every child at once
    assert not pair.alice.running()
    assert before[0] in PAST_POW, before  # mid-PoW nearly always; the restart is checked either way
    pair.alice.start()
    pair.a = pair.alice.wait_ready(WAIT)
    for ack in [slow, *fast]:
        statuses_until(pair.a, ack, "ackreceived", timeout=2 * WAIT)
    subjects = ["crash test slow", "crash test 0", "crash test 1"]
    for s in subjects:
        wait_until(f"{s} at bob", lambda s=s: inbox_from(pair.b, alice, s))
    time.sleep(1.0)  # a duplicate would have come with the others
    for s in subjects:
        assert len(inbox_from(pair.b, alice, s)) == 1, f"{s} delivered more than once"


PAST_POW = ("doingmsgpow", "msgsent", "ackreceived")


def _hard_multiplier() -> int:
    """A difficulty whose msg PoW lasts a few seconds with the node's PoW backend."""
    from bmnode.pow.registry import available_backends

    return 20000 if "native" in available_backends() else 1000


def test_a_crashed_child_is_restarted(pair, addresses):
    node = pair.bob
    before = wait_until("supervisor status", lambda: node.children().get("mailbox", {}).get("pid"))
    os.kill(before, signal.SIGKILL)
    after = wait_until(
        "mailbox restarted",
        lambda: (c := node.children().get("mailbox", {})).get("state") == "running" and c.get("pid") != before
        and c.get("restarts", 0) >= 1 and c["pid"],
    )
    assert after != before
    # The new mailbox process has everything: the API works and the data survived.
    wait_until("API answers again", lambda: _answers(pair.b))
    assert addresses["bob"] in [r["address"] for r in pair.b.addresses()]
    assert inbox_from(pair.b, addresses["alice"], "hello bob")


def _answers(api: NodeApi) -> bool:
    try:
        api.call("listAddresses")
        return True
    except NodeApiError:
        return False


def test_cli_commands_talk_to_the_running_node(pair, addresses, capsys):
    from bmnode.cli import main

    node = ["--data-dir", str(pair.alice.data_dir), "--api-password", PASSWORD]

    def bm(*argv: str):
        rc = main([*argv, *node])
        out, err = capsys.readouterr()
        assert rc == 0, err
        return json.loads(out)

    made = bm("address", "create", "--label", "from the cli")
    listed = bm("address", "list", "--decode-labels")
    assert {"address": made[0], "label": "from the cli"}.items() <= next(
        a for a in listed if a["address"] == made[0]).items()
    sent = bm("send", "--from", made[0], "--to", addresses["bob"], "--subject", "via cli", "--body", "cli body",
              "--wait", str(WAIT))
    assert sent["status"] == "ackreceived"
    got = wait_until("cli message at bob", lambda: inbox_from(pair.b, made[0], "via cli"))
    assert got[0]["message"] == "cli body"
    assert bm("status", sent["ackdata"]) == {"ackdata": sent["ackdata"], "status": "ackreceived"}
    st = bm("status")
    assert st["client_status"]["networkConnections"] >= 1
    conns = pair.a.call("listConnections")
    peers = conns["inbound"] + conns["outbound"]
    assert any(c["port"] in (pair.bob.port,) or c["fullyEstablished"] for c in peers)
    assert all(c["userAgent"].startswith("/bmnode:") for c in peers if c["fullyEstablished"])
    assert {p["name"] for p in st["processes"]} == {"net", "pow", "mailbox", "api"}
    inbox = bm("inbox")
    assert any(m["subject"] == "re: hello" for m in inbox)
    rc = main(["send", "--from", made[0], "--subject", "x", *node])  # neither --to nor --broadcast
    assert rc == 2 and "--broadcast" in capsys.readouterr().err
    rc = main(["inbox", "--data-dir", str(pair.alice.data_dir), "--api-password", "wrong"])
    assert rc == 2 and "401" in capsys.readouterr().err


def test_api_shutdown_stops_the_whole_node(pair):
    assert pair.a.call("shutdown") == "done"
    assert pair.alice.proc.wait(30) == 0
    assert not (pair.alice.data_dir / "api.json").exists()


def test_demo_runs_three_nodes_and_exits_0(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), TMPDIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "bmnode.cli", "demo", "--network-pow", "1:1", "--timeout", "60"],
                       check=False, capture_output=True, text=True, env=env, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for step in ("all three nodes are up", "ackreceived", "bob's inbox: 'Hello Bob'", "carol's inbox: 'News from Alice'",
                 "all nodes stopped", "demo OK"):
        assert step in out
    assert not list(tmp_path.glob("bmnode-demo-*")), "the demo left its directory behind"


def test_run_relay_only_starts_just_the_net_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bmnode.cli", "run", "--relay-only", "--data-dir", str(tmp_path), "--listen",
         "127.0.0.1:0", "--no-bootstrap", "--network-pow", "1:1"],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        wait_until("relay listening", lambda: "listening on 127.0.0.1:" in proc.stderr.readline(), 30)
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=30)[1]
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (tmp_path / "inventory.sqlite").exists()
    assert not (tmp_path / "mailbox.sqlite").exists() and not (tmp_path / "api.toml").exists()
