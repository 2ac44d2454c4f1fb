"""Every entry of pow.json: initial hash, trial value, targets, sufficiency, smallest nonces."""

from __future__ import annotations

import math

import pytest

from bmnode.pow import target as T
from bmnode.pow.python_backend import PythonBackend
from bmnode.protocol.hashing import inventory_hash
from bmnode.protocol.objects import parse_header
from tests import vectors

F = "pow"
#: Cases whose nonce is larger than this are searched from a nearby start to keep the test fast.
SEARCH_FROM_ZERO_LIMIT = 500_000
NEARBY = 150_000


@pytest.mark.parametrize("v", vectors.params(F, "cases"))
def test_pow_case(v):
    e = v[3]
    body = bytes.fromhex(e["object_without_nonce"])
    obj = bytes.fromhex(e["object"])
    L = e["length_with_nonce"]
    assert L == len(body) + 8 == len(obj)
    assert obj[8:] == body and int.from_bytes(obj[:8], "big") == e["nonce"]
    assert inventory_hash(obj).hex() == e["inventory_hash"]
    h = parse_header(obj)
    assert h.expires_time == e["expires_time"]
    assert e["expires_time"] - e["created_at"] <= e["ttl_used_by_sender"]

    ih = T.initial_hash(body)
    assert ih.hex() == e["initial_hash"]
    assert T.trial_value(e["nonce"], ih) == e["trial_value"]

    ntpb, extra, ttl = e["nonce_trials_per_byte"], e["payload_length_extra_bytes"], e["ttl_used_by_sender"]
    real = T.sender_target_real(L, ttl, ntpb, extra)
    assert real == e["target_sender_real_division"]
    sender_int = T.sender_target(L, ttl, ntpb, extra)
    assert sender_int == math.floor(real)  # the exact floor of the real-number target
    assert e["trial_value"] <= sender_int
    assert T.expected_trials(L, ttl, ntpb, extra) == pytest.approx(2**64 / real)

    # The nonce is the smallest solution of the sender's target.
    backend = PythonBackend()
    start = 0 if e["nonce"] <= SEARCH_FROM_ZERO_LIMIT else e["nonce"] - NEARBY
    sol = backend.search(ih, sender_int, start)
    assert sol is not None
    assert (sol.nonce, sol.trial_value, sol.trials) == (e["nonce"], e["trial_value"], e["nonce"] - start + 1)
    assert backend.trial_values(ih, [e["nonce"]]) == [e["trial_value"]]

    prev = e["previous_nonce"]
    assert prev["nonce"] == e["nonce"] - 1
    assert T.trial_value(prev["nonce"], ih) == prev["trial_value"]
    prev_obj = prev["nonce"].to_bytes(8, "big") + body
    assert prev["sufficient_at_now"] is False
    assert T.check_pow(prev_obj, e["created_at"], ntpb, extra) is False
    assert T.check_pow(obj, e["created_at"], ntpb, extra) is True

    for c in e["checks"]:
        ttl_seen = e["expires_time"] - c["recv_time"]
        assert ttl_seen == c["ttl_seen"]
        assert max(ttl_seen, 300) == c["ttl_used"]
        tgt = T.target(L, ttl_seen, c["nonce_trials_per_byte"], c["payload_length_extra_bytes"])
        assert tgt == c["target_int"]
        chk = T.evaluate_pow(obj, c["recv_time"], c["nonce_trials_per_byte"], c["payload_length_extra_bytes"])
        assert (chk.target, chk.trial_value, chk.ttl) == (c["target_int"], e["trial_value"], ttl_seen)
        assert chk.sufficient is c["sufficient"]
        assert T.check_pow(obj, c["recv_time"], c["nonce_trials_per_byte"], c["payload_length_extra_bytes"]) is (
            c["sufficient"]
        )
    vectors.take(v)


@pytest.mark.parametrize("v", vectors.params(F, "sample_object"))
def test_sample_object(v):
    e = v[3]
    obj = bytes.fromhex(e["object"])
    h = parse_header(obj)
    assert (h.nonce, h.expires_time, h.object_type, h.version, h.stream) == (
        e["nonce"],
        e["expires_time"],
        e["object_type"],
        e["version"],
        e["stream"],
    )
    assert obj[h.header_length :].decode("ascii") == e["object_payload_ascii"]
    ih = T.initial_hash(obj[8:])
    assert ih.hex() == e["initial_hash"]
    assert T.trial_value(e["nonce"], ih) == e["trial_value"]
    assert PythonBackend().trial_values(ih, [e["nonce"]]) == [e["trial_value"]]
    for c in e["checks"]:
        chk = T.evaluate_pow(obj, c["recv_time"])
        assert chk.target == c["target_int"]
        assert chk.target == T.target(len(obj), e["expires_time"] - c["recv_time"])
        assert chk.sufficient is c["sufficient"]
        assert T.check_pow(obj, c["recv_time"]) is c["sufficient"]
    vectors.take(v)
