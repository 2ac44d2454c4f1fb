"""The schema of every message on the node's ZeroMQ bus, and where each socket lives.

Every bus message is two frames, ``[topic, body]``: the topic is one ASCII word (PUB/SUB
filters on it), the body a msgpack map holding ``v`` (:data:`BUS_VERSION`) and the fields of
the message class registered for that topic. ROUTER sockets see routing frames before
those two; :func:`split` separates them. Bytes travel as msgpack bin (objects are carried
raw, never hex). :func:`decode` checks every field's type and bounds and raises
:class:`BusError` (a :class:`~bmnode.errors.MalformedMessage`) on anything else, so a
process never acts on garbage.

Sockets (``E`` = :class:`Endpoints` of a data directory, all ``ipc://`` files in it):

======================  ======  =========================================================
endpoint                binder  messages
======================  ======  =========================================================
``E.objects``           net     PUB: ``object`` (:class:`ObjectEvent`), ``stats``
                                (:class:`NetStats`), ``injected`` (:class:`InjectResult`)
``E.outbox``            net     PULL: ``inject`` (:class:`InjectRequest`)
``E.net``               net     ROUTER: ``inject`` -> ``injected``; ``get_stats`` -> ``stats``
``E.mailbox``           mailbox ROUTER: ``rpc`` (:class:`RpcRequest`) -> ``rpc.reply``
``E.pow``               broker  ROUTER for PoW clients: ``pow.*`` (also on tcp://)
``E.pow_workers``       broker  ROUTER for PoW workers: ``w.*`` (also on tcp://, inproc://)
======================  ======  =========================================================

A PoW client sends ``pow.submit`` and gets ``pow.accepted`` (or ``pow.failed``), later
``pow.result`` or ``pow.failed``; ``pow.cancel`` -> ``pow.cancelled``; ``pow.status`` ->
``pow.state``. A worker announces itself (and keeps alive) with ``w.heartbeat``, receives
``w.job`` / ``w.cancel`` and answers ``w.result`` or ``w.failed``; ``w.bye`` when it leaves.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tempfile
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

import msgpack

from bmnode.errors import MalformedMessage

__all__ = [
    "BUS_VERSION",
    "BusError",
    "BusMessage",
    "Endpoints",
    "MAX_BUS_MESSAGE",
    "MAX_POW_MESSAGE",
    "check_endpoint",
    "decode",
    "encode",
    "split",
    "topics",
]

#: Schema version carried in every body. A receiver refuses other versions.
BUS_VERSION = 1
#: Largest bus message a node socket accepts (an object is at most 2^18 bytes).
MAX_BUS_MESSAGE = 1 << 20
#: Largest mailbox reply to the API process (inbox listings carry whole messages).
MAX_RPC_REPLY = 1 << 28
#: Largest message the PoW broker's sockets accept (jobs and results are tiny).
MAX_POW_MESSAGE = 1 << 12
#: Default TCP ports of the PoW broker's remote side (clients, workers).
DEFAULT_POW_PORT = 8446
DEFAULT_POW_WORKER_PORT = 8447
#: A unix socket path longer than this cannot be bound (sun_path is 108 bytes).
MAX_IPC_PATH = 100

_U64_MAX = (1 << 64) - 1
_TOPIC = re.compile(rb"^[a-z][a-z0-9_.]{0,31}$")


class BusError(MalformedMessage):
    """A bus message that does not decode: wrong frame count, unknown topic, bad msgpack,
    other schema version, missing field or a field of the wrong type or size."""


# ------------------------------------------------------------------------------ schema


def _spec(*, length: int | None = None, min: int | None = None, max: int | None = None, maxlen: int | None = None) -> dict[str, Any]:
    return {k: v for k, v in (("length", length), ("min", min), ("max", max), ("maxlen", maxlen)) if v is not None}


def fld(default: Any = dataclasses.MISSING, **spec: Any) -> Any:
    """A message field with bounds: ``length`` (exact bytes), ``min``/``max`` (ints),
    ``maxlen`` (bytes/str/list/dict size)."""
    meta = {"bus": _spec(**spec)}
    if default is dataclasses.MISSING:
        return field(metadata=meta)
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


_REGISTRY: dict[str, type["BusMessage"]] = {}
_FIELDS: dict[type, list[tuple[str, Any, dict[str, Any], bool]]] = {}


class BusMessage:
    """Base of every bus message; subclasses are frozen dataclasses registered by topic."""

    topic: ClassVar[str] = ""
    #: largest encoded body accepted by :func:`decode` for this message type
    max_size: ClassVar[int] = MAX_BUS_MESSAGE

    def to_frames(self) -> list[bytes]:
        """``[topic, msgpack body]``."""
        return encode(self)


def _register(topic: str) -> Any:
    """Class decorator: make a frozen dataclass and register it under ``topic``."""

    def wrap(cls: type) -> type:
        if not _TOPIC.match(topic.encode("ascii")):
            raise ValueError(f"bad bus topic {topic!r}")
        if topic in _REGISTRY:
            raise ValueError(f"bus topic {topic!r} registered twice")
        dc = dataclass(frozen=True)(cls)
        dc.topic = topic
        hints = typing.get_type_hints(dc)
        _FIELDS[dc] = [
            (fl.name, hints[fl.name], dict(fl.metadata.get("bus", {})),
             fl.default is dataclasses.MISSING and fl.default_factory is dataclasses.MISSING)
            for fl in dataclasses.fields(dc)
        ]
        _REGISTRY[topic] = dc
        return dc

    return wrap


def topics() -> dict[str, type[BusMessage]]:
    """Every registered topic and its message class."""
    return dict(_REGISTRY)


def _check(topic: str, name: str, kind: Any, spec: dict[str, Any], value: Any) -> Any:
    where = f"bus message {topic!r} field {name!r}"
    origin = typing.get_origin(kind)
    if kind is Any:
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise BusError(f"{where}: expected a boolean, got {type(value).__name__}")
        return value
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise BusError(f"{where}: expected an integer, got {type(value).__name__}")
        if value < spec.get("min", -(1 << 63)) or value > spec.get("max", _U64_MAX):
            raise BusError(f"{where}: {value} is out of range")
        return value
    if kind is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise BusError(f"{where}: expected a number, got {type(value).__name__}")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise BusError(f"{where}: not a finite number")
        return value
    if kind is bytes:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise BusError(f"{where}: expected bytes, got {type(value).__name__}")
        value = bytes(value)
        if "length" in spec and len(value) != spec["length"]:
            raise BusError(f"{where}: expected {spec['length']} bytes, got {len(value)}")
    elif kind is str:
        if not isinstance(value, str):
            raise BusError(f"{where}: expected a string, got {type(value).__name__}")
    elif kind is dict or origin is dict:
        if not isinstance(value, dict):
            raise BusError(f"{where}: expected a map, got {type(value).__name__}")
        args = typing.get_args(kind)
        if args:
            value = {
                _check(topic, f"{name} key", args[0], {}, k): _check(topic, f"{name}[{k!r}]", args[1], {}, v)
                for k, v in value.items()
            }
    elif kind is list or origin is list:
        if not isinstance(value, (list, tuple)):
            raise BusError(f"{where}: expected a list, got {type(value).__name__}")
        args = typing.get_args(kind)
        value = [_check(topic, f"{name}[{i}]", args[0], {}, v) for i, v in enumerate(value)] if args else list(value)
    else:  # pragma: no cover - a schema mistake, found by test_bus
        raise TypeError(f"{where}: unsupported schema type {kind!r}")
    if "maxlen" in spec and len(value) > spec["maxlen"]:
        raise BusError(f"{where}: longer than {spec['maxlen']}")
    return value


def _validate(cls: type[BusMessage], values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, kind, spec, required in _FIELDS[cls]:
        if name not in values:
            if required:
                raise BusError(f"bus message {cls.topic!r}: missing field {name!r}")
            continue
        out[name] = _check(cls.topic, name, kind, spec, values[name])
    return out


def encode(msg: BusMessage) -> list[bytes]:
    """The two frames of ``msg``; its fields are checked first (a bad value raises BusError)."""
    cls = type(msg)
    if cls not in _FIELDS:
        raise TypeError(f"{cls.__name__} is not a registered bus message")
    values = _validate(cls, {fl.name: getattr(msg, fl.name) for fl in dataclasses.fields(msg)})  # type: ignore[arg-type]
    body = {"v": BUS_VERSION, **values}
    return [cls.topic.encode("ascii"), msgpack.packb(body, use_bin_type=True)]


def decode(frames: Sequence[bytes | Any]) -> BusMessage:
    """The message in ``[topic, body]`` (zmq.Frame or bytes); BusError on anything else."""
    if len(frames) != 2:
        raise BusError(f"a bus message has 2 frames (topic, body), got {len(frames)}")
    topic_b, body_b = (bytes(getattr(x, "bytes", x)) for x in frames)
    if not _TOPIC.match(topic_b):
        raise BusError(f"bad bus topic {topic_b[:40]!r}")
    cls = _REGISTRY.get(topic_b.decode("ascii"))
    if cls is None:
        raise BusError(f"unknown bus topic {topic_b.decode('ascii')!r}")
    if len(body_b) > cls.max_size:
        raise BusError(f"bus message {cls.topic!r} too large: {len(body_b)} bytes")
    try:
        body = msgpack.unpackb(body_b, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises many kinds (ExtraData, FormatError, ValueError, ...)
        raise BusError(f"bus message {cls.topic!r}: body is not msgpack ({type(exc).__name__}: {exc})", 0) from None
    if not isinstance(body, dict):
        raise BusError(f"bus message {cls.topic!r}: body is a {type(body).__name__}, not a map")
    version = body.get("v")
    if version != BUS_VERSION:
        raise BusError(f"bus message {cls.topic!r}: schema version {version!r}, this node speaks {BUS_VERSION}")
    values = _validate(cls, body)
    return cls(**values)


def split(frames: Sequence[Any]) -> tuple[list[bytes], BusMessage]:
    """Routing frames (what a ROUTER prepends) and the message in the last two frames."""
    if len(frames) < 2:
        raise BusError(f"a bus message has at least 2 frames, got {len(frames)}")
    envelope = [bytes(getattr(x, "bytes", x)) for x in frames[:-2]]
    return envelope, decode(frames[-2:])


# ------------------------------------------------------------------------------ net

_HASH = dict(length=32)
_STATUS_STR = dict(maxlen=200)


@_register("object")
class ObjectEvent(BusMessage):
    """A new valid object the net process stored (published on ``E.objects``).
    ``process``: the relay rules say local processing should look at it (the mailbox
    skips it otherwise); ``local``: it was injected by this node, not received."""

    hash: bytes = fld(**_HASH)
    object: bytes = fld(maxlen=1 << 18)
    object_type: int = fld(max=0xFFFFFFFF)
    version: int = fld()
    stream: int = fld()
    expires: int = fld(min=0, max=_U64_MAX)
    process: bool = fld(True)
    local: bool = fld(False)


@_register("inject")
class InjectRequest(BusMessage):
    """A complete object (nonce first) for the net process to validate, store and send.
    ``request_id`` > 0 asks for an :class:`InjectResult` (published on ``E.objects`` when
    pushed to ``E.outbox``, or the reply on ``E.net``)."""

    object: bytes = fld(maxlen=1 << 18)
    request_id: int = fld(0)
    kind: str = fld("", maxlen=32)


@_register("injected")
class InjectResult(BusMessage):
    """What the net process did with an :class:`InjectRequest`."""

    request_id: int = fld()
    hash: bytes = fld(**_HASH)
    accepted: bool = fld()
    new: bool = fld(False)
    stem: bool = fld(False)
    reason: str = fld("", maxlen=64)
    message: str = fld("", maxlen=1000)


@_register("get_stats")
class StatsRequest(BusMessage):
    """Ask the net process (on ``E.net``) for a :class:`NetStats` now."""


@_register("stats")
class NetStats(BusMessage):
    """Counters and connections of the net process (for clientStatus/listConnections);
    published every few seconds and sent in answer to ``get_stats``. Each connection is
    ``{host, port, inbound, established, user_agent, streams}``."""

    time: float = fld()
    pid: int = fld()
    listen_port: int = fld(0, max=0xFFFF)
    counters: dict[str, int] = fld({})
    connections: list[dict[str, Any]] = fld([], maxlen=100_000)


@_register("error")
class ErrorReply(BusMessage):
    """Answer of a ROUTER endpoint to a request it could not decode or does not serve."""

    code: str = fld(maxlen=32)
    message: str = fld("", maxlen=1000)


# ------------------------------------------------------------------------------ mailbox RPC


@_register("rpc")
class RpcRequest(BusMessage):
    """A call of one mailbox operation by name (the API process's backend proxy):
    positional and keyword arguments are msgpack values."""

    id: int = fld()
    method: str = fld(maxlen=64)
    args: list[Any] = fld([])
    kwargs: dict[str, Any] = fld({})


@_register("rpc.reply")
class RpcReply(BusMessage):
    """The result of an :class:`RpcRequest`, or its error (``error_code`` non-zero: the
    API's error number, ``error`` its text)."""

    max_size: ClassVar[int] = MAX_RPC_REPLY

    id: int = fld()
    ok: bool = fld()
    result: Any = fld(None)
    error_code: int = fld(0)
    error: str = fld("", maxlen=10_000)


# ------------------------------------------------------------------------------ PoW clients

_JOB = dict(maxlen=64)
_IH = dict(length=64)
_U64 = dict(min=0, max=_U64_MAX)


@_register("pow.submit")
class PowSubmit(BusMessage):
    """A PoW job: find a nonce with trial value <= ``target`` for ``initial_hash``.
    ``job`` is the client's own id (unique per client); higher ``priority`` runs first;
    ``client`` names the submitter for per-client limits and logs."""

    job: str = fld(**_JOB)
    initial_hash: bytes = fld(**_IH)
    target: int = fld(**_U64)
    priority: int = fld(0, min=-1000, max=1000)
    client: str = fld("", maxlen=64)


@_register("pow.accepted")
class PowAccepted(BusMessage):
    """The broker queued the job; ``queued`` jobs (all clients) wait before or with it."""

    job: str = fld(**_JOB)
    queued: int = fld(0)


@_register("pow.result")
class PowResult(BusMessage):
    """A nonce for the job, re-checked by the broker with the reference formula."""

    job: str = fld(**_JOB)
    nonce: int = fld(**_U64)
    trial_value: int = fld(**_U64)
    trials: int = fld(0)
    seconds: float = fld(0.0)
    worker: str = fld("", maxlen=64)


@_register("pow.failed")
class PowFailed(BusMessage):
    """The job was refused or could not be done. ``code``: ``limit`` (too many jobs of this
    client or in all), ``invalid`` (bad request), ``no_nonce`` (range exhausted),
    ``duplicate`` (job id reused with other parameters)."""

    job: str = fld(**_JOB)
    code: str = fld(maxlen=32)
    message: str = fld("", maxlen=1000)


@_register("pow.cancel")
class PowCancel(BusMessage):
    """Cancel one of this client's jobs (queued or running); ``client`` as in the submit."""

    job: str = fld(**_JOB)
    client: str = fld("", maxlen=64)


@_register("pow.cancelled")
class PowCancelledReply(BusMessage):
    """Answer to :class:`PowCancel`; ``found`` is False when the job was unknown or done."""

    job: str = fld(**_JOB)
    found: bool = fld()


@_register("pow.status")
class PowStatus(BusMessage):
    """Ask for the state of one job of this client, or (``job`` empty) of the broker."""

    job: str = fld("", **_JOB)
    client: str = fld("", maxlen=64)


@_register("pow.state")
class PowState(BusMessage):
    """``state``: queued, running, done, unknown (or ``broker`` for the overview);
    ``position``: 0-based rank in the queue when queued; ``trials``: progress of a running
    job (from its worker's last heartbeat, plus where it was resumed). ``stats`` are broker
    counters."""

    job: str = fld(**_JOB)
    state: str = fld(maxlen=16)
    position: int = fld(0)
    trials: int = fld(0)
    workers: int = fld(0)
    queued: int = fld(0)
    running: int = fld(0)
    stats: dict[str, int] = fld({})


# ------------------------------------------------------------------------------ PoW workers

_KEY = dict(maxlen=32)
_NAME = dict(maxlen=64)


@_register("w.heartbeat")
class WorkerHeartbeat(BusMessage):
    """A worker registers and keeps alive with this every ``interval`` seconds; ``job`` is
    the key of the job it is searching ("" when idle) and ``trials`` its progress."""

    name: str = fld(**_NAME)
    backend: str = fld("", maxlen=32)
    interval: float = fld(1.0)
    job: str = fld("", **_KEY)
    trials: int = fld(0)


@_register("w.job")
class WorkerJob(BusMessage):
    """Search from nonce ``start`` for ``initial_hash`` at ``target`` (broker key ``key``)."""

    key: str = fld(**_KEY)
    initial_hash: bytes = fld(**_IH)
    target: int = fld(**_U64)
    start: int = fld(0, **_U64)


@_register("w.cancel")
class WorkerCancel(BusMessage):
    """Stop searching job ``key``."""

    key: str = fld(**_KEY)


@_register("w.result")
class WorkerResult(BusMessage):
    """A nonce the worker found for job ``key``."""

    key: str = fld(**_KEY)
    nonce: int = fld(**_U64)
    trial_value: int = fld(**_U64)
    trials: int = fld(0)
    seconds: float = fld(0.0)


@_register("w.failed")
class WorkerFailed(BusMessage):
    """The worker stopped job ``key`` without a nonce: ``cancelled``, or an error/exhausted range."""

    key: str = fld(**_KEY)
    cancelled: bool = fld(False)
    message: str = fld("", maxlen=1000)


@_register("w.bye")
class WorkerBye(BusMessage):
    """The worker is leaving; its job (if any) goes back to the queue at once."""

    name: str = fld(**_NAME)


# ------------------------------------------------------------------------------ endpoints

_ENDPOINT = re.compile(r"^(?:ipc://.+|inproc://[A-Za-z0-9_.\-]+|tcp://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-*]+):\d{1,5})$")


def check_endpoint(text: str) -> str:
    """A ZeroMQ endpoint ``ipc://PATH``, ``inproc://NAME`` or ``tcp://HOST:PORT``
    (ConfigError-style BusError otherwise)."""
    if not isinstance(text, str) or not _ENDPOINT.match(text.strip()):
        raise BusError(f"not a ZeroMQ endpoint (ipc://PATH, tcp://HOST:PORT): {text!r}")
    text = text.strip()
    if text.startswith("tcp://") and not 0 <= int(text.rsplit(":", 1)[1]) <= 0xFFFF:
        raise BusError(f"port out of range in {text!r}")
    return text


_SOCKETS = ("objects", "outbox", "net", "mailbox", "pow", "pow_workers")


@dataclass(frozen=True)
class Endpoints:
    """The ``ipc://`` endpoints of one node's bus, in its data directory.

    Socket files are ``<data_dir>/bus-<name>.sock``; where that path would be too long for a
    unix socket, a short directory named after a hash of the data directory is used under
    the temp directory instead (every process computes the same one)."""

    data_dir: Path

    @property
    def directory(self) -> Path:
        d = Path(self.data_dir).absolute()
        if len(str(d / "bus-pow_workers.sock")) <= MAX_IPC_PATH:
            return d
        tag = hashlib.sha256(str(d).encode("utf-8", "surrogateescape")).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"bmnode-{tag}"

    def path(self, name: str) -> Path:
        if name not in _SOCKETS:
            raise ValueError(f"unknown bus socket {name!r}")
        return self.directory / f"bus-{name.replace('_', '-')}.sock"

    def endpoint(self, name: str) -> str:
        return f"ipc://{self.path(name)}"

    @property
    def objects(self) -> str:
        return self.endpoint("objects")

    @property
    def outbox(self) -> str:
        return self.endpoint("outbox")

    @property
    def net(self) -> str:
        return self.endpoint("net")

    @property
    def mailbox(self) -> str:
        return self.endpoint("mailbox")

    @property
    def pow(self) -> str:
        return self.endpoint("pow")

    @property
    def pow_workers(self) -> str:
        return self.endpoint("pow_workers")

    def prepare(self) -> None:
        """Create the socket directory (private to this user when it is the fallback)."""
        d = self.directory
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        if hasattr(os, "getuid") and d.stat().st_uid != os.getuid():
            raise BusError(f"the bus directory {d} belongs to another user; remove it or use a shorter --data-dir")

    def cleanup(self, names: Iterable[str] = _SOCKETS) -> None:
        """Remove the socket files (and the fallback directory when empty)."""
        for name in names:
            try:
                self.path(name).unlink()
            except FileNotFoundError:
                pass
            except OSError:
                pass
        d = self.directory
        if d != Path(self.data_dir).absolute():
            try:
                d.rmdir()
            except OSError:
                pass


def ipc_path(endpoint: str) -> Path | None:
    """The file behind an ``ipc://`` endpoint (None for other transports)."""
    return Path(endpoint[len("ipc://"):]) if endpoint.startswith("ipc://") else None


def remove_ipc(endpoint: str) -> None:
    """Delete the socket file of an ``ipc://`` endpoint, if any (after unbinding)."""
    p = ipc_path(endpoint)
    if p is not None:
        try:
            os.unlink(p)
        except OSError:
            pass
