"""The native PoW backend (pow_ext/ + bmnode/pow/native.py): kernels against hashlib, search
semantics, threads, cancel, clean-up.

Needs the compiled extension (``python3 setup.py build_ext --inplace``); without it these tests
skip, unless BMNODE_REQUIRE_NATIVE=1 makes that a failure.
"""

from __future__ import annotations

import hashlib
import os
import platform
import random
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmnode.errors import BackendUnavailable, PowCancelled, PowError
from bmnode.pow import registry
from bmnode.pow.native import ISAS, NativeBackend, supported_isas
from bmnode.pow.target import sender_target, trial_value
from tests import vectors

if not NativeBackend.available():
    if os.environ.get("BMNODE_REQUIRE_NATIVE") == "1":
        pytest.fail("bmnode.pow._native is not built", pytrace=False)
    pytest.skip("bmnode.pow._native is not built (python3 setup.py build_ext --inplace)", allow_module_level=True)

U64 = 1 << 64
HERE_ISAS = supported_isas()
#: nonces near the edges that matter: lane and chunk boundaries, 2^32, the top of the range
EDGE_NONCES = (
    list(range(0, 40))
    + [1023, 1024, 1025, 16383, 16384, 16385]
    + list(range(2**32 - 9, 2**32 + 9))
    + list(range(U64 - 20, U64))
)


def ih_of(seed: int) -> bytes:
    return hashlib.sha512(b"native-test-%d" % seed).digest()


def ref_trials(ih: bytes, lo: int, hi: int) -> list[int]:
    return [trial_value(n, ih) for n in range(lo, hi)]


def smallest(ih: bytes, target: int, lo: int, hi: int) -> int | None:
    for n in range(lo, hi):
        if trial_value(n, ih) <= target:
            return n
    return None


def os_threads() -> int:
    """Threads of this process as the kernel sees them (C threads included)."""
    return len(os.listdir("/proc/self/task"))


def settled_threads(expected: int) -> int:
    """os_threads() once it reaches ``expected`` or after 5 s: a joined Python thread's OS
    thread may still be exiting for a moment after join() returns."""
    deadline = time.monotonic() + 5
    while os_threads() != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return os_threads()


@pytest.fixture(params=HERE_ISAS)
def isa(request: pytest.FixtureRequest) -> str:
    return request.param


# ------------------------------------------------------------------ ISA selection


def test_scalar_always_there_and_best_first() -> None:
    assert "scalar" in HERE_ISAS
    assert HERE_ISAS == [i for i in ISAS if i in HERE_ISAS]
    assert NativeBackend(threads=1).isa == HERE_ISAS[0]
    assert NativeBackend.supported_isas() == HERE_ISAS


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64") or not os.path.exists("/proc/cpuinfo"),
    reason="checks run-time detection against /proc/cpuinfo on x86-64 Linux",
)
def test_detection_matches_cpuinfo() -> None:
    with open("/proc/cpuinfo") as f:
        flags = next(line for line in f if line.startswith("flags")).split()
    assert ("avx512" in HERE_ISAS) == ("avx512f" in flags)
    assert ("avx2" in HERE_ISAS) == ("avx2" in flags)


def test_unknown_or_unsupported_isa_is_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendUnavailable):
        NativeBackend(isa="neon")
    from bmnode.pow import _native

    monkeypatch.setattr(_native, "supported_isas", lambda: ["scalar"])
    with pytest.raises(BackendUnavailable):
        NativeBackend(isa="avx2")
    assert NativeBackend(isa="scalar").isa == "scalar"


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, 10**6])
def test_bad_thread_count(threads: object) -> None:
    with pytest.raises(PowError):
        NativeBackend(threads=threads)  # type: ignore[arg-type]


def test_registry_builds_it() -> None:
    b = registry.get_backend("native", threads=2)
    assert isinstance(b, NativeBackend) and b.threads == 2 and b.name == "native"


# ------------------------------------------------------------------ kernels vs hashlib


@pytest.mark.parametrize("seed", range(4))
def test_trial_values_match_hashlib(isa: str, seed: int) -> None:
    rng = random.Random(seed)
    ih = ih_of(seed) if seed else bytes(64)
    nonces = EDGE_NONCES + [rng.getrandbits(64) for _ in range(50)]
    rng.shuffle(nonces)
    b = NativeBackend(threads=1, isa=isa)
    assert b.trial_values(ih, nonces) == [trial_value(n, ih) for n in nonces]


