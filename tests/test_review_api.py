"""Regression tests from a review of the API and PoW-service additions (real sockets on 127.0.0.1)."""

from __future__ import annotations

import socket
import threading
import time

from tests.test_api import Api, FakeBackend, call_xml


def _trickle(a: Api, head: bytes, stop: threading.Event, gap: float = 0.2) -> dict[str, float]:
    """Send ``head`` then one byte every ``gap`` s (each under the per-read timeout) until the
    server closes the connection or ``stop`` is set; {"closed_after": seconds} when it closed."""
    out: dict[str, float] = {}
    t0 = time.monotonic()
    with socket.create_connection((a.host, a.port), timeout=10) as s:
        s.sendall(head)
        s.settimeout(gap)
        while not stop.is_set() and time.monotonic() - t0 < 15:
            try:
                if s.recv(4096) == b"":
                    out["closed_after"] = time.monotonic() - t0
                    return out
            except socket.timeout:
                pass
            except OSError:
                out["closed_after"] = time.monotonic() - t0
                return out
            try:
                s.sendall(b"x")
            except OSError:
                out["closed_after"] = time.monotonic() - t0
                return out
    return out


def test_a_trickled_unauthenticated_body_cannot_hold_the_only_slot():
    """Before: one byte every 0.2 s (request_timeout 1 s) kept the drain of a 401 reading, and
    so the request slot, for as long as the client liked; other clients got 503."""
    a = Api(FakeBackend(), max_concurrent=1, slot_wait=0.1, request_timeout=1.0, read_limit=1.0)
    stop = threading.Event()
    result: dict[str, float] = {}
    head = b"POST / HTTP/1.0\r\nContent-Length: 100000\r\n\r\n"
    t = threading.Thread(target=lambda: result.update(_trickle(a, head, stop)))
    try:
        t.start()
        time.sleep(0.5)  # the trickler holds the only slot now
        deadline = time.monotonic() + 6
        status = 0
        while time.monotonic() < deadline:
            status, _, body = a.post(call_xml("helloWorld", "a", "b"))
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200 and b"a-b" in body
        t.join(10)
        assert result.get("closed_after", 99) < 4
    finally:
        stop.set()
        t.join(10)
        a.close()


def test_trickled_headers_are_cut_at_the_read_limit():
    a = Api(FakeBackend(), request_timeout=1.0, read_limit=1.0)
    stop = threading.Event()
    try:
        result = _trickle(a, b"GET /metrics HTTP/1.0\r\nX-A: ", stop)
        assert result.get("closed_after", 99) < 4
        assert a.proxy().helloWorld("a", "b") == "a-b"
    finally:
        stop.set()
        a.close()


def test_a_slow_command_is_not_cut_by_the_read_limit(monkeypatch):
    """The limit covers sending the request, not running it."""
    fake = FakeBackend()
    a = Api(fake, read_limit=0.3)

    def slow_list():
        time.sleep(1.0)
        return []

    monkeypatch.setattr(fake, "list_identities", slow_list)
    try:
        assert a.proxy().listAddresses() == '{\n    "addresses": []\n}'
    finally:
        a.close()


def test_a_slow_notify_program_is_killed_with_the_processes_it_started(tmp_path):
    """Before: only the program itself was killed; a script's child (here a sleep) ran on."""
    import os

    from bmnode.api.notify import ApiNotifier
    from tests.waiting import until

    pid_file = tmp_path / "child.pid"
    script = tmp_path / "hook.sh"
    script.write_text(f'#!/bin/sh\nsleep 30 &\necho $! > "{pid_file}"\nwait\n')
    script.chmod(0o755)
    n = ApiNotifier(script, timeout=0.5)
    try:
        assert n.notify("newMessage")
        assert until(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=10)
        child = int(pid_file.read_text())

        def gone() -> bool:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return True
            # a zombie of an exited parent is reaped by init; count it as gone
            try:
                with open(f"/proc/{child}/stat") as f:
                    return f.read().split(")")[-1].split()[0] == "Z"
            except OSError:
                return True

        ok = until(gone, timeout=5)
        if not ok:
            os.kill(child, 9)  # do not leave it behind
        assert ok, "the hook's child process outlived the timeout kill"
    finally:
        n.close(wait=2)


