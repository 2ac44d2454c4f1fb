"""PoW benchmark: trials/s of every backend here (python, native per thread count, each OpenCL device).

Each measurement runs a search that cannot succeed (target 0) and stops it after ``seconds``;
the rate comes from the backend's own progress reports (or, for a backend that reports none,
from count-limited searches). Figures only: nothing here passes or fails on a time.
Used by ``bmnode pow bench`` and ``bench/pow_bench.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import threading
import time
from typing import Any, Callable, Sequence

from bmnode.errors import BmnodeError, PowCancelled, PowError
from bmnode.pow.backend import PowBackend

#: initial hash every measurement uses (any value does; target 0 is never met)
BENCH_HASH = hashlib.sha512(b"bmnode pow bench").digest()
DEFAULT_BACKENDS = ("python", "native", "opencl")

Factory = Callable[..., PowBackend]
Clock = Callable[[], float]


def default_threads(cpu_count: int | None = None) -> list[int]:
    """Thread counts measured by default: 1 and all cores."""
    n = cpu_count or os.cpu_count() or 1
    return sorted({1, n})


def _opencl_devices() -> list[tuple[int, str, str, str]]:
    try:
        from bmnode.pow.opencl import list_devices
    except ImportError:
        return []
    try:
        return list_devices()
    except BmnodeError:
        return []


def plan(
    backends: Sequence[str] | None,
    threads: Sequence[int] | None,
    cpu_count: int,
    opencl_devices: Callable[[], list[tuple[int, str, str, str]]] = _opencl_devices,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The measurements to run: (runs, skipped). A run is {label, backend, options, threads}.

    ``python`` runs once (one thread); ``native`` once per thread count; ``opencl`` once per
    device (``opencl:<i>`` names one device).
    """
    names = [b.strip() for b in (backends or DEFAULT_BACKENDS) if b and b.strip()]
    counts = sorted({int(t) for t in (threads or default_threads(cpu_count))})
    if not counts or counts[0] < 1:
        raise PowError(f"thread counts must be >= 1, got {list(threads or [])}")
    runs: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for name in names:
        kind, _, device = name.partition(":")
        if kind == "python":
            runs.append({"label": "python", "backend": "python", "options": {}, "threads": 1})
        elif kind == "native":
            for t in counts:
                runs.append({"label": f"native x{t}", "backend": "native", "options": {"threads": t}, "threads": t})
        elif kind == "opencl":
            if device:
                runs.append({"label": f"opencl:{device}", "backend": f"opencl:{device}", "options": {}, "threads": None})
                continue
            rows = opencl_devices()
            if not rows:
                skipped.append({"backend": "opencl", "reason": "no OpenCL device (or pyopencl missing)"})
            for idx, _plat, dev, typ in rows:
                runs.append({"label": f"opencl:{idx}", "backend": f"opencl:{idx}", "options": {},
                             "threads": None, "detail": f"{dev} ({typ})"})
        else:
            skipped.append({"backend": name, "reason": "unknown backend (python, native, opencl[:N])"})
    return runs, skipped


def measure(
    backend: PowBackend,
    seconds: float,
    *,
    clock: Clock = time.perf_counter,
    initial_hash: bytes = BENCH_HASH,
) -> dict[str, Any]:
    """Trials/s of ``backend`` over about ``seconds``: {trials, seconds, trials_per_second, method}."""
    cancel = threading.Event()
    marks: list[tuple[float, int]] = []
    t0 = clock()

    def progress(done: int) -> None:
        now = clock()
        marks.append((now, int(done)))
        if now - t0 >= seconds:
            cancel.set()

    # a safety net for a backend that reports progress rarely or never
    timer = threading.Timer(seconds * 1.5 + 0.05, cancel.set)
    timer.daemon = True
    timer.start()
    try:
        backend.search(initial_hash, 0, 0, None, progress=progress, cancel=cancel)
    except PowCancelled:
        pass
    finally:
        timer.cancel()
    end = clock()
    good = [(t, n) for t, n in marks if n > 0 and t > t0]
    if good:
        t, n = good[-1]
        return {"trials": n, "seconds": t - t0, "trials_per_second": n / (t - t0), "method": "progress"}
    return _measure_by_count(backend, seconds, clock, initial_hash, first_elapsed=end - t0)


