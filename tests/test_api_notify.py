"""The reference's apinotifypath hook: ApiNotifier itself, the mailbox process firing
newMessage/newBroadcast for stored inbox rows, and the API process firing startingUp.

The hook program is a small script that appends its argument to a file; every wait is bounded.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bmnode.api.notify import EVENTS, ApiNotifier
from tests import waiting

WAIT = 20.0


def wait_until(what: str, check, timeout: float = WAIT):
    return waiting.wait_until(what, check, timeout, 0.05)


def hook_script(tmp_path: Path, body: str = 'echo "$1" >> "{log}"') -> tuple[Path, Path]:
    """An executable shell script (the hook) and the file it writes to."""
    log = tmp_path / "events.log"
    script = tmp_path / "hook.sh"
    script.write_text("#!/bin/sh\n" + body.format(log=log) + "\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, log


def events(log: Path) -> list[str]:
    return log.read_text(encoding="utf-8").split() if log.exists() else []


# ---------------------------------------------------------------------------- ApiNotifier


def test_event_names_are_the_references():
    assert EVENTS == ("startingUp", "newMessage", "newBroadcast")


def test_runs_the_program_with_one_argument_in_order(tmp_path):
    script, log = hook_script(tmp_path, 'echo "$# $1" >> "{log}"')
    n = ApiNotifier(script)
    try:
        for e in ("startingUp", "newMessage", "newBroadcast", "newMessage"):
            assert n.notify(e) is True
        wait_until("four runs", lambda: len(log.read_text().splitlines()) == 4 if log.exists() else False)
        assert log.read_text().splitlines() == ["1 startingUp", "1 newMessage", "1 newBroadcast", "1 newMessage"]
    finally:
        n.close(wait=5)


def test_unknown_event_is_a_programming_error(tmp_path):
    n = ApiNotifier(tmp_path / "nothing")
    try:
        with pytest.raises(ValueError, match="unknown apinotifypath event"):
            n.notify("newThing")
    finally:
        n.close()


def test_missing_program_is_logged_not_raised(tmp_path, caplog):
    n = ApiNotifier(tmp_path / "does-not-exist")
    with caplog.at_level(logging.WARNING, logger="bmnode.api.notify"):
        assert n.notify("newMessage") is True
        wait_until("warning", lambda: "cannot run" in caplog.text)
    n.close(wait=5)
    assert "does-not-exist" in caplog.text


def test_no_shell_is_involved(tmp_path):
    marker = tmp_path / "pwned"
    n = ApiNotifier(f"true; touch {marker}")  # one (missing) program name, not a command line
    n.notify("newMessage")
    n.close(wait=5)
    assert not marker.exists()


def test_failing_program_is_logged(tmp_path, caplog):
    script, _ = hook_script(tmp_path, "exit 3")
    n = ApiNotifier(script)
    with caplog.at_level(logging.WARNING, logger="bmnode.api.notify"):
        n.notify("startingUp")
        wait_until("warning", lambda: "exited with status 3" in caplog.text)
    n.close(wait=5)


def test_slow_program_never_blocks_the_caller_and_is_killed(tmp_path, caplog):
    script, log = hook_script(tmp_path, 'sleep 30\necho "$1" >> "{log}"')
    n = ApiNotifier(script, timeout=0.5, max_queued=2)
    with caplog.at_level(logging.WARNING, logger="bmnode.api.notify"):
        started = time.monotonic()
        results = [n.notify("newMessage") for _ in range(6)]
        assert time.monotonic() - started < 0.5  # queued, not run in the caller
        assert results[:2] == [True, True] and False in results  # a full queue drops, it does not wait
        wait_until("kill", lambda: "was killed" in caplog.text)
    n.close()
    assert "dropped" in caplog.text
    assert events(log) == []


# ---------------------------------------------------------------------------- the mailbox process


def _objects_for(tmp: Path):
    """A recipient mailbox directory (one identity, subscribed to the sender), and two msg
    objects and one broadcast object to it, made by the sender at network PoW 1:1."""
    from bmnode.mailbox import Mailbox, MailboxConfig, run_until_idle
    from bmnode.pow.registry import get_backend

    cfg = MailboxConfig(min_ntpb=1, min_extra=1)
    backend = get_backend("python")
    now = int(time.time())
    with Mailbox(tmp / "r", cfg) as r, Mailbox(tmp / "s", cfg) as s:
        to = r.create_random_address("r")
        frm = s.create_random_address("s")
        r.add_subscription(frm, "sender")
        pubkeys = run_until_idle(r, now, backend)
        for i in range(2):
            s.send_message(frm, to, f"hook {i}", "body", 2, 3600, now)
        s.send_broadcast(frm, "news", "to all", 2, 3600, now)
        outs = run_until_idle(s, now, backend)  # the broadcast, and a getpubkey for the msgs
        for out in pubkeys:
            s.receive_object(out.object, now)
        outs += run_until_idle(s, now, backend)  # the msgs
        objs = [(o.kind, o.object) for o in outs if o.kind in ("msg", "broadcast")]
    assert sorted(k for k, _ in objs) == ["broadcast", "msg", "msg"]
    return tmp / "r", [o for _, o in objs], cfg


def test_mailbox_process_fires_new_message_and_new_broadcast(tmp_path):
    from bmnode.node import bus
    from bmnode.node.mailboxproc import MailboxService
    from bmnode.protocol.objects import parse_header
    from bmnode.store.inventory import Inventory

    rdir, objs, cfg = _objects_for(tmp_path)
    with Inventory(rdir) as inv:
        for obj in objs + objs:  # duplicates (same inventory hash): no second event
            inv.add(obj, parse_header(obj), int(time.time()))
    script, log = hook_script(tmp_path)
    notifier = ApiNotifier(script)
    svc = MailboxService(
        rdir, bus.Endpoints(rdir), config=cfg, decrypt_workers=0, scan_interval=0.05, notify=notifier.notify
    ).open()
    try:
        wait_until("inbox", lambda: (svc.step(0.05), len(svc.mailbox.inbox_messages()) == 3)[1])
        wait_until("events", lambda: len(events(log)) >= 3)
        for _ in range(10):
            svc.step(0.02)
        time.sleep(0.3)
        assert sorted(events(log)) == ["newBroadcast", "newMessage", "newMessage"]
    finally:
        svc.close()
        notifier.close(wait=5)


def test_mailbox_process_fires_for_rows_stored_outside_object_processing(tmp_path):
    """A msg of ours to ourselves reaches the inbox in pow_done (the loop's _run path), not
    through an incoming object: it fires newMessage too, as in the reference."""
    from bmnode.node import bus
    from bmnode.node.mailboxproc import MailboxService

    rdir, objs, cfg = _objects_for(tmp_path)
    from bmnode.protocol.constants import OBJECT_MSG
    from bmnode.protocol.objects import parse_header

    msg = next(o for o in objs if parse_header(o).object_type == OBJECT_MSG)
    calls: list[str] = []
    svc = MailboxService(rdir, bus.Endpoints(rdir), config=cfg, decrypt_workers=0, notify=calls.append).open()
    try:
        svc._run(lambda m, t: m.receive_object(msg, t))
        assert calls == ["newMessage"]
        svc._run(lambda m, t: m.receive_object(msg, t))  # already stored: nothing new
        assert calls == ["newMessage"]
    finally:
        svc.close()


# ---------------------------------------------------------------------------- the API process


def test_api_process_fires_starting_up(tmp_path):
    """api_main in its own process: startingUp once the server listens; SIGTERM stops it."""
    script, log = hook_script(tmp_path)
    data = tmp_path / "node"
    data.mkdir()
    code = (
        "import sys\n"
        "from bmnode.node.config import load_config\n"
        "from bmnode.node.apiproc import api_main\n"
        "cfg = load_config(sys.argv[1], {'api': '127.0.0.1:0', 'api_password': 'pw', 'api_notify_path': sys.argv[2],"
        " 'log_level': 'WARNING'})\n"
        "sys.exit(api_main(cfg))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", code, str(data), str(script)], env=env)
    try:
        wait_until("startingUp", lambda: events(log) == ["startingUp"] or proc.poll() is not None)
        assert proc.poll() is None, "the API process exited"
        assert events(log) == ["startingUp"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
