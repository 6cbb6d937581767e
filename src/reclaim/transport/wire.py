"""HTTP/1.1 as an engine's API speaks it, written and read by hand on a connected socket.

What reclaim asks of an engine takes few forms: GETs whose answers are large JSON documents,
removals and tags without a request body, and the event stream, one answer whose chunks keep
coming. Those forms are read here, from the socket's buffered reader, without `http.client`,
whose import (with the email parser it pulls in) would weigh on `reclaim df`'s start-up.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, BinaryIO

# A header line or chunk-size line longer than this is not an engine's answer.
_LINE_LIMIT = 65536
# Answers that never have a body, whatever their headers say.
_NO_BODY = frozenset({204, 304})


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


class Head:
    """An answer's status line and headers (names in lower case). `keep_alive`: the
    connection may carry the next request once the body is read. (A plain class: a named
    tuple's definition costs start-up time for nothing here.)"""

    __slots__ = ("headers", "keep_alive", "status")

    def __init__(self, status: int, headers: dict[str, str], keep_alive: bool) -> None:
        self.status = status
        self.headers = headers
        self.keep_alive = keep_alive


def request(method: str, target: str, host: str) -> bytes:
    """A request without a body. A POST says so (Content-Length: 0), as proxies expect."""
    length = "Content-Length: 0\r\n" if method == "POST" else ""
    return f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{length}\r\n".encode()


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


def read_head(reader: BinaryIO) -> Head:
    line = _line(reader)
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP status line: {line[:80]!r}")
    headers: dict[str, str] = {}
    while (header := _line(reader)) not in (b"\r\n", b"\n"):
        name, _, value = header.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" and (parts[0] != b"HTTP/1.0" or connection == "keep-alive")
    return Head(int(parts[1]), headers, keep_alive)


def read_body(reader: BinaryIO, head: Head, method: str = "GET") -> tuple[bytes, bool]:
    """The whole body of the answer `head` began, and whether the connection can carry the
    next request (not when the body ran to the end of the connection)."""
    headers = head.headers
    if method == "HEAD" or head.status in _NO_BODY or head.status < 200:
        return b"", head.keep_alive
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return b"".join(_chunks(reader)), head.keep_alive
    if "content-length" in headers:
        return _exactly(reader, _length(headers)), head.keep_alive
    return reader.read(), False


def read_response(reader: BinaryIO, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One whole answer: status, headers (names in lower case) and body."""
    head = read_head(reader)
    body, _ = read_body(reader, head, method)
    return head.status, head.headers, body


def iter_body(reader: BinaryIO, head: Head) -> Iterator[bytes]:
    """The body of a streamed answer in pieces, each as soon as it has arrived."""
    headers = head.headers
    if "chunked" in headers.get("transfer-encoding", "").lower():
        yield from _chunks(reader)
        return
    left = _length(headers) if "content-length" in headers else None
    while left is None or left > 0:
        piece = reader.read1(65536 if left is None else min(left, 65536))  # type: ignore[attr-defined]
        if not piece:
            if left:
                raise ConnectionResetError("the engine closed the connection mid-answer")
            return
        if left is not None:
            left -= len(piece)
        yield piece


def _chunks(reader: BinaryIO) -> Iterator[bytes]:
    while True:
        size_line = _line(reader)
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size line {size_line[:40]!r}") from None
        if size == 0:
            while _line(reader) not in (b"\r\n", b"\n"):
                pass  # trailers
            return
        chunk = _exactly(reader, size)
        _line(reader)
        yield chunk


def _length(headers: dict[str, str]) -> int:
    try:
        length = int(headers["content-length"])
    except ValueError:
        raise ProtocolError(f"bad Content-Length {headers['content-length']!r}") from None
    if length < 0:
        raise ProtocolError(f"bad Content-Length {headers['content-length']!r}")
    return length


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
