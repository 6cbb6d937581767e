"""`ssh://` endpoints, reached as the docker command line reaches them: `ssh HOST docker system
dial-stdio` relays the remote engine's socket over ssh's standard input and output. Imported
only for such an endpoint."""

from __future__ import annotations

import socket
import subprocess
from contextlib import suppress

from reclaim.transport.endpoint import Endpoint


def connect(endpoint: Endpoint) -> tuple[socket.socket, subprocess.Popen[bytes]]:
    """One end of a socket pair whose other end is the relay's standard input and output, so
    that the call deadlines are socket timeouts here as on any other endpoint; and the relay."""
    ours, theirs = socket.socketpair()
    args = ["ssh", "-T"]
    if endpoint.user:
        args += ["-l", endpoint.user]
    if endpoint.port:
        args += ["-p", str(endpoint.port)]
    args += ["--", endpoint.host, "docker", "system", "dial-stdio"]
    try:
        relay = subprocess.Popen(args, stdin=theirs.fileno(), stdout=theirs.fileno())
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return ours, relay


def stop(relay: subprocess.Popen[bytes]) -> None:
    with suppress(OSError):
        relay.terminate()
    relay.wait()
