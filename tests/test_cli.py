"""The `bmnode` command: decode, address and pow tools print the right JSON and fail cleanly."""

from __future__ import annotations

import json

import pytest

from bmnode import cli
from bmnode.pow.target import trial_value
from bmnode.protocol.framing import frame
from tests import vectors

NOW = vectors.load("objects")["now"]


def run(capsys, *argv: str) -> tuple[int, object, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if out.strip() else None), err


def subset(expected, actual) -> None:
    """Every field of ``expected`` is in ``actual`` with the same value (extra fields allowed)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict)
        for k, v in expected.items():
            assert k in actual, k
            subset(v, actual[k])
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected)
        for a, b in zip(expected, actual):
            subset(a, b)
    else:
        assert actual == expected, (actual, expected)


@pytest.mark.parametrize("e", vectors.entries("messages", "messages"), ids=lambda e: e["name"])
def test_decode_every_framed_message(capsys, e):
    rc, out, _ = run(capsys, "decode", e["packet"], "--now", str(NOW))
    assert rc == 0 and out["kind"] == "messages" and out["count"] == 1
    m = out["messages"][0]
    assert m["command"] == e["header"]["command"]
    assert m["header"]["length"] == e["header"]["length"]
    subset(e["fields"], m["fields"])
    if m["command"] == "object":
        assert m["object"]["inventory_hash"] == e["fields"]["inventory_hash"]


def test_decode_a_stream_of_messages(capsys, tmp_path):
    msgs = vectors.entries("messages", "messages")
    f = tmp_path / "stream.bin"
    f.write_bytes(b"".join(bytes.fromhex(m["packet"]) for m in msgs))
    rc, out, _ = run(capsys, "decode", f"@{f}", "--now", str(NOW))
    assert rc == 0 and out["count"] == len(msgs)
    assert [m["command"] for m in out["messages"]] == [m["header"]["command"] for m in msgs]


@pytest.mark.parametrize("framed", [False, True])
@pytest.mark.parametrize("e", vectors.entries("objects", "objects"), ids=lambda e: e["name"])
def test_decode_every_object(capsys, e, framed):
    data = bytes.fromhex(e["object"])
    arg = (frame("object", data) if framed else data).hex()
    rc, out, _ = run(capsys, "decode", arg, "--now", str(NOW))
    assert rc == 0
    obj = out["messages"][0]["object"] if framed else out["object"]
    assert obj["inventory_hash"] == e["inventory_hash"]
    subset(e["header"], obj["header"])
    assert obj["pow"]["trial_value"] == e["pow"]["trial_value"]
    assert obj["pow"]["target"] == e["pow"]["target_int_at_now"]
    assert obj["pow"]["sufficient"] == e["pow"]["sufficient_at_now"]
    assert obj["relay"]["accept"] == e["relay_decision_at_now"]["accept_store_relay"]


@pytest.mark.parametrize("e", vectors.entries("objects", "relay_validation"), ids=lambda e: e["name"])
def test_decode_relay_verdicts(capsys, e):
    rc, out, _ = run(capsys, "decode", e["object"], "--now", str(e["now"]))
    assert rc == 0
    assert out["object"]["relay"]["accept"] == e["accept_store_relay"]


@pytest.mark.parametrize(
    "arg",
    ["zz", "", "e9beb4d9", "e9beb4d900", "00" * 10, "e9beb4d9" + "00" * 20, "@/nonexistent/file"],
)
def test_decode_bad_input_is_one_line_and_exit_2(capsys, arg):
    rc, out, err = run(capsys, "decode", arg)
    assert rc == cli.EXIT_BAD_INPUT and out is None
    assert err.startswith("bmnode: ") and err.count("\n") == 1


def test_decode_bad_checksum(capsys):
    packet = bytearray(bytes.fromhex(vectors.entries("messages", "messages")[0]["packet"]))
    packet[-1] ^= 1
    rc, _, err = run(capsys, "decode", packet.hex())
    assert rc == cli.EXIT_BAD_INPUT and "checksum" in err.lower()


@pytest.mark.parametrize("e", vectors.entries("addresses", "decode"), ids=lambda e: e["comment"][:30])
def test_address_decode(capsys, e):
    rc, out, _ = run(capsys, "address", "decode", e["address"])
    assert out["status"] == e["status"]
    assert rc == (0 if e["status"] == "success" else cli.EXIT_BAD_INPUT)
    if e["status"] == "success":
        assert (out["version"], out["stream"], out["ripe"]) == (e["version"], e["stream"], e["ripe"])


def test_address_new_deterministic_matches_vectors(capsys):
    for e in vectors.entries("addresses", "deterministic"):
        if e["eighteen_byte_ripe"] or e["count"] > 3:
            continue
        argv = ["address", "new", "--passphrase", e["passphrase"], "--version", str(e["address_version"]),
                "--stream", str(e["stream"]), "--count", str(e["count"])]
        if bytes.fromhex(e["passphrase_hex"]) != e["passphrase"].encode("utf-8"):
            continue
        rc, out, _ = run(capsys, *argv)
        assert rc == 0
        assert [a["address"] for a in out] == [a["address"] for a in e["addresses"]]


def test_address_new_random(capsys):
    rc, out, _ = run(capsys, "address", "new", "--count", "2")
    assert rc == 0 and len(out) == 2
    for a in out:
        rc2, dec, _ = run(capsys, "address", "decode", a["address"])
        assert rc2 == 0 and dec["ripe"] == a["ripe"] and dec["version"] == 4


@pytest.mark.parametrize("argv", [["--count", "0"], ["--version", "5"], ["--passphrase", ""], ["--stream", "0"]])
def test_address_new_bad_arguments(capsys, argv):
    rc, out, err = run(capsys, "address", "new", *argv)
    assert rc == cli.EXIT_BAD_INPUT and out is None and err.startswith("bmnode: ")


def test_pow_solve_python(capsys):
    ih = bytes(range(64))
    target = 2**64 // 2000
    rc, out, _ = run(capsys, "pow", "solve", "--initial-hash", ih.hex(), "--target", str(target),
                     "--backend", "python", "--quiet")
    assert rc == 0
    assert trial_value(out["nonce"], ih) == out["trial_value"] <= target
    # python searches in order from 0: every smaller nonce fails
    assert all(trial_value(n, ih) > target for n in range(out["nonce"]))


def test_pow_solve_payload_file(capsys, tmp_path):
    case = vectors.load("pow")["cases"][0]
    f = tmp_path / "body.hex"
    f.write_text(case["object_without_nonce"])
    rc, out, _ = run(capsys, "pow", "solve", "--payload-file", str(f), "--ttl", str(case["ttl_used_by_sender"]),
                     "--backend", "python", "--quiet")
    assert rc == 0
    assert out["nonce"] == case["nonce"] and out["object"] == case["object"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--initial-hash", "00", "--target", "5"],
        ["--initial-hash", "zz", "--target", "5"],
        ["--initial-hash", "00" * 64, "--target", str(2**64)],
        ["--initial-hash", "00" * 64],
        ["--payload-file", "/nonexistent", "--ttl", "5"],
        ["--initial-hash", "00" * 64, "--target", "5", "--backend", "nosuch"],
    ],
)
def test_pow_solve_bad_arguments(capsys, argv):
    rc, out, err = run(capsys, "pow", "solve", *argv)
    assert rc == cli.EXIT_BAD_INPUT and out is None and err.startswith("bmnode: ")
