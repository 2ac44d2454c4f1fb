"""The API's JSON-RPC variant (the reference's ``apivariant = json``): real HTTP on 127.0.0.1.

The server runs in-process in front of a real Mailbox (tests/test_api.py's MailboxApi) or the
fake backend; requests are raw JSON-RPC bodies so that the exact wire shapes are checked. The
XML-RPC variants must keep answering as before on the same server class.
"""

from __future__ import annotations

import json
import re
import time
import xmlrpc.client

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmnode.api.commands import Commands
from bmnode.api.jsonrpc import API_ERROR_PREFIX, MAX_BATCH, handle_jsonrpc_body
from bmnode.crypto.addresses import decode_address
from bmnode.errors import ConfigError
from bmnode.node.apiproc import NodeApi, NodeApiError, write_api_file
from bmnode.node.config import NodeConfig, load_config
from tests.test_api import (
    BAD_ADDRESSES,
    PASSWORD,
    TIGER,
    TIGER_V4,
    USER,
    Api,
    FakeBackend,
    MailboxApi,
    _settle,
    b64,
    unb64,
)


def post(api: Api, body: bytes | str, *, auth: str | None = "default", path: str = "/") -> tuple[int, dict, bytes]:
    """POST a JSON-RPC body (as a JSON-RPC client does) and read the whole answer."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    if auth == "default":
        auth = api.credentials.header()
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json-rpc\r\nContent-Length: {len(data)}\r\n"
    if auth is not None:
        head += f"Authorization: {auth}\r\n"
    return api.raw((head + "\r\n").encode() + data)


def rpc(api: Api, method: str, *params, rid: object = 1) -> dict:
    """One call; the decoded response object (after checking the HTTP layer)."""
    status, headers, body = post(api, json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": list(params)}))
    assert status == 200 and headers["content-type"] == "application/json-rpc"
    assert headers["content-length"] == str(len(body))
    doc = json.loads(body)
    assert doc["jsonrpc"] == "2.0" and doc["id"] == rid
    assert ("result" in doc) != ("error" in doc)
    return doc


def result(api: Api, method: str, *params):
    doc = rpc(api, method, *params)
    assert "error" not in doc, doc
    return doc["result"]


def api_error(api: Api, method: str, *params) -> tuple[int, str]:
    """(API error number, its text) of a call that must fail the way the reference's does."""
    doc = rpc(api, method, *params)
    assert doc["error"]["code"] == -32603, doc
    message = doc["error"]["message"]
    found = re.fullmatch(r"<class 'api\.APIError'>:API Error (\d{4}): (.*)", message, re.DOTALL)
    assert found, message
    return int(found.group(1)), found.group(2)


@pytest.fixture
def japi(tmp_path):
    a = MailboxApi(tmp_path / "j", variant="json")
    yield a
    a.close()


@pytest.fixture
def fjapi():
    a = Api(FakeBackend(), variant="json")
    yield a
    a.close()


# ====================================================================== calls and results


def test_hello_world_and_add_wire_shape(japi):
    status, headers, body = post(japi, '{"jsonrpc": "2.0", "method": "helloWorld", "params": ["hello", "world"], "id": 7}')
    assert status == 200 and headers["content-type"] == "application/json-rpc"
    assert json.loads(body) == {"jsonrpc": "2.0", "result": "hello-world", "id": 7}
    assert result(japi, "add", 69, 42) == 111
    assert result(japi, "add", 2**40, 0.5) == 2**40 + 0.5  # no 32-bit limit as in XML-RPC
    assert rpc(japi, "helloWorld", "a", "b", rid="text-id")["result"] == "a-b"
    status, _, body = post(japi, '{"jsonrpc": "2.0", "method": "add", "params": [1, 2], "id": 1}', path="/RPC2")
    assert status == 200 and json.loads(body)["result"] == 3


def test_create_random_address_and_list_addresses_are_native_values(japi):
    me = result(japi, "createRandomAddress", b64("me"))
    assert decode_address(me).ok
    assert result(japi, "createDeterministicAddresses", b64(TIGER), 1) == {"addresses": [TIGER_V4]}
    listing = result(japi, "listAddresses")
    assert isinstance(listing, dict)  # not the legacy variant's JSON text
    assert [r["address"] for r in listing["addresses"]] == [me, TIGER_V4]
    assert listing["addresses"][0] == {"label": "me", "address": me, "stream": 1, "enabled": True, "chan": False}
    assert result(japi, "listAddresses2")["addresses"][0]["label"] == b64("me")


