"""Message payload rules (spec 4.2, 5) and host handling (spec 2.5, 2.6, 4.9)."""

from __future__ import annotations

import json

import pytest

from bmnode.errors import MalformedMessage
from bmnode.protocol import messages as m
from bmnode.protocol.constants import MAX_INV_ENTRIES, NODE_DANDELION, NODE_NETWORK, NODE_SSL
from bmnode.protocol.encoding import encode_var_int
from bmnode.protocol.framing import FramingError, frame
from bmnode.protocol.hosts import (
    NetAddr,
    decode_host,
    decode_onion,
    encode_host,
    encode_onion,
    host_kind,
    is_public,
    network_group,
    service_names,
)

H = [bytes([i]) * 32 for i in range(3)]


def sample_version(**kw) -> m.Version:
    args = dict(remote_host="203.0.113.5", remote_port=8444, nonce=b"12345678", timestamp=1730000000)
    args.update(kw)
    return m.build_version(**args)


# --- inv / getdata / dinv ----------------------------------------------------------------


@pytest.mark.parametrize("cls", [m.Inv, m.GetData, m.Dinv])
def test_hash_list_count_must_match(cls):
    good = encode_var_int(3) + b"".join(H)
    assert cls.decode(good).hashes == tuple(H)
    for bad in (encode_var_int(2) + b"".join(H), encode_var_int(4) + b"".join(H), encode_var_int(3) + b"".join(H)[:-1]):
        with pytest.raises(MalformedMessage) as info:
            cls.decode(bad)
        assert not isinstance(info.value, m.TooManyEntries)
        assert not isinstance(info.value, FramingError)
    with pytest.raises(MalformedMessage):
        cls.decode(b"")


@pytest.mark.parametrize("cls", [m.Inv, m.Dinv])
def test_hash_list_limit(cls):
    at_limit = encode_var_int(MAX_INV_ENTRIES) + b"\x00" * (32 * MAX_INV_ENTRIES)
    assert len(cls.decode(at_limit).hashes) == MAX_INV_ENTRIES
    over = encode_var_int(MAX_INV_ENTRIES + 1) + b"\x00" * (32 * (MAX_INV_ENTRIES + 1))
    with pytest.raises(m.TooManyEntries):
        cls.decode(over)
    # The count alone is enough to refuse it; nothing after it is read.
    with pytest.raises(m.TooManyEntries):
        cls.decode(encode_var_int(2**40))
    assert issubclass(m.TooManyEntries, MalformedMessage)
    assert not issubclass(m.TooManyEntries, FramingError)


def test_getdata_has_no_50000_limit_as_in_the_reference():
    """The reference's bm_command_getdata takes any count that fits the 1600100-byte message
    (up to 50003 hashes); only a count that cannot fit is refused outright."""
    n = MAX_INV_ENTRIES + 3
    payload = encode_var_int(n) + b"\x00" * (32 * n)
    assert len(payload) <= 1600100
    assert len(m.GetData.decode(payload).hashes) == n
    with pytest.raises(m.TooManyEntries):
        m.GetData.decode(encode_var_int(n + 1))
    with pytest.raises(m.TooManyEntries):
        m.GetData.decode(encode_var_int(2**40))


def test_hash_list_construction_and_batches():
    with pytest.raises(MalformedMessage):
        m.Inv((b"short",))
    batches = list(m.Inv.batches(H * 5, size=4))
    assert [len(b.hashes) for b in batches] == [4, 4, 4, 3]
    assert sum((b.hashes for b in batches), ()) == tuple(H * 5)
    assert list(m.GetData.batches([])) == []
    assert all(isinstance(b, m.GetData) for b in m.GetData.batches(H))


# --- addr --------------------------------------------------------------------------------


def test_addr_rules():
    a = NetAddr(time=1729999400, stream=1, services=1, host="1.2.3.4", port=8444)
    msg = m.Addr((a, NetAddr(host="2001:db8::1", port=1)))
    raw = msg.encode_payload()
    assert m.Addr.decode(raw) == msg
    assert len(raw) == 1 + 2 * 38
    with pytest.raises(MalformedMessage):
        m.Addr.decode(raw[:-1])
    with pytest.raises(MalformedMessage):
        m.Addr.decode(raw + b"\x00")
    with pytest.raises(MalformedMessage):
        m.Addr.decode(encode_var_int(10**12))
    assert m.Addr.decode(b"\x00") == m.Addr(())


