"""CURVE security of the PoW service over real ZeroMQ sockets on 127.0.0.1: key files,
authorised and unknown keys, a wrong server key, per-key limits, the plaintext-exposure
rule, and the CLI (keygen, serve, worker). Python backend at easy targets; waits bounded."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth

from bmnode.cli import main as cli_main
from bmnode.errors import ConfigError
from bmnode.node import bus
from bmnode.pow.broker import BrokerConfig, PowAuthError, PowBroker, PowClient, PowLimit
from bmnode.pow.curve_keys import (
    AuthorizedKeys, CurveKeyError, InsecureEndpoint, check_exposure, client_curve, generate_keypair, is_loopback,
    load_keypair, load_public_key, server_curve,
)
from bmnode.pow.python_backend import PythonBackend
from bmnode.pow.target import trial_value
from bmnode.pow.worker import PowWorker
from tests.waiting import until

ROOT = Path(__file__).resolve().parent.parent
EASY = (1 << 64) // 2000


def ih(i: int | str) -> bytes:
    return hashlib.sha512(f"curve job {i}".encode()).digest()


@pytest.fixture
def keys(tmp_path):
    """Key pairs broker, client, client2, worker (authorized) and stranger (not)."""
    d = tmp_path / "keys"
    auth = tmp_path / "authorized"
    auth.mkdir()
    out = {"dir": d, "authorized": auth}
    for name in ("broker", "client", "client2", "worker", "stranger"):
        pub, sec, key = generate_keypair(d, name)
        out[name] = {"pub": pub, "sec": sec, "key": key}
        if name in ("client", "client2", "worker"):
            (auth / pub.name).write_bytes(pub.read_bytes())
    return out


@pytest.fixture
def curve_broker(keys):
    made: list[PowBroker] = []
    clients: list[PowClient] = []
    workers: list[PowWorker] = []

    def broker(**kw) -> PowBroker:
        cfg = BrokerConfig(
            client_endpoints=kw.pop("client_endpoints", ["tcp://127.0.0.1:0"]),
            worker_endpoints=kw.pop("worker_endpoints", ["tcp://127.0.0.1:0"]),
            local_workers=kw.pop("local_workers", 0), backend="python", heartbeat=0.2, worker_timeout=1.0,
            curve_secret_key=str(keys["broker"]["sec"]), curve_authorized_keys=str(keys["authorized"]), **kw,
        )
        b = PowBroker(cfg).start()
        made.append(b)
        return b

    def client(b: PowBroker, who: str = "client", *, server: str = "broker", name: str = "", timeout: float = 20,
               i: int = 0) -> PowClient:
        c = PowClient(b.client_addresses[i], client=name, timeout=timeout, server_key=str(keys[server]["pub"]),
                      secret_key=str(keys[who]["sec"]))
        clients.append(c)
        return c

    def worker(b: PowBroker, who: str = "worker", *, server: str = "broker", name: str = "w") -> PowWorker:
        w = PowWorker(b.worker_addresses[0], PythonBackend(), name=name, heartbeat=0.2,
                      server_key=str(keys[server]["pub"]), secret_key=str(keys[who]["sec"]))
        w.start()
        workers.append(w)
        return w

    broker.client = client  # type: ignore[attr-defined]
    broker.worker = worker  # type: ignore[attr-defined]
    yield broker
    for w in workers:
        w.stop()
    for c in clients:
        c.close()
    for b in made:
        b.stop()


# ----------------------------------------------------------------------------- key files


def test_keygen_writes_private_secret_and_zmq_readable_files(tmp_path):
    d = tmp_path / "new" / "keys"
    pub, sec, key = generate_keypair(d, "broker")
    assert stat.S_IMODE(os.stat(sec).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(pub).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert "secret-key" not in pub.read_text()
    zpub, zsec = zmq.auth.load_certificate(sec)  # the zmq.auth format, both ways
    assert zpub == key and zmq.curve_public(zsec) == key
    assert zmq.auth.load_certificate(pub) == (key, None)
    assert load_public_key(pub) == key and load_keypair(sec).public == key
    with pytest.raises(CurveKeyError, match="exists already"):
        generate_keypair(d, "broker")
    os.chmod(sec, 0o644)
    _, sec2, key2 = generate_keypair(d, "broker", force=True)
    assert key2 != key and stat.S_IMODE(os.stat(sec2).st_mode) == 0o600
    assert [p.name for p in d.iterdir() if p.name.startswith(".")] == []  # no temp files left
    with pytest.raises(CurveKeyError, match="key name"):
        generate_keypair(d, "../evil")


def test_cli_keygen(tmp_path, capsys):
    assert cli_main(["pow", "keygen", "worker-1", "--dir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert load_public_key(out["public_file"]).decode() == out["public_key"]
    assert stat.S_IMODE(os.stat(out["secret_file"]).st_mode) == 0o600
    assert cli_main(["pow", "keygen", "worker-1", "--dir", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err


def test_bad_key_files_give_clear_errors(tmp_path, keys):
    with pytest.raises(CurveKeyError, match="does not exist"):
        load_keypair(tmp_path / "missing.key_secret")
    with pytest.raises(CurveKeyError, match="directory"):
        load_public_key(tmp_path)
    junk = tmp_path / "junk.key"
    junk.write_text("hello\n")
    with pytest.raises(CurveKeyError, match="no public-key"):
        load_public_key(junk)
    junk.write_text('curve\n    public-key = "tooshort"\n')
    with pytest.raises(CurveKeyError, match="not a Z85 CURVE key"):
        load_public_key(junk)
    with pytest.raises(CurveKeyError, match="NAME.key_secret"):
        load_keypair(keys["broker"]["pub"])  # the public file where the secret one is needed
    mixed = tmp_path / "mixed.key_secret"
    sec_line = [ln for ln in keys["client"]["sec"].read_text().splitlines() if "secret-key" in ln][0]
    mixed.write_text(f'curve\n    public-key = "{keys["broker"]["key"].decode()}"\n{sec_line}\n')
    with pytest.raises(CurveKeyError, match="does not belong"):
        load_keypair(mixed)
    assert load_public_key(keys["broker"]["key"].decode()) == keys["broker"]["key"]  # Z85 text works too
    with pytest.raises(CurveKeyError, match="both"):
        client_curve(str(keys["broker"]["pub"]), None)
    with pytest.raises(CurveKeyError, match="both"):
        server_curve(str(keys["broker"]["sec"]), None)
    with pytest.raises(CurveKeyError, match="tcp:// endpoints only"):  # ipc is always plaintext
        PowClient(f"ipc://{tmp_path}/pow.sock", server_key=str(keys["broker"]["pub"]),
                  secret_key=str(keys["client"]["sec"]))
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.key_secret"
        locked.write_bytes(keys["client"]["sec"].read_bytes())
        os.chmod(locked, 0)
        with pytest.raises(CurveKeyError, match="cannot read"):
            load_keypair(locked)


def test_authorized_folder_checks_and_reloads(tmp_path, keys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CurveKeyError, match="no \\*.key files"):
        AuthorizedKeys(empty)
    with pytest.raises(CurveKeyError):
        AuthorizedKeys(tmp_path / "nowhere")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.key").write_text("not a key\n")
    with pytest.raises(CurveKeyError, match="x.key"):
        AuthorizedKeys(bad)
    ak = AuthorizedKeys(keys["authorized"])
    assert ak.allows(keys["client"]["key"]) and not ak.allows(keys["stranger"]["key"])
    (keys["authorized"] / "stranger.key").write_bytes(keys["stranger"]["pub"].read_bytes())
    os.utime(keys["authorized"], (time.time() + 5, time.time() + 5))  # mtime granularity
    assert ak.allows(keys["stranger"]["key"])  # granted without a restart
    (keys["authorized"] / "junk.key").write_text("junk\n")
    os.utime(keys["authorized"], (time.time() + 10, time.time() + 10))
    assert ak.allows(keys["stranger"]["key"]) and ak.allows(keys["client"]["key"])  # last good set kept


def test_loopback_and_exposure_rule():
    for ep in ("tcp://127.0.0.1:1", "tcp://127.1.2.3:1", "tcp://localhost:1", "tcp://[::1]:1"):
        assert is_loopback(ep), ep
    for ep in ("tcp://0.0.0.0:1", "tcp://*:1", "tcp://eth0:1", "tcp://10.0.0.1:1", "tcp://[::]:1", "ipc:///x"):
        assert not is_loopback(ep), ep
    check_exposure(["tcp://127.0.0.1:1", "ipc:///tmp/x", "inproc://y"], curve=False, insecure=False)
    check_exposure(["tcp://0.0.0.0:1"], curve=True, insecure=False)
    check_exposure(["tcp://0.0.0.0:1"], curve=False, insecure=True)
    with pytest.raises(InsecureEndpoint, match="--insecure"):
        check_exposure(["tcp://127.0.0.1:1", "tcp://*:1"], curve=False, insecure=False)
    assert issubclass(InsecureEndpoint, ConfigError)


def test_broker_refuses_plaintext_on_a_public_address_before_binding():
    cfg = BrokerConfig(client_endpoints=["tcp://0.0.0.0:0"], worker_endpoints=[], local_workers=0)
    b = PowBroker(cfg)
    with pytest.raises(InsecureEndpoint):
        b.start()
    assert b.client_addresses == [] and b._thread is None  # nothing was bound


def test_broker_with_unusable_keys_does_not_start(tmp_path, keys):
    cfg = BrokerConfig(client_endpoints=["tcp://127.0.0.1:0"], local_workers=0,
                       curve_secret_key=str(tmp_path / "nope.key_secret"),
                       curve_authorized_keys=str(keys["authorized"]))
    with pytest.raises(CurveKeyError, match="does not exist"):
        PowBroker(cfg).start()


# ----------------------------------------------------------------------------- over the wire


def test_authorised_worker_and_client_complete_a_job(curve_broker, keys):
    b = curve_broker()
    w = curve_broker.worker(b, name="gpu-1")
    assert until(lambda: b.worker_names() == ["gpu-1"], 10)
    assert list(b._workers.values())[0].key == keys["worker"]["key"].decode()  # authenticated
    c = curve_broker.client(b)
    sol = c.solve(ih(1), EASY, timeout=20)
    assert trial_value(sol.nonce, ih(1)) == sol.trial_value <= EASY
    assert b.snapshot()["solved"] == 1 and w.handshake_problem is None


def test_unknown_client_key_is_refused_fast(curve_broker):
    b = curve_broker()
    c = curve_broker.client(b, "stranger", timeout=15)
    t0 = time.monotonic()
    with pytest.raises(PowAuthError, match="refused this key"):
        c.submit(ih(2), EASY)
    assert time.monotonic() - t0 < 10  # told, not left waiting out the timeout
    time.sleep(0.3)
    assert b.snapshot()["submitted"] == 0  # the job never reached the broker


def test_plaintext_client_on_a_curve_endpoint_is_refused(curve_broker):
    b = curve_broker()
    with PowClient(b.client_addresses[0], timeout=3) as c:
        with pytest.raises(PowAuthError, match="CURVE"):
            c.submit(ih(3), EASY)
    assert b.snapshot()["submitted"] == 0


def test_wrong_server_key_fails_cleanly(curve_broker):
    b = curve_broker()
    c = curve_broker.client(b, server="stranger", timeout=15)
    t0 = time.monotonic()
    with pytest.raises(PowAuthError, match="--server-key"):
        c.submit(ih(4), EASY)
    assert time.monotonic() - t0 < 10
    assert b.snapshot()["submitted"] == 0


def test_unknown_worker_key_never_joins(curve_broker):
    b = curve_broker()
    w = curve_broker.worker(b, "stranger", name="intruder")
    assert until(lambda: w.handshake_problem is not None, 10)
    assert "refused this key" in w.handshake_problem
    assert b.snapshot()["workers_joined"] == 0 and b.worker_names() == []


def test_separate_worker_folder_keeps_clients_out_of_the_worker_socket(curve_broker, keys, tmp_path):
    wdir = tmp_path / "workers"
    wdir.mkdir()
    (wdir / "worker.key").write_bytes(keys["worker"]["pub"].read_bytes())
    b = curve_broker(curve_authorized_workers=str(wdir))
    posing = curve_broker.worker(b, "client", name="posing")
    real = curve_broker.worker(b, "worker", name="real")
    assert until(lambda: b.worker_names() == ["real"], 10)
    assert until(lambda: posing.handshake_problem is not None, 10)
    assert real.handshake_problem is None


def test_limit_is_per_authenticated_key_not_per_name(curve_broker):
    b = curve_broker(max_jobs_per_client=2)
    a1 = curve_broker.client(b, "client", name="alice")
    a2 = curve_broker.client(b, "client", name="mallory")  # same key, another name
    other = curve_broker.client(b, "client2", name="alice")  # another key, the same name
    a1.submit(ih(10), EASY)
    a1.submit(ih(11), EASY)
    with pytest.raises(PowLimit) as info:
        a2.submit(ih(12), EASY)  # a new name does not buy more room
    assert info.value.code == "limit"
    j = other.submit(ih(13), EASY)  # another key is not affected
    assert other.status(j).state == "queued"
    assert a2.status(j).state == "unknown"  # nor can the first key see the other's jobs
    assert b.snapshot()["refused_limit"] == 1


def test_ipc_stays_plaintext_next_to_curve_tcp(curve_broker, tmp_path):
    e = bus.Endpoints(tmp_path / "bus")
    b = curve_broker(client_endpoints=[e.pow, "tcp://127.0.0.1:0"], local_workers=1)
    with PowClient(b.client_addresses[0], client="mailbox", timeout=20) as c:
        assert trial_value(c.solve(ih(20), EASY).nonce, ih(20)) <= EASY
    c2 = curve_broker.client(b, i=1)
    assert trial_value(c2.solve(ih(21), EASY).nonce, ih(21)) <= EASY


# ----------------------------------------------------------------------------- CLI


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serve_and_worker_with_curve(keys):
    cport, wport = _free_port(), _free_port()
    cli = [sys.executable, "-m", "bmnode.cli", "pow"]
    serve = subprocess.Popen(
        cli + ["serve", "--clients", f"tcp://127.0.0.1:{cport}", "--workers-bind", f"tcp://127.0.0.1:{wport}",
               "--local-workers", "0", "--log-level", "WARNING", "--secret-key", str(keys["broker"]["sec"]),
               "--authorized-keys", str(keys["authorized"])],
        env=_env(), cwd=ROOT,
    )
    worker = subprocess.Popen(
        cli + ["worker", "--connect", f"tcp://127.0.0.1:{wport}", "--backend", "python", "--heartbeat", "0.2",
               "--log-level", "WARNING", "--server-key", str(keys["broker"]["pub"]),
               "--secret-key", str(keys["worker"]["sec"])],
        env=_env(), cwd=ROOT,
    )
    try:
        with PowClient(f"tcp://127.0.0.1:{cport}", timeout=30, server_key=keys["broker"]["key"].decode(),
                       secret_key=str(keys["client"]["sec"])) as c:
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


def test_cli_refuses_exposed_plaintext_and_bad_keys(keys, tmp_path):
    cli = [sys.executable, "-m", "bmnode.cli", "pow"]
    r = subprocess.run(cli + ["serve", "--clients", "tcp://0.0.0.0:0", "--local-workers", "0"],
                       env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--insecure" in r.stderr
    r = subprocess.run(cli + ["serve", "--clients", "tcp://127.0.0.1:0", "--secret-key", str(keys["broker"]["pub"]),
                              "--authorized-keys", str(keys["authorized"])],
                       env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "key_secret" in r.stderr
    r = subprocess.run(cli + ["worker", "--connect", "tcp://127.0.0.1:1", "--server-key", str(tmp_path / "nope"),
                              "--secret-key", str(keys["worker"]["sec"])],
                       env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "nope" in r.stderr
    r = subprocess.run(cli + ["serve", "--help"], env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert "--insecure" in r.stdout


def test_cli_solve_through_a_curve_broker(curve_broker, keys, capsys):
    b = curve_broker(local_workers=1)
    base = ["pow", "solve", "--initial-hash", ih("solve").hex(), "--target", str(EASY), "--broker",
            b.client_addresses[0], "--server-key", str(keys["broker"]["pub"]), "--timeout", "20"]
    assert cli_main(base + ["--secret-key", str(keys["client"]["sec"])]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backend"].startswith("broker ") and trial_value(out["nonce"], ih("solve")) <= EASY
    assert cli_main(base + ["--secret-key", str(keys["stranger"]["sec"])]) == 2
    assert "refused this key" in capsys.readouterr().err
    assert b.snapshot()["submitted"] == 1


# ----------------------------------------------------------------------------- the node's broker


def test_node_broker_takes_remote_workers_over_curve(tmp_path, keys):
    """`bmnode run --pow-workers-bind ... --pow-secret-key ... --pow-authorized-keys ...`: the
    mailbox's ipc client stays plaintext, a listed remote worker joins over CURVE and does the job,
    an unlisted one never joins."""
    from bmnode.node.config import NodeConfig
    from bmnode.node.fullnode import check_pow_settings, pow_broker_config

    cfg = NodeConfig(data_dir=tmp_path / "node", pow_backend="python", pow_workers_bind=("tcp://127.0.0.1:0",),
                     pow_secret_key=str(keys["broker"]["sec"]), pow_authorized_keys=str(keys["authorized"]))
    check_pow_settings(cfg)
    e = bus.Endpoints(str(tmp_path / "bus"))
    e.prepare()
    b = PowBroker(pow_broker_config(cfg, e, local_workers=0)).start()
    workers = []
    try:
        tcp = [a for a in b.worker_addresses if a.startswith("tcp://")]
        assert len(tcp) == 1
        for who in ("stranger", "worker"):
            w = PowWorker(tcp[0], PythonBackend(), name=who, heartbeat=0.2,
                          server_key=str(keys["broker"]["pub"]), secret_key=str(keys[who]["sec"]))
            w.start()
            workers.append(w)
        with PowClient(e.pow, timeout=20) as c:  # the mailbox's side: ipc, no keys
            assert until(lambda: c.status().workers == 1)
            sol = c.solve(ih("node"), EASY)
        assert trial_value(sol.nonce, ih("node")) <= EASY
    finally:
        for w in workers:
            w.stop()
        b.stop()


def test_node_refuses_unusable_pow_settings_before_starting(tmp_path, keys, capsys):
    from bmnode.node.config import NodeConfig
    from bmnode.node.fullnode import check_pow_settings

    exposed = NodeConfig(data_dir=tmp_path, pow_workers_bind=("tcp://0.0.0.0:8447",))
    with pytest.raises(ConfigError, match="--pow-workers-bind.*refusing to bind tcp://0.0.0.0:8447"):
        check_pow_settings(exposed)
    check_pow_settings(NodeConfig(data_dir=tmp_path, pow_workers_bind=("tcp://0.0.0.0:8447",), pow_insecure=True))
    check_pow_settings(NodeConfig(data_dir=tmp_path, pow_workers_bind=("tcp://127.0.0.1:8447",)))
    with pytest.raises(ConfigError, match="both"):
        check_pow_settings(NodeConfig(data_dir=tmp_path, pow_secret_key=str(keys["broker"]["sec"])))
    with pytest.raises(ConfigError, match="does not exist"):
        check_pow_settings(NodeConfig(data_dir=tmp_path, pow_secret_key=str(tmp_path / "nope.key_secret"),
                                      pow_authorized_keys=str(keys["authorized"])))
    with pytest.raises(ConfigError, match="tcp://HOST:PORT"):
        NodeConfig(data_dir=tmp_path, pow_workers_bind=("ipc:///tmp/x",))
    # through `bmnode run`: exit 2 with the reason, before any process starts
    rc = cli_main(["run", "--data-dir", str(tmp_path / "n"), "--no-bootstrap", "--listen", "127.0.0.1:0",
                   "--pow-workers-bind", "tcp://0.0.0.0:8447"])
    assert rc == 2
    assert "refusing to bind" in capsys.readouterr().err
    assert not (tmp_path / "n" / "inventory.sqlite").exists()
