"""The relay load generator (tools/loadgen, bmnode/net/loadgen.py) and the relay benchmark's
plumbing, on 127.0.0.1 only. Every run is bounded; nothing asserts a time."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bmnode.net import loadgen
from bmnode.net.loadgen import (
    LoadgenError,
    LoadgenOptions,
    LoadgenReport,
    NodeProcess,
    generate_objects,
    loopback_host,
    proc_cpu_seconds,
    proc_memory_kb,
    run_loadgen,
)
from bmnode.net.testnet import RawPeer, make_object, start_node
from bmnode.net.tls import tls_available
from bmnode.protocol.encoding import encode_var_int
from bmnode.protocol.framing import frame
from bmnode.protocol.hashing import inventory_hash
from bmnode.protocol.messages import GetData, Inv
from bmnode.protocol.validation import check_relay

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60


def run(coro, timeout: float = TIMEOUT):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def _load_node(tmp: Path, opts: dict, **node_overrides) -> tuple[LoadgenReport, dict]:
    node = await start_node(tmp / "node", **node_overrides)
    try:
        report = await run_loadgen(LoadgenOptions(port=node.listen_port, **opts))
        return report, node.stats()
    finally:
        await node.stop()


# ------------------------------------------------------------------------------ a real run


def test_three_peers_fifty_objects_all_relayed_and_served_back(tmp_path: Path):
    opts = dict(peers=3, count=50, rate=200, warmup=0.3, settle=3.0, max_wait=40)
    report, stats = run(_load_node(tmp_path, opts))
    assert report.ok, report.format()
    assert report.offered == 50
    assert report.requested == 50 and report.sent >= 50
    assert report.accepted == 50
    assert report.announced_all == 50
    assert report.missing == 0
    assert report.fetch_requested == 50 and report.fetched_ok == 50
    assert report.fetch_wrong == report.fetch_unanswered == 0
    assert report.echoed == 0 and report.disconnects == 0
    assert report.latency_p50_s is not None and report.relay_rate > 0
    # The node's own counters agree: every object was validated and stored once.
    assert stats["objects_accepted"] == 50
    assert stats.get("objects_rejected", 0) == 0
    assert stats["inventory"] == 50
    d = report.to_dict()
    assert d["ok"] is True and d["missing"] == 0
    json.dumps(d)  # JSON-ready
    assert "result: OK" in report.format()


@pytest.mark.skipif(not tls_available(), reason="no TLS here")
def test_run_over_tls(tmp_path: Path):
    opts = dict(peers=3, count=20, rate=0, tls=True, warmup=0.3, settle=3.0, max_wait=40)
    report, stats = run(_load_node(tmp_path, opts))
    assert report.ok, report.format()
    assert report.announced_all == 20 and report.fetched_ok == 20
    assert stats["objects_accepted"] == 20


def test_objects_the_node_rejects_are_reported_missing(tmp_path: Path):
    # The node demands far more PoW than the objects carry: it drops them, nothing is relayed.
    opts = dict(peers=2, count=10, rate=0, warmup=0.3, settle=1.0, max_wait=20)
    report, stats = run(_load_node(tmp_path, opts, ntpb=1000, extra=1000))
    assert not report.ok
    assert report.requested == 10 and report.sent >= 10
    assert report.missing >= 9  # an object meeting 1000:1000 by chance has odds of about 1e-4
    assert report.missing == report.count - report.announced_all
    assert stats["objects_rejected"] >= 9
    assert "OBJECTS MISSING" in report.format()


def test_given_objects_must_match_count(tmp_path: Path):
    objs = generate_objects(3)

    async def main():
        with pytest.raises(LoadgenError, match="3 objects given"):
            await run_loadgen(LoadgenOptions(port=8444, peers=2, count=4), objs)

    run(main())


# ------------------------------------------------------------------------------ a node that misbehaves


class FakeNode:
    """A minimal relay on 127.0.0.1 that gets one thing wrong on purpose: ``echo`` announces
    objects back to their sender, ``skip`` never announces to the first peer, ``wrong`` serves
    other bytes than it was asked for."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.peers: list[RawPeer] = []
        self.store: dict[bytes, bytes] = {}

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.server.close()
        for p in self.peers:
            p.close()

    async def _serve(self, reader, writer) -> None:
        p = RawPeer(reader, writer, outbound=False)
        try:
            await p.handshake(5.0, listen_port=0)
            self.peers.append(p)
            while True:
                f = await p.recv(30)
                if f.command == "inv":
                    await p.send(GetData(Inv.decode(f.payload).hashes))
                elif f.command == "object":
                    h = inventory_hash(f.payload)
                    self.store[h] = f.payload
                    for q in self.peers:
                        if (q is p and self.mode != "echo") or (self.mode == "skip" and q is self.peers[0]):
                            continue
                        q.write(Inv((h,)).encode())
                elif f.command == "getdata":
                    for h in GetData.decode(f.payload).hashes:
                        data = make_object() if self.mode == "wrong" else self.store[h]
                        p.write(frame("object", data))
        except (EOFError, TimeoutError, ConnectionError):
            pass