def test_trial_values_every_tail_length(isa: str) -> None:
    """1..17 nonces: every partial batch of every lane width."""
    b = NativeBackend(threads=1, isa=isa)
    ih = ih_of(99)
    for k in range(0, 18):
        ns = list(range(1000, 1000 + k))
        assert b.trial_values(ih, ns) == ref_trials(ih, 1000, 1000 + k)


@settings(max_examples=40, deadline=None)
@given(ih=st.binary(min_size=64, max_size=64), nonces=st.lists(st.integers(0, U64 - 1), max_size=20))
def test_trial_values_property(ih: bytes, nonces: list[int]) -> None:
    for isa_name in HERE_ISAS:
        got = NativeBackend(threads=1, isa=isa_name).trial_values(ih, nonces)
        assert got == [trial_value(n, ih) for n in nonces]


def test_trial_values_bad_input() -> None:
    b = NativeBackend(threads=1)
    with pytest.raises(PowError):
        b.trial_values(bytes(63), [1])
    with pytest.raises(PowError):
        b.trial_values(bytes(64), [U64])
    with pytest.raises(PowError):
        b.trial_values(bytes(64), [-1])


# ------------------------------------------------------------------ search semantics


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_finds_smallest_nonce_like_brute_force(isa: str, threads: int) -> None:
    b = NativeBackend(threads=threads, isa=isa)
    for seed in range(3):
        ih = ih_of(seed)
        target = U64 // 5000
        want = smallest(ih, target, 0, 200_000)
        assert want is not None
        sol = b.search(ih, target)
        assert sol is not None
        assert sol.nonce == want
        assert sol.trial_value == trial_value(want, ih) <= target
        assert sol.trials >= want + 1 if threads == 1 else sol.trials > 0


def test_solution_across_chunks_and_offsets(isa: str) -> None:
    """Ranges that start mid-chunk, hold a solution past the first chunk, or just miss it."""
    ih = ih_of(7)
    tv = ref_trials(ih, 0, 60_000)
    # a target met by few nonces in 0..60000, so that solutions sit past chunk boundaries
    target = sorted(tv)[6]
    hits = [n for n, t in enumerate(tv) if t <= target]
    assert len(hits) == 7
    for threads in (1, 2, 4):
        b = NativeBackend(threads=threads, isa=isa)
        for h in hits:
            for start in (max(0, h - 20_000), h - (h % 8), h):
                count = h - start + 1
                sol = b.search(ih, target, start, count)
                assert sol is not None and sol.nonce == min(x for x in hits if x >= start), (start, count)
            # the range that ends just before the solution holds the previous hits only
            start = max(0, h - 17_000)
            earlier = [x for x in hits if start <= x < h]
            sol = b.search(ih, target, start, h - start)
            assert (sol.nonce if sol else None) == (earlier[0] if earlier else None)


def test_success_is_trial_le_target(isa: str) -> None:
    ih = ih_of(3)
    tv = ref_trials(ih, 500, 3000)
    t_min = min(tv)
    n_min = 500 + tv.index(t_min)
    b = NativeBackend(threads=2, isa=isa)
    sol = b.search(ih, t_min, 500, 2500)
    assert sol is not None and (sol.nonce, sol.trial_value) == (n_min, t_min)
    assert b.search(ih, t_min - 1, 500, 2500) is None


def test_empty_and_exhausted_ranges(isa: str) -> None:
    b = NativeBackend(threads=2, isa=isa)
    ih = ih_of(4)
    assert b.search(ih, U64 - 1, 10, 0) is None
    assert b.search(ih, U64 - 1, 10, -5) is None
    # target 0: nothing qualifies; the search covers exactly the range and stops
    progress: list[int] = []
    assert b.search(ih, 0, 12345, 40_000, progress=progress.append) is None
    assert progress[-1] == 40_000


