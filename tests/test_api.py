"""The reference-compatible XML-RPC API (spec 14): real HTTP on 127.0.0.1 with xmlrpc.client.

Every command runs against an in-memory fake backend (below), which lets the tests control
what the backend holds and returns; the last section runs the commands against the real
Mailbox (through MailboxBackend), including two mailboxes exchanging a message and a broadcast
through their APIs.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import re
import socket
import threading
import time
import tomllib
import urllib.parse
import xmlrpc.client
from typing import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bmnode
from bmnode.api.auth import (
    CREDENTIALS_FILE,
    ApiCredentials,
    basic_auth_header,
    load_or_create_credentials,
    read_credentials,
)
from bmnode.api.backend import (
    AddressBookEntry,
    ApiBackend,
    BackendError,
    ClientStatus,
    Connection,
    Identity,
    InboxMessage,
    MailboxBackend,
    NetworkBackend,
    SentMessage,
    Subscription,
)
from bmnode.api.commands import ERROR_TEXTS, Commands
from bmnode.api.xmlrpc import ApiServer, handle_request_body, start_api_server
from bmnode.crypto.addresses import decode_address, encode_address, encode_address_data
from bmnode.crypto.generation import chan_address, deterministic_addresses, join_chan
from bmnode.crypto.identity import chan_label
from bmnode.errors import ConfigError, InvalidAddress
from bmnode.mailbox import Mailbox, MailboxConfig
from bmnode.mailbox.jobs import run_until_idle
from bmnode.pow.python_backend import PythonBackend
from bmnode.protocol.encoding import encode_var_int
from bmnode.protocol.hashing import inventory_hash
from bmnode.protocol.objects import parse_object

# ====================================================================== the fake backend


class FakeBackend:
    """Keeps everything in dicts; refusals raise BackendError with the reference's codes."""

    def __init__(self) -> None:
        self.identities: dict[str, Identity] = {}
        self.book: dict[str, AddressBookEntry] = {}
        self.subs: dict[str, Subscription] = {}
        self.inbox: dict[bytes, InboxMessage] = {}
        self.inbox_folder: dict[bytes, str] = {}
        self.sent: dict[bytes, SentMessage] = {}
        self.sent_folder: dict[bytes, str] = {}
        self.status_messages: list[str] = []
        self.shutdowns = 0
        self.disseminated: list[tuple[bytes, int, int]] = []
        self.vacuumed = 0
        self.created_with: list[dict] = []
        self.clock = 1730000000
        self.connections = [
            Connection("192.0.2.1", 8444, inbound=True, fully_established=True, user_agent="/PyBitmessage:0.6.3.2/"),
            Connection("198.51.100.7", 8444, inbound=False, fully_established=False, user_agent=""),
        ]
        self.shutdown_event = threading.Event()

    # identities
    def list_identities(self) -> Sequence[Identity]:
        return list(self.identities.values())

    def _add_identity(self, address: str, label: str, chan: bool = False) -> bool:
        if address in self.identities:
            return False
        self.identities[address] = Identity(address, label, True, chan)
        return True

    def create_random_address(self, label, *, eighteen_byte_ripe, total_difficulty, small_message_difficulty):
        zeros = 2 if eighteen_byte_ripe else 1
        address = encode_address(4, 1, b"\x00" * zeros + os.urandom(20 - zeros))
        self.created_with.append(
            dict(label=label, short=eighteen_byte_ripe, total=total_difficulty, small=small_message_difficulty)
        )
        self._add_identity(address, label)
        return address

    def create_deterministic_addresses(
        self, passphrase, count, *, version, stream, eighteen_byte_ripe, total_difficulty, small_message_difficulty
    ):
        if count > 3 or eighteen_byte_ripe:  # keep the fake fast: made-up addresses
            made = [encode_address(version, stream, b"\x00" + os.urandom(19)) for _ in range(count)]
        else:
            made = [g.address for g in deterministic_addresses(passphrase, count, version=version, stream=stream)]
        return [a for a in made if self._add_identity(a, "unused API address")]

    @staticmethod
    def _chan_label(passphrase: bytes) -> str:
        return chan_label(passphrase)

    def create_chan(self, passphrase):
        address = chan_address(passphrase).address
        if not self._add_identity(address, self._chan_label(passphrase), chan=True):
            raise BackendError(24, "chan already there")
        return address

    def join_chan(self, passphrase, address):
        try:
            join_chan(passphrase, address)
        except InvalidAddress:
            raise BackendError(18, "mismatch") from None
        if not self._add_identity(address, self._chan_label(passphrase), chan=True):
            raise BackendError(24, "chan already there")

    def leave_chan(self, address):
        ident = self.identities.get(address)
        if ident is None:
            raise BackendError(13, "unknown")
        if not ident.chan:
            raise BackendError(25, "not a chan")
        del self.identities[address]

    def delete_address(self, address):
        if self.identities.pop(address, None) is None:
            raise BackendError(13, "unknown")

    def enable_address(self, address, enable):
        ident = self.identities.get(address)
        if ident is None:
            raise BackendError(13, "unknown")
        self.identities[address] = dataclasses.replace(ident, enabled=enable)

    # address book, subscriptions
    def list_address_book(self, label=None):
        return [e for e in self.book.values() if label is None or e.label == label]

    def add_address_book_entry(self, address, label):
        if address in self.book:
            raise BackendError(16, "dup")
        self.book[address] = AddressBookEntry(address, label)

    def delete_address_book_entry(self, address):
        self.book.pop(address, None)

    def list_subscriptions(self):
        return list(self.subs.values())

    def add_subscription(self, address, label):
        if address in self.subs:
            raise BackendError(16, "dup")
        self.subs[address] = Subscription(address, label, True)

    def delete_subscription(self, address):
        self.subs.pop(address, None)

    # inbox
    def deliver(self, to_address: str, from_address: str, subject, body, encoding: int = 2) -> bytes:
        """Test helper: put a message in the inbox."""
        msgid = os.urandom(32)
        self.clock += 1
        self.inbox[msgid] = InboxMessage(msgid, to_address, from_address, subject, body, encoding, self.clock, False)
        self.inbox_folder[msgid] = "inbox"
        return msgid

    def inbox_messages(self, to_address=None):
        rows = [m for k, m in self.inbox.items() if self.inbox_folder[k] == "inbox"]
        rows = [m for m in rows if to_address is None or m.to_address == to_address]
        return sorted(rows, key=lambda m: m.received)

    def inbox_message(self, msgid):
        return self.inbox.get(msgid)

    def set_read(self, msgid, read):
        if msgid in self.inbox:
            self.inbox[msgid] = dataclasses.replace(self.inbox[msgid], read=read)

    def trash_inbox_message(self, msgid):
        if msgid in self.inbox_folder:
            self.inbox_folder[msgid] = "trash"

    def undelete_message(self, msgid):
        if msgid in self.inbox_folder:
            self.inbox_folder[msgid] = "inbox"

    # sent
    def _check_from(self, from_address):
        ident = self.identities.get(from_address)
        if ident is None:
            raise BackendError(13, "not ours")
        if not ident.enabled:
            raise BackendError(14, "disabled")

    def _queue(self, to_address, from_address, subject, body, encoding, status) -> bytes:
        ackdata = os.urandom(38)
        msgid = os.urandom(16)
        self.clock += 1
        self.sent[msgid] = SentMessage(msgid, to_address, from_address, subject, body, encoding, self.clock, status, ackdata)
        self.sent_folder[msgid] = "sent"
        return ackdata

    def send_message(self, to_address, from_address, subject, body, *, encoding, ttl):
        self._check_from(from_address)
        self.last_ttl = ttl
        return self._queue(to_address, from_address, subject, body, encoding, "msgqueued")

    def send_broadcast(self, from_address, subject, body, *, encoding, ttl):
        self._check_from(from_address)
        self.last_ttl = ttl
        return self._queue("[Broadcast subscribers]", from_address, subject, body, encoding, "broadcastqueued")

    def sent_messages(self, from_address=None):
        rows = [m for k, m in self.sent.items() if self.sent_folder[k] == "sent"]
        rows = [m for m in rows if from_address is None or m.from_address == from_address]
        return sorted(rows, key=lambda m: m.last_action_time)

    def sent_message(self, msgid):
        return self.sent.get(msgid)

    def sent_message_by_ackdata(self, ackdata):
        return next((m for m in self.sent.values() if m.ackdata == ackdata), None)

    def trash_sent_message(self, msgid):
        if msgid in self.sent_folder:
            self.sent_folder[msgid] = "trash"

    def trash_sent_message_by_ackdata(self, ackdata):
        m = self.sent_message_by_ackdata(ackdata)
        if m is not None:
            self.sent_folder[m.msgid] = "trash"

    def message_status(self, ackdata):
        m = self.sent_message_by_ackdata(ackdata)
        return None if m is None else m.status

    def delete_and_vacuum(self):
        self.vacuumed += 1
        for k, f in list(self.inbox_folder.items()):
            if f == "trash":
                del self.inbox[k], self.inbox_folder[k]
        for k, f in list(self.sent_folder.items()):
            if f == "trash":
                del self.sent[k], self.sent_folder[k]

    # network side
    def client_status(self):
        return ClientStatus(
            network_connections=len(self.connections), received_incoming_connections=True, messages_processed=5,
            broadcasts_processed=2, pubkeys_processed=3, pending_download=7,
        )

    def list_connections(self):
        return list(self.connections)

    def shutdown(self):
        self.shutdowns += 1
        self.shutdown_event.set()

    def disseminate_object(self, data, nonce_trials_per_byte, payload_length_extra_bytes):
        self.disseminated.append((data, nonce_trials_per_byte, payload_length_extra_bytes))
        return b"\xab" * 32

    def status_bar(self, message):
        self.status_messages.append(message)