@pytest.mark.parametrize("mode", ["echo", "skip", "wrong"])
def test_misbehaving_node_is_caught(mode: str):
    async def main():
        fake = FakeNode(mode)
        port = await fake.start()
        try:
            return await run_loadgen(LoadgenOptions(port=port, peers=3, count=9, rate=0, warmup=0.1, settle=1.0, max_wait=20))
        finally:
            await fake.stop()

    report = run(main())
    assert not report.ok
    assert report.offered == 9 and report.sent == 9
    if mode == "echo":
        assert report.echoed == 9 and report.missing == 0
    elif mode == "skip":
        # Objects of two peers never reach the first peer to connect; its own reach both others.
        assert report.missing == 6 and report.announced_all == 3 and report.accepted == 9
    else:
        assert report.fetch_unanswered == 9 and report.fetched_ok == 0
        assert report.unexpected_objects == 9 and report.missing == 0


# ------------------------------------------------------------------------------ loopback only


@pytest.mark.parametrize("host", ["10.0.0.1", "192.0.2.7", "8.8.8.8", "0.0.0.0", "::", "2001:db8::1", "example.com", "::ffff:127.0.0.1", ""])
def test_refuses_non_loopback_targets(host: str):
    with pytest.raises(LoadgenError, match="refusing target"):
        loopback_host(host)
    with pytest.raises(LoadgenError):
        LoadgenOptions(port=8444, host=host).check()


@pytest.mark.parametrize("host, want", [("127.0.0.1", "127.0.0.1"), ("localhost", "127.0.0.1"), ("127.0.0.2", "127.0.0.2"), ("::1", "::1"), ("[::1]", "::1")])
def test_accepts_loopback_targets(host: str, want: str):
    assert loopback_host(host) == want


def test_cli_refuses_a_remote_target_before_connecting(capsys):
    assert loadgen.main(["--target", "192.0.2.1:8444", "--count", "1"]) == 2
    err = capsys.readouterr().err
    assert "refusing target" in err and "192.0.2.1" in err


@pytest.mark.parametrize(
    "argv, text",
    [
        (["--target", "127.0.0.1:8444", "--peers", "1"], "at least 2 peers"),
        (["--target", "127.0.0.1:8444", "--network-pow", "0:1"], "--network-pow"),
        (["--target", "127.0.0.1:99999"], "--target"),
        (["--target", "127.0.0.1:8444", "--duration", "2", "--rate", "0"], "--duration"),
    ],
)
def test_cli_rejects_bad_options(capsys, argv, text):
    assert loadgen.main(argv) == 2
    assert text in capsys.readouterr().err


def test_tools_loadgen_spawns_a_node_and_reports_json(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "loadgen"), "--spawn-node", "--peers", "3", "--count", "30", "--rate", "0", "--json"],
        capture_output=True, text=True, timeout=90, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["ok"] is True
    assert rep["count"] == rep["offered"] == rep["announced_all"] == 30
    assert rep["missing"] == 0 and rep["fetched_ok"] == 30
    assert rep["target"].startswith("127.0.0.1:")


def test_cli_exit_status_is_1_when_objects_go_missing(tmp_path: Path, capsys):
    node = NodeProcess(tmp_path / "node", network_pow=(1000, 1000))
    port = node.start()
    try:
        rc = loadgen.main(["--target", f"127.0.0.1:{port}", "--peers", "2", "--count", "5", "--rate", "0", "--settle", "1.5", "--json"])
    finally:
        status = node.stop()
    assert rc == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] is False and rep["missing"] >= 4
    assert status == 0  # SIGTERM gives a clean shutdown


