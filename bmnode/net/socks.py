"""Outbound connections through a SOCKS4a or SOCKS5 proxy (Tor), the reference's ``socksproxytype``.

:class:`Socks5Handshake` (RFC 1928, user/password auth of RFC 1929) and
:class:`Socks4aHandshake` are sans-I/O: they say which bytes to send and how many to read
next, and turn every proxy answer into a result or a :class:`ProxyError` whose message says
what the proxy meant. Host names (DNS and ``.onion``) always travel to the proxy as names,
so nothing is resolved locally. :func:`open_via_proxy` drives a handshake over a non-blocking
socket and returns it connected to the target, ready for ``loop.create_connection(sock=...)``;
the caller bounds its time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from dataclasses import dataclass, field

from bmnode.errors import BmnodeError

#: Values of the proxy-type setting ("none" = direct connections).
PROXY_TYPES = ("none", "socks4a", "socks5")
#: Tor's SOCKS port, the reference's default ``socksport``.
DEFAULT_SOCKS_PORT = 9050
#: RFC 1929: user name and password are 1..255 bytes each.
MAX_CREDENTIAL = 255
#: RFC 1928: a domain name travels with a one-byte length.
MAX_DOMAIN = 255

#: RFC 1928 reply codes (REP), plus the 0xF0-0xF7 onion-service codes of Tor's ExtendedErrors.
SOCKS5_REPLIES: dict[int, str] = {
    0x01: "general SOCKS server failure",
    0x02: "connection not allowed by the proxy's ruleset",
    0x03: "network unreachable",
    0x04: "host unreachable",
    0x05: "connection refused by the target",
    0x06: "TTL expired (the target did not answer in time)",
    0x07: "command not supported by the proxy",
    0x08: "address type not supported by the proxy",
    0xF0: "onion service descriptor not found (the .onion is unknown or offline)",
    0xF1: "onion service descriptor is invalid",
    0xF2: "onion service introduction failed",
    0xF3: "onion service rendezvous failed",
    0xF4: "onion service needs client authorization",
    0xF5: "onion service client authorization is wrong",
    0xF6: "invalid .onion address",
    0xF7: "onion service introduction timed out",
}

#: SOCKS4 reply codes (CD); 0x5A is "granted".
SOCKS4_REPLIES: dict[int, str] = {
    0x5B: "request rejected or failed",
    0x5C: "request rejected: the proxy cannot reach identd on this machine",
    0x5D: "request rejected: identd reports a different user id",
}

_NO_AUTH = 0x00
_USER_PASS = 0x02
_NO_ACCEPTABLE = 0xFF


class ProxyError(BmnodeError, ConnectionError):
    """A dial through the SOCKS proxy failed; the message says why (proxy down, refused,
    bad credentials, not a SOCKS proxy). A ConnectionError, so it is one more failed dial."""


class ProxyRefused(ProxyError):
    """The proxy works but could not reach the target (the reply code's meaning is in the
    message): the peer's failure, not the proxy's."""


@dataclass(frozen=True)
class ProxySettings:
    """Where the proxy is and how to talk to it. ``kind`` is ``socks4a`` or ``socks5``; a
    ``username`` (SOCKS4a: the user id) and ``password`` (SOCKS5 only) are optional."""

    kind: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_SOCKS_PORT
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ("socks4a", "socks5"):
            raise ValueError(f"proxy kind must be socks4a or socks5, not {self.kind!r}")
        if self.kind == "socks4a" and self.password is not None:
            raise ValueError("SOCKS4a has no passwords (only a user id): use socks5")
        if self.password is not None and self.username is None:
            raise ValueError("a SOCKS password needs a user name")

    def __str__(self) -> str:
        name = "SOCKS5" if self.kind == "socks5" else "SOCKS4a"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{name} proxy {host}:{self.port}"

    def handshake(self, host: str, port: int) -> "Socks5Handshake | Socks4aHandshake":
        """A fresh handshake asking this proxy to connect to ``host:port``."""
        if self.kind == "socks5":
            return Socks5Handshake(host, port, self.username, self.password)
        return Socks4aHandshake(host, port, self.username)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _credential(value: str | None, what: str) -> bytes | None:
    if value is None:
        return None
    raw = value.encode("utf-8")
    if not 1 <= len(raw) <= MAX_CREDENTIAL:
        raise ProxyError(f"the SOCKS {what} must be 1..{MAX_CREDENTIAL} bytes, got {len(raw)}")
    return raw


def _check_port(port: int) -> int:
    if not isinstance(port, int) or not 0 < port <= 0xFFFF:
        raise ProxyError(f"port {port!r} cannot be asked of a SOCKS proxy (1..65535)")
    return port


def _name_bytes(host: str) -> bytes:
    try:
        return host.encode("ascii")
    except UnicodeEncodeError:
        raise ProxyError(f"host name {host!r} is not ASCII (use its xn-- form)") from None


def _hex(data: bytes) -> str:
    return data[:16].hex() or "nothing"


class Socks5Handshake:
    """RFC 1928 CONNECT, with RFC 1929 user/password when a user name is given. IPv4 and
    IPv6 literals go as addresses, anything else (DNS names, .onion) as a domain name."""

    def __init__(self, host: str, port: int, username: str | None = None, password: str | None = None) -> None:
        self.host = host
        self.port = _check_port(port)
        self._user = _credential(username, "user name")
        # RFC 1929 allows an empty password (PLEN 0); only the user name must be non-empty.
        self._password = password.encode("utf-8") if password and self._user is not None else b""
        if len(self._password) > MAX_CREDENTIAL:
            raise ProxyError(f"the SOCKS password must be at most {MAX_CREDENTIAL} bytes")
        self.request = self._connect_request()
        self.done = False
        self.bound: tuple[str, int] | None = None
        self._state = "method"
        self._want = 2
        self._bound_is_name = False

    def _connect_request(self) -> bytes:
        ip = _ip(self.host)
        if isinstance(ip, ipaddress.IPv4Address):
            addr = b"\x01" + ip.packed
        elif isinstance(ip, ipaddress.IPv6Address):
            addr = b"\x04" + ip.packed
        else:
            name = _name_bytes(self.host)
            if not 1 <= len(name) <= MAX_DOMAIN:
                raise ProxyError(f"host name {self.host!r} is too long for SOCKS5 (at most {MAX_DOMAIN} bytes)")
            addr = b"\x03" + bytes([len(name)]) + name
        return b"\x05\x01\x00" + addr + struct.pack(">H", self.port)

    def start(self) -> bytes:
        """The greeting: the authentication methods we offer."""
        if self._user is not None:
            return bytes([5, 2, _NO_AUTH, _USER_PASS])
        return bytes([5, 1, _NO_AUTH])

    def want(self) -> int:
        """How many bytes :meth:`feed` needs next (exactly)."""
        return self._want

    def feed(self, data: bytes) -> bytes:
        """Take the ``want()`` bytes read from the proxy; return what to send next (maybe
        nothing). Raises ProxyError with the proxy's meaning when it refuses."""
        if len(data) != self._want or self.done:
            raise ProxyError(f"internal: fed {len(data)} bytes, {self._want} expected")
        state = self._state
        if state == "method":
            if data[0] != 5:
                raise ProxyError(f"not a SOCKS5 proxy (it answered 0x{_hex(data)})")
            method = data[1]
            if method == _NO_AUTH:
                return self._send_connect()
            if method == _USER_PASS and self._user is not None:
                self._state, self._want = "auth", 2
                return (
                    b"\x01" + bytes([len(self._user)]) + self._user + bytes([len(self._password)]) + self._password
                )
            if method == _USER_PASS or method == _NO_ACCEPTABLE:
                if self._user is None:
                    raise ProxyError(
                        "the proxy requires a user name and password: set --socks-username and --socks-password"
                    )
                raise ProxyError("the proxy accepts none of the offered authentication methods")
            raise ProxyError(f"the proxy chose authentication method 0x{method:02x}, which was not offered")
        if state == "auth":
            if data[0] != 1:
                raise ProxyError(f"malformed authentication answer from the proxy (0x{_hex(data)})")
            if data[1] != 0:
                raise ProxyError("the proxy rejected the user name or password")
            return self._send_connect()
        if state == "reply":
            if data[0] != 5:
                raise ProxyError(f"not a SOCKS5 answer to CONNECT (0x{_hex(data)})")
            rep = data[1]
            if rep != 0:
                reason = SOCKS5_REPLIES.get(rep, f"unknown SOCKS5 error 0x{rep:02x}")
                raise ProxyRefused(f"the proxy could not connect to {self._target()}: {reason}")
            atyp = data[3]
            if atyp == 1:
                self._state, self._want = "bound", 4 + 2
            elif atyp == 4:
                self._state, self._want = "bound", 16 + 2
            elif atyp == 3:
                self._state, self._want, self._bound_is_name = "bound_len", 1, True
            else:
                raise ProxyError(f"malformed SOCKS5 reply: bound address type 0x{atyp:02x}")
            return b""
        if state == "bound_len":
            if data[0] == 0:
                raise ProxyError("malformed SOCKS5 reply: empty bound host name")
            self._state, self._want = "bound", data[0] + 2
            return b""
        if state == "bound":
            raw, port = data[:-2], struct.unpack(">H", data[-2:])[0]
            host = raw.decode("ascii", "replace") if self._bound_is_name else str(ipaddress.ip_address(raw))
            self.bound = (host, port)
            self.done = True
            self._want = 0
            return b""
        raise ProxyError(f"internal: unknown state {state!r}")

    def _send_connect(self) -> bytes:
        self._state, self._want = "reply", 4
        return self.request

    def _target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class Socks4aHandshake:
    """SOCKS4 CONNECT for an IPv4 literal, SOCKS4a (the name after the user id) for anything
    else, so names are resolved by the proxy. ``username`` is the SOCKS4 user id."""

    def __init__(self, host: str, port: int, username: str | None = None) -> None:
        self.host = host
        self.port = _check_port(port)
        user = _credential(username, "user id") or b""
        if b"\x00" in user:
            raise ProxyError("the SOCKS4a user id cannot contain a NUL byte")
        ip = _ip(host)
        if isinstance(ip, ipaddress.IPv4Address):
            self.request = struct.pack(">BBH", 4, 1, self.port) + ip.packed + user + b"\x00"
        else:
            # IPv6 literals go as a name too (SOCKS4 has no IPv6 form; Tor accepts them).
            name = _name_bytes(str(ip) if ip is not None else host)
            if not name or b"\x00" in name or len(name) > MAX_DOMAIN:
                raise ProxyError(f"host name {host!r} cannot be sent to a SOCKS4a proxy")
            self.request = struct.pack(">BBH", 4, 1, self.port) + b"\x00\x00\x00\x01" + user + b"\x00" + name + b"\x00"
        self.done = False
        self.bound: tuple[str, int] | None = None

    def start(self) -> bytes:
        """The CONNECT request (SOCKS4a has no separate greeting)."""
        return self.request

    def want(self) -> int:
        return 0 if self.done else 8

    def feed(self, data: bytes) -> bytes:
        """Take the 8-byte reply; raises ProxyError unless the request was granted."""
        if len(data) != 8 or self.done:
            raise ProxyError(f"internal: fed {len(data)} bytes, 8 expected")
        if data[0] != 0:
            raise ProxyError(f"not a SOCKS4 proxy (it answered 0x{_hex(data)})")
        cd = data[1]
        if cd != 0x5A:
            reason = SOCKS4_REPLIES.get(cd, f"unknown SOCKS4 error 0x{cd:02x}")
            target = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
            raise ProxyRefused(f"the proxy could not connect to {target}: {reason}")
        self.bound = (str(ipaddress.IPv4Address(data[4:8])), struct.unpack(">H", data[2:4])[0])
        self.done = True
        return b""


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int, proxy: ProxySettings) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, n - len(buf))
        if not chunk:
            got = f" after 0x{bytes(buf).hex()}" if buf else ""
            raise ProxyError(f"the {proxy} closed the connection during the SOCKS handshake{got}")
        buf += chunk
    return bytes(buf)


