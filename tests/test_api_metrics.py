"""``GET /metrics``: the Prometheus text renderer, the bounded gathering, the endpoint over the
API's HTTP server (test fakes, loopback), the node's parts and one scrape of a real node."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import signal
import threading
import time

import pytest

import bmnode
from bmnode.api.backend import BackendError
from bmnode.api.metrics import (
    CONTENT_TYPE,
    MetricError,
    Registry,
    escape_label_value,
    format_value,
    node_metrics,
)
from bmnode.api.scrape import Scraper
from tests import waiting
from tests.test_api import USER, Api, FakeBackend

# ====================================================================== a strict parser of format 0.0.4

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"(,|$)')


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], text)


def parse(text: str) -> dict[str, dict]:
    """{name: {"help", "type", "samples": {labels tuple: value}}}; AssertionError on anything
    that breaks the text format (HELP/TYPE once and before the samples, escaping, values)."""
    assert text.endswith("\n")
    fams: dict[str, dict] = {}
    current = None
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in fams, f"second HELP for {name}"
            fams[name] = {"help": _unescape(help_text), "type": None, "samples": {}}
            current = name
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name == current and fams[name]["type"] is None, f"TYPE of {name} misplaced or repeated"
            assert kind in ("counter", "gauge")
            fams[name]["type"] = kind
        else:
            m = _SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name, body, value = m.groups()
            assert name == current and fams[name]["type"], f"sample of {name} without its HELP/TYPE before it"
            labels = []
            if body:
                pos = 0
                while pos < len(body):
                    lm = _LABEL_PAIR.match(body, pos)
                    assert lm, f"bad labels in {line!r}"
                    labels.append((lm.group(1), _unescape(lm.group(2))))
                    pos = lm.end()
            key = tuple(sorted(labels))
            assert key not in fams[name]["samples"], f"duplicate sample {line!r}"
            fams[name]["samples"][key] = float(value)
    for name, fam in fams.items():
        assert name.startswith("bmnode_"), name
        assert (fam["type"] == "counter") == name.endswith("_total"), name
        assert fam["help"], name
    return fams


def value(fams: dict, name: str, **labels: str) -> float:
    return fams[name]["samples"][tuple(sorted(labels.items()))]


# ====================================================================== the renderer


def test_help_and_type_once_per_metric_with_its_samples_after_them():
    reg = Registry()
    reg.counter("bmnode_things_total", "Things.", 3, kind="a")
    reg.gauge("bmnode_level", "A level.", 1.5)
    reg.counter("bmnode_things_total", "Things.", 4, kind="b")
    assert reg.render() == (
        "# HELP bmnode_things_total Things.\n"
        "# TYPE bmnode_things_total counter\n"
        'bmnode_things_total{kind="a"} 3\n'
        'bmnode_things_total{kind="b"} 4\n'
        "# HELP bmnode_level A level.\n"
        "# TYPE bmnode_level gauge\n"
        "bmnode_level 1.5\n"
    )


def test_label_values_and_help_text_are_escaped():
    reg = Registry()
    nasty = 'a\\b"c\nd'
    reg.gauge("bmnode_info", "Two\nlines \\ here.", 1, version=nasty, other="plain")
    text = reg.render()
    assert 'version="a\\\\b\\"c\\nd"' in text
    assert "# HELP bmnode_info Two\\nlines \\\\ here.\n" in text
    fams = parse(text)
    assert fams["bmnode_info"]["help"] == "Two\nlines \\ here."
    assert value(fams, "bmnode_info", version=nasty, other="plain") == 1
    assert escape_label_value("x") == "x"


@pytest.mark.parametrize("kind, name", [
    ("counter", "bmnode_things"),  # a counter without _total
    ("gauge", "bmnode_things_total"),  # a gauge with it
    ("gauge", "other_things"),  # not ours
    ("gauge", "bmnode_bad-name"),
    ("gauge", "bmnode_1\n"),
    ("histogram", "bmnode_things"),
])
def test_names_and_kinds_the_format_or_our_rules_forbid_are_refused(kind, name):
    with pytest.raises(MetricError):
        Registry().add(kind, name, "help", 1)


def test_bad_labels_conflicts_and_duplicates_are_refused():
    reg = Registry()
    reg.gauge("bmnode_x", "X.", 1, a="1")
    with pytest.raises(MetricError):
        reg.gauge("bmnode_x", "X.", 2, a="1")  # the same series twice
    with pytest.raises(MetricError):
        reg.gauge("bmnode_x", "Another help.", 2, a="2")
    with pytest.raises(MetricError):
        reg.counter("bmnode_x", "X.", 2, a="3")
    with pytest.raises(MetricError):
        reg.add("gauge", "bmnode_y", "Y.", 1, {"bad-label": "v"})
    with pytest.raises(MetricError):
        reg.add("gauge", "bmnode_y", "Y.", 1, {"__reserved": "v"})
    with pytest.raises(MetricError):
        reg.gauge("bmnode_y", "Y.", "12")  # type: ignore[arg-type]
    assert reg.names() == ["bmnode_x"]


def test_values_are_written_as_the_format_wants():
    assert format_value(0) == "0"
    assert format_value(2**64) == str(2**64)
    assert format_value(True) == "1"
    assert format_value(2.0) == "2"
    assert format_value(0.25) == "0.25"
    assert format_value(math.nan) == "NaN"
    assert format_value(math.inf) == "+Inf"
    assert format_value(-math.inf) == "-Inf"


NET = {
    "objects_received": 10, "objects_accepted": 6, "objects_rejected": 3, "rejected_expired": 2,
    "rejected_insufficient_pow": 1, "objects_duplicate": 1, "objects_served": 4, "inv_sent": 12,
    "inventory": 42, "wanted": 5, "connections_inbound": 2, "dial_ok": 1, "bytes_received": 1000,
    "bytes_sent": 2000, "stem_objects": 0,
}
MAILBOX = {
    "pid": 1,
    "process": {"objects": 9, "pool_hits": 1, "pool_misses": 2, "processed": 7, "rpc": 3, "pow_submitted": 1},
    "pool": {"submitted": 3, "hits": 1, "misses": 2, "retried_stale": 0, "worker_restarts": 1, "abandoned": 0,
             "workers": 2, "generation": 4, "pending": 0},
    "mailbox": {"numberOfMessagesProcessed": 11, "numberOfBroadcastsProcessed": 12, "numberOfPubkeysProcessed": 13,
                "getpubkeysProcessed": 14, "acksReceived": 15, "inboxStored": 16, "pendingPowJobs": 17,
                "outbox": 18, "identities": 19},
    "outgoing": 1, "pow_jobs": 2, "inventory_mark": 40,
}
PROCESSES = [
    {"name": "net", "state": "running", "pid": 10, "restarts": 0},
    {"name": "mailbox", "state": "backoff", "pid": None, "restarts": 3},
]
CONNECTIONS = [{"inbound": True, "established": True}, {"inbound": False, "established": False},
               {"inbound": False, "established": True}, {"inbound": False, "established": True}]


def test_a_whole_node_renders_every_required_metric():
    text = node_metrics({"net": NET, "mailbox": MAILBOX, "processes": PROCESSES, "connections": CONNECTIONS},
                        {}, version="1.2.3", parts=["net", "mailbox", "supervisor"], duration=0.01)
    f = parse(text)
    assert value(f, "bmnode_up") == 1
    assert value(f, "bmnode_build_info", version="1.2.3") == 1
    for part in ("net", "mailbox", "supervisor"):
        assert value(f, "bmnode_scrape_error", part=part) == 0
    assert value(f, "bmnode_peer_connections", direction="inbound", state="established") == 1
    assert value(f, "bmnode_peer_connections", direction="inbound", state="handshake") == 0
    assert value(f, "bmnode_peer_connections", direction="outbound", state="established") == 2
    assert value(f, "bmnode_peer_connections", direction="outbound", state="handshake") == 1
    assert value(f, "bmnode_objects_received_total") == 10
    assert value(f, "bmnode_objects_accepted_total") == 6
    assert value(f, "bmnode_objects_rejected_total", reason="expired") == 2
    assert value(f, "bmnode_objects_rejected_total", reason="insufficient_pow") == 1
    assert value(f, "bmnode_objects_rejected_total", reason="malformed") == 0  # every reason, even unseen
    assert "ok" not in {dict(k).get("reason") for k in f["bmnode_objects_rejected_total"]["samples"]}
    assert value(f, "bmnode_objects_served_total") == 4
    assert value(f, "bmnode_inv_hashes_sent_total", kind="inv") == 12
    assert value(f, "bmnode_objects_injected_total") == 0  # not counted yet: 0, not absent
    assert value(f, "bmnode_inventory_objects") == 42
    assert value(f, "bmnode_objects_wanted") == 5
    assert value(f, "bmnode_peer_bytes_total", direction="sent") == 2000
    assert value(f, "bmnode_messages_processed_total") == 11
    assert value(f, "bmnode_broadcasts_processed_total") == 12
    assert value(f, "bmnode_pubkeys_processed_total") == 13
    assert value(f, "bmnode_acks_received_total") == 15
    assert value(f, "bmnode_inbox_stored_total") == 16
    assert value(f, "bmnode_pow_jobs_pending") == 17
    assert value(f, "bmnode_outbox_objects") == 18
    assert value(f, "bmnode_identities") == 19
    assert value(f, "bmnode_decrypt_pool_workers") == 2
    assert value(f, "bmnode_decrypt_pool_results_total", result="hit") == 1
    assert value(f, "bmnode_decrypt_pool_results_total", result="miss") == 2
    assert value(f, "bmnode_decrypt_pool_worker_restarts_total") == 1
    assert value(f, "bmnode_mailbox_objects_processed_total") == 7
    assert value(f, "bmnode_process_up", process="net") == 1
    assert value(f, "bmnode_process_up", process="mailbox") == 0
    assert value(f, "bmnode_process_restarts_total", process="mailbox") == 3


def test_a_part_that_did_not_answer_is_left_out_and_flagged():
    text = node_metrics({"net": NET, "connections": CONNECTIONS}, {"mailbox": "no answer within 3 s"},
                        version="1", parts=["net", "mailbox"])
    f = parse(text)
    assert value(f, "bmnode_scrape_error", part="mailbox") == 1
    assert value(f, "bmnode_scrape_error", part="net") == 0
    assert value(f, "bmnode_up") == 1
    assert "bmnode_messages_processed_total" not in f
    assert "bmnode_decrypt_pool_workers" not in f
    assert value(f, "bmnode_objects_received_total") == 10


def test_client_status_fills_in_only_what_no_process_section_gave():
    cs = {"numberOfMessagesProcessed": 5, "numberOfBroadcastsProcessed": 2, "numberOfPubkeysProcessed": 3,
          "pendingDownload": 7}
    f = parse(node_metrics({"client_status": cs}, {}, version="1"))
    assert value(f, "bmnode_messages_processed_total") == 5
    assert value(f, "bmnode_objects_wanted") == 7
    f = parse(node_metrics({"client_status": cs, "mailbox": MAILBOX, "net": NET}, {}, version="1"))
    assert value(f, "bmnode_messages_processed_total") == 11
    assert value(f, "bmnode_objects_wanted") == 5


# ====================================================================== bounded gathering


def test_a_hung_part_is_cut_off_and_not_started_again_while_it_hangs():
    release = threading.Event()
    calls = []

    def hung():
        calls.append(1)
        release.wait(30)
        return {"net": NET}

    def broken():
        raise BackendError(21, "the mailbox process did not answer in 2 s")

    scraper = Scraper({"net": hung, "mailbox": broken, "supervisor": lambda: None}, version="9", timeout=0.3)
    try:
        t0 = time.monotonic()
        sections, errors = scraper.gather()
        assert time.monotonic() - t0 < 2.0
        assert sections == {}
        assert errors["net"] == "no answer within 0.3 s"
        assert "did not answer" in errors["mailbox"]
        assert "supervisor" not in errors  # nothing to report is not an error
        f = parse(scraper())
        assert value(f, "bmnode_scrape_error", part="net") == 1
        assert value(f, "bmnode_scrape_error", part="mailbox") == 1
        assert value(f, "bmnode_scrape_error", part="supervisor") == 0
        assert len(calls) == 1  # the second scrape waited on the hung call instead of starting another
        _, errors = scraper.gather()
        assert errors["net"] == "no answer within 0.3 s" and len(calls) == 1
        release.set()
        assert waiting.until(lambda: "net" not in scraper.gather()[1], timeout=5)
        n = len(calls)
        sections, errors = scraper.gather()
        assert len(calls) == n + 1 and sections["net"] is NET  # a finished call is never reused
    finally:
        release.set()


def test_concurrent_scrapes_share_one_call_of_a_part():
    gate = threading.Event()
    calls = []

    def slow():
        calls.append(1)
        gate.wait(5)
        return {"net": NET}

    scraper = Scraper({"net": slow}, version="9", timeout=5)
    results = []
    threads = [threading.Thread(target=lambda: results.append(scraper.gather())) for _ in range(3)]
    for t in threads:
        t.start()
    assert waiting.until(lambda: len(calls) == 1, timeout=5)
    time.sleep(0.1)
    gate.set()
    for t in threads:
        t.join(5)
    assert len(calls) == 1
    assert [errors for _, errors in results] == [{}, {}, {}]
    assert all(sections["net"] is NET for sections, _ in results)


# ====================================================================== the endpoint (test fakes)


def _get(api: Api, path: str = "/metrics", auth: str | None = "default") -> tuple[int, dict, bytes]:
    if auth == "default":
        auth = api.credentials.header()
    head = f"GET {path} HTTP/1.1\r\nHost: x\r\n"
    if auth is not None:
        head += f"Authorization: {auth}\r\n"
    return api.raw((head + "\r\n").encode())


@pytest.fixture
def api():
    a = Api(FakeBackend())
    yield a
    a.close()


def test_metrics_need_the_api_credentials(api):
    status, headers, body = _get(api, auth=None)
    assert status == 401 and body == b""
    assert headers["www-authenticate"].startswith("Basic")
    wrong = "Basic " + base64.b64encode(f"{USER}:wrong".encode()).decode()
    assert _get(api, auth=wrong)[0] == 401
    status, headers, _ = _get(api)
    assert status == 200
    assert headers["content-type"] == CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_refused_scrapes_wait_the_auth_delay():
    a = Api(FakeBackend(), auth_delay=0.4)
    try:
        t0 = time.monotonic()
        assert _get(a, auth=None)[0] == 401
        assert time.monotonic() - t0 >= 0.4
    finally:
        a.close()


def test_metrics_carry_the_backend_values(api):
    status, _, body = _get(api)
    assert status == 200
    f = parse(body.decode("utf-8"))
    assert value(f, "bmnode_up") == 1
    assert value(f, "bmnode_build_info", version=bmnode.__version__) == 1
    assert value(f, "bmnode_scrape_error", part="backend") == 0
    # FakeBackend: clientStatus 5/2/3 processed, 7 pending; one inbound established, one outbound not
    assert value(f, "bmnode_messages_processed_total") == 5
    assert value(f, "bmnode_broadcasts_processed_total") == 2
    assert value(f, "bmnode_pubkeys_processed_total") == 3
    assert value(f, "bmnode_objects_wanted") == 7
    assert value(f, "bmnode_peer_connections", direction="inbound", state="established") == 1
    assert value(f, "bmnode_peer_connections", direction="outbound", state="handshake") == 1
    api.backend.connections = []
    f = parse(_get(api)[2].decode())
    assert value(f, "bmnode_peer_connections", direction="inbound", state="established") == 0


def test_a_failing_part_gives_scrape_error_and_still_200():
    fake = FakeBackend()

    def broken():
        raise BackendError(21, "the mailbox process did not answer in 2 s")

    fake.client_status = broken
    a = Api(fake)
    try:
        status, _, body = _get(a)
        assert status == 200
        f = parse(body.decode())
        assert value(f, "bmnode_scrape_error", part="backend") == 1
        assert value(f, "bmnode_up") == 1
        assert "bmnode_messages_processed_total" not in f
    finally:
        a.close()


def test_a_hung_part_neither_hangs_the_scrape_nor_blocks_other_requests():
    release = threading.Event()
    scraper = Scraper({"mailbox": lambda: release.wait(30) and None}, version="x", timeout=0.5)
    a = Api(FakeBackend(), metrics=scraper)
    try:
        result = {}

        def scrape():
            result["reply"] = _get(a)
            result["at"] = time.monotonic()

        t0 = time.monotonic()
        th = threading.Thread(target=scrape)
        th.start()
        assert a.proxy().helloWorld("a", "b") == "a-b"
        answered = time.monotonic() - t0
        th.join(5)
        assert answered < 0.4  # not behind the hung scrape
        status, _, body = result["reply"]
        assert status == 200 and result["at"] - t0 < 2.0
        assert value(parse(body.decode()), "bmnode_scrape_error", part="mailbox") == 1
    finally:
        release.set()
        a.close()


def test_other_get_paths_and_post_keep_their_behaviour(api):
    assert _get(api, "/")[0] == 501
    assert _get(api, "/metricsx")[0] == 501
    assert _get(api, "/RPC2")[0] == 501
    assert api.raw(b"HEAD /metrics HTTP/1.0\r\n\r\n")[0] == 501
    assert api.post(b"<methodCall/>", path="/metrics")[0] == 404
    assert api.proxy().helloWorld("x", "y") == "x-y"


def test_metrics_can_be_switched_off(api):
    api.server.metrics = None
    assert _get(api)[0] == 501


# ====================================================================== the node's parts


def test_node_parts_report_dead_processes_within_the_bound(tmp_path):
    from bmnode.node import bus
    from bmnode.node.apiproc import BrokerView, NetView, RpcClient, metrics_parts

    e = bus.Endpoints(tmp_path)
    net, client, broker = NetView(e.net, timeout=0.3), RpcClient(e.mailbox, timeout=0.3), BrokerView(e.pow, timeout=0.3)
    status = tmp_path / "supervisor.json"
    scraper = Scraper(metrics_parts(net, client, status, supervisor_pid=os.getpid(), broker=broker),
                      version="v", timeout=1.0)
    try:
        for _ in range(2):  # the second time too: nothing piles up behind the first timeouts
            t0 = time.monotonic()
            f = parse(scraper())
            assert time.monotonic() - t0 < 2.0
            assert value(f, "bmnode_scrape_error", part="net") == 1
            assert value(f, "bmnode_scrape_error", part="mailbox") == 1
            assert value(f, "bmnode_scrape_error", part="pow") == 1
        assert value(f, "bmnode_scrape_error", part="supervisor") == 0  # no status file: not supervised
        assert "bmnode_process_up" not in f
        children = [{"name": "net", "state": "running", "restarts": 2}, {"name": "api", "state": "running"}]
        status.write_text(json.dumps({"pid": os.getpid(), "children": children}))
        f = parse(scraper())
        assert value(f, "bmnode_process_up", process="api") == 1
        assert value(f, "bmnode_process_restarts_total", process="net") == 2
        status.write_text(json.dumps({"pid": os.getpid() + 100000, "children": children}))  # an old node's file
        f = parse(scraper())
        assert value(f, "bmnode_scrape_error", part="supervisor") == 1
        assert "bmnode_process_up" not in f
        status.write_text("{not json")
        assert value(parse(scraper()), "bmnode_scrape_error", part="supervisor") == 1
    finally:
        client.close()
        net.close()
        broker.close()


def test_the_mailbox_part_reads_a_real_mailbox_process(tmp_path):
    from bmnode.node import bus
    from bmnode.node.apiproc import NetView, RpcClient, metrics_parts
    from bmnode.node.mailboxproc import MailboxService

    svc = MailboxService(tmp_path, bus.Endpoints(tmp_path), decrypt_workers=0).open()
    stop = threading.Event()
    loop = threading.Thread(target=svc.run, args=(stop,), daemon=True)
    loop.start()
    e = bus.Endpoints(tmp_path)
    net, client = NetView(e.net, timeout=0.3), RpcClient(e.mailbox, timeout=5)
    try:
        client.call("create_random_address", "metrics")
        parts = metrics_parts(net, client, tmp_path / "none.json")
        f = parse(Scraper(parts, version="v", timeout=5)())
        assert value(f, "bmnode_scrape_error", part="mailbox") == 0
        assert value(f, "bmnode_scrape_error", part="net") == 1
        assert value(f, "bmnode_identities") == 1
        assert value(f, "bmnode_decrypt_pool_workers") == 0
        assert value(f, "bmnode_mailbox_rpc_total") >= 2
        assert value(f, "bmnode_pow_jobs_pending") >= 0
    finally:
        client.close()
        net.close()
        stop.set()
        loop.join(10)
        svc.close()


def test_peer_bytes_count_closed_connections_exactly(tmp_path):
    """The net node's byte totals (what bmnode_peer_bytes_total shows) keep a closed
    connection's traffic to the last byte."""
    import asyncio

    from bmnode.net.node import RelayNode
    from bmnode.net.testnet import RawPeer, node_settings, wait_for

    async def main():
        node = RelayNode.open(node_settings(tmp_path / "n", tls=False))
        await node.start()
        try:
            peer = await RawPeer.connect(node.listen_port)
            await peer.handshake()
            assert await wait_for(lambda: len(node.established) == 1, 5)
            conn = next(iter(node.connections))
            peer.close()
            assert await wait_for(lambda: not node.connections, 5)
            assert conn.bytes_in > 0 and conn.bytes_out > 0
            assert node.peer_bytes() == (conn.bytes_in, conn.bytes_out)
            stats = node.stats()
            assert (stats["bytes_received"], stats["bytes_sent"]) == (conn.bytes_in, conn.bytes_out)
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(main(), 20))


