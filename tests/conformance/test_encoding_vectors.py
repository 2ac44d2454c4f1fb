"""Every entry of encoding.json: var_int, var_str, var_int_list, hosts, net_addr, hashes."""

from __future__ import annotations

import pytest

from bmnode.errors import MalformedMessage
from bmnode.protocol import hashing
from bmnode.protocol.encoding import Reader, decode_var_int, encode_var_int, encode_var_int_list, encode_var_str
from bmnode.protocol.hosts import NetAddr, decode_host, encode_host, is_public
from tests import vectors

F = "encoding"


@pytest.mark.parametrize("v", vectors.params(F, "var_int_encode"))
def test_var_int_encode(v):
    e = v[3]
    raw = bytes.fromhex(e["hex"])
    assert encode_var_int(e["value"]) == raw
    assert decode_var_int(raw) == (e["value"], len(raw))
    vectors.take(v)


@pytest.mark.parametrize("v", vectors.params(F, "var_int_decode"))
def test_var_int_decode(v):
    e = v[3]
    raw = bytes.fromhex(e["hex"])
    if e["valid"]:
        assert decode_var_int(raw) == (e["value"], e["length"])
        r = Reader(raw)
        assert r.var_int() == e["value"] and r.pos == e["length"]
    else:
        with pytest.raises(MalformedMessage) as info:
            decode_var_int(raw)
        assert info.value.offset is not None and info.value.offset <= len(raw)
        with pytest.raises(MalformedMessage):
            Reader(raw).var_int()
    vectors.take(v)


@pytest.mark.parametrize("v", vectors.params(F, "var_str"))
def test_var_str(v):
    e = v[3]
    s, raw = bytes.fromhex(e["string_hex"]), bytes.fromhex(e["hex"])
    assert encode_var_str(s) == raw
    r = Reader(raw)
    assert r.var_str() == s and r.at_end()
    # Cutting off the last byte must be reported as truncation, not misread.
    with pytest.raises(MalformedMessage):
        Reader(raw[:-1]).var_str()
    vectors.take(v)


@pytest.mark.parametrize("v", vectors.params(F, "var_int_list"))
def test_var_int_list(v):
    e = v[3]
    raw = bytes.fromhex(e["hex"])
    assert encode_var_int_list(e["values"]) == raw
    r = Reader(raw)
    assert r.var_int_list() == e["values"] and r.at_end()
    vectors.take(v)


@pytest.mark.parametrize("v", vectors.params(F, "host_address"))
def test_host_address(v):
    e = v[3]
    raw = bytes.fromhex(e["hex"])
    assert encode_host(e["host"]) == raw
    assert decode_host(raw) == e["decoded"]
    assert encode_host(e["decoded"]) == raw
    assert is_public(e["host"]) is e["public"]
    assert is_public(raw) is e["public"]
    vectors.take(v)


@pytest.mark.parametrize("v", vectors.params(F, "net_addr"))
def test_net_addr(v):
    e = v[3]
    raw = bytes.fromhex(e["hex"])
    if len(raw) == 38:
        na = NetAddr.decode(raw)
        assert (na.time, na.stream) == (e["time"], e["stream"])
        expect = NetAddr(time=e["time"], stream=e["stream"], services=e["services"], host=e["host"], port=e["port"])
        assert expect.encode() == raw
        fields = e["fields_hex"]
        assert raw == b"".join(bytes.fromhex(fields[k]) for k in ("time", "stream", "services", "host", "port"))
        assert na.host_bytes.hex() == fields["host"]
    else:
        assert len(raw) == 26
        na = NetAddr.decode_short(raw)
        expect = NetAddr(time=0, stream=0, services=e["services"], host=e["host"], port=e["port"])
        assert expect.encode_short() == raw
    assert (na.services, na.host, na.port) == (e["services"], e["host"], e["port"])
    assert na == expect
    vectors.take(v)


@pytest.mark.parametrize("v", vectors.params(F, "hashes"))
def test_hashes(v):
    e = v[3]
    data = bytes.fromhex(e["data_hex"])
    assert data == e["data_ascii"].encode("ascii")
    assert hashing.sha512(data).hex() == e["sha512"]
    assert hashing.double_sha512(data).hex() == e["double_sha512"]
    assert hashing.ripemd160(hashing.sha512(data)).hex() == e["ripemd160_of_sha512"]
    assert hashing.checksum(data).hex() == e["message_checksum"]
    assert hashing.inventory_hash(data).hex() == e["inventory_hash_if_this_were_an_object"]
    vectors.take(v)
