"""The bus schema (bmnode.node.bus): every message round-trips, garbage gives BusError,
endpoints are where the architecture says and fit a unix socket path."""

from __future__ import annotations

import os
from pathlib import Path

import msgpack
import pytest
import zmq
from hypothesis import given, settings, strategies as st

from bmnode.errors import MalformedMessage
from bmnode.node import bus

IH = bytes(range(64))
H = bytes(range(32))

SAMPLES: list[bus.BusMessage] = [
    bus.ObjectEvent(hash=H, object=b"\x00" * 30, object_type=2, version=1, stream=1, expires=1_700_000_000,
                    process=False, local=True),
    bus.InjectRequest(object=b"obj", request_id=7, kind="msg"),
    bus.InjectResult(request_id=7, hash=H, accepted=False, reason="expired", message="too old"),
    bus.StatsRequest(),
    bus.NetStats(time=1.5, pid=42, listen_port=8444, counters={"objects_accepted": 3},
                 connections=[{"host": "127.0.0.1", "port": 1, "inbound": True, "established": False,
                               "user_agent": "/x/", "streams": [1]}]),
    bus.ErrorReply(code="bad_message", message="what"),
    bus.RpcRequest(id=1, method="listAddresses", args=[1, "a", b"b", None], kwargs={"x": [1, 2]}),
    bus.RpcReply(id=1, ok=False, result=None, error_code=13, error="Could not find"),
    bus.PowSubmit(job="j1", initial_hash=IH, target=(1 << 64) - 1, priority=-5, client="mailbox"),
    bus.PowAccepted(job="j1", queued=3),
    bus.PowResult(job="j1", nonce=(1 << 64) - 1, trial_value=0, trials=10, seconds=0.25, worker="w"),
    bus.PowFailed(job="j1", code="limit", message="too many"),
    bus.PowCancel(job="j1", client="c"),
    bus.PowCancelledReply(job="j1", found=True),
    bus.PowStatus(job="", client=""),
    bus.PowState(job="j1", state="queued", position=2, trials=5, workers=1, queued=3, running=1, stats={"a": 1}),
    bus.WorkerHeartbeat(name="w1", backend="native", interval=0.5, job="j9", trials=100),
    bus.WorkerJob(key="j9", initial_hash=IH, target=12345, start=99),
    bus.WorkerCancel(key="j9"),
    bus.WorkerResult(key="j9", nonce=5, trial_value=6, trials=7, seconds=1.0),
    bus.WorkerFailed(key="j9", cancelled=True, message="cancelled"),
    bus.WorkerBye(name="w1"),
]


def test_every_topic_has_a_sample():
    assert {type(m).topic for m in SAMPLES} == set(bus.topics())


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.topic)
def test_round_trip(msg):
    frames = bus.encode(msg)
    assert len(frames) == 2 and frames[0] == msg.topic.encode()
    body = msgpack.unpackb(frames[1], raw=False)
    assert body["v"] == bus.BUS_VERSION
    assert bus.decode(frames) == msg
    # ZeroMQ frames (not plain bytes) decode too
    assert bus.decode([zmq.Frame(frames[0]), zmq.Frame(frames[1])]) == msg


def test_objects_travel_raw():
    obj = os.urandom(1000)
    frames = bus.encode(bus.InjectRequest(object=obj))
    assert obj in frames[1]  # msgpack bin: the bytes themselves, not hex


def test_router_envelope_split():
    env, msg = bus.split([b"id1", b"id2"] + bus.encode(bus.WorkerBye(name="x")))
    assert env == [b"id1", b"id2"] and msg == bus.WorkerBye(name="x")
    with pytest.raises(bus.BusError):
        bus.split([b"only"])


def _body(**fields):
    return msgpack.packb({"v": bus.BUS_VERSION, **fields}, use_bin_type=True)


@pytest.mark.parametrize(
    "frames, what",
    [
        ([b"pow.submit"], "2 frames"),
        ([b"a", b"b", b"c"], "2 frames"),
        ([b"no.such", _body()], "unknown bus topic"),
        ([b"BAD TOPIC", _body()], "bad bus topic"),
        ([b"pow.cancel", b"\xc1"], "not msgpack"),
        ([b"pow.cancel", b"\x92\x01\x02"], "not a map"),
        ([b"pow.cancel", _body(job="x") + b"\x00"], "not msgpack"),  # trailing data
        ([b"pow.cancel", msgpack.packb({"v": 99, "job": "x"})], "schema version"),
        ([b"pow.cancel", msgpack.packb({"job": "x"})], "schema version"),
        ([b"pow.cancel", _body()], "missing field 'job'"),
        ([b"pow.cancel", _body(job=5)], "expected a string"),
        ([b"pow.cancel", _body(job="x" * 65)], "longer than 64"),
        ([b"pow.submit", _body(job="j", initial_hash=b"short", target=1)], "expected 64 bytes"),
        ([b"pow.submit", _body(job="j", initial_hash="text" * 16, target=1)], "expected bytes"),
        ([b"pow.submit", _body(job="j", initial_hash=IH, target=-1)], "out of range"),
        ([b"pow.submit", _body(job="j", initial_hash=IH, target=True)], "expected an integer"),
        ([b"pow.submit", _body(job="j", initial_hash=IH, target=1, priority=5000)], "out of range"),
        ([b"inject", _body(object=b"x", request_id="1")], "expected an integer"),
        ([b"object", _body(hash=b"x" * 31, object=b"", object_type=1, version=1, stream=1, expires=0)], "32 bytes"),
        ([b"stats", _body(time="now", pid=1)], "expected a number"),
        ([b"stats", _body(time=float("nan"), pid=1)], "finite"),
        ([b"stats", _body(time=1, pid=1, counters={"a": "b"})], "expected an integer"),
        ([b"stats", _body(time=1, pid=1, connections={"a": 1})], "expected a list"),
        ([b"w.failed", _body(key="k", cancelled=1)], "expected a boolean"),
        ([b"pow.cancel", msgpack.packb({"v": 1, 1: 2})], "not msgpack"),  # non-string map key
        ([b"pow.cancel", msgpack.packb({"v": 1, "job": msgpack.ExtType(1, b"x")})], "expected a string"),
    ],
)
def test_garbage_is_a_typed_error(frames, what):
    with pytest.raises(bus.BusError, match=what) as info:
        bus.decode(frames)
    assert isinstance(info.value, MalformedMessage)


