"""Property tests: codec round trips, and bad input giving only typed errors (never a crash)."""

from __future__ import annotations

import ipaddress
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmnode.errors import BmnodeError, MalformedMessage
from bmnode.protocol import messages as m
from bmnode.protocol.encoding import Reader, decode_var_int, encode_var_int, encode_var_int_list, encode_var_str
from bmnode.protocol.framing import FrameDecoder, decode_frame, frame, split_frames
from bmnode.protocol.hosts import NetAddr, decode_host, encode_host, is_public, network_group
from tests import vectors

FAST = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

u64s = st.integers(0, 2**64 - 1)
u32s = st.integers(0, 2**32 - 1)
u16s = st.integers(0, 2**16 - 1)

ipv4 = st.builds(lambda b: str(ipaddress.IPv4Address(b)), st.binary(min_size=4, max_size=4))
ipv6 = st.builds(lambda b: ipaddress.IPv6Address(b).compressed, st.binary(min_size=16, max_size=16))
onion = st.builds(lambda b: decode_host(bytes.fromhex("fd87d87eeb43") + b), st.binary(min_size=10, max_size=10))
hosts = st.one_of(ipv4, ipv6, onion, st.builds(decode_host, st.binary(min_size=16, max_size=16)))

net_addrs = st.builds(NetAddr, time=u64s, stream=u32s, services=u64s, host=hosts, port=u16s)
short_addrs = st.builds(NetAddr, time=st.just(0), stream=st.just(0), services=u64s, host=hosts, port=u16s)
hash32 = st.binary(min_size=32, max_size=32)
streams = st.lists(u64s, max_size=8).map(tuple)

versions = st.builds(
    m.Version,
    version=u32s,
    services=u64s,
    timestamp=st.integers(-(2**63), 2**63 - 1),
    addr_recv=short_addrs,
    addr_from=short_addrs,
    nonce=st.binary(min_size=8, max_size=8),
    user_agent=st.binary(max_size=300),
    streams=streams,
)
known = set(m.COMMANDS)
unknown_commands = (
    st.text(st.characters(min_codepoint=1, max_codepoint=255), min_size=0, max_size=12)
    .filter(lambda c: len(c.encode("latin-1")) <= 12 and not c.endswith("\x00") and c not in known)
)
all_messages = st.one_of(
    versions,
    st.just(m.Verack()),
    st.just(m.Ping()),
    st.just(m.Pong()),
    st.just(m.Portcheck()),
    st.builds(m.Addr, st.lists(net_addrs, max_size=5).map(tuple)),
    st.builds(m.Inv, st.lists(hash32, max_size=5).map(tuple)),
    st.builds(m.GetData, st.lists(hash32, max_size=5).map(tuple)),
    st.builds(m.Dinv, st.lists(hash32, max_size=5).map(tuple)),
    st.builds(m.ObjectMessage, st.binary(max_size=400)),
    st.builds(m.Error, fatal=u64s, ban_time=u64s, inventory_vector=st.binary(max_size=40), error_text=st.binary(max_size=100)),
    st.builds(m.Unknown, unknown_commands, st.binary(max_size=100)),
)

VALID_PACKETS = [bytes.fromhex(e["packet"]) for e in vectors.entries("messages", "messages")]
COMMANDS = sorted(known) + ["unknown", ""]


# --- round trips -------------------------------------------------------------------------


@FAST
@given(u64s)
def test_var_int_round_trip(v):
    raw = encode_var_int(v)
    assert decode_var_int(raw + b"\xff") == (v, len(raw))
    assert len(raw) == (1 if v < 0xFD else 3 if v <= 0xFFFF else 5 if v <= 0xFFFFFFFF else 9)


@FAST
@given(u64s, st.sampled_from([(b"\xfd", 2), (b"\xfe", 4), (b"\xff", 8)]))
def test_var_int_longer_forms_rejected(v, form):
    prefix, size = form
    if v >= 1 << (8 * size):
        return
    raw = prefix + v.to_bytes(size, "big")
    if len(encode_var_int(v)) < len(raw):
        try:
            decode_var_int(raw)
        except MalformedMessage:
            return
        raise AssertionError("non-minimal var_int accepted")
    assert decode_var_int(raw) == (v, len(raw))