# ====================================================================== fixtures and helpers

USER = "apiuser"
PASSWORD = "s3cret:with:colons"
TIGER = b"TIGER, tiger, burning bright. In the forests of the night"
TIGER_V4 = "BM-2cWzSnwjJ7yRP3nLEWUV5LisTZyREWSzUK"
TIGER_V3 = "BM-2DBPTgeSawWYZceFD69AbDT5q4iUWtj1ZN"
CHAN_BITMESSAGE = "BM-2cWy7cvHoq3f1rYMerRJp8PT653jjSuEdY"


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _address_from_data(data: bytes) -> str:
    return encode_address_data(data)


RIPE19 = bytes(range(1, 20))
BAD_ADDRESSES = {
    8: TIGER_V4[:-1] + ("L" if TIGER_V4[-1] != "L" else "M"),
    9: "BM-2cWzSnwjJ7yRP3nLEWUV5LisTZyREWSz0K",
    10: _address_from_data(encode_var_int(5) + encode_var_int(1) + RIPE19),
    26: _address_from_data(b"\xfd\x00\x04" + b"\x01" + RIPE19),
    11: _address_from_data(b"\x01\x01" + b"\x07" * 20),
    12: encode_address(4, 2, b"\x00" + RIPE19),
    7: _address_from_data(b"\x04\x01" + b"\x00" + RIPE19),
}


