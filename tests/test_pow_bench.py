"""The PoW benchmark's logic and output, with fake backends and a fake clock (no speeds asserted)."""

from __future__ import annotations

import json
import threading

import pytest

from bmnode.errors import BackendUnavailable, PowCancelled, PowError
from bmnode.pow import bench
from bmnode.pow.backend import PowBackend, Solution


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.t

    def advance(self, dt: float) -> None:
        with self.lock:
            self.t += dt


class FakeBackend(PowBackend):
    """Does ``rate`` trials per fake second, reporting progress every 10 ms of fake time."""

    closed = 0

    def __init__(self, clock: FakeClock, rate: float, reports: bool = True, fail: bool = False, **info):
        self.clock, self.rate, self.reports, self.fail, self.info = clock, rate, reports, fail, info
        self.searches: list[tuple[int, int | None]] = []

    def search(self, initial_hash, target, start=0, count=None, *, progress=None, cancel=None):
        assert len(initial_hash) == 64 and target == 0
        self.searches.append((start, count))
        if self.fail:
            raise RuntimeError("kernel exploded")
        if count is not None:  # count-limited: instant in real time, rate in fake time
            self.clock.advance(count / self.rate)
            return None
        if not self.reports:
            cancel.wait()
            raise PowCancelled("cancelled")
        done = 0
        while not cancel.is_set():
            self.clock.advance(0.01)
            done += int(self.rate * 0.01)
            progress(done)
        raise PowCancelled("cancelled")

    def trial_values(self, initial_hash, nonces):
        return [0 for _ in nonces]

    def close(self):
        FakeBackend.closed += 1

    def describe(self):
        return self.info


FAKE_CEILING = {"isa": "avx512", "ops_per_vector_trial": 4000, "lanes": 8,
                "vector_ops_per_second": 4e9, "trials_per_second_per_core": 8e6,
                "op_counts_per_vector_trial": {"add": 4000},
                "peak_vector_ops_per_second": 5e9, "peak_trials_per_second_per_core": 10e6}


@pytest.fixture(autouse=True)
def fake_ceiling(monkeypatch):
    """The native ceiling probe measures this CPU; with fake backends it is faked too."""
    calls = []

    def probe(seconds):
        calls.append(seconds)
        return dict(FAKE_CEILING)

    monkeypatch.setattr("bmnode.pow.native.kernel_ceiling", probe)
    return calls


def make_factory(clock: FakeClock, specs: dict[str, dict]):
    made: list[tuple[str, dict]] = []

    def factory(name: str, **options):
        made.append((name, options))
        spec = dict(specs.get(name.partition(":")[0] if name not in specs else name, {}))
        if spec.pop("unavailable", False):
            raise BackendUnavailable(f"{name} is not built here")
        rate = spec.pop("rate", 1000.0)
        if name == "native":
            rate *= options.get("threads", 1)
        return FakeBackend(clock, rate, **spec)

    return factory, made


# --- plan ----------------------------------------------------------------------------------------


def devices():
    return [(0, "PoCL", "cpu-dev", "CPU"), (1, "NVIDIA CUDA", "H100", "GPU")]


def test_plan_expands_backends():
    runs, skipped = bench.plan(None, [4, 1, 4], cpu_count=8, opencl_devices=devices)
    assert [r["label"] for r in runs] == ["python", "native x1", "native x4", "opencl:0", "opencl:1"]
    assert [r["options"] for r in runs][:3] == [{}, {"threads": 1}, {"threads": 4}]
    assert runs[4]["detail"] == "H100 (GPU)" and skipped == []


def test_plan_default_threads_named_devices_and_unknown():
    runs, skipped = bench.plan(["native", "opencl:3", " bogus "], None, cpu_count=6, opencl_devices=devices)
    assert [r["label"] for r in runs] == ["native x1", "native x6", "opencl:3"]
    assert skipped == [{"backend": "bogus", "reason": "unknown backend (python, native, opencl[:N])"}]
    assert bench.default_threads(1) == [1]
    runs, skipped = bench.plan(["opencl"], [1], cpu_count=2, opencl_devices=lambda: [])
    assert runs == [] and skipped[0]["backend"] == "opencl"


def test_plan_rejects_bad_thread_counts():
    with pytest.raises(PowError):
        bench.plan(["native"], [0, 2], cpu_count=2)


# --- measuring -----------------------------------------------------------------------------------


def test_measure_from_progress_reports():
    clock = FakeClock()
    m = bench.measure(FakeBackend(clock, 2e6), 0.5, clock=clock)
    assert m["method"] == "progress"
    assert m["seconds"] == pytest.approx(0.5, abs=0.011)
    assert m["trials"] == round(m["seconds"] / 0.01) * 20000
    assert m["trials_per_second"] == pytest.approx(2e6)


