"""Node configuration: defaults < ``bmnode.toml`` in the data directory < command-line flags.

:class:`NodeConfig` holds every option of ``bmnode run``; :func:`load_config` builds it from the
file and the flags; :func:`add_run_arguments` declares the flags on an ``argparse`` parser.
Every value goes through one checker per option (also when a NodeConfig is built directly),
and a bad value or an unknown key raises :class:`~bmnode.errors.ConfigError` naming the flag
or the file and key.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from bmnode.errors import ConfigError, MalformedMessage
from bmnode.protocol.constants import (
    DEFAULT_MAX_TOTAL_CONNECTIONS,
    DEFAULT_PORT,
    MAX_OUTBOUND_LIMIT,
    MAX_STREAM,
    MAX_USER_AGENT_LENGTH,
    NETWORK_MIN_EXTRA,
    NETWORK_MIN_NTPB,
    USER_AGENT,
)
from bmnode.protocol.hosts import encode_onion

__all__ = [
    "CONFIG_FILE",
    "HostPort",
    "LOG_LEVELS",
    "NodeConfig",
    "add_run_arguments",
    "config_from_args",
    "default_data_dir",
    "load_config",
    "parse_host_port",
    "parse_network_pow",
]

CONFIG_FILE = "bmnode.toml"
#: The reference client's API port.
DEFAULT_API_PORT = 8442
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Upper bound on --max-inbound: a sanity limit, far above what one process serves.
MAX_INBOUND_LIMIT = 100_000
_U64 = (1 << 64) - 1
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


# ------------------------------------------------------------------------------ values


@dataclass(frozen=True)
class HostPort:
    """A host (IP literal or DNS/onion name, IPv6 without brackets) and a TCP port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _bad(where: str, reason: str) -> ConfigError:
    return ConfigError(f"{where}: {reason}")


def _check_hostname(host: str, where: str, text: str) -> None:
    try:
        ipaddress.IPv4Address(host)
        return
    except ValueError:
        pass
    if len(host) > 253 or not all(_LABEL.match(label) for label in host.rstrip(".").split(".")):
        raise _bad(where, f"{text!r}: {host!r} is not an IPv4 address or host name")
    if host.replace(".", "").isdigit():
        raise _bad(where, f"{text!r}: {host!r} is not a valid IPv4 address")


def parse_host_port(text: str, *, where: str = "HOST:PORT", allow_port_zero: bool = False) -> HostPort:
    """``HOST:PORT`` with an IPv4 address, a host name, or an IPv6 address in brackets
    (``[::1]:8444``). Port 1-65535 (0 too with ``allow_port_zero``: any free port)."""
    if not isinstance(text, str):
        raise _bad(where, f"expected a string HOST:PORT, got {text!r}")
    s = text.strip()
    if s.startswith("["):
        end = s.find("]")
        if end < 0 or s[end + 1 : end + 2] != ":":
            raise _bad(where, f"{text!r}: expected [IPv6]:PORT")
        host, port_text = s[1:end], s[end + 2 :]
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise _bad(where, f"{text!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = s.rpartition(":")
        if not sep or not host:
            raise _bad(where, f"{text!r}: expected HOST:PORT")
        if ":" in host:
            raise _bad(where, f"{text!r}: put an IPv6 address in brackets, as in [::1]:{DEFAULT_PORT}")
        _check_hostname(host, where, text)
        host = host.lower()
    if not port_text.isascii() or not port_text.isdigit():
        raise _bad(where, f"{text!r}: port {port_text!r} is not a number")
    port = int(port_text)
    low = 0 if allow_port_zero else 1
    if not low <= port <= 0xFFFF:
        raise _bad(where, f"{text!r}: port {port} is out of range {low}..65535")
    return HostPort(host, port)


def parse_network_pow(text: str, *, where: str = "NTPB:EXTRA") -> tuple[int, int]:
    """``NTPB:EXTRA``: the network minimum nonceTrialsPerByte and payloadLengthExtraBytes
    (both whole numbers >= 1; 1000:1000 on the real network)."""
    if not isinstance(text, str):
        raise _bad(where, f"expected a string NTPB:EXTRA, got {text!r}")
    parts = text.strip().split(":")
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts):
        raise _bad(where, f"{text!r}: expected NTPB:EXTRA, two whole numbers such as 1000:1000")
    ntpb, extra = int(parts[0]), int(parts[1])
    for name, value in (("NTPB", ntpb), ("EXTRA", extra)):
        if not 1 <= value <= _U64:
            raise _bad(where, f"{text!r}: {name} must be 1..{_U64}")
    return ntpb, extra


