"""Outbound peers through a SOCKS proxy (Tor), as the reference's socksproxytype: the SOCKS5 and
SOCKS4a handshakes byte by byte, a real node dialling a real relay node through a small
SOCKS server written here (TLS on, objects relayed both ways, names and .onion handed to the
proxy as names), every failure mode ending in a clean failed dial, onion peers never dialled
without a proxy, and the settings. Loopback only; every test is bounded in time."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bmnode.errors import ConfigError
from bmnode.net.bootstrap import BOOTSTRAP_NAMES, BOOTSTRAP_ONION
from bmnode.net.settings import settings_from_config
from bmnode.net.socks import (
    ProxyError,
    ProxyRefused,
    ProxySettings,
    SOCKS5_REPLIES,
    Socks4aHandshake,
    Socks5Handshake,
)
from bmnode.net.testnet import LOOPBACK, make_object, start_node, stop_all, wait_for
from bmnode.net.tls import tls_available
from bmnode.node.config import HostPort, NodeConfig, add_run_arguments, config_from_args, load_config
from bmnode.protocol.hashing import inventory_hash

TIMEOUT = 60
ONION = "quzwelsuziwqgpt2.onion"


def run(coro, timeout: float = TIMEOUT):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def socks5_through(hs: Socks5Handshake, answers: list[bytes]) -> list[bytes]:
    """Drive a SOCKS5 handshake with canned proxy answers; the bytes it sent, in order."""
    sent = [hs.start()]
    for a in answers:
        assert len(a) == hs.want()
        out = hs.feed(a)
        if out:
            sent.append(out)
    return sent


# ============================================================================ sans-I/O handshakes


def test_socks5_connect_by_name_ipv4_ipv6():
    ok = b"\x05\x00\x00\x01"
    hs = Socks5Handshake(ONION, 8444)
    sent = socks5_through(hs, [b"\x05\x00", ok, b"\x7f\x00\x00\x01\x1f\x90"])
    name = ONION.encode()
    assert sent == [b"\x05\x01\x00", b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack(">H", 8444)]
    assert hs.done and hs.bound == ("127.0.0.1", 8080)
    hs = Socks5Handshake("203.0.113.7", 8444)
    sent = socks5_through(hs, [b"\x05\x00", ok, bytes(6)])
    assert sent[1] == b"\x05\x01\x00\x01" + bytes([203, 0, 113, 7]) + struct.pack(">H", 8444)
    hs = Socks5Handshake("2001:db8::1", 1)
    sent = socks5_through(hs, [b"\x05\x00", b"\x05\x00\x00\x04", bytes(16) + b"\x00\x02"])
    assert sent[1] == b"\x05\x01\x00\x04" + socket.inet_pton(socket.AF_INET6, "2001:db8::1") + b"\x00\x01"
    assert hs.bound == ("::", 2)
    # A bound address given as a name (ATYP 3) is read with its length byte.
    hs = Socks5Handshake("a.example", 9)
    socks5_through(hs, [b"\x05\x00", b"\x05\x00\x00\x03", b"\x04", b"host\x00\x07"])
    assert hs.done and hs.bound == ("host", 7)


def test_socks5_user_password_rfc1929():
    hs = Socks5Handshake("peer.example", 8444, "alice", "s3cret")
    sent = socks5_through(hs, [b"\x05\x02", b"\x01\x00", b"\x05\x00\x00\x01", bytes(6)])
    assert sent[0] == b"\x05\x02\x00\x02"  # offers no-auth and user/password
    assert sent[1] == b"\x01\x05alice\x06s3cret"
    assert sent[2].startswith(b"\x05\x01\x00\x03\x0cpeer.example")
    # The proxy may still pick no-auth: then no credentials are sent.
    hs = Socks5Handshake("peer.example", 8444, "alice", "s3cret")
    sent = socks5_through(hs, [b"\x05\x00", b"\x05\x00\x00\x01", bytes(6)])
    assert b"alice" not in b"".join(sent)


@pytest.mark.parametrize(
    "answers, match, refused",
    [
        ([b"\x05\xff"], "requires a user name and password", False),
        ([b"\x05\x02"], "requires a user name and password", False),
        ([b"\x05\x01"], "method 0x01, which was not offered", False),
        ([b"HT"], "not a SOCKS5 proxy", False),
        ([b"\x05\x00", b"HTTP"], "not a SOCKS5 answer", False),
        ([b"\x05\x00", b"\x05\x00\x00\x09"], "bound address type 0x09", False),
        ([b"\x05\x00", b"\x05\x00\x00\x03", b"\x00"], "empty bound host name", False),
        ([b"\x05\x00", b"\x05\x42\x00\x01"], "unknown SOCKS5 error 0x42", True),
    ],
)
def test_socks5_failures_are_explained(answers, match, refused):
    hs = Socks5Handshake("peer.example", 8444)
    with pytest.raises(ProxyError, match=match) as err:
        socks5_through(hs, answers)
    assert isinstance(err.value, ProxyRefused) is refused
    assert isinstance(err.value, ConnectionError)  # one more failed dial for the node


@pytest.mark.parametrize("code", sorted(SOCKS5_REPLIES))
def test_every_socks5_reply_code_has_its_reason(code):
    hs = Socks5Handshake(ONION, 8444)
    with pytest.raises(ProxyRefused) as err:
        socks5_through(hs, [b"\x05\x00", bytes([5, code, 0, 1])])
    assert SOCKS5_REPLIES[code] in str(err.value) and f"{ONION}:8444" in str(err.value)


def test_socks5_bad_credentials_and_targets():
    hs = Socks5Handshake("peer.example", 8444, "alice", "wrong")
    with pytest.raises(ProxyError, match="rejected the user name or password"):
        socks5_through(hs, [b"\x05\x02", b"\x01\x01"])
    with pytest.raises(ProxyError, match="too long"):
        Socks5Handshake("a" * 256, 1)
    with pytest.raises(ProxyError, match="1..255 bytes"):
        Socks5Handshake("peer.example", 1, "u" * 256)
    with pytest.raises(ProxyError, match="not ASCII"):
        Socks5Handshake("bücher.example", 1)
    with pytest.raises(ProxyError, match="port"):
        Socks5Handshake("peer.example", 0)


def test_socks4a_requests_and_replies():
    hs = Socks4aHandshake("203.0.113.7", 8444)
    assert hs.start() == b"\x04\x01" + struct.pack(">H", 8444) + bytes([203, 0, 113, 7]) + b"\x00"
    hs = Socks4aHandshake(ONION, 8444, "me")
    assert hs.start() == b"\x04\x01" + struct.pack(">H", 8444) + b"\x00\x00\x00\x01me\x00" + ONION.encode() + b"\x00"
    assert hs.want() == 8 and hs.feed(b"\x00\x5a\x00\x00\x00\x00\x00\x00") == b"" and hs.done
    for code, text in ((0x5B, "rejected or failed"), (0x5C, "identd"), (0x5D, "different user id"), (0x60, "0x60")):
        with pytest.raises(ProxyRefused, match=text):
            Socks4aHandshake(ONION, 8444).feed(bytes([0, code]) + bytes(6))
    with pytest.raises(ProxyError, match="not a SOCKS4 proxy"):
        Socks4aHandshake(ONION, 8444).feed(b"HTTP/1.0")


def test_proxy_settings_checks():
    assert str(ProxySettings("socks5")) == "SOCKS5 proxy 127.0.0.1:9050"
    assert str(ProxySettings("socks4a", "::1", 1080)) == "SOCKS4a proxy [::1]:1080"
    with pytest.raises(ValueError):
        ProxySettings("http")
    with pytest.raises(ValueError, match="SOCKS4a has no passwords"):
        ProxySettings("socks4a", username="u", password="p")
    assert "secret" not in repr(ProxySettings("socks5", username="u", password="secret"))


# ============================================================================ a SOCKS server for tests


@dataclass
class FakeProxy:
    """A small SOCKS4a/SOCKS5 server on 127.0.0.1 that records every CONNECT and relays to
    ``upstream`` (whatever the target), or misbehaves as ``mode`` says: ok, refuse (SOCKS
    reply ``refuse_code``), garbage, stall."""

    upstream: int = 0
    mode: str = "ok"
    refuse_code: int = 5
    credentials: tuple[str, str] | None = None
    requests: list[dict] = field(default_factory=list)
    server: asyncio.AbstractServer | None = None
    port: int = 0
    tasks: set = field(default_factory=set)

    async def start(self) -> "FakeProxy":
        self.server = await asyncio.start_server(self._client, LOOPBACK, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.sleep(0)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.tasks.add(asyncio.current_task())
        try:
            first = await reader.readexactly(1)
            if self.mode == "stall":
                await asyncio.sleep(3600)
            if self.mode == "garbage":
                writer.write(b"HTTP/1.0 400 Bad Request\r\n\r\n")
                await writer.drain()
                return
            if first == b"\x05":
                ok = await self._socks5(reader, writer)
            else:
                ok = await self._socks4(first, reader, writer)
            if ok:
                await self._relay(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self.tasks.discard(asyncio.current_task())

    async def _socks5(self, reader, writer) -> bool:
        n = (await reader.readexactly(1))[0]
        methods = await reader.readexactly(n)
        req: dict = {"version": 5, "methods": methods}
        if self.credentials is not None:
            if 2 not in methods:
                writer.write(b"\x05\xff")
                self.requests.append(req)
                return False
            writer.write(b"\x05\x02")
            ver, ulen = await reader.readexactly(2)
            user = (await reader.readexactly(ulen)).decode()
            plen = (await reader.readexactly(1))[0]
            password = (await reader.readexactly(plen)).decode()
            req.update(user=user, password=password)
            if (user, password) != self.credentials:
                writer.write(b"\x01\x01")
                self.requests.append(req)
                return False
            writer.write(b"\x01\x00")
        else:
            writer.write(b"\x05\x00")
        ver, cmd, _, atyp = await reader.readexactly(4)
        if atyp == 1:
            host = socket.inet_ntoa(await reader.readexactly(4))
        elif atyp == 4:
            host = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
        else:
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        port = struct.unpack(">H", await reader.readexactly(2))[0]
        req.update(cmd=cmd, atyp=atyp, host=host, port=port)
        self.requests.append(req)
        if self.mode == "refuse":
            writer.write(bytes([5, self.refuse_code, 0, 1]) + bytes(6))
            return False
        writer.write(b"\x05\x00\x00\x01\x7f\x00\x00\x01" + struct.pack(">H", self.port))
        return True

    async def _socks4(self, first, reader, writer) -> bool:
        head = await reader.readexactly(7)
        cmd, port, ip = head[0], struct.unpack(">H", head[1:3])[0], head[3:7]
        user = (await reader.readuntil(b"\x00"))[:-1].decode()
        if ip[:3] == b"\x00\x00\x00" and ip[3]:
            host = (await reader.readuntil(b"\x00"))[:-1].decode()
            atyp = "name"
        else:
            host, atyp = socket.inet_ntoa(ip), "ipv4"
        self.requests.append({"version": first[0], "cmd": cmd, "host": host, "port": port, "user": user, "atyp": atyp})
        if self.mode == "refuse":
            writer.write(b"\x00\x5b" + bytes(6))
            return False
        writer.write(b"\x00\x5a" + bytes(6))
        return True

    async def _relay(self, reader, writer) -> None:
        up_r, up_w = await asyncio.open_connection(LOOPBACK, self.upstream)

        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        t = asyncio.ensure_future(pipe(up_r, writer))
        try:
            await pipe(reader, up_w)
        finally:
            t.cancel()


async def proxied_node(path: Path, proxy: FakeProxy, peers, kind="socks5", **overrides):
    settings = ProxySettings(kind, LOOPBACK, proxy.port, overrides.pop("username", None), overrides.pop("password", None))
    return await start_node(path, peers, proxy=settings, listen=False, proxy_timeout=overrides.pop("proxy_timeout", 5.0), **overrides)


# ============================================================================ through the proxy, end to end


@pytest.mark.parametrize("kind", ["socks5", "socks4a"])
def test_node_relays_through_the_proxy_with_tls(tmp_path: Path, kind: str):
    """Handshake, TLS and object relay over the proxied stream; the proxy saw the name."""
    tls = tls_available()

    async def main():
        relay = await start_node(tmp_path / "relay", tls=tls)
        proxy = await FakeProxy(upstream=relay.listen_port).start()
        node = await proxied_node(tmp_path / "node", proxy, [("relay.example.org", 8444)], kind=kind, tls=tls)
        try:
            assert node._server is None  # behind a proxy, nothing listens
            assert await wait_for(lambda: len(node.established) == 1 and len(relay.established) == 1, 15)
            conn = node.established[0]
            assert conn.proxied and conn.dialled == ("relay.example.org", 8444) and conn.host == "relay.example.org"
            if tls:
                assert conn.tls_version == "TLSv1.2" and relay.established[0].tls_version == "TLSv1.2"
            req = proxy.requests[0]
            assert (req["host"], req["port"], req["cmd"]) == ("relay.example.org", 8444, 1)
            assert req["atyp"] == (3 if kind == "socks5" else "name")  # a name, never resolved here
            # Its address is unknown here, so the version names 127.0.0.1 (as the reference).
            assert relay.established[0].remote_version.addr_recv.host == "127.0.0.1"
            a, b = make_object(), make_object()
            assert relay.inject(a).accepted and node.inject(b).accepted
            ha, hb = inventory_hash(a), inventory_hash(b)
            assert await wait_for(lambda: node.has_object(ha) and relay.has_object(hb), 15)
            assert node.inventory.get(ha) == a and relay.inventory.get(hb) == b
        finally:
            await stop_all([node, relay])
            await proxy.stop()

    run(main())


def test_onion_peer_through_socks5_with_user_password(tmp_path: Path):
    async def main():
        relay = await start_node(tmp_path / "relay")
        proxy = await FakeProxy(upstream=relay.listen_port, credentials=("tor-user", "pw")).start()
        node = await proxied_node(tmp_path / "node", proxy, [(ONION, 8444)], username="tor-user", password="pw")
        try:
            assert await wait_for(lambda: len(node.established) == 1, 15)
            req = proxy.requests[0]
            assert (req["atyp"], req["host"], req["user"], req["password"]) == (3, ONION, "tor-user", "pw")
            # The version we sent names the onion as the remote (as the reference does).
            assert relay.established[0].remote_version.addr_recv.host == ONION
        finally:
            await stop_all([node, relay])
            await proxy.stop()

    run(main())


FAILURE_REASONS = {
    "wrong-password": "the proxy rejected the user name or password",
    "no-credentials": "the proxy requires a user name and password",
    "refused": "relay.example.org:8444: connection refused by the target",
    "socks4a-refused": "relay.example.org:8444: request rejected or failed",
    "not-listening": "is not reachable",
    "garbage": "not a SOCKS5 proxy",
    "stall": "no answer from the SOCKS5 proxy 127.0.0.1:",
}


@pytest.mark.parametrize("case", sorted(FAILURE_REASONS))
def test_failed_proxy_dials_are_clean_and_retried(tmp_path: Path, case: str, caplog):
    caplog.set_level(logging.DEBUG, logger="bmnode.net.node")

    async def main():
        relay = await start_node(tmp_path / "relay")
        proxy = FakeProxy(upstream=relay.listen_port)
        kind, extra = "socks5", {}
        if case == "wrong-password":
            proxy.credentials = ("u", "right")
            extra = {"username": "u", "password": "wrong"}
        elif case == "no-credentials":
            proxy.credentials = ("u", "right")
        elif case in ("refused", "socks4a-refused"):
            proxy.mode = "refuse"
            kind = "socks5" if case == "refused" else "socks4a"
        elif case in ("garbage", "stall"):
            proxy.mode = case
        await proxy.start()
        if case == "not-listening":
            await proxy.stop()
            await asyncio.sleep(0.05)
        node = await proxied_node(
            tmp_path / "node", proxy, [("relay.example.org", 8444)], kind=kind, proxy_timeout=1.0,
            reconnect_delay=0.1, reconnect_delay_max=0.2, **extra,
        )
        try:
            t0 = time.monotonic()
            assert await wait_for(lambda: node.counters["dial_failed"] >= 2, 8)  # failed, then tried again
            assert time.monotonic() - t0 < 8
            assert node.counters["dial_failed_proxy"] == node.counters["dial_failed"]
            assert node.counters["dial_ok"] == 0 and not node.established and not relay.established
            assert node._running and all(not t.done() for t in node._tasks)  # the node is up
            assert FAILURE_REASONS[case] in caplog.text  # the proxy's answer, explained
        finally:
            await stop_all([node, relay])
            await proxy.stop()

    run(main())


# ============================================================================ who is dialled, and how


def test_onion_peers_are_never_dialled_without_a_proxy(tmp_path: Path, monkeypatch):
    looked_up: list = []
    real = socket.getaddrinfo

    def spy(host, *a, **kw):
        looked_up.append(host)
        return real(host, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", spy)

    async def main():
        node = await start_node(tmp_path / "node", [(ONION, 8444)], allow_private_peers=False)
        try:
            node.knownnodes.add(1, "xyzxyzxyzxyzxyz2.onion", 8444, int(time.time()))
            node.knownnodes.increase_rating("xyzxyzxyzxyzxyz2.onion", 8444)
            node.connect(ONION, 8444)
            await asyncio.sleep(0.5)  # ten housekeeping ticks
            assert not node._dialing and node.counters["dial_failed"] == 0
            assert not any(str(h).endswith(".onion") for h in looked_up)
            assert not node.can_dial(ONION) and node.can_dial("203.0.113.7")
        finally:
            await node.stop()

    run(main())


def test_known_onion_peers_are_dialled_through_the_proxy(tmp_path: Path):
    async def main():
        proxy = await FakeProxy(mode="refuse", refuse_code=4).start()
        node = await proxied_node(tmp_path / "node", proxy, [], allow_private_peers=False)
        try:
            node.knownnodes.add(1, ONION, 8444, int(time.time()))
            for _ in range(20):
                node.knownnodes.increase_rating(ONION, 8444)
            assert await wait_for(lambda: any(r.get("host") == ONION for r in proxy.requests), 10)
            assert node.can_dial(ONION)
        finally:
            await node.stop()
            await proxy.stop()

    run(main())


@pytest.mark.parametrize("kind", ["socks5", "socks4a"])
def test_bootstrap_names_go_to_the_proxy_unresolved(tmp_path: Path, kind: str, monkeypatch):
    looked_up: list = []
    real = socket.getaddrinfo

    def spy(host, *a, **kw):
        looked_up.append(host)
        return real(host, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", spy)

    async def main():
        proxy = await FakeProxy(mode="refuse", refuse_code=4).start()
        node = await proxied_node(tmp_path / "node", proxy, [], kind=kind, bootstrap=True, allow_private_peers=False)
        targets = {h for h, _ in BOOTSTRAP_NAMES} | ({BOOTSTRAP_ONION[0]} if kind == "socks5" else set())
        try:
            assert await wait_for(lambda: any(r.get("host") in targets for r in proxy.requests), 10)
            boot = [r for r in proxy.requests if r.get("host") in targets]
            assert all(r["atyp"] in (3, "name") for r in boot)
            # Only the proxy's own address was ever looked up here: no DNS leak.
            assert set(map(str, looked_up)) <= {LOOPBACK}
            assert node.counters["dial_ok"] == 0
        finally:
            await node.stop()
            await proxy.stop()

    run(main())


# ============================================================================ settings


def run_parser():
    import argparse

    p = argparse.ArgumentParser()
    add_run_arguments(p)
    return p


def test_proxy_flags_reach_the_net_settings(tmp_path: Path):
    args = run_parser().parse_args([
        "--data-dir", str(tmp_path), "--socks-proxy-type", "SOCKS5", "--socks-host", "[::1]", "--socks-port", "9150",
        "--socks-username", "alice", "--socks-password", "pw",
    ])
    c = config_from_args(args)
    assert (c.socks_proxy_type, c.socks_host, c.socks_port, c.socks_username, c.socks_password) == ("socks5", "::1", 9150, "alice", "pw")
    assert c.to_dict()["socks_password"] == "(set)" and "pw" not in repr(c)
    s = settings_from_config(c)
    assert s.proxy == ProxySettings("socks5", "::1", 9150, "alice", "pw")
    assert s.listen is False  # as the reference: no inbound peers behind a proxy ...
    c = config_from_args(run_parser().parse_args(["--data-dir", str(tmp_path), "--socks-proxy-type", "socks4a", "--socks-listen"]))
    s = settings_from_config(c)
    assert s.proxy == ProxySettings("socks4a", "127.0.0.1", 9050) and s.listen is True  # ... unless told to
    s = settings_from_config(load_config(tmp_path))
    assert s.proxy is None and s.listen is True


def test_reference_key_names_in_the_file(tmp_path: Path):
    (tmp_path / "bmnode.toml").write_text(
        'socksproxytype = "SOCKS4a"\nsockshostname = "localhost"\nsocksport = 9150\n'
        'socksauthentication = true\nsocksusername = "me"\nsockspassword = ""\nsockslisten = true\n'
    )
    c = load_config(tmp_path)
    assert (c.socks_proxy_type, c.socks_host, c.socks_port, c.socks_username, c.socks_password) == ("socks4a", "localhost", 9150, "me", None)
    assert c.socks_listen is True
    assert settings_from_config(c).proxy == ProxySettings("socks4a", "localhost", 9150, "me")
    # socksauthentication = false keeps the credentials out of the handshake.
    (tmp_path / "bmnode.toml").write_text('socksproxytype = "SOCKS5"\nsocksauthentication = false\nsocksusername = "me"\nsockspassword = "x"\n')
    assert settings_from_config(load_config(tmp_path)).proxy == ProxySettings("socks5")


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"socks_proxy_type": "http"}, "--socks-proxy-type: expected one of none, socks4a, socks5"),
        ({"socks_port": "0"}, "--socks-port"),
        ({"socks_host": "bad host"}, "--socks-host"),
        ({"socks_username": "u" * 256}, "--socks-username: expected 1-255 bytes"),
        ({"socks_proxy_type": "socks5", "socks_password": "p"}, "needs --socks-username"),
        ({"socks_proxy_type": "socks4a", "socks_username": "u", "socks_password": "p"}, "SOCKS4a has no passwords"),
        ({"peers": [f"{ONION}:8444"]}, "only through Tor"),
    ],
)
def test_bad_proxy_settings_name_the_flag(tmp_path: Path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(tmp_path, overrides)


def test_onion_peer_with_a_proxy_is_accepted(tmp_path: Path):
    c = load_config(tmp_path, {"socks_proxy_type": "socks5", "peers": [f"{ONION}:8444"]})
    assert c.peers == (HostPort(ONION, 8444),)
    assert NodeConfig(data_dir=tmp_path, socks_proxy_type="socks5", socks_authentication=None).socks_listen is False
