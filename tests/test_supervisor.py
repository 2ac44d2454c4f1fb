"""The supervisor with real spawned processes: crashed children restart with growing backoff,
kill -9 of a child restarts it, SIGTERM stops every child (SIGKILL after the grace period),
a child can ask for the whole node to stop, and children die with a killed supervisor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bmnode.node.supervisor import EXIT_STOP_NODE, ChildSpec, Supervisor
from tests import waiting

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- children
# Module-level so that a spawned interpreter can import them.


def crash_child(marker: str, code: int = 3, after: float = 0.0) -> int:
    with open(marker, "a") as fp:
        fp.write(f"{os.getpid()}\n")
    time.sleep(after)
    return code


def sleeper_child(marker: str) -> None:
    with open(marker, "a") as fp:
        fp.write(f"{os.getpid()}\n")
    while True:
        time.sleep(1)


def stubborn_child(marker: str) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sleeper_child(marker)


def supervise_main(status: str, markers: list[str], grace: float) -> None:
    """The body of a supervisor process (run with ``python -c``)."""
    sup = Supervisor(
        [ChildSpec("a", sleeper_child, (markers[0],)), ChildSpec("b", stubborn_child, (markers[1],))],
        backoff=0.05, grace=grace, status_file=status,
    )
    raise SystemExit(sup.run())


# ----------------------------------------------------------------------------- helpers


def pids(marker: Path) -> list[int]:
    try:
        return [int(x) for x in marker.read_text().split()]
    except FileNotFoundError:
        return []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as fp:
            return fp.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def until(pred, timeout: float = 20.0) -> bool:
    return waiting.until(pred, timeout, 0.05)


@pytest.fixture
def supervisors():
    made: list[Supervisor] = []
    yield made
    for s in made:
        s.stop(30)


# ----------------------------------------------------------------------------- tests


def test_backoff_schedule():
    s = Supervisor([], backoff=0.5, backoff_max=5.0)
    assert [s.backoff_delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert s.backoff_delay(10_000) == 5.0


def test_names_must_be_unique():
    with pytest.raises(ValueError):
        Supervisor([ChildSpec("x", sleeper_child), ChildSpec("x", sleeper_child)])


def test_crashing_child_is_restarted_with_backoff(tmp_path, supervisors):
    marker = tmp_path / "crash"
    sup = Supervisor([ChildSpec("crashy", crash_child, (str(marker),))], backoff=0.05, backoff_max=0.4,
                     stable_after=60)
    supervisors.append(sup)
    sup.start()
    assert sup.wait_for(lambda v: v["crashy"]["restarts"] >= 5, 60)
    st = sup.snapshot()[0]
    assert st["last_exit"] == 3
    assert st["delays"][:5] == [0.05, 0.1, 0.2, 0.4, 0.4]  # doubling up to the cap
    assert len(set(pids(marker))) >= 5  # really new processes


def test_a_child_that_ran_long_enough_restarts_quickly(tmp_path, supervisors):
    marker = tmp_path / "stable"
    sup = Supervisor([ChildSpec("s", crash_child, (str(marker), 1, 0.4))], backoff=0.05, backoff_max=5,
                     stable_after=0.2)
    supervisors.append(sup)
    sup.start()
    assert sup.wait_for(lambda v: v["s"]["restarts"] >= 3, 60)
    assert sup.snapshot()[0]["delays"][:3] == [0.05, 0.05, 0.05]


def test_kill_9_of_a_child_restarts_it(tmp_path, supervisors):
    ma, mb = tmp_path / "a", tmp_path / "b"
    sup = Supervisor([ChildSpec("a", sleeper_child, (str(ma),)), ChildSpec("b", sleeper_child, (str(mb),))],
                     backoff=0.05)
    supervisors.append(sup)
    sup.start()
    assert sup.wait_for(lambda v: all(x["state"] == "running" for x in v.values()), 30)
    assert until(lambda: len(pids(ma)) == 1 and len(pids(mb)) == 1)
    old_a, old_b = pids(ma)[0], pids(mb)[0]
    assert {x["pid"] for x in sup.snapshot()} == {old_a, old_b}
    os.kill(old_a, signal.SIGKILL)
    assert sup.wait_for(lambda v: v["a"]["restarts"] == 1 and v["a"]["state"] == "running", 30)
    st = {x["name"]: x for x in sup.snapshot()}
    assert st["a"]["last_exit"] == -signal.SIGKILL
    assert st["a"]["pid"] not in (None, old_a)
    assert st["b"]["pid"] == old_b and st["b"]["restarts"] == 0  # the other child untouched
    sup.stop(30)
    assert not alive(st["a"]["pid"]) and not alive(old_b)
    assert all(x["state"] == "stopped" for x in sup.snapshot())


def test_child_asks_the_node_to_stop(tmp_path, supervisors):
    sup = Supervisor([
        ChildSpec("sleeper", sleeper_child, (str(tmp_path / "s"),)),
        ChildSpec("api", crash_child, (str(tmp_path / "api"), EXIT_STOP_NODE, 0.5)),
    ], backoff=0.05)
    supervisors.append(sup)
    sup.start()
    assert sup.stop_requested.wait(30)
    sup._thread.join(30)  # type: ignore[union-attr]
    st = {x["name"]: x for x in sup.snapshot()}
    assert st["api"]["state"] == "exited" and st["api"]["last_exit"] == EXIT_STOP_NODE
    assert st["sleeper"]["state"] == "stopped"
    assert not alive(pids(tmp_path / "s")[0])


def test_a_run_once_child_is_not_restarted(tmp_path, supervisors):
    sup = Supervisor([ChildSpec("once", crash_child, (str(tmp_path / "o"), 0), restart=False)], backoff=0.05)
    supervisors.append(sup)
    sup.start()
    assert sup.wait_for(lambda v: v["once"]["state"] == "exited", 30)
    time.sleep(0.3)
    assert len(pids(tmp_path / "o")) == 1 and sup.snapshot()[0]["restarts"] == 0


def _start_supervisor_process(tmp_path: Path, grace: float) -> tuple[subprocess.Popen, Path, list[Path]]:
    status = tmp_path / "status.json"
    markers = [tmp_path / "a", tmp_path / "b"]
    code = (
        "import sys; from tests.test_supervisor import supervise_main; "
        f"supervise_main({str(status)!r}, {[str(m) for m in markers]!r}, {grace!r})"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)
    return proc, status, markers


def _children(status: Path) -> dict[str, dict]:
    try:
        return {c["name"]: c for c in json.loads(status.read_text())["children"]}
    except (FileNotFoundError, ValueError, KeyError):
        return {}


def test_sigterm_stops_all_children(tmp_path):
    proc, status, markers = _start_supervisor_process(tmp_path, grace=1.0)
    try:
        assert until(lambda: all(len(pids(m)) == 1 for m in markers), 30)
        assert until(lambda: all(c["state"] == "running" for c in _children(status).values()) and len(_children(status)) == 2)
        child_pids = [pids(m)[0] for m in markers]
        assert all(alive(p) for p in child_pids)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        # "a" stopped on SIGTERM; "b" ignores SIGTERM and was killed after the grace period
        assert not any(alive(p) for p in child_pids)
        final = _children(status)
        assert final["a"]["state"] == "stopped" and final["a"]["last_exit"] == -signal.SIGTERM
        assert final["b"]["state"] == "stopped" and final["b"]["last_exit"] == -signal.SIGKILL
        assert len(pids(markers[0])) == 1  # nothing restarted during shutdown
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigint_stops_too(tmp_path):
    proc, status, markers = _start_supervisor_process(tmp_path, grace=0.5)
    try:
        assert until(lambda: len(_children(status)) == 2 and all(c["pid"] for c in _children(status).values()), 30)
        child_pids = [c["pid"] for c in _children(status).values()]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert not any(alive(p) for p in child_pids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_children_die_with_a_killed_supervisor(tmp_path):
    proc, status, markers = _start_supervisor_process(tmp_path, grace=0.5)
    try:
        assert until(lambda: len(pids(markers[0])) == 1, 30)
        a = pids(markers[0])[0]
        proc.kill()
        proc.wait(10)
        assert until(lambda: not alive(a), 10)  # no orphan left holding ports or files
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for m in markers:  # the stubborn one ignores SIGTERM: clean it up here
            for p in pids(m):
                if alive(p):
                    os.kill(p, signal.SIGKILL)
