"""ZeroMQ CURVE keys for the PoW service: key files, the broker's ZAP check, handshake watch.

Key files use zmq.auth's certificate format (``NAME.key`` holds the public key,
``NAME.key_secret`` the pair, mode 0600), so ``zmq.auth.load_certificate`` reads them and
keys made by other ZeroMQ tools work here. CURVE applies to ``tcp://`` endpoints only:
``ipc://`` sockets are guarded by file permissions and ``inproc://`` never leaves the process.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Union

import zmq
from zmq.utils import z85

from bmnode.errors import ConfigError, PowError

log = logging.getLogger(__name__)

__all__ = [
    "AuthorizedKeys", "ClientCurve", "CurveKeyError", "HandshakeWatch", "InsecureEndpoint", "KeyPair",
    "ServerCurve", "check_exposure", "client_curve", "generate_keypair", "is_loopback", "load_public_key",
    "load_keypair", "server_curve", "uses_curve",
]

PathLike = Union[str, "os.PathLike[str]"]

#: ZAP domains of the broker's two kinds of socket (each may have its own key folder).
CLIENT_DOMAIN = "bmnode-pow-clients"
WORKER_DOMAIN = "bmnode-pow-workers"

#: Refusals of unknown keys logged per minute at most (each peer can present a fresh key).
_MAX_REFUSALS_LOGGED = 10
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
_Z85_KEY = re.compile(r"^[0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")


class CurveKeyError(ConfigError):
    """A CURVE key or key file that cannot be used (missing, unreadable, malformed)."""


class InsecureEndpoint(ConfigError):
    """A non-loopback tcp endpoint would be bound without CURVE (and no explicit opt-out)."""


@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair, both halves Z85-encoded (40 ASCII bytes each)."""

    public: bytes
    secret: bytes


# ----------------------------------------------------------------------------- key files


def _check_z85(value: bytes, what: str, *, secret: bool = False) -> bytes:
    """``value`` if it is a Z85 CURVE key (40 characters, 32 bytes), else CurveKeyError (which
    quotes a public value, never a ``secret`` one: the message reaches logs and terminals)."""
    text = value.decode("ascii", "replace")
    shown = f"{len(value)} characters" if secret else repr(text[:60])
    if not _Z85_KEY.match(text):
        raise CurveKeyError(f"{what} is not a Z85 CURVE key (40 characters): {shown}")
    try:
        if len(z85.decode(value)) != 32:
            raise ValueError
    except ValueError:
        raise CurveKeyError(f"{what} is not a Z85 CURVE key (40 characters): {shown}") from None
    return value


def _read_cert(path: PathLike) -> tuple[bytes | None, bytes | None]:
    """(public, secret) found in a zmq certificate file (each None when absent)."""
    p = Path(path)
    if not p.exists():
        raise CurveKeyError(f"key file {p} does not exist (make one with `bmnode pow keygen`)")
    if p.is_dir():
        raise CurveKeyError(f"key file {p} is a directory, not a key file")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise CurveKeyError(f"cannot read key file {p}: {exc.strerror or exc}") from exc
    if len(raw) > 64 * 1024:
        raise CurveKeyError(f"key file {p} is too large to be a key file")
    found: dict[str, bytes] = {}
    for line in raw.splitlines():
        line = line.strip()
        for name in ("public-key", "secret-key"):
            if line.startswith(name.encode()) and b"=" in line:
                found[name] = line.split(b"=", 1)[1].strip(b" \t'\"")
    pub = _check_z85(found["public-key"], f"the public-key in {p}") if "public-key" in found else None
    sec = _check_z85(found["secret-key"], f"the secret-key in {p}", secret=True) if "secret-key" in found else None
    return pub, sec


def load_public_key(source: PathLike) -> bytes:
    """A public key (Z85) from a key file (``.key`` or ``.key_secret``) or given as Z85 text."""
    text = os.fspath(source)
    if _Z85_KEY.match(text) and not os.path.exists(text):
        return _check_z85(text.encode("ascii"), "the key")
    pub, _ = _read_cert(text)
    if pub is None:
        raise CurveKeyError(f"no public-key line in {text}: not a zmq certificate (`bmnode pow keygen` makes them)")
    return pub


