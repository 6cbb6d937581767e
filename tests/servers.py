"""Real endpoints that are not a working engine, for the transport tests: a web server, a
socket that accepts and never answers, a server that speaks another protocol, and a TCP
pass-through to an engine's unix socket (a tcp:// endpoint for a private engine)."""

from __future__ import annotations

import http.server
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from reclaim.cli import main

# (status, content type, body) a handler answers for a request path.
Answer = Callable[[str], tuple[int, str, bytes]]

HTML = b"<!DOCTYPE html>\n<html><body><h1>It works!</h1><p>Welcome to nginx.</p></body></html>\n"


def html_page(path: str) -> tuple[int, str, bytes]:
    return 200, "text/html", HTML


def html_not_found(path: str) -> tuple[int, str, bytes]:
    return 404, "text/html", b"<html><body><h1>404 Not Found</h1></body></html>\n"


def json_not_docker(path: str) -> tuple[int, str, bytes]:
    return 200, "application/json", b'{"status": "ok", "service": "something else"}'


def _handler(answer: Answer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def do_DELETE(self) -> None:
            self._answer()

        def _answer(self) -> None:
            status, kind, body = answer(self.path)
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def address_string(self) -> str:
            return "client"  # a unix socket's peer has no address

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@contextmanager
def web_server(answer: Answer, unix_path: Path | None = None) -> Iterator[str]:
    """A real HTTP server (python's http.server) on a unix socket, or on 127.0.0.1; yields
    its engine URL."""
    server: socketserver.BaseServer
    if unix_path is not None:
        server = _UnixHTTPServer(str(unix_path), _handler(answer))
        url = f"unix://{unix_path}"
    else:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(answer))
        url = f"tcp://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _listener(unix_path: Path | None) -> tuple[socket.socket, str]:
    if unix_path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(unix_path))
        return sock, f"unix://{unix_path}"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, f"tcp://127.0.0.1:{sock.getsockname()[1]}"


@contextmanager
def silent_server(unix_path: Path | None = None) -> Iterator[str]:
    """A listening socket that never accepts: the kernel completes every connection into its
    backlog, as it does for an engine whose process is stopped, and nothing ever answers.
    Closing it at the end resets those connections, which frees a client still waiting."""
    sock, url = _listener(unix_path)
    sock.listen(64)
    try:
        yield url
    finally:
        sock.close()


@contextmanager
def banner_server(banner: bytes, unix_path: Path | None = None) -> Iterator[str]:
    """A server that greets every connection with `banner` (an SSH server, say) and then
    keeps it open without a word more."""
    sock, url = _listener(unix_path)
    sock.listen(16)
    sock.settimeout(0.1)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)
            with suppress(OSError):
                conn.sendall(banner)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield url
    finally:
        stop.set()
        thread.join(5)
        sock.close()
        for conn in held:
            conn.close()


@contextmanager
def tcp_to_unix(unix_path: Path) -> Iterator[str]:
    """A TCP pass-through on 127.0.0.1 to a unix socket: the engine at `unix_path` as a
    tcp:// endpoint, so that the docker-py path meets a real engine. Yields its URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    stop = threading.Event()
    held: list[socket.socket] = []

    def pump(src: socket.socket, dst: socket.socket) -> None:
        with suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(str(unix_path))
            except OSError:
                client.close()
                continue
            held.extend((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for sock in held:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()



def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], float]:
    """`reclaim ARGV` in-process: its exit code, the lines it wrote to stderr, and how long it
    took."""
    began = time.monotonic()
    code = main(argv)
    took = time.monotonic() - began
    return code, capsys.readouterr().err.strip().splitlines(), took


def within(seconds: float, fn: Callable[[], Any]) -> Any:
    """`fn()`'s value or what it raised, failing the test if it has not returned by then (a
    call without a deadline would wait for ever: it is left on a daemon thread)."""
    box: dict[str, Any] = {}

    def go() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")