# ------------------------------------------------------------------------------ checkers

Checker = Callable[[Any, str], Any]


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise _bad(where, f"expected true or false, got {value!r}")


def _int_range(low: int, high: int) -> Checker:
    def check(value: Any, where: str) -> int:
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            value = int(value.strip())
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise _bad(where, f"expected a whole number {low}..{high}, got {value!r}")
        return value

    return check


def _path(value: Any, where: str) -> Path:
    if isinstance(value, (str, os.PathLike)) and str(value):
        return Path(value).expanduser().absolute()
    raise _bad(where, f"expected a directory path, got {value!r}")


def _listen(value: Any, where: str) -> HostPort:
    if isinstance(value, HostPort):
        value = str(value)
    return parse_host_port(value, where=where, allow_port_zero=True)


def _peers(value: Any, where: str) -> tuple[HostPort, ...]:
    if isinstance(value, (str, HostPort)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise _bad(where, f"expected a list of HOST:PORT strings, got {value!r}")
    return tuple(parse_host_port(str(v) if isinstance(v, HostPort) else v, where=where) for v in value)


def _network_pow(value: Any, where: str) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise _bad(where, f"expected NTPB:EXTRA or [NTPB, EXTRA], got {value!r}")
        value = f"{value[0]}:{value[1]}"
    return parse_network_pow(value, where=where)


def _log_level(value: Any, where: str) -> str:
    if isinstance(value, str) and value.strip().upper() in LOG_LEVELS:
        return value.strip().upper()
    raise _bad(where, f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")


def _streams(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise _bad(where, f"expected a non-empty list of stream numbers, got {value!r}")
    check = _int_range(1, MAX_STREAM)
    streams = tuple(check(v, where) for v in value)
    if len(set(streams)) != len(streams):
        raise _bad(where, f"stream listed twice in {list(streams)}")
    return streams


def _user_agent(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(where, f"expected a non-empty string, got {value!r}")
    if len(value.encode("utf-8")) > MAX_USER_AGENT_LENGTH:
        raise _bad(where, f"longer than {MAX_USER_AGENT_LENGTH} bytes")
    return value


def _api_user(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or ":" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise _bad(where, f"expected a non-empty user name without ':' or control characters, got {value!r}")
    return value


def _api_password(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise _bad(where, "expected a non-empty password without control characters")
    return value


def _api_notify_path(value: Any, where: str) -> str | None:
    """The apinotifypath program: a path or a name looked up in PATH; empty means none (as in the reference)."""
    if value is None:
        return None
    if not isinstance(value, str) or "\x00" in value or any(c in value for c in "\r\n"):
        raise _bad(where, f"expected the path of a program, got {value!r}")
    value = value.strip()
    return os.path.expanduser(value) if value else None


API_VARIANTS = ("legacy", "xml", "json")
_BACKEND = re.compile(r"^(?:auto|python|native|opencl(?::\d{1,3}(?::\d{1,3})?)?)$")


def _api_variant(value: Any, where: str) -> str:
    if isinstance(value, str) and value.strip().lower() in API_VARIANTS:
        return value.strip().lower()
    raise _bad(where, f"expected one of {', '.join(API_VARIANTS)}, got {value!r}")


def _pow_backend(value: Any, where: str) -> str:
    if isinstance(value, str) and _BACKEND.match(value.strip().lower()):
        return value.strip().lower()
    raise _bad(where, f"expected auto, python, native or opencl[:DEVICE], got {value!r}")


def _tcp_endpoints(value: Any, where: str) -> tuple[str, ...]:
    """ZeroMQ tcp endpoints to bind for remote PoW workers (tcp://HOST:PORT)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise _bad(where, f"expected a list of tcp://HOST:PORT endpoints, got {value!r}")
    out = []
    for v in value:
        if not isinstance(v, str) or not re.fullmatch(r"tcp://[^\s/]+:\d{1,5}", v.strip()):
            raise _bad(where, f"expected a tcp://HOST:PORT endpoint, got {v!r}")
        out.append(v.strip())
    return tuple(out)


def _file_path(value: Any, where: str) -> Path | None:
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)) and str(value).strip():
        return Path(str(value).strip()).expanduser().absolute()
    raise _bad(where, f"expected a file or folder path, got {value!r}")


def _optional(check: Checker) -> Checker:
    def wrapped(value: Any, where: str) -> Any:
        return None if value is None else check(value, where)

    return wrapped


SOCKS_PROXY_TYPES = ("none", "socks4a", "socks5")


def _socks_proxy_type(value: Any, where: str) -> str:
    """none, socks4a or socks5 (the reference's SOCKS4a / SOCKS5 spellings too)."""
    if isinstance(value, str) and value.strip().lower() in SOCKS_PROXY_TYPES:
        return value.strip().lower()
    raise _bad(where, f"expected one of {', '.join(SOCKS_PROXY_TYPES)}, got {value!r}")


def _socks_host(value: Any, where: str) -> str:
    """The proxy's address: an IPv4/IPv6 literal (brackets optional) or a host name."""
    if not isinstance(value, str) or not value.strip():
        raise _bad(where, f"expected the proxy's IP address or host name, got {value!r}")
    host = value.strip()
    try:
        return str(ipaddress.IPv6Address(host.strip("[]")))
    except ValueError:
        pass
    _check_hostname(host, where, value)
    return host.lower()


def _socks_credential(value: Any, where: str) -> str | None:
    """A SOCKS user name or password: 1-255 UTF-8 bytes, no NUL; empty means none (as the
    reference's keys.dat default)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or "\x00" in value or len(value.encode("utf-8")) > 255:
        raise _bad(where, "expected 1-255 bytes of text without NUL")
    return value


def _onion_hostname(value: Any, where: str) -> str | None:
    """This node's own onion service name (the reference's ``onionhostname``): 16 (Tor v2) or 56
    (Tor v3) base32 characters + ``.onion``, lower-cased; empty means none."""
    if value is None or value == "":
        return None
    try:
        if not isinstance(value, str):
            raise MalformedMessage(f"not text: {value!r}")
        encode_onion(value.strip())
    except MalformedMessage:
        raise _bad(
            where,
            f"expected this node's onion service name: 16 (Tor v2) or 56 (Tor v3) base32 characters "
            f"(a-z, 2-7) followed by .onion, as in Tor's hostname file; got {value!r}",
        ) from None
    return value.strip().lower()


#: Upper bound on --decrypt-workers and --pow-threads (sanity limits).
MAX_DECRYPT_WORKERS = 256
MAX_POW_THREADS = 1024

_CHECKERS: dict[str, Checker] = {
    "data_dir": _path,
    "listen": _listen,
    "peers": _peers,
    "bootstrap": _bool,
    "max_inbound": _int_range(0, MAX_INBOUND_LIMIT),
    "max_outbound": _int_range(0, MAX_OUTBOUND_LIMIT),
    "network_pow": _network_pow,
    "tls": _bool,
    "log_level": _log_level,
    "streams": _streams,
    "user_agent": _user_agent,
    "dandelion": _bool,
    "allow_private_peers": _bool,
    "lan_discovery": _bool,
    "api": _listen,
    "api_user": _api_user,
    "api_password": _api_password,
    "api_variant": _api_variant,
    "api_notify_path": _api_notify_path,
    "pow_backend": _pow_backend,
    "pow_threads": _optional(_int_range(1, MAX_POW_THREADS)),
    "decrypt_workers": _optional(_int_range(0, MAX_DECRYPT_WORKERS)),
    "pow_workers_bind": _tcp_endpoints,
    "pow_secret_key": _file_path,
    "pow_authorized_keys": _file_path,
    "pow_insecure": _bool,
    "socks_proxy_type": _socks_proxy_type,
    "socks_host": _socks_host,
    "socks_port": _int_range(1, 0xFFFF),
    "socks_username": _socks_credential,
    "socks_password": _socks_credential,
    "socks_authentication": _optional(_bool),
    "socks_listen": _bool,
    "onion_only": _bool,
    "onion_hostname": _onion_hostname,
    "onion_port": _optional(_int_range(1, 0xFFFF)),
}


# ------------------------------------------------------------------------------ the config


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/bmnode`` (when set to an absolute path), else ``~/.local/share/bmnode``."""
    env = os.environ if env is None else env
    xdg = env.get("XDG_DATA_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "bmnode"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "share" / "bmnode"


@dataclass(frozen=True)
class NodeConfig:
    """Every option of ``bmnode run``. Values are checked and normalised on construction
    (strings such as ``listen="127.0.0.1:0"`` or ``network_pow="10:10"`` are accepted)."""

    data_dir: Path
    #: Where to accept peers; port 0 = any free port.
    listen: HostPort = HostPort("0.0.0.0", DEFAULT_PORT)
    #: Peers to dial (and keep dialling) besides the known nodes.
    peers: tuple[HostPort, ...] = ()
    #: Seed the built-in bootstrap list and make the one-off bootstrap connection (12.3).
    bootstrap: bool = True
    max_inbound: int = DEFAULT_MAX_TOTAL_CONNECTIONS
    max_outbound: int = 8
    #: Network minimum (nonceTrialsPerByte, payloadLengthExtraBytes), demanded and performed.
    network_pow: tuple[int, int] = (NETWORK_MIN_NTPB, NETWORK_MIN_EXTRA)
    #: Offer NODE_SSL and upgrade to TLS when the peer offers it too (4.6).
    tls: bool = True
    log_level: str = "INFO"
    #: Streams joined (the reference joins only 1).
    streams: tuple[int, ...] = (1,)
    user_agent: str = USER_AGENT.decode("ascii")
    #: Dandelion++ (11): advertise NODE_DANDELION, stem our own and dinv-received objects.
    dandelion: bool = True
    #: Learn and dial private/loopback addresses (test networks on 127.0.0.1).
    allow_private_peers: bool = False
    #: LAN peer discovery over UDP port 8444 (12.4): announce ourselves every 60 s when
    #: listening on a non-loopback address without a proxy, and dial peers announcing on the LAN.
    lan_discovery: bool = True
    #: The XML-RPC API's address (port 0: any free port, written to ``api.json``).
    api: HostPort = HostPort("127.0.0.1", DEFAULT_API_PORT)
    #: HTTP Basic credentials of the API; no password: generated once, kept in ``api.toml``.
    api_user: str | None = None
    api_password: str | None = field(default=None, repr=False)
    #: ``legacy`` (the reference's JSON-string results), ``xml`` (native XML-RPC values) or
    #: ``json`` (JSON-RPC instead of XML-RPC, native values).
    api_variant: str = "legacy"
    #: The reference's ``apinotifypath``: a program run with one argument, ``startingUp``,
    #: ``newMessage`` or ``newBroadcast``, when the API starts or a message/broadcast arrives.
    api_notify_path: str | None = None
    #: PoW backend of the node's local PoW worker (auto, python, native, opencl[:DEVICE]).
    pow_backend: str = "auto"
    #: Threads of the native PoW backend (None: one per core).
    pow_threads: int | None = None
    #: Trial-decryption worker processes (0: in the mailbox process; None: one per spare core).
    decrypt_workers: int | None = None
    #: Extra tcp endpoints where remote PoW workers (``bmnode pow worker``) connect to the
    #: node's broker; none by default (the local worker uses ipc).
    pow_workers_bind: tuple[str, ...] = ()
    #: CURVE for those endpoints: the broker's NAME.key_secret (``bmnode pow keygen``) and the
    #: folder of the workers' public NAME.key files. Without them, only loopback binds are allowed
    #: unless ``pow_insecure`` is set.
    pow_secret_key: Path | None = None
    pow_authorized_keys: Path | None = None
    pow_insecure: bool = False
    #: Dial peers through a SOCKS proxy (the reference's ``socksproxytype``): none, socks4a
    #: or socks5 (Tor). With one, .onion peers are dialled and names resolve at the proxy.
    socks_proxy_type: str = "none"
    socks_host: str = "127.0.0.1"
    socks_port: int = 9050
    #: SOCKS5 user/password (RFC 1929); for SOCKS4a the user name is the user id.
    socks_username: str | None = None
    socks_password: str | None = field(default=None, repr=False)
    #: Send the credentials (the reference's ``socksauthentication``); None: when a user name is set.
    socks_authentication: bool | None = None
    #: Keep accepting inbound peers while proxied (the reference's ``sockslisten``; off by default).
    socks_listen: bool = False
    #: Dial onion services only (the reference's ``onionservicesonly``): needs the SOCKS proxy.
    onion_only: bool = False
    #: Our own Tor onion service (the reference's ``onionhostname``/``onionport``): when set, an
    #: onionpeer object announcing it is published (12.5). The port defaults to ``listen``'s.
    onion_hostname: str | None = None
    onion_port: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = _CHECKERS[f.name](getattr(self, f.name), f"NodeConfig.{f.name}")
            object.__setattr__(self, f.name, value)
        self._check_socks()
        if self.onion_hostname is not None and self.onion_port is None and self.listen.port == 0:
            raise _bad("--onion-port", "is needed with --onion-hostname when --listen has port 0 (any free port)")

    @property
    def onion_peer(self) -> tuple[str, int] | None:
        """(onion name, port) this node announces as an onion service, or None."""
        if self.onion_hostname is None:
            return None
        return self.onion_hostname, self.onion_port if self.onion_port is not None else self.listen.port

    def _check_socks(self) -> None:
        """Cross-checks of the proxy options (each value alone is already checked)."""
        if self.socks_proxy_type == "none":
            if self.onion_only:
                raise _bad("--onion-only", "onion services are reached only through Tor; set --socks-proxy-type socks5")
            onions = [str(p) for p in self.peers if p.host.endswith(".onion")]
            if onions:
                raise _bad("--peer", f"{', '.join(onions)}: .onion peers are reached only through Tor; "
                           "set --socks-proxy-type socks5 (and --socks-host/--socks-port of Tor's SOCKS port)")
            return
        auth = self.socks_authentication
        if auth and self.socks_username is None:
            raise _bad("socks_authentication", "is on but no --socks-username is set")
        if self.socks_password is not None and auth is not False:
            if self.socks_username is None:
                raise _bad("--socks-password", "a password needs --socks-username too")
            if self.socks_proxy_type == "socks4a":
                raise _bad(
                    "--socks-password", "SOCKS4a has no passwords (only a user id); use --socks-proxy-type socks5"
                )

    @property
    def config_file(self) -> Path:
        return self.data_dir / CONFIG_FILE

    @property
    def inventory_path(self) -> Path:
        return self.data_dir / "inventory.sqlite"

    @property
    def knownnodes_path(self) -> Path:
        return self.data_dir / "knownnodes.sqlite"

    @property
    def ntpb(self) -> int:
        return self.network_pow[0]

    @property
    def extra(self) -> int:
        return self.network_pow[1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (for logs and ``--print-config`` style output)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Path):
                v = str(v)
            elif isinstance(v, HostPort):
                v = str(v)
            elif f.name == "peers":
                v = [str(p) for p in v]
            elif f.name == "network_pow":
                v = f"{v[0]}:{v[1]}"
            elif isinstance(v, tuple):
                v = list(v)
            elif f.name in ("api_password", "socks_password") and v is not None:
                v = "(set)"  # never printed
            out[f.name] = v
        return out


#: Option -> its command-line flag (the options without a flag are set in the file only).
FLAGS: dict[str, str] = {
    "data_dir": "--data-dir",
    "listen": "--listen",
    "peers": "--peer",
    "bootstrap": "--no-bootstrap",
    "max_inbound": "--max-inbound",
    "max_outbound": "--max-outbound",
    "network_pow": "--network-pow",
    "tls": "--no-tls",
    "log_level": "--log-level",
    "dandelion": "--no-dandelion",
    "allow_private_peers": "--allow-private-peers",
    "lan_discovery": "--no-lan-discovery",
    "api": "--api",
    "api_user": "--api-user",
    "api_password": "--api-password",
    "api_variant": "--api-variant",
    "api_notify_path": "--api-notify-path",
    "pow_backend": "--pow-backend",
    "pow_threads": "--pow-threads",
    "decrypt_workers": "--decrypt-workers",
    "pow_workers_bind": "--pow-workers-bind",
    "pow_secret_key": "--pow-secret-key",
    "pow_authorized_keys": "--pow-authorized-keys",
    "pow_insecure": "--pow-insecure",
    "socks_proxy_type": "--socks-proxy-type",
    "socks_host": "--socks-host",
    "socks_port": "--socks-port",
    "socks_username": "--socks-username",
    "socks_password": "--socks-password",
    "socks_listen": "--socks-listen",
    "onion_only": "--onion-only",
    "onion_hostname": "--onion-hostname",
    "onion_port": "--onion-port",
}

#: File keys besides the option names: alias -> (option, negated).
_ALIASES: dict[str, tuple[str, bool]] = {
    "peer": ("peers", False),
    "no_bootstrap": ("bootstrap", True),
    "no_tls": ("tls", True),
    "no_dandelion": ("dandelion", True),
    "no_lan_discovery": ("lan_discovery", True),
    "udp": ("lan_discovery", False),  # the reference's keys.dat name
    "apinotifypath": ("api_notify_path", False),  # the reference's keys.dat name
    "apivariant": ("api_variant", False),
    # The reference's keys.dat names of the proxy settings.
    "socksproxytype": ("socks_proxy_type", False),
    "sockshostname": ("socks_host", False),
    "socksport": ("socks_port", False),
    "socksusername": ("socks_username", False),
    "sockspassword": ("socks_password", False),
    "socksauthentication": ("socks_authentication", False),
    "sockslisten": ("socks_listen", False),
    "onionservicesonly": ("onion_only", False),
    "onionhostname": ("onion_hostname", False),
    "onionport": ("onion_port", False),
}


def _read_file(path: Path) -> dict[str, Any]:
    """The options set in ``path`` (checked), or {} when the file does not exist."""
    if not path.exists():
        return {}
    try:
        with path.open("rb") as fp:
            doc = tomllib.load(fp)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from exc
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, raw in doc.items():
        where = f"{path}: key {key!r}"
        name = key.replace("-", "_")
        negated = False
        if name in _ALIASES:
            name, negated = _ALIASES[name]
        if name == "data_dir":
            raise _bad(where, "the data directory cannot be set in its own config file; use --data-dir")
        if name not in _CHECKERS:
            known = sorted(set(_CHECKERS) - {"data_dir"} | set(_ALIASES))
            raise _bad(where, f"unknown key (known keys: {', '.join(known)})")
        value = _CHECKERS[name](raw, where)
        if negated:
            value = not value
        if name in values and values[name] != value:
            raise _bad(where, f"contradicts key {origin[name]!r} set earlier in the file")
        values[name] = value
        origin[name] = key
    return values


def load_config(
    data_dir: str | Path | None = None,
    cli_overrides: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> NodeConfig:
    """Defaults, then ``bmnode.toml`` in the data directory (if present), then
    ``cli_overrides`` (option name -> value as given on the command line; None = not given).
    ``data_dir`` None means :func:`default_data_dir`. A flag replaces the file's value
    (``--peer`` replaces the file's ``peers`` list)."""
    overrides = dict(cli_overrides or {})
    for name in overrides:
        if name not in _CHECKERS:
            raise ConfigError(f"unknown option {name!r} passed to load_config")
    if overrides.get("data_dir") is not None:
        data_dir = overrides["data_dir"]
    overrides.pop("data_dir", None)
    base = _path(data_dir, "--data-dir") if data_dir is not None else default_data_dir(env)
    values = _read_file(base / CONFIG_FILE)
    for name, raw in overrides.items():
        if raw is None:
            continue
        where = FLAGS.get(name, name)
        values[name] = _CHECKERS[name](raw, where)
    return NodeConfig(data_dir=base, **values)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the flags of ``bmnode run`` (every default None = "not given": the file or the
    built-in default applies). Values are checked by :func:`load_config`, not by argparse,
    so a bad one raises ConfigError naming the flag."""
    parser.add_argument("--data-dir", metavar="DIR", default=None, help="data directory (default: per-user, XDG)")
    parser.add_argument("--listen", metavar="HOST:PORT", default=None, help="listen address (default 0.0.0.0:8444)")
    parser.add_argument(
        "--peer", dest="peers", metavar="HOST:PORT", action="append", default=None, help="dial this peer (repeatable)"
    )
    parser.add_argument(
        "--no-bootstrap", dest="bootstrap", action="store_const", const=False, default=None,
        help="never use the built-in bootstrap list",
    )
    parser.add_argument("--max-inbound", metavar="N", default=None, help="inbound connection limit (default 200)")
    parser.add_argument("--max-outbound", metavar="N", default=None, help="outbound connections, 0-8 (default 8)")
    parser.add_argument(
        "--network-pow", metavar="NTPB:EXTRA", default=None,
        help="network minimum PoW difficulty, demanded and performed (default 1000:1000)",
    )
    parser.add_argument(
        "--no-tls", dest="tls", action="store_const", const=False, default=None, help="do not offer TLS"
    )
    parser.add_argument("--log-level", metavar="LEVEL", default=None, help="DEBUG, INFO, WARNING, ERROR or CRITICAL")
    parser.add_argument(
        "--no-dandelion", dest="dandelion", action="store_const", const=False, default=None,
        help="disable Dandelion++ stem propagation",
    )
    parser.add_argument(
        "--allow-private-peers", dest="allow_private_peers", action="store_const", const=True, default=None,
        help="learn and dial private/loopback addresses (test networks)",
    )
    parser.add_argument(
        "--no-lan-discovery", dest="lan_discovery", action="store_const", const=False, default=None,
        help="neither announce this node on the LAN (UDP broadcast to port 8444 every 60 s) nor dial peers "
        "announced there",
    )
    parser.add_argument(
        "--api", metavar="HOST:PORT", default=None,
        help=f"XML-RPC API address (default 127.0.0.1:{DEFAULT_API_PORT}; port 0: any free port, see api.json)",
    )
    parser.add_argument("--api-user", metavar="USER", default=None, help="API user name (default bmnode)")
    parser.add_argument(
        "--api-password", metavar="PASSWORD", default=None,
        help="API password (default: generated on first start and stored in api.toml in the data directory)",
    )
    parser.add_argument(
        "--api-variant", metavar="VARIANT", default=None,
        help="legacy (XML-RPC with JSON-string results, what existing tools expect; default), xml (XML-RPC, "
        "native values) or json (JSON-RPC 2.0 as the reference's apivariant=json, native values)",
    )
    parser.add_argument(
        "--api-notify-path", metavar="PROGRAM", default=None,
        help="the reference's apinotifypath: run PROGRAM (no shell) with one argument, startingUp when the API "
        "starts, newMessage when a message arrives in the inbox, newBroadcast when a broadcast arrives; "
        "never waited for (a failure is only logged)",
    )
    parser.add_argument(
        "--pow-backend", metavar="NAME", default=None, help="auto (default), python, native or opencl[:DEVICE]"
    )
    parser.add_argument("--pow-threads", metavar="N", default=None, help="threads of the native PoW backend")
    parser.add_argument(
        "--decrypt-workers", metavar="N", default=None,
        help="trial-decryption worker processes (default: one per spare core, 1-8; 0: none)",
    )
    parser.add_argument(
        "--pow-workers-bind", metavar="tcp://HOST:PORT", action="append", default=None,
        help="also accept remote PoW workers (bmnode pow worker) here (repeatable); a non-loopback "
        "address needs --pow-secret-key and --pow-authorized-keys (CURVE) or --pow-insecure",
    )
    parser.add_argument(
        "--pow-secret-key", metavar="FILE", default=None,
        help="the PoW broker's CURVE secret key (NAME.key_secret from bmnode pow keygen)",
    )
    parser.add_argument(
        "--pow-authorized-keys", metavar="DIR", default=None,
        help="folder of the public NAME.key files of the remote PoW workers allowed in",
    )
    parser.add_argument(
        "--pow-insecure", dest="pow_insecure", action="store_const", const=True, default=None,
        help="allow --pow-workers-bind on a non-loopback address without CURVE (anyone reaching it can pose as a worker)",
    )
    parser.add_argument(
        "--socks-proxy-type", metavar="TYPE", default=None,
        help="dial peers through a SOCKS proxy: none (default), socks4a or socks5 (Tor); .onion peers need one, "
        "and host names are then resolved by the proxy",
    )
    parser.add_argument(
        "--socks-host", metavar="HOST", default=None, help="the SOCKS proxy's address (default 127.0.0.1)"
    )
    parser.add_argument("--socks-port", metavar="PORT", default=None, help="the SOCKS proxy's port (default 9050, Tor)")
    parser.add_argument(
        "--socks-username", metavar="USER", default=None,
        help="SOCKS5 user name (RFC 1929 user/password authentication); for socks4a, the user id",
    )
    parser.add_argument(
        "--socks-password", metavar="PASSWORD", default=None, help="SOCKS5 password (with --socks-username)"
    )
    parser.add_argument(
        "--socks-listen", dest="socks_listen", action="store_const", const=True, default=None,
        help="keep accepting inbound peers on --listen while a SOCKS proxy is set (off by default, as the reference)",
    )
    parser.add_argument(
        "--onion-only", dest="onion_only", action="store_const", const=True, default=None,
        help="dial onion services only, never a peer's IP address (the reference's onionservicesonly; "
        "needs --socks-proxy-type)",
    )
    parser.add_argument(
        "--onion-hostname", metavar="NAME.onion", default=None,
        help="this node's Tor onion service (16 or 56 base32 characters + .onion, from Tor's hostname file): "
        "publish an onionpeer object announcing it, renewed while the node runs",
    )
    parser.add_argument(
        "--onion-port", metavar="PORT", default=None,
        help="the onion service's virtual port announced with --onion-hostname (default: the --listen port)",
    )


def config_from_args(args: argparse.Namespace, *, env: Mapping[str, str] | None = None) -> NodeConfig:
    """The NodeConfig for a ``bmnode run`` namespace built with :func:`add_run_arguments`."""
    overrides = {name: getattr(args, name, None) for name in FLAGS}
    return load_config(overrides.pop("data_dir"), overrides, env=env)
