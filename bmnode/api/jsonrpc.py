"""The API as JSON-RPC (the reference's ``apivariant = json``): request bodies in, response bodies out.

The reference serves this variant with jsonrpclib's ``SimpleJSONRPCServer`` behind its usual
HTTP handler, so the transport is the XML-RPC one (:mod:`bmnode.api.xmlrpc`: ``POST /`` or
``/RPC2``, HTTP Basic auth, 401 after a delay) with ``Content-Type: application/json-rpc``.
Requests are JSON-RPC 2.0 objects (1.0-style ones, with an ``id`` and no ``jsonrpc``, are
accepted as the reference does; an ``id`` of ``null`` makes a notification, as in jsonrpclib)
or a batch (array) of them; responses always carry ``"jsonrpc": "2.0"``; results are native
JSON values (no JSON-in-a-string as in ``legacy``; ``null`` where a lookup finds nothing).

Errors as the reference words them: an API error is code -32603 with the message
``<class 'api.APIError'>:API Error 0013: ...`` (jsonrpclib prefixes the exception class), an
unknown method is API error 20 the same way, a body that is not JSON is -32700, a request
that is not one -32600; bad arguments to the ``system.*`` introspection calls are -32602.

Deliberate differences: an error answers with the request's ``id`` (the reference sends
``null``), a notification gets no response (the reference drops the connection), ``params``
given by name are matched to the reference's parameter names (the reference would pass the
names themselves), jsonrpclib's ``__jsonclass__`` hints are plain data, ``NaN``/``Infinity``
are refused as not JSON, and a batch is limited to :data:`MAX_BATCH` requests.
"""

from __future__ import annotations

import json
import logging
import xmlrpc.client
from typing import Any, Callable

from bmnode.api.commands import APIError, Commands
from bmnode.api.xmlrpc import SYSTEM_METHODS, introspect

__all__ = [
    "API_ERROR_PREFIX",
    "CONTENT_TYPE",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "MAX_BATCH",
    "PARSE_ERROR",
    "api_error_message",
    "handle_jsonrpc_body",
]

_log = logging.getLogger("bmnode.api")

CONTENT_TYPE = "application/json-rpc"
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
#: Requests in one batch; more is refused as a whole (-32600).
MAX_BATCH = 1000
#: What jsonrpclib puts before the text of an exception raised by the reference's dispatcher.
API_ERROR_PREFIX = "<class 'api.APIError'>:"
_SHOWN_BODY = 200


def api_error_message(error: APIError) -> str:
    """The error message the reference's JSON-RPC server gives for an API error."""
    return API_ERROR_PREFIX + str(error)


def _error(code: int, message: str, rid: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": rid}


def _encode(response: dict[str, Any]) -> str:
    """One response as JSON text; a result JSON cannot carry becomes an internal error."""
    try:
        return json.dumps(response, allow_nan=False)
    except (TypeError, ValueError) as e:
        _log.warning("cannot encode a JSON-RPC result: %s", e)
        fallback = _error(INTERNAL_ERROR, f"Unexpected API Failure - cannot encode the result: {e}", response.get("id"))
        try:
            return json.dumps(fallback)
        except (TypeError, ValueError):  # the id itself (never: it came from JSON)
            return json.dumps(_error(INTERNAL_ERROR, fallback["error"]["message"]))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse(body: bytes) -> Any:
    """The decoded request, or ValueError with a reason."""
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(str(e)) from None


def _single(commands: Commands, request: Any) -> tuple[dict[str, Any] | None, Callable[[], None] | None]:
    """Run one request: (response, or None for a notification; post-reply action)."""
    if not isinstance(request, dict):
        return _error(INVALID_REQUEST, f"Request must be an object, not {type(request).__name__}."), None
    rid = request.get("id")
    if "jsonrpc" not in request and "id" not in request:
        return _error(INVALID_REQUEST, "Request invalid: it has neither 'jsonrpc' nor 'id'."), None
    method = request.get("method")
    params = request.get("params", [])
    if not isinstance(method, str) or not method or not isinstance(params, (list, dict)):
        return _error(INVALID_REQUEST, "Invalid request parameters or method.", rid), None
    notification = rid is None
    after = None
    if method in SYSTEM_METHODS:
        args = tuple(params.values() if isinstance(params, dict) else params)
        try:
            response = {"jsonrpc": "2.0", "result": introspect(commands, method, args), "id": rid}
        except xmlrpc.client.Fault as e:  # bad use of system.methodHelp
            response = _error(INVALID_PARAMS, str(e.faultString), rid)
    else:
        reply = commands.dispatch(method, params)
        if reply.fault is not None:
            response = _error(INTERNAL_ERROR, api_error_message(reply.fault), rid)
        else:
            response = {"jsonrpc": "2.0", "result": reply.value, "id": rid}
            after = reply.after
    return (None if notification else response), after


def _chain(actions: list[Callable[[], None]]) -> Callable[[], None] | None:
    if not actions:
        return None
    if len(actions) == 1:
        return actions[0]

    def run() -> None:
        for action in actions:
            action()

    return run


def handle_jsonrpc_body(commands: Commands, body: bytes) -> tuple[bytes, Callable[[], None] | None]:
    """Decode a JSON-RPC request or batch, run it, encode the response (empty when every
    request was a notification); (body, post-reply action)."""
    try:
        request = _parse(body) if body else None  # jsonrpclib reads an empty body as no request
    except ValueError as e:
        shown = body[:_SHOWN_BODY].decode("utf-8", "replace") + ("..." if len(body) > _SHOWN_BODY else "")
        return _encode(_error(PARSE_ERROR, f"Request {shown!r} invalid. ({e})")).encode("utf-8"), None
    if not request:
        return _encode(_error(INVALID_REQUEST, "Request invalid -- no request data.")).encode("utf-8"), None
    if not isinstance(request, list):
        response, after = _single(commands, request)
        return (b"" if response is None else _encode(response).encode("utf-8")), after
    if len(request) > MAX_BATCH:
        message = f"Batch of {len(request)} requests is over the limit of {MAX_BATCH}; send it in parts."
        return _encode(_error(INVALID_REQUEST, message)).encode("utf-8"), None
    parts: list[str] = []
    actions: list[Callable[[], None]] = []
    for entry in request:
        response, after = _single(commands, entry)
        if response is not None:
            parts.append(_encode(response))
        if after is not None:
            actions.append(after)
    text = "[" + ",".join(parts) + "]" if parts else ""
    return text.encode("utf-8"), _chain(actions)