# --- version -----------------------------------------------------------------------------


def test_version_trailing_bytes_ignored():
    v = sample_version()
    raw = v.encode_payload()
    assert m.Version.decode(raw + b"extra bytes") == v


def test_version_truncated_everywhere():
    raw = sample_version().encode_payload()
    for cut in range(len(raw)):
        with pytest.raises(MalformedMessage):
            m.Version.decode(raw[:cut])


def test_version_non_minimal_stream_rejected():
    raw = sample_version(streams=[1]).encode_payload()
    assert raw.endswith(b"\x01\x01")
    with pytest.raises(MalformedMessage):
        m.Version.decode(raw[:-2] + b"\x01\xfd\x00\x01")


def test_version_fields_and_builder():
    v = sample_version(services=NODE_NETWORK | NODE_SSL, listen_port=9000, streams=[2, 1, 2], user_agent="/x:1/")
    assert v.version == 3 and v.streams == (1, 2)
    assert v.addr_recv == NetAddr(time=0, stream=0, services=1, host="203.0.113.5", port=8444)
    assert v.addr_from == NetAddr(time=0, stream=0, services=3, host="127.0.0.1", port=9000)
    assert v.user_agent == b"/x:1/"
    d = m.describe(v)
    assert d["command"] == "version"
    assert d["fields"]["service_names"] == ["NODE_NETWORK", "NODE_SSL"]
    assert d["fields"]["addr_from"]["port"] == 9000 and "time" not in d["fields"]["addr_from"]
    # v3 onion peers get the reference's 16-byte truncation.
    onion = sample_version(remote_host="b" * 56 + ".onion")
    assert onion.addr_recv.host_bytes == encode_onion("b" * 56 + ".onion")[:16]
    with pytest.raises(MalformedMessage):
        sample_version(nonce=b"short")
    with pytest.raises(MalformedMessage):
        sample_version(remote_port=70000)


def test_version_user_agent_not_utf8_still_describable():
    v = m.Version(user_agent=b"/\xff\xfe:1/")
    assert m.Version.decode(v.encode_payload()) == v
    assert "\\xff" in v.to_dict()["user_agent"]
    json.dumps(m.describe(v))


def test_version_empty_stream_list_decodes():
    # Refusing it is the handshake's job (check 4 of spec 4.4), not the decoder's.
    v = m.Version(streams=())
    assert m.Version.decode(v.encode_payload()).streams == ()


# --- error, object, empty, unknown -------------------------------------------------------


def test_error_message():
    e = m.Error(fatal=2, ban_time=0, inventory_vector=H[0], error_text="I'm connected to myself. Closing connection.")
    raw = e.encode_payload()
    assert raw[:3] == b"\x02\x00\x20"
    assert m.Error.decode(raw) == e
    assert m.Error.decode(raw + b"junk") == e
    for cut in range(len(raw)):
        with pytest.raises(MalformedMessage):
            m.Error.decode(raw[:cut])


def test_object_message_is_opaque():
    assert m.ObjectMessage.decode(b"").data == b""
    d = m.ObjectMessage(b"\x01\x02").to_dict()
    assert "header_error" in d and d["length"] == 2 and d["object"] == "0102"
    obj = bytes(8) + (1730000000).to_bytes(8, "big") + (0x746F72).to_bytes(4, "big") + b"\x02\x01" + b"zz"
    d = m.ObjectMessage(obj).to_dict()
    assert (d["object_type_name"], d["version"], d["stream"], d["object_payload_length"]) == ("onionpeer", 2, 1, 2)


@pytest.mark.parametrize("cls", [m.Verack, m.Ping, m.Pong, m.Portcheck])
def test_empty_commands(cls):
    assert cls().encode_payload() == b""
    assert cls.decode(b"ignored") == cls()
    assert m.decode_payload(cls.command, b"") == cls()


def test_unknown_command_kept_opaque():
    msg = m.decode_payload("getbiz", b"\x01\x02")
    assert msg == m.Unknown("getbiz", b"\x01\x02")
    assert m.encode_message(msg) == frame("getbiz", b"\x01\x02")
    assert m.describe(msg) == {"command": "getbiz", "fields": {"length": 2, "payload": "0102"}}
    with pytest.raises(MalformedMessage):
        m.Unknown("bad\x00", b"")
    with pytest.raises(MalformedMessage):
        m.Unknown("x" * 13, b"")