def test_send_message_to_self_arrives_in_the_inbox(japi):
    me = result(japi, "createRandomAddress", b64("me"))
    ack = result(japi, "sendMessage", me, me, b64("Grüße"), b64("to myself"))
    assert re.fullmatch(r"[0-9a-f]+", ack)
    assert result(japi, "getStatus", ack) in ("msgqueued", "doingmsgpow", "msgsent", "ackreceived")
    _settle(japi.mailbox)
    inbox = result(japi, "getAllInboxMessages")["inboxMessages"]
    assert len(inbox) == 1
    m = inbox[0]
    assert (m["toAddress"], m["fromAddress"]) == (me, me)
    assert unb64(m["subject"]) == "Grüße".encode() and unb64(m["message"]) == b"to myself"
    assert isinstance(m["encodingType"], int) and m["read"] == 0
    assert isinstance(m["receivedTime"], str)  # the reference's TEXT column, as in the other variants
    assert result(japi, "getInboxMessageById", m["msgid"], True)["inboxMessage"][0]["read"] == 1
    assert result(japi, "getSentMessageByAckData", ack)["sentMessage"][0]["ackData"] == ack


def test_lookups_that_find_nothing_are_null(japi):
    assert rpc(japi, "getSentMessageById", "00" * 16)["result"] is None
    assert rpc(japi, "getInboxMessageById", "00" * 16)["result"] is None
    assert rpc(japi, "getSentMessageByAckData", "00" * 32)["result"] is None


def test_params_by_name_use_the_references_parameter_names(japi):
    body = {"jsonrpc": "2.0", "id": 1, "method": "helloWorld", "params": {"b": "world", "a": "hello"}}
    assert json.loads(post(japi, json.dumps(body))[2])["result"] == "hello-world"
    body = {"jsonrpc": "2.0", "id": 2, "method": "createRandomAddress", "params": {"label": b64("named")}}
    me = json.loads(post(japi, json.dumps(body))[2])["result"]
    assert decode_address(me).ok
    body = {"jsonrpc": "2.0", "id": 3, "method": "helloWorld", "params": {"a": "x", "c": "y"}}
    doc = json.loads(post(japi, json.dumps(body))[2])
    assert doc["id"] == 3 and doc["error"]["code"] == -32603
    assert doc["error"]["message"].startswith(API_ERROR_PREFIX + "API Error 0000: Command helloWorld has no parameter named c")
    body = {"jsonrpc": "2.0", "id": 4, "method": "helloWorld", "params": {"b": "x"}}
    doc = json.loads(post(japi, json.dumps(body))[2])
    assert doc["error"]["message"] == API_ERROR_PREFIX + "API Error 0000: Command helloWorld needs parameter a"


def test_one_point_zero_style_requests_are_accepted(japi):
    status, _, body = post(japi, '{"method": "add", "params": [2, 3], "id": 5}')
    assert status == 200 and json.loads(body) == {"jsonrpc": "2.0", "result": 5, "id": 5}
    status, _, body = post(japi, '{"method": "add", "params": [2, 3]}')  # neither jsonrpc nor id
    assert json.loads(body)["error"]["code"] == -32600


def test_introspection(japi):
    methods = result(japi, "system.listMethods")
    assert "helloWorld" in methods and "system.methodHelp" in methods
    assert "listAddressbook" not in methods  # legacy-only aliases, as in the reference
    assert "helloWorld" in result(japi, "system.methodHelp", "helloWorld")
    assert rpc(japi, "system.methodHelp")["error"]["code"] == -32602


def test_shutdown_runs_after_the_reply(japi):
    assert result(japi, "shutdown") == "done"
    deadline = time.monotonic() + 10
    while not japi.shutdowns and time.monotonic() < deadline:
        time.sleep(0.01)
    assert japi.shutdowns == [1]


# ====================================================================== errors


def test_api_error_has_the_references_code_and_message(japi):
    code, text = api_error(japi, "decodeAddress", BAD_ADDRESSES[8])
    assert (code, text) == (8, "Checksum failed for address: " + BAD_ADDRESSES[8])
    assert api_error(japi, "deleteAddress", TIGER_V4) == (13, "Could not find this address in your keys.dat file.")
    assert api_error(japi, "getStatus", "00")[0] == 15
    assert api_error(japi, "createRandomAddress", "***")[0] == 22
    assert api_error(japi, "helloWorld", "only one") == (0, "Command helloWorld takes at least 3 parameters (1 given)")
    assert api_error(japi, "createRandomAddress", b64("x"), "yes")[0] == 23