def test_unknown_fields_are_ignored_for_compatibility():
    msg = bus.decode([b"pow.cancel", _body(job="x", future_field=[1, 2])])
    assert msg == bus.PowCancel(job="x")


def test_encode_checks_fields_too():
    with pytest.raises(bus.BusError, match="64 bytes"):
        bus.encode(bus.PowSubmit(job="j", initial_hash=b"x", target=1))
    with pytest.raises(TypeError):
        bus.encode(object())  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(topic=st.sampled_from(sorted(bus.topics()) + ["junk"]), body=st.binary(max_size=200))
def test_fuzz_decode_raises_only_bus_error(topic, body):
    try:
        bus.decode([topic.encode(), body])
    except bus.BusError:
        pass


@settings(max_examples=200, deadline=None)
@given(values=st.dictionaries(st.sampled_from(["v", "job", "initial_hash", "target", "priority", "client"]),
                              st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**63) + 1, max_value=2**64 - 1),
                                        st.text(max_size=80), st.binary(max_size=80), st.floats(allow_nan=True),
                                        st.lists(st.integers(min_value=0, max_value=9), max_size=3))))
def test_fuzz_submit_fields(values):
    try:
        m = bus.decode([b"pow.submit", msgpack.packb(values, use_bin_type=True)])
    except bus.BusError:
        return
    assert isinstance(m, bus.PowSubmit) and len(m.initial_hash) == 64 and 0 <= m.target < 2**64


def test_endpoints_in_data_dir(tmp_path):
    e = bus.Endpoints(tmp_path)
    assert e.objects == f"ipc://{tmp_path}/bus-objects.sock"
    assert e.outbox == f"ipc://{tmp_path}/bus-outbox.sock"
    names = {e.objects, e.outbox, e.net, e.mailbox, e.pow, e.pow_workers}
    assert len(names) == 6 and all(n.startswith(f"ipc://{tmp_path}/bus-") for n in names)


def test_long_data_dir_falls_back_to_a_short_private_directory(tmp_path):
    long_dir = tmp_path / ("d" * 120)
    e1, e2 = bus.Endpoints(long_dir), bus.Endpoints(Path(str(long_dir)))
    assert e1.objects == e2.objects  # every process computes the same place
    assert len(str(e1.path("pow_workers"))) <= bus.MAX_IPC_PATH + 20
    assert bus.Endpoints(tmp_path / ("e" * 120)).objects != e1.objects
    e1.prepare()
    try:
        assert (e1.directory.stat().st_mode & 0o077) == 0
        ctx = zmq.Context.instance()
        s = ctx.socket(zmq.PUB)
        s.bind(e1.objects)  # really bindable
        s.close(0)
    finally:
        e1.cleanup()
    assert not e1.directory.exists()


def test_cleanup_removes_socket_files(tmp_path):
    e = bus.Endpoints(tmp_path)
    e.prepare()
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.PULL)
    s.bind(e.outbox)
    assert e.path("outbox").exists()
    s.close(0)
    e.cleanup()
    assert not e.path("outbox").exists()
    assert tmp_path.exists()  # the data directory itself stays


@pytest.mark.parametrize("ep", ["ipc:///tmp/x.sock", "tcp://127.0.0.1:8446", "tcp://[::1]:1", "inproc://a-b"])
def test_check_endpoint_ok(ep):
    assert bus.check_endpoint(ep) == ep


@pytest.mark.parametrize("ep", ["", "http://x:1", "tcp://host", "tcp://h:99999", "tcp://h:1/x", 5])
def test_check_endpoint_bad(ep):
    with pytest.raises(bus.BusError):
        bus.check_endpoint(ep)


def test_size_limits_are_per_message_type():
    """Objects and control messages stay under 1 MiB; a mailbox reply (an inbox listing) may be larger."""
    big = "x" * (2 << 20)
    reply = bus.RpcReply(id=1, ok=True, result=big)
    assert bus.decode(bus.encode(reply)).result == big
    topic, body = bus.encode(bus.RpcRequest(id=1, method="m", args=[]))

    huge = msgpack.packb({"v": bus.BUS_VERSION, "id": 1, "method": "m", "args": [big]}, use_bin_type=True)
    with pytest.raises(bus.BusError, match="too large"):
        bus.decode([topic, huge])