def test_measure_without_progress_falls_back_to_counted_searches():
    clock = FakeClock()
    b = FakeBackend(clock, 5e5, reports=False)
    m = bench.measure(b, 0.05, clock=clock)
    assert m["method"] == "count"
    assert m["trials_per_second"] == pytest.approx(5e5)
    assert m["seconds"] >= 0.05
    counted = b.searches[1:]
    assert [s for s, _ in counted] == [sum(c for _, c in counted[:i]) for i in range(len(counted))]


def test_run_bench_rows_ratios_and_units():
    clock = FakeClock()
    factory, made = make_factory(clock, {
        "python": {"rate": 1e6},
        "native": {"rate": 4e6},
        "opencl:0": {"rate": 3e9, "device": "H100", "type": "GPU", "compute_units": 132},
    })
    FakeBackend.closed = 0
    r = bench.run_bench(0.2, [1, 2], ["python", "native", "opencl:0"], warmup=0.05, factory=factory,
                        clock=clock, cpu_count=2)
    rows = {row["label"]: row for row in r["results"]}
    assert list(rows) == ["python", "native x1", "native x2", "opencl:0"]
    assert r["baseline_trials_per_second"] == pytest.approx(1e6)
    assert rows["python"]["vs_python"] == pytest.approx(1.0)
    assert rows["native x2"]["trials_per_second"] == pytest.approx(8e6)
    assert rows["native x2"]["vs_python"] == pytest.approx(8.0)
    assert rows["native x2"]["per_unit"] == pytest.approx(4e6) and rows["native x2"]["unit"] == "core"
    assert rows["opencl:0"]["vs_python"] == pytest.approx(3000.0)
    assert rows["opencl:0"]["units"] == 132 and rows["opencl:0"]["unit"] == "CU"
    assert rows["opencl:0"]["detail"] == "H100 (GPU)"
    # each native row's share of the (faked) per-core ceiling: 4e6 per core / 8e6
    assert r["native_ceiling"]["trials_per_second_per_core"] == 8e6
    assert rows["native x1"]["of_ceiling"] == pytest.approx(0.5)
    assert rows["native x2"]["of_ceiling"] == pytest.approx(0.5)
    assert "of_ceiling" not in rows["opencl:0"] and "of_ceiling" not in rows["python"]
    assert [m[0] for m in made] == ["python", "native", "native", "opencl:0"]
    assert FakeBackend.closed == 4
    assert json.loads(json.dumps(r)) == r


def test_baseline_measured_even_when_python_is_not_listed():
    clock = FakeClock()
    factory, made = make_factory(clock, {"python": {"rate": 2e6}, "native": {"rate": 1e7}})
    r = bench.run_bench(0.1, [3], ["native"], warmup=0, factory=factory, clock=clock, cpu_count=2)
    assert [m[0] for m in made] == ["python", "native"]
    assert [row["label"] for row in r["results"]] == ["native x3"]
    row = r["results"][0]
    assert row["vs_python"] == pytest.approx(15.0)
    assert row["units"] == 2 and row["per_unit"] == pytest.approx(1.5e7)  # 3 threads on 2 cores


def test_unavailable_and_failing_backends_are_reported_not_fatal():
    clock = FakeClock()
    factory, _ = make_factory(clock, {"native": {"unavailable": True}, "opencl:1": {"fail": True}})
    r = bench.run_bench(0.1, [1], ["python", "native", "opencl:1"], warmup=0, factory=factory, clock=clock)
    assert [row["label"] for row in r["results"]] == ["python"]
    reasons = {s["backend"]: s["reason"] for s in r["skipped"]}
    assert reasons["native x1"] == "native is not built here"
    assert "kernel exploded" in reasons["opencl:1"] and reasons["opencl:1"].startswith("failed")


def test_no_baseline_gives_no_ratio():
    clock = FakeClock()
    factory, _ = make_factory(clock, {"python": {"unavailable": True}})
    r = bench.run_bench(0.1, [1], ["native"], warmup=0, factory=factory, clock=clock)
    assert r["baseline_trials_per_second"] is None
    assert r["results"][0]["vs_python"] is None
    assert "baseline: not measured" in bench.format_table(r)


def test_run_bench_rejects_bad_seconds():
    with pytest.raises(PowError):
        bench.run_bench(0)


def test_real_python_backend_smoke():
    r = bench.run_bench(0.05, None, ["python"], warmup=0)
    (row,) = r["results"]
    assert row["label"] == "python" and row["trials"] > 0 and row["trials_per_second"] > 0


# --- output --------------------------------------------------------------------------------------


def test_human_rate():
    assert bench.human_rate(None) == "-"
    assert bench.human_rate(12.0) == "12.0"
    assert bench.human_rate(1234.0) == "1.23 k"
    assert bench.human_rate(2.5e6) == "2.50 M"
    assert bench.human_rate(2.7e9) == "2.70 G"


