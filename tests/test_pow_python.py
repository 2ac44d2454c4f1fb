"""The PoW target rules (bmnode.pow.target) and the pure-Python backend."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmnode.errors import MalformedMessage, PowCancelled, PowError
from bmnode.pow import python_backend
from bmnode.pow import target as T
from bmnode.pow.backend import PowBackend, Solution
from bmnode.pow.python_backend import PythonBackend
from bmnode.pow.registry import available_backends, get_backend
from bmnode.protocol.objects import encode_object_body

IH = T.initial_hash(b"bmnode test object")
#: A target that about one nonce in 64 meets.
EASY = (1 << 64) // 64


def brute_force_first(ih: bytes, target: int, start: int, count: int) -> int | None:
    for n in range(start, start + count):
        if T.trial_value(n, ih) <= target:
            return n
    return None


# --- target formulas -------------------------------------------------------------------------


def test_target_formula_matches_spec_text():
    L, ttl = 500, 3600
    assert T.target(L, ttl) == 2**64 // (1000 * (L + 1000 + (ttl * (L + 1000)) // 2**16))


def test_ttl_floor_and_difficulty_floor():
    assert T.target(100, 299) == T.target(100, 300) == T.target(100, -5000)
    assert T.target(100, 400) < T.target(100, 300)
    # values below the network minimum are raised to it ...
    assert T.target(100, 3600, ntpb=1, extra=0) == T.target(100, 3600, 1000, 1000)
    # ... unless a test network lowers the minimum
    low = T.target(100, 3600, ntpb=1, extra=1, min_ntpb=1, min_extra=1)
    assert low == 2**64 // (1 * (101 + (3600 * 101) // 2**16))
    # a zero floor and zero difficulty still give a finite target
    assert T.target(100, 300, ntpb=0, extra=0, min_ntpb=0, min_extra=0) == 2**64 // (100 + (300 * 100) // 2**16)


def test_bad_lengths_raise():
    with pytest.raises(PowError):
        T.target(0, 300)
    with pytest.raises(PowError):
        T.sender_target(10, -1)
    with pytest.raises(PowError):
        T.trial_value(-1, IH)
    with pytest.raises(PowError):
        T.trial_value(1 << 64, IH)


@given(
    length=st.integers(min_value=1, max_value=1 << 20),
    ttl=st.integers(min_value=300, max_value=1 << 24),
    ntpb=st.integers(min_value=1000, max_value=1 << 24),
    extra=st.integers(min_value=1000, max_value=1 << 24),
)
def test_receiver_never_stricter_than_sender(length, ttl, ntpb, extra):
    sender = T.sender_target(length, ttl, ntpb, extra)
    assert sender <= T.target(length, ttl, ntpb, extra)
    real = T.sender_target_real(length, ttl, ntpb, extra)
    # the integer form is the floor of the real one (up to the float rounding of the latter)
    assert abs(sender - real) <= max(1.0, real * 2**-48)
    assert T.expected_trials(length, ttl, ntpb, extra) == pytest.approx(2**64 / real)


def test_target_grows_as_time_passes():
    targets = [T.target(300, ttl) for ttl in (86400 * 28, 86400, 3600, 300)]
    assert targets == sorted(targets) and len(set(targets)) == 4


def test_check_pow_needs_nonce_and_expiry():
    with pytest.raises(MalformedMessage):
        T.check_pow(b"\x00" * 15, 0)


# --- the Python backend ------------------------------------------------------------------------


def test_registry_gives_python_backend():
    b = get_backend("python")
    assert isinstance(b, PythonBackend) and b.name == "python" and PythonBackend.available()
    assert "python" in available_backends()
    b.close()
    b.close()  # idempotent


def test_trial_values_match_reference_formula():
    b = PythonBackend()
    nonces = [0, 1, 2, 255, 1 << 32, (1 << 64) - 1]
    assert b.trial_values(IH, nonces) == [T.trial_value(n, IH) for n in nonces]
    with pytest.raises(PowError):
        b.trial_values(IH, [1 << 64])


@pytest.mark.parametrize("start", [0, 1, 1000, (1 << 40) + 7])
def test_search_finds_smallest_nonce_from_start(start):
    b = PythonBackend()
    sol = b.search(IH, EASY, start)
    expected = brute_force_first(IH, EASY, start, 5000)
    assert expected is not None
    assert sol == Solution(expected, T.trial_value(expected, IH), expected - start + 1)


def test_count_limits_the_range():
    b = PythonBackend()
    first = b.search(IH, EASY, 0)
    assert first is not None
    assert b.search(IH, EASY, 0, first.nonce) is None  # range ends just before the solution
    assert b.search(IH, EASY, 0, first.nonce + 1) == first
    assert b.search(IH, EASY, 0, 0) is None
    assert b.search(IH, 0, 0, 3 * python_backend.CHUNK + 5) is None


def test_search_at_end_of_nonce_space():
    b = PythonBackend()
    top = (1 << 64) - 1
    assert b.search(IH, 0, top) is None
    sol = b.search(IH, (1 << 64) - 1, top)
    assert sol is not None and sol.nonce == top and sol.trials == 1


def test_target_that_everything_meets():
    sol = PythonBackend().search(IH, 1 << 70, 42)
    assert sol is not None and (sol.nonce, sol.trials) == (42, 1)


def test_boundary_trial_equal_to_target_is_a_solution():
    tv = T.trial_value(7, IH)
    b = PythonBackend()
    assert b.search(IH, tv, 7, 1) == Solution(7, tv, 1)
    assert b.search(IH, tv - 1, 7, 1) is None


@pytest.mark.parametrize(
    "args",
    [
        dict(initial_hash=b"\x00" * 63, target=1),
        dict(initial_hash=IH, target=-1),
        dict(initial_hash=IH, target=1, start=-1),
        dict(initial_hash=IH, target=1, start=1 << 64),
    ],
)
def test_search_rejects_bad_arguments(args):
    with pytest.raises(PowError):
        PythonBackend().search(**args)


def test_progress_is_reported_in_order(monkeypatch):
    monkeypatch.setattr(python_backend, "PROGRESS_INTERVAL", 0.0)
    seen: list[int] = []
    count = 3 * python_backend.CHUNK + 10
    assert PythonBackend().search(IH, 0, 5, count, progress=seen.append) is None
    assert seen == [python_backend.CHUNK, 2 * python_backend.CHUNK, 3 * python_backend.CHUNK, count]


def test_progress_on_success_reports_trials():
    seen: list[int] = []
    sol = PythonBackend().search(IH, EASY, 0, progress=seen.append)
    assert sol is not None and seen[-1] == sol.trials


def test_cancel_before_start():
    ev = threading.Event()
    ev.set()
    with pytest.raises(PowCancelled):
        PythonBackend().search(IH, 0, cancel=ev)


def test_cancel_is_seen_at_the_next_chunk(monkeypatch):
    monkeypatch.setattr(python_backend, "PROGRESS_INTERVAL", 0.0)
    ev = threading.Event()
    seen: list[int] = []

    def progress(n: int) -> None:
        seen.append(n)
        if len(seen) == 2:
            ev.set()

    with pytest.raises(PowCancelled):
        PythonBackend().search(IH, 0, progress=progress, cancel=ev)
    # no chunk was hashed after the cancel was set
    assert seen == [python_backend.CHUNK, 2 * python_backend.CHUNK]


def test_cancel_from_another_thread():
    ev = threading.Event()
    started = threading.Event()
    result: list[BaseException] = []

    def run() -> None:
        try:
            PythonBackend().search(IH, 0, progress=lambda n: started.set(), cancel=ev)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            result.append(exc)

    t = threading.Thread(target=run)
    t.start()
    assert started.wait(30)
    ev.set()
    t.join(30)
    assert not t.is_alive()
    assert len(result) == 1 and isinstance(result[0], PowCancelled)


# --- solve ---------------------------------------------------------------------------------------


def _body(ttl: int = 3600, now: int = 1_730_000_000) -> tuple[bytes, int]:
    return encode_object_body(now + ttl, 42, 1, 1, b"solve me"), now


def test_solve_produces_an_object_receivers_accept():
    body, now = _body()
    tgt = T.sender_target(len(body) + 8, 3600, 1, 1, min_ntpb=1, min_extra=1)
    obj = T.solve(body, tgt, PythonBackend())
    assert obj[8:] == body
    assert T.check_pow(obj, now, 1, 1, min_ntpb=1, min_extra=1)
    nonce = int.from_bytes(obj[:8], "big")
    assert brute_force_first(T.initial_hash(body), tgt, 0, nonce + 1) == nonce


class _LyingBackend(PowBackend):
    name = "liar"

    def __init__(self, answer: Solution | None) -> None:
        self.answer = answer

    def search(self, initial_hash, target, start=0, count=None, *, progress=None, cancel=None):
        return self.answer

    def trial_values(self, initial_hash, nonces):
        return [0 for _ in nonces]


def test_solve_rechecks_the_backend():
    body, _ = _body()
    ih = T.initial_hash(body)
    bad = next(n for n in range(100) if T.trial_value(n, ih) > 10)
    with pytest.raises(PowError):
        T.solve(body, 10, _LyingBackend(Solution(bad, 0, 1)))
    with pytest.raises(PowError):
        T.solve(body, 10, _LyingBackend(None))


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=0, max_size=64), st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_search_agrees_with_trial_value(data, start):
    ih = T.initial_hash(data)
    start = min(start, (1 << 64) - 200)
    sol = PythonBackend().search(ih, EASY, start, 200)
    n = brute_force_first(ih, EASY, start, 200)
    if n is None:
        assert sol is None
    else:
        assert sol == Solution(n, T.trial_value(n, ih), n - start + 1)
