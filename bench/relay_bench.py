"""Relay benchmark (issue 4): what one net process sustains, how fast a 5-node network spreads
an object, and what a node with 100,000 objects weighs.

Phases (each bounded; all run by default, about a minute in all; ``--quick`` about 20 s):

* ``baseline``   in this process, the raw per-object cost of what the node must do for each new
                 object: frame checksum, inventory hash, ``check_relay``, inventory insert (one
                 flush per 500, as the node batches per event-loop turn). Its inverse is the
                 ceiling for one core.
* ``throughput`` a node (``python -m bmnode.net``, the ``bmnode run`` net process) in its own
                 process, loaded by ``tools/loadgen``'s machinery in this process: 50 peers offer
                 N new objects at once; new objects/s = N / (first offer .. last object announced
                 to every other peer). The node's CPU time (from /proc/PID/stat, sampled here)
                 over that window gives CPU per object. Every 10th object is also fetched back.
* ``latency``    5 nodes (in this process, one event loop) wired as ``testnet.start_network``
                 (ring plus chords); objects injected one by one at rotating nodes; time until
                 every node stored it, p50/p99. Run with the reference timers (announcements
                 batched once a second, as ``bmnode run``) and with the test timers (50 ms).
* ``rss``        a node process whose inventory holds N small objects (written directly into its
                 inventory.sqlite first): VmRSS after start, after sending its big inv and serving
                 every object once to a peer, and the peak (VmHWM); an empty node for comparison.

    python3 bench/relay_bench.py [--quick] [--json] [--phases baseline,throughput,latency,rss]

Figures only; nothing here passes or fails on a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bmnode.net.loadgen import (  # noqa: E402
    LoadgenOptions,
    NodeProcess,
    generate_objects,
    run_loadgen,
)
from bmnode.net.settings import NetSettings  # noqa: E402
from bmnode.net.testnet import (  # noqa: E402
    TEST_POW,
    RawPeer,
    make_object,
    start_network,
    stop_all,
    wait_for,
)
from bmnode.protocol.encoding import encode_var_int  # noqa: E402
from bmnode.protocol.framing import FrameDecoder, frame  # noqa: E402
from bmnode.protocol.hashing import inventory_hash  # noqa: E402
from bmnode.protocol.messages import Inv  # noqa: E402
from bmnode.protocol.objects import attach_nonce, encode_object_body, parse_header  # noqa: E402
from bmnode.protocol.validation import check_relay  # noqa: E402
from bmnode.store.inventory import Inventory  # noqa: E402

PHASES = ("baseline", "throughput", "latency", "rss")


def _mb(kb: int | float) -> float:
    return round(kb / 1024, 1)


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


# =============================================================================== baseline


def bench_baseline(objects: list[bytes], tmp: Path, ntpb: int, extra: int) -> dict[str, Any]:
    """Per-object cost of checksum + hash + check_relay + inventory insert, in this process."""
    objects = objects[:5000]
    n = len(objects)
    now = int(time.time())
    framed = b"".join(frame("object", o) for o in objects)

    t = time.perf_counter()
    dec = FrameDecoder()
    frames = dec.feed(framed)
    t_frame = time.perf_counter() - t
    assert len(frames) == n

    t = time.perf_counter()
    hashes = [inventory_hash(o) for o in objects]
    t_hash = time.perf_counter() - t

    t = time.perf_counter()
    verdicts = [check_relay(o, now, ntpb=ntpb, extra=extra) for o in objects]
    t_check = time.perf_counter() - t
    rejected = sum(1 for v in verdicts if not v.accept)

    (tmp / "baseline").mkdir(parents=True, exist_ok=True)
    inv = Inventory(tmp / "baseline")
    try:
        t = time.perf_counter()
        for i, (o, h, v) in enumerate(zip(objects, hashes, verdicts, strict=True)):
            inv.add(o, v.header, now, inv_hash=h)
            if i % 500 == 499:
                inv.flush()
        inv.flush()
        t_store = time.perf_counter() - t
    finally:
        inv.close()
    total = t_frame + t_hash + t_check + t_store
    return {
        "objects": n,
        "rejected": rejected,
        "frame_decode_us": t_frame / n * 1e6,
        "inventory_hash_us": t_hash / n * 1e6,
        "check_relay_us": t_check / n * 1e6,
        "inventory_add_flush_us": t_store / n * 1e6,
        "total_us": total / n * 1e6,
        "ceiling_objects_per_s": n / total,
    }


# =============================================================================== throughput


async def _sample_cpu(node: NodeProcess, samples: list[tuple[float, float]], stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            samples.append((time.monotonic(), node.cpu_seconds()))
        except OSError:
            return
        try:
            await asyncio.wait_for(stop.wait(), 0.02)
        except TimeoutError:
            pass


def _cpu_between(samples: list[tuple[float, float]], t0: float, t1: float) -> float:
    """Node CPU seconds from the last sample at or before t0 to the first at or after t1."""
    before = [c for t, c in samples if t <= t0]
    after = [c for t, c in samples if t >= t1]
    c0 = before[-1] if before else samples[0][1]
    c1 = after[0] if after else samples[-1][1]
    return c1 - c0


async def _throughput_run(node: NodeProcess, opts: LoadgenOptions, objects: list[bytes]) -> tuple[Any, list]:
    samples: list[tuple[float, float]] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_cpu(node, samples, stop))
    try:
        report = await run_loadgen(opts, objects)
    finally:
        stop.set()
        await sampler
    return report, samples


def bench_throughput(
    objects: list[bytes], tmp: Path, *, rate: float, peers: int, tls: bool, fetch_every: int, ntpb: int, extra: int
) -> dict[str, Any]:
    """One fresh node process loaded with ``objects`` by ``peers`` peers at ``rate`` (0 = all at once)."""
    node = NodeProcess(tmp / f"throughput-node-{rate:g}", network_pow=(ntpb, extra))
    node.start()
    try:
        time.sleep(0.5)
        mem_start = node.memory_kb()
        opts = LoadgenOptions(
            port=node.port, peers=peers, count=len(objects), rate=rate, size=len(objects[0]) - 22,
            network_pow=(ntpb, extra), tls=tls, fetch_every=fetch_every, settle=5.0, max_wait=120.0,
        )
        report, samples = asyncio.run(_throughput_run(node, opts, objects))
        mem_end = node.memory_kb()
    finally:
        node.stop()
    out: dict[str, Any] = {
        "offered_rate": rate or None,
        "achieved_offer_rate": report.offer_rate,
        "peers": peers,
        "tls": tls,
        "objects": len(objects),
        "object_bytes": len(objects[0]),
        "fetch_every": fetch_every,
        "ok": report.ok,
        "announced_all": report.announced_all,
        "missing": report.missing,
        "fetched_ok": report.fetched_ok,
        "relay_s": report.relay_s,
        "objects_per_s": report.relay_rate,
        "latency_p50_s": report.latency_p50_s,
        "latency_p99_s": report.latency_p99_s,
        "latency_early_p50_s": report.latency_early_p50_s,
        "latency_late_p50_s": report.latency_late_p50_s,
        "node_rss_start_mb": _mb(mem_start.get("VmRSS", 0)),
        "node_rss_end_mb": _mb(mem_end.get("VmRSS", 0)),
        "node_rss_peak_mb": _mb(mem_end.get("VmHWM", 0)),
        "loadgen_cpu_s": report.loadgen_cpu_s,
    }
    if report.announced_all and samples:
        cpu = _cpu_between(samples, report.first_offer_mono, report.last_done_mono)
        out["node_cpu_s"] = cpu
        out["node_cpu_per_object_us"] = cpu / report.announced_all * 1e6
        out["node_cpu_utilisation"] = cpu / report.relay_s if report.relay_s > 0 else None
        out["node_cpu_ceiling_objects_per_s"] = report.announced_all / cpu if cpu > 0 else None
    if not report.ok:
        out["loadgen_report"] = report.to_dict()
    return out


# =============================================================================== latency


REFERENCE_TIMERS = {
    name: getattr(NetSettings(), name)
    for name in ("announce_interval", "tick_interval", "first_getdata_delay", "max_intersection_delay")
}


async def _latency_run(base: Path, count: int, timers: dict[str, Any], tls: bool, spacing: float) -> dict[str, Any]:
    objects = [make_object() for _ in range(count)]
    hashes = [inventory_hash(o) for o in objects]
    nodes = await start_network(base, 5, tls=tls, **timers)
    try:
        if not await wait_for(lambda: all(len(n.established) >= 2 for n in nodes), 20):
            return {"error": "network did not connect", "established": [len(n.established) for n in nodes]}
        # Let the first-getdata and anti-intersection delays of the new connections pass.
        await asyncio.sleep(float(timers.get("first_getdata_delay", 0.0)) + 0.5)
        arrived: dict[bytes, list[float]] = {h: [] for h in hashes}

        def hook(h: bytes, obj: bytes, verdict: Any, local: bool) -> None:
            if h in arrived:
                arrived[h].append(time.monotonic())

        for n in nodes:
            n.on_object = hook
        injected: dict[bytes, float] = {}
        for i, (o, h) in enumerate(zip(objects, hashes, strict=True)):
            injected[h] = time.monotonic()
            res = nodes[i % 5].inject(o)
            if not res.accepted:
                return {"error": f"inject rejected: {res.verdict.message}"}
            await asyncio.sleep(spacing)
        await wait_for(lambda: all(len(arrived[h]) >= 5 for h in hashes), 20)
        lat = [max(arrived[h]) - injected[h] for h in hashes if len(arrived[h]) >= 5]
        hops = [sorted(t - injected[h] for t in arrived[h])[1] for h in hashes if len(arrived[h]) >= 2]
        return {
            "objects": count,
            "reached_all": len(lat),
            "p50_s": _pct(lat, 50),
            "p99_s": _pct(lat, 99),
            "max_s": max(lat) if lat else None,
            "first_neighbour_p50_s": _pct(hops, 50),
            "timers": timers,
            "tls": tls,
        }
    finally:
        await stop_all(nodes)


def bench_latency(tmp: Path, count: int, tls: bool) -> dict[str, Any]:
    out = {}
    fast = {"announce_interval": 0.05, "tick_interval": 0.05, "first_getdata_delay": 0.0, "max_intersection_delay": 0.5}
    for name, timers, spacing in (("reference_timers", REFERENCE_TIMERS, 0.1), ("test_timers", fast, 0.05)):
        out[name] = asyncio.run(asyncio.wait_for(_latency_run(tmp / f"latency-{name}", count, timers, tls, spacing), 90))
    return out


# =============================================================================== rss


def fill_inventory(data_dir: Path, count: int, payload: int, seed: int = 7) -> float:
    """Write ``count`` small objects (unexpired, stream 1) straight into a node's inventory."""
    rng = random.Random(seed)
    now = int(time.time())
    data_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    inv = Inventory(data_dir)
    try:
        for i in range(count):
            body = encode_object_body(now + 3600 + rng.randrange(172_800), 2, 1, 1, i.to_bytes(8, "big") + rng.randbytes(max(0, payload - 8)))
            obj = attach_nonce(rng.getrandbits(64), body)
            inv.add(obj, parse_header(obj), now)
            if i % 1000 == 999:
                inv.flush()
        inv.flush()
    finally:
        inv.close()
    return time.perf_counter() - t


