"""Everything the relay node's networking can be told (limits, timers, features), in one place.

:class:`NetSettings` holds the operator options of ``bmnode run`` (listen address, peers,
limits, network PoW, TLS, Dandelion) plus the protocol timers, whose defaults are the
reference's. Tests shorten the timers; operators normally never touch them.
:func:`settings_from_config` maps a :class:`bmnode.node.config.NodeConfig` onto it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bmnode.net.dandelion import FLUFF_BASE, FLUFF_MEAN, REFRESH_INTERVAL, STEM_PROBABILITY
from bmnode.net.download import REQUEST_TIMEOUT
from bmnode.net.socks import ProxySettings
from bmnode.protocol.constants import (
    DEFAULT_MAX_BOOTSTRAP_CONNECTIONS,
    DEFAULT_MAX_OUTBOUND,
    DEFAULT_MAX_TOTAL_CONNECTIONS,
    DEFAULT_PORT,
    DEFAULT_STREAM,
    HANDSHAKE_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_GETDATA_ENTRIES_SENT,
    MAX_HALF_OPEN,
    MAX_INV_ENTRIES_SENT,
    NETWORK_MIN_EXTRA,
    NETWORK_MIN_NTPB,
    PING_INTERVAL,
    USER_AGENT,
)

if TYPE_CHECKING:
    from bmnode.node.config import NodeConfig

#: Listen hosts meaning "every interface".
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "0:0:0:0:0:0:0:0"})


@dataclass
class NetSettings:
    """Options of one net process. Times in seconds, sizes in bytes."""

    # --- operator options (bmnode run) ----------------------------------------------
    data_dir: Path | None = None
    listen: bool = True
    listen_host: str = "0.0.0.0"
    listen_port: int = DEFAULT_PORT  # 0 = any free port (tests)
    peers: tuple[tuple[str, int], ...] = ()
    bootstrap: bool = True
    max_inbound: int = DEFAULT_MAX_TOTAL_CONNECTIONS
    max_outbound: int = DEFAULT_MAX_OUTBOUND
    ntpb: int = NETWORK_MIN_NTPB
    extra: int = NETWORK_MIN_EXTRA
    tls: bool = True
    #: Dandelion stem probability in percent (the reference's ``network/dandelion``); 0 = off.
    dandelion: int = STEM_PROBABILITY
    streams: tuple[int, ...] = (DEFAULT_STREAM,)
    user_agent: bytes = USER_AGENT
    #: Learn, record and dial private/loopback addresses (test networks on 127.0.0.1).
    allow_private_peers: bool = False
    #: Accept objects of streams we did not join (the reference's ``acceptmismatch``).
    accept_mismatch: bool = False
    #: Dial every outbound peer through this SOCKS proxy (Tor); None = direct. With a proxy,
    #: .onion peers become dialable and host names are resolved by the proxy, never here.
    proxy: ProxySettings | None = None
    #: Bound on a proxied dial (proxy connect + SOCKS handshake; Tor circuits are slow).
    proxy_timeout: float = 30.0
    #: Dial onion services only (``--onion-only``, the reference's ``onionservicesonly``).
    onion_only: bool = False
    #: LAN peer discovery over UDP (12.4, bmnode/net/lan.py): off behind a proxy or when not
    #: listening; a loopback-only listener binds 127.0.0.1 and never announces.
    lan_discovery: bool = True
    #: The UDP port bound (the reference's 8444; 0 = any free port, tests).
    lan_port: int = DEFAULT_PORT
    #: Where announcements go: the LAN broadcast address, or a unicast address (tests).
    lan_announce_host: str = "<broadcast>"
    #: Destination port of announcements; None = ``lan_port``.
    lan_announce_port: int | None = None
    lan_announce_interval: float = 60.0
    #: Seconds a discovered peer is kept after its last announcement.
    lan_peer_lifetime: float = 300.0
    #: Our own onion service (host, port) when we run as one (``--onion-hostname``): recorded as
    #: a known node flagged ``self``; inbound peers that come through Tor get the reference's
    #: version message for onion services.
    onion: tuple[str, int] | None = None

    # --- connection rules -----------------------------------------------------------
    #: Extra inbound head-room before new TCP connections are refused outright (4.9).
    inbound_headroom: int = DEFAULT_MAX_BOOTSTRAP_CONNECTIONS
    #: Check 5 of 4.4 (one inbound connection per IP) is not applied to loopback peers.
    loopback_exempt_per_ip: bool = True
    #: Inbound connections from one IP still in the handshake; more are closed at once
    #: (loopback exempt like check 5).
    max_handshaking_per_ip: int = 4
    max_half_open: int = MAX_HALF_OPEN
    connect_timeout: float = 10.0
    #: First and largest delay before re-dialling a configured peer (doubles per failure).
    reconnect_delay: float = 1.0
    reconnect_delay_max: float = 60.0

    # --- protocol timers (reference values) ---------------------------------------------
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    ping_interval: float = PING_INTERVAL
    idle_timeout: float = IDLE_TIMEOUT
    request_timeout: float = REQUEST_TIMEOUT
    #: New objects are announced in batches about this often (5.3).
    announce_interval: float = 1.0
    #: Period of the housekeeping loop (timeouts, fluffs, dialing).
    tick_interval: float = 1.0
    #: Inventory and known-nodes clean-up period.
    cleanup_interval: float = 300.0
    #: Wait this long after a peer's handshake before our first getdata to it (the
    #: reference ignores getdata during its anti-intersection delay, 5.5).
    first_getdata_delay: float = 1.0
    #: Upper bound of the anti-intersection delay we apply (5.5).
    max_intersection_delay: float = 10.0
    dandelion_fluff_base: float = FLUFF_BASE
    dandelion_fluff_mean: float = FLUFF_MEAN
    dandelion_refresh: float = REFRESH_INTERVAL

    # --- sizes and bounds -----------------------------------------------------------
    inv_chunk: int = MAX_INV_ENTRIES_SENT
    getdata_chunk: int = MAX_GETDATA_ENTRIES_SENT
    max_inflight_per_peer: int = 1000
    max_offers_per_peer: int = 150_000
    max_wanted: int = 500_000
    #: Queued getdata hashes per peer; more are ignored (the peer asks again).
    max_serve_queue: int = 50_000
    #: Objects served per peer per event-loop turn (fairness).
    serve_batch: int = 100
    #: Announcements held for a peer that does not drain; beyond this it is dropped.
    max_pending_inv: int = 200_000
    max_stem_objects: int = 50_000
    #: Per-peer output buffer above which we stop writing announcements and serving objects
    #: until it drains to a quarter of it. 256 KiB (the reference skips peers above 2 MiB):
    #: with 50 peers a burst then costs ~13 MiB of buffers, not 100+ MiB.
    write_high_water: int = 1 << 18
    #: Hashes per new-object inv (small, so one message cannot overshoot the high-water mark
    #: by much; the big inv after the handshake uses ``inv_chunk``).
    announce_chunk: int = 2000
    write_hard_limit: int = 1 << 24
    drain_timeout: float = 120.0

    @property
    def dandelion_enabled(self) -> bool:
        return self.dandelion > 0

    def with_(self, **changes: Any) -> "NetSettings":
        """A copy with some fields changed."""
        return replace(self, **changes)


def settings_from_config(cfg: "NodeConfig", **overrides: Any) -> NetSettings:
    """NetSettings for a :class:`bmnode.node.config.NodeConfig`, plus keyword overrides of
    any NetSettings field (tests shorten timers this way)."""
    s = NetSettings(
        data_dir=Path(cfg.data_dir),
        listen_host=cfg.listen.host,
        listen_port=cfg.listen.port,
        peers=tuple((p.host, p.port) for p in cfg.peers),
        bootstrap=cfg.bootstrap,
        max_inbound=cfg.max_inbound,
        max_outbound=cfg.max_outbound,
        ntpb=cfg.network_pow[0],
        extra=cfg.network_pow[1],
        tls=cfg.tls,
        dandelion=STEM_PROBABILITY if cfg.dandelion else 0,
        streams=tuple(cfg.streams),
        user_agent=cfg.user_agent.encode("utf-8"),
        allow_private_peers=cfg.allow_private_peers,
        lan_discovery=getattr(cfg, "lan_discovery", True),
    )
    proxy = proxy_from_config(cfg)
    s.onion = getattr(cfg, "onion_peer", None)
    s.onion_only = bool(getattr(cfg, "onion_only", False)) and proxy is not None
    # As the reference: behind a proxy the node accepts no inbound peers unless told to, or
    # unless it runs as an onion service (Tor hands it the service's connections).
    socks_listen = bool(getattr(cfg, "socks_listen", False))
    s.listen = proxy is None or socks_listen or s.onion is not None
    if proxy is not None and not socks_listen and s.listen_host in _WILDCARD_HOSTS:
        # Listening only for Tor's onion-service connections: loopback, as the reference's
        # onionbindip (127.0.0.1). A clearnet listener would tie the onion to this IP.
        s.listen_host = "127.0.0.1"
    s.proxy = proxy
    names = {f.name for f in fields(NetSettings)}
    for k, v in overrides.items():
        if k not in names:
            raise TypeError(f"unknown net setting {k!r}")
        setattr(s, k, v)
    return s


def proxy_from_config(cfg: "NodeConfig") -> ProxySettings | None:
    """The SOCKS proxy of a config, or None for direct connections. Credentials go along
    when ``socks_authentication`` is on, or (unset) whenever a user name is given."""
    kind = getattr(cfg, "socks_proxy_type", "none")
    if kind == "none":
        return None
    auth = cfg.socks_authentication
    if auth is None:
        auth = cfg.socks_username is not None
    return ProxySettings(
        kind=kind,
        host=cfg.socks_host,
        port=cfg.socks_port,
        username=cfg.socks_username if auth else None,
        password=cfg.socks_password if auth and kind == "socks5" else None,
    )


__all__ = ["NetSettings", "proxy_from_config", "settings_from_config"]