def test_top_of_nonce_space_does_not_wrap(isa: str) -> None:
    b = NativeBackend(threads=3, isa=isa)
    ih = ih_of(5)
    # count=None runs to 2**64 - 1 inclusive and then stops (no wrap to 0)
    assert b.search(ih, 0, U64 - 100) is None
    # a count past the end is clamped; the last nonce is reachable
    last = trial_value(U64 - 1, ih)
    sol = b.search(ih, last, U64 - 1, 10)
    assert sol is not None and sol.nonce == U64 - 1
    sol = b.search(ih, U64 - 1, U64 - 3, None)
    assert sol is not None and sol.nonce == U64 - 3
    # every trial meets a target of 2**64 - 1 or more
    assert b.search(ih, U64 * 4, 77).nonce == 77  # type: ignore[union-attr]


@pytest.mark.parametrize("ih,target,start,err", [
    (bytes(63), 1, 0, PowError),
    (bytes(65), 1, 0, PowError),
    (bytes(64), -1, 0, PowError),
    (bytes(64), 1, -1, PowError),
    (bytes(64), 1, U64, PowError),
])
def test_search_bad_input(ih: bytes, target: int, start: int, err: type) -> None:
    with pytest.raises(err):
        NativeBackend(threads=1).search(ih, target, start)


def test_search_bad_count() -> None:
    with pytest.raises(PowError):
        NativeBackend(threads=1).search(bytes(64), 1, 0, 2.5)  # type: ignore[arg-type]


def test_pow_vectors_smallest_nonce(isa: str) -> None:
    """The reference's nonces (smallest positive solutions) via tests/vectors.py, not taken."""
    data = vectors.load("pow")
    b = NativeBackend(threads=1, isa=isa) if isa == "scalar" else NativeBackend(isa=isa)
    for case in data["cases"]:
        ih = bytes.fromhex(case["initial_hash"])
        assert hashlib.sha512(bytes.fromhex(case["object_without_nonce"])).digest() == ih
        target = sender_target(
            case["length_with_nonce"], case["ttl_used_by_sender"],
            case["nonce_trials_per_byte"], case["payload_length_extra_bytes"],
        )
        assert abs(target - case["target_sender_real_division"]) < 2
        sol = b.search(ih, target, 1)
        assert sol is not None
        assert (sol.nonce, sol.trial_value) == (case["nonce"], case["trial_value"])
        prev = case["previous_nonce"]
        assert b.trial_values(ih, [prev["nonce"]]) == [prev["trial_value"]]
    sample = data["sample_object"]
    obj = bytes.fromhex(sample["object"])
    ih = bytes.fromhex(sample["initial_hash"])
    assert b.trial_values(ih, [int.from_bytes(obj[:8], "big")]) == [sample["trial_value"]]


# ------------------------------------------------------------------ threads, progress, cancel


def test_multithread_results_valid_from_offsets(isa: str) -> None:
    rng = random.Random(11)
    b = NativeBackend(threads=4, isa=isa)
    for _ in range(4):
        ih = rng.randbytes(64)
        start = rng.getrandbits(63)
        target = U64 // 20_000
        sol = b.search(ih, target, start)
        assert sol is not None and start <= sol.nonce
        assert trial_value(sol.nonce, ih) == sol.trial_value <= target
        assert sol.nonce == smallest(ih, target, start, sol.nonce + 1)