async def _drain_node(port: int, expect: int, timeout: float) -> dict[str, Any]:
    """Connect, collect the big inv, getdata every object once; returns counts and times."""
    peer = await RawPeer.connect(port)
    try:
        await peer.handshake(10.0, listen_port=0)
        t0 = time.monotonic()
        deadline = t0 + timeout
        hashes: list[bytes] = []
        while len(hashes) < expect and time.monotonic() < deadline:
            f = await peer.recv(max(0.1, deadline - time.monotonic()))
            if f.command == "inv":
                hashes.extend(Inv.decode(f.payload).hashes)
        t_inv = time.monotonic() - t0
        t1 = time.monotonic()
        received = 0
        nbytes = 0
        window, chunk = 20_000, 1000
        asked = 0
        while received < len(hashes) and time.monotonic() < deadline:
            while asked < len(hashes) and asked - received < window:
                part = hashes[asked : asked + chunk]
                peer.write(frame("getdata", encode_var_int(len(part)) + b"".join(part)))
                asked += len(part)
            await peer.writer.drain()
            f = await peer.recv(max(0.1, deadline - time.monotonic()))
            if f.command == "object":
                received += 1
                nbytes += len(f.payload)
        t_serve = time.monotonic() - t1
        return {"big_inv_hashes": len(hashes), "big_inv_s": t_inv, "served": received, "served_bytes": nbytes, "serve_s": t_serve}
    finally:
        peer.close()


