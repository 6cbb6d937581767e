"""Real endpoints for the transport tests: a web server, a socket that accepts and never
answers, a server that speaks another protocol, a TCP pass-through to an engine's unix socket
(a tcp:// endpoint for a private engine), and a small server that answers a few of the Docker
API's calls as an engine does, over TLS if asked."""

from __future__ import annotations

import http.server
import json
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from reclaim.cli import main

if TYPE_CHECKING:
    import ssl

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
    tcp:// endpoint, so that the TCP transport meets a real engine. Yields its URL."""
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



# /info as a Docker 26.1 engine answers it, trimmed to what reclaim reads. Its data root does
# not exist here: reclaim then asks the API for everything, as for a remote engine.
DOCKER_INFO = {"ServerVersion": "26.1.5", "ID": "TLS0:TEST", "Driver": "overlay2",
               "DriverStatus": [["Backing Filesystem", "extfs"]], "DockerRootDir": "/nonexistent",
               "Containers": 0, "Images": 0}
DOCKER_EVENT = {"Type": "image", "Action": "tag", "Actor": {"ID": "sha256:" + "a" * 64,
                "Attributes": {"name": "fx/web:2"}}, "time": 1700000000,
                "timeNano": 1700000000000000000}

# An engine with nothing in it (as DOCKER_INFO says).
_EMPTY_LISTINGS: dict[str, Any] = {"/images/json": [], "/containers/json": [],
                                   "/volumes": {"Volumes": []},
                                   "/system/df": {"BuildCache": []}}


@dataclass
class Seen:
    """What the Docker-like server saw: the connections it accepted, the client certificates'
    subjects, the requests (method and path) and failed TLS handshakes."""

    connections: int = 0
    clients: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    handshake_failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


def _docker_handler(seen: Seen) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            seen.connections += 1
            handshake = getattr(self.request, "do_handshake", None)
            if handshake is not None:
                self.request.settimeout(10)
                try:
                    handshake()
                except OSError as exc:
                    seen.handshake_failures.append(str(exc))
                    raise
                peer = self.request.getpeercert() or {}
                subject = dict(pair[0] for pair in peer.get("subject", ()))
                seen.clients.append(str(subject.get("commonName", "")))
            super().setup()

        def do_GET(self) -> None:
            seen.requests.append(f"GET {self.path}")
            path = re.sub(r"^/v[0-9.]+/", "/", self.path.partition("?")[0])
            if path == "/info":
                self._json(200, DOCKER_INFO)
            elif path in _EMPTY_LISTINGS:
                self._json(200, _EMPTY_LISTINGS[path])
            elif path == "/events":
                self.send_response(200)
                self.send_header("Api-Version", "1.45")
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                data = json.dumps(DOCKER_EVENT).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                seen.stop.wait(30)  # an idle engine: nothing more until the end
                with suppress(OSError):
                    self.wfile.write(b"0\r\n\r\n")
            else:
                self._json(404, {"message": f"page not found: {path}"})

        def do_DELETE(self) -> None:
            seen.requests.append(f"DELETE {self.path}")
            # As an engine answers a removal: no body, and no length either.
            self.send_response(204)
            self.send_header("Api-Version", "1.45")
            self.end_headers()

        def _json(self, status: int, value: Any) -> None:
            body = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("Api-Version", "1.45")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


class _DockerLikeServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    tls: ssl.SSLContext | None = None

    def get_request(self) -> tuple[Any, Any]:
        sock, address = self.socket.accept()
        if self.tls is None:
            return sock, address
        # The handshake is the handler's, on its own thread, so that a failed one is seen.
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a refused handshake is what some tests are about


@contextmanager
def docker_api_server(tls: ssl.SSLContext | None = None) -> Iterator[tuple[str, Seen]]:
    """A server on 127.0.0.1 that answers /info, /events (one event, then silence) and
    removals as a Docker engine does, over TLS with `tls`; yields its tcp:// URL and what it
    saw."""
    seen = Seen()
    server = _DockerLikeServer(("127.0.0.1", 0), _docker_handler(seen))
    server.tls = tls
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.server_address[1]}", seen
    finally:
        seen.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


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