def load_keypair(path: PathLike) -> KeyPair:
    """The key pair in a ``.key_secret`` file; the public half must match the secret one."""
    pub, sec = _read_cert(path)
    if sec is None:
        raise CurveKeyError(f"no secret-key line in {path}: give the NAME.key_secret file, not NAME.key")
    derived = zmq.curve_public(sec)
    if pub is not None and pub != derived:
        raise CurveKeyError(f"the public-key in {path} does not belong to its secret-key")
    try:
        mode = os.stat(path).st_mode
        if mode & 0o077:
            log.warning("secret key file %s is readable by other users (mode %o): chmod 600 it", path, mode & 0o777)
    except OSError:
        pass
    return KeyPair(derived, sec)


def _cert_text(pair_public: bytes, secret: bytes | None) -> str:
    kind = "SECRET" if secret else "public"
    lines = [
        f"#   ****  Generated on {datetime.datetime.now():%Y-%m-%d %H:%M:%S} by bmnode pow keygen  ****",
        f"#   ZeroMQ CURVE **{kind}** certificate" + ("" if secret else " (safe to share)"),
    ]
    if secret:
        lines.append("#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.")
    lines += ["", "metadata", "curve", f'    public-key = "{pair_public.decode("ascii")}"']
    if secret:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str, mode: int) -> None:
    """Write ``text`` to ``path`` atomically, the file having ``mode`` from its creation."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def generate_keypair(directory: PathLike, name: str, *, force: bool = False) -> tuple[Path, Path, bytes]:
    """Make ``NAME.key`` (public, 0644) and ``NAME.key_secret`` (0600) in ``directory``
    (created 0700 if missing); returns (public file, secret file, public key)."""
    if not _NAME.match(name):
        raise CurveKeyError(f"key name {name!r}: use letters, digits, '_', '-', '.' (up to 64, not starting with '.')")
    d = Path(directory)
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise CurveKeyError(f"cannot create key folder {d}: {exc.strerror or exc}") from exc
    pub_path, sec_path = d / f"{name}.key", d / f"{name}.key_secret"
    if not force:
        for p in (pub_path, sec_path):
            if p.exists():
                raise CurveKeyError(f"{p} exists already: pick another name or pass --force to replace it")
    public, secret = zmq.curve_keypair()
    try:
        _write_private(sec_path, _cert_text(public, secret), 0o600)
        _write_private(pub_path, _cert_text(public, None), 0o644)
    except OSError as exc:
        raise CurveKeyError(f"cannot write keys in {d}: {exc.strerror or exc}") from exc
    return pub_path, sec_path, public


# ----------------------------------------------------------------------------- the server side


class AuthorizedKeys:
    """The public keys in a folder's ``*.key`` files; the ZAP check of the broker.

    Re-read when the folder changes (a file added or removed), so keys can be granted or
    revoked without a restart; a folder that turns bad keeps the last good set."""

    def __init__(self, directory: PathLike) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._warned: dict[bytes, float] = {}  # refused key -> when last logged
        self._problem: str | None = None  # why the folder cannot be read now (logged once)
        self._minute, self._logged = -1e9, 0  # refusals logged in the current minute
        self._mtime = self._stamp()
        self.keys = self._load()
        if not self.keys:
            raise CurveKeyError(
                f"no *.key files in {self.directory}: copy there the public key files of the clients and "
                "workers you allow (`bmnode pow keygen NAME` makes them)")

    def _stamp(self) -> float:
        try:
            return self.directory.stat().st_mtime
        except OSError as exc:
            raise CurveKeyError(f"cannot use authorized keys folder {self.directory}: {exc.strerror or exc}") from exc

    def _load(self) -> frozenset[bytes]:
        if not self.directory.is_dir():
            raise CurveKeyError(f"authorized keys folder {self.directory} is not a folder")
        try:
            files = sorted(self.directory.glob("*.key"))
        except OSError as exc:
            raise CurveKeyError(f"cannot list {self.directory}: {exc.strerror or exc}") from exc
        return frozenset(load_public_key(f) for f in files)

    def allows(self, key: bytes) -> bool:
        """True if ``key`` (Z85) is listed, re-reading the folder first if it changed."""
        with self._lock:
            stamp, problem = self._mtime, None
            try:
                stamp = self._stamp()
                if stamp != self._mtime:
                    self.keys = self._load()
                    log.info("authorized keys reloaded from %s: %d keys", self.directory, len(self.keys))
            except CurveKeyError as exc:
                problem = str(exc)
            # A bad folder is read again when it changes and reported once, not at every
            # handshake (anyone who reaches the port can start one).
            self._mtime = stamp
            if problem is not None and problem != self._problem:
                log.error("keeping the previous authorized keys: %s", problem)
            self._problem = problem
            return key in self.keys

    def callback(self, domain: str, key: bytes) -> bool:
        """The zmq.auth credentials-provider hook."""
        ok = self.allows(key)
        now = time.monotonic()
        if not ok and now - self._warned.get(key, -1e9) > 60:  # a retrying peer: once a minute
            if len(self._warned) > 1000:
                self._warned.clear()
            self._warned[key] = now
            if now - self._minute > 60:
                self._minute, self._logged = now, 0
            # fresh keys cost a peer nothing: at most _MAX_REFUSALS_LOGGED lines a minute in all
            self._logged += 1
            if self._logged <= _MAX_REFUSALS_LOGGED:
                log.warning("refused a connection with an unknown CURVE key %s (%s): add its .key file to %s "
                            "to allow it", key.decode("ascii", "replace"), domain, self.directory)
            if self._logged == _MAX_REFUSALS_LOGGED:
                log.warning("more refusals of unknown CURVE keys this minute are not logged")
        return ok


@dataclass
class ServerCurve:
    """The broker's key pair and who may connect (clients; workers, by default the same)."""

    keypair: KeyPair
    clients: AuthorizedKeys
    workers: AuthorizedKeys

    def apply(self, sock: zmq.Socket, domain: str) -> None:
        """Make ``sock`` a CURVE server whose peers are checked by ZAP in ``domain``."""
        sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no ZAP handler: refuse, never accept all
        sock.curve_secretkey = self.keypair.secret
        sock.curve_publickey = self.keypair.public
        sock.curve_server = True

    def start_authenticator(self, context: zmq.Context) -> "zmq.auth.thread.ThreadAuthenticator":
        """Run the ZAP handler of ``context`` (one per context) checking both domains."""
        from zmq.auth.thread import ThreadAuthenticator

        auth = ThreadAuthenticator(context, log=logging.getLogger("bmnode.pow.zap"))
        try:
            auth.start()
        except zmq.ZMQError as exc:
            raise PowError(f"cannot start the CURVE authenticator ({exc}): another one runs in this ZeroMQ "
                           "context; give the broker a context of its own") from exc
        auth.configure_curve_callback(CLIENT_DOMAIN, self.clients)
        auth.configure_curve_callback(WORKER_DOMAIN, self.workers)
        return auth


