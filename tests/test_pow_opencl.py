"""The OpenCL PoW backend against hashlib, on whatever OpenCL device is here (PoCL on CPU in CI)."""

from __future__ import annotations

import hashlib
import json
import math
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmnode.errors import BackendUnavailable, PowCancelled, PowError
from tests import vectors

opencl = pytest.importorskip("bmnode.pow.opencl", reason="the OpenCL backend module does not import")
if opencl.cl is None:
    pytest.skip("pyopencl is not installed (pip install 'bmnode[opencl]')", allow_module_level=True)
if not opencl.list_devices():
    pytest.skip("no OpenCL platform/device (Debian: apt install pocl-opencl-icd)", allow_module_level=True)

MASK = (1 << 64) - 1


def ref_trial(initial_hash: bytes, nonce: int) -> int:
    inner = hashlib.sha512(nonce.to_bytes(8, "big") + initial_hash).digest()
    return int.from_bytes(hashlib.sha512(inner).digest()[:8], "big")


def brute_force(initial_hash: bytes, target: int, start: int = 0, limit: int = 10**6) -> int | None:
    for nonce in range(start, min(start + limit, 1 << 64)):
        if ref_trial(initial_hash, nonce) <= target:
            return nonce
    return None


def ih(label: str) -> bytes:
    return hashlib.sha512(label.encode()).digest()


@pytest.fixture(scope="module")
def backend():
    b = opencl.OpenCLBackend()
    yield b
    b.close()


@pytest.fixture(scope="module")
def small_launches():
    """Launches of 128 nonces at first, so that searches span many launches in flight."""
    b = opencl.OpenCLBackend(nonces_per_item=1, local_size=64, autotune=False)
    yield b
    b.close()


# --- trial values ------------------------------------------------------------------------------


def test_trial_values_match_hashlib_over_ranges(backend):
    h = ih("ranges")
    nonces = (
        list(range(0, 3000))
        + list(range(2**32 - 1500, 2**32 + 1500))  # crossing 2^32: the high word of W0 changes
        + list(range(2**40 - 10, 2**40 + 10))
        + list(range(MASK - 200, MASK + 1))
    )
    assert backend.trial_values(h, nonces) == [ref_trial(h, n) for n in nonces]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.binary(min_size=64, max_size=64), nonces=st.lists(st.integers(0, MASK), min_size=1, max_size=64))
def test_trial_values_match_hashlib_random(backend, h, nonces):
    assert backend.trial_values(h, nonces) == [ref_trial(h, n) for n in nonces]


def test_trial_values_of_special_initial_hashes(backend):
    for h in (b"\0" * 64, b"\xff" * 64, bytes(range(64)), bytes(range(64, 0, -1))):
        nonces = [0, 1, 0x8000000000000000, MASK, 12345678901234]
        assert backend.trial_values(h, nonces) == [ref_trial(h, n) for n in nonces]


def test_trial_values_empty_and_bad_input(backend):
    assert backend.trial_values(ih("x"), []) == []
    with pytest.raises(PowError):
        backend.trial_values(ih("x"), [1 << 64])
    with pytest.raises(PowError):
        backend.trial_values(ih("x"), [-1])
    with pytest.raises(PowError):
        backend.trial_values(b"\0" * 63, [1])


def test_precompute_args_shape_and_errors():
    assert len(opencl.precompute_args(ih("a"))) == 23
    assert all(0 <= v <= MASK for v in opencl.precompute_args(b"\xff" * 64))
    assert opencl.precompute_args(ih("a")) != opencl.precompute_args(ih("b"))
    for bad in (b"", b"\0" * 63, b"\0" * 65):
        with pytest.raises(PowError):
            opencl.precompute_args(bad)


# --- search --------------------------------------------------------------------------------------


@pytest.mark.parametrize("label,divisor", [("easy-a", 3000), ("easy-b", 20000), ("easy-c", 50), ("easy-d", 1)])
def test_smallest_nonce_equals_brute_force(backend, label, divisor):
    h = ih(label)
    target = MASK // divisor
    expected = brute_force(h, target)
    sol = backend.search(h, target)
    assert sol is not None and sol.nonce == expected
    assert sol.trial_value == ref_trial(h, expected) <= target
    assert sol.trials == expected + 1