def bench_rss(tmp: Path, count: int, payload: int) -> dict[str, Any]:
    empty = NodeProcess(tmp / "rss-empty")
    empty.start()
    try:
        time.sleep(1.0)
        empty_mem = empty.memory_kb()
    finally:
        empty.stop()
    data_dir = tmp / "rss-node"
    fill_s = fill_inventory(data_dir, count, payload)
    node = NodeProcess(data_dir)
    t = time.monotonic()
    node.start(timeout=60)
    start_s = time.monotonic() - t
    try:
        time.sleep(1.0)
        loaded = node.memory_kb()
        drained = asyncio.run(_drain_node(node.port, count, timeout=120))
        time.sleep(0.3)
        served = node.memory_kb()
    finally:
        node.stop()
    db_bytes = sum(p.stat().st_size for p in data_dir.glob("inventory.sqlite*"))
    return {
        "objects": count,
        "object_bytes": payload + 22,
        "fill_s": fill_s,
        "node_start_s": start_s,
        "db_mb": round(db_bytes / 2**20, 1),
        "empty_node_rss_mb": _mb(empty_mem.get("VmRSS", 0)),
        "rss_loaded_mb": _mb(loaded.get("VmRSS", 0)),
        "rss_after_serving_mb": _mb(served.get("VmRSS", 0)),
        "rss_peak_mb": _mb(served.get("VmHWM", 0)),
        **drained,
        "serve_objects_per_s": drained["served"] / drained["serve_s"] if drained["serve_s"] > 0 else None,
    }


