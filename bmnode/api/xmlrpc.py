"""The API's HTTP transport (spec 14.1): XML-RPC over HTTP/1.0 with mandatory Basic auth.

The ``json`` variant uses the same transport with JSON-RPC bodies (:mod:`bmnode.api.jsonrpc`).

``POST /`` or ``POST /RPC2`` with a ``Content-Length`` and a ``methodCall`` body; other paths
answer 404, a missing length 411, an oversized body 413, missing or wrong credentials 401
after a short delay (2 s like the reference, configurable), too many requests at once 503.
A client has ``read_limit`` seconds (60) from its connection to send the whole request.
Each request runs in its own thread (bounded), the connection is closed after each response,
``nil`` is never sent. :class:`ApiServer` runs in a background thread and stops cleanly.
``GET /metrics`` (same credentials) answers Prometheus text metrics (:mod:`bmnode.api.metrics`);
other GET requests are not served (501).
"""

from __future__ import annotations

import http.server
import logging
import random
import socket
import threading
import time
import xmlrpc.client
from pathlib import Path
from typing import Any, Callable

from bmnode.api.auth import ApiCredentials, load_or_create_credentials
from bmnode.api.commands import Commands
from bmnode.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from bmnode.api.scrape import Scraper, backend_parts

__all__ = [
    "ApiServer", "METRICS_PATH", "RPC_PATHS", "DEFAULT_MAX_BODY", "SYSTEM_METHODS", "handle_request_body", "introspect",
    "start_api_server",
]

_log = logging.getLogger("bmnode.api")

RPC_PATHS = ("/", "/RPC2")
METRICS_PATH = "/metrics"
#: Larger than any legitimate call (a maximal message is ~350 KB of base64, an object ~512 KB of hex).
DEFAULT_MAX_BODY = 8 * 1024 * 1024
_DRAIN_LIMIT = 1024 * 1024
SYSTEM_METHODS = ("system.listMethods", "system.methodHelp", "system.methodSignature")


def _fault_body(code: int, message: str) -> bytes:
    return xmlrpc.client.dumps(xmlrpc.client.Fault(code, message), methodresponse=True, encoding="utf-8").encode(
        "utf-8"
    )


def introspect(commands: Commands, method: str, params: tuple[Any, ...]) -> Any:
    """``system.listMethods``, ``system.methodHelp`` or ``system.methodSignature``; Fault 0 on bad use."""
    if method == "system.listMethods":
        return sorted(set(commands.method_names()) | set(SYSTEM_METHODS))
    if method == "system.methodHelp":
        name = params[0] if len(params) == 1 and isinstance(params[0], str) else None
        if name is None:
            raise xmlrpc.client.Fault(0, "system.methodHelp takes one method name")
        return commands.method_help(name)
    return "signatures not supported"  # system.methodSignature, as Python's own server answers


def handle_request_body(commands: Commands, body: bytes) -> tuple[bytes, Any]:
    """Decode a ``methodCall``, run it, encode the ``methodResponse``; (body, post-reply action)."""
    try:
        params, method = xmlrpc.client.loads(body)
    except Exception as e:  # noqa: BLE001 - any parser failure is the client's malformed request
        return _fault_body(1, f"Malformed XML-RPC request: {type(e).__name__}: {e}"[:500]), None
    if not isinstance(method, str) or not method:
        return _fault_body(1, "Malformed XML-RPC request: not a methodCall"), None
    after = None
    try:
        if method in SYSTEM_METHODS:
            value: Any = introspect(commands, method, params)
        else:
            reply = commands.dispatch(method, params)
            if reply.fault is not None:
                return _fault_body(reply.fault.code, reply.fault.message), None
            value, after = reply.value, reply.after
        text = xmlrpc.client.dumps((value,), methodresponse=True, encoding="utf-8", allow_none=False)
    except xmlrpc.client.Fault as f:
        return _fault_body(f.faultCode, f.faultString), None
    except (TypeError, OverflowError, ValueError) as e:  # a value XML-RPC cannot carry (int over 32 bits)
        _log.warning("cannot encode the result of %s: %s", method, e)
        message = f"Unexpected API Failure - {e}"
        if commands.variant == "legacy":
            text = xmlrpc.client.dumps((f"API Error 0021: {message}",), methodresponse=True, encoding="utf-8")
            return text.encode("utf-8"), None
        return _fault_body(21, message), None
    return text.encode("utf-8"), after


