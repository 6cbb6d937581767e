"""Engine URLs: which forms reclaim can reach, what each names, and whether it asks for TLS.

The forms are Docker's: `unix:///PATH`, `tcp://HOST:PORT` (or a bare `HOST:PORT`),
`http://` and `https://HOST:PORT`, and `ssh://[USER@]HOST[:PORT]`. TLS on `tcp://` follows the
docker command line's environment: `DOCKER_TLS_VERIFY` (not empty) speaks TLS and verifies the
engine's certificate against `ca.pem` in `DOCKER_CERT_PATH` (by default `~/.docker`),
presenting `cert.pem` and `key.pem` from there when both exist; `DOCKER_TLS` (not empty) alone
speaks TLS without verifying. An `https://` URL always speaks TLS, verified against the
system's certificate authorities unless `DOCKER_TLS_VERIFY` names its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

FORMS = "unix:///PATH, tcp://HOST:PORT, https://HOST:PORT or ssh://[USER@]HOST"


# Plain classes, not named tuples: defining those costs start-up time, and these are made once.


class TLS:
    """How to speak TLS to an endpoint. `ca`: the file of authorities the engine's certificate
    must chain to (None: the system's); `verify` False: no check at all (`DOCKER_TLS`)."""

    __slots__ = ("ca", "cert", "key", "verify")

    def __init__(self, verify: bool, ca: str | None, cert: str | None,
                 key: str | None) -> None:
        self.verify = verify
        self.ca = ca
        self.cert = cert
        self.key = key


class Endpoint:
    __slots__ = ("host", "kind", "path", "port", "tls", "url", "user")

    def __init__(self, url: str, kind: str, path: str, host: str, port: int,
                 user: str | None, tls: TLS | None) -> None:
        self.url = url
        self.kind = kind  # "unix", "tcp" or "ssh"
        self.path = path  # the socket's path (unix)
        self.host = host  # tcp, ssh
        self.port = port  # tcp; ssh: 0 for ssh's own default
        self.user = user  # ssh
        self.tls = tls

    @property
    def host_header(self) -> str:
        if self.kind != "tcp":
            return "docker"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def problem(url: str) -> str | None:
    """What makes `url` no engine endpoint, or None. A bare HOST:PORT is TCP, as docker reads
    it."""
    if not url:
        return "empty"
    if any(c.isspace() or not c.isprintable() for c in url):
        return "it holds spaces or control characters"
    try:
        parts = urlsplit(url if "://" in url else f"tcp://{url}")
    except ValueError:
        return "a bad IPv6 address"
    scheme = parts.scheme
    if scheme not in ("unix", "http+unix", "tcp", "http", "https", "ssh"):
        return f"unknown scheme {scheme or url.partition('://')[0]!r}"
    if parts.query or parts.fragment or parts.password:
        return "a query, fragment or password has no place in it"
    if scheme in ("unix", "http+unix"):
        return None if parts.netloc or parts.path else "no socket path"
    try:
        port = parts.port
    except ValueError:
        return "the port is not a number from 1 to 65535"
    if not parts.hostname:
        return "no host"
    if scheme == "ssh":
        return "no path may follow the host" if parts.path.strip("/") else None
    return None if port else "no port"


def parse(url: str, environ: Mapping[str, str] | None = None) -> Endpoint:
    """The endpoint `url` names (one `problem` found nothing wrong with), with its TLS as
    `environ` (by default the process's) asks for it."""
    env = os.environ if environ is None else environ
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    scheme = parts.scheme
    if scheme in ("unix", "http+unix"):
        path = unquote(parts.netloc + parts.path) if scheme == "http+unix" else (
            url.removeprefix("unix://"))
        return Endpoint(url, "unix", path, "", 0, None, None)
    host = parts.hostname or ""
    if scheme == "ssh":
        return Endpoint(url, "ssh", "", host, parts.port or 0, parts.username, None)
    return Endpoint(url, "tcp", "", host, parts.port or 0, None, _tls(scheme, env))


def _tls(scheme: str, env: Mapping[str, str]) -> TLS | None:
    verify = bool(env.get("DOCKER_TLS_VERIFY"))
    if scheme == "http" or not (verify or env.get("DOCKER_TLS") or scheme == "https"):
        return None
    directory = env.get("DOCKER_CERT_PATH") or os.path.join(os.path.expanduser("~"), ".docker")
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    both = os.path.exists(cert) and os.path.exists(key)
    return TLS(
        verify=verify or scheme == "https",
        ca=os.path.join(directory, "ca.pem") if verify else None,
        cert=cert if both else None,
        key=key if both else None,
    )
