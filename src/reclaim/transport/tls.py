"""The TLS context for an endpoint that asks for TLS (endpoint.py says when). Imported only
then: `ssl` is no part of a run on a unix socket."""

from __future__ import annotations

import socket
import ssl

from reclaim.errors import UsageError
from reclaim.transport.endpoint import TLS


def context(tls: TLS) -> ssl.SSLContext:
    """The context, its files loaded; `UsageError` naming the file when one cannot be used."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.ca is not None:
        try:
            ctx.load_verify_locations(cafile=tls.ca)
        except (OSError, ssl.SSLError) as exc:
            raise _unusable(tls.ca, exc) from exc
    if tls.cert is not None and tls.key is not None:
        try:
            ctx.load_cert_chain(tls.cert, tls.key)
        except (OSError, ssl.SSLError) as exc:
            raise _unusable(f"{tls.cert} and {tls.key}", exc) from exc
    return ctx


def wrap(ctx: ssl.SSLContext, sock: socket.socket, host: str) -> ssl.SSLSocket:
    """`sock` after the TLS handshake with `host`, under the socket's own timeout."""
    return ctx.wrap_socket(sock, server_hostname=host)


def _unusable(what: str, exc: OSError) -> UsageError:
    reason = str(exc) if isinstance(exc, ssl.SSLError) else exc.strerror or str(exc)
    return UsageError(f"TLS: cannot use {what} ({reason})",
                      hint="DOCKER_CERT_PATH names the directory of ca.pem, cert.pem and "
                           "key.pem (by default ~/.docker)")