def test_unknown_method_is_api_error_20(japi):
    assert api_error(japi, "test") == (20, "Invalid method: test")
    assert api_error(japi, "listAddressbook") == (20, "Invalid method: listAddressbook")


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"jsonrpc": "2.0", "method": "add", "params": [1, 2], "id": 1', b"\xff\xfe\x00garbage",
     b'[NaN]', b'{"jsonrpc": "2.0", "method": "add", "params": [Infinity, 1], "id": 1}', b"[" * 100000],
)
def test_malformed_json_is_a_parse_error(fjapi, body):
    status, headers, answer = post(fjapi, body)
    assert status == 200 and headers["content-type"] == "application/json-rpc"
    doc = json.loads(answer)
    assert doc["error"]["code"] == -32700 and doc["id"] is None
    assert doc["error"]["message"].startswith("Request ") and " invalid. (" in doc["error"]["message"]
    assert len(answer) < 2000  # the echoed body is cut short


@pytest.mark.parametrize(
    "body, rid, message",
    [
        (b"", None, "Request invalid -- no request data."),
        (b"{}", None, "Request invalid -- no request data."),
        (b"[]", None, "Request invalid -- no request data."),
        (b"17", None, "Request must be an object, not int."),
        (b'"add"', None, "Request must be an object, not str."),
        (b'{"jsonrpc": "2.0", "id": 3}', 3, "Invalid request parameters or method."),
        (b'{"jsonrpc": "2.0", "id": 3, "method": 5}', 3, "Invalid request parameters or method."),
        (b'{"jsonrpc": "2.0", "id": 3, "method": "add", "params": "1,2"}', 3, "Invalid request parameters or method."),
    ],
)
def test_invalid_requests(fjapi, body, rid, message):
    status, _, answer = post(fjapi, body)
    assert status == 200
    assert json.loads(answer) == {"jsonrpc": "2.0", "error": {"code": -32600, "message": message}, "id": rid}


@pytest.mark.parametrize("user, password", [(USER, "wrong"), ("other", PASSWORD), (None, None)])
def test_wrong_or_missing_credentials_get_401(japi, user, password):
    from bmnode.api.auth import basic_auth_header

    auth = basic_auth_header(user, password) if user else None
    status, headers, body = post(japi, '{"jsonrpc": "2.0", "method": "shutdown", "params": [], "id": 1}', auth=auth)
    assert status == 401 and body == b"" and "www-authenticate" in headers
    assert japi.shutdowns == []  # nothing ran


def test_other_paths_are_404(japi):
    assert post(japi, '{"jsonrpc": "2.0", "method": "add", "params": [1, 2], "id": 1}', path="/json")[0] == 404


# ====================================================================== batches and notifications


def test_batch_answers_in_order_and_leaves_out_notifications(japi):
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "add", "params": [1, 2]},
        {"jsonrpc": "2.0", "method": "addSubscription", "params": [TIGER_V4, b64("tiger")]},  # notification
        {"jsonrpc": "2.0", "id": "b", "method": "nope"},
        7,
        {"jsonrpc": "2.0", "id": 3, "method": "listSubscriptions"},
    ]
    status, headers, body = post(japi, json.dumps(batch))
    assert status == 200 and headers["content-type"] == "application/json-rpc"
    answers = json.loads(body)
    assert [a.get("id") for a in answers] == [1, "b", None, 3]
    assert answers[0]["result"] == 3
    assert answers[1]["error"]["message"] == API_ERROR_PREFIX + "API Error 0020: Invalid method: nope"
    assert answers[2]["error"]["code"] == -32600
    assert answers[3]["result"] == {"subscriptions": [{"label": b64("tiger"), "address": TIGER_V4, "enabled": True}]}


def test_notifications_run_and_get_an_empty_answer(japi):
    status, headers, body = post(japi, json.dumps({"jsonrpc": "2.0", "method": "addAddressBookEntry",
                                                   "params": [TIGER_V4, b64("t")]}))
    assert status == 200 and body == b"" and headers["content-length"] == "0"
    status, _, body = post(japi, json.dumps([{"jsonrpc": "2.0", "method": "add", "params": [1, 1]},
                                            {"method": "add", "params": [1, 1], "id": None}]))
    assert status == 200 and body == b""
    assert result(japi, "listAddressBookEntries") == {"addresses": [{"label": b64("t"), "address": TIGER_V4}]}


