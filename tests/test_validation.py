"""Relay validation (spec 7.2): every reason, the boundaries, step order, bad input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmnode.pow import target as T
from bmnode.pow.python_backend import PythonBackend
from bmnode.protocol.constants import MAX_EXPIRED_AGE, MAX_STREAM, MAX_TTL
from bmnode.protocol.objects import encode_object_body
from bmnode.protocol.validation import RelayReason, RelayVerdict, check_relay, passes_type_sanity
from tests import vectors

NOW = 1_730_000_000
#: A private test network's minimum difficulty, so that objects are made in milliseconds.
LOW = dict(ntpb=1, extra=1)


def make(
    ttl: int = 3600,
    object_type: int = 42,
    version: int = 1,
    stream: int = 1,
    payload: bytes = b"hello",
    *,
    pow_ttl: int | None = None,
) -> bytes:
    """An object with enough PoW at the LOW difficulty for ``pow_ttl`` (default: its TTL)."""
    body = encode_object_body(NOW + ttl, object_type, version, stream, payload)
    t = T.target(len(body) + 8, max(ttl, 300) if pow_ttl is None else pow_ttl, 1, 1, min_ntpb=1, min_extra=1)
    return T.solve(body, t, PythonBackend())


def unsolved(ttl: int = 3600, object_type: int = 42, version: int = 1, stream: int = 1, payload: bytes = b"x") -> bytes:
    """An object whose nonce fails any realistic target (trial value checked)."""
    body = encode_object_body(NOW + ttl, object_type, version, stream, payload)
    ih = T.initial_hash(body)
    nonce = next(n for n in range(1000) if T.trial_value(n, ih) > 1 << 62)
    return nonce.to_bytes(8, "big") + body


def test_accepts_a_good_object():
    v = check_relay(make(), NOW, **LOW)
    assert isinstance(v, RelayVerdict)
    assert (v.accept, v.process, v.reason) == (True, True, RelayReason.OK) and bool(v)
    assert v.header is not None and v.header.object_type == 42
    assert v.to_dict() == {"accept": True, "process": True, "reason": "ok", "message": "ok"}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 19,  # no version
        bytes(16) + b"\x00\x00\x00\x02" + b"\xfd\x00\x01" + b"\x01",  # non-minimal version
        bytes(16) + b"\x00\x00\x00\x02" + b"\x01",  # no stream
        bytes(16) + b"\x00\x00\x00\x02" + b"\x01" + b"\xff\x00\x00",  # truncated stream
    ],
)
def test_malformed_headers_are_dropped(data):
    v = check_relay(data, NOW)
    assert (v.accept, v.process, v.reason, v.header) == (False, False, RelayReason.MALFORMED, None)
    assert "offset" in v.message


def test_oversize_is_checked_on_the_payload_only():
    ok = make(payload=b"p" * 100)
    assert check_relay(ok, NOW, max_payload=100, **LOW).reason is RelayReason.OK
    big = make(payload=b"p" * 101)
    v = check_relay(big, NOW, max_payload=100, **LOW)
    assert (v.accept, v.reason) == (False, RelayReason.OVERSIZE)


def test_default_payload_limit_is_2_to_18():
    body_limit = 1 << 18
    # unsolved: the size check comes before the PoW check (step 2 before 3)
    assert check_relay(unsolved(payload=bytes(body_limit + 1)), NOW).reason is RelayReason.OVERSIZE
    assert check_relay(unsolved(payload=bytes(body_limit)), NOW).reason is RelayReason.INSUFFICIENT_POW


def test_insufficient_pow_and_network_floor():
    obj = make()
    v = check_relay(obj, NOW)  # the real network demands 1000/1000
    assert (v.accept, v.reason) == (False, RelayReason.INSUFFICIENT_POW)
    assert "trial value" in v.message
    assert check_relay(obj, NOW, **LOW).accept
    assert not check_relay(unsolved(), NOW, **LOW).accept


def test_lifetime_boundaries():
    at_max = make(ttl=MAX_TTL)
    assert check_relay(at_max, NOW, **LOW).reason is RelayReason.OK
    too_far = make(ttl=MAX_TTL + 1)
    v = check_relay(too_far, NOW, **LOW)
    assert (v.accept, v.reason) == (False, RelayReason.EXPIRES_TOO_FAR)

    just_expired = make(ttl=-MAX_EXPIRED_AGE)
    assert check_relay(just_expired, NOW, **LOW).reason is RelayReason.OK
    too_old = make(ttl=-MAX_EXPIRED_AGE - 1)
    v = check_relay(too_old, NOW, **LOW)
    assert (v.accept, v.reason) == (False, RelayReason.EXPIRED)
    # the same object was fine a second earlier
    assert check_relay(too_old, NOW - 1, **LOW).accept


def test_pow_is_checked_before_lifetime():
    # step 3 before steps 4 and 5, as the reference orders them
    assert check_relay(unsolved(ttl=-10_000), NOW, **LOW).reason is RelayReason.INSUFFICIENT_POW
    assert check_relay(unsolved(ttl=MAX_TTL + 10), NOW, **LOW).reason is RelayReason.INSUFFICIENT_POW


@pytest.mark.parametrize("stream", [0, MAX_STREAM + 1, (1 << 64) - 1])
def test_invalid_streams(stream):
    v = check_relay(make(stream=stream), NOW, **LOW)
    assert (v.accept, v.reason) == (False, RelayReason.BAD_STREAM)
    # not even accept_mismatch lets them through
    assert check_relay(make(stream=stream), NOW, accept_mismatch=True, **LOW).reason is RelayReason.BAD_STREAM


def test_streams_not_joined():
    obj = make(stream=2)
    assert check_relay(obj, NOW, **LOW).reason is RelayReason.STREAM_NOT_JOINED
    assert check_relay(obj, NOW, streams={1, 2}, **LOW).reason is RelayReason.OK
    assert check_relay(obj, NOW, accept_mismatch=True, **LOW).reason is RelayReason.OK
    top = make(stream=MAX_STREAM)
    assert check_relay(top, NOW, streams={MAX_STREAM}, **LOW).accept
    assert check_relay(make(), NOW, streams=frozenset({2}), **LOW).reason is RelayReason.STREAM_NOT_JOINED


# whole-object length = 8 + 8 + 4 + 1 + 1 + payload
HDR = 22


@pytest.mark.parametrize(
    "object_type,version,length,processable",
    [
        (0, 4, 41, False),
        (0, 4, 42, True),
        (0, 3, 42, True),
        (1, 4, 145, False),
        (1, 4, 146, True),
        (1, 4, 440, True),
        (1, 4, 441, False),
        (2, 1, HDR, True),
        (3, 5, 179, False),
        (3, 5, 180, True),
        (3, 1, 400, False),  # version < 2
        (3, 2, 400, True),
        (0x746F72, 2, HDR + 3, True),
        (99, 0, HDR, True),
    ],
)
def test_type_sanity_step_9(object_type, version, length, processable):
    obj = make(object_type=object_type, version=version, payload=b"\x01" * (length - HDR))
    assert len(obj) == length
    v = check_relay(obj, NOW, **LOW)
    assert v.accept is True  # step 9 never stops relaying
    assert v.process is processable
    assert v.reason is (RelayReason.OK if processable else RelayReason.NOT_PROCESSABLE)
    assert passes_type_sanity(v.header, length) is processable


def test_real_network_objects_from_the_vectors():
    # objects made at the real difficulty pass with the defaults and fail a stricter network
    obj = bytes.fromhex(vectors.load("objects")["objects"][1]["object"])
    now = vectors.load("objects")["now"]
    assert check_relay(obj, now).reason is RelayReason.OK
    assert check_relay(obj, now, ntpb=5000).reason is RelayReason.INSUFFICIENT_POW


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_any_bytes_give_a_verdict(data, now):
    v = check_relay(data, now)
    assert isinstance(v.reason, RelayReason)
    assert v.accept is (v.reason in (RelayReason.OK, RelayReason.NOT_PROCESSABLE))
    assert v.process is (v.reason is RelayReason.OK)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(min_value=0, max_value=(1 << 64) - 1),
    st.integers(min_value=0, max_value=(1 << 32) - 1),
    st.integers(min_value=0, max_value=(1 << 64) - 1),
    st.integers(min_value=0, max_value=(1 << 64) - 1),
    st.binary(max_size=50),
)
def test_any_header_values_give_a_verdict(expires, otype, version, stream, payload):
    body = encode_object_body(expires, otype, version, stream, payload)
    v = check_relay(bytes(8) + body, NOW)
    assert isinstance(v.reason, RelayReason) and v.header is not None
    assert v.header.stream == stream and v.header.expires_time == expires
