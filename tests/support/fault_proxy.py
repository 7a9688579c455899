"""TCP and S3 proxies between icefloe and its services that the test breaks at will.

- :class:`DbProxy`: a TCP listener on 127.0.0.1 forwarding to PostgreSQL, whose connections the
  test cuts (and refuses) for a while: a lost database connection.
- :class:`S3FaultProxy`: an HTTP proxy on 127.0.0.1 in front of SeaweedFS answering 503 SlowDown,
  500 InternalError, hanging, or delaying, as the test decides per request.

Every thread started here is stopped by ``close()``.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import sqlalchemy as sa


def db_target(database_url: str) -> str | tuple[str, int]:
    """Where PostgreSQL listens for ``database_url``: its Unix socket path, or (host, port)."""
    url = sa.engine.make_url(database_url)
    host = url.query.get("host") or url.host
    query_port = url.query.get("port")
    port = int((query_port[0] if isinstance(query_port, tuple) else query_port) or url.port or 5432)
    if isinstance(host, tuple):
        host = host[0]
    if not host or str(host).startswith("/"):
        return f"{host or '/tmp'}/.s.PGSQL.{port}"
    return (str(host), port)


def via_proxy(database_url: str, port: int) -> str:
    """``database_url`` pointed at 127.0.0.1:``port`` (same user, password and database)."""
    url = sa.engine.make_url(database_url)
    url = url.set(host="127.0.0.1", port=port, query={k: v for k, v in url.query.items() if k not in ("host", "port")})
    return url.render_as_string(hide_password=False)


# --------------------------------------------------------------------------------------------------
# a TCP proxy to PostgreSQL that the test can cut


class DbProxy:
    """127.0.0.1:``port`` → PostgreSQL (its Unix socket, or a TCP address). :meth:`cut` closes every
    connection through it and refuses new ones (the listener is closed: connect() gets
    ECONNREFUSED) until :meth:`restore`: the network between a worker and its database is gone."""

    def __init__(self, target: str | tuple[str, int]) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._closed = False
        self.connections = 0
        self.port = self._listen(0)

    def _listen(self, port: int) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        self._listener = listener
        thread = threading.Thread(target=self._accept, args=(listener,), name="pg-proxy-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return int(listener.getsockname()[1])

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by cut() or close()
            try:
                family = socket.AF_UNIX if isinstance(self.target, str) else socket.AF_INET
                upstream = socket.socket(family, socket.SOCK_STREAM)
                upstream.connect(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._pairs.append((client, upstream))
                self.connections += 1
            thread = threading.Thread(target=self._pump, args=(client, upstream), name="pg-proxy-pump", daemon=True)
            thread.start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        sockets = [a, b]
        try:
            while True:
                readable, _, _ = select.select(sockets, [], [], 1.0)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (b if sock is a else a).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _drop_all(self) -> int:
        with self._lock:
            listener, self._listener = self._listener, None
            pairs, self._pairs = self._pairs, []
        if listener is not None:
            listener.close()
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
        return len(pairs)

    def cut(self) -> int:
        """Close every connection and refuse new ones; returns how many connections were cut."""
        return self._drop_all()

    def restore(self) -> None:
        """Accept connections again, on the same port."""
        deadline = time.monotonic() + 30
        while True:
            try:
                self._listen(self.port)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def close(self) -> None:
        self._drop_all()
        for thread in self._threads:
            thread.join(5)


# --------------------------------------------------------------------------------------------------
# an S3 proxy that answers with faults


@dataclass(frozen=True)
class Fault:
    """What the proxy does with one request: ``pass``, ``error`` (status + S3 error code), ``hang``
    (hold the request ``seconds``, then drop the connection without an answer) or ``delay`` (hold
    it ``seconds``, then forward it)."""

    kind: str
    status: int = 0
    code: str = ""
    seconds: float = 0.0


PASS = Fault("pass")
SLOW_DOWN = Fault("error", 503, "SlowDown")
INTERNAL = Fault("error", 500, "InternalError")
UNAVAILABLE = Fault("error", 503, "ServiceUnavailable")

_MESSAGES = {
    "SlowDown": "Please reduce your request rate.",
    "InternalError": "We encountered an internal error. Please try again.",
    "ServiceUnavailable": "Service is unable to handle request.",
}
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass(frozen=True)
class S3Request:
    method: str
    path: str  # without the query string
    query: str
    number: int  # 0, 1, 2, ... in arrival order

    @property
    def is_listing(self) -> bool:
        return self.method == "GET" and "list-type=" in self.query

    @property
    def is_object_get(self) -> bool:
        return self.method == "GET" and not self.is_listing and self.path.count("/") >= 2


Policy = Callable[[S3Request], Fault]


def _read_chunked(rfile: Any) -> bytes:
    """The body of a ``Transfer-Encoding: chunked`` request (trailers dropped)."""
    parts: list[bytes] = []
    while True:
        size = int(rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(parts)
        parts.append(rfile.read(size))
        rfile.readline()


class S3FaultProxy:
    """HTTP/1.1 proxy on 127.0.0.1 in front of an S3 endpoint; :attr:`policy` decides per request.

    Requests are forwarded with their own ``Host`` header, so SigV4 signatures (headers or
    presigned query strings) made for the proxy's address verify upstream. ``counts`` tallies what
    was done (``pass``, ``error:503:SlowDown``, ``hang``, ...).
    """

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").rstrip("/").partition(":")
        self.upstream = (host, int(port or 80))
        self.policy: Policy = lambda request: PASS
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._number = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _handle(self) -> None:
                proxy._serve(self)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="s3-proxy", daemon=True)
        self._thread.start()

    def set_policy(self, policy: Policy) -> None:
        with self._lock:
            self.policy = policy

    def _decide(self, method: str, target: str) -> tuple[S3Request, Fault]:
        path, _, query = target.partition("?")
        with self._lock:
            request = S3Request(method, path, query, self._number)
            self._number += 1
            policy = self.policy
        fault = policy(request)
        key = fault.kind if fault.kind != "error" else f"error:{fault.status}:{fault.code}"
        with self._lock:
            self.counts[key] += 1
        return request, fault

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        chunked = handler.headers.get("Transfer-Encoding", "").lower() == "chunked"
        if chunked:
            # pyarrow's S3 client (the warehouse) uploads parts as aws-chunked in HTTP chunks.
            body = _read_chunked(handler.rfile)
        else:
            length = int(handler.headers.get("Content-Length") or 0)
            body = handler.rfile.read(length) if length else b""
        _, fault = self._decide(handler.command, handler.path)
        if fault.kind == "hang":
            time.sleep(fault.seconds)
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault.kind == "error":
            xml = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{fault.code}</Code><Message>{_MESSAGES.get(fault.code, fault.code)}</Message>"
                f"<Resource>{handler.path.partition('?')[0]}</Resource>"
                f"<RequestId>{uuid.uuid4().hex[:16]}</RequestId></Error>"
            ).encode()
            handler.send_response(fault.status)
            handler.send_header("Content-Type", "application/xml")
            handler.send_header("Content-Length", str(len(xml)))
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(xml)
            return
        if fault.kind == "delay":
            time.sleep(fault.seconds)
        conn = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            conn.putrequest(handler.command, handler.path, skip_host=True, skip_accept_encoding=True)
            for name, value in handler.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    conn.putheader(name, value)
            if chunked:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            response = conn.getresponse()
            data = response.read()
        except OSError:
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.send_error(502)
            return
        finally:
            conn.close()
        handler.send_response(response.status, response.reason)
        head = handler.command == "HEAD"  # its Content-Length is the object's size: keep it
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and (head or name.lower() != "content-length"):
                handler.send_header(name, value)
        if not head:
            handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)
