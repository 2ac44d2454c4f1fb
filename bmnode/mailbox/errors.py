"""API-level errors of the mailbox (spec 14.5): the reference's error numbers and texts.

The mailbox raises :class:`ApiError` for bad arguments to the operations the XML-RPC API
exposes (unknown address, bad version, blank passphrase, ...); the API layer turns it into
``"API Error %04i: %s"`` (legacy) or a Fault. Address arguments are checked here, once, by
:func:`check_address` with the reference's mapping of decode statuses to codes.
"""

from __future__ import annotations

from typing import Any

from bmnode.crypto.addresses import PREFIX, Address, decode_address
from bmnode.errors import BmnodeError

__all__ = [
    "ApiError",
    "MESSAGES",
    "address_error",
    "check_address",
    "normalise_address",
]

#: Default message of every error number (14.5); some calls add details after a colon.
MESSAGES: dict[int, str] = {
    0: "Invalid command parameters number",
    1: "The specified passphrase is blank.",
    2: "The address version number currently must be 3, 4, or 0 (which means auto-select).",
    3: "The stream number must be 1 (or 0 which means auto-select). Others aren't supported.",
    4: "Why would you ask me to generate 0 addresses for you?",
    5: (
        "You have (accidentally?) specified too many addresses to make. Maximum 999. This check only "
        "exists to prevent mischief; if you really want to create more addresses than this, contact "
        "the Bitmessage developers and we can modify the check or you can do it yourself by searching "
        "the source code for this message."
    ),
    6: "The encoding type must be 2 or 3.",
    7: "Could not decode address",
    8: "Checksum failed for address",
    9: "Invalid characters in address",
    10: "Address version number too high (or zero)",
    11: "The address version number currently must be 2, 3 or 4. Others aren't supported. Check the address.",
    12: "The stream number must be 1. Others aren't supported. Check the address.",
    13: "Could not find this address in your keys.dat file.",
    14: "Your fromAddress is disabled. Cannot send.",
    15: "Invalid ackData object size.",
    16: "You already have this address in your address book.",
    17: "Label is not valid UTF-8 data.",
    18: "Chan name does not match address.",
    19: "The length of hash should be 32 bytes (encoded in hex thus 64 characters).",
    20: "Invalid method",
    21: "Unexpected API Failure",
    22: "Decode error",
    23: "Bool expected",
    24: "Chan address is already present.",
    25: "Specified address is not a chan address. Use deleteAddress API call instead.",
    26: "Malformed varint in address",
    27: "Message is too long.",
}

#: Texts used by particular calls instead of the default (same numbers).
ALREADY_SUBSCRIBED = "You are already subscribed to that address."
FROM_ADDRESS_NOT_FOUND = "Could not find your fromAddress in the keys.dat file."


class ApiError(BmnodeError):
    """An error the API reports to its client: ``code`` (14.5) and ``message``.

    ``str(e)`` is the reference's legacy text ``API Error %04i: %s``.
    """

    def __init__(self, code: int, message: str | None = None) -> None:
        self.code = int(code)
        self.message = MESSAGES.get(self.code, "Unknown error") if message is None else str(message)
        super().__init__(f"API Error {self.code:04d}: {self.message}")

    def to_dict(self) -> dict[str, Any]:
        """{"code": int, "message": str}."""
        return {"code": self.code, "message": self.message}


def normalise_address(address: str) -> str:
    """The address with surrounding whitespace removed and ``BM-`` added if missing (14.3)."""
    if isinstance(address, (bytes, bytearray)):
        address = bytes(address).decode("ascii", "replace")
    if not isinstance(address, str):
        raise ApiError(7, f"{MESSAGES[7]}: {address!r} : not a string")
    s = address.strip()
    return s if s.startswith(PREFIX) else PREFIX + s


def address_error(address: str, status: str) -> ApiError:
    """The ApiError for an address whose decode status is ``status`` (14.5 mapping)."""
    if status == "checksumfailed":
        return ApiError(8, f"{MESSAGES[8]}: {address}")
    if status == "invalidcharacters":
        return ApiError(9, f"{MESSAGES[9]}: {address}")
    if status == "versiontoohigh":
        return ApiError(10, f"{MESSAGES[10]}: {address}")
    if status == "varintmalformed":
        return ApiError(26, f"{MESSAGES[26]}: {address}")
    return ApiError(7, f"{MESSAGES[7]}: {address} : {status}")


def check_address(address: str, *, streams: frozenset[int] | set[int] = frozenset({1})) -> tuple[str, Address]:
    """Validate an address argument as the API does (9.4 plus 14.3): the canonical ``BM-``
    string and its (version, stream, ripe); ApiError 7/8/9/10/26, 11 (version not 2-4) or
    12 (stream not joined)."""
    text = normalise_address(address)
    decoded = decode_address(text)
    if not decoded.ok:
        raise address_error(text, decoded.status)
    if decoded.version not in (2, 3, 4):
        raise ApiError(11)
    if decoded.stream not in streams:
        raise ApiError(12)
    a = Address(decoded.version, decoded.stream, decoded.ripe)
    return a.encode(), a
