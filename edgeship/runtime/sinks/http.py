"""HTTP sink: /health (JSON), /metrics (Prometheus text), /stream.mjpg (annotated MJPEG live view).

Binds 127.0.0.1 unless told otherwise (``http:0.0.0.0:8080`` exposes it on the network). Off
loopback a token is required, however the server is started (``--token``, the environment
variable ``EDGESHIP_HTTP_TOKEN``, or ``server.token`` in a deployment config). Clients send it as
``Authorization: Bearer TOKEN``, an ``X-Edgeship-Token`` header or the ``edgeship_token`` cookie;
opening ``/?token=TOKEN`` in a browser swaps it for the cookie and redirects to ``/``, so the
token never stays in a URL. It is never logged. Without the token, ``/health`` answers only its
status and release (what a health check needs); every other route answers 401.

The server closes idle and slow connections after ``timeout`` seconds, serves at most
``max_connections`` clients at once (more are refused with 503), answers HEAD, rejects a bad
``Content-Length`` with 400, and treats a client that disconnects as routine (one debug line).

Apps add their own pages and APIs with :meth:`HttpServer.add_route`; a handler gets the request
body and the query (a dict of single values) and returns ``(status, content_type, body)``, where
``body`` is bytes or an iterator of bytes (streamed until it ends or the client leaves).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qsl, urlsplit

from ...errors import ConfigError, InputError
from ..draw import annotate, encode_jpeg
from ..types import Frame, Result

log = logging.getLogger(__name__)

Handler = Callable[[bytes, dict], tuple]
BOUNDARY = "edgeshipframe"
MAX_BODY = 16 << 20
LOOPBACK = ("127.0.0.1", "localhost", "::1")
TOKEN_ENV = "EDGESHIP_HTTP_TOKEN"
COOKIE = "edgeship_token"
MIN_TOKEN = 8
LIVE_FPS = 10.0  # default cap on the live view's frame rate (JPEG encoding costs CPU on a device)
OPEN_PATHS = ("/health",)  # answered without the token, reduced to PUBLIC_HEALTH
PUBLIC_HEALTH = ("status", "reason", "release", "frames_processed", "frames_skipped_gate")  # nothing about the camera
_QUIET = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError, socket.timeout)
_SECRET_QUERY = re.compile(r"(token=)[^&\s]*", re.I)


_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9._~+/=-]+$")  # safe in a header, a cookie and a URL


def check_token(host: str, token: str | None) -> str | None:
    """The token a server on ``host`` uses: required (8+ characters) off loopback, optional on it."""
    if token is not None and len(str(token)) < MIN_TOKEN:
        raise ConfigError(f"the HTTP token must be at least {MIN_TOKEN} characters, got {len(str(token))}")
    if token is not None and not _TOKEN_CHARS.match(str(token)):
        raise ConfigError("the HTTP token may use letters, digits and . _ ~ + / = - only (it travels in a header and a cookie)")
    if host not in LOOPBACK and not token:
        raise ConfigError(f"the HTTP server on {host} needs a token (--token or {TOKEN_ENV}, or server.token in a "
                          "config); only 127.0.0.1 may run without one")
    return token or None


def redact(text: str) -> str:
    """A request line or URL with any ``token=...`` value hidden (for logs)."""
    return _SECRET_QUERY.sub(r"\1***", text)


def check_port(port: Any, where: str = "port") -> int:
    try:
        p = int(port)
    except (TypeError, ValueError):
        raise InputError(f"{where} must be a number 0-65535, got {port!r}") from None
    if not 0 <= p <= 65535:
        raise InputError(f"{where} must be 0-65535 (0: any free port), got {p}")
    return p


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a cap on concurrent connections and quiet client disconnects."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64  # connections waiting to be accepted (and then served or refused)

    def __init__(self, addr: tuple, handler: type, max_connections: int) -> None:
        self.slots = threading.BoundedSemaphore(max_connections)
        super().__init__(addr, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            log.debug("http: connection from %s refused: too many clients", client_address[0])
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        err = sys.exc_info()[1]
        if isinstance(err, _QUIET):
            log.debug("http client %s left: %s", client_address[0], type(err).__name__)
        else:
            log.warning("http: request from %s failed: %s: %s", client_address[0], type(err).__name__, err)


class HttpServer:
    """A small threaded HTTP server with a route table (method, path) -> handler, guarded by a token off loopback."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, *, token: str | None = None, timeout: float = 10.0,
                 max_connections: int = 32) -> None:
        self.host, self.port = host, check_port(port)
        self.token = check_token(host, token)
        self.timeout, self.max_connections = float(timeout), int(max_connections)
        self.routes: dict[tuple[str, str], Handler] = {}
        self.closing = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Serve ``method path`` with ``handler(body, query) -> (status, content_type, bytes | iterator)``."""
        if not path.startswith("/"):
            raise InputError(f"route path must start with '/', got {path!r}")
        self.routes[(method.upper(), path)] = handler

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

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
        server = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = server.timeout  # idle keep-alive and slow requests are closed after this

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
                    cookie = f"{COOKIE}={server.token}; Path=/; HttpOnly; SameSite=Lax"
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
                body = self.rfile.read(length) if length else b""
                query.pop("token", None)
                try:
                    status, ctype, payload = handler(body, query)
                except Exception as e:  # noqa: BLE001 - a handler bug is a 500, not a dead server
                    log.exception("handler for %s %s failed", method, parts.path)
                    return self._send(500, "application/json", json.dumps({"error": f"{type(e).__name__}: {e}"}).encode())
                if isinstance(payload, (bytes, bytearray)):
                    return self._send(status, ctype, bytes(payload))
                if isinstance(payload, str):
                    return self._send(status, ctype, payload.encode())
                return self._stream(status, ctype, payload)

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

        try:
            self._httpd = _Server((self.host, self.port), RequestHandler, self.max_connections)
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


class LiveView:
    """The newest annotated JPEG, encoded only while someone watches and at most ``max_fps`` times a second."""

    def __init__(self, max_fps: float = LIVE_FPS, quality: int = 80) -> None:
        self.max_fps, self.quality = max_fps, quality
        self.viewers = 0
        self.jpeg: bytes = b""
        self.seq = 0
        self._last = 0.0
        self._cond = threading.Condition()

    def offer(self, frame: Frame, result: Result | None, fps: float | None = None) -> None:
        now = time.monotonic()
        if self.viewers <= 0 or now - self._last < 1.0 / self.max_fps:
            return
        self._last = now
        jpg = encode_jpeg(annotate(frame.image, result, fps=fps), self.quality)
        with self._cond:
            self.jpeg, self.seq = jpg, self.seq + 1
            self._cond.notify_all()

    def stream(self, closing: threading.Event) -> Iterator[bytes]:
        """multipart/x-mixed-replace parts, one per new frame, until ``closing`` is set."""
        with self._cond:
            self.viewers += 1
        seen = -1
        try:
            while not closing.is_set():
                with self._cond:
                    if self.seq == seen:
                        self._cond.wait(0.5)
                    if self.seq == seen or not self.jpeg:
                        continue
                    seen, jpg = self.seq, self.jpeg
                yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpg)}\r\n\r\n").encode() + jpg + b"\r\n"
        finally:
            with self._cond:
                self.viewers -= 1


INDEX_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>edgeship</title>
<style>body{font-family:sans-serif;background:#111;color:#eee;margin:1em}img{max-width:100%%}a{color:#8cf}</style></head>
<body><h3>edgeship &mdash; %(model)s on %(source)s</h3><img src="/stream.mjpg" alt="live view">
<p><a href="/health">/health</a> &middot; <a href="/metrics">/metrics</a></p></body></html>"""


