"""Details where the API must answer exactly as PyBitmessage's src/api.py does (audit findings).

Each test pins one behaviour of the reference that an earlier version of bmnode got wrong;
the commands run against the in-memory fake backend of tests/test_api.py, without HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time

from bmnode.api.backend import Identity
from bmnode.api.commands import Commands
from tests.test_api import TIGER_V3, TIGER_V4, FakeBackend


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def test_received_time_is_text_and_last_action_time_an_integer():
    """The reference's inbox column ``received`` has TEXT affinity (SQLite stores the integer
    as text and returns a string), while the sent table's ``lastactiontime`` is INTEGER."""
    fake = FakeBackend()
    fake.identities[TIGER_V4] = Identity(TIGER_V4, "me")
    m = fake.deliver(TIGER_V4, TIGER_V3, "Hi", "there")
    ack = Commands(fake).dispatch("sendMessage", [TIGER_V3, TIGER_V4, b64("s"), b64("b")]).value
    for variant in ("legacy", "xml"):
        cmds = Commands(fake, variant=variant)

        def call(method, *params):
            value = cmds.dispatch(method, list(params)).value
            return json.loads(value) if variant == "legacy" else value

        for record in (
            call("getAllInboxMessages")["inboxMessages"][0],
            call("getInboxMessageById", m.hex())["inboxMessage"][0],
            call("getInboxMessagesByReceiver", TIGER_V4)["inboxMessages"][0],
        ):
            assert record["receivedTime"] == str(fake.inbox[m].received) and isinstance(record["receivedTime"], str)
            assert isinstance(record["encodingType"], int) and record["read"] in (0, 1)
        sent = call("getSentMessageByAckData", ack)["sentMessage"][0]
        assert isinstance(sent["lastActionTime"], int) and not isinstance(sent["lastActionTime"], bool)


def test_get_deterministic_address_stream_error_text_is_the_references():
    """Error 3 of getDeterministicAddress has its own text, with the reference's leading space."""
    reply = Commands(FakeBackend()).dispatch("getDeterministicAddress", [b64("pass"), 4, 2])
    assert reply.value == "API Error 0003:  The stream number must be 1. Others aren't supported."
    # createDeterministicAddresses keeps the general text of error 3.
    reply = Commands(FakeBackend()).dispatch("createDeterministicAddresses", [b64("pass"), 1, 4, 2])
    assert reply.value == (
        "API Error 0003: The stream number must be 1 (or 0 which means auto-select). Others aren't supported."
    )


# ------------------------------------------------- disseminatePreEncryptedMsg with nonce 0


class _StubMailbox:
    """Only what MailboxBackend.await_disseminated uses: the hash shows up after a few polls."""

    def __init__(self, answer_after: int) -> None:
        self.polls = 0
        self.answer_after = answer_after
        self.asked: list[bytes] = []

    def disseminated_hash(self, payload: bytes) -> str | None:
        self.polls += 1
        self.asked.append(payload)
        return "cd" * 32 if self.polls > self.answer_after else None


def test_backend_waits_for_the_pow_of_a_nonce_zero_object():
    from bmnode.api.backend import MailboxBackend

    obj = bytes(8) + b"\x00" * 8 + b"payload"
    stub = _StubMailbox(answer_after=2)
    assert MailboxBackend(stub, disseminate_wait=5).await_disseminated(obj, poll=0.01) == bytes.fromhex("cd" * 32)
    assert stub.asked == [hashlib.sha512(obj[8:]).digest()] * 3  # the digest of the object after its nonce
    assert MailboxBackend(_StubMailbox(0), disseminate_wait=0).await_disseminated(obj) is None  # not asked to wait
    slow = _StubMailbox(answer_after=10**9)
    started = time.monotonic()
    assert MailboxBackend(slow, disseminate_wait=0.2).await_disseminated(obj, poll=0.02) is None  # bounded
    assert time.monotonic() - started < 2


def test_waiting_for_the_pow_does_not_hold_up_other_commands():
    """The reference answers disseminatePreEncryptedMsg (nonce 0) with the inventory hash once its
    PoW is done; bmnode waits too, but other API calls are served meanwhile."""
    release = threading.Event()

    class Backend:
        def list_identities(self):
            return []

        def disseminate_object(self, data, ntpb, extra):
            return None  # nonce 0: PoW queued

        def await_disseminated(self, data):
            assert release.wait(10)
            return bytes.fromhex("ef" * 32)

    cmds = Commands(Backend())
    obj = (bytes(8) + b"\x00" * 8 + b"\x00\x00\x00\x02\x01\x01" + b"x" * 40).hex()
    answers: list = []
    t = threading.Thread(target=lambda: answers.append(cmds.dispatch("disseminatePreEncryptedMsg", [obj, 1, 1])))
    t.start()
    try:
        time.sleep(0.1)
        assert t.is_alive()  # still waiting for the PoW ...
        assert json.loads(cmds.dispatch("listAddresses", []).value) == {"addresses": []}  # ... others go on
    finally:
        release.set()
        t.join(10)
    assert answers[0].value == "ef" * 32


def test_mailbox_process_tells_the_hash_once_the_pow_is_done(tmp_path):
    """Through the mailbox process: the nonce-0 object becomes a PoW job; when its nonce comes
    back and the object is published, ``disseminated_hash`` answers its inventory hash."""
    from bmnode.mailbox import Mailbox, MailboxConfig, run_until_idle
    from bmnode.mailbox.jobs import PowJob, solve_job
    from bmnode.node import bus
    from bmnode.node.mailboxproc import MailboxService
    from bmnode.pow.registry import get_backend
    from bmnode.protocol.hashing import inventory_hash

    cfg = MailboxConfig(min_ntpb=1, min_extra=1)
    pow_backend = get_backend("python")
    now = int(time.time())
    with Mailbox(tmp_path / "other", cfg) as other:
        other.create_random_address("x")
        pubkey = run_until_idle(other, now, pow_backend)[0].object
    unsolved = bytes(8) + pubkey[8:]
    svc = MailboxService(tmp_path / "m", bus.Endpoints(tmp_path / "m"), config=cfg, decrypt_workers=0).open()
    try:
        def rpc(method, *args):
            reply = svc._call(bus.RpcRequest(id=1, method=method, args=list(args)))
            assert reply.ok, reply.error
            return reply.result

        assert rpc("disseminate_object", unsolved, 1, 1) is None
        digest = hashlib.sha512(unsolved[8:]).digest()
        assert rpc("disseminated_hash", digest) is None  # PoW not done yet
        jobs = [a for a in svc.mailbox.tick(now) if isinstance(a, PowJob) and a.kind == "object"]
        assert len(jobs) == 1
        nonce = solve_job(jobs[0], pow_backend)
        svc._run(lambda m, t: m.pow_done(jobs[0].job_id, nonce, t))
        published = nonce.to_bytes(8, "big") + unsolved[8:]
        assert rpc("disseminated_hash", digest) == inventory_hash(published).hex()
    finally:
        svc.close()
