"""A counting pass-through for an engine's unix socket: every tool under test talks to the
engine through it, so "how many API calls" is measured the same way for all of them."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from pathlib import Path

# The start of an HTTP request line, on a client-to-engine stream.
_REQUEST = re.compile(rb"(?:^|\r\n)(GET|HEAD|POST|PUT|DELETE) (/[^ ]*) HTTP/1\.[01]\r\n")


class CountingProxy:
    def __init__(self, listen: Path, upstream: Path) -> None:
        self.listen = listen
        self.upstream = upstream
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listen.unlink(missing_ok=True)
        self._server.bind(str(listen))
        self._server.listen(64)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"unix://{self.listen}"

    def reset(self) -> list[str]:
        with self._lock:
            seen, self.requests = self.requests, []
        return seen

    def close(self) -> None:
        self._server.close()
        self.listen.unlink(missing_ok=True)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            engine.connect(str(self.upstream))
            threading.Thread(target=self._pump, args=(client, engine, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(engine, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        tail = b""
        try:
            while chunk := src.recv(65536):
                if count:
                    window = tail + chunk
                    found = [m.group(2).decode() for m in _REQUEST.finditer(window)
                             if m.start() >= 0 and m.end() > len(tail)]
                    if found:
                        with self._lock:
                            self.requests.extend(found)
                    tail = window[-512:]
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