class HttpSink:
    """Serves /, /health, /metrics and /stream.mjpg for a running pipeline (``http:HOST:PORT``).

    ``token`` (default: the ``EDGESHIP_HTTP_TOKEN`` environment variable) guards every route; it is
    required off loopback."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, *, max_fps: float = LIVE_FPS, stale_after: float = 5.0,
                 token: str | None = None) -> None:
        self.server = HttpServer(host, port, token=token if token is not None else (os.environ.get(TOKEN_ENV) or None))
        self.view = LiveView(max_fps=max_fps)
        self.stale_after = stale_after
        self.info: dict[str, Any] = {}
        self.metrics: Any = None
        self.last_result: dict[str, Any] | None = None
        self.last_seen: float | None = None  # monotonic time of the last frame taken (inferred or gated)
        self.checks: list[Callable[[], list[str]]] = []  # each returns the problems that fail the health check
        self.running = False
        self.server.add_route("GET", "/health", self._health)
        self.server.add_route("GET", "/metrics", self._metrics)
        self.server.add_route("GET", "/stream.mjpg", self._stream)
        self.server.add_route("GET", "/", self._index)

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        self.server.add_route(method, path, handler)

    @property
    def url(self) -> str:
        return self.server.url

    def open(self, info: dict[str, Any]) -> None:
        self.info = info
        self.metrics = info.get("metrics")
        self.running = True
        self.server.start()

    def write(self, frame: Frame, result: Result) -> None:
        self.last_seen = time.monotonic()
        self.last_result = result.to_dict()
        self.view.offer(frame, result, self.metrics.recent_fps() if self.metrics is not None else None)

    def skip(self, frame: Frame) -> None:
        self.last_seen = time.monotonic()
        self.view.offer(frame, None)

    def close(self) -> None:
        self.running = False
        self.server.stop()

    # ---- routes --------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Status for health checks and ``edgeship device status``:

        - ``starting`` (503) until the first frame was taken from the source and processed (inferred,
          or skipped on purpose by a gate such as a motion gate or an external trigger);
        - ``failed`` (503) while a configured output cannot work (no GPIO chip, broker unreachable):
          ``reason`` says which;
        - ``degraded`` (503) when the source is down or no frame arrived for ``stale_after`` seconds;
        - ``ok`` (200); ``stopped`` once the pipeline has ended.
        """
        snap = self.metrics.snapshot() if self.metrics is not None else {}
        now = time.monotonic()
        last = getattr(self.metrics, "last_result_mono", None)
        age = now - last if last is not None else None
        seen_age = now - self.last_seen if self.last_seen is not None else None
        taken = int(snap.get("frames_processed") or 0) + int(snap.get("frames_skipped_gate") or 0)
        problems = [p for check in self.checks for p in check()]
        status, reason = "ok", ""
        if not self.running:
            status, reason = "stopped", "the pipeline has ended"
        elif problems:
            status, reason = "failed", "; ".join(problems)
        elif taken == 0:
            status, reason = "starting", "no frame processed yet (waiting for the source)"
        elif not snap.get("source_connected", True):
            status, reason = "degraded", "the source is disconnected (reconnecting)"
        elif seen_age is not None and seen_age > self.stale_after:
            status, reason = "degraded", f"no frame from the source for {seen_age:.0f} s"
        return {
            "status": status, "reason": reason, "release": os.environ.get("EDGESHIP_RELEASE"), "model": self.info.get("model"),
            "source": self.info.get("source"), "task": self.info.get("task"), "uptime_s": snap.get("duration_s"),
            "frames_processed": snap.get("frames_processed"), "frames_skipped_gate": snap.get("frames_skipped_gate"),
            "fps": snap.get("recent_fps"), "reconnects": snap.get("reconnects"), "source_connected": snap.get("source_connected"),
            "last_result_age_s": round(age, 3) if age is not None else None, "last_result": self.last_result,
        }

    def _health(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        h = self.health()
        if query.get("_public"):  # no token: what a health check needs, nothing about the camera
            h = {k: h[k] for k in PUBLIC_HEALTH}
        return (200 if h["status"] == "ok" else 503), "application/json", json.dumps(h).encode()

    def _metrics(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        if self.metrics is None:
            return 503, "text/plain", b"# pipeline not started\n"
        labels = {"model": str(self.info.get("model_name") or ""), "task": str(self.info.get("task") or "")}
        return 200, "text/plain; version=0.0.4; charset=utf-8", self.metrics.prometheus(labels).encode()

    def _stream(self, body: bytes, query: dict) -> tuple[int, str, Iterator[bytes]]:
        return 200, f"multipart/x-mixed-replace; boundary={BOUNDARY}", self.view.stream(self.server.closing)

    def _index(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        import html

        page = INDEX_HTML % {"model": html.escape(str(self.info.get("model_name") or "model")),
                             "source": html.escape(str(self.info.get("source") or "source"))}
        return 200, "text/html; charset=utf-8", page.encode()
