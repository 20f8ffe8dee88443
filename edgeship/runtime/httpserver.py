"""The runtime's small HTTP server: a route table, a token off loopback, and limits that keep
``/health`` answering whatever other clients do.

Binds 127.0.0.1 unless told otherwise; off loopback a token is required (``--token``, the
environment variable ``EDGESHIP_HTTP_TOKEN``, or ``server.token`` in a deployment config). Clients
send it as ``Authorization: Bearer TOKEN``, an ``X-Edgeship-Token`` header or the
``edgeship_token`` cookie; opening ``/?token=TOKEN`` in a browser swaps it for the cookie and
redirects to ``/``, so the token never stays in a URL. It never reaches the log, however its
query key is spelt (``tok%65n=`` included). Without it, the open paths (``/health``) answer a
reduced status; every other route answers 401.

Limits (:class:`Limits`), enforced where each belongs:

- **Before a route is chosen** a connection only waits for its request head (the request line and
  headers), which must arrive whole within ``header_timeout`` seconds of the connection (or of the
  previous response on a kept-alive one): a client that sends a header line every few seconds is
  cut off at the deadline however it paces itself. At most ``max_waiting`` connections wait at
  once; beyond that the one that has waited longest is dropped, so a flood of idle sockets cannot
  keep a new client out.
- **After the route is known** ordinary requests share ``max_requests`` slots and long responses
  (the MJPEG live view) ``max_streams`` slots; more get 503 at once. ``/health`` takes no slot: it is
  cheap and is what a device's health check and a load balancer must always reach.
- Reads of a body time out after ``timeout`` seconds; bodies over 16 MiB are refused (413); a bad
  ``Content-Length`` is 400; a client that leaves is routine (one debug line); HEAD is answered.

**HTTPS**: given a PEM certificate and its unencrypted private key (``--tls-cert``/``--tls-key``,
``server.tls_cert``/``server.tls_key``) the server speaks TLS 1.2+ only. The handshake happens in the
connection's own thread, inside the request-head deadline, so a client that connects and never
says hello is dropped like any idle one and cannot hold up the others; a plain-HTTP request to the
TLS port is a failed handshake (one debug line). A renewed certificate (the files replaced) is served to
new connections within seconds, without a restart.

Apps add their own pages and APIs with :meth:`HttpServer.add_route`; a handler gets the request
body and the query (a dict of single values) and returns ``(status, content_type, body)``, where
``body`` is bytes or an iterator of bytes (streamed until it ends or the client leaves).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qsl, unquote_plus, urlsplit

from ..errors import ConfigError, InputError
from .tls import ServerCertificate

log = logging.getLogger(__name__)

Handler = Callable[[bytes, dict], tuple]
MAX_BODY = 16 << 20
LOOPBACK = ("127.0.0.1", "localhost", "::1")
TOKEN_ENV = "EDGESHIP_HTTP_TOKEN"
COOKIE = "edgeship_token"
MIN_TOKEN = 8
OPEN_PATHS = ("/health",)  # answered without the token (reduced) and without a slot
_QUIET = (ssl.SSLError, BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError, socket.timeout)
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9._~+/=-]+$")  # safe in a header, a cookie and a URL
_QUERY_PAIR = re.compile(r"([?&;])([^=&;\s]*)=([^&;\s]*)")


@dataclass(frozen=True)
class Limits:
    """How much the server lets clients take (see the module docstring)."""

    header_timeout: float = 10.0  # the whole request head must arrive within this
    timeout: float = 10.0  # any single read of a body
    max_waiting: int = 256  # connections waiting for their request head; the longest waiter is dropped beyond
    max_requests: int = 32  # ordinary requests being served at once
    max_streams: int = 16  # live-view (MJPEG) viewers at once


def check_token(host: str, token: str | None) -> str | None:
    """The token a server on ``host`` uses: required (8+ characters) off loopback, optional on it."""
    if token is not None and len(str(token)) < MIN_TOKEN:
        raise ConfigError(f"the HTTP token must be at least {MIN_TOKEN} characters, got {len(str(token))}")
    if token is not None and not _TOKEN_CHARS.match(str(token)):
        raise ConfigError("the HTTP token may use letters, digits and . _ ~ + / = - only (it travels in a header and a cookie)")
    if host not in LOOPBACK and not token:
        where = f"on {host}" if str(host).strip() else "on every address (an empty host)"
        raise ConfigError(f"the HTTP server {where} needs a token (--token or {TOKEN_ENV}, or server.token in a "
                          "config); only 127.0.0.1 may run without one")
    return token or None


def redact(text: str) -> str:
    """A request line or URL with the value of any query key that decodes to ``token`` hidden (for logs)."""

    def hide(m: re.Match) -> str:
        return f"{m.group(1)}{m.group(2)}=***" if unquote_plus(m.group(2)).strip().lower() == "token" else m.group(0)

    return _QUERY_PAIR.sub(hide, text)


def check_port(port: Any, where: str = "port") -> int:
    try:
        p = int(port)
    except (TypeError, ValueError):
        raise InputError(f"{where} must be a number 0-65535, got {port!r}") from None
    if not 0 <= p <= 65535:
        raise InputError(f"{where} must be 0-65535 (0: any free port), got {p}")
    return p


def _shut(sock: Any) -> None:
    try:  # the plain socket's shutdown, also for a TLS one: its handler thread still owns the TLS state
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # a blocked read in its handler thread returns at once
    except OSError:
        pass


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a deadline on request heads, a cap on waiting connections and quiet
    client disconnects. Route slots are taken by the handler once the route is known."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple, handler: type, limits: Limits, tls: ServerCertificate | None = None) -> None:
        self.limits, self.tls = limits, tls
        self.waiting: dict[Any, float] = {}  # connection -> deadline for its request head
        self.guard = threading.Lock()
        self.requests = threading.BoundedSemaphore(limits.max_requests)
        self.streams = threading.BoundedSemaphore(limits.max_streams)
        self.reaping = threading.Event()
        super().__init__(addr, handler)
        self._reaper = threading.Thread(target=self._reap, name="http-reaper", daemon=True)
        self._reaper.start()

    # a connection waits for its request head from accept (its TLS handshake included: the deadline set at
    # accept stands), and again after each kept-alive response
    def wait_for_head(self, conn: Any) -> None:
        with self.guard:
            if conn in self.waiting:
                return
            if len(self.waiting) >= self.limits.max_waiting:
                oldest = min(self.waiting, key=self.waiting.get)
                del self.waiting[oldest]
                _shut(oldest)
                log.debug("http: dropped the longest-waiting idle connection (%d waiting)", self.limits.max_waiting)
            self.waiting[conn] = time.monotonic() + self.limits.header_timeout

    def head_received(self, conn: Any) -> None:
        with self.guard:
            self.waiting.pop(conn, None)

    def _reap(self) -> None:
        while not self.reaping.wait(0.2):
            now = time.monotonic()
            with self.guard:
                late = [c for c, deadline in self.waiting.items() if deadline <= now]
                for c in late:
                    del self.waiting[c]
            for c in late:
                _shut(c)

    def get_request(self) -> tuple[Any, Any]:
        conn, addr = super().get_request()
        if self.tls is not None:  # no handshake here: it is the connection thread's, under the head deadline
            conn = self.tls.current().wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, addr

    def process_request(self, request: Any, client_address: Any) -> None:
        self.wait_for_head(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.head_received(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        self.reaping.set()
        super().server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        err = sys.exc_info()[1]
        if isinstance(err, _QUIET) or (isinstance(err, OSError) and err.errno in (9, 57, 107)):
            log.debug("http client %s left: %s", client_address[0], type(err).__name__)
        else:
            log.warning("http: request from %s failed: %s: %s", client_address[0], type(err).__name__, err)


class HttpServer:
    """A small threaded HTTP server with a route table (method, path) -> handler, guarded by a token off loopback."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, *, token: str | None = None, timeout: float = 10.0,
                 max_connections: int = 32, limits: Limits | None = None,
                 tls: tuple[str | Path, str | Path] | None = None) -> None:
        """``tls``: (certificate, private key) PEM files to serve HTTPS (see the module docstring)."""
        self.host, self.port = host, check_port(port)
        self.token = check_token(host, token)
        self.tls = ServerCertificate(*tls) if tls else None
        self.limits = limits or Limits(header_timeout=float(timeout), timeout=float(timeout), max_requests=int(max_connections))
        self.routes: dict[tuple[str, str], Handler] = {}
        self.closing = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Serve ``method path`` with ``handler(body, query) -> (status, content_type, bytes | iterator)``."""
        if not path.startswith("/"):
            raise InputError(f"route path must start with '/', got {path!r}")
        self.routes[(method.upper(), path)] = handler

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def authorized(self, headers: Any) -> bool:
        """Whether a request's headers carry the token (always true without one)."""
        if not self.token:
            return True
        given = ""
        auth = headers.get("Authorization") or ""
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        given = given or (headers.get("X-Edgeship-Token") or "").strip()
        if not given:  # by hand: other web apps on the device may set cookies SimpleCookie rejects wholesale
            for header in headers.get_all("Cookie") or []:
                for part in header.split(";"):
                    name, _, value = part.strip().partition("=")
                    if name == COOKIE:
                        given = value.strip().strip('"')
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())

    def start(self) -> "HttpServer":
        if self._httpd is not None:
            return self
        try:
            self._httpd = _Server((self.host, self.port), _handler_class(self), self.limits, self.tls)
        except (OSError, OverflowError) as e:
            raise InputError(f"cannot serve HTTP on {self.host}:{self.port}: {getattr(e, 'strerror', None) or e}") from None
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"http:{self.port}", daemon=True)
        self._thread.start()
        log.info("serving %s", self.url)
        return self

    def stop(self) -> None:
        self.closing.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