# ------------------------------------------------------------------------------ pieces


def test_generated_objects_are_distinct_and_valid_at_the_lowered_pow():
    objs = generate_objects(20, size=40, network_pow=(2, 3))
    assert len({inventory_hash(o) for o in objs}) == 20
    for o in objs:
        assert check_relay(o, int(__import__("time").time()), ntpb=2, extra=3).accept


def test_hash_table_lookup_exact():
    objs = generate_objects(50)
    hashes = [inventory_hash(o) for o in objs]
    table = loadgen._HashTable(hashes)
    # Same first 8 bytes as one of ours but a different tail: not ours.
    twin = hashes[7][:8] + bytes(24)
    query = [hashes[3], os.urandom(32), hashes[49], twin, hashes[0]]
    rows = np.frombuffer(b"".join(query), dtype=np.uint8).reshape(-1, 32)
    assert table.lookup(rows).tolist() == [3, -1, 49, -1, 0]
    assert table.lookup(np.zeros((0, 32), dtype=np.uint8)).tolist() == []


def test_hash_rows_parses_and_rejects():
    hs = [os.urandom(32) for _ in range(3)]
    rows = loadgen._hash_rows(encode_var_int(3) + b"".join(hs))
    assert rows is not None and [bytes(r) for r in rows] == hs
    assert loadgen._hash_rows(encode_var_int(0)).shape == (0, 32)
    assert loadgen._hash_rows(encode_var_int(3) + b"".join(hs)[:-1]) is None  # short
    assert loadgen._hash_rows(encode_var_int(2) + b"".join(hs)) is None  # surplus
    assert loadgen._hash_rows(b"\xfd\x01\x00") is None  # non-minimal var_int
    assert loadgen._hash_rows(b"") is None


def test_proc_figures_of_this_process():
    pid = os.getpid()
    sum(i * i for i in range(200_000))
    assert proc_cpu_seconds(pid) > 0
    mem = proc_memory_kb(pid)
    assert mem["VmRSS"] > 1000 and mem["VmHWM"] >= mem["VmRSS"]


def test_report_ok_needs_everything():
    base = dict(target="127.0.0.1:1", peers=2, tls=False, network_pow="1:1", object_size=64, count=5, offered=5)
    assert LoadgenReport(**base).ok
    assert not LoadgenReport(**{**base, "offered": 4}).ok
    assert not LoadgenReport(**base, missing=1).ok
    assert not LoadgenReport(**base, fetch_wrong=1).ok
    assert not LoadgenReport(**base, fetch_unanswered=1).ok
    assert not LoadgenReport(**base, echoed=1).ok


# ------------------------------------------------------------------------------ the benchmark


def test_relay_bench_small_json_run(tmp_path: Path):
    """bench/relay_bench.py end to end at toy sizes: every phase runs and reports sane counts."""
    proc = subprocess.run(
        [
            sys.executable, str(ROOT / "bench" / "relay_bench.py"), "--quick", "--json",
            "--peers", "5", "--objects", "1000", "--steady-rate", "500", "--steady-seconds", "1",
            "--latency-objects", "3", "--rss-objects", "1500", "--dir", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=150,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fig = json.loads(proc.stdout)
    assert fig["baseline"]["objects"] == 1000 and fig["baseline"]["rejected"] == 0
    assert fig["baseline"]["ceiling_objects_per_s"] > 0
    burst, steady = fig["throughput"]["burst"], fig["throughput"]["steady"]
    assert burst["ok"] and burst["announced_all"] == 1000 and burst["missing"] == 0
    assert steady["ok"] and steady["announced_all"] == 500
    assert burst["node_cpu_s"] >= 0 and burst["node_rss_end_mb"] > 0
    for name in ("reference_timers", "test_timers"):
        assert fig["latency"][name]["reached_all"] == 3, fig["latency"][name]
    assert fig["rss"]["big_inv_hashes"] == 1500 and fig["rss"]["served"] == 1500
    assert fig["rss"]["rss_after_serving_mb"] > 0