def _measure_by_count(backend: PowBackend, seconds: float, clock: Clock, initial_hash: bytes,
                      first_elapsed: float) -> dict[str, Any]:
    """For backends without progress reports: count-limited searches, doubling until ``seconds``."""
    count, total_n, total_t, start = 1024, 0, 0.0, 0
    while total_t < seconds:
        t = clock()
        backend.search(initial_hash, 0, start, count)
        dt = clock() - t
        total_n += count
        total_t += dt
        start += count
        if dt < seconds / 8:
            count *= 2
    rate = total_n / total_t if total_t > 0 else 0.0
    return {"trials": total_n, "seconds": total_t, "trials_per_second": rate, "method": "count"}


def _unit_count(backend: PowBackend, run: dict[str, Any], cpu_count: int) -> tuple[int, str]:
    """How many cores (or GPU compute units) the rate is spread over, for the per-unit figure."""
    if run["backend"] == "python":
        return 1, "core"
    if run["backend"] == "native":
        return max(1, min(run["threads"] or 1, cpu_count)), "core"
    info = backend.describe() if hasattr(backend, "describe") else {}
    units = int(info.get("compute_units") or 1)
    return max(1, units), ("core" if info.get("type") == "CPU" else "CU")


def run_bench(
    seconds: float = 3.0,
    threads: Sequence[int] | None = None,
    backends: Sequence[str] | None = None,
    *,
    warmup: float | None = None,
    factory: Factory | None = None,
    clock: Clock = time.perf_counter,
    cpu_count: int | None = None,
    opencl_devices: Callable[[], list[tuple[int, str, str, str]]] = _opencl_devices,
    log: Callable[[str], None] | None = None,
    ceiling_probe: bool = True,
) -> dict[str, Any]:
    """Measure every requested backend and the pure-Python baseline; a JSON-ready dict.

    With ``ceiling_probe`` and a native row, also the native kernel's ceiling on this core
    (``native_ceiling``) and each native row's share of it (``of_ceiling``).

    ``warmup`` seconds (default: a quarter of ``seconds``, at most 0.5) of searching are
    discarded before each measurement (thread start, kernel compilation, launch sizing).
    """
    if seconds <= 0:
        raise PowError(f"seconds must be positive, got {seconds}")
    if factory is None:
        from bmnode.pow.registry import get_backend

        factory = get_backend
    cpus = cpu_count or os.cpu_count() or 1
    if warmup is None:
        warmup = min(0.5, seconds / 4)
    runs, skipped = plan(backends, threads, cpus, opencl_devices)
    requested_python = any(r["backend"] == "python" for r in runs)
    if not requested_python:  # the baseline is measured in the same run in any case
        runs.insert(0, {"label": "python", "backend": "python", "options": {}, "threads": 1, "baseline_only": True})
    results: list[dict[str, Any]] = []
    baseline: float | None = None
    for run in runs:
        if log:
            log(f"measuring {run['label']} for {seconds:g} s")
        row: dict[str, Any] = {"label": run["label"], "backend": run["backend"], "threads": run["threads"]}
        if run.get("detail"):
            row["detail"] = run["detail"]
        try:
            b = factory(run["backend"], **run["options"])
        except (BmnodeError, ImportError, OSError) as e:
            skipped.append({"backend": run["label"], "reason": str(e)})
            continue
        try:
            if warmup > 0:
                measure(b, warmup, clock=clock)
            m = measure(b, seconds, clock=clock)
            units, unit_kind = _unit_count(b, run, cpus)
            if hasattr(b, "describe"):
                info = b.describe()
                row["detail"] = f"{info.get('device', '')} ({info.get('type', '?')})".strip()
                row["device"] = info
        except Exception as e:  # noqa: BLE001 - one broken backend must not hide the others
            skipped.append({"backend": run["label"], "reason": f"failed: {type(e).__name__}: {e}"})
            continue
        finally:
            b.close()
        row.update(m)
        row["units"] = units
        row["unit"] = unit_kind
        row["per_unit"] = m["trials_per_second"] / units
        if run["backend"] == "python" and baseline is None:
            baseline = m["trials_per_second"]
        if not run.get("baseline_only"):
            results.append(row)
    for row in results:
        row["vs_python"] = (row["trials_per_second"] / baseline) if baseline else None
    ceiling = native_ceiling(results, seconds) if ceiling_probe else None
    return {
        "seconds": seconds,
        "cpu_count": cpus,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "baseline_trials_per_second": baseline,
        "results": results,
        "skipped": skipped,
        "native_ceiling": ceiling,
    }