class Api:
    """A running server plus a client proxy (and raw-HTTP helpers)."""

    def __init__(self, backend, variant: str = "legacy", **server_kw) -> None:
        self.backend = backend
        self.commands = Commands(backend, variant=variant)
        self.credentials = ApiCredentials(USER, PASSWORD)
        server_kw.setdefault("auth_delay", 0.01)
        self.server = ApiServer(self.commands, self.credentials, "127.0.0.1", 0, **server_kw)
        self.host, self.port = self.server.start()

    def proxy(self, user: str = USER, password: str = PASSWORD, path: str = "/") -> xmlrpc.client.ServerProxy:
        cred = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe=':')}@" if user else ""
        return xmlrpc.client.ServerProxy(f"http://{cred}{self.host}:{self.port}{path}")

    def raw(self, request: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        """Send raw bytes, read the whole answer (the server closes the connection)."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            s.sendall(request)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        return status, headers, body

    def post(self, body: bytes, *, path: str = "/", auth: str | None = "default", extra: str = "") -> tuple[int, dict, bytes]:
        if auth == "default":
            auth = self.credentials.header()
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: {len(body)}\r\n"
        if auth is not None:
            head += f"Authorization: {auth}\r\n"
        return self.raw((head + extra + "\r\n").encode() + body)

    def close(self) -> None:
        self.server.stop()


@pytest.fixture
def fake():
    return FakeBackend()


@pytest.fixture
def api(fake):
    a = Api(fake)
    yield a
    a.close()


@pytest.fixture
def xapi(fake):
    a = Api(fake, variant="xml")
    yield a
    a.close()


def call_xml(body_method: str, *params) -> bytes:
    return xmlrpc.client.dumps(params, body_method).encode()


def legacy_error(code: int) -> re.Pattern:
    return re.compile(rf"^API Error {code:04d}: ")


# ====================================================================== transport and auth


def test_example_exchange_14_6(api):
    body = (
        b"<?xml version='1.0'?><methodCall><methodName>helloWorld</methodName><params>\n"
        b"<param><value><string>hello</string></value></param>\n"
        b"<param><value><string>world</string></value></param></params></methodCall>"
    )
    auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    status, headers, reply = api.post(body, auth=auth)
    assert status == 200
    assert headers["content-type"] == "text/xml"
    assert int(headers["content-length"]) == len(reply)
    assert xmlrpc.client.loads(reply) == (("hello-world",), None)
    assert b"<string>hello-world</string>" in reply or b"<value><string>hello-world" in reply


def test_rpc2_path_works_and_other_paths_404(api):
    assert api.proxy(path="/RPC2").helloWorld("a", "b") == "a-b"
    with pytest.raises(xmlrpc.client.ProtocolError) as e:
        api.proxy(path="/other").helloWorld("a", "b")
    assert e.value.errcode == 404
    status, _, _ = api.post(call_xml("helloWorld", "a", "b"), path="/RPC2/x")
    assert status == 404


def test_get_is_not_served(api):
    status, _, _ = api.raw(b"GET / HTTP/1.0\r\n\r\n")
    assert status == 501


@pytest.mark.parametrize(
    "user,password",
    [(USER, "wrong"), ("someone", PASSWORD), (USER, PASSWORD.split(":")[0]), (USER, PASSWORD + "x"), ("", "")],
)
def test_wrong_or_missing_credentials_are_refused_with_401(api, user, password):
    with pytest.raises(xmlrpc.client.ProtocolError) as e:
        api.proxy(user, password).helloWorld("a", "b")
    assert e.value.errcode == 401


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Basic",
        "Basic !!!notbase64",
        "Bearer " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
        "Basic " + base64.b64encode(f"{USER}{PASSWORD}".encode()).decode(),  # no colon
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),  # not UTF-8
    ],
)
def test_malformed_authorization_headers_get_401_without_body(api, header):
    status, headers, body = api.post(call_xml("helloWorld", "a", "b"), auth=header)
    assert status == 401
    assert body == b""
    assert headers.get("www-authenticate", "").startswith("Basic")


def test_password_containing_colons_works(api):
    # The reference splits on every ':' and so can never accept such a password (spec 14.1);
    # bmnode splits the Basic credentials on the first ':' only, as RFC 7617 says.
    assert ":" in PASSWORD
    assert api.proxy().helloWorld("x", "y") == "x-y"


def test_missing_content_length_gives_411(api):
    head = f"POST / HTTP/1.0\r\nAuthorization: {api.credentials.header()}\r\n\r\n".encode()
    status, _, _ = api.raw(head + call_xml("helloWorld", "a", "b"))
    assert status == 411


@pytest.mark.parametrize("value", ["abc", "-5", "1e3", "  "])
def test_bad_content_length_gives_400(api, value):
    head = f"POST / HTTP/1.0\r\nAuthorization: {api.credentials.header()}\r\nContent-Length: {value}\r\n\r\n"
    status, _, _ = api.raw(head.encode())
    assert status == 400


def test_oversized_body_is_refused_with_413(fake):
    a = Api(fake, max_body=4096)
    try:
        status, _, _ = a.post(call_xml("helloWorld", "a" * 5000, "b"))
        assert status == 413
        # the server keeps serving afterwards
        assert a.proxy().helloWorld("a", "b") == "a-b"
    finally:
        a.close()


def test_huge_declared_length_is_refused_before_reading(api):
    head = f"POST / HTTP/1.0\r\nAuthorization: {api.credentials.header()}\r\nContent-Length: {10**12}\r\n\r\n"
    status, _, _ = api.raw(head.encode() + b"<methodCall>")
    assert status == 413


def test_truncated_body_does_not_hang_the_server(fake):
    a = Api(fake, request_timeout=0.5)
    try:
        head = f"POST / HTTP/1.0\r\nAuthorization: {a.credentials.header()}\r\nContent-Length: 1000\r\n\r\n"
        with socket.create_connection((a.host, a.port), timeout=10) as s:
            s.sendall(head.encode() + b"<methodCall>")
            s.shutdown(socket.SHUT_WR)
            assert s.recv(100) == b""  # closed without an answer: there was no complete request
        assert a.proxy().add(1, 2) == 3
    finally:
        a.close()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml at all",
        b"<methodCall><methodName>helloWorld</methodName><params>",
        b"<?xml version='1.0'?><methodResponse><params><param><value><int>1</int></value></param></params></methodResponse>",
        b"<methodCall><methodName>add</methodName><params><param><value><int>notanint</int></value></param></params></methodCall>",
        b"<!DOCTYPE x [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>"
        b"<!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;'><!ENTITY d '&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;'>"
        b"<!ENTITY e '&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;'><!ENTITY f '&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;'>"
        b"<!ENTITY g '&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;'><!ENTITY h '&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;'>]>"
        b"<methodCall><methodName>&h;</methodName></methodCall>",
        b"\xff\xfe\x00garbage",
    ],
)
def test_malformed_bodies_get_a_fault_not_an_http_error(api, body):
    status, _, reply = api.post(body)
    assert status == 200
    with pytest.raises(xmlrpc.client.Fault) as e:
        xmlrpc.client.loads(reply)
    assert e.value.faultCode == 1
    assert e.value.faultString.startswith("Malformed XML-RPC request")


def test_nil_is_never_sent(api, xapi):
    for a in (api, xapi):
        _, _, reply = a.post(call_xml("getInboxMessageById", "00" * 32))
        assert b"<nil" not in reply


def test_concurrent_requests_are_all_answered_correctly(api):
    results: dict[int, object] = {}

    def worker(i: int) -> None:
        p = api.proxy()
        results[i] = (p.add(i, 1000), p.helloWorld(str(i), "x"), json.loads(p.listAddresses()))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == list(range(24))
    for i, (total, hello, listing) in results.items():
        assert total == i + 1000
        assert hello == f"{i}-x"
        assert listing == {"addresses": []}


def test_a_refused_client_waiting_out_its_delay_does_not_block_others(fake):
    a = Api(fake, auth_delay=3.0)
    try:
        outcome = {}

        def bad() -> None:
            try:
                a.proxy(USER, "nope").helloWorld("a", "b")
            except xmlrpc.client.ProtocolError as e:
                outcome["bad"] = e.errcode

        t = threading.Thread(target=bad)
        t.start()
        assert a.proxy().helloWorld("good", "call") == "good-call"
        # the good call was answered while the refused one was still being held back
        assert t.is_alive()
        t.join(10)
        assert outcome == {"bad": 401}
    finally:
        a.close()


def test_too_many_concurrent_requests_get_503(fake, monkeypatch):
    a = Api(fake, max_concurrent=1, slot_wait=0.2)
    entered, release = threading.Event(), threading.Event()

    def blocking_list():
        entered.set()
        release.wait(10)
        return []

    monkeypatch.setattr(fake, "list_identities", blocking_list)
    try:
        slow: list[object] = []
        t = threading.Thread(target=lambda: slow.append(a.proxy().listAddresses()))
        t.start()
        assert entered.wait(10)  # the slow request now holds the only slot
        status, _, _ = a.post(call_xml("helloWorld", "a", "b"))
        assert status == 503
        release.set()
        t.join(10)
        assert slow == [json.dumps({"addresses": []}, indent=4)]
        assert a.proxy().helloWorld("a", "b") == "a-b"
    finally:
        release.set()
        a.close()


def test_back_to_back_requests_at_the_limit_are_not_refused(fake):
    """One client calling in a loop with a single slot: its next request may arrive before the
    thread that answered the last one has let go of the slot; it waits for it, no 503."""
    a = Api(fake, max_concurrent=1)
    slots = a.server._slots

    class LateRelease:
        """The answering thread lets go of its slot 50 ms after the reply went out."""

        def acquire(self, *args, **kw):
            return slots.acquire(*args, **kw)

        def release(self):
            time.sleep(0.05)
            slots.release()

    a.server._slots = LateRelease()
    try:
        p = a.proxy()
        for i in range(5):
            assert p.helloWorld("a", str(i)) == f"a-{i}"
    finally:
        a.close()


def test_server_stops_cleanly_and_frees_the_port(fake):
    a = Api(fake)
    port = a.port
    a.close()
    a.close()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    again = ApiServer(Commands(fake), ApiCredentials(USER, PASSWORD), "127.0.0.1", port, auth_delay=0)
    again.start()
    try:
        assert again.address[1] == port
    finally:
        again.stop()


def test_server_refuses_to_start_twice_and_without_password(fake):
    a = Api(fake)
    try:
        with pytest.raises(RuntimeError):
            a.server.start()
    finally:
        a.close()
    with pytest.raises(ConfigError):
        ApiCredentials(USER, "")


def test_busy_port_falls_back_to_a_random_port_only_when_asked(api, fake):
    with pytest.raises(OSError):
        ApiServer(Commands(fake), api.credentials, "127.0.0.1", api.port).start()
    other = ApiServer(Commands(fake), api.credentials, "127.0.0.1", api.port, random_port_fallback=True)
    host, port = other.start()
    try:
        assert port != api.port and 32767 <= port <= 65535
    finally:
        other.stop()


# ====================================================================== introspection and variants

ISSUE_COMMANDS = """helloWorld add statusBar decodeAddress listAddresses createRandomAddress
createDeterministicAddresses getDeterministicAddress createChan joinChan leaveChan deleteAddress enableAddress
listAddressBookEntries addAddressBookEntry deleteAddressBookEntry getAllInboxMessages getAllInboxMessageIds
getInboxMessageById getInboxMessagesByReceiver getAllSentMessages getAllSentMessageIds getSentMessageById
getSentMessageByAckData getSentMessagesBySender getStatus sendMessage sendBroadcast trashMessage trashInboxMessage
trashSentMessage listSubscriptions addSubscription deleteSubscription clientStatus listConnections undeleteMessage
shutdown listAddresses2 getAllInboxMessageIDs getInboxMessageByID getAllSentMessageIDs getSentMessageByID
getSentMessagesByAddress trashSentMessageByAckData deleteAndVacuum disseminatePreEncryptedMsg
disseminatePreparedObject""".split()
LEGACY_ONLY = ["listAddressbook", "addAddressbook", "deleteAddressbook", "getInboxMessagesByAddress"]


def test_list_methods_has_every_command_and_alias(api, xapi):
    legacy = api.proxy().system.listMethods()
    xml = xapi.proxy().system.listMethods()
    for name in ISSUE_COMMANDS + ["system.listMethods", "system.methodHelp", "system.methodSignature"]:
        assert name in legacy and name in xml
    for name in LEGACY_ONLY:
        assert name in legacy and name not in xml
    assert legacy == sorted(legacy)


def test_method_help_and_signature(api):
    p = api.proxy()
    text = p.system.methodHelp("getAllInboxMessageIds")
    assert "getAllInboxMessageIDs" in text and "msgid" in text
    assert p.system.methodHelp("noSuchMethod") == ""
    assert p.system.methodSignature("add") == "signatures not supported"


def test_legacy_only_aliases_are_invalid_methods_in_xml_variant(xapi):
    with pytest.raises(xmlrpc.client.Fault) as e:
        xapi.proxy().listAddressbook()
    assert e.value.faultCode == 20
    assert e.value.faultString == "Invalid method: listAddressbook"


def test_legacy_aliases_work_in_legacy_variant(api, fake):
    p = api.proxy()
    assert p.addAddressbook(TIGER_V4, b64("tiger")) == f"Added address {TIGER_V4} to address book"
    assert json.loads(p.listAddressbook()) == {"addresses": [{"label": b64("tiger"), "address": TIGER_V4}]}
    assert json.loads(p.getInboxMessagesByAddress(TIGER_V4)) == {"inboxMessages": []}
    assert p.deleteAddressbook(TIGER_V4) == f"Deleted address book entry for {TIGER_V4} if it existed"
    assert fake.book == {}


def test_legacy_returns_json_strings_and_xml_native_values(api, xapi):
    legacy = api.proxy().decodeAddress(TIGER_V4)
    native = xapi.proxy().decodeAddress(TIGER_V4)
    assert isinstance(legacy, str)
    expected = {
        "status": "success",
        "addressVersion": 4,
        "streamNumber": 1,
        "ripe": b64(bytes.fromhex("00cfb69416ae76f68a81c459de4e13460c7d17eb")),
    }
    assert json.loads(legacy) == expected
    assert native == expected
    # strings and integers are returned as they are in both
    assert api.proxy().add(2, 3) == 5 and xapi.proxy().add(2, 3) == 5
    assert api.proxy().helloWorld("a", "b") == "a-b"
    # a float result is a JSON string in legacy (not an int or str), native in xml
    assert api.proxy().add(1.5, 1) == "2.5" and xapi.proxy().add(1.5, 1) == 2.5


def test_get_status_00_is_error_15_in_both_variants(api, xapi):
    assert api.proxy().getStatus("00") == "API Error 0015: Invalid ackData object size."
    with pytest.raises(xmlrpc.client.Fault) as e:
        xapi.proxy().getStatus("00")
    assert (e.value.faultCode, e.value.faultString) == (15, "Invalid ackData object size.")


def test_results_xml_rpc_cannot_carry_give_error_21_in_both_variants(api, xapi):
    assert api.proxy().add(2**31 - 1, 1) == (
        "API Error 0021: Unexpected API Failure - int exceeds XML-RPC limits"
    )
    with pytest.raises(xmlrpc.client.Fault) as e:
        xapi.proxy().add(2**31 - 1, 1)
    assert e.value.faultCode == 21


def test_unknown_method_is_error_20(api):
    assert api.proxy().test() == "API Error 0020: Invalid method: test"


@pytest.mark.parametrize(
    "method,params,text",
    [
        ("helloWorld", ("a",), "Command helloWorld takes at least 3 parameters (1 given)"),
        ("helloWorld", ("a", "b", "c"), "Command helloWorld takes at most 3 parameters (3 given)"),
        ("listAddresses", (1,), "Command listAddresses takes at most 1 parameters (1 given)"),
        ("sendMessage", ("a", "b", "c"), "Command sendMessage takes at least 5 parameters (3 given)"),
        ("createRandomAddress", (), "Command createRandomAddress takes at least 2 parameters (0 given)"),
    ],
)
def test_wrong_number_of_parameters_is_error_0_with_the_reference_text(api, method, params, text):
    assert getattr(api.proxy(), method)(*params) == f"API Error 0000: {text}"


def test_wrong_parameter_types_give_error_21_not_a_crash(api, xapi):
    p = api.proxy()
    assert p.helloWorld(1, "b").startswith("API Error 0021: Unexpected API Failure - ")
    assert p.add("1", 2).startswith("API Error 0021: Unexpected API Failure - ")
    assert p.createDeterministicAddresses(b64("x"), "3").startswith("API Error 0021: ")
    with pytest.raises(xmlrpc.client.Fault) as e:
        xapi.proxy().add([], {})
    assert e.value.faultCode == 21


def test_unexpected_backend_exception_is_error_21(api, fake, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(fake, "list_identities", boom)
    assert api.proxy().listAddresses() == "API Error 0021: Unexpected API Failure - disk on fire"
    assert api.proxy().helloWorld("still", "alive") == "still-alive"


def test_missing_network_side_backend_method_gives_error_21():
    class Minimal:
        def list_identities(self):
            return []

    c = Commands(Minimal())
    assert c.dispatch("clientStatus", ()).value.startswith("API Error 0021: Unexpected API Failure - clientStatus")
    assert c.dispatch("shutdown", ()).value.startswith("API Error 0021: ")
    assert c.dispatch("statusBar", ("hi",)).value == "success"  # statusBar falls back to the log


def test_unsupported_variant_is_refused(fake):
    with pytest.raises(ValueError):
        Commands(fake, variant="soap")


def test_undelete_message_can_be_left_out(fake):
    assert "undeleteMessage" not in Commands(fake, test_mode=False).method_names()
    assert "undeleteMessage" in Commands(fake).method_names()


# ====================================================================== argument validation (14.5)


@pytest.mark.parametrize("code", sorted(BAD_ADDRESSES))
def test_address_errors(api, code):
    bad = BAD_ADDRESSES[code]
    answer = api.proxy().decodeAddress(bad)
    assert legacy_error(code).match(answer), answer
    expected = {
        8: f"Checksum failed for address: {bad}",
        9: f"Invalid characters in address: {bad}",
        10: f"Address version number too high (or zero) in address: {bad}",
        26: f"Malformed varint in address: {bad}",
        11: "The address version number currently must be 2, 3 or 4. Others aren't supported. Check the address.",
        12: "The stream number must be 1. Others aren't supported. Check the address.",
        7: f"Could not decode address: {bad} : encodingproblem",
    }[code]
    assert answer == f"API Error {code:04d}: {expected}"


@pytest.mark.parametrize("code", sorted(BAD_ADDRESSES))
def test_address_errors_apply_to_every_address_argument(api, fake, code):
    p = api.proxy()
    bad = BAD_ADDRESSES[code]
    me = p.createRandomAddress(b64("me"))
    for answer in (
        p.addAddressBookEntry(bad, b64("x")),
        p.deleteAddressBookEntry(bad),
        p.addSubscription(bad),
        p.joinChan(b64("bitmessage"), bad),
        p.leaveChan(bad),
        p.deleteAddress(bad),
        p.enableAddress(bad, False),
        p.sendMessage(bad, me, b64("s"), b64("m")),
        p.sendMessage(TIGER_V4, bad, b64("s"), b64("m")),
        p.sendBroadcast(bad, b64("s"), b64("m")),
    ):
        assert legacy_error(code).match(answer), answer
    assert fake.book == {} and fake.subs == {} and fake.sent == {}


def test_addresses_are_accepted_without_prefix_and_canonicalised(api, fake):
    p = api.proxy()
    assert p.addAddressBookEntry("  " + TIGER_V4[3:] + " ", b64("t")) == f"Added address {TIGER_V4} to address book"
    assert list(fake.book) == [TIGER_V4]
    assert json.loads(p.decodeAddress(TIGER_V3[3:]))["addressVersion"] == 3


def test_non_string_address_is_error_9(api):
    assert legacy_error(9).match(api.proxy().decodeAddress(12345))


@pytest.mark.parametrize("bad", ["not base64!", "abc", "YW=Jj", "éé"])
def test_base64_errors_are_22(api, bad):
    answer = api.proxy().createRandomAddress(bad)
    assert answer.startswith("API Error 0022: Decode error - ")
    assert f"Had trouble while decoding string: {bad!r}" in answer


def test_base64_with_line_breaks_is_accepted(api, fake):
    text = "a long subject " * 10
    encoded = base64.encodebytes(text.encode()).decode()  # has line breaks
    assert "\n" in encoded
    me = api.proxy().createRandomAddress(encoded)
    assert fake.identities[me].label == text


@pytest.mark.parametrize("bad", ["zz", "abc", "0g", "é"])
def test_hex_errors_are_22(api, bad):
    p = api.proxy()
    for answer in (p.getInboxMessageById(bad), p.trashMessage(bad), p.getSentMessageByAckData(bad)):
        assert answer.startswith("API Error 0022: Decode error - "), answer


def test_bool_arguments_are_checked_error_23(api, fake):
    p = api.proxy()
    assert p.createRandomAddress(b64("x"), 1) == "API Error 0023: Bool expected in eighteenByteRipe, saw <class 'int'> instead"
    assert p.createDeterministicAddresses(b64("x"), 1, 4, 1, "yes").startswith(
        "API Error 0023: Bool expected in eighteenByteRipe, saw <class 'str'>"
    )
    msgid = fake.deliver(TIGER_V4, TIGER_V3, "s", "b")
    assert p.getInboxMessageById(msgid.hex(), 1) == "API Error 0023: Bool expected in readStatus, saw <class 'int'> instead."
    me = p.createRandomAddress(b64("me"))
    assert legacy_error(23).match(p.enableAddress(me, "no"))


def test_label_must_be_utf8_error_17(api, fake):
    p = api.proxy()
    assert p.createRandomAddress(b64(b"\xff\xfe")) == "API Error 0017: Label is not valid UTF-8 data."
    assert p.addSubscription(TIGER_V4, b64(b"\xc3")) == "API Error 0017: Label is not valid UTF-8 data."
    assert fake.identities == {} and fake.subs == {}


def test_deterministic_address_argument_errors(api):
    p = api.proxy()
    assert p.createDeterministicAddresses("") == "API Error 0001: The specified passphrase is blank."
    assert p.getDeterministicAddress("", 4, 1) == "API Error 0001: The specified passphrase is blank."
    assert p.createDeterministicAddresses(b64("x"), 1, 5) == (
        "API Error 0002: The address version number currently must be 3, 4, or 0 (which means auto-select)."
        " 5 isn't supported."
    )
    assert p.getDeterministicAddress(b64("x"), 2, 1) == (
        "API Error 0002: The address version number currently must be 3 or 4. 2 isn't supported."
    )
    assert p.createDeterministicAddresses(b64("x"), 1, 4, 2) == (
        "API Error 0003: The stream number must be 1 (or 0 which means auto-select). Others aren't supported."
    )
    assert legacy_error(3).match(p.getDeterministicAddress(b64("x"), 4, 2))
    assert p.createDeterministicAddresses(b64("x"), 0) == "API Error 0004: Why would you ask me to generate 0 addresses for you?"
    assert legacy_error(4).match(p.createDeterministicAddresses(b64("x"), -3))
    assert p.createDeterministicAddresses(b64("x"), 1000).startswith(
        "API Error 0005: You have (accidentally?) specified too many addresses to make. Maximum 999."
    )
    assert p.createChan("") == "API Error 0001: The specified passphrase is blank."
    assert p.joinChan("", CHAN_BITMESSAGE) == "API Error 0001: The specified passphrase is blank."


def test_send_argument_errors(api, fake):
    p = api.proxy()
    me = p.createRandomAddress(b64("me"))
    for enc in (0, 1, 4, "2", True):
        assert p.sendMessage(TIGER_V4, me, b64("s"), b64("m"), enc) == "API Error 0006: The encoding type must be 2 or 3."
        assert p.sendBroadcast(me, b64("s"), b64("m"), enc) == "API Error 0006: The encoding type must be 2 or 3."
    big = b64(b"x" * (2**18 - 500))
    assert p.sendMessage(TIGER_V4, me, b64("s"), big) == "API Error 0027: Message is too long."
    assert p.sendBroadcast(me, big, b64("")) != "API Error 0027: Message is too long."  # exactly the limit
    assert p.sendMessage(TIGER_V4, TIGER_V3, b64("s"), b64("m")) == (
        "API Error 0013: Could not find your fromAddress in the keys.dat file."
    )
    assert p.sendBroadcast(TIGER_V3, b64("s"), b64("m")) == (
        "API Error 0013: Could not find your fromAddress in the keys.dat file."
    )
    assert p.enableAddress(me, False) == "success"
    assert p.sendMessage(TIGER_V4, me, b64("s"), b64("m")) == "API Error 0014: Your fromAddress is disabled. Cannot send."
    assert p.sendBroadcast(me, b64("s"), b64("m")) == "API Error 0014: Your fromAddress is disabled. Cannot send."
    assert legacy_error(22).match(p.sendMessage(TIGER_V4, me, "!!", b64("m")))
    assert legacy_error(21).match(p.sendMessage(TIGER_V4, me, b64("s"), b64("m"), 2, "long"))
    assert len(fake.sent) == 1  # only the one broadcast at exactly the size limit


def test_ttl_is_clamped(api, fake):
    p = api.proxy()
    me = p.createRandomAddress(b64("me"))
    for requested, used in ((0, 3600), (-5, 3600), (7200, 7200), (10**9, 2419200), (2419200, 2419200)):
        p.sendMessage(TIGER_V4, me, b64("s"), b64("m"), 2, requested)
        assert fake.last_ttl == used
        p.sendBroadcast(me, b64("s"), b64("m"), 3, requested)
        assert fake.last_ttl == used
    p.sendMessage(TIGER_V4, me, b64("s"), b64("m"))
    assert fake.last_ttl == 4 * 24 * 3600


def test_get_status_errors(api):
    p = api.proxy()
    assert p.getStatus("ab" * 37 + "a") == "API Error 0015: Invalid ackData object size."
    assert legacy_error(22).match(p.getStatus("zz" * 38))
    assert legacy_error(22).match(p.getStatus(5))
    assert p.getStatus("00" * 38) == "notfound"


def test_backend_refusals_get_the_reference_texts(api, fake):
    p = api.proxy()
    assert p.addAddressBookEntry(TIGER_V4, b64("a")).startswith("Added")
    assert p.addAddressBookEntry(TIGER_V4, b64("b")) == (
        "API Error 0016: You already have this address in your address book."
    )
    assert p.addSubscription(TIGER_V4) == "Added subscription."
    assert p.addSubscription(TIGER_V4) == "API Error 0016: You are already subscribed to that address."
    assert p.createChan(b64("bitmessage")) == CHAN_BITMESSAGE
    assert p.createChan(b64("bitmessage")) == "API Error 0024: Chan address is already present."
    assert p.joinChan(b64("bitmessage"), CHAN_BITMESSAGE) == "API Error 0024: Chan address is already present."
    assert p.joinChan(b64("not bitmessage"), TIGER_V4) == "API Error 0018: Chan name does not match address."
    me = p.createRandomAddress(b64("me"))
    assert p.leaveChan(me) == (
        "API Error 0025: Specified address is not a chan address. Use deleteAddress API call instead."
    )
    assert p.leaveChan(TIGER_V4) == "API Error 0013: Could not find this address in your keys.dat file."
    assert p.deleteAddress(TIGER_V4) == "API Error 0013: Could not find this address in your keys.dat file."
    assert p.enableAddress(TIGER_V4) == "API Error 0013: Could not find this address in your keys.dat file."


def test_errors_are_faults_with_the_same_codes_in_xml_variant(xapi):
    p = xapi.proxy()
    cases = [
        (lambda: p.decodeAddress(BAD_ADDRESSES[8]), 8),
        (lambda: p.createRandomAddress("!!"), 22),
        (lambda: p.createDeterministicAddresses(b64("x"), 0), 4),
        (lambda: p.helloWorld(), 0),
        (lambda: p.nope(), 20),
        (lambda: p.sendMessage(TIGER_V4, TIGER_V3, b64("s"), b64("m")), 13),
    ]
    for run, code in cases:
        with pytest.raises(xmlrpc.client.Fault) as e:
            run()
        assert e.value.faultCode == code


# ====================================================================== happy paths (fake backend)


def test_hello_add_status_bar(api, fake):
    p = api.proxy()
    assert p.helloWorld("hello", "world") == "hello-world"
    assert p.add(40, 2) == 42
    assert p.statusBar("syncing") == "success"
    assert fake.status_messages == ["syncing"]


def test_identities_lifecycle(api, fake):
    p = api.proxy()
    a1 = p.createRandomAddress(b64("first"))
    a2 = p.createRandomAddress(b64("second"), True, 2, 3.5)
    assert decode_address(a1).ok and decode_address(a2).version == 4
    assert fake.created_with[0] == dict(label="first", short=False, total=0, small=0)
    assert fake.created_with[1] == dict(label="second", short=True, total=2, small=3.5)
    listing = json.loads(p.listAddresses())["addresses"]
    assert listing == [
        {"label": "first", "address": a1, "stream": 1, "enabled": True, "chan": False},
        {"label": "second", "address": a2, "stream": 1, "enabled": True, "chan": False},
    ]
    assert [r["label"] for r in json.loads(p.listAddresses2())["addresses"]] == [b64("first"), b64("second")]
    assert p.enableAddress(a1, False) == "success"
    assert json.loads(p.listAddresses())["addresses"][0]["enabled"] is False
    assert p.enableAddress(a1) == "success"
    assert json.loads(p.listAddresses())["addresses"][0]["enabled"] is True
    assert p.deleteAddress(a2) == "success"
    assert [r["address"] for r in json.loads(p.listAddresses())["addresses"]] == [a1]


def test_deterministic_addresses(api, fake):
    p = api.proxy()
    assert p.getDeterministicAddress(b64(TIGER), 4, 1) == TIGER_V4
    assert p.getDeterministicAddress(b64(TIGER), 3, 1) == TIGER_V3
    assert fake.identities == {}  # not saved
    created = json.loads(p.createDeterministicAddresses(b64(TIGER), 2))["addresses"]
    assert created[0] == TIGER_V4 and len(created) == 2
    # already present: not re-added, omitted from the answer
    again = json.loads(p.createDeterministicAddresses(b64(TIGER), 3))["addresses"]
    assert len(again) == 1 and again[0] not in created
    assert json.loads(p.createDeterministicAddresses(b64(TIGER), 1, 3, 0))["addresses"] == [TIGER_V3]


def test_chans(api, fake):
    p = api.proxy()
    assert p.createChan(b64("bitmessage")) == CHAN_BITMESSAGE
    assert fake.identities[CHAN_BITMESSAGE].label == "[chan] bitmessage"
    row = json.loads(p.listAddresses())["addresses"][0]
    assert row["chan"] is True and row["label"] == "[chan] bitmessage"
    assert p.leaveChan(CHAN_BITMESSAGE) == "success"
    assert p.joinChan(b64("bitmessage"), CHAN_BITMESSAGE[3:]) == "success"
    assert CHAN_BITMESSAGE in fake.identities
    assert p.deleteAddress(CHAN_BITMESSAGE) == "success"


def test_address_book(api, fake):
    p = api.proxy()
    assert json.loads(p.listAddressBookEntries()) == {"addresses": []}
    assert p.addAddressBookEntry(TIGER_V4, b64("Tiger")) == f"Added address {TIGER_V4} to address book"
    assert p.addAddressBookEntry(TIGER_V3, b64("Old tiger")) == f"Added address {TIGER_V3} to address book"
    entries = json.loads(p.listAddressBookEntries())["addresses"]
    assert entries == [{"label": b64("Tiger"), "address": TIGER_V4}, {"label": b64("Old tiger"), "address": TIGER_V3}]
    assert json.loads(p.listAddressBookEntries("Tiger"))["addresses"] == [{"label": b64("Tiger"), "address": TIGER_V4}]
    assert p.deleteAddressBookEntry(TIGER_V4) == f"Deleted address book entry for {TIGER_V4} if it existed"
    assert p.deleteAddressBookEntry(TIGER_V4) == f"Deleted address book entry for {TIGER_V4} if it existed"
    assert [e["address"] for e in json.loads(p.listAddressBookEntries())["addresses"]] == [TIGER_V3]


def test_subscriptions(api, fake):
    p = api.proxy()
    assert p.addSubscription(TIGER_V4, b64("tiger news")) == "Added subscription."
    assert p.addSubscription(TIGER_V3) == "Added subscription."
    assert json.loads(p.listSubscriptions()) == {
        "subscriptions": [
            {"label": b64("tiger news"), "address": TIGER_V4, "enabled": True},
            {"label": "", "address": TIGER_V3, "enabled": True},
        ]
    }
    assert p.deleteSubscription(TIGER_V4[3:]) == "Deleted subscription if it existed."
    assert p.deleteSubscription("garbage") == "Deleted subscription if it existed."  # not validated
    assert list(fake.subs) == [TIGER_V3]


def test_inbox(api, fake):
    p = api.proxy()
    m1 = fake.deliver(TIGER_V4, TIGER_V3, "Hello", "Body one\nline two", 2)
    m2 = fake.deliver(CHAN_BITMESSAGE, TIGER_V3, "Ünïcode", "ok", 3)
    m3 = fake.deliver(TIGER_V4, TIGER_V3, b"raw", b"bad \xff utf8", 2)
    everything = json.loads(p.getAllInboxMessages())["inboxMessages"]
    assert [r["msgid"] for r in everything] == [m1.hex(), m2.hex(), m3.hex()]
    first = everything[0]
    assert first == {
        "msgid": m1.hex(),
        "toAddress": TIGER_V4,
        "fromAddress": TIGER_V3,
        "subject": b64("Hello"),
        "message": b64("Body one\nline two"),
        "encodingType": 2,
        "receivedTime": str(fake.inbox[m1].received),  # text, as the reference's TEXT column gives it
        "read": 0,
    }
    assert unb64(everything[1]["subject"]).decode() == "Ünïcode"
    assert unb64(everything[2]["message"]).decode().startswith(
        "Part of the message is corrupt. The message cannot be displayed the normal way.\n\n'bad \\xff utf8'"
    )
    assert json.loads(p.getAllInboxMessageIds()) == {"inboxMessageIds": [{"msgid": m.hex()} for m in (m1, m2, m3)]}
    assert json.loads(p.getAllInboxMessageIDs()) == json.loads(p.getAllInboxMessageIds())
    by_receiver = json.loads(p.getInboxMessagesByReceiver(TIGER_V4))["inboxMessages"]
    assert [r["msgid"] for r in by_receiver] == [m1.hex(), m3.hex()]
    # readStatus
    assert json.loads(p.getInboxMessageById(m1.hex()))["inboxMessage"][0]["read"] == 0
    assert json.loads(p.getInboxMessageById(m1.hex(), True))["inboxMessage"][0]["read"] == 1
    assert json.loads(p.getInboxMessageByID(m1.hex().upper()))["inboxMessage"][0]["read"] == 1
    assert json.loads(p.getInboxMessageById(m1.hex(), False))["inboxMessage"][0]["read"] == 0
    assert p.getInboxMessageById("00" * 32) == "null"
    # trash / undelete
    assert p.trashInboxMessage(m1.hex()) == "Trashed inbox message (assuming message existed)."
    assert [r["msgid"] for r in json.loads(p.getAllInboxMessages())["inboxMessages"]] == [m2.hex(), m3.hex()]
    assert p.undeleteMessage(m1.hex()) == "Undeleted message"
    assert len(json.loads(p.getAllInboxMessages())["inboxMessages"]) == 3
    assert p.trashMessage(m2.hex()) == "Trashed message (assuming message existed)."
    assert p.trashMessage("00" * 32) == "Trashed message (assuming message existed)."
    assert len(json.loads(p.getAllInboxMessages())["inboxMessages"]) == 2
    assert p.deleteAndVacuum() == "done"
    assert m2 not in fake.inbox


def test_xml_variant_inbox_records_and_not_found(xapi, fake):
    p = xapi.proxy()
    m1 = fake.deliver(TIGER_V4, TIGER_V3, "Hi", "there")
    result = p.getInboxMessageById(m1.hex())
    assert result["inboxMessage"][0]["subject"] == b64("Hi")
    assert p.getInboxMessageById("00" * 32) == {"inboxMessage": []}
    assert p.getSentMessageById("00" * 16) == {"sentMessage": []}
    assert p.getSentMessageByAckData("00" * 38) == {"sentMessage": []}
    assert p.getAllInboxMessageIds() == {"inboxMessageIds": [{"msgid": m1.hex()}]}


def test_send_message_and_sent_folder(api, fake):
    p = api.proxy()
    me = p.createRandomAddress(b64("me"))
    ack = p.sendMessage(TIGER_V4[3:], me, b64("Subject"), b64("Body text"))
    assert re.fullmatch(r"[0-9a-f]{76}", ack)
    assert p.getStatus(ack) == "msgqueued"
    ack_b = p.sendBroadcast(me, b64("News"), b64("for everyone"), 3, 7200)
    assert p.getStatus(ack_b) == "broadcastqueued"
    sent = json.loads(p.getAllSentMessages())["sentMessages"]
    assert len(sent) == 2
    msg, bcast = sent
    assert msg["toAddress"] == TIGER_V4 and msg["fromAddress"] == me
    assert unb64(msg["subject"]) == b"Subject" and unb64(msg["message"]) == b"Body text"
    assert msg["status"] == "msgqueued" and msg["ackData"] == ack and msg["encodingType"] == 2
    assert set(msg) == {"msgid", "toAddress", "fromAddress", "subject", "message", "encodingType",
                        "lastActionTime", "status", "ackData"}
    assert bcast["toAddress"] == "[Broadcast subscribers]" and bcast["encodingType"] == 3
    ids = json.loads(p.getAllSentMessageIds())["sentMessageIds"]
    assert ids == [{"msgid": msg["msgid"]}, {"msgid": bcast["msgid"]}]
    assert json.loads(p.getAllSentMessageIDs()) == json.loads(p.getAllSentMessageIds())
    assert json.loads(p.getSentMessageById(msg["msgid"]))["sentMessage"] == [msg]
    assert json.loads(p.getSentMessageByID(msg["msgid"]))["sentMessage"] == [msg]
    assert json.loads(p.getSentMessageByAckData(ack))["sentMessage"] == [msg]
    assert json.loads(p.getSentMessagesBySender(me))["sentMessages"] == sent
    assert json.loads(p.getSentMessagesByAddress(me[3:]))["sentMessages"] == sent
    assert json.loads(p.getSentMessagesBySender(TIGER_V3))["sentMessages"] == []
    assert p.getSentMessageById("11" * 16) == "null"
    assert p.getSentMessageByAckData("11" * 38) == "null"
    assert p.trashSentMessage(msg["msgid"]) == "Trashed sent message (assuming message existed)."
    assert p.trashSentMessageByAckData(ack_b) == "Trashed sent message (assuming message existed)."
    assert json.loads(p.getAllSentMessages()) == {"sentMessages": []}
    # getStatus still finds trashed messages (the reference does not filter by folder)
    assert p.getStatus(ack) == "msgqueued"


def test_disseminate_prepared_object(api, fake):
    p = api.proxy()
    obj = bytes(8) + bytes.fromhex("00000000672a0000000000000201") + b"payload"
    assert p.disseminatePreEncryptedMsg(obj.hex()) == "ab" * 32
    assert p.disseminatePreparedObject(obj.hex(), 2000, 3000) == "ab" * 32
    assert fake.disseminated == [(obj, 1000, 1000), (obj, 2000, 3000)]
    assert legacy_error(22).match(p.disseminatePreEncryptedMsg("xyz"))
    assert legacy_error(21).match(p.disseminatePreEncryptedMsg("00", 0, 1000))


def test_client_status_and_connections(api, xapi):
    status = json.loads(api.proxy().clientStatus())
    assert status == {
        "networkConnections": 2,
        "numberOfMessagesProcessed": 5,
        "numberOfBroadcastsProcessed": 2,
        "numberOfPubkeysProcessed": 3,
        "pendingDownload": 7,
        "networkStatus": "connectedAndReceivingIncomingConnections",
        "softwareName": "PyBitmessage",
        "softwareVersion": bmnode.__version__,
    }
    assert xapi.proxy().clientStatus()["networkStatus"] == "connectedAndReceivingIncomingConnections"
    conns = json.loads(api.proxy().listConnections())
    assert conns == {
        "inbound": [{"host": "192.0.2.1", "port": 8444, "fullyEstablished": True,
                     "userAgent": "/PyBitmessage:0.6.3.2/"}],
        "outbound": [{"host": "198.51.100.7", "port": 8444, "fullyEstablished": False, "userAgent": ""}],
    }


@pytest.mark.parametrize(
    "count,incoming,expected",
    [
        (0, True, "notConnected"),
        (3, False, "connectedButHaveNotReceivedIncomingConnections"),
        (3, True, "connectedAndReceivingIncomingConnections"),
    ],
)
def test_network_status_strings(fake, count, incoming, expected):
    fake.client_status = lambda: ClientStatus(network_connections=count, received_incoming_connections=incoming)
    result = Commands(fake, variant="xml").call("clientStatus", ())
    assert result["networkStatus"] == expected and result["networkConnections"] == count


def test_shutdown_runs_after_the_reply(api, fake):
    assert api.proxy().shutdown() == "done"
    assert fake.shutdown_event.wait(10)
    assert fake.shutdowns == 1


def test_shutdown_may_stop_the_api_server_itself(fake):
    a = Api(fake)
    fake.shutdown = a.server.stop  # the node's shutdown stops the API from the request thread
    assert a.proxy().shutdown() == "done"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", a.port), timeout=1).close()
        except OSError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the API server kept listening after shutdown")


# ====================================================================== credentials


def test_generated_password_is_stored_0600_and_reused(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="bmnode.api")
    first = load_or_create_credentials(tmp_path)
    path = tmp_path / CREDENTIALS_FILE
    assert path.exists()
    assert (path.stat().st_mode & 0o777) == 0o600
    assert first.username == "bmnode" and len(first.password) >= 24 and ":" not in first.password
    assert str(path) in caplog.text
    second = load_or_create_credentials(tmp_path)
    assert (second.username, second.password) == (first.username, first.password)
    assert read_credentials(tmp_path).password == first.password
    renamed = load_or_create_credentials(tmp_path, username="alice")
    assert (renamed.username, renamed.password) == ("alice", first.password)


def test_generated_passwords_differ_between_data_dirs(tmp_path):
    a = load_or_create_credentials(tmp_path / "a")
    b = load_or_create_credentials(tmp_path / "b")
    assert a.password != b.password


def test_configured_password_wins_and_file_is_not_written(tmp_path):
    c = load_or_create_credentials(tmp_path, "bob", "pa:ss")
    assert (c.username, c.password) == ("bob", "pa:ss")
    assert not (tmp_path / CREDENTIALS_FILE).exists()
    assert c.check_header(basic_auth_header("bob", "pa:ss"))
    assert not c.check_header(basic_auth_header("bob", "pa"))


def test_bad_configured_credentials_are_refused(tmp_path):
    with pytest.raises(ConfigError):
        load_or_create_credentials(tmp_path, "a:b", "x")
    with pytest.raises(ConfigError):
        load_or_create_credentials(tmp_path, "a", "")
    with pytest.raises(ConfigError):
        load_or_create_credentials(tmp_path, "", "x")
    with pytest.raises(ConfigError):
        load_or_create_credentials(tmp_path, "a", "line\nbreak")


@pytest.mark.parametrize(
    "content",
    ['password = "unterminated', "username = \"u\"\n", 'password = ""\n', 'password = "x"\nextra = 1\n', "\xff"],
)
def test_broken_credentials_file_is_a_config_error(tmp_path, content):
    (tmp_path / CREDENTIALS_FILE).write_bytes(content.encode("latin-1"))
    with pytest.raises(ConfigError):
        load_or_create_credentials(tmp_path)


def test_credentials_file_with_special_characters_round_trips(tmp_path):
    (tmp_path / CREDENTIALS_FILE).write_text('username = "u"\npassword = "a\\"b\\\\c é:"\n')
    c = load_or_create_credentials(tmp_path)
    assert c.password == 'a"b\\c é:'
    assert c.check_header(basic_auth_header("u", 'a"b\\c é:'))
    assert "a\"b" not in repr(c)  # the password is not in the repr


def test_toml_writer_escapes(tmp_path):
    from bmnode.api.auth import _toml_string  # noqa: PLC0415 - private helper under test

    tricky = 'q"b\\s\x01\x7fé'
    assert tomllib.loads(f"v = {_toml_string(tricky)}")["v"] == tricky


def test_header_check_is_strict():
    c = ApiCredentials("u", "p")
    assert c.check_header("Basic " + base64.b64encode(b"u:p").decode())
    assert c.check_header("basic   " + base64.b64encode(b"u:p").decode())
    assert not c.check_header("Basic " + base64.b64encode(b"u:p ").decode())
    assert not c.check_header("Basic " + base64.b64encode(b"U:p").decode())
    assert not c.check_header(None)


# ====================================================================== robustness (hypothesis)

_xml_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\n\t"), max_size=80)
_values = st.recursive(
    st.booleans() | st.integers(-(2**31), 2**31 - 1) | st.floats(allow_nan=False) | _xml_text
    | st.binary(max_size=40).map(lambda b: b.hex()) | st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode())
    | st.sampled_from([TIGER_V4, TIGER_V3, CHAN_BITMESSAGE, TIGER_V4[3:]] + list(BAD_ADDRESSES.values())),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_xml_text, inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(sorted(set(ISSUE_COMMANDS + LEGACY_ONLY) - {"shutdown"}) + ["nope", ""]),
    params=st.lists(_values, max_size=8),
    variant=st.sampled_from(["legacy", "xml"]),
)
def test_any_arguments_give_a_result_or_a_numbered_error(method, params, variant):
    fake = FakeBackend()
    fake.identities[TIGER_V4] = Identity(TIGER_V4, "t")
    commands = Commands(fake, variant=variant)
    body, _ = handle_request_body(commands, xmlrpc.client.dumps(tuple(params), method or "x").encode())
    try:
        (value,), _ = xmlrpc.client.loads(body)
    except xmlrpc.client.Fault as f:
        assert variant == "xml"
        assert f.faultCode in ERROR_TEXTS, f
        assert f.faultCode != 21 or f.faultString.startswith("Unexpected API Failure - "), f
        return
    if variant == "legacy" and isinstance(value, str) and value.startswith("API Error "):
        assert re.match(r"^API Error (\d{4}): ", value)
        assert int(value[10:14]) in ERROR_TEXTS


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_body_gives_a_well_formed_response(body):
    commands = Commands(FakeBackend())
    response, after = handle_request_body(commands, body)
    assert after is None or callable(after)
    try:
        xmlrpc.client.loads(response)
    except xmlrpc.client.Fault as f:
        assert isinstance(f.faultCode, int)


# ====================================================================== the real Mailbox behind the API

class Inventory:
    """The objects every node has seen: what the process layer's inventory lookup by tag gives."""

    def __init__(self) -> None:
        self.objects: list[bytes] = []

    def lookup(self, tag: bytes) -> list[bytes]:
        return [obj for obj in self.objects if parse_object(obj).tag == tag]


def _mailbox(path, inventory: Inventory | None = None):
    lookup = inventory.lookup if inventory is not None else None
    return Mailbox(path, MailboxConfig(min_ntpb=1, min_extra=1), inventory_lookup=lookup)


class MailboxApi(Api):
    """An API server in front of a real Mailbox at the lowered 1:1 network difficulty."""

    def __init__(self, path, variant: str = "legacy", inventory: Inventory | None = None, **hooks) -> None:
        self.mailbox = _mailbox(path, inventory)
        self.shutdowns: list[int] = []
        hooks.setdefault("shutdown", lambda: self.shutdowns.append(1))
        super().__init__(MailboxBackend(self.mailbox, **hooks), variant=variant)

    def close(self) -> None:
        super().close()
        self.mailbox.close()


def _settle(*mailboxes, inventory: Inventory | None = None, rounds: int = 20) -> list[bytes]:
    """Do every node's PoW, hand every finished object to every node, until nothing moves."""
    pow_backend = PythonBackend()
    seen: list[bytes] = []
    for _ in range(rounds):
        now = int(time.time())
        new = []
        for mb in mailboxes:
            run_until_idle(mb, now, pow_backend)
            outs = mb.outbox()
            new.extend(o.object for o in outs if o.object not in seen and o.object not in new)
            mb.confirm_published([o.hash for o in outs])
        if not new:
            return seen
        seen.extend(new)
        if inventory is not None:
            inventory.objects.extend(new)
        for obj in new:
            for mb in mailboxes:
                mb.receive_object(obj, now)
    raise AssertionError("the mailboxes did not settle")


@pytest.fixture
def mbapi(tmp_path):
    a = MailboxApi(
        tmp_path / "a",
        connections=lambda: [Connection("192.0.2.9", 8444, inbound=True, fully_established=True, user_agent="/x/")],
        pending_download=lambda: 4,
    )
    yield a
    a.close()


def test_mailbox_satisfies_the_backend_protocols(mbapi):
    assert isinstance(mbapi.backend, ApiBackend)
    assert isinstance(mbapi.backend, NetworkBackend)


def test_mailbox_identities_through_the_api(mbapi):
    p = mbapi.proxy()
    me = p.createRandomAddress(b64("me"), False, 2)
    assert decode_address(me).ok
    assert p.getDeterministicAddress(b64(TIGER), 4, 1) == TIGER_V4
    assert json.loads(p.createDeterministicAddresses(b64(TIGER), 1)) == {"addresses": [TIGER_V4]}
    assert json.loads(p.createDeterministicAddresses(b64(TIGER), 1)) == {"addresses": []}
    assert p.createChan(b64("bitmessage")) == CHAN_BITMESSAGE
    assert p.createChan(b64("bitmessage")) == "API Error 0024: Chan address is already present."
    listing = json.loads(p.listAddresses())["addresses"]
    assert [r["address"] for r in listing] == [me, TIGER_V4, CHAN_BITMESSAGE]
    assert listing[0] == {"label": "me", "address": me, "stream": 1, "enabled": True, "chan": False}
    assert listing[2]["chan"] is True and listing[2]["label"] == "[chan] bitmessage"
    assert json.loads(p.listAddresses2())["addresses"][0]["label"] == b64("me")
    assert p.leaveChan(me) == (
        "API Error 0025: Specified address is not a chan address. Use deleteAddress API call instead."
    )
    assert p.leaveChan(CHAN_BITMESSAGE) == "success"
    assert p.joinChan(b64("not it"), CHAN_BITMESSAGE) == "API Error 0018: Chan name does not match address."
    assert p.joinChan(b64("bitmessage"), CHAN_BITMESSAGE) == "success"
    assert p.joinChan(b64("bitmessage"), CHAN_BITMESSAGE) == "API Error 0024: Chan address is already present."
    assert p.enableAddress(TIGER_V4, False) == "success"
    assert json.loads(p.listAddresses())["addresses"][1]["enabled"] is False
    assert p.sendMessage(me, TIGER_V4, b64("s"), b64("m")) == "API Error 0014: Your fromAddress is disabled. Cannot send."
    assert p.deleteAddress(TIGER_V4) == "success"
    assert p.deleteAddress(TIGER_V4) == "API Error 0013: Could not find this address in your keys.dat file."
    assert p.sendMessage(me, TIGER_V4, b64("s"), b64("m")) == (
        "API Error 0013: Could not find your fromAddress in the keys.dat file."
    )
    assert p.enableAddress(TIGER_V3) == "API Error 0013: Could not find this address in your keys.dat file."


def test_mailbox_contacts_through_the_api(mbapi):
    p = mbapi.proxy()
    assert p.addAddressBookEntry(TIGER_V4, b64("Tiger")) == f"Added address {TIGER_V4} to address book"
    assert p.addAddressBookEntry(TIGER_V4, b64("again")) == (
        "API Error 0016: You already have this address in your address book."
    )
    assert json.loads(p.listAddressBookEntries()) == {"addresses": [{"label": b64("Tiger"), "address": TIGER_V4}]}
    assert json.loads(p.listAddressBookEntries("nobody")) == {"addresses": []}
    assert p.deleteAddressBookEntry(TIGER_V4) == f"Deleted address book entry for {TIGER_V4} if it existed"
    assert json.loads(p.listAddressBookEntries()) == {"addresses": []}
    assert p.addSubscription(TIGER_V3, b64("old tiger")) == "Added subscription."
    assert p.addSubscription(TIGER_V3) == "API Error 0016: You are already subscribed to that address."
    assert json.loads(p.listSubscriptions()) == {
        "subscriptions": [{"label": b64("old tiger"), "address": TIGER_V3, "enabled": True}]
    }
    assert p.deleteSubscription(TIGER_V3) == "Deleted subscription if it existed."
    assert json.loads(p.listSubscriptions()) == {"subscriptions": []}


def test_mailbox_sent_folder_through_the_api(mbapi):
    p = mbapi.proxy()
    me = p.createRandomAddress(b64("me"))
    ack = p.sendMessage(TIGER_V4, me, b64("Hello"), b64("World"), 3, 7200)
    assert re.fullmatch(r"[0-9a-f]{76}", ack)
    assert p.getStatus(ack) == "msgqueued"
    handle = p.sendBroadcast(me, b64("News"), b64("Body"))
    assert p.getStatus(handle) == "broadcastqueued"
    sent = json.loads(p.getAllSentMessages())["sentMessages"]
    assert [(m["toAddress"], m["status"], m["ackData"]) for m in sent] == [
        (TIGER_V4, "msgqueued", ack), ("[Broadcast subscribers]", "broadcastqueued", handle)
    ]
    assert unb64(sent[0]["subject"]) == b"Hello" and unb64(sent[0]["message"]) == b"World"
    assert sent[0]["encodingType"] == 3
    assert json.loads(p.getSentMessageByAckData(ack))["sentMessage"] == [sent[0]]
    assert json.loads(p.getSentMessageById(sent[1]["msgid"]))["sentMessage"] == [sent[1]]
    assert json.loads(p.getSentMessagesBySender(me))["sentMessages"] == sent
    assert json.loads(p.getAllSentMessageIds()) == {"sentMessageIds": [{"msgid": m["msgid"]} for m in sent]}
    assert p.getSentMessageById("00" * 16) == "null"
    assert p.trashSentMessageByAckData(handle) == "Trashed sent message (assuming message existed)."
    assert [m["ackData"] for m in json.loads(p.getAllSentMessages())["sentMessages"]] == [ack]
    assert p.trashSentMessage(sent[0]["msgid"]) == "Trashed sent message (assuming message existed)."
    assert json.loads(p.getAllSentMessages()) == {"sentMessages": []}
    assert p.deleteAndVacuum() == "done"
    assert p.getStatus(ack) == "notfound"


def test_mailbox_node_commands_through_the_api(mbapi):
    p = mbapi.proxy()
    status = json.loads(p.clientStatus())
    assert status["networkConnections"] == 1
    assert status["networkStatus"] == "connectedAndReceivingIncomingConnections"
    assert status["pendingDownload"] == 4
    assert status["softwareName"] == "PyBitmessage"
    assert json.loads(p.listConnections())["inbound"] == [
        {"host": "192.0.2.9", "port": 8444, "fullyEstablished": True, "userAgent": "/x/"}
    ]
    assert p.shutdown() == "done"
    deadline = time.monotonic() + 10
    while not mbapi.shutdowns and time.monotonic() < deadline:
        time.sleep(0.01)
    assert mbapi.shutdowns == [1]


def test_mailbox_without_network_hooks(tmp_path):
    a = MailboxApi(tmp_path / "n", shutdown=None)
    try:
        p = a.proxy()
        assert json.loads(p.clientStatus())["networkStatus"] == "notConnected"
        assert p.listConnections().startswith("API Error 0021: ")
        assert p.shutdown().startswith("API Error 0021: ")
    finally:
        a.close()


def test_mailbox_disseminate_prepared_object(mbapi, tmp_path):
    other = _mailbox(tmp_path / "other")
    try:
        other.create_random_address("x")
        objects = _settle(other)  # its pubkey object, PoW done
        assert objects
        obj = objects[0]
        p = mbapi.proxy()
        assert p.disseminatePreparedObject(obj.hex()) == inventory_hash(obj).hex()
        assert obj in [o.object for o in mbapi.mailbox.outbox()]
        # nonce 0: the node does the PoW later; there is no hash to return yet
        assert p.disseminatePreEncryptedMsg((bytes(8) + obj[8:]).hex(), 1, 1) == "null"
        assert legacy_error(22).match(p.disseminatePreEncryptedMsg("00ff"))
    finally:
        other.close()


def test_two_mailboxes_exchange_messages_and_broadcasts_through_their_apis(tmp_path):
    inventory = Inventory()
    alice_node = MailboxApi(tmp_path / "alice", inventory=inventory)
    bob_node = MailboxApi(tmp_path / "bob", variant="xml", inventory=inventory)
    try:
        a, b = alice_node.proxy(), bob_node.proxy()
        alice = a.createRandomAddress(b64("alice"))
        bob = b.createRandomAddress(b64("bob"))
        _settle(alice_node.mailbox, bob_node.mailbox, inventory=inventory)  # pubkeys published
        ack = a.sendMessage(bob, alice, b64("Grüße"), b64("first line\nsecond line"))
        assert b.addSubscription(alice, b64("alice's news")) == "Added subscription."
        handle = a.sendBroadcast(alice, b64("Bulletin"), b64("to all"))
        _settle(alice_node.mailbox, bob_node.mailbox, inventory=inventory)
        assert a.getStatus(ack) == "ackreceived"
        assert a.getStatus(handle) == "broadcastsent"
        inbox = b.getAllInboxMessages()["inboxMessages"]
        got = sorted((unb64(m["subject"]).decode(), unb64(m["message"]).decode(), m["toAddress"]) for m in inbox)
        assert got == [("Bulletin", "to all", "[Broadcast subscribers]"), ("Grüße", "first line\nsecond line", bob)]
        assert all(m["fromAddress"] == alice and m["read"] == 0 for m in inbox)
        direct = next(m for m in inbox if unb64(m["subject"]) == "Grüße".encode())
        assert b.getInboxMessageById(direct["msgid"], True)["inboxMessage"][0]["read"] == 1
        assert b.getInboxMessagesByReceiver(bob)["inboxMessages"][0]["msgid"] == direct["msgid"]
        assert b.getAllInboxMessageIds()["inboxMessageIds"] == [{"msgid": m["msgid"]} for m in inbox]
        assert b.trashMessage(direct["msgid"]) == "Trashed message (assuming message existed)."
        assert direct["msgid"] not in [m["msgid"] for m in b.getAllInboxMessages()["inboxMessages"]]
        assert b.undeleteMessage(direct["msgid"]) == "Undeleted message"
        assert direct["msgid"] in [m["msgid"] for m in b.getAllInboxMessages()["inboxMessages"]]
        assert b.trashInboxMessage(direct["msgid"]) == "Trashed inbox message (assuming message existed)."
        status = json.loads(a.clientStatus())
        assert status["networkStatus"] == "notConnected"
        assert b.clientStatus()["numberOfMessagesProcessed"] >= 1
    finally:
        alice_node.close()
        bob_node.close()


def test_start_api_server_generates_credentials_a_client_can_read(tmp_path, fake):
    server = start_api_server(fake, tmp_path, "127.0.0.1", 0, auth_delay=0)
    try:
        host, port = server.address
        cred = read_credentials(tmp_path)
        assert cred is not None
        url = f"http://{cred.username}:{urllib.parse.quote(cred.password, safe='')}@{host}:{port}/"
        assert xmlrpc.client.ServerProxy(url).helloWorld("generated", "ok") == "generated-ok"
        with pytest.raises(xmlrpc.client.ProtocolError):
            xmlrpc.client.ServerProxy(f"http://{host}:{port}/").helloWorld("no", "auth")
    finally:
        server.stop()


def test_ipv6_loopback(fake):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        server = ApiServer(Commands(fake, variant="xml"), ApiCredentials(USER, "pw"), "::1", 0, auth_delay=0)
        server.start()
    except OSError:
        pytest.skip("cannot bind ::1 here")
    try:
        port = server.address[1]
        assert xmlrpc.client.ServerProxy(f"http://{USER}:pw@[::1]:{port}/").add(1, 1) == 2
    finally:
        server.stop()