async def _connect_to_proxy(loop: asyncio.AbstractEventLoop, proxy: ProxySettings) -> socket.socket:
    try:
        infos = await loop.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ProxyError(f"cannot resolve the {proxy}: {exc}") from exc
    last: OSError | None = None
    for family, type_, proto, _, addr in infos:
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, addr)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    reason = last.strerror if last is not None and last.strerror else str(last)
    raise ProxyError(f"the {proxy} is not reachable: {reason} (is Tor / the proxy running?)")


async def open_via_proxy(proxy: ProxySettings, host: str, port: int) -> socket.socket:
    """A non-blocking socket connected to ``host:port`` through ``proxy`` (the target's name
    is resolved by the proxy). Raises ProxyError; wrap it in a timeout."""
    handshake = proxy.handshake(host, port)
    loop = asyncio.get_running_loop()
    sock = await _connect_to_proxy(loop, proxy)
    try:
        await loop.sock_sendall(sock, handshake.start())
        while not handshake.done:
            out = handshake.feed(await _recv_exactly(loop, sock, handshake.want(), proxy))
            if out:
                await loop.sock_sendall(sock, out)
    except ProxyError:
        sock.close()
        raise
    except OSError as exc:
        sock.close()
        raise ProxyError(f"the {proxy} failed during the SOCKS handshake: {exc}") from exc
    except BaseException:
        sock.close()
        raise
    return sock


__all__ = [
    "DEFAULT_SOCKS_PORT",
    "PROXY_TYPES",
    "ProxyError",
    "ProxyRefused",
    "ProxySettings",
    "SOCKS4_REPLIES",
    "SOCKS5_REPLIES",
    "Socks4aHandshake",
    "Socks5Handshake",
    "open_via_proxy",
]