def test_a_malformed_secret_key_is_not_echoed_in_the_error(tmp_path):
    import pytest

    from bmnode.pow.curve_keys import CurveKeyError, generate_keypair, load_keypair

    _, sec_path, _ = generate_keypair(tmp_path, "k")
    text = sec_path.read_text()
    secret = [ln for ln in text.splitlines() if "secret-key" in ln][0].split('"')[1]
    bad = tmp_path / "bad.key_secret"
    bad.write_text(text.replace(secret, secret + "x"))  # one character too many
    with pytest.raises(CurveKeyError, match="not a Z85 CURVE key") as err:
        load_keypair(bad)
    assert secret[:10] not in str(err.value)


def test_metrics_text_that_cannot_be_encoded_gives_500_not_a_dropped_connection():
    """Before: the UnicodeEncodeError escaped the handler (traceback, connection closed, no answer)."""
    a = Api(FakeBackend(), metrics=lambda: 'bmnode_build_info{version="\udc80"} 1\n')
    try:
        head = f"GET /metrics HTTP/1.0\r\nAuthorization: {a.credentials.header()}\r\n\r\n"
        status, _, body = a.raw(head.encode())
        assert status == 500 and body == b"internal error\n"
    finally:
        a.close()


def _term_returns(ctx, timeout: float = 3.0) -> bool:
    """Whether ``ctx.term()`` finishes (it waits for every socket of the context to close)."""
    t = threading.Thread(target=ctx.term, daemon=True)
    t.start()
    t.join(timeout)
    return not t.is_alive()


def test_views_closed_at_stop_open_no_socket_that_would_hang_the_context_term(tmp_path):
    """Before: a scrape part still running when the API process stopped reopened a socket on
    the shared context after close(), and ctx.term() then waited for it for ever."""
    import pytest
    import zmq

    from bmnode.api.backend import BackendError
    from bmnode.node import bus
    from bmnode.node.apiproc import BrokerView, NetView
    from bmnode.pow.broker import BrokerConfig, PowBroker

    broker = PowBroker(BrokerConfig(client_endpoints=["tcp://127.0.0.1:0"], worker_endpoints=[],
                                    local_workers=0, backend="python")).start()
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)  # a stand-in net process that answers get_stats
    router.setsockopt(zmq.LINGER, 0)
    net_ep = f"ipc://{tmp_path}/net.sock"
    router.bind(net_ep)
    stop = threading.Event()

    def answer() -> None:
        while not stop.is_set():
            if router.poll(50):
                route, *_ = router.recv_multipart()
                router.send_multipart([route, *bus.encode(bus.NetStats(time=1.0, pid=1))])

    responder = threading.Thread(target=answer, daemon=True)
    responder.start()
    view = BrokerView(broker.client_addresses[0], timeout=2.0, context=ctx)
    net = NetView(net_ep, timeout=2.0, max_age=0.0, context=ctx)
    try:
        assert view.state()["workers"] == 0
        assert net.stats() is not None
        view.close()
        net.close()
        with pytest.raises(BackendError):
            view.state()
        assert net.stats() is None
        stop.set()
        responder.join(5)
        router.close(0)
        assert _term_returns(ctx), "a view reopened a socket after close()"
    finally:
        stop.set()
        responder.join(5)
        for leftover in (view._client, net._sock):
            if leftover is not None:  # only when the test failed: let the context end
                leftover.close() if hasattr(leftover, "solve") else leftover.close(0)
        router.close(0)
        broker.stop()


def test_a_worker_that_cannot_reach_its_broker_keeps_running_and_joins_later():
    """Before: once ~1000 heartbeats were queued for an unreachable (or key-refusing) broker,
    the non-blocking send raised zmq.Again and the worker's loop died (after ~17 min at the
    default 1 s heartbeat; here 1 ms)."""
    from bmnode.pow.broker import BrokerConfig, PowBroker
    from bmnode.pow.registry import get_backend
    from bmnode.pow.worker import PowWorker
    from tests.waiting import until

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    w = PowWorker(f"tcp://127.0.0.1:{port}", get_backend("python"), heartbeat=0.001, name="patient")
    w.start()
    broker = None
    try:
        assert w._thread is not None
        assert not until(lambda: not w._thread.is_alive(), timeout=3.0), "the worker loop died"
        broker = PowBroker(BrokerConfig(client_endpoints=["tcp://127.0.0.1:0"],
                                        worker_endpoints=[f"tcp://127.0.0.1:{port}"],
                                        local_workers=0, backend="python")).start()
        assert until(lambda: broker.stats["workers_joined"] >= 1, timeout=10)
    finally:
        w.stop(5)
        if broker is not None:
            broker.stop()


