"""A minimal JSON-over-HTTP client for an engine's unix socket, for the bulk reads.

The inventory is a handful of GETs whose answers are large JSON documents. Over a unix socket
the standard library does that as fast as anything, without the ~0.2 s that importing
docker-py and requests costs every run; `reclaim df` on a thousand images is meant to take
half the time `docker system df -v` does, start-up included. docker-py's `APIClient` is still
what reclaim uses for removals and for every endpoint that is not a local unix socket (TCP,
TLS, SSH).
"""

from __future__ import annotations

import json
import socket
import threading
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlencode

if TYPE_CHECKING:
    import http.client

# A header line or chunk-size line longer than this is not an engine's answer.
_LINE_LIMIT = 65536


class HTTPStatusError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        # Lower-case names. A Docker engine names its API version on every answer, errors too.
        self.headers = headers or {}


class ProtocolError(ConnectionError):
    """The answer is not the HTTP/1.1 this client reads (an OSError, like other transport
    failures)."""


class NotJSONError(ValueError):
    """A successful answer whose body is not JSON: whatever answered is not an engine's API."""


def decode_answer(status: int, headers: dict[str, str], body: bytes) -> Any:
    """The decoded JSON of an answer; `HTTPStatusError` for an error status (with the engine's
    own message when it gave one); `NotJSONError` for a body that is not JSON."""
    if status >= 400:
        try:
            message = str(json.loads(body).get("message", ""))
        except (ValueError, AttributeError):
            message = body.decode(errors="replace")[:200]
        raise HTTPStatusError(status, message, headers)
    try:
        return json.loads(body)
    except ValueError:
        raise NotJSONError(f"not JSON: {body[:80]!r}") from None


_connection_class: Any = None  # the class below, made on first use


def unix_connection(path: str, timeout: float | None) -> http.client.HTTPConnection:
    """An `http.client` connection over a unix socket, for streams and requests that change
    something. `http.client` is imported on first use: reading it (with the email parser it
    pulls in) is a tenth of what `reclaim df` would otherwise spend starting up."""
    global _connection_class
    if _connection_class is None:
        import http.client

        class UnixConnection(http.client.HTTPConnection):
            def __init__(self, path: str, timeout: float | None) -> None:
                super().__init__("localhost", timeout=timeout)
                self._path = path

            def connect(self) -> None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                try:
                    sock.connect(self._path)
                except BaseException:
                    sock.close()
                    raise
                self.sock = sock

        _connection_class = UnixConnection
    connection: http.client.HTTPConnection = _connection_class(path, timeout)
    return connection


class _Socket:
    def __init__(self, path: str, timeout: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.timeout = timeout
        try:
            self.sock.connect(path)
        except BaseException:
            self.sock.close()
            raise
        self.reader: BinaryIO = self.sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class UnixJSONClient:
    """GETs JSON from `/v<api>/<path>` over a unix socket; one kept-alive connection per
    thread, so callers may fetch in parallel. The few lines of HTTP/1.1 a GET needs (status,
    headers, a body by length or in chunks) are read here, without `http.client`."""

    def __init__(self, socket_path: str, api_version: str, timeout: float) -> None:
        self.socket_path = socket_path
        self.api_version = api_version
        self.timeout = timeout
        self._local = threading.local()

    def get(
        self, path: str, params: dict[str, Any] | None = None, *, api_version: str | None = None,
        timeout: float | None = None,
    ) -> tuple[Any, dict[str, str]]:
        """The decoded JSON answer and the response headers (names in lower case). Raises
        `HTTPStatusError` for an error status, `NotJSONError` for a body that is not JSON and
        `OSError` for transport failures (`TimeoutError` when the engine is silent for
        `timeout` seconds, the client's own by default, at the connect or at any read)."""
        url = f"/v{api_version or self.api_version}{path}"
        if params:
            url += "?" + urlencode(params)
        if timeout is None:
            timeout = self.timeout
        conn: _Socket | None = getattr(self._local, "conn", None)
        try:
            if conn is None:
                conn = self._local.conn = _Socket(self.socket_path, timeout)
            elif conn.timeout != timeout:
                conn.sock.settimeout(timeout)
                conn.timeout = timeout
            conn.sock.sendall(f"GET {url} HTTP/1.1\r\nHost: docker\r\n\r\n".encode())
            status, headers, body = _read_response(conn.reader)
        except OSError:
            if conn is not None:
                conn.close()
            self._local.conn = None
            raise
        if headers.get("connection", "").lower() == "close":
            conn.close()
            self._local.conn = None
        return decode_answer(status, headers, body), headers

    def close(self) -> None:
        conn: _Socket | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _read_response(reader: BinaryIO) -> tuple[int, dict[str, str], bytes]:
    line = _line(reader)
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP status line: {line[:80]!r}")
    headers: dict[str, str] = {}
    while (header := _line(reader)) not in (b"\r\n", b"\n"):
        name, _, value = header.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            size_line = _line(reader)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size line {size_line[:40]!r}") from None
            if size == 0:
                while _line(reader) not in (b"\r\n", b"\n"):
                    pass  # trailers
                break
            chunks.append(_exactly(reader, size))
            _line(reader)
        body = b"".join(chunks)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise ProtocolError(f"bad Content-Length {headers['content-length']!r}") from None
        body = _exactly(reader, length)
    else:
        body = reader.read()
    return int(parts[1]), headers, body


def _line(reader: BinaryIO) -> bytes:
    line = reader.readline(_LINE_LIMIT + 1)
    if not line:
        raise ConnectionResetError("the engine closed the connection mid-answer")
    if len(line) > _LINE_LIMIT:
        raise ProtocolError("a header line longer than 64 KiB")
    return line


def _exactly(reader: BinaryIO, size: int) -> bytes:
    data = reader.read(size)
    if len(data) != size:
        raise ConnectionResetError("the engine closed the connection mid-answer")
    return data
