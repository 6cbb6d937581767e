"""The few lines of HTTP/1.1 the inventory's GETs need, read without http.client."""

from __future__ import annotations

import io

import pytest

from reclaim.transport.wire import ProtocolError
from reclaim.transport.wire import read_response as _read_response


def test_a_chunked_answer_with_trailers() -> None:
    raw = (b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"4\r\n[1, \r\n3;ext=1\r\n2]\n\r\n0\r\nX-Trailer: y\r\n\r\nNEXT")
    reader = io.BytesIO(raw)
    status, headers, body = _read_response(reader)
    assert (status, headers["api-version"], body) == (200, "1.41", b"[1, 2]\n")
    assert reader.read() == b"NEXT"  # the kept-alive connection's next answer is untouched


def test_an_answer_by_length_and_an_error_status() -> None:
    reader = io.BytesIO(b"HTTP/1.1 404 Not Found\r\nContent-Length: 13\r\n\r\n"
                        b'{"message":1}')
    assert _read_response(reader) == (404, {"content-length": "13"}, b'{"message":1}')


@pytest.mark.parametrize("raw", [
    b"",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort",
    b"HTTP/1.1 200 OK\r\nContent-Le",
])
def test_a_cut_answer_is_a_connection_error(raw: bytes) -> None:
    with pytest.raises(ConnectionError):
        _read_response(io.BytesIO(raw))


@pytest.mark.parametrize("raw", [
    b"SSH-2.0-OpenSSH\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
])
def test_what_is_not_http_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        _read_response(io.BytesIO(raw))
