"""The typed error family raised by every decoder and checker in bmnode.

Decoders never leak ``struct.error``, ``IndexError`` or a bare ``ValueError``: they raise one
of these, with a message that says what was wrong and, where it applies, at which offset.
"""

from __future__ import annotations


class BmnodeError(Exception):
    """Base class of every error bmnode raises on purpose."""


class MalformedMessage(BmnodeError, ValueError):
    """Bytes that do not decode: truncated, non-minimal var_int, bad framing, bad field.

    ``offset`` is the byte offset in the buffer being decoded where the problem was found
    (``None`` when it does not apply).
    """

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.offset = offset
        if offset is not None:
            message = f"{message} (at offset {offset})"
        super().__init__(message)


class InvalidObject(BmnodeError, ValueError):
    """A well-formed object that breaks a protocol rule (type-specific content, signature, ...)."""


class InvalidAddress(BmnodeError, ValueError):
    """A Bitmessage address that does not decode; ``status`` is the reference's status string."""

    def __init__(self, message: str, status: str = "invalid") -> None:
        self.status = status
        super().__init__(message)


class CryptoError(BmnodeError, ValueError):
    """A cryptographic operation failed on bad input (invalid key, point not on curve, ...)."""


class DecryptionFailed(CryptoError):
    """This key cannot decrypt this blob (bad MAC, bad padding, malformed blob)."""


class PowError(BmnodeError):
    """Proof-of-work search failed or was misused (bad target, cancelled, backend missing)."""


class BackendUnavailable(PowError):
    """A PoW backend cannot run here; the message says what is missing and how to get it."""


class PowCancelled(PowError):
    """A proof-of-work search was cancelled before it found a nonce."""


class StoreError(BmnodeError):
    """A database file cannot be used (corrupt, unreadable, wrong kind, newer schema); the
    message names the file and says what to do. The file is never deleted or rewritten."""


class ConfigError(BmnodeError, ValueError):
    """A bad configuration value or unknown key; the message names the flag or key and the file."""