def test_a_bad_authorized_keys_folder_is_reported_once_per_change_not_per_handshake(tmp_path, caplog):
    """Before: while a bad file sat in the folder, every handshake (anyone can start one)
    re-read the whole folder and logged an error."""
    import logging
    import os

    from bmnode.pow.curve_keys import AuthorizedKeys, generate_keypair

    folder = tmp_path / "authorized"
    _, _, good = generate_keypair(folder, "client")
    ak = AuthorizedKeys(folder)
    (folder / "junk.key").write_text("junk\n")
    os.utime(folder, (time.time() + 5, time.time() + 5))
    with caplog.at_level(logging.ERROR, logger="bmnode.pow.curve_keys"):
        for _ in range(20):
            assert ak.allows(good)
    assert caplog.text.count("keeping the previous authorized keys") == 1
    (folder / "junk.key").unlink()
    os.utime(folder, (time.time() + 10, time.time() + 10))
    _, _, later = generate_keypair(folder, "later")
    os.utime(folder, (time.time() + 15, time.time() + 15))
    assert ak.allows(later)  # a fixed folder is read again


def test_a_missing_authorized_keys_folder_is_reported_once(tmp_path, caplog):
    import logging
    import shutil

    from bmnode.pow.curve_keys import AuthorizedKeys, generate_keypair

    folder = tmp_path / "authorized"
    _, _, good = generate_keypair(folder, "client")
    ak = AuthorizedKeys(folder)
    shutil.rmtree(folder)
    with caplog.at_level(logging.ERROR, logger="bmnode.pow.curve_keys"):
        for _ in range(20):
            assert ak.allows(good)  # the last good set
    assert caplog.text.count("keeping the previous authorized keys") == 1


def test_refusals_of_fresh_unknown_keys_are_not_logged_without_bound(tmp_path, caplog):
    """Before: every handshake with a new random key (free for any peer) logged a warning."""
    import logging

    import zmq

    from bmnode.pow.curve_keys import AuthorizedKeys, generate_keypair

    folder = tmp_path / "authorized"
    _, _, good = generate_keypair(folder, "client")
    ak = AuthorizedKeys(folder)
    with caplog.at_level(logging.WARNING, logger="bmnode.pow.curve_keys"):
        for _ in range(50):
            assert not ak.callback("bmnode-pow-clients", zmq.curve_keypair()[0])
        assert ak.callback("bmnode-pow-clients", good)
    refused = caplog.text.count("refused a connection with an unknown CURVE key")
    assert 1 <= refused <= 10
    assert "not logged" in caplog.text


def test_a_pow_client_whose_broker_is_gone_gets_an_error_not_a_blocked_send(tmp_path):
    """Before: once ~1000 requests were queued for a broker that never took them (a mailbox
    resubmitting to a PoW process that stays down), the next send blocked for ever."""
    import hashlib

    from bmnode.errors import PowError
    from bmnode.pow.broker import PowClient

    c = PowClient(f"ipc://{tmp_path}/no-broker.sock", client="m", timeout=0.01)
    outcome: dict[str, object] = {}

    def submit_many() -> None:
        try:
            for i in range(1500):
                c.send_submit(hashlib.sha512(str(i).encode()).digest(), 1 << 60, job=f"j{i}")
            outcome["sent"] = 1500
        except PowError as exc:
            outcome["error"] = exc

    t = threading.Thread(target=submit_many, daemon=True)
    try:
        t.start()
        t.join(10)
        assert not t.is_alive(), "send_submit blocked"
        assert "not running or not reachable" in str(outcome.get("error"))
    finally:
        if not t.is_alive():
            c.close()
