"""Sent-message status strings of the reference (spec 10.7), exposed by the API."""

from __future__ import annotations

__all__ = [
    "ACKRECEIVED", "AWAITINGPUBKEY", "BADKEY", "BROADCASTQUEUED", "BROADCASTSENT", "DOINGBROADCASTPOW",
    "DOINGMSGPOW", "DOINGPUBKEYPOW", "FORCEPOW", "MSGQUEUED", "MSGSENT", "MSGSENTNOACKEXPECTED", "NOTFOUND",
    "SENT_STATUSES", "TOODIFFICULT", "WAITING_FOR_PUBKEY",
]

MSGQUEUED = "msgqueued"
DOINGPUBKEYPOW = "doingpubkeypow"
AWAITINGPUBKEY = "awaitingpubkey"
DOINGMSGPOW = "doingmsgpow"
FORCEPOW = "forcepow"
MSGSENT = "msgsent"
MSGSENTNOACKEXPECTED = "msgsentnoackexpected"
ACKRECEIVED = "ackreceived"
TOODIFFICULT = "toodifficult"
BADKEY = "badkey"
BROADCASTQUEUED = "broadcastqueued"
DOINGBROADCASTPOW = "doingbroadcastpow"
BROADCASTSENT = "broadcastsent"
#: getStatus of an unknown ackdata.
NOTFOUND = "notfound"
#: Every status a sent row can have.
SENT_STATUSES = (
    MSGQUEUED, DOINGPUBKEYPOW, AWAITINGPUBKEY, DOINGMSGPOW, FORCEPOW, MSGSENT, MSGSENTNOACKEXPECTED,
    ACKRECEIVED, TOODIFFICULT, BADKEY, BROADCASTQUEUED, DOINGBROADCASTPOW, BROADCASTSENT,
)
#: Statuses of msgs held until the recipient's pubkey arrives.
WAITING_FOR_PUBKEY = (DOINGPUBKEYPOW, AWAITINGPUBKEY)
