"""The transport's connections: kept alive per thread, replaced when the engine closed them
while idle, never used to send a request twice; answers without a body; the deadline of a
stream. The server is a real socket server that answers each request with the bytes a test
gives it, so that the cases an engine's HTTP server produces can be had exactly."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from reclaim.errors import EngineUnreachable
from reclaim.transport import EngineClient
from tests.servers import within

SLACK = 10.0
OK = (b"HTTP/1.1 200 OK\r\nApi-Version: 1.45\r\nContent-Type: application/json\r\n"
      b"Content-Length: 2\r\n\r\n{}")
NO_CONTENT = b"HTTP/1.1 204 No Content\r\nApi-Version: 1.45\r\n\r\n"

# What the server does with a request: the bytes it answers, and whether it then closes.
Reply = Callable[[str], tuple[bytes, bool]]


class Scripted:
    def __init__(self) -> None:
        self.connections = 0
        self.closed = 0  # connections the server has closed
        self.requests: list[str] = []


@contextmanager
def scripted_server(path: Path, reply: Reply) -> Iterator[tuple[str, Scripted]]:
    seen = Scripted()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        try:
            answer(conn)
        finally:
            seen.closed += 1

    def answer(conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        with conn, reader:
            while not stop.is_set():
                line = reader.readline()
                if not line:
                    return
                while reader.readline() not in (b"\r\n", b"\n", b""):
                    pass
                request = line.decode().split(" HTTP/")[0]
                seen.requests.append(request)
                answer, close = reply(request)
                with suppress(OSError):
                    conn.sendall(answer)
                if close:
                    return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            seen.connections += 1
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"unix://{path}", seen
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_one_connection_carries_a_thread_s_requests_answers_without_a_body_too(
    sock_dir: Path
) -> None:
    def reply(request: str) -> tuple[bytes, bool]:
        return (NO_CONTENT if request.startswith("DELETE") else OK), False

    with scripted_server(sock_dir / "e.sock", reply) as (url, seen):
        client = EngineClient(url, "1.41", 5)
        try:
            def calls() -> None:
                client.get("/info", "engine info")
                assert client.send("DELETE", "/volumes/v1", "remove volume v1") is None
                client.get("/volumes", "list volumes")

            within(SLACK, calls)
        finally:
            client.close()
    assert seen.requests == ["GET /v1.41/info", "DELETE /v1.41/volumes/v1", "GET /v1.41/volumes"]
    assert seen.connections == 1
    assert client.calls == 3


def test_a_connection_the_engine_closed_while_idle_is_replaced(sock_dir: Path) -> None:
    """An engine (or a proxy in front of it) may close a kept-alive connection between two
    requests without saying so: the next request goes on a new one, not into an error."""
    with scripted_server(sock_dir / "e.sock", lambda request: (OK, True)) as (url, seen):
        client = EngineClient(url, "1.41", 5)
        try:
            def calls() -> None:
                client.get("/info", "engine info")
                deadline = time.monotonic() + SLACK
                while seen.closed < 1:
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
                client.get("/volumes", "list volumes")

            within(SLACK, calls)
        finally:
            client.close()
    assert seen.requests == ["GET /v1.41/info", "GET /v1.41/volumes"]
    assert seen.connections == 2


def test_connection_close_is_honoured(sock_dir: Path) -> None:
    closing = OK.replace(b"Content-Length", b"Connection: close\r\nContent-Length")
    with scripted_server(sock_dir / "e.sock", lambda request: (closing, False)) as (url, seen):
        client = EngineClient(url, "1.41", 5)
        try:
            within(SLACK, lambda: [client.get("/info", "engine info") for _ in range(3)])
        finally:
            client.close()
    assert seen.connections == 3


def test_a_removal_cut_off_mid_answer_is_an_error_and_never_sent_again(sock_dir: Path) -> None:
    def reply(request: str) -> tuple[bytes, bool]:
        if request.startswith("DELETE"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n[{\"Untagged\"", True
        return OK, False

    with scripted_server(sock_dir / "e.sock", reply) as (url, seen):
        client = EngineClient(url, "1.41", 5)
        try:
            def calls() -> None:
                client.get("/info", "engine info")
                with pytest.raises(EngineUnreachable) as caught:
                    client.send("DELETE", "/images/fx/web:1", "remove image fx/web:1")
                assert caught.value.message == f"cannot reach the Docker engine at {url}"
                client.get("/info", "engine info")  # and the next call has a new connection

            within(SLACK, calls)
        finally:
            client.close()
    assert seen.requests.count("DELETE /v1.41/images/fx/web:1") == 1
    assert seen.connections == 2


def test_a_stream_s_deadline_covers_its_headers_only(sock_dir: Path) -> None:
    """The headers come at once; the first event 1.5 s later, three deadlines on."""
    event = b'{"Type":"image","Action":"tag"}\n'
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_dir / "s.sock"))
    listener.listen(1)
    send_event = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nApi-Version: 1.45\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            send_event.wait(SLACK)
            conn.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(event), event))

    threading.Thread(target=serve, daemon=True).start()
    client = EngineClient(f"unix://{sock_dir / 's.sock'}", "1.41", 0.5)
    pieces: list[bytes] = []
    errors: list[BaseException] = []
    try:
        stream = within(SLACK, lambda: client.stream("/events", "events"))

        def read() -> None:
            try:
                pieces.extend(stream)
            except BaseException as exc:
                errors.append(exc)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(1.5)
        assert reader.is_alive(), errors  # still waiting, past the deadline: no error
        send_event.set()
        reader.join(SLACK)
        stream.close()
    finally:
        client.close()
        listener.close()
    assert not errors and pieces == [event]
