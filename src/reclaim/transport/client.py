"""The one HTTP client for Docker-API endpoints: a unix socket, TCP (with TLS when the URL or
the environment asks for it, endpoint.py) or ssh; GETs of JSON, requests that change
something, and streams.

Each thread keeps one connection alive between its requests, so callers may run calls in
parallel; a stream has a connection of its own. Every call has a deadline: the socket's
timeout, from the connect through the last byte of the answer; a stream's covers the connect
and the answer's headers, and then there is none (an idle engine sends nothing for hours, and
that is not an error). A request is never sent twice: a removal sent again would come back as
'not found' and be reported as someone else's. What a failed call means is errors.py's to say.
"""

from __future__ import annotations

import functools
import select
import socket
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

from reclaim.errors import ReclaimError
from reclaim.transport import endpoint as endpoints
from reclaim.transport import errors, wire

if TYPE_CHECKING:
    import ssl

T = TypeVar("T")


class _Connection:
    """A connected socket, the buffered reader of its answers, and for ssh what ends the
    relay process."""

    def __init__(self, sock: socket.socket, timeout: float | None,
                 end_relay: Callable[[], None] | None = None) -> None:
        self.closed = True  # until it is whole (__del__)
        self.sock = sock
        self.timeout = timeout
        self.end_relay = end_relay
        self.reader = sock.makefile("rb")
        self.closed = False

    def set_timeout(self, timeout: float | None) -> None:
        if timeout != self.timeout:
            self.sock.settimeout(timeout)
            self.timeout = timeout

    def stale(self) -> bool:
        """Whether the engine has closed (or written on) this idle connection since its last
        answer: then it cannot carry a request."""
        if self.closed:
            return True
        poll = select.poll()
        poll.register(self.sock, select.POLLIN)
        return bool(poll.poll(0))

    def shutdown(self) -> None:
        """Ends the connection under a thread blocked reading it."""
        with suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with suppress(OSError):
            self.reader.close()
        self.sock.close()
        if self.end_relay is not None:
            self.end_relay()

    def __del__(self) -> None:
        # The connection of a thread that has ended goes with the thread.
        self.close()


class Stream:
    """An answer that goes on, such as the event stream: the pieces of its body as they
    arrive. Iterating raises OSError when the connection breaks; it ends when the engine
    ends the answer. `shutdown` (from any thread) makes a blocked read end."""

    def __init__(self, connection: _Connection, head: wire.Head) -> None:
        self._connection = connection
        self._head = head

    def __iter__(self) -> Iterator[bytes]:
        return wire.iter_body(self._connection.reader, self._head)

    def shutdown(self) -> None:
        self._connection.shutdown()

    def close(self) -> None:
        self._connection.close()


