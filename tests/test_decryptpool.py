"""The trial-decryption pool: right verdicts inline and over worker processes, key changes
(generations), dead workers, hostile blobs."""

from __future__ import annotations

import os
import signal
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmnode.crypto import ecies
from bmnode.crypto.keys import PrivateKey
from bmnode.node.decryptpool import DecryptPool, default_workers, opens_any

MINE = PrivateKey.random()
OTHER = PrivateKey.random()
LATER = PrivateKey.random()


def blob_for(key: PrivateKey, text: bytes = b"x" * 200) -> bytes:
    return ecies.encrypt(key.public_key, text)


def run_all(pool: DecryptPool, items, timeout: float = 30.0) -> dict:
    pool.submit(items)
    out: dict = {}
    deadline = time.monotonic() + timeout
    while pool.pending:
        assert time.monotonic() < deadline, "the pool did not answer in time"
        for token, hit in pool.collect(0.5):
            assert token not in out, "a verdict came twice"
            out[token] = hit
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_hits_and_misses(workers: int):
    items = [(f"mine{i}", blob_for(MINE)) for i in range(5)] + [(f"other{i}", blob_for(OTHER)) for i in range(150)]
    with DecryptPool(workers, batch=16) as pool:
        assert pool.workers == workers
        pool.set_keys([MINE.secret])
        verdicts = run_all(pool, items)
        assert len(verdicts) == len(items)
        assert {t for t, hit in verdicts.items() if hit} == {f"mine{i}" for i in range(5)}
        assert pool.stats["hits"] == 5 and pool.stats["misses"] == 150


def test_no_keys_means_no_hits():
    with DecryptPool(0) as pool:
        assert run_all(pool, [(1, blob_for(MINE))]) == {1: False}


def test_key_changes_bump_the_generation():
    with DecryptPool(0) as pool:
        assert pool.set_keys([MINE.secret]) and pool.generation == 1
        assert not pool.set_keys([MINE.secret, MINE.secret])  # same set: nothing to tell the workers
        assert pool.generation == 1
        assert run_all(pool, [(1, blob_for(LATER))]) == {1: False}
        assert pool.set_keys([MINE.secret, LATER.secret]) and pool.generation == 2
        assert run_all(pool, [(2, blob_for(LATER))]) == {2: True}
        pool.set_keys([])
        assert run_all(pool, [(3, blob_for(MINE))]) == {3: False}


def test_a_miss_under_old_keys_is_tried_again_with_the_new_ones():
    """A msg to an address created while its blob was in a worker must not be lost."""
    with DecryptPool(1, batch=4) as pool:
        pool.set_keys([MINE.secret])
        pool.submit([(i, blob_for(LATER)) for i in range(12)])  # in flight under generation 1
        pool.set_keys([MINE.secret, LATER.secret])
        verdicts = run_all(pool, [])
        assert verdicts == {i: True for i in range(12)}


def test_a_killed_worker_is_restarted_and_its_work_redone():
    items = [(i, blob_for(MINE if i % 10 == 0 else OTHER)) for i in range(200)]
    with DecryptPool(2, batch=8) as pool:
        pool.set_keys([MINE.secret])
        run_all(pool, [(-1, blob_for(MINE))])  # both workers up
        pool.submit(items)
        victim = pool._workers[0].proc.pid
        os.kill(victim, signal.SIGKILL)
        verdicts = run_all(pool, [])
        assert verdicts == {i: i % 10 == 0 for i in range(200)}
        assert pool.stats["worker_restarts"] >= 1
        # It died right after its start, so it comes back after a short back-off.
        deadline = time.monotonic() + 10
        while pool._workers[0].proc is None and time.monotonic() < deadline:
            pool.collect(0.1)
        assert pool._workers[0].proc.pid != victim
        assert run_all(pool, [("again", blob_for(MINE))] * 1) == {"again": True}


def test_hostile_blobs_are_misses_not_crashes():
    good = blob_for(MINE)
    bad = {
        "empty": b"",
        "short": good[:50],
        "truncated": good[:-1],
        "bad mac": good[:-1] + bytes([good[-1] ^ 1]),
        "bad point": good[:20] + b"\xff" * 64 + good[84:],
        "bad padding length": good[:86] + b"\x00" * 15 + good[101:],
    }
    with DecryptPool(1) as pool:
        pool.set_keys([MINE.secret, b"\x00" * 32, b"short"])  # unusable keys are skipped
        verdicts = run_all(pool, list(bad.items()) + [("good", good)])
    assert verdicts.pop("good") is True
    assert verdicts == {k: False for k in bad}


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_open(data: bytes):
    assert opens_any(data, [ecies.Decryptor(MINE.secret)]) is False


def test_closed_pool_refuses_work_and_leaves_no_process():
    pool = DecryptPool(1)
    proc = pool._workers[0].proc
    pool.close()
    assert not proc.is_alive()
    with pytest.raises(ValueError):
        pool.submit([(1, b"")])
    pool.close()  # idempotent


def test_default_workers_bounds():
    assert default_workers(1) == 1
    assert default_workers(2) == 1
    assert default_workers(5) == 4
    assert default_workers(64) == 8
    with pytest.raises(ValueError):
        DecryptPool(-1)