def sample_result() -> dict:
    return {
        "seconds": 3.0, "cpu_count": 16, "machine": "x86_64", "python": "3.12.1",
        "baseline_trials_per_second": 1.0e6,
        "results": [
            {"label": "python", "threads": 1, "trials_per_second": 1.0e6, "per_unit": 1.0e6, "unit": "core", "vs_python": 1.0},
            {"label": "native x16", "threads": 16, "trials_per_second": 1.6e8, "per_unit": 1.0e7, "unit": "core", "vs_python": 160.0},
            {"label": "opencl:0", "threads": None, "trials_per_second": 2.8e9, "per_unit": 2.8e9 / 132, "unit": "CU",
             "vs_python": 2800.0, "detail": "NVIDIA H100 (GPU)"},
        ],
        "skipped": [{"backend": "opencl:1", "reason": "no such device"}],
    }


def test_format_table():
    text = bench.format_table(sample_result())
    lines = text.splitlines()
    assert "3 s per backend" in lines[0] and "16 CPU cores" in lines[0]
    header = next(l for l in lines if l.startswith("backend"))
    for col in ("threads", "trials/s", "per core/CU", "x python", "device"):
        assert col in header
    row = next(l for l in lines if l.startswith("opencl:0"))
    assert "2.80 G" in row and "21.21 M/CU" in row and "2800.0" in row and "NVIDIA H100 (GPU)" in row
    assert next(l for l in lines if l.startswith("native x16")).split()[2] == "16"
    assert "skipped opencl:1: no such device" in lines
    assert "baseline: pure-Python hashlib 1.00 M trials/s" in lines
    empty = dict(sample_result(), results=[], skipped=[])
    assert "(no backend could be measured)" in bench.format_table(empty)
    assert not any(l.startswith("native ceiling") for l in lines)


def test_format_table_native_ceiling_line():
    res = sample_result()
    res["results"][1]["of_ceiling"] = 10.0e6 / 12.5e6
    res["native_ceiling"] = dict(FAKE_CEILING, trials_per_second_per_core=12.5e6, ops_per_vector_trial=3893)
    line = next(l for l in bench.format_table(res).splitlines() if l.startswith("native ceiling"))
    assert "12.50 M trials/s per core" in line and "3893 512-bit ops per 8 trials" in line
    assert "paper peak 10.00 M at its 5.00 G adds/s" in line
    assert "native x16 80%" in line


def test_no_ceiling_without_native_rows(fake_ceiling):
    clock = FakeClock()
    factory, _ = make_factory(clock, {"python": {"rate": 1e6}})
    r = bench.run_bench(0.1, [1], ["python"], warmup=0, factory=factory, clock=clock)
    assert r["native_ceiling"] is None and fake_ceiling == []
    r = bench.run_bench(0.1, [1], ["python", "native"], warmup=0, factory=make_factory(clock, {"python": {"rate": 1e6}, "native": {"rate": 2e6}})[0],
                        clock=clock, ceiling_probe=False)
    assert r["native_ceiling"] is None and fake_ceiling == []


def test_plot(tmp_path):
    out = tmp_path / "bench.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(PowError, match="matplotlib"):
            bench.plot(sample_result(), str(out))
        assert not out.exists()
    else:
        bench.plot(sample_result(), str(out))
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_main_json_and_table(monkeypatch, capsys):
    calls = []

    def fake_run(seconds, threads, backends, **kw):
        calls.append((seconds, threads, backends))
        return sample_result()

    monkeypatch.setattr(bench, "run_bench", fake_run)
    assert bench.main(["--seconds", "0.5", "--threads", "1,4", "--backends", "python,opencl:0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == sample_result()
    assert calls[-1] == (0.5, [1, 4], ["python", "opencl:0"])
    assert bench.main([]) == 0
    assert "x python" in capsys.readouterr().out
    assert calls[-1] == (3.0, None, None)


def test_main_rejects_bad_arguments(monkeypatch, capsys):
    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: sample_result())
    for argv in (["--threads", "1,x"], ["--seconds", "0"], ["--seconds", "-2"]):
        with pytest.raises(SystemExit) as e:
            bench.main(argv)
        assert e.value.code == 2
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert bench.main(["--plot", "/nonexistent/x.png"]) == 2
        assert "matplotlib" in capsys.readouterr().err


def test_solution_from_a_fake_search_is_not_needed_for_rates():
    """A backend that (absurdly) meets target 0 still yields a rate from its progress."""

    class Lucky(FakeBackend):
        def search(self, initial_hash, target, start=0, count=None, *, progress=None, cancel=None):
            self.clock.advance(0.02)
            progress(5000)
            return Solution(4999, 0, 5000)

    clock = FakeClock()
    m = bench.measure(Lucky(clock, 1.0), 1.0, clock=clock)
    assert m["trials"] == 5000 and m["trials_per_second"] == pytest.approx(250000.0)