def server_curve(secret_key: PathLike | None, authorized: PathLike | None,
                 authorized_workers: PathLike | None = None) -> ServerCurve | None:
    """The broker's CURVE set-up, or None when no key is given (plaintext)."""
    if secret_key is None and authorized is None and authorized_workers is None:
        return None
    if secret_key is None or authorized is None:
        raise CurveKeyError("CURVE needs both the broker's secret key file (--secret-key) and a folder of "
                            "authorized public keys (--authorized-keys)")
    clients = AuthorizedKeys(authorized)
    workers = AuthorizedKeys(authorized_workers) if authorized_workers is not None else clients
    return ServerCurve(load_keypair(secret_key), clients, workers)


# ----------------------------------------------------------------------------- the client side


@dataclass(frozen=True)
class ClientCurve:
    """The broker's public key and this peer's key pair."""

    server_key: bytes
    keypair: KeyPair

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE client of the server with ``server_key``."""
        sock.curve_serverkey = self.server_key
        sock.curve_publickey = self.keypair.public
        sock.curve_secretkey = self.keypair.secret


def client_curve(server_key: PathLike | None, secret_key: PathLike | None,
                 endpoint: str = "tcp://") -> ClientCurve | None:
    """A client's or worker's CURVE set-up for ``endpoint``, or None when neither key is
    given (plaintext)."""
    if server_key is None and secret_key is None:
        return None
    if server_key is None or secret_key is None:
        raise CurveKeyError("CURVE needs both the broker's public key (--server-key) and this side's "
                            "secret key file (--secret-key)")
    if not uses_curve(endpoint):
        raise CurveKeyError(f"--server-key/--secret-key apply to tcp:// endpoints only; {endpoint} is local "
                            "and always plaintext: leave the keys out")
    return ClientCurve(load_public_key(server_key), load_keypair(secret_key))


# ----------------------------------------------------------------------------- endpoint rules


def _host(endpoint: str) -> str | None:
    if not endpoint.startswith("tcp://"):
        return None
    host = endpoint[len("tcp://"):].rsplit(":", 1)[0]
    if ";" in host:  # source;destination form: the destination counts
        host = host.split(";", 1)[1]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_loopback(endpoint: str) -> bool:
    """True for a tcp endpoint on a loopback address (127.0.0.0/8, ::1, localhost)."""
    host = _host(endpoint)
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # an interface name or "*": may face the network


def check_exposure(endpoints: Iterable[str], curve: bool, insecure: bool) -> None:
    """Refuse (InsecureEndpoint) to bind a non-loopback tcp endpoint in plaintext unless
    ``insecure``: anyone who reaches it could submit jobs or pose as a worker."""
    if curve or insecure:
        return
    for ep in endpoints:
        if ep.startswith("tcp://") and not is_loopback(ep):
            raise InsecureEndpoint(
                f"refusing to bind {ep} without CURVE: anyone who can reach it could submit jobs or pose as a "
                "worker. Give --secret-key and --authorized-keys (keys from `bmnode pow keygen`), bind a "
                "loopback address, or pass --insecure to accept the risk")


def uses_curve(endpoint: str) -> bool:
    """CURVE applies to tcp endpoints (ipc is guarded by file permissions, inproc is in-process)."""
    return endpoint.startswith("tcp://")


# ----------------------------------------------------------------------------- handshake watch

_FAILED = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "auth",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "no_detail",
}


class HandshakeWatch:
    """Follows a connecting socket's security handshakes (a ZeroMQ monitor) so that a refused
    key or a wrong server key is reported as such rather than as a silent timeout."""

    def __init__(self, sock: zmq.Socket) -> None:
        self._sock = sock
        events = zmq.EVENT_HANDSHAKE_SUCCEEDED
        for e in _FAILED:
            events |= e
        #: the monitor's PAIR socket (poll it to wake on handshake events)
        self.monitor = sock.get_monitor_socket(events)
        self.succeeded = False
        self.failure: str | None = None  # "auth", "protocol", "no_detail" since the last success

    def poll(self) -> str | None:
        """Read the pending events; the failure seen since the last success (or None)."""
        from zmq.utils.monitor import recv_monitor_message

        while True:
            try:
                ev = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return self.failure
            except zmq.ZMQError:
                return self.failure
            if ev["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.succeeded, self.failure = True, None
            elif ev["event"] in _FAILED:
                self.failure = _FAILED[ev["event"]]

    def explain(self, endpoint: str, public_key: bytes | None) -> str | None:
        """A sentence for the failure seen (None if none)."""
        kind = self.poll()
        who = f" (this side's public key {public_key.decode('ascii')})" if public_key else ""
        if kind == "auth":
            return (f"the PoW broker at {endpoint} refused this key{who}: copy its .key file into the broker's "
                    "authorized keys folder")
        if kind == "protocol":
            return (f"security handshake with {endpoint} failed: one side uses CURVE and the other does not "
                    "(check --server-key/--secret-key on both)")
        if kind == "no_detail":
            return (f"CURVE handshake with {endpoint} failed: is --server-key the broker's public key "
                    "(its NAME.key file)?")
        return None

    def close(self) -> None:
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(0)
