"""The reference's XML-RPC commands (spec 14.3-14.5): names, aliases, arguments, checks, results.

:class:`Commands` validates and decodes every argument the way PyBitmessage's API does
(addresses, base64, hex, numbers, in the reference's order, with its error numbers and texts),
calls an :class:`~bmnode.api.backend.ApiBackend` with decoded values, and formats the result:
in the ``legacy`` variant (the default) every non-string, non-integer result becomes a JSON
string and every error the string ``API Error %04i: %s``; in the ``xml`` variant results are
native XML-RPC values and errors are Faults; the ``json`` variant (JSON-RPC) is the ``xml`` one
with ``null`` where a lookup finds nothing. Arguments come by position or, for JSON-RPC, by
the reference's parameter names. Transport and authentication live in ``bmnode/api/xmlrpc.py``
(and ``bmnode/api/jsonrpc.py``).

Kept as the reference does: the error-0 texts count one parameter more than the command takes
(the reference counts its ``self``); ``listAddressBookEntries``' optional label filter is the
plain label, not base64 (current reference code); an inbox record's ``receivedTime`` is a
string of decimal digits (the reference's TEXT column) while ``lastActionTime`` is an integer.

Deliberate differences: the recipient of ``sendMessage`` is validated (as v0.6.3 did);
arguments of the wrong type give a clear error 21 instead of a Python exception text; unknown
addresses in ``enableAddress`` give 13; in the ``xml`` variant a lookup that finds nothing
returns the structure with an empty list (the reference fails to marshal ``None``);
``disseminatePubkey`` and ``getMessageDataByDestinationHash`` (obsolete, documented as not to
be relied on) are not offered.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from bmnode import __version__
from bmnode.api.backend import (
    BackendError,
    ClientStatus,
    Connection,
    InboxMessage,
    SentMessage,
)
from bmnode.crypto.addresses import decode_address, encode_address
from bmnode.crypto.generation import deterministic_addresses
from bmnode.errors import BmnodeError
from bmnode.mailbox.errors import MESSAGES
from bmnode.protocol.constants import (
    MAX_MESSAGE_TEXT,
    MSG_TTL_DEFAULT,
    MSG_TTL_MAX,
    MSG_TTL_MIN,
    NETWORK_MIN_EXTRA,
    NETWORK_MIN_NTPB,
)

__all__ = ["APIError", "Commands", "Reply", "VARIANTS", "ERROR_TEXTS", "decode_base64", "decode_hex", "verify_address"]

_log = logging.getLogger("bmnode.api")

VARIANTS = ("legacy", "xml", "json")
#: Subject + body longer than this (bytes, after base64 decoding) is refused (error 27).
MAX_MESSAGE_LENGTH = MAX_MESSAGE_TEXT
MAX_ADDRESSES = 999
CORRUPT_TEXT = "Part of the message is corrupt. The message cannot be displayed the normal way.\n\n"

#: The reference's messages (spec 14.5), used where a handler raises the code without detail:
#: the mailbox's table, with the API's own wording where a command gives the number a context.
ERROR_TEXTS: dict[int, str] = {
    **MESSAGES,
    16: "You are already subscribed to that address.",
    20: "Invalid method:",
    23: "Bool expected in eighteenByteRipe",
    26: "Malformed varint in address: ",
}


class APIError(Exception):
    """An API error: ``code`` (spec 14.5) and ``message``; ``str()`` is the legacy text."""

    def __init__(self, code: int, message: str | None = None) -> None:
        self.code = code
        self.message = ERROR_TEXTS.get(code, "") if message is None else message
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"API Error {self.code:04d}: {self.message}"


def _backend_error_types() -> tuple[type[BaseException], ...]:
    """Exception classes through which a backend refuses an operation with a code."""
    types: list[type[BaseException]] = [BackendError, APIError]
    try:  # the mailbox's error type, when the mailbox package is installed
        from bmnode.mailbox.errors import ApiError as _MailboxApiError  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001 - absent or broken: only our own types are recognised
        pass
    else:
        if isinstance(_MailboxApiError, type) and issubclass(_MailboxApiError, BaseException):
            types.append(_MailboxApiError)
    return tuple(types)


@dataclass(frozen=True)
class Reply:
    """What to answer: ``value`` (any XML-RPC value), or ``fault`` (xml variant errors).

    ``after`` runs once the reply has been sent (the ``shutdown`` command)."""

    value: Any = None
    fault: APIError | None = None
    after: Callable[[], None] | None = None


@dataclass(frozen=True)
class _Call:
    """Per-request context handed to every handler."""

    method: str
    after: list[Callable[[], None]]


@dataclass(frozen=True)
class _Command:
    name: str
    func: Callable[..., Any]
    min_params: int
    max_params: int
    #: In the xml variant, what a handler's ``None`` becomes (None: no value at all).
    xml_none: Any = None
    #: The parameters after ``call``, named as in the reference (for by-name JSON-RPC calls).
    params: tuple[inspect.Parameter, ...] = ()

    @property
    def doc(self) -> str:
        return inspect.getdoc(self.func) or ""


def command(*names: str, xml_none: Any = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a handler with its method names; ``legacy:NAME`` registers NAME in the legacy variant only."""

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        func._api_names = names  # type: ignore[attr-defined]
        func._api_xml_none = xml_none  # type: ignore[attr-defined]
        return func

    return mark