@FAST
@given(st.binary(max_size=600))
def test_var_str_round_trip(s):
    r = Reader(encode_var_str(s))
    assert r.var_str() == s and r.at_end()


@FAST
@given(st.lists(u64s, max_size=30))
def test_var_int_list_round_trip(values):
    r = Reader(encode_var_int_list(values))
    assert r.var_int_list() == values and r.at_end()


@FAST
@given(st.binary(min_size=16, max_size=16))
def test_host_bytes_round_trip(raw):
    text = decode_host(raw)
    assert encode_host(text) == raw
    assert isinstance(is_public(raw), bool) and isinstance(network_group(raw), str)


@FAST
@given(net_addrs)
def test_net_addr_round_trip(a):
    raw = a.encode()
    assert len(raw) == 38 and NetAddr.decode(raw) == a
    short = NetAddr.decode_short(a.encode_short())
    assert (short.services, short.host, short.port) == (a.services, a.host, a.port)
    json.dumps(a.to_dict())


@FAST
@given(all_messages)
def test_every_message_round_trips(msg):
    packet = m.encode_message(msg)
    back = m.decode_message(packet)
    assert back == msg
    assert m.encode_message(back) == packet
    json.dumps(m.describe(back))


@FEW
@given(st.lists(all_messages, min_size=1, max_size=6), st.data())
def test_stream_decoder_any_chunking(msgs, data):
    stream = b"".join(m.encode_message(x) for x in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    dec = FrameDecoder()
    frames = []
    prev = 0
    for c in cuts + [len(stream)]:
        frames += dec.feed(stream[prev:c])
        prev = c
    assert [m.decode_payload(f.command, f.payload) for f in frames] == msgs
    assert split_frames(stream) == frames


# --- bad input: only typed errors, always finishes ----------------------------------------


def _only_typed(fn, *args):
    try:
        fn(*args)
    except BmnodeError:
        pass


@FAST
@given(st.sampled_from(COMMANDS), st.binary(max_size=300))
def test_random_payloads(command, payload):
    _only_typed(m.decode_payload, command, payload)


@FAST
@given(st.binary(max_size=300))
def test_random_packets(data):
    _only_typed(decode_frame, data)
    _only_typed(split_frames, data)
    _only_typed(m.decode_message, data)
    _only_typed(m.describe_packets, data)
    _only_typed(FrameDecoder(max_payload=1000).feed, data)
    _only_typed(NetAddr.decode, data)
    _only_typed(NetAddr.decode_short, data)
    _only_typed(decode_host, data)
    for op in ("var_int", "var_str", "var_int_list", "u64", "i64"):
        _only_typed(getattr(Reader(data), op))


@FAST
@given(st.binary(max_size=60))
def test_random_header_plus_payload(tail):
    # Valid magic so the header checks are passed more often than with pure noise.
    _only_typed(split_frames, bytes.fromhex("e9beb4d9") + tail)
    _only_typed(m.decode_message, bytes.fromhex("e9beb4d9") + tail)


mutations = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.just(0)),
)


def _mutate(data: bytes, muts) -> bytes:
    b = bytearray(data)
    for kind, pos, val in muts:
        i = pos % (len(b) + 1)
        if kind == "flip" and b:
            b[i % len(b)] ^= val
        elif kind == "cut":
            del b[i:]
        elif kind == "insert":
            b[i:i] = bytes([val])
        elif kind == "delete" and b:
            del b[i % len(b)]
    return bytes(b)


@FAST
@given(st.sampled_from(VALID_PACKETS), st.lists(mutations, min_size=1, max_size=4))
def test_mutated_packets(packet, muts):
    _only_typed(m.decode_message, _mutate(packet, muts))
    _only_typed(FrameDecoder().feed, _mutate(packet, muts))


@FAST
@given(st.sampled_from(VALID_PACKETS), st.lists(mutations, min_size=1, max_size=4))
def test_mutated_payloads_with_good_checksum(packet, muts):
    # Re-frame the mutated payload so it reaches the command decoders past the checksum.
    f = decode_frame(packet)
    payload = _mutate(f.payload, muts)
    try:
        msg = m.decode_message(frame(f.command, payload))
    except BmnodeError:
        return
    json.dumps(m.describe(msg))
