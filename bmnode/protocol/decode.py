"""Human/JSON description of raw protocol bytes for operators (``bmnode decode``).

Accepts one or several framed messages, or a bare object, and describes every field, the
parsed object (type-specific fields, inventory hash), its PoW at a given clock and network
minimums, and the relay verdict. Pure: bytes and a clock in, a JSON-ready dict out.
"""

from __future__ import annotations

from typing import Any

from bmnode.errors import MalformedMessage
from bmnode.pow.target import evaluate_pow
from bmnode.protocol.constants import MAGIC_BYTES, NETWORK_MIN_EXTRA, NETWORK_MIN_NTPB
from bmnode.protocol.messages import describe_packets
from bmnode.protocol.objects import describe_object
from bmnode.protocol.validation import check_relay


def describe_object_at(obj: bytes, now: int, ntpb: int = NETWORK_MIN_NTPB, extra: int = NETWORK_MIN_EXTRA) -> dict[str, Any]:
    """Parsed object plus its PoW check and relay verdict at ``now`` for the given minimums."""
    out = describe_object(obj)
    pow_check = evaluate_pow(obj, now, ntpb, extra, min_ntpb=ntpb, min_extra=extra)
    out["pow"] = {
        "now": now,
        "ttl": pow_check.ttl,
        "nonce_trials_per_byte": ntpb,
        "payload_length_extra_bytes": extra,
        "trial_value": pow_check.trial_value,
        "target": pow_check.target,
        "sufficient": pow_check.sufficient,
    }
    out["relay"] = check_relay(obj, now, ntpb=ntpb, extra=extra).to_dict()
    return out


def describe_input(data: bytes, *, now: int, ntpb: int = NETWORK_MIN_NTPB, extra: int = NETWORK_MIN_EXTRA) -> dict[str, Any]:
    """Framed message(s) when ``data`` starts with the network magic, else a bare object."""
    if not data:
        raise MalformedMessage("nothing to decode: the input is empty")
    if data[:4] == MAGIC_BYTES:
        messages = describe_packets(data)
        for m in messages:
            if m["command"] == "object" and "fields" in m:
                obj = bytes.fromhex(m["fields"]["object"])
                try:
                    m["object"] = describe_object_at(obj, now, ntpb, extra)
                except MalformedMessage as exc:
                    m["object_error"] = str(exc)
        return {"kind": "messages", "count": len(messages), "messages": messages}
    return {"kind": "object", "object": describe_object_at(data, now, ntpb, extra)}