# ------------------------------------------------------------------------------ argument helpers


def _type_name(value: Any) -> str:
    return f"<class '{type(value).__name__}'>"


def _bad_type(name: str, expected: str, value: Any) -> APIError:
    return APIError(21, f"Unexpected API Failure - {name} must be {expected}, not {type(value).__name__}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_arg(name: str, value: Any) -> int:
    if _is_int(value):
        return value
    raise _bad_type(name, "an integer", value)


def _number_arg(name: str, value: Any) -> float | int:
    if _is_int(value) or isinstance(value, float):
        if value < 0 or value != value:  # negative or NaN
            raise APIError(21, f"Unexpected API Failure - {name} must not be negative")
        return value
    raise _bad_type(name, "a number", value)


def _bool_arg(name: str, value: Any, *, period: bool = False) -> bool:
    if isinstance(value, bool):
        return value
    raise APIError(23, f"Bool expected in {name}, saw {_type_name(value)} instead{'.' if period else ''}")


def _decode_error(exc: Exception | str, text: Any) -> APIError:
    return APIError(22, f"Decode error - {exc}. Had trouble while decoding string: {text!r}")


def decode_base64(text: Any) -> bytes:
    """Standard base64, whitespace (line breaks) tolerated; error 22 otherwise."""
    if not isinstance(text, str):
        raise _decode_error(f"expected a base64 string, got {type(text).__name__}", text)
    compact = "".join(text.split())
    try:
        return base64.b64decode(compact.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as e:
        raise _decode_error(e, text) from None


def decode_hex(text: Any) -> bytes:
    """Hex (either case); error 22 otherwise."""
    if not isinstance(text, str):
        raise _decode_error(f"expected a hex string, got {type(text).__name__}", text)
    try:
        return binascii.unhexlify(text.strip().encode("ascii"))
    except (UnicodeEncodeError, binascii.Error, ValueError) as e:
        raise _decode_error(e, text) from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _display_bytes(value: str | bytes) -> bytes:
    """UTF-8 bytes of stored text; invalid UTF-8 becomes the reference's diagnostic text."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace")
    data = bytes(value)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return (CORRUPT_TEXT + repr(data)[1:]).encode("utf-8")
    return data


def _label_text(label: str | bytes) -> str:
    if isinstance(label, str):
        return label
    return _display_bytes(label).decode("utf-8")


def add_bm(address: str) -> str:
    """The reference's addBMIfNotPresent: strip, then prefix ``BM-`` when missing."""
    s = address.strip()
    return s if s.startswith("BM-") else "BM-" + s


def verify_address(address: Any) -> tuple[str, int, int, bytes]:
    """Decode an address argument: (canonical address, version, stream, ripe), errors 7-12/26."""
    if not isinstance(address, str):
        raise APIError(9, f"Invalid characters in address: {address!r}")
    shown = add_bm(address)
    status, version, stream, ripe = decode_address(shown)
    if status != "success":
        if status == "checksumfailed":
            raise APIError(8, "Checksum failed for address: " + shown)
        if status == "invalidcharacters":
            raise APIError(9, "Invalid characters in address: " + shown)
        if status == "versiontoohigh":
            raise APIError(10, "Address version number too high (or zero) in address: " + shown)
        if status == "varintmalformed":
            raise APIError(26, "Malformed varint in address: " + shown)
        raise APIError(7, f"Could not decode address: {shown} : {status}")
    if not 2 <= version <= 4:
        raise APIError(11)
    if stream != 1:
        raise APIError(12)
    return encode_address(version, stream, ripe), version, stream, ripe


def _loose_address(address: Any) -> str:
    """An address used only as a lookup key: canonical when it decodes, else as given plus BM-."""
    if not isinstance(address, str):
        raise _bad_type("address", "a string", address)
    shown = add_bm(address)
    decoded = decode_address(shown)
    if decoded.ok and 2 <= decoded.version <= 4 and decoded.stream >= 1:
        return encode_address(decoded.version, decoded.stream, decoded.ripe)
    return shown


def _utf8_label(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise APIError(17) from None


def _clamp_ttl(ttl: Any) -> int:
    if isinstance(ttl, float) and ttl == ttl:
        ttl = int(ttl)
    ttl = _int_arg("TTL", ttl)
    return max(MSG_TTL_MIN, min(MSG_TTL_MAX, ttl))


def _encoding_arg(encoding: Any) -> int:
    if isinstance(encoding, bool) or encoding not in (2, 3):
        raise APIError(6)
    return int(encoding)


def inbox_record(m: InboxMessage) -> dict[str, Any]:
    """The reference's inbox message record (spec 14.3)."""
    return {
        "msgid": bytes(m.msgid).hex(),
        "toAddress": m.to_address,
        "fromAddress": m.from_address,
        "subject": _b64(_display_bytes(m.subject)),
        "message": _b64(_display_bytes(m.body)),
        "encodingType": int(m.encoding),
        # A string: the reference's inbox column ``received`` has TEXT affinity, so SQLite hands
        # the stored integer back as text ("1730000000"); lastActionTime stays an integer.
        "receivedTime": str(int(m.received)),
        "read": 1 if m.read else 0,
    }


def sent_record(m: SentMessage) -> dict[str, Any]:
    """The reference's sent message record (spec 14.3)."""
    return {
        "msgid": bytes(m.msgid).hex(),
        "toAddress": m.to_address,
        "fromAddress": m.from_address,
        "subject": _b64(_display_bytes(m.subject)),
        "message": _b64(_display_bytes(m.body)),
        "encodingType": int(m.encoding),
        "lastActionTime": int(m.last_action_time),
        "status": m.status,
        "ackData": bytes(m.ackdata).hex(),
    }


# ------------------------------------------------------------------------------ the commands


class Commands:
    """Every API command, bound to one backend; thread-safe (backend calls are serialised)."""

    def __init__(
        self,
        backend: Any,
        *,
        variant: str = "legacy",
        software_version: str = __version__,
        test_mode: bool = True,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"apivariant must be one of {', '.join(VARIANTS)}, not {variant!r}")
        self.backend = backend
        self.variant = variant
        self.software_version = software_version
        self._lock = threading.RLock()
        self._error_types = _backend_error_types()
        self._handlers: dict[str, _Command] = {}
        for attr in dir(type(self)):
            func = getattr(type(self), attr)
            names = getattr(func, "_api_names", None)
            if not names:
                continue
            params = list(inspect.signature(func).parameters.values())[2:]  # self, call
            max_params = len(params)
            min_params = sum(1 for p in params if p.default is inspect.Parameter.empty)
            for name in names:
                prefix, sep, bare = name.partition(":")
                if sep:
                    if prefix != variant:
                        continue
                    name = bare
                if name == "undeleteMessage" and not test_mode:
                    continue
                self._handlers[name] = _Command(
                    name, getattr(self, attr), min_params, max_params, getattr(func, "_api_xml_none", None),
                    tuple(params),
                )

    # ------------------------------------------------------------------ dispatching

    def method_names(self) -> list[str]:
        """Registered command names (aliases included), sorted."""
        return sorted(self._handlers)

    def method_help(self, name: str) -> str:
        """The help text of a command ('' if unknown)."""
        cmd = self._handlers.get(name)
        if cmd is None:
            return ""
        aliases = sorted(n for n, c in self._handlers.items() if c.func == cmd.func)
        return f"Commands: {', '.join(aliases)}\n\n{cmd.doc}"

    def call(self, method: str, params: Sequence[Any] | Mapping[str, Any]) -> Any:
        """Run one command: its logical result (``None`` when there is no value), or APIError.

        Post-reply actions (``shutdown``) are not run; :meth:`dispatch` is what a server uses."""
        return self._run(_Call(str(method), []), method, params)

    @staticmethod
    def _by_name(cmd: _Command, method: str, named: Mapping[str, Any]) -> list[Any]:
        """Arguments given by name (JSON-RPC ``params`` object) in the handler's order; error 0
        for an unknown or missing name. Absent optional ones take their defaults."""
        known = [p.name for p in cmd.params]
        unknown = sorted(str(k) for k in named if k not in known)
        if unknown:
            listed = ", ".join(known) if known else "none"
            raise APIError(0, f"Command {method} has no parameter named {', '.join(unknown)} (its parameters: {listed})")
        last = max((known.index(k) for k in named), default=-1)
        args = []
        for p in cmd.params[: last + 1]:
            if p.name in named:
                args.append(named[p.name])
            elif p.default is inspect.Parameter.empty:
                raise APIError(0, f"Command {method} needs parameter {p.name}")
            else:
                args.append(p.default)
        missing = [p.name for p in cmd.params[last + 1 :] if p.default is inspect.Parameter.empty]
        if missing:
            raise APIError(0, f"Command {method} needs parameter {', '.join(missing)}")
        return args

    def _run(self, call: _Call, method: Any, params: Sequence[Any] | Mapping[str, Any]) -> Any:
        if not isinstance(method, str) or method not in self._handlers:
            raise APIError(20, f"Invalid method: {method}")
        cmd = self._handlers[method]
        if isinstance(params, Mapping):
            params = self._by_name(cmd, method, params)
        n = len(params)
        # As in the reference, the counts in these texts include the handler's ``self``.
        if n > cmd.max_params:
            raise APIError(0, f"Command {method} takes at most {cmd.max_params + 1} parameters ({n} given)")
        if n < cmd.min_params:
            raise APIError(0, f"Command {method} takes at least {cmd.min_params + 1} parameters ({n} given)")
        return cmd.func(call, *params)

    def dispatch(self, method: str, params: Sequence[Any] | Mapping[str, Any]) -> Reply:
        """Run one command and shape the answer for the configured variant."""
        call = _Call(method if isinstance(method, str) else repr(method), [])
        fault: APIError | None = None
        result: Any = None
        try:
            result = self._run(call, method, params)
        except APIError as e:
            fault = e
        except BmnodeError as e:
            fault = APIError(21, f"Unexpected API Failure - {e}")
        except Exception as e:  # noqa: BLE001 - a bug must not kill the server; it is logged
            _log.exception("API command %s failed", method)
            fault = APIError(21, f"Unexpected API Failure - {e}")
        after = self._after(call.after) if fault is None else None
        if fault is not None:
            _log.info("API %s: %s", method, fault)
            if self.variant == "legacy":
                return Reply(str(fault))
            return Reply(fault=fault)
        if self.variant == "legacy":
            if not (isinstance(result, (int, str))):
                result = json.dumps(result, indent=4)
            return Reply(result, after=after)
        if result is None and self.variant == "xml":  # json: null
            result = self._handlers[method].xml_none
            if result is None:
                result = ""
        return Reply(result, after=after)

    @staticmethod
    def _after(actions: list[Callable[[], None]]) -> Callable[[], None] | None:
        if not actions:
            return None

        def run() -> None:
            for action in actions:
                try:
                    action()
                except Exception:  # noqa: BLE001 - the reply is already sent; log and go on
                    _log.exception("API post-reply action failed")

        return run

    def call_backend(self, name: str, *args: Any) -> Any:
        """``backend.<name>(*args)`` under the commands' lock, or None when the backend lacks it
        (for readers outside the commands, such as the metrics endpoint)."""
        func = getattr(self.backend, name, None)
        if func is None:
            return None
        with self._lock:
            return func(*args)

    def _backend(
        self, call: _Call, name: str, *args: Any, texts: dict[int, str] | None = None, locked: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Call a backend method (under the lock unless ``locked`` is False: long waits);
        coded refusals become APIError (reference texts)."""
        func = getattr(self.backend, name, None)
        if func is None:
            raise APIError(21, f"Unexpected API Failure - {call.method} is not available on this node")
        try:
            if not locked:
                return func(*args, **kwargs)
            with self._lock:
                return func(*args, **kwargs)
        except self._error_types as e:
            code = getattr(e, "code", None)
            if not _is_int(code):
                raise APIError(21, f"Unexpected API Failure - {e}") from None
            message = (texts or {}).get(code) or getattr(e, "message", None) or ERROR_TEXTS.get(code, str(e))
            raise APIError(code, str(message)) from None

    @staticmethod
    def _difficulty(total: Any, small: Any) -> tuple[float, float]:
        """The two difficulty multipliers (of the network minimum; 0 = default), checked."""
        return float(_number_arg("totalDifficulty", total)), float(_number_arg("smallMessageDifficulty", small))

    # ------------------------------------------------------------------ connectivity tests

    @command("helloWorld")
    def _hello_world(self, call: _Call, a: Any, b: Any) -> str:
        """Test two string params: returns ``a-b``."""
        if not isinstance(a, str) or not isinstance(b, str):
            raise _bad_type("helloWorld's parameters", "strings", a if not isinstance(a, str) else b)
        return a + "-" + b

    @command("add")
    def _add(self, call: _Call, a: Any, b: Any) -> int | float:
        """Test two numeric params: returns ``a + b``."""
        for value in (a, b):
            if not (_is_int(value) or isinstance(value, float)):
                raise _bad_type("add's parameters", "numbers", value)
        return a + b

    @command("statusBar")
    def _status_bar(self, call: _Call, message: Any) -> str:
        """Show a status message (logged by a headless node). Returns ``success``."""
        if getattr(self.backend, "status_bar", None) is not None:
            self._backend(call, "status_bar", str(message))
        else:
            _log.info("statusBar: %s", message)
        return "success"

    # ------------------------------------------------------------------ addresses

    @command("decodeAddress")
    def _decode_address(self, call: _Call, address: Any) -> dict[str, Any]:
        """Decode an address: dict with status, addressVersion, streamNumber and ripe (base64)."""
        _, version, stream, ripe = verify_address(address)
        return {"status": "success", "addressVersion": version, "streamNumber": stream, "ripe": _b64(ripe)}

    @command("listAddresses", "listAddresses2")
    def _list_addresses(self, call: _Call) -> dict[str, Any]:
        """Our addresses: label, address, stream, enabled, chan (listAddresses2: label in base64)."""
        rows = []
        for ident in self._backend(call, "list_identities"):
            label = _label_text(ident.label)
            if call.method == "listAddresses2":
                label = _b64(label.encode("utf-8"))
            rows.append(
                {
                    "label": label,
                    "address": ident.address,
                    "stream": decode_address(ident.address).stream,
                    "enabled": bool(ident.enabled),
                    "chan": bool(ident.chan),
                }
            )
        return {"addresses": rows}

    @command("createRandomAddress")
    def _create_random_address(
        self, call: _Call, label: Any, eighteenByteRipe: Any = False, totalDifficulty: Any = 0,
        smallMessageDifficulty: Any = 0,
    ) -> str:
        """Create a random v4 address with a base64 label; returns the address."""
        total, small = self._difficulty(totalDifficulty, smallMessageDifficulty)
        short = _bool_arg("eighteenByteRipe", eighteenByteRipe)
        text = _utf8_label(decode_base64(label))
        return str(
            self._backend(
                call, "create_random_address", text, eighteen_byte_ripe=short, total_difficulty=total,
                small_message_difficulty=small,
            )
        )

    @command("createDeterministicAddresses")
    def _create_deterministic_addresses(
        self, call: _Call, passphrase: Any, numberOfAddresses: Any = 1, addressVersionNumber: Any = 0,
        streamNumber: Any = 0, eighteenByteRipe: Any = False, totalDifficulty: Any = 0,
        smallMessageDifficulty: Any = 0,
    ) -> dict[str, Any]:
        """Create addresses from a base64 passphrase; returns the ones that were not present yet."""
        total, small = self._difficulty(totalDifficulty, smallMessageDifficulty)
        if not passphrase:
            raise APIError(1)
        short = _bool_arg("eighteenByteRipe", eighteenByteRipe)
        secret = decode_base64(passphrase)
        if not secret:
            raise APIError(1)
        version = _int_arg("addressVersionNumber", addressVersionNumber) or 4
        if version not in (3, 4):
            raise APIError(2, f"{ERROR_TEXTS[2]} {version} isn't supported.")
        stream = _int_arg("streamNumber", streamNumber) or 1
        if stream != 1:
            raise APIError(3)
        count = _int_arg("numberOfAddresses", numberOfAddresses)
        if count < 1:
            raise APIError(4)
        if count > MAX_ADDRESSES:
            raise APIError(5)
        created = self._backend(
            call, "create_deterministic_addresses", secret, count, version=version, stream=stream,
            eighteen_byte_ripe=short, total_difficulty=total, small_message_difficulty=small,
        )
        return {"addresses": [str(a) for a in created]}

    @command("getDeterministicAddress")
    def _get_deterministic_address(
        self, call: _Call, passphrase: Any, addressVersionNumber: Any, streamNumber: Any
    ) -> str:
        """The first deterministic address of a base64 passphrase; not saved."""
        if not passphrase:
            raise APIError(1)
        secret = decode_base64(passphrase)
        if not secret:
            raise APIError(1)
        version = _int_arg("addressVersionNumber", addressVersionNumber)
        if version not in (3, 4):
            raise APIError(2, f"The address version number currently must be 3 or 4. {version} isn't supported.")
        if _int_arg("streamNumber", streamNumber) != 1:
            # The reference's text starts with a space ("API Error 0003:  The stream ...").
            raise APIError(3, " The stream number must be 1. Others aren't supported.")
        return deterministic_addresses(secret, 1, version=version, stream=1, leading_zero_bytes=1)[0].address

    @command("createChan")
    def _create_chan(self, call: _Call, passphrase: Any) -> str:
        """Create (and join) the chan of a base64 passphrase; returns its address."""
        secret = decode_base64(passphrase)
        if not secret:
            raise APIError(1)
        return str(self._backend(call, "create_chan", secret, texts={24: ERROR_TEXTS[24]}))

    @command("joinChan")
    def _join_chan(self, call: _Call, passphrase: Any, address: Any) -> str:
        """Join a chan given its base64 name and its address. Returns ``success``."""
        secret = decode_base64(passphrase)
        if not secret:
            raise APIError(1)
        canonical = verify_address(address)[0]
        self._backend(call, "join_chan", secret, canonical, texts={18: ERROR_TEXTS[18], 24: ERROR_TEXTS[24]})
        return "success"

    @command("leaveChan")
    def _leave_chan(self, call: _Call, address: Any) -> str:
        """Leave a chan. Returns ``success``."""
        canonical = verify_address(address)[0]
        self._backend(call, "leave_chan", canonical, texts={13: ERROR_TEXTS[13], 25: ERROR_TEXTS[25]})
        return "success"

    @command("deleteAddress")
    def _delete_address(self, call: _Call, address: Any) -> str:
        """Delete one of our addresses for good. Returns ``success``."""
        canonical = verify_address(address)[0]
        self._backend(call, "delete_address", canonical, texts={13: ERROR_TEXTS[13]})
        return "success"

    @command("enableAddress")
    def _enable_address(self, call: _Call, address: Any, enable: Any = True) -> str:
        """Enable or disable one of our addresses. Returns ``success``."""
        canonical = verify_address(address)[0]
        flag = _bool_arg("enable", enable)
        self._backend(call, "enable_address", canonical, flag, texts={13: ERROR_TEXTS[13]})
        return "success"

    # ------------------------------------------------------------------ address book

    @command("listAddressBookEntries", "legacy:listAddressbook")
    def _list_address_book(self, call: _Call, label: Any = None) -> dict[str, Any]:
        """Address-book entries (label in base64), optionally only those with exactly this label."""
        if label is not None and not isinstance(label, str):
            raise _bad_type("label", "a string", label)
        rows = self._backend(call, "list_address_book", label or None)
        return {"addresses": [{"label": _b64(_display_bytes(r.label)), "address": r.address} for r in rows]}

    @command("addAddressBookEntry", "legacy:addAddressbook")
    def _add_address_book(self, call: _Call, address: Any, label: Any) -> str:
        """Add an address-book entry (label in base64)."""
        raw = decode_base64(label)
        canonical = verify_address(address)[0]
        self._backend(
            call, "add_address_book_entry", canonical, _label_text(raw),
            texts={16: "You already have this address in your address book."},
        )
        return f"Added address {canonical} to address book"

    @command("deleteAddressBookEntry", "legacy:deleteAddressbook")
    def _delete_address_book(self, call: _Call, address: Any) -> str:
        """Delete an address-book entry."""
        canonical = verify_address(address)[0]
        self._backend(call, "delete_address_book_entry", canonical)
        return f"Deleted address book entry for {canonical} if it existed"

    # ------------------------------------------------------------------ subscriptions

    @command("listSubscriptions")
    def _list_subscriptions(self, call: _Call) -> dict[str, Any]:
        """All subscriptions: label (base64), address, enabled."""
        rows = self._backend(call, "list_subscriptions")
        return {
            "subscriptions": [
                {"label": _b64(_display_bytes(r.label)), "address": r.address, "enabled": bool(r.enabled)}
                for r in rows
            ]
        }

    @command("addSubscription")
    def _add_subscription(self, call: _Call, address: Any, label: Any = "") -> str:
        """Subscribe to an address's broadcasts (label in base64)."""
        text = _utf8_label(decode_base64(label)) if label else ""
        canonical = verify_address(address)[0]
        self._backend(call, "add_subscription", canonical, text, texts={16: ERROR_TEXTS[16]})
        return "Added subscription."

    @command("deleteSubscription")
    def _delete_subscription(self, call: _Call, address: Any) -> str:
        """Unsubscribe (not checked: no error if there was no such subscription)."""
        self._backend(call, "delete_subscription", _loose_address(address))
        return "Deleted subscription if it existed."

    # ------------------------------------------------------------------ inbox

    @command("getAllInboxMessages")
    def _all_inbox(self, call: _Call) -> dict[str, Any]:
        """Every inbox message (trash excluded), ordered by received time."""
        return {"inboxMessages": [inbox_record(m) for m in self._backend(call, "inbox_messages")]}

    @command("getAllInboxMessageIds", "getAllInboxMessageIDs")
    def _all_inbox_ids(self, call: _Call) -> dict[str, Any]:
        """The msgids (hex) of every inbox message."""
        return {"inboxMessageIds": [{"msgid": bytes(m.msgid).hex()} for m in self._backend(call, "inbox_messages")]}

    @command("getInboxMessageById", "getInboxMessageByID", xml_none={"inboxMessage": []})
    def _inbox_by_id(self, call: _Call, msgid: Any, readStatus: Any = None) -> dict[str, Any] | None:
        """One inbox message by hex msgid, setting its read flag first when readStatus is given."""
        key = decode_hex(msgid)
        if readStatus is not None:
            read = _bool_arg("readStatus", readStatus, period=True)
            current = self._backend(call, "inbox_message", key)
            if current is not None and bool(current.read) != read:
                self._backend(call, "set_read", key, read)
        found = self._backend(call, "inbox_message", key)
        return None if found is None else {"inboxMessage": [inbox_record(found)]}

    @command("getInboxMessagesByReceiver", "legacy:getInboxMessagesByAddress")
    def _inbox_by_receiver(self, call: _Call, toAddress: Any) -> dict[str, Any]:
        """Inbox messages sent to one address."""
        rows = self._backend(call, "inbox_messages", _loose_address(toAddress))
        return {"inboxMessages": [inbox_record(m) for m in rows]}

    @command("trashMessage")
    def _trash(self, call: _Call, msgid: Any) -> str:
        """Move inbox and sent entries with this hex msgid to the trash."""
        key = decode_hex(msgid)
        self._backend(call, "trash_inbox_message", key)
        self._backend(call, "trash_sent_message", key)
        return "Trashed message (assuming message existed)."

    @command("trashInboxMessage")
    def _trash_inbox(self, call: _Call, msgid: Any) -> str:
        """Move an inbox message to the trash."""
        self._backend(call, "trash_inbox_message", decode_hex(msgid))
        return "Trashed inbox message (assuming message existed)."

    @command("undeleteMessage")
    def _undelete(self, call: _Call, msgid: Any) -> str:
        """Move a trashed inbox message back to the inbox."""
        self._backend(call, "undelete_message", decode_hex(msgid))
        return "Undeleted message"

    # ------------------------------------------------------------------ sent

    @command("getAllSentMessages")
    def _all_sent(self, call: _Call) -> dict[str, Any]:
        """Every sent message (trash excluded), ordered by last action time."""
        return {"sentMessages": [sent_record(m) for m in self._backend(call, "sent_messages")]}

    @command("getAllSentMessageIds", "getAllSentMessageIDs")
    def _all_sent_ids(self, call: _Call) -> dict[str, Any]:
        """The msgids (hex) of every sent message."""
        return {"sentMessageIds": [{"msgid": bytes(m.msgid).hex()} for m in self._backend(call, "sent_messages")]}

    @command("getSentMessageById", "getSentMessageByID", xml_none={"sentMessage": []})
    def _sent_by_id(self, call: _Call, msgid: Any) -> dict[str, Any] | None:
        """One sent message by hex msgid."""
        found = self._backend(call, "sent_message", decode_hex(msgid))
        return None if found is None else {"sentMessage": [sent_record(found)]}

    @command("getSentMessagesByAddress", "getSentMessagesBySender")
    def _sent_by_sender(self, call: _Call, fromAddress: Any) -> dict[str, Any]:
        """Sent messages from one of our addresses."""
        rows = self._backend(call, "sent_messages", _loose_address(fromAddress))
        return {"sentMessages": [sent_record(m) for m in rows]}

    @command("getSentMessageByAckData", xml_none={"sentMessage": []})
    def _sent_by_ackdata(self, call: _Call, ackData: Any) -> dict[str, Any] | None:
        """One sent message by hex ackdata."""
        found = self._backend(call, "sent_message_by_ackdata", decode_hex(ackData))
        return None if found is None else {"sentMessage": [sent_record(found)]}

    @command("trashSentMessage")
    def _trash_sent(self, call: _Call, msgid: Any) -> str:
        """Move a sent message to the trash."""
        self._backend(call, "trash_sent_message", decode_hex(msgid))
        return "Trashed sent message (assuming message existed)."

    @command("trashSentMessageByAckData")
    def _trash_sent_by_ackdata(self, call: _Call, ackData: Any) -> str:
        """Move the sent message with this hex ackdata to the trash."""
        self._backend(call, "trash_sent_message_by_ackdata", decode_hex(ackData))
        return "Trashed sent message (assuming message existed)."

    @command("deleteAndVacuum")
    def _delete_and_vacuum(self, call: _Call) -> str:
        """Delete trashed messages for good and compact the database."""
        self._backend(call, "delete_and_vacuum")
        return "done"

    # ------------------------------------------------------------------ sending

    def _message_args(self, subject: Any, message: Any, encodingType: Any, TTL: Any) -> tuple[bytes, bytes, int, int]:
        encoding = _encoding_arg(encodingType)
        subject_raw = decode_base64(subject)
        body_raw = decode_base64(message)
        if len(subject_raw) + len(body_raw) > MAX_MESSAGE_LENGTH:
            raise APIError(27)
        return subject_raw, body_raw, encoding, _clamp_ttl(TTL)

    _SEND_TEXTS = {
        13: "Could not find your fromAddress in the keys.dat file.",
        14: ERROR_TEXTS[14],
    }

    @command("sendMessage")
    def _send_message(
        self, call: _Call, toAddress: Any, fromAddress: Any, subject: Any, message: Any,
        encodingType: Any = 2, TTL: Any = MSG_TTL_DEFAULT,
    ) -> str:
        """Queue a message (subject, message in base64; TTL clamped to 1 h..28 d); returns ackData hex."""
        subject_raw, body_raw, encoding, ttl = self._message_args(subject, message, encodingType, TTL)
        to_canonical = verify_address(toAddress)[0]
        from_canonical = verify_address(fromAddress)[0]
        ackdata = self._backend(
            call, "send_message", to_canonical, from_canonical, subject_raw, body_raw, encoding=encoding, ttl=ttl,
            texts=self._SEND_TEXTS,
        )
        return bytes(ackdata).hex()

    @command("sendBroadcast")
    def _send_broadcast(
        self, call: _Call, fromAddress: Any, subject: Any, message: Any, encodingType: Any = 2,
        TTL: Any = MSG_TTL_DEFAULT,
    ) -> str:
        """Queue a broadcast from one of our addresses; returns its ackData handle (hex)."""
        subject_raw, body_raw, encoding, ttl = self._message_args(subject, message, encodingType, TTL)
        from_canonical = verify_address(fromAddress)[0]
        ackdata = self._backend(
            call, "send_broadcast", from_canonical, subject_raw, body_raw, encoding=encoding, ttl=ttl,
            texts=self._SEND_TEXTS,
        )
        return bytes(ackdata).hex()

    @command("getStatus")
    def _get_status(self, call: _Call, ackData: Any) -> str:
        """The status string of a sent message by hex ackData, or ``notfound``."""
        if not isinstance(ackData, str):
            raise _decode_error(f"expected a hex string, got {type(ackData).__name__}", ackData)
        if len(ackData) < 76:
            raise APIError(15)
        status = self._backend(call, "message_status", decode_hex(ackData))
        return "notfound" if status is None else str(status)

    @command("disseminatePreEncryptedMsg", "disseminatePreparedObject", xml_none="")
    def _disseminate(
        self, call: _Call, encryptedPayload: Any, nonceTrialsPerByte: Any = NETWORK_MIN_NTPB,
        payloadLengthExtraBytes: Any = NETWORK_MIN_EXTRA,
    ) -> str | None:
        """Store and announce a complete object given in hex; its inventory hash (hex).

        When the nonce is 0 the node does the PoW first and answers once it is done; if that
        takes longer than the node waits, there is no hash (legacy: ``null``)."""
        data = decode_hex(encryptedPayload)
        ntpb = _int_arg("nonceTrialsPerByte", nonceTrialsPerByte)
        extra = _int_arg("payloadLengthExtraBytes", payloadLengthExtraBytes)
        if ntpb < 1 or extra < 0:
            raise APIError(21, "Unexpected API Failure - the PoW difficulty parameters must be positive")
        inventory_hash = self._backend(call, "disseminate_object", data, ntpb, extra)
        if inventory_hash is None and getattr(self.backend, "await_disseminated", None) is not None:
            # Like the reference, answer with the hash once the PoW is done; waited for without
            # the lock so that other API calls go on meanwhile.
            inventory_hash = self._backend(call, "await_disseminated", data, locked=False)
        return None if inventory_hash is None else bytes(inventory_hash).hex()

    # ------------------------------------------------------------------ node

    @command("clientStatus")
    def _client_status(self, call: _Call) -> dict[str, Any]:
        """Connection and processing counters, network status, software name and version."""
        st: ClientStatus = self._backend(call, "client_status")
        if st.network_connections <= 0:
            network_status = "notConnected"
        elif st.received_incoming_connections:
            network_status = "connectedAndReceivingIncomingConnections"
        else:
            network_status = "connectedButHaveNotReceivedIncomingConnections"
        return {
            "networkConnections": int(st.network_connections),
            "numberOfMessagesProcessed": int(st.messages_processed),
            "numberOfBroadcastsProcessed": int(st.broadcasts_processed),
            "numberOfPubkeysProcessed": int(st.pubkeys_processed),
            "pendingDownload": int(st.pending_download),
            "networkStatus": network_status,
            "softwareName": "PyBitmessage",
            "softwareVersion": st.software_version or self.software_version,
        }

    @command("listConnections")
    def _list_connections(self, call: _Call) -> dict[str, Any]:
        """Peer connections: inbound and outbound lists of host, port, fullyEstablished, userAgent."""
        inbound: list[dict[str, Any]] = []
        outbound: list[dict[str, Any]] = []
        conns: Sequence[Connection] = self._backend(call, "list_connections")
        for c in conns:
            (inbound if c.inbound else outbound).append(
                {
                    "host": c.host,
                    "port": int(c.port),
                    "fullyEstablished": bool(c.fully_established),
                    "userAgent": str(c.user_agent),
                }
            )
        return {"inbound": inbound, "outbound": outbound}

    @command("shutdown")
    def _shutdown(self, call: _Call) -> str:
        """Shut the node down once this reply has been sent. Returns ``done``."""
        if getattr(self.backend, "shutdown", None) is None:
            raise APIError(21, "Unexpected API Failure - shutdown is not available on this node")
        call.after.append(lambda: self._backend(call, "shutdown"))
        return "done"