def native_ceiling(results: list[dict[str, Any]], seconds: float) -> dict[str, Any] | None:
    """The AVX-512 kernel's per-core ceiling on this CPU (see native.kernel_ceiling), and each
    native row's share of it; None when no native row was measured or there is no probe."""
    rows = [r for r in results if r["backend"] == "native"]
    if not rows:
        return None
    from bmnode.pow.native import kernel_ceiling

    c = kernel_ceiling(min(1.0, max(0.2, seconds / 3)))
    if c is None:
        return None
    for r in rows:
        r["of_ceiling"] = r["per_unit"] / c["trials_per_second_per_core"]
    return c


def human_rate(rate: float | None) -> str:
    """1234567 -> '1.23 M'."""
    if rate is None:
        return "-"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if rate >= div:
            return f"{rate / div:.2f} {suffix}"
    return f"{rate:.1f}"


def format_table(result: dict[str, Any]) -> str:
    """A text table of a :func:`run_bench` result, for people."""
    head = (f"PoW trials/s, {result['seconds']:g} s per backend, {result['cpu_count']} CPU cores, "
            f"Python {result['python']} ({result['machine']})")
    cols = ("backend", "threads", "trials/s", "per core/CU", "x python", "device")
    rows = []
    for r in result["results"]:
        rows.append((
            r["label"],
            str(r["threads"]) if r.get("threads") else "-",
            human_rate(r["trials_per_second"]),
            f"{human_rate(r['per_unit'])}/{r['unit']}",
            f"{r['vs_python']:.1f}" if r.get("vs_python") is not None else "-",
            r.get("detail", ""),
        ))
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(cols)]
    right = {1, 2, 3, 4}

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [head, "", fmt(cols), fmt(["-" * w for w in widths])]
    lines += [fmt(row) for row in rows]
    if not rows:
        lines.append("(no backend could be measured)")
    base = result.get("baseline_trials_per_second")
    lines.append("")
    lines.append(f"baseline: pure-Python hashlib {human_rate(base)} trials/s" if base else "baseline: not measured")
    c = result.get("native_ceiling")
    if c:
        shares = ", ".join(f"{r['label']} {100 * r['of_ceiling']:.0f}%" for r in result["results"] if "of_ceiling" in r)
        lines.append(
            f"native ceiling: {human_rate(c['trials_per_second_per_core'])} trials/s per core "
            f"({c['ops_per_vector_trial']} 512-bit ops per {c['lanes']} trials at the "
            f"{human_rate(c['vector_ops_per_second'])} ops/s this core sustains in that mix; paper peak "
            f"{human_rate(c['peak_trials_per_second_per_core'])} at its {human_rate(c['peak_vector_ops_per_second'])} "
            f"adds/s); per core reached: {shares}")
    for s in result.get("skipped", []):
        lines.append(f"skipped {s['backend']}: {s['reason']}")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: str) -> None:
    """Write a bar chart of trials/s per backend to ``path`` (PNG); needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise PowError(f"--plot needs matplotlib ({e}); install it with: pip install 'bmnode[plot]'") from e
    rows = result["results"]
    labels = [r["label"] for r in rows]
    rates = [r["trials_per_second"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(rows) + 2), 4))
    bars = ax.bar(labels, rates, color="#4477aa")
    ax.set_yscale("log")
    ax.set_ylabel("trials/s (log scale)")
    ax.set_title(f"bmnode PoW, {result['cpu_count']} CPU cores")
    for bar, r in zip(bars, rows):
        note = human_rate(r["trials_per_second"])
        if r.get("vs_python"):
            note += f"\n×{r['vs_python']:.1f}"
        ax.annotate(note, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python3 bench/pow_bench.py [--seconds S] [--threads 1,2] [--backends ...]``."""
    p = argparse.ArgumentParser(description="trials/s of every PoW backend on this machine")
    p.add_argument("--seconds", type=float, default=3.0, help="measuring time per backend")
    p.add_argument("--threads", default=None, help="native thread counts, e.g. 1,2,4 (default 1 and all cores)")
    p.add_argument("--backends", default=None, help="e.g. python,native,opencl:0 (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="also write a bar chart (needs matplotlib)")
    args = p.parse_args(argv)
    try:
        threads = [int(t) for t in args.threads.split(",") if t.strip()] if args.threads else None
    except ValueError:
        p.error(f"--threads must be comma-separated integers, got {args.threads!r}")
    if args.seconds <= 0:
        p.error("--seconds must be positive")
    backends = [b for b in args.backends.split(",")] if args.backends else None
    try:
        result = run_bench(args.seconds, threads, backends, log=lambda m: print(m, file=sys.stderr))
        if args.plot:
            plot(result, args.plot)
    except BmnodeError as e:
        print(f"pow bench: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