@pytest.mark.parametrize("label", ["multi-a", "multi-b", "multi-c"])
def test_search_over_many_launches_is_deterministic(small_launches, label):
    h = ih(label)
    target = MASK // 5000
    expected = brute_force(h, target)
    assert expected > 4 * small_launches.launch_size  # the answer lies several launches in
    for _ in range(2):
        seen: list[int] = []
        sol = small_launches.search(h, target, progress=seen.append)
        assert sol is not None and sol.nonce == expected and sol.trials == expected + 1
        assert seen == sorted(seen) and len(seen) >= 4
        assert seen[0] == small_launches.launch_size and seen[-1] <= expected


def test_search_from_a_start_and_across_2_32(backend):
    h = ih("cross")
    target = MASK // 4000
    start = 2**32 - 3000
    expected = brute_force(h, target, start)
    sol = backend.search(h, target, start)
    assert sol is not None and sol.nonce == expected
    assert sol.trials == expected - start + 1


def test_count_limits_the_range(backend):
    h = ih("range")
    target = MASK // 2000
    first = brute_force(h, target)
    assert first is not None and first > 0
    assert backend.search(h, target, 0, first) is None  # [0, first) holds no solution
    assert backend.search(h, target, 0, first + 1).nonce == first
    assert backend.search(h, target, first, 1).nonce == first
    assert backend.search(h, target, 0, 0) is None
    second = brute_force(h, target, first + 1)
    assert backend.search(h, target, first + 1).nonce == second