def parts_path(path: str) -> str:
    return urlsplit(path).path


def _handler_class(server: HttpServer) -> type:
    class RequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = server.limits.timeout  # a single read; the request head has its own overall deadline

        def setup(self) -> None:
            super().setup()
            if isinstance(self.connection, ssl.SSLSocket):  # in this thread, under the head deadline
                self.connection.do_handshake()

        def handle_one_request(self) -> None:
            self.server.wait_for_head(self.connection)  # kept alive: waiting for the next request head
            super().handle_one_request()

        def parse_request(self) -> bool:
            ok = super().parse_request()
            self.server.head_received(self.connection)
            return ok

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("http %s", redact(fmt % args))

        def log_request(self, code: Any = "-", size: Any = "-") -> None:
            log.debug("http %s %s", redact(self.requestline), code)

        def _error(self, status: int, message: str, **headers: str) -> None:
            return self._send(status, "application/json", json.dumps({"error": message}).encode(), **headers)

        def _dispatch(self, method: str) -> None:
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query))
            verb = "GET" if method == "HEAD" else method
            handler = server.routes.get((verb, parts.path))
            if handler is None:
                allowed = [m for (m, p) in server.routes if p == parts.path]
                status = 405 if allowed else 404
                self.close_connection = True  # any body it sent is left unread
                return self._error(status, f"{method} {parts.path}: {'method not allowed' if allowed else 'not found'}")
            raw_length = self.headers.get("Content-Length")
            try:
                length = int(raw_length) if raw_length not in (None, "") else 0
            except ValueError:
                length = -1
            if length < 0:
                self.close_connection = True
                return self._error(400, f"bad Content-Length {raw_length!r}")
            if server.token and verb == "GET" and parts.path == "/" and "token" in query:
                self.close_connection = length > 0
                if not hmac.compare_digest(str(query["token"]).encode(), server.token.encode()):
                    return self._error(401, "wrong token")
                cookie = f"{COOKIE}={server.token}; Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if server.tls else "")
                return self._send(303, "text/plain", b"", Location="/", **{"Set-Cookie": cookie})
            if not server.authorized(self.headers):  # before reading any body
                if parts.path in OPEN_PATHS and verb == "GET":
                    query = {**query, "_public": "1"}
                else:
                    self.close_connection = True
                    return self._error(401, "missing or wrong token: send 'Authorization: Bearer TOKEN' or open "
                                            "/?token=TOKEN in a browser")
            else:
                query.pop("_public", None)
            if length > MAX_BODY:
                self.close_connection = True
                return self._error(413, "request body too large")
            slots = None if parts.path in OPEN_PATHS else self.server.requests
            if slots is not None and not slots.acquire(blocking=False):
                self.close_connection = True
                return self._error(503, "too many requests at once; try again", **{"Retry-After": "1"})
            try:
                body = self.rfile.read(length) if length else b""
                query.pop("token", None)
                try:
                    status, ctype, payload = handler(body, query)
                except Exception as e:  # noqa: BLE001 - a handler bug is a 500, not a dead server
                    log.exception("handler for %s %s failed", method, parts.path)
                    return self._send(500, "application/json", json.dumps({"error": f"{type(e).__name__}: {e}"}).encode())
            finally:
                if slots is not None:
                    slots.release()
            if isinstance(payload, (bytes, bytearray)):
                return self._send(status, ctype, bytes(payload))
            if isinstance(payload, str):
                return self._send(status, ctype, payload.encode())
            if not self.server.streams.acquire(blocking=False):
                close = getattr(payload, "close", None)
                if close:
                    close()
                self.close_connection = True
                return self._error(503, f"{server.limits.max_streams} viewers already watch; try again later",
                                   **{"Retry-After": "5"})
            try:
                return self._stream(status, ctype, payload)
            finally:
                self.server.streams.release()

        def _send(self, status: int, ctype: str, data: bytes, **headers: str) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                for k, v in headers.items():
                    self.send_header(k, v)
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            except _QUIET:
                self.close_connection = True
                log.debug("http client left %s", redact(parts_path(self.path)))

        def _stream(self, status: int, ctype: str, chunks: Iterable[bytes]) -> None:
            it: Iterator[bytes] = iter(chunks)
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Cache-Control", "no-store")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                if self.command == "HEAD":
                    return
                for chunk in it:
                    self.wfile.write(chunk)
                    self.wfile.flush()
            except _QUIET:
                log.debug("http client left %s", redact(parts_path(self.path)))
            finally:
                close = getattr(it, "close", None)
                if close:
                    close()

        def do_GET(self) -> None:  # noqa: N802
            self._dispatch("GET")

        def do_HEAD(self) -> None:  # noqa: N802
            self._dispatch("HEAD")

        def do_POST(self) -> None:  # noqa: N802
            self._dispatch("POST")

        def do_PUT(self) -> None:  # noqa: N802
            self._dispatch("PUT")

        def do_DELETE(self) -> None:  # noqa: N802
            self._dispatch("DELETE")

    return RequestHandler