class EngineClient:
    """Calls to the engine at `url` under `/v<api_version>`, each with a deadline (`timeout`
    seconds unless the call says otherwise). `environ` (the process's by default) says
    whether a `tcp://` endpoint speaks TLS. Every method raises reclaim's errors."""

    def __init__(self, url: str, api_version: str, timeout: float, *,
                 environ: Mapping[str, str] | None = None) -> None:
        self.url = url
        self.endpoint = endpoints.parse(url, environ)
        self.api_version = api_version
        self.timeout = timeout
        # Requests sent (and streams opened), for the benchmarks' "how many calls" column.
        self.calls = 0
        self._host = self.endpoint.host_header
        self._lock = threading.Lock()
        self._local = threading.local()
        # Every thread's kept-alive connection (each goes when its thread has ended).
        self._kept: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._tls_context: ssl.SSLContext | None = None

    def get(self, path: str, what: str, params: Mapping[str, Any] | None = None, *,
            api_version: str | None = None, timeout: float | None = None,
            probe: bool = False) -> tuple[Any, dict[str, str]]:
        """One GET: the decoded JSON and the answer's headers (names in lower case). `what`
        names the call in messages; `probe`: the answer says whether this is a Docker engine
        at all."""
        deadline = self.timeout if timeout is None else timeout
        target = self._target(path, params, api_version)

        def answer() -> tuple[Any, dict[str, str]]:
            status, headers, body = self._exchange("GET", target, deadline)
            return wire.decode_answer(status, headers, body), headers

        return self._call(answer, what, call=path, deadline=deadline, probe=probe)

    def send(self, method: str, path: str, what: str, params: Mapping[str, Any] | None = None,
             *, timeout: float | None = None, call: str | None = None) -> Any:
        """One request that changes something (POST, DELETE): the decoded JSON answer, None
        when it is empty. `call` is the path as messages name it (unquoted)."""
        deadline = self.timeout if timeout is None else timeout
        target = self._target(path, params)

        def answer() -> Any:
            status, headers, body = self._exchange(method, target, deadline)
            if status < 400 and not body.strip():
                return None
            return wire.decode_answer(status, headers, body)

        return self._call(answer, what, call=f"{method} {call or path}", deadline=deadline)

    def stream(self, path: str, what: str, params: Mapping[str, Any] | None = None, *,
               timeout: float | None = None) -> Stream:
        """A GET whose answer goes on, on a connection of its own: the connect and the
        answer's headers have the deadline, the stream none. The caller closes it."""
        deadline = self.timeout if timeout is None else timeout
        target = self._target(path, params)

        def open_stream() -> Stream:
            connection = self._connect(deadline, kept=False)
            try:
                connection.sock.sendall(wire.request("GET", target, self._host))
                head = wire.read_head(connection.reader)
                if head.status >= 400:
                    body, _ = wire.read_body(connection.reader, head)
                    wire.decode_answer(head.status, head.headers, body)  # raises
                connection.set_timeout(None)
            except BaseException:
                connection.close()
                raise
            return Stream(connection, head)

        return self._call(open_stream, what, call=path, deadline=deadline)

    def close(self) -> None:
        """Closes the kept-alive connections; streams are their owners' to close."""
        with self._lock:
            kept = list(self._kept)
        for connection in kept:
            connection.close()
        self._local.__dict__.clear()

    # -- inside --------------------------------------------------------------------------

    def _target(self, path: str, params: Mapping[str, Any] | None,
                api_version: str | None = None) -> str:
        target = f"/v{api_version or self.api_version}{path}"
        return f"{target}?{urlencode(params)}" if params else target

    def _call(self, fn: Callable[[], T], what: str, *, call: str, deadline: float,
              probe: bool = False) -> T:
        with self._lock:
            self.calls += 1
        try:
            return fn()
        except ReclaimError:
            raise
        except Exception as exc:
            mapped = errors.translate(exc, url=self.url, what=what, call=call,
                                      deadline=deadline, probe=probe)
            if mapped is None:
                raise
            raise mapped from exc

    def _exchange(self, method: str, target: str,
                  deadline: float) -> tuple[int, dict[str, str], bytes]:
        """One request and its whole answer on this thread's kept-alive connection."""
        connection: _Connection | None = getattr(self._local, "connection", None)
        if connection is not None and connection.stale():
            connection.close()
            connection = None
        try:
            if connection is None:
                connection = self._local.connection = self._connect(deadline)
            else:
                connection.set_timeout(deadline)
            connection.sock.sendall(wire.request(method, target, self._host))
            head = wire.read_head(connection.reader)
            body, keep_alive = wire.read_body(connection.reader, head, method)
        except BaseException:
            # Whatever was left half-read on it, the connection cannot carry another request.
            if connection is not None:
                connection.close()
            self._local.connection = None
            raise
        if not keep_alive:
            connection.close()
            self._local.connection = None
        return head.status, head.headers, body

    def _connect(self, timeout: float, *, kept: bool = True) -> _Connection:
        """A new connection; `kept`: one of the kept-alive ones, which `close` closes (a
        stream's is its owner's to close)."""
        ep = self.endpoint
        end_relay = None
        if ep.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(ep.path)
            except BaseException:
                sock.close()
                raise
        elif ep.kind == "tcp":
            if ep.tls is not None and self._tls_context is None:
                from reclaim.transport import tls

                self._tls_context = tls.context(ep.tls)
            sock = socket.create_connection((ep.host, ep.port), timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls_context is not None:
                from reclaim.transport import tls

                try:
                    sock = tls.wrap(self._tls_context, sock, ep.host)
                except BaseException:
                    sock.close()
                    raise
        else:
            from reclaim.transport import ssh

            sock, relay = ssh.connect(ep)
            sock.settimeout(timeout)
            end_relay = functools.partial(ssh.stop, relay)
        connection = _Connection(sock, timeout, end_relay)
        if kept:
            with self._lock:
                self._kept.add(connection)
        return connection
