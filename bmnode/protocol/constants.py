"""Protocol constants and limits (spec sections 1, 4.3, 7.1, 7.2, 7.3).

Every number the wire layer and the relay rules depend on lives here, once.
"""

from __future__ import annotations

from typing import Final

# --- Framing (section 1, 3) -------------------------------------------------------------
MAGIC: Final = 0xE9BEB4D9
MAGIC_BYTES: Final = b"\xe9\xbe\xb4\xd9"
HEADER_SIZE: Final = 24
COMMAND_SIZE: Final = 12
CHECKSUM_SIZE: Final = 4
#: Largest accepted ``length`` field of a message header; larger => close.
MAX_MESSAGE_PAYLOAD: Final = 1600100

# --- Protocol / connection (section 1, 4) -----------------------------------------------
PROTOCOL_VERSION: Final = 3
MIN_PROTOCOL_VERSION: Final = 3
DEFAULT_PORT: Final = 8444
DEFAULT_API_PORT: Final = 8442
DEFAULT_API_HOST: Final = "127.0.0.1"
DEFAULT_STREAM: Final = 1
MIN_STREAM: Final = 1
MAX_STREAM: Final = (1 << 63) - 1
USER_AGENT: Final = b"/bmnode:0.1.0/"
#: Reference user agent, for comparison in tests and docs.
REFERENCE_USER_AGENT: Final = b"/PyBitmessage:0.6.3.2/"
MAX_USER_AGENT_LENGTH: Final = 5000
MAX_VERSION_STREAMS: Final = 160000
MAX_TIME_OFFSET: Final = 3600
HANDSHAKE_TIMEOUT: Final = 20
PING_INTERVAL: Final = 300
IDLE_TIMEOUT: Final = 600
ADDR_FRESHNESS: Final = 10800
DEFAULT_MAX_OUTBOUND: Final = 8
MAX_OUTBOUND_LIMIT: Final = 8
DEFAULT_MAX_TOTAL_CONNECTIONS: Final = 200
DEFAULT_MAX_BOOTSTRAP_CONNECTIONS: Final = 20
MAX_HALF_OPEN: Final = 64

# --- Inventory / addr message limits (section 1, 5) -------------------------------------
INV_HASH_SIZE: Final = 32
#: More entries than this in a received inv/dinv/getdata => ignore the message (keep the connection).
MAX_INV_ENTRIES: Final = 50000
#: Entries per inv we send (the reference stays one below the receive limit).
MAX_INV_ENTRIES_SENT: Final = 49999
MAX_ADDR_ENTRIES: Final = 1000
MAX_GETDATA_ENTRIES_SENT: Final = 1000
NET_ADDR_SIZE: Final = 38
NET_ADDR_SHORT_SIZE: Final = 26
HOST_SIZE: Final = 16

# --- Service bits (section 4.3) ---------------------------------------------------------
NODE_NETWORK: Final = 0x01
NODE_SSL: Final = 0x02
NODE_POW: Final = 0x04
NODE_DANDELION: Final = 0x08
SERVICE_NAMES: Final[dict[int, str]] = {
    NODE_NETWORK: "NODE_NETWORK",
    NODE_SSL: "NODE_SSL",
    NODE_POW: "NODE_POW",
    NODE_DANDELION: "NODE_DANDELION",
}

# --- Error message fatality (section 5.8) -----------------------------------------------
ERROR_WARNING: Final = 0
ERROR_ERROR: Final = 1
ERROR_FATAL: Final = 2

# --- Objects (section 7) ----------------------------------------------------------------
OBJECT_GETPUBKEY: Final = 0
OBJECT_PUBKEY: Final = 1
OBJECT_MSG: Final = 2
OBJECT_BROADCAST: Final = 3
OBJECT_ONIONPEER: Final = 0x746F72  # "tor"
OBJECT_I2P: Final = 0x493250  # "I2P" (MiNode)
OBJECT_ADDR: Final = 0x61646472  # "addr", reserved in the reference, unused
OBJECT_TYPE_NAMES: Final[dict[int, str]] = {
    OBJECT_GETPUBKEY: "getpubkey",
    OBJECT_PUBKEY: "pubkey",
    OBJECT_MSG: "msg",
    OBJECT_BROADCAST: "broadcast",
    OBJECT_ONIONPEER: "onionpeer",
    OBJECT_I2P: "i2p",
    OBJECT_ADDR: "addr",
}
#: Maximum objectPayload (bytes after the stream var_int) accepted on receipt.
MAX_OBJECT_PAYLOAD: Final = 1 << 18
#: Maximum whole object length we send.
MAX_OBJECT_SIZE_SENT: Final = 1 << 18
#: API limit on len(subject) + len(body).
MAX_MESSAGE_TEXT: Final = (1 << 18) - 500

# Type-specific sanity bounds on whole-object length (section 7.2 step 9).
GETPUBKEY_MIN_LENGTH: Final = 42
PUBKEY_MIN_LENGTH: Final = 146
PUBKEY_MAX_LENGTH: Final = 440
BROADCAST_MIN_LENGTH: Final = 180
BROADCAST_MIN_VERSION: Final = 2

# --- Proof of work (section 1, 8) -------------------------------------------------------
NETWORK_MIN_NTPB: Final = 1000
NETWORK_MIN_EXTRA: Final = 1000
#: Minimum TTL used in PoW verification (TTL floor).
MIN_TTL: Final = 300

# --- Lifetimes (section 1, 7.2, 7.3) ----------------------------------------------------
DAY: Final = 86400
#: Largest accepted expiresTime - now: 28 days + 3 hours.
MAX_TTL: Final = 28 * DAY + 10800  # 2430000
#: An object expired at most this long ago is still accepted.
MAX_EXPIRED_AGE: Final = 3600
#: Objects stay in the inventory this long after expiry.
INVENTORY_KEEP_AFTER_EXPIRY: Final = 10800
TTL_JITTER: Final = 300
MSG_TTL_DEFAULT: Final = 4 * DAY
MSG_TTL_MIN: Final = 3600
MSG_TTL_MAX: Final = 28 * DAY  # 2419200
BROADCAST_TTL_MIN: Final = MSG_TTL_MIN
BROADCAST_TTL_MAX: Final = MSG_TTL_MAX
GETPUBKEY_TTL: Final = int(2.5 * DAY)
PUBKEY_TTL: Final = 28 * DAY
ONIONPEER_TTL: Final = 7 * DAY
RESEND_TTL_CAP: Final = 28 * DAY
RESEND_FACTOR: Final = 1.1

# --- Extended encoding / misc (section 1, 12) -------------------------------------------
ZLIB_DECOMPRESS_LIMIT: Final = 1048576
KNOWN_NODES_MAX_PER_STREAM: Final = 20000
KNOWN_NODE_MAX_AGE: Final = 28 * DAY