def test_progress_from_calling_thread_and_monotonic() -> None:
    b = NativeBackend(threads=2)
    seen: list[tuple[int, int]] = []
    ih = ih_of(21)
    # a target that takes a while: about 10 million trials expected
    sol = b.search(ih, U64 // 10_000_000, progress=lambda n: seen.append((threading.get_ident(), n)))
    assert sol is not None
    assert {t for t, _ in seen} == {threading.get_ident()}
    counts = [n for _, n in seen]
    assert counts == sorted(counts)
    assert counts[-1] == sol.trials


def test_progress_exception_propagates_and_threads_end() -> None:
    before = os_threads()

    def boom(_n: int) -> None:
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        NativeBackend(threads=2).search(ih_of(1), 0, progress=boom)
    assert settled_threads(before) == before


def _search_in_thread(b: NativeBackend, cancel: threading.Event) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run() -> None:
        try:
            out["result"] = b.search(ih_of(2), 0, cancel=cancel)
        except BaseException as e:  # noqa: BLE001 - recorded for the assertion
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    return t, out


@pytest.mark.parametrize("threads", [1, 2])
def test_cancel_stops_the_search(isa: str, threads: int) -> None:
    before = os_threads()
    cancel = threading.Event()
    t, out = _search_in_thread(NativeBackend(threads=threads, isa=isa), cancel)
    time.sleep(0.2)
    assert t.is_alive()  # target 0 never succeeds: only the cancel ends it
    cancel.set()
    t.join(timeout=10)
    assert not t.is_alive()
    assert isinstance(out.get("error"), PowCancelled)
    assert settled_threads(before) == before


def test_cancel_before_start() -> None:
    ev = threading.Event()
    ev.set()
    with pytest.raises(PowCancelled):
        NativeBackend(threads=1).search(ih_of(0), U64 - 1, cancel=ev)


def test_close_cancels_running_search_and_refuses_new_ones() -> None:
    before = os_threads()
    b = NativeBackend(threads=2)
    t, out = _search_in_thread(b, threading.Event())
    time.sleep(0.1)
    b.close()
    b.close()
    t.join(timeout=10)
    assert not t.is_alive() and isinstance(out.get("error"), PowCancelled)
    with pytest.raises(PowError):
        b.search(ih_of(0), U64 - 1)
    assert settled_threads(before) == before


def test_concurrent_jobs_do_not_interfere(isa: str) -> None:
    before = os_threads()
    target = U64 // 300_000
    seeds = [31, 32, 33, 34]
    expected = {s: NativeBackend(threads=1, isa=isa).search(ih_of(s), target) for s in seeds}
    shared = NativeBackend(threads=2, isa=isa)
    results: dict[int, object] = {}

    def run(seed: int, backend: NativeBackend) -> None:
        results[seed] = backend.search(ih_of(seed), target)

    workers = [
        threading.Thread(target=run, args=(s, shared if i % 2 else NativeBackend(threads=2, isa=isa)))
        for i, s in enumerate(seeds)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    for s in seeds:
        got, want = results[s], expected[s]
        assert got is not None and want is not None
        assert (got.nonce, got.trial_value) == (want.nonce, want.trial_value)  # type: ignore[attr-defined]
    assert settled_threads(before) == before


def test_no_threads_left_after_many_searches() -> None:
    before = os_threads()
    b = NativeBackend(threads=4)
    for seed in range(30):
        b.search(ih_of(seed), U64 // 1000, seed * 1000, 5000)
    assert settled_threads(before) == before


# ------------------------------------------------------------------ ceiling (benchmarks)


def test_counted_kernel_is_the_real_kernel_and_precomputes() -> None:
    """The op counts come from the kernel's own source; that run computes the right trial, and the
    precomputation shows: a plain double SHA-512 needs 2 x (80 x 16 + 64 x 12) = 4096 ops."""
    from bmnode.pow import _native

    counts, trial = _native.kernel_op_counts()
    assert trial == trial_value(0, bytes([1]) + bytes(63))
    assert set(counts) == {"add", "rotate", "shift", "logic"}
    assert all(v > 0 for v in counts.values())
    # 158 full rounds (round 0 of each block is two adds): 6 rotates and 4 logic ops each; every
    # sigma of a schedule word is 2 rotates, 1 shift and 1 logic op
    assert counts["rotate"] == 6 * 158 + 2 * counts["shift"]
    assert counts["logic"] == 4 * 158 + counts["shift"]
    assert 3000 < sum(counts.values()) < 4096


def test_kernel_ceiling_measures_this_cpu() -> None:
    from bmnode.pow import _native
    from bmnode.pow.native import kernel_ceiling

    with pytest.raises(ValueError):
        _native.vector_mix_rate("avx512", 0.0)
    with pytest.raises(ValueError):
        _native.vector_mix_rate("avx512", 0.05, "sse")
    assert _native.vector_mix_rate("scalar", 0.05) is None
    c = kernel_ceiling(0.05)
    if "avx512" not in HERE_ISAS:
        assert c is None
        return
    assert c["ops_per_vector_trial"] == sum(c["op_counts_per_vector_trial"].values())
    assert c["vector_ops_per_second"] > 1e8
    assert c["trials_per_second_per_core"] == pytest.approx(c["vector_ops_per_second"] * c["lanes"] / c["ops_per_vector_trial"])
    assert c["peak_trials_per_second_per_core"] == pytest.approx(
        c["peak_vector_ops_per_second"] * c["lanes"] / c["ops_per_vector_trial"])