def test_range_ends_at_2_64(backend):
    h = ih("top")
    assert backend.search(h, 0, MASK - 5000) is None  # impossible target, range stops at 2^64 - 1
    assert backend.search(h, MASK, MASK - 10).nonce == MASK - 10
    assert backend.search(h, MASK, MASK, 100).nonce == MASK
    expected = brute_force(h, MASK // 3, MASK - 99)
    sol = backend.search(h, MASK // 3, MASK - 99, 10**9)
    assert (sol.nonce if sol else None) == expected


def test_search_rejects_bad_arguments(backend):
    h = ih("bad")
    for kwargs in ({"target": -1}, {"target": 1 << 64}, {"target": 1, "start": -1},
                   {"target": 1, "start": 1 << 64}, {"target": 1, "count": -1}):
        with pytest.raises(PowError):
            backend.search(h, **kwargs)
    with pytest.raises(PowError):
        backend.search(b"short", 1)


def test_cancel_stops_a_hopeless_search_and_backend_stays_usable(backend):
    h = ih("cancel")
    cancel = threading.Event()
    outcome: list[object] = []
    progress: list[int] = []
    running = threading.Event()

    def report(done: int) -> None:
        progress.append(done)
        if len(progress) >= 3:
            running.set()

    def run() -> None:
        try:
            outcome.append(backend.search(h, 0, progress=report, cancel=cancel))
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            outcome.append(e)

    t = threading.Thread(target=run)
    t.start()
    assert running.wait(60), "no progress reported"
    cancel.set()
    t.join(10)
    assert not t.is_alive(), "search did not stop after cancel"
    assert len(outcome) == 1 and isinstance(outcome[0], PowCancelled)
    assert progress == sorted(progress) and progress[0] > 0
    target = MASK // 1000
    assert backend.search(h, target).nonce == brute_force(h, target)


def test_cancel_set_before_the_search(backend):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(PowCancelled):
        backend.search(ih("pre"), MASK, cancel=cancel)


# --- reference vectors ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", vectors.load("pow")["cases"], ids=lambda c: c["name"])
def test_reference_nonces(backend, case):
    """The reference tried nonces 1, 2, ... so its nonce is the smallest solution from 1 on."""
    h = bytes.fromhex(case["initial_hash"])
    nonce = case["nonce"]
    if nonce > 3_000_000:
        pytest.skip("too slow for a CPU OpenCL device")
    target = math.floor(case["target_sender_real_division"])
    sol = backend.search(h, target, 1, nonce + 1000)
    assert sol is not None and sol.nonce == nonce and sol.trial_value == case["trial_value"]
    prev = case["previous_nonce"]
    assert backend.trial_values(h, [prev["nonce"], nonce]) == [prev["trial_value"], case["trial_value"]]


def test_reference_sample_object_trial_value(backend):
    s = vectors.load("pow")["sample_object"]
    h = bytes.fromhex(s["initial_hash"])
    assert backend.trial_values(h, [s["nonce"]]) == [s["trial_value"]]


# --- devices and errors --------------------------------------------------------------------------


def test_list_devices_and_names(backend):
    rows = opencl.list_devices()
    assert rows and [r[0] for r in rows] == list(range(len(rows)))
    assert all(r[3] in ("GPU", "CPU", "ACCELERATOR", "OTHER") for r in rows)
    assert backend.name == f"opencl:{backend.index}"
    assert rows[backend.index][2] == backend.device_name
    assert opencl.OpenCLBackend.available() is True
    assert opencl.OpenCLBackend.has_gpu() == any(r[3] == "GPU" for r in rows)


def test_describe_reports_tuning(backend):
    h = ih("describe")
    backend.search(h, MASK // 100)
    info = backend.describe()
    assert info["name"] == backend.name and info["variant"] in opencl.VARIANTS
    assert info["variant_name"] == opencl.VARIANTS[info["variant"]]
    assert info["launch_size"] == backend.launch_size > 0 and info["launches"] >= 1
    assert json.loads(json.dumps(info)) == info


def test_pick_device_by_index_and_name():
    idx, _, name, _ = opencl.list_devices()[0]
    by_index = opencl.OpenCLBackend(device=idx)
    by_name = opencl.OpenCLBackend(device=name[: max(3, len(name) // 2)].upper())
    by_text_index = opencl.OpenCLBackend(device=str(idx))
    try:
        assert by_index.name == by_text_index.name == f"opencl:{idx}"
        assert by_name.device_name == name
    finally:
        for b in (by_index, by_name, by_text_index):
            b.close()


def test_unknown_device_and_variant():
    with pytest.raises(BackendUnavailable, match="not found"):
        opencl.OpenCLBackend(device=len(opencl.list_devices()) + 5)
    with pytest.raises(BackendUnavailable, match="no OpenCL device matches"):
        opencl.OpenCLBackend(device="no-such-device-xyz")
    with pytest.raises(PowError):
        opencl.OpenCLBackend(variant=99)


def test_registry_builds_opencl_backend():
    from bmnode.pow.registry import get_backend

    b = get_backend("opencl:0")
    try:
        assert isinstance(b, opencl.OpenCLBackend) and b.name == "opencl:0"
        h = ih("registry")
        assert b.trial_values(h, [7]) == [ref_trial(h, 7)]
    finally:
        b.close()


def test_close_is_idempotent_and_final():
    b = opencl.OpenCLBackend()
    b.close()
    b.close()
    with pytest.raises(PowError):
        b.search(ih("closed"), MASK)
    with pytest.raises(PowError):
        b.trial_values(ih("closed"), [1])


def test_missing_pyopencl_gives_install_hint(monkeypatch):
    monkeypatch.setattr(opencl, "cl", None)
    assert opencl.list_devices() == []
    assert opencl.OpenCLBackend.available() is False
    assert opencl.OpenCLBackend.has_gpu() is False
    with pytest.raises(BackendUnavailable, match=r"bmnode\[opencl\]"):
        opencl.OpenCLBackend()


def test_no_platform_gives_driver_hint(monkeypatch):
    def no_platforms():
        raise opencl.cl.LogicError("clGetPlatformIDs", opencl.cl.status_code.PLATFORM_NOT_FOUND_KHR, "none")

    monkeypatch.setattr(opencl.cl, "get_platforms", no_platforms)
    assert opencl.list_devices() == []
    assert opencl.OpenCLBackend.available() is False
    with pytest.raises(BackendUnavailable, match="pocl-opencl-icd") as e:
        opencl.OpenCLBackend()
    assert "OCL_ICD_VENDORS" in str(e.value)