# ====================================================================== a real node, scraped once


def test_a_real_node_serves_metrics(tmp_path):
    from bmnode.node.apiproc import NodeApi
    from bmnode.node.fullnode import LocalNode

    node = LocalNode(tmp_path / "n", name="metrics", network_pow="1:1", api_password="pw",
                     extra=("--no-dandelion", "--decrypt-workers", "1", "--no-tls"))
    node.start()
    try:
        node.wait_ready(60)
        api = NodeApi("127.0.0.1", node.api_port, "bmnode", "pw")
        import http.client

        def scrape() -> dict:
            conn = http.client.HTTPConnection("127.0.0.1", node.api_port, timeout=10)
            conn.request("GET", "/metrics", headers={"Authorization": api._auth})
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.getheader("Content-Type") == CONTENT_TYPE
            return parse(resp.read().decode())

        def complete():
            f = scrape()
            errors = {dict(k)["part"]: v for k, v in f["bmnode_scrape_error"]["samples"].items()}
            ups = f.get("bmnode_process_up", {"samples": {}})["samples"]
            return f if not any(errors.values()) and ups and all(ups.values()) else None

        f = waiting.wait_until("a scrape with every part and every process up", complete, 30, 0.5)
        parts = {"net", "mailbox", "pow", "supervisor"}
        assert set(dict(k)["part"] for k in f["bmnode_scrape_error"]["samples"]) == parts
        assert {dict(k)["process"] for k in f["bmnode_process_up"]["samples"]} == {"net", "pow", "mailbox", "api"}
        assert value(f, "bmnode_identities") == 0
        assert value(f, "bmnode_inventory_objects") >= 0
        assert value(f, "bmnode_decrypt_pool_workers") == 1
        assert value(f, "bmnode_pow_broker_workers") == 1
        assert value(f, "bmnode_build_info", version=bmnode.__version__) == 1
        assert "bmnode_objects_received_total" in f
        assert "bmnode_peer_bytes_total" in f

        # A mailbox that does not answer (stopped): its metrics are left out within the bound,
        # the scrape still answers 200 and other API calls do not wait behind it.
        mailbox_pid = node.children()["mailbox"]["pid"]
        os.kill(mailbox_pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            f = scrape()
            assert time.monotonic() - t0 < 5.0
            assert value(f, "bmnode_scrape_error", part="mailbox") == 1
            assert value(f, "bmnode_scrape_error", part="net") == 0
            assert "bmnode_identities" not in f
            assert "bmnode_inventory_objects" in f
            t0 = time.monotonic()
            assert api.call("listConnections") == {"inbound": [], "outbound": []}  # net side only
            assert time.monotonic() - t0 < 1.0
        finally:
            os.kill(mailbox_pid, signal.SIGCONT)
        waiting.wait_until("the mailbox part back", lambda: value(scrape(), "bmnode_scrape_error", part="mailbox") == 0,
                           10, 0.2)
    finally:
        node.stop(20)
