"""What a failed call to an engine means, in reclaim's errors: the one place that reads
statuses, timeouts and transport failures."""

from __future__ import annotations

import sys
from collections.abc import Iterator

from reclaim.errors import (
    EngineError,
    EngineUnreachable,
    EngineUnsupported,
    InUse,
    NotFound,
    ReclaimError,
)
from reclaim.transport.wire import HTTPStatusError, NotJSONError, ProtocolError

NOT_DOCKER_HINT = "point reclaim at a Docker engine's API with --engine URL or DOCKER_HOST"
_ELSEWHERE = "Point reclaim at another with --engine URL or DOCKER_HOST"


def not_docker(url: str) -> EngineUnsupported:
    return EngineUnsupported(f"not a Docker engine at {url}", hint=NOT_DOCKER_HINT)


def translate(exc: Exception, *, url: str, what: str, call: str, deadline: float,
              probe: bool) -> ReclaimError | None:
    """`exc`, raised by the call `call` (its method and path) that `what` describes and that
    could wait `deadline` seconds, as reclaim's error; None if it is no failure of the call.
    `probe`: the answer says whether `url` is a Docker engine at all."""
    if probe and _speaks_tls(exc):
        return EngineUnreachable(f"the engine at {url} speaks TLS: reclaim spoke plain HTTP",
                                 hint="set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH (as for "
                                      "docker), or give an https:// URL")
    if probe and _not_docker(exc):
        return not_docker(url)
    if isinstance(exc, HTTPStatusError):
        return status_error(exc.status, exc.message, what)
    if isinstance(exc, NotJSONError):
        return EngineError(f"{what}: the engine's answer is not JSON")
    if _is_permission_error(exc):
        return EngineUnreachable(
            f"permission denied on the engine socket {url}",
            hint="run as root, or as a member of the group that owns the socket (docker)",
        )
    if not isinstance(exc, OSError):
        return None
    if _is_timeout(exc):
        return EngineUnreachable(
            f"the engine at {url} did not answer {call} within {deadline:g} s",
            hint=f"is it stopped or overloaded? {_ELSEWHERE}" if probe else
                 "a big or busy host may need longer: --timeout SECONDS",
        )
    tls = _tls_failure(exc)
    if tls is not None:
        return EngineUnreachable(f"TLS with the engine at {url} failed: {tls[0]}", hint=tls[1])
    return EngineUnreachable(f"cannot reach the Docker engine at {url}",
                             hint=f"is it running? {_ELSEWHERE}")


def status_error(status: int, message: str, what: str) -> ReclaimError:
    if status == 404:
        return NotFound(f"{what}: {message}")
    if status == 409:
        return InUse(f"{what}: {message}")
    return EngineError(f"{what}: engine answered {status}: {message}")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what it was raised from or while handling, and the exceptions wrapped
    in its arguments, each once."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend(a for a in current.args if isinstance(a, BaseException))
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _is_timeout(exc: BaseException) -> bool:
    return any(isinstance(e, TimeoutError) or "timed out" in str(e).lower()
               for e in _causes(exc))


def _not_docker(exc: BaseException) -> bool:
    """Whether the failure of /info shows that what answered is no Docker engine: an answer
    that is not HTTP, or not JSON, or an error status without the API version an engine names
    on every answer. (A Docker engine never answers 404 to /info.)"""
    if isinstance(exc, HTTPStatusError):
        return exc.status == 404 or "api-version" not in exc.headers
    return isinstance(exc, (NotJSONError, ProtocolError))


def _is_permission_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PermissionError) or "Permission denied" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _speaks_tls(exc: BaseException) -> bool:
    """Go's answer to plain HTTP on a TLS port (a Docker engine's --tlsverify)."""
    return (isinstance(exc, HTTPStatusError) and exc.status == 400
            and "HTTP request to an HTTPS server" in exc.message)


def _tls_failure(exc: BaseException) -> tuple[str, str] | None:
    """What went wrong in TLS, and what to check, if that is what failed. (`ssl` is loaded
    only where an endpoint speaks TLS; without it, nothing failed in TLS.)"""
    ssl = sys.modules.get("ssl")
    if ssl is None:
        return None
    for e in _causes(exc):
        if isinstance(e, ssl.SSLCertVerificationError):
            return (f"its certificate is not trusted ({e.verify_message})",
                    "with DOCKER_TLS_VERIFY, ca.pem in DOCKER_CERT_PATH must be the authority "
                    "that signed the engine's certificate, for the host name in the URL")
        if isinstance(e, ssl.SSLError):
            reason = str(e.reason or e).lower().replace("_", " ")
            return (reason, "does the engine speak TLS there, and accept the client "
                            "certificate (cert.pem and key.pem in DOCKER_CERT_PATH)?")
    return None
