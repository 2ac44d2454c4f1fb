"""TLS for peer connections (spec 4.6): anonymous ECDH contexts and an in-memory TLS engine.

The reference upgrades a connection to TLS right after the verack exchange when both sides
advertise NODE_SSL: cipher ``AECDH-AES256-SHA`` (anonymous ECDH, no certificates), curve
secp256k1, TLS 1.0 up to 1.2, TCP client = TLS client (the floor is TLS 1.0 because the
reference sets none and, on Python < 2.7.9, speaks TLS 1.0 only). The engine here runs
OpenSSL over ``ssl.MemoryBIO`` so that bytes already read past the verack can be fed to it
(no over-read).
"""

from __future__ import annotations

import functools
import logging
import ssl
import warnings

log = logging.getLogger(__name__)

CIPHERS = "AECDH-AES256-SHA@SECLEVEL=0"
CURVE = "secp256k1"
#: Largest plaintext read from the engine per call.
READ_CHUNK = 65536


class TlsError(Exception):
    """The TLS handshake or a record failed; the connection must be closed."""


def _configure(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers(CIPHERS)
    ctx.set_ecdh_curve(CURVE)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    # No floor above TLS 1.0, as in the reference (Python's default floor is TLS 1.2, which
    # refuses old reference clients); the highest common version is still negotiated.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    # The reference's options; OP_ALL and OP_NO_SSLv2/3 are set by default on OpenSSL 3.
    ctx.options |= ssl.OP_ALL | ssl.OP_SINGLE_ECDH_USE | ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


@functools.lru_cache(maxsize=None)
def server_context() -> ssl.SSLContext:
    """Context for the accepting side (TCP server = TLS server)."""
    return _configure(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))


@functools.lru_cache(maxsize=None)
def client_context() -> ssl.SSLContext:
    """Context for the connecting side (TCP client = TLS client)."""
    return _configure(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))


class TlsEngine:
    """One side of a TLS session over memory buffers.

    ``receive(data)`` takes ciphertext from the socket and returns decrypted plaintext;
    ``send(plaintext)`` encrypts; ``outgoing()`` returns the ciphertext to write to the socket
    (handshake records included). Errors raise :class:`TlsError`.
    """

    def __init__(self, server_side: bool) -> None:
        ctx = server_context() if server_side else client_context()
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = ctx.wrap_bio(self._in, self._out, server_side=server_side)
        self.server_side = server_side
        self.handshake_done = False

    def start(self) -> None:
        """Begin the handshake (the client's first flight lands in :meth:`outgoing`)."""
        self._step()

    def _step(self) -> None:
        if self.handshake_done:
            return
        try:
            self._obj.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise TlsError(f"TLS handshake failed: {exc}") from None
        self.handshake_done = True

    def receive(self, data: bytes) -> bytes:
        """Feed ciphertext; return whatever plaintext it completed (possibly empty)."""
        if data:
            self._in.write(data)
        self._step()
        if not self.handshake_done:
            return b""
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._obj.read(READ_CHUNK)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except ssl.SSLZeroReturnError:
                raise TlsError("peer closed the TLS session") from None
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise TlsError(f"TLS record error: {exc}") from None
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def send(self, plaintext: bytes) -> None:
        """Encrypt ``plaintext`` (only after the handshake); fetch it with :meth:`outgoing`."""
        if not self.handshake_done:
            raise TlsError("cannot send application data before the TLS handshake completes")
        view = memoryview(plaintext)
        while view:
            try:
                n = self._obj.write(view)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise TlsError(f"TLS write failed: {exc}") from None
            view = view[n:]

    def outgoing(self) -> bytes:
        """Ciphertext waiting to go to the socket."""
        return self._out.read() if self._out.pending else b""

    @property
    def cipher(self) -> str | None:
        """Negotiated cipher name, once the handshake is done."""
        c = self._obj.cipher()
        return c[0] if c else None

    @property
    def version(self) -> str | None:
        """Negotiated protocol version (e.g. ``TLSv1.2``)."""
        return self._obj.version()


@functools.lru_cache(maxsize=None)
def tls_available() -> bool:
    """True when this OpenSSL can do the reference's TLS (anonymous ECDH on secp256k1, TLS 1.2).

    Checked by building both contexts and running one handshake in memory; when it fails the
    node must not advertise NODE_SSL (spec 4.6).
    """
    try:
        server = TlsEngine(server_side=True)
        client = TlsEngine(server_side=False)
        client.start()
        for _ in range(10):
            server.receive(client.outgoing())
            client.receive(server.outgoing())
            if client.handshake_done and server.handshake_done:
                break
        if not (client.handshake_done and server.handshake_done):
            raise TlsError("in-memory handshake did not complete")
        client.send(b"ping")
        if server.receive(client.outgoing()) != b"ping":
            raise TlsError("in-memory TLS round trip failed")
    except (TlsError, ssl.SSLError, ValueError, OSError) as exc:
        log.warning("TLS disabled: this OpenSSL (%s) cannot do %s on %s: %s", ssl.OPENSSL_VERSION, CIPHERS, CURVE, exc)
        return False
    return True


__all__ = ["CIPHERS", "CURVE", "TlsEngine", "TlsError", "client_context", "server_context", "tls_available"]
