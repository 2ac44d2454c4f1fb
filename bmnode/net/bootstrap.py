"""Built-in bootstrap data (spec 12.3): the reference's default nodes and bootstrap names.

Data only. These lists are historical and may all be unreachable; nothing may depend on them,
and tests never use them (``--no-bootstrap``).
"""

from __future__ import annotations

from typing import Final

from bmnode.protocol.constants import DAY

#: Stream-1 default nodes of the reference, (host, port).
DEFAULT_NODES: Final[tuple[tuple[str, int], ...]] = (
    ("5.45.99.75", 8444),
    ("75.167.159.54", 8444),
    ("95.165.168.168", 8444),
    ("85.180.139.241", 8444),
    ("158.222.217.190", 8080),
    ("178.62.12.187", 8448),
    ("24.188.198.204", 8111),
    ("109.147.204.113", 1195),
    ("178.11.46.221", 8444),
)

#: Stream the default nodes are inserted into.
DEFAULT_NODES_STREAM: Final = 1

#: They are inserted with lastseen = now - this (28 days less 10 minutes).
DEFAULT_NODE_AGE: Final = 28 * DAY - 600

#: One-off "bootstrap" connection targets when only default nodes are known (one chosen at random).
BOOTSTRAP_NAMES: Final[tuple[tuple[str, int], ...]] = (
    ("bootstrap8080.bitmessage.org", 8080),
    ("bootstrap8444.bitmessage.org", 8444),
)

#: The bootstrap target used through a SOCKS5 proxy.
BOOTSTRAP_ONION: Final = ("quzwelsuziwqgpt2.onion", 8444)