class _Handler(http.server.BaseHTTPRequestHandler):
    """One request; the server object carries the :class:`ApiServer`."""

    protocol_version = "HTTP/1.0"
    server_version = "bmnode-api"
    sys_version = ""
    server: _HTTPServer

    def setup(self) -> None:
        self.timeout = self.server.api.request_timeout
        super().setup()

    def _request_read(self) -> None:
        """The whole request has been read: the server's read deadline no longer applies."""
        self.server.reading_done(self.connection)

    def send_response(self, code: int, message: str | None = None) -> None:
        self._request_read()  # answering: what is left unread no longer matters
        super().send_response(code, message)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        _log.debug("%s %s", self.address_string(), format % args)

    def _plain(self, status: int, text: str = "", headers: dict[str, str] | None = None) -> None:
        body = text.encode("utf-8")
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    def _length(self) -> int | None:
        raw = self.headers.get("Content-Length")
        if raw is None:
            self._plain(411, "Content-Length required\n")
            return None
        raw = raw.strip()
        if not raw.isascii() or not raw.isdigit():
            self._plain(400, "bad Content-Length\n")
            return None
        length = int(raw)
        if length > self.server.api.max_body:
            self._plain(413, f"request body over {self.server.api.max_body} bytes\n")
            return None
        return length

    def _read(self, length: int) -> bytes | None:
        chunks = []
        left = length
        while left:
            chunk = self.rfile.read1(min(left, 1 << 20))  # what one recv gives: no refill loop
            if not chunk:
                return None
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _drain(self) -> None:
        """Read and drop a small body we will not use, so that closing does not reset the client."""
        length = self.headers.get("Content-Length", "").strip()
        if length.isascii() and length.isdigit() and int(length) <= _DRAIN_LIMIT:
            try:
                self._read(int(length))
            except OSError:
                pass

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        api = self.server.api
        if not api._slots.acquire(timeout=api.slot_wait):
            self._drain()
            self._plain(503, "too many concurrent API requests\n")
            return
        try:
            self._post(api)
        except (ConnectionError, TimeoutError, socket.timeout):
            self.close_connection = True
        finally:
            api._slots.release()

    def _authorized(self, api: ApiServer) -> bool:
        """True with good Basic credentials; else 401 after the configured delay."""
        if api.credentials.check_header(self.headers.get("Authorization")):
            return True
        self._drain()
        self._request_read()
        _log.warning("API: refused a request from %s: missing or wrong credentials", self.client_address[0])
        if api.auth_delay > 0:
            time.sleep(api.auth_delay)
        self._plain(401, "", {"WWW-Authenticate": 'Basic realm="bmnode"'})
        return False

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        api = self.server.api
        if self.path.split("?", 1)[0] != METRICS_PATH or api.metrics is None:
            # what http.server answers for a method without a handler, as before /metrics existed
            self.send_error(501, f"Unsupported method ({self.command!r})")
            return
        if not api._slots.acquire(timeout=api.slot_wait):
            self._plain(503, "too many concurrent API requests\n")
            return
        try:
            if not self._authorized(api):
                return
            try:
                body = api.metrics().encode("utf-8")  # a lone surrogate in a label fails here too
            except Exception:  # noqa: BLE001 - answer 500, keep serving
                _log.exception("API: metrics failed")
                self._plain(500, "internal error\n")
                return
            self.send_response(200)
            self.send_header("Content-Type", METRICS_CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
        except (ConnectionError, TimeoutError, socket.timeout):
            self.close_connection = True
        finally:
            api._slots.release()

    def _post(self, api: ApiServer) -> None:
        if self.path not in RPC_PATHS:
            self._drain()
            self._plain(404, "No such page\n")
            return
        length = self._length()
        if length is None:
            return
        if not self._authorized(api):
            return
        body = self._read(length)
        if body is None:
            self.close_connection = True
            return
        self._request_read()
        try:
            response, after = api.handle_body(body)
        except Exception:  # noqa: BLE001 - answer 500 like the reference, keep serving
            _log.exception("API: internal error")
            self._plain(500, "internal error\n")
            return
        self.send_response(200)
        self.send_header("Content-Type", api.content_type)
        self.send_header("Content-Length", str(len(response)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(response)
        self.wfile.flush()
        self.close_connection = True
        if after is not None:
            try:
                self.connection.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            after()


class _HTTPServer(http.server.ThreadingHTTPServer):
    """Also bounds the time a client takes to send its request: a connection whose headers
    and body are not in within ``api.read_limit`` seconds of its accept is shut down, so a
    client that trickles bytes (each under the per-read timeout) cannot hold a thread or a
    request slot for ever, before or after authentication."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    api: ApiServer

    def server_activate(self) -> None:
        self._reading: dict[socket.socket, float] = {}
        self._reading_lock = threading.Lock()
        super().server_activate()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._reading_lock:
            self._reading[request] = time.monotonic() + self.api.read_limit
        super().process_request(request, client_address)

    def reading_done(self, request: Any) -> None:
        """The handler of ``request`` has read all it will read."""
        with self._reading_lock:
            self._reading.pop(request, None)

    def shutdown_request(self, request: Any) -> None:
        self.reading_done(request)
        super().shutdown_request(request)

    def service_actions(self) -> None:
        """Called by ``serve_forever`` every poll interval: cut the requests past their read deadline."""
        now = time.monotonic()
        with self._reading_lock:
            late = [r for r, deadline in self._reading.items() if deadline <= now]
            for r in late:
                del self._reading[r]
        for r in late:
            _log.info("API: closing a connection that did not send its request within %g s", self.api.read_limit)
            try:
                r.shutdown(socket.SHUT_RDWR)  # wakes the handler's blocked read with end-of-file
            except OSError:
                pass


class ApiServer:
    """The API server (XML-RPC, or JSON-RPC for the ``json`` variant): ``start()`` binds and
    serves in a thread, ``stop()`` ends it."""

    def __init__(
        self,
        commands: Commands,
        credentials: ApiCredentials,
        host: str = "127.0.0.1",
        port: int = 8442,
        *,
        auth_delay: float = 2.0,
        max_body: int = DEFAULT_MAX_BODY,
        max_concurrent: int = 32,
        slot_wait: float = 1.0,
        request_timeout: float = 30.0,
        read_limit: float = 60.0,
        random_port_fallback: bool = False,
        metrics: Callable[[], str] | None = None,
    ) -> None:
        if credentials is None or not credentials.password:
            raise ValueError("the API never runs without credentials")
        self.commands = commands
        self.credentials = credentials
        self.protocol = "XML-RPC"
        self.content_type = "text/xml"
        self._handle: Callable[[Commands, bytes], tuple[bytes, Any]] = handle_request_body
        if commands.variant == "json":
            from bmnode.api.jsonrpc import CONTENT_TYPE, handle_jsonrpc_body  # it imports this module

            self.protocol, self.content_type, self._handle = "JSON-RPC", CONTENT_TYPE, handle_jsonrpc_body
        self.host = host
        self.port = port
        self.auth_delay = auth_delay
        self.max_body = max_body
        self.request_timeout = request_timeout
        #: seconds from a connection's accept to the end of its request (headers and body)
        self.read_limit = read_limit
        self.random_port_fallback = random_port_fallback
        self._slots = threading.BoundedSemaphore(max_concurrent)
        #: how long a request waits for a free slot before its 503: a client's next request can
        #: arrive before the thread that answered its previous one has let go of its slot
        self.slot_wait = slot_wait
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        if metrics is None:
            metrics = Scraper(backend_parts(commands), version=commands.software_version)
        #: ``GET /metrics``: returns the exposition text (bounded in time; see bmnode.api.scrape)
        self.metrics: Callable[[], str] | None = metrics

    def handle_body(self, body: bytes) -> tuple[bytes, Any]:
        """Run one request body of this server's protocol: (response body, post-reply action)."""
        return self._handle(self.commands, body)

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); valid after :meth:`start`."""
        if self._httpd is None:
            raise RuntimeError("the API server is not started")
        return self._httpd.server_address[0], self._httpd.server_address[1]

    def _bind(self, port: int) -> _HTTPServer:
        cls = _HTTPServer
        if ":" in self.host:
            cls = type("_HTTPServer6", (_HTTPServer,), {"address_family": socket.AF_INET6})
        return cls((self.host, port), _Handler)

    def start(self) -> tuple[str, int]:
        """Bind and start serving in a daemon thread; returns the bound address."""
        if self._httpd is not None:
            raise RuntimeError("the API server is already started")
        try:
            httpd = self._bind(self.port)
        except OSError:
            if not self.random_port_fallback:
                raise
            httpd = None
            for _ in range(50):  # the reference's fallback: random ports 32767-65535
                port = random.randint(32767, 65535)
                try:
                    httpd = self._bind(port)
                    break
                except OSError:
                    continue
            if httpd is None:
                raise
            _log.warning("API port %d busy; listening on %d instead", self.port, httpd.server_address[1])
        httpd.api = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="api", daemon=True)
        self._thread.start()
        host, port = self.address
        _log.info("%s API (%s variant) listening on %s:%d", self.protocol, self.commands.variant, host, port)
        return host, port

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting requests and close the socket (idempotent; safe from a request thread)."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._httpd = None
        httpd.shutdown()
        httpd.server_close()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> ApiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_api_server(
    backend: Any,
    data_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8442,
    *,
    username: str | None = None,
    password: str | None = None,
    variant: str = "legacy",
    **server_options: Any,
) -> ApiServer:
    """Credentials (configured, stored or generated, see :mod:`bmnode.api.auth`), commands over
    ``backend`` and a started :class:`ApiServer`: what the node's API process runs."""
    credentials = load_or_create_credentials(data_dir, username, password)
    server = ApiServer(Commands(backend, variant=variant), credentials, host, port, **server_options)
    server.start()
    return server
