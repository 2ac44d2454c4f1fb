"""The PoW broker, its workers and PowClient over real ZeroMQ sockets on 127.0.0.1 / ipc:
submit, cancel, priorities, per-client limits, concurrency, remote workers, a worker killed
mid-job, wrong nonces caught. Python backend at easy targets; every wait is bounded."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from bmnode.errors import PowError
from bmnode.node import bus
from bmnode.pow.backend import Solution
from bmnode.pow.broker import BrokerConfig, PowBroker, PowClient, PowLimit, PowTimeout
from bmnode.pow.target import trial_value
from tests.waiting import until

ROOT = Path(__file__).resolve().parent.parent
EASY = (1 << 64) // 2000  # ~2000 trials
IMPOSSIBLE = 0  # no nonce has trial value 0 in practice: the job runs until cancelled
# A job whose smallest solution is far away (found once with the native backend): a
# python worker needs over a minute for it, so it is reliably "mid-job" when killed.
HARD_IH = hashlib.sha512(b"bmnode broker test 2").digest()
HARD_TARGET = (1 << 64) // 40_000_000
HARD_NONCE = 90015220


def ih(i: int | str) -> bytes:
    return hashlib.sha512(f"job {i}".encode()).digest()


def make_broker(workers: int = 1, **kw) -> PowBroker:
    cfg = BrokerConfig(
        client_endpoints=kw.pop("client_endpoints", ["tcp://127.0.0.1:0"]),
        worker_endpoints=kw.pop("worker_endpoints", ["tcp://127.0.0.1:0"]),
        local_workers=workers, backend="python", heartbeat=0.2, worker_timeout=1.0, **kw,
    )
    return PowBroker(cfg).start()


@pytest.fixture
def broker_factory():
    made: list[PowBroker] = []
    clients: list[PowClient] = []

    def factory(workers: int = 1, **kw):
        b = make_broker(workers, **kw)
        made.append(b)
        return b

    def client(b: PowBroker, name: str = "", i: int = 0) -> PowClient:
        c = PowClient(b.client_addresses[i], client=name, timeout=20)
        clients.append(c)
        return c

    factory.client = client  # type: ignore[attr-defined]
    yield factory
    for c in clients:
        c.close()
    for b in made:
        b.stop()


class FakeWorker:
    """A hand-driven worker: speaks w.* on a DEALER socket."""

    def __init__(self, endpoint: str, name: str = "fake") -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.name = name

    def send(self, msg: bus.BusMessage) -> None:
        self.sock.send_multipart(bus.encode(msg))

    def beat(self, job: str = "", trials: int = 0) -> None:
        self.send(bus.WorkerHeartbeat(name=self.name, backend="fake", interval=0.2, job=job, trials=trials))

    def recv(self, timeout: float = 5.0, keep_alive: bool = True) -> bus.BusMessage | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if keep_alive:
                self.beat()
            if self.sock.poll(100):
                return bus.decode(self.sock.recv_multipart())
        return None

    def close(self) -> None:
        self.sock.close(0)


# ----------------------------------------------------------------------------- basics


def test_solve_result_is_valid_and_rechecked(broker_factory):
    b = broker_factory(1)
    c = broker_factory.client(b, "t")
    for i in range(3):
        sol = c.solve(ih(i), EASY, timeout=20)
        assert isinstance(sol, Solution)
        assert trial_value(sol.nonce, ih(i)) == sol.trial_value <= EASY
    snap = b.snapshot()
    assert snap["solved"] == 3 and snap["bad_results"] == 0


def test_ipc_endpoints_and_cleanup(tmp_path, broker_factory):
    e = bus.Endpoints(tmp_path)
    b = broker_factory(1, client_endpoints=[e.pow], worker_endpoints=[e.pow_workers])
    assert e.path("pow").exists() and e.path("pow_workers").exists()
    c = broker_factory.client(b)
    assert trial_value(c.solve(ih("ipc"), EASY).nonce, ih("ipc")) <= EASY
    b.stop()
    assert not e.path("pow").exists() and not e.path("pow_workers").exists()


def test_two_jobs_run_concurrently(broker_factory):
    b = broker_factory(2)
    c = broker_factory.client(b, "t")
    assert until(lambda: b.snapshot()["workers"] == 2)
    j1 = c.submit(ih(1), IMPOSSIBLE)
    j2 = c.submit(ih(2), IMPOSSIBLE)
    assert until(lambda: b.snapshot()["running"] == 2)
    assert c.status(j1).state == "running" and c.status(j2).state == "running"
    assert c.cancel(j1) and c.cancel(j2)
    assert until(lambda: b.snapshot()["idle_workers"] == 2)
    # both workers solve again, each taking one of two jobs
    ja, jb = c.submit(ih("a"), EASY // 20), c.submit(ih("b"), EASY // 20)
    got = {}
    deadline = time.monotonic() + 30
    while len(got) < 2 and time.monotonic() < deadline:
        got.update(dict(c.events(0.5)))
    assert set(got) == {ja, jb}
    for j, h in ((ja, ih("a")), (jb, ih("b"))):
        assert trial_value(got[j].nonce, h) <= EASY // 20


def test_cancel_running_frees_the_worker(broker_factory):
    b = broker_factory(1)
    c = broker_factory.client(b, "t")
    j = c.submit(ih("x"), IMPOSSIBLE)
    assert until(lambda: c.status(j).state == "running")
    assert c.cancel(j) is True
    assert c.cancel(j) is False  # already gone
    assert c.status(j).state == "unknown"
    sol = c.solve(ih("y"), EASY, timeout=20)  # the single worker is free again
    assert trial_value(sol.nonce, ih("y")) <= EASY
    assert b.snapshot()["cancelled"] == 1


def test_cancel_queued_job(broker_factory):
    b = broker_factory(0)
    c = broker_factory.client(b, "t")
    j = c.submit(ih(1), EASY)
    assert c.status(j).state == "queued"
    assert c.cancel(j)
    assert c.status(j).state == "unknown"
    b.add_local_workers(1)
    assert until(lambda: b.snapshot()["workers"] == 1)
    time.sleep(0.3)
    assert b.snapshot().get("dispatched", 0) == 0  # the cancelled job never ran


def test_priorities(broker_factory):
    b = broker_factory(0)
    c = broker_factory.client(b, "t")
    order = [("low", 0), ("high", 9), ("mid", 5), ("low2", 0), ("neg", -3)]
    for name, prio in order:
        c.submit(ih(name), EASY, job=name, priority=prio)
    assert [c.status(n).position for n in ("high", "mid", "low", "low2", "neg")] == [0, 1, 2, 3, 4]
    b.add_local_workers(1)
    done: list[str] = []
    deadline = time.monotonic() + 30
    while len(done) < 5 and time.monotonic() < deadline:
        done += [j for j, r in c.events(0.5)]
    assert done == ["high", "mid", "low", "low2", "neg"]


def test_per_client_limit(broker_factory):
    b = broker_factory(0, max_jobs_per_client=2)
    c1 = broker_factory.client(b, "one")
    c2 = broker_factory.client(b, "two")
    c1.submit(ih(1), EASY)
    j2 = c1.submit(ih(2), EASY)
    with pytest.raises(PowLimit) as info:
        c1.submit(ih(3), EASY)
    assert info.value.code == "limit"
    c2.submit(ih(4), EASY)  # another client is not affected
    assert c1.cancel(j2)
    c1.submit(ih(5), EASY)  # room again
    assert b.snapshot()["refused_limit"] == 1


def test_global_queue_limit(broker_factory):
    b = broker_factory(0, max_queue=2)
    c = broker_factory.client(b)
    c.submit(ih(1), EASY)
    c.submit(ih(2), EASY)
    with pytest.raises(PowLimit):
        c.submit(ih(3), EASY)


def test_same_job_id_is_not_run_twice(broker_factory):
    b = broker_factory(1)
    c = broker_factory.client(b, "mailbox")
    sol = c.wait(c.submit(ih("d"), EASY, job="job-1"))
    # the mailbox restarts (new connection, same name) and submits its job again
    c2 = broker_factory.client(b, "mailbox")
    again = c2.wait(c2.submit(ih("d"), EASY, job="job-1"))
    assert again == sol
    assert b.snapshot()["dispatched"] == 1
    # the id reused later for other work is a new job, not the old answer
    other = c2.wait(c2.submit(ih("other"), EASY, job="job-1"))
    assert trial_value(other.nonce, ih("other")) <= EASY
    assert b.snapshot()["dispatched"] == 2


def test_same_job_id_while_queued_is_one_job(broker_factory):
    b = broker_factory(0)
    c = broker_factory.client(b, "m")
    c.submit(ih("q"), EASY, job="k")
    c2 = broker_factory.client(b, "m")
    c2.submit(ih("q"), EASY, job="k")
    with pytest.raises(PowLimit) as info:
        c2.submit(ih("z"), EASY, job="k")
    assert info.value.code == "duplicate"
    assert c2.status().queued == 1
    b.add_local_workers(1)
    assert trial_value(c2.wait("k").nonce, ih("q")) <= EASY  # the answer goes to the new connection


def test_bad_requests(broker_factory):
    b = broker_factory(0)
    with pytest.raises(PowError):
        broker_factory.client(b).submit(b"short", EASY)
    with pytest.raises(PowError):
        broker_factory.client(b).submit(ih(1), 1 << 64)
    raw = zmq.Context.instance().socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(b.client_addresses[0])
    try:
        raw.send_multipart([b"pow.submit", b"\xc1garbage"])
        assert raw.poll(5000)
        reply = bus.decode(raw.recv_multipart())
        assert isinstance(reply, bus.ErrorReply) and reply.code == "bad_message"
        raw.send_multipart(bus.encode(bus.WorkerBye(name="x")))  # a worker message on the client socket
        assert raw.poll(5000)
        reply = bus.decode(raw.recv_multipart())
        assert isinstance(reply, bus.ErrorReply) and reply.code == "unexpected"
    finally:
        raw.close(0)
    assert b.snapshot()["bad_messages"] == 2
    b.add_local_workers(1)
    c = broker_factory.client(b)
    assert trial_value(c.solve(ih(2), EASY).nonce, ih(2)) <= EASY  # still serving


def test_client_timeout_without_broker():
    port = _free_port()
    with PowClient(f"tcp://127.0.0.1:{port}", timeout=0.3) as c:
        t0 = time.monotonic()
        with pytest.raises(PowTimeout):
            c.solve(ih(1), EASY)
        assert time.monotonic() - t0 < 5


def test_client_rechecks_a_lying_broker():
    """A broker (here a fake) that returns a wrong nonce: the client does not accept it."""
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        with PowClient(f"tcp://127.0.0.1:{port}", timeout=5) as c:
            job = c.send_submit(ih(1), EASY // 1000)
            assert router.poll(5000)
            env, msg = bus.split(router.recv_multipart())
            assert isinstance(msg, bus.PowSubmit) and msg.job == job
            router.send_multipart(env + bus.encode(bus.PowAccepted(job=job)))
            router.send_multipart(env + bus.encode(bus.PowResult(job=job, nonce=1, trial_value=0)))
            with pytest.raises(PowError, match="wrong nonce"):
                c.wait(job)
    finally:
        router.close(0)


# ----------------------------------------------------------------------------- workers


def test_wrong_nonce_from_a_worker_is_caught_and_redone(broker_factory):
    b = broker_factory(0)
    fake = FakeWorker(b.worker_addresses[0], "liar")
    try:
        fake.beat()
        assert until(lambda: b.snapshot()["workers"] == 1)
        c = broker_factory.client(b, "t")
        job = c.submit(ih("lie"), EASY // 100)
        msg = fake.recv()
        assert isinstance(msg, bus.WorkerJob) and msg.initial_hash == ih("lie")
        bad = next(n for n in range(1000) if trial_value(n, ih("lie")) > EASY // 100)
        fake.send(bus.WorkerResult(key=msg.key, nonce=bad, trial_value=0, trials=1))
        assert until(lambda: b.snapshot().get("bad_results") == 1)
        assert c.status(job).state == "queued"  # not answered with the wrong nonce
        b.add_local_workers(1)
        sol = c.wait(job)
        assert trial_value(sol.nonce, ih("lie")) <= EASY // 100
        assert b.snapshot()["bad_workers"] == 1
        # the liar gets no more work
        c.solve(ih("after"), EASY)
        assert fake.recv(0.5) is None
    finally:
        fake.close()


def test_worker_bye_requeues_at_once(broker_factory):
    b = broker_factory(0)
    fake = FakeWorker(b.worker_addresses[0])
    try:
        fake.beat()
        c = broker_factory.client(b, "t")
        job = c.submit(ih("bye"), EASY)
        msg = fake.recv()
        assert isinstance(msg, bus.WorkerJob)
        fake.send(bus.WorkerBye(name="fake"))
        assert until(lambda: c.status(job).state == "queued", 2.0)
        b.add_local_workers(1)
        assert trial_value(c.wait(job).nonce, ih("bye")) <= EASY
    finally:
        fake.close()


def test_worker_busy_with_an_unknown_job_is_stopped_first(broker_factory):
    """A worker still searching a job the broker does not know (e.g. after a broker restart)
    is told to cancel it and gets work only once it reports idle."""
    b = broker_factory(0)
    fake = FakeWorker(b.worker_addresses[0], "leftover")
    try:
        c = broker_factory.client(b, "t")
        job = c.submit(ih("w"), EASY)
        fake.beat(job="j999", trials=5)
        msg = fake.recv(5, keep_alive=False)
        assert msg == bus.WorkerCancel(key="j999")
        fake.beat(job="j999", trials=6)  # still busy: nothing new for it
        got = fake.recv(0.5, keep_alive=False)
        assert got is None or got == bus.WorkerCancel(key="j999")
        assert c.status(job).state == "queued"
        fake.send(bus.WorkerFailed(key="j999", cancelled=True))
        fake.beat()  # idle now
        msg = fake.recv(5, keep_alive=False)
        while isinstance(msg, bus.WorkerCancel):
            msg = fake.recv(5, keep_alive=False)
        assert isinstance(msg, bus.WorkerJob) and msg.initial_hash == ih("w")
        # it refuses ("busy"): the job goes back to the queue and to a real worker
        fake.send(bus.WorkerFailed(key=msg.key, message="busy"))
        assert until(lambda: c.status(job).state == "queued", 5)
        b.add_local_workers(1)
        assert trial_value(c.wait(job).nonce, ih("w")) <= EASY
    finally:
        fake.close()


def test_resubmit_with_another_priority_reranks(broker_factory):
    b = broker_factory(0)
    c = broker_factory.client(b, "t")
    c.submit(ih(1), EASY, job="a", priority=1)
    c.submit(ih(2), EASY, job="b", priority=2)
    assert c.status("a").position == 1
    c.submit(ih(1), EASY, job="a", priority=5)  # same job, now urgent
    assert c.status("a").position == 0
    b.add_local_workers(1)
    done: list[str] = []
    deadline = time.monotonic() + 30
    while len(done) < 2 and time.monotonic() < deadline:
        done += [j for j, r in c.events(0.5)]
    assert done == ["a", "b"]


def _worker_cmd(endpoint: str, name: str) -> list[str]:
    return [sys.executable, "-m", "bmnode.pow.worker", "--connect", endpoint, "--backend", "python",
            "--name", name, "--heartbeat", "0.2", "--log-level", "WARNING"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_remote_worker_over_tcp(broker_factory):
    b = broker_factory(0)
    assert b.worker_addresses[0].startswith("tcp://127.0.0.1:")
    proc = subprocess.Popen(_worker_cmd(b.worker_addresses[0], "remote-1"), env=_env(), cwd=ROOT)
    try:
        assert until(lambda: b.worker_names() == ["remote-1"], 20)
        c = broker_factory.client(b, "t")
        job = c.submit(ih("remote"), EASY)
        sol = c.wait(job, 20)
        assert trial_value(sol.nonce, ih("remote")) <= EASY
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert until(lambda: b.worker_names() == [], 5)  # it said bye
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_worker_killed_mid_job_is_redispatched(broker_factory):
    b = broker_factory(0)
    proc = subprocess.Popen(_worker_cmd(b.worker_addresses[0], "doomed"), env=_env(), cwd=ROOT)
    fake = None
    try:
        assert until(lambda: b.worker_names() == ["doomed"], 20)
        c = broker_factory.client(b, "t")
        job = c.submit(HARD_IH, HARD_TARGET)
        assert until(lambda: c.status(job).trials > 0, 10)  # searching, progress reported
        progress = c.status(job).trials
        proc.kill()
        proc.wait(5)
        fake = FakeWorker(b.worker_addresses[0], "rescue")
        msg = fake.recv(10)  # heartbeats keep it alive while the broker notices the loss
        assert isinstance(msg, bus.WorkerJob)
        assert msg.initial_hash == HARD_IH and msg.target == HARD_TARGET
        assert progress <= msg.start < HARD_NONCE  # resumed where the dead worker was
        fake.send(bus.WorkerResult(key=msg.key, nonce=HARD_NONCE, trial_value=trial_value(HARD_NONCE, HARD_IH),
                                   trials=1))
        sol = c.wait(job, 10)
        assert sol.nonce == HARD_NONCE
        snap = b.snapshot()
        assert snap["workers_lost"] == 1 and snap["redispatched"] == 1
    finally:
        if fake is not None:
            fake.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------------------------- CLI


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_pow_serve_and_worker():
    cport, wport = _free_port(), _free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "bmnode.cli", "pow", "serve", "--clients", f"tcp://127.0.0.1:{cport}",
         "--workers-bind", f"tcp://127.0.0.1:{wport}", "--local-workers", "0", "--backend", "python",
         "--log-level", "WARNING"],
        env=_env(), cwd=ROOT,
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "bmnode.cli", "pow", "worker", "--connect", f"tcp://127.0.0.1:{wport}",
         "--backend", "python", "--heartbeat", "0.2", "--log-level", "WARNING"],
        env=_env(), cwd=ROOT,
    )
    try:
        with PowClient(f"tcp://127.0.0.1:{cport}", timeout=30) as c:
            sol = c.solve(ih("cli"), EASY)
            assert trial_value(sol.nonce, ih("cli")) <= EASY
            assert c.status().workers == 1
        for p in (worker, serve):
            p.send_signal(signal.SIGTERM)
            assert p.wait(15) == 0
    finally:
        for p in (worker, serve):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_cli_rejects_bad_options():
    r = subprocess.run([sys.executable, "-m", "bmnode.cli", "pow", "serve", "--clients", "nonsense"],
                       env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "endpoint" in r.stderr
    r = subprocess.run([sys.executable, "-m", "bmnode.cli", "pow", "worker", "--connect", "tcp://127.0.0.1:1",
                        "--heartbeat", "0"], env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "heartbeat" in r.stderr


# ----------------------------------------------------------------------------- as a node process


def test_broker_as_a_supervised_process_survives_kill_9(tmp_path):
    """The node runs the broker as a child on the bus's ipc endpoints; after a kill -9 it is
    restarted, and a client that submits its lost job again (same name and id) is served."""
    from bmnode.node.supervisor import ChildSpec, Supervisor
    from bmnode.pow.broker import serve_broker

    e = bus.Endpoints(tmp_path)
    cfg = BrokerConfig(client_endpoints=[e.pow], worker_endpoints=[e.pow_workers], local_workers=1,
                       backend="python", heartbeat=0.2, worker_timeout=1.0)
    sup = Supervisor([ChildSpec("pow", serve_broker, (cfg,), {"log_level": "WARNING"})], backoff=0.1)
    sup.start()
    try:
        with PowClient(e.pow, client="mailbox", timeout=30) as c:
            assert trial_value(c.solve(ih("first"), EASY).nonce, ih("first")) <= EASY
            job = c.submit(HARD_IH, HARD_TARGET, job="msg-1")  # long: it is running when the broker dies
            pid = sup.snapshot()[0]["pid"]
            os.kill(pid, signal.SIGKILL)
            assert sup.wait_for(lambda v: v["pow"]["restarts"] == 1 and v["pow"]["state"] == "running", 30)
            with pytest.raises(PowTimeout):
                c.wait(job, 1.0)  # the old broker took the job with it
            assert c.status("msg-1").state == "unknown"  # the new broker never heard of it
            assert c.submit(HARD_IH, HARD_TARGET, job="msg-1") == "msg-1"  # resubmitted after the timeout
            assert until(lambda: c.status("msg-1").state == "running", 10)
            assert c.cancel("msg-1") is True
            again = c.submit(ih("again"), EASY, job="msg-2")
            assert trial_value(c.wait(again).nonce, ih("again")) <= EASY
    finally:
        sup.stop(30)
    assert not e.path("pow").exists() and not e.path("pow_workers").exists()