def test_describe_packets_reports_bad_payloads():
    data = frame("verack") + frame("inv", b"\x05") + frame("zzz", b"\x00")
    out = m.describe_packets(data)
    assert [o["command"] for o in out] == ["verack", "inv", "zzz"]
    assert out[1]["error"]["type"] == "MalformedMessage" and out[1]["payload"] == "05"
    assert out[2]["header"]["length"] == 1
    json.dumps(out)


# --- hosts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host,public",
    [
        ("127.0.0.1", False), ("127.255.255.255", False), ("10.0.0.1", False), ("192.168.1.1", False),
        ("172.16.0.0", False), ("172.31.255.255", False), ("172.15.255.255", True), ("172.32.0.0", True),
        ("169.254.1.1", True), ("0.0.0.0", True), ("224.0.0.1", True), ("8.8.8.8", True),
        ("192.169.0.1", True), ("11.0.0.1", True),
        ("::1", False), ("fe80::1", False), ("febf::1", False), ("fec0::1", True), ("fc00::1", False),
        ("fdff::1", False), ("fe00::", True), ("::", True), ("::2", True), ("2001:db8::1", True),
        ("quzwelsuziwqgpt2.onion", True),
    ],
)
def test_public_classification(host, public):
    assert is_public(host) is public
    assert is_public(encode_host(host)) is public


def test_host_encoding_edge_cases():
    assert encode_host("[2001:db8::1]") == encode_host("2001:db8::1")
    assert decode_host(encode_host("::ffff:1.2.3.4")) == "1.2.3.4"
    assert host_kind("1.2.3.4") == "ipv4" and host_kind("::1") == "ipv6" and host_kind("quzwelsuziwqgpt2.onion") == "onion"
    assert encode_host("QUZWELSUZIWQGPT2.ONION") == encode_host("quzwelsuziwqgpt2.onion")
    for bad in ("example.org", "1.2.3", "not-base32!!!!!!.onion", "abc.onion", "b" * 56 + ".onion", ""):
        with pytest.raises(MalformedMessage):
            encode_host(bad)
    with pytest.raises(MalformedMessage):
        encode_host(b"\x00" * 15)
    with pytest.raises(MalformedMessage):
        decode_host(b"\x00" * 17)
    v3 = "c" * 56 + ".onion"
    assert len(encode_onion(v3)) == 41 and decode_onion(encode_onion(v3)) == v3
    with pytest.raises(MalformedMessage):
        decode_onion(b"\x00" * 16)


def test_network_group():
    assert network_group("1.2.3.4") == network_group("1.2.200.200") != network_group("1.3.3.4")
    assert network_group("10.0.0.1") == network_group("192.168.0.1") == "IPv4"
    assert network_group("::1") == network_group("fe80::1") == "IPv6"
    assert network_group("2001:db8:1:2:3:4::1") == network_group("2001:db8:1:2:3:4:ffff:1")
    assert network_group("2001:db8:1:2:3:5::1") != network_group("2001:db8:1:2:3:4::1")
    assert network_group("quzwelsuziwqgpt2.onion") == "quzwelsuziwqgpt2.onion"
    assert network_group(encode_host("quzwelsuziwqgpt2.onion")) == "quzwelsuziwqgpt2.onion"
    assert network_group("1.2.3.4") != network_group("::ffff:1.3.3.4")


def test_service_names():
    assert service_names(0x0B) == ["NODE_NETWORK", "NODE_SSL", "NODE_DANDELION"]
    assert service_names(NODE_DANDELION | (1 << 63)) == ["NODE_DANDELION", "bit63"]
    assert service_names(0) == []


def test_net_addr_validation():
    with pytest.raises(MalformedMessage):
        NetAddr(port=-1)
    with pytest.raises(MalformedMessage):
        NetAddr(stream=1 << 32)
    with pytest.raises(MalformedMessage):
        NetAddr(host="example.org")
    with pytest.raises(MalformedMessage):
        NetAddr.decode(b"\x00" * 37)
    with pytest.raises(MalformedMessage):
        NetAddr.decode_short(b"\x00" * 27)
    assert NetAddr(host="::FFFF:7f00:1").host == "127.0.0.1"