# =============================================================================== main


def _print(fig: dict[str, Any]) -> None:
    def f(x: Any, fmt: str = ",.0f") -> str:
        return "-" if x is None else format(x, fmt)

    print(f"relay bench ({fig['machine']}, Python {fig['python']}, {fig['cpus']} CPUs, load average at start "
          f"{' '.join(f'{x:.2f}' for x in fig['loadavg_start'])}; network PoW {fig['network_pow']})")
    b = fig.get("baseline")
    if b:
        print(f"  baseline, in-process per object: frame {b['frame_decode_us']:.1f} us + hash {b['inventory_hash_us']:.1f} us"
              f" + check_relay {b['check_relay_us']:.1f} us + inventory add/flush {b['inventory_add_flush_us']:.1f} us"
              f" = {b['total_us']:.1f} us -> ceiling {f(b['ceiling_objects_per_s'])} objects/s on one core")
    for kind, t in (fig.get("throughput") or {}).items():
        how = "all offered at once" if kind == "burst" else f"offered at {f(t['offered_rate'])}/s (achieved {f(t['achieved_offer_rate'])}/s)"
        print(f"  throughput, {kind}: {t['objects']:,} new objects of {t['object_bytes']} B from {t['peers']} peers "
              f"({'TLS' if t['tls'] else 'plaintext'}), {how}; node in its own process:")
        print(f"    {f(t['objects_per_s'])} objects/s validated+stored+announced to every other peer "
              f"({t['announced_all']:,} in {t['relay_s']:.2f} s, missing {t['missing']}, every "
              f"{t['fetch_every']}th fetched back: {t['fetched_ok']} ok)")
        if "node_cpu_s" in t:
            print(f"    node CPU {t['node_cpu_s']:.2f} s = {t['node_cpu_per_object_us']:.1f} us per object "
                  f"(utilisation {f(t['node_cpu_utilisation'], '.0%')}, CPU-bound ceiling "
                  f"{f(t['node_cpu_ceiling_objects_per_s'])} objects/s); loadgen CPU {t['loadgen_cpu_s']:.2f} s")
        print(f"    offer -> announced to all peers p50 {f(t['latency_p50_s'], '.2f')} s, p99 {f(t['latency_p99_s'], '.2f')} s "
              f"(first tenth p50 {f(t['latency_early_p50_s'], '.2f')} s, last tenth {f(t['latency_late_p50_s'], '.2f')} s); "
              f"node RSS {t['node_rss_start_mb']} MiB empty, {t['node_rss_end_mb']} MiB after, peak {t['node_rss_peak_mb']} MiB")
    lat = fig.get("latency")
    if lat:
        for name, r in lat.items():
            if "error" in r:
                print(f"  latency ({name}): {r['error']}")
                continue
            print(f"  5-node network, {name.replace('_', ' ')} (announce every {r['timers']['announce_interval']} s, "
                  f"{'TLS' if r['tls'] else 'plaintext'}): object at every node p50 {f(r['p50_s'], '.3f')} s, "
                  f"p99 {f(r['p99_s'], '.3f')} s, max {f(r['max_s'], '.3f')} s "
                  f"({r['reached_all']}/{r['objects']} reached all; first neighbour p50 {f(r['first_neighbour_p50_s'], '.3f')} s)")
    r = fig.get("rss")
    if r:
        print(f"  RSS with {r['objects']:,} objects of {r['object_bytes']} B stored (db {r['db_mb']} MiB): "
              f"{r['rss_loaded_mb']} MiB after start ({r['node_start_s']:.2f} s), {r['rss_after_serving_mb']} MiB after "
              f"big inv + serving all {r['served']:,} ({f(r['serve_objects_per_s'])} objects/s served), "
              f"peak {r['rss_peak_mb']} MiB; empty node {r['empty_node_rss_mb']} MiB")
    print(f"  total {fig['total_s']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (about 20 s in all)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    ap.add_argument("--peers", type=int, default=50, help="load generator peers (default 50)")
    ap.add_argument("--objects", type=int, default=None, help="objects for the throughput phase (default 60000; quick 10000)")
    ap.add_argument("--steady-rate", type=float, default=5000.0, help="offered objects/s of the steady run (default 5000)")
    ap.add_argument("--steady-seconds", type=float, default=None, help="length of the steady run (default 6; quick 2)")
    ap.add_argument("--size", type=int, default=64, help="payload bytes of generated objects (default 64)")
    ap.add_argument("--tls", action="store_true", help="load generator peers use TLS (throughput phase)")
    ap.add_argument("--fetch-every", type=int, default=10, help="fetch back every k-th object in the throughput phase (default 10)")
    ap.add_argument("--latency-objects", type=int, default=None, help="objects per latency run (default 50; quick 10)")
    ap.add_argument("--rss-objects", type=int, default=None, help="objects stored for the RSS phase (default 100000; quick 20000)")
    ap.add_argument("--dir", default=None, help="working directory (default: a temporary one)")
    args = ap.parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    bad = [p for p in phases if p not in PHASES]
    if bad:
        ap.error(f"unknown phase(s) {', '.join(bad)}; choose from {', '.join(PHASES)}")
    n_objects = args.objects or (10_000 if args.quick else 60_000)
    steady_s = args.steady_seconds or (2.0 if args.quick else 6.0)
    n_objects = max(n_objects, int(args.steady_rate * steady_s))
    n_latency = args.latency_objects or (10 if args.quick else 50)
    n_rss = args.rss_objects or (20_000 if args.quick else 100_000)
    ntpb, extra = TEST_POW

    t_all = time.monotonic()
    fig: dict[str, Any] = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_start": list(os.getloadavg()),
        "network_pow": f"{ntpb}:{extra}",
        "quick": args.quick,
    }
    tmp = tempfile.TemporaryDirectory(prefix="bmnode-relay-bench-") if args.dir is None else None
    base = Path(args.dir or tmp.name)  # type: ignore[union-attr]
    try:
        objects: list[bytes] = []
        if "throughput" in phases or "baseline" in phases:
            t = time.monotonic()
            need = n_objects if "throughput" in phases else 5000
            objects = generate_objects(need, size=args.size, network_pow=(ntpb, extra))
            fig["generate_s"] = time.monotonic() - t
        if "baseline" in phases:
            fig["baseline"] = bench_baseline(objects, base, ntpb, extra)
        if "throughput" in phases:
            common = dict(peers=args.peers, tls=args.tls, fetch_every=args.fetch_every, ntpb=ntpb, extra=extra)
            fig["throughput"] = {
                "burst": bench_throughput(objects, base, rate=0, **common),  # type: ignore[arg-type]
                "steady": bench_throughput(
                    objects[: int(args.steady_rate * steady_s)], base, rate=args.steady_rate, **common  # type: ignore[arg-type]
                ),
            }
        del objects
        if "latency" in phases:
            fig["latency"] = bench_latency(base, n_latency, tls=True)
        if "rss" in phases:
            fig["rss"] = bench_rss(base, n_rss, payload=100)
    finally:
        if tmp is not None:
            tmp.cleanup()
    fig["loadavg_end"] = list(os.getloadavg())
    fig["total_s"] = time.monotonic() - t_all
    if args.json:
        print(json.dumps(fig, indent=2))
    else:
        _print(fig)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