def test_oversized_batch_is_refused_as_a_whole(fjapi):
    batch = [{"jsonrpc": "2.0", "id": i, "method": "add", "params": [i, 1]} for i in range(MAX_BATCH + 1)]
    doc = json.loads(post(fjapi, json.dumps(batch))[2])
    assert doc["error"]["code"] == -32600 and str(MAX_BATCH) in doc["error"]["message"] and doc["id"] is None
    batch = batch[:MAX_BATCH]
    assert [a["result"] for a in json.loads(post(fjapi, json.dumps(batch))[2])] == [i + 1 for i in range(MAX_BATCH)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(max_size=200)
    | st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
            st.sampled_from(["jsonrpc", "id", "method", "params", "x"]), inner, max_size=5),
        max_leaves=12,
    ).map(lambda v: json.dumps(v).encode())
)
def test_any_body_gives_a_well_formed_answer(body):
    commands = Commands(FakeBackend(), variant="json")
    answer, after = handle_jsonrpc_body(commands, body)
    assert after is None or callable(after)
    if answer == b"":
        return  # notifications only
    doc = json.loads(answer)
    for item in doc if isinstance(doc, list) else [doc]:
        assert item["jsonrpc"] == "2.0" and "id" in item
        assert ("result" in item) != ("error" in item)
        if "error" in item:
            assert isinstance(item["error"]["code"], int) and isinstance(item["error"]["message"], str)


# ====================================================================== the client, the config, XML-RPC unchanged


def test_node_api_client_speaks_json_rpc_to_a_json_node(japi, tmp_path):
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    write_api_file(data_dir, japi.host, japi.port, "json")
    client = NodeApi.from_data_dir(data_dir, username=USER, password=PASSWORD)
    assert client.variant == "json"
    me = client.call("createRandomAddress", b64("cli"))
    assert [a["address"] for a in client.addresses()] == [me]
    assert client.call("helloWorld", "{x", "y}") == "{x-y}"  # strings stay strings
    with pytest.raises(NodeApiError) as err:
        client.call("deleteAddress", TIGER_V4)
    assert err.value.code == 13 and err.value.message == "Could not find this address in your keys.dat file."
    bad = NodeApi(japi.host, japi.port, USER, "wrong", variant="json")
    with pytest.raises(NodeApiError) as err:
        bad.call("add", 1, 1)
    assert err.value.code == 0 and "401" in str(err.value)


def test_config_accepts_the_json_variant(tmp_path):
    assert NodeConfig(data_dir=tmp_path, api_variant="json").api_variant == "json"
    assert NodeConfig(data_dir=tmp_path, api_variant=" JSON ").api_variant == "json"
    (tmp_path / "bmnode.toml").write_text('api_variant = "json"\n')
    assert load_config(tmp_path).api_variant == "json"
    with pytest.raises(ConfigError, match="legacy, xml, json"):
        NodeConfig(data_dir=tmp_path, api_variant="soap")


@pytest.mark.parametrize("variant", ["legacy", "xml"])
def test_xml_rpc_variants_answer_as_before(tmp_path, variant):
    a = MailboxApi(tmp_path / variant, variant=variant)
    try:
        p = a.proxy()
        assert p.helloWorld("hello", "world") == "hello-world"
        assert p.add(69, 42) == 111
        listing = p.listAddresses()
        assert listing == ('{\n    "addresses": []\n}' if variant == "legacy" else {"addresses": []})
        if variant == "legacy":
            assert p.test() == "API Error 0020: Invalid method: test"
            assert p.getSentMessageById("00" * 16) == "null"
        else:
            with pytest.raises(xmlrpc.client.Fault) as f:
                p.test()
            assert (f.value.faultCode, f.value.faultString) == (20, "Invalid method: test")
            assert p.getSentMessageById("00" * 16) == {"sentMessage": []}
        status, headers, body = a.post(b'{"jsonrpc": "2.0", "method": "add", "params": [1, 2], "id": 1}')
        assert status == 200 and headers["content-type"] == "text/xml" and b"<methodResponse>" in body
        assert b"<fault>" in body  # a JSON body is a malformed XML-RPC request there
    finally:
        a.close()
