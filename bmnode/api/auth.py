"""API credentials (spec 14.1): HTTP Basic, mandatory; a generated password when none is configured.

:func:`load_or_create_credentials` gives the credentials the API must use: the configured
username/password, else those stored in ``api.toml`` in the data directory, else a new random
password written there (mode 0600) and announced in the log. The API never runs without a
password. Unlike the reference, which splits the decoded header on every ``:`` (so a password
containing ``:`` can never match), the header is split on the first ``:`` only, as RFC 7617
says: usernames may not contain ``:``, passwords may.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from bmnode.errors import ConfigError

__all__ = [
    "CREDENTIALS_FILE",
    "DEFAULT_USERNAME",
    "ApiCredentials",
    "basic_auth_header",
    "load_or_create_credentials",
    "read_credentials",
]

CREDENTIALS_FILE = "api.toml"
DEFAULT_USERNAME = "bmnode"
_log = logging.getLogger("bmnode.api")


def _check_username(username: str, where: str) -> None:
    if not isinstance(username, str) or not username:
        raise ConfigError(f"{where}: the API username must be a non-empty string")
    if ":" in username:
        raise ConfigError(f"{where}: the API username must not contain ':' (HTTP Basic auth cannot carry it)")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in username):
        raise ConfigError(f"{where}: the API username must not contain control characters")


def _check_password(password: str, where: str) -> None:
    if not isinstance(password, str) or not password:
        raise ConfigError(f"{where}: the API password must be a non-empty string (the API never runs unauthenticated)")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in password):
        raise ConfigError(f"{where}: the API password must not contain control characters")


@dataclass(frozen=True)
class ApiCredentials:
    """Username and password for HTTP Basic auth; ``source`` says where they came from."""

    username: str
    password: str = field(repr=False)
    source: str = "configuration"

    def __post_init__(self) -> None:
        _check_username(self.username, self.source)
        _check_password(self.password, self.source)

    def check_header(self, header: str | None) -> bool:
        """True if an ``Authorization`` header value carries exactly these credentials."""
        if not header:
            return False
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "basic" or not token.strip():
            return False
        try:
            raw = base64.b64decode(token.strip(), validate=True)
            text = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            return False
        user, sep, password = text.partition(":")
        if not sep:
            return False
        ok_user = hmac.compare_digest(user.encode("utf-8"), self.username.encode("utf-8"))
        ok_pass = hmac.compare_digest(password.encode("utf-8"), self.password.encode("utf-8"))
        return ok_user and ok_pass

    def header(self) -> str:
        """The ``Authorization`` header value a client sends."""
        return basic_auth_header(self.username, self.password)


def basic_auth_header(username: str, password: str) -> str:
    """``Basic base64(username:password)`` (UTF-8)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode("utf-8")).decode("ascii")


def _toml_string(value: str) -> str:
    """A TOML basic string: backslash, quote and control characters escaped."""
    out = []
    for c in value:
        if c in ('"', "\\"):
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def read_credentials(data_dir: str | Path) -> ApiCredentials | None:
    """The credentials stored in ``<data_dir>/api.toml``, or None when the file does not exist.

    ConfigError if the file exists but cannot be read or lacks a valid username/password."""
    path = Path(data_dir) / CREDENTIALS_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the API credentials: {e.strerror or e}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: not a valid TOML file: {e}") from None
    unknown = sorted(set(doc) - {"username", "password"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)} (expected username, password)")
    username = doc.get("username", DEFAULT_USERNAME)
    password = doc.get("password")
    return ApiCredentials(username, password, source=str(path))


def _write_new(path: Path, username: str, password: str) -> None:
    """Create ``path`` with mode 0600 (fails if it appeared meanwhile) and fsync it."""
    text = (
        "# bmnode XML-RPC API credentials (HTTP Basic auth), generated on first start.\n"
        f"username = {_toml_string(username)}\n"
        f"password = {_toml_string(password)}\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def load_or_create_credentials(
    data_dir: str | Path,
    username: str | None = None,
    password: str | None = None,
    *,
    logger: logging.Logger | None = None,
) -> ApiCredentials:
    """The credentials the API runs with (see the module docstring); never without a password.

    A configured ``password`` wins (the file is not touched). Otherwise ``api.toml`` is read or
    created; a configured ``username`` replaces the stored one.
    """
    log = logger or _log
    if username is not None:
        _check_username(username, "--api-user")
    if password is not None:
        _check_password(password, "--api-password")
        return ApiCredentials(username or DEFAULT_USERNAME, password, source="--api-password")
    stored = read_credentials(data_dir)
    path = Path(data_dir) / CREDENTIALS_FILE
    if stored is None:
        new_user = username or DEFAULT_USERNAME
        new_password = secrets.token_urlsafe(24)  # URL-safe alphabet: never contains ':'
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        try:
            _write_new(path, new_user, new_password)
        except FileExistsError:  # another process created it first: use theirs
            stored = read_credentials(data_dir)
            assert stored is not None
        except OSError as e:
            raise ConfigError(f"{path}: cannot store the generated API password: {e.strerror or e}") from None
        else:
            log.warning("no API password configured: generated one for user %r, stored in %s", new_user, path)
            return ApiCredentials(new_user, new_password, source=str(path))
    try:
        mode = path.stat().st_mode & 0o077
    except OSError:
        mode = 0
    if mode:
        log.warning("%s is readable by other users (mode %o); run chmod 600 on it", path, path.stat().st_mode & 0o777)
    log.info("API credentials for user %r read from %s", username or stored.username, path)
    if username is not None and username != stored.username:
        return ApiCredentials(username, stored.password, source=str(path))
    return stored
