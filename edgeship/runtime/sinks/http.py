"""HTTP sink: /health (JSON), /metrics (Prometheus text), /stream.mjpg (annotated MJPEG live view).

Binds 127.0.0.1 unless told otherwise (``http:0.0.0.0:8080`` exposes it on the network). Apps add
their own pages and APIs with :meth:`HttpServer.add_route`; a handler gets the request body and the
query (a dict of single values) and returns ``(status, content_type, body)``, where ``body`` is
bytes or an iterator of bytes (streamed until it ends or the client leaves).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qsl, urlsplit

from ...errors import InputError
from ..draw import annotate, encode_jpeg
from ..types import Frame, Result

log = logging.getLogger(__name__)

Handler = Callable[[bytes, dict], tuple]
BOUNDARY = "edgeshipframe"
MAX_BODY = 16 << 20


class HttpServer:
    """A small threaded HTTP server with a route table (method, path) -> handler."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8080) -> None:
        self.host, self.port = host, int(port)
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

    def start(self) -> "HttpServer":
        if self._httpd is not None:
            return self
        server = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("http %s", fmt % args)

            def _dispatch(self, method: str) -> None:
                parts = urlsplit(self.path)
                handler = server.routes.get((method, parts.path))
                if handler is None:
                    allowed = [m for (m, p) in server.routes if p == parts.path]
                    status = 405 if allowed else 404
                    return self._send(status, "application/json", json.dumps({"error": f"{method} {parts.path}: {'method not allowed' if allowed else 'not found'}"}).encode())
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    return self._send(413, "application/json", b'{"error": "request body too large"}')
                body = self.rfile.read(length) if length else b""
                try:
                    status, ctype, payload = handler(body, dict(parse_qsl(parts.query)))
                except Exception as e:  # noqa: BLE001 - a handler bug is a 500, not a dead server
                    log.exception("handler for %s %s failed", method, parts.path)
                    return self._send(500, "application/json", json.dumps({"error": f"{type(e).__name__}: {e}"}).encode())
                if isinstance(payload, (bytes, bytearray)):
                    return self._send(status, ctype, bytes(payload))
                if isinstance(payload, str):
                    return self._send(status, ctype, payload.encode())
                return self._stream(status, ctype, payload)

            def _send(self, status: int, ctype: str, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _stream(self, status: int, ctype: str, chunks: Iterable[bytes]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Cache-Control", "no-store")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                it: Iterator[bytes] = iter(chunks)
                try:
                    for chunk in it:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    log.debug("http client left %s", self.path)
                finally:
                    close = getattr(it, "close", None)
                    if close:
                        close()

            def do_GET(self) -> None:  # noqa: N802
                self._dispatch("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._dispatch("POST")

            def do_PUT(self) -> None:  # noqa: N802
                self._dispatch("PUT")

            def do_DELETE(self) -> None:  # noqa: N802
                self._dispatch("DELETE")

        ThreadingHTTPServer.allow_reuse_address = True
        try:
            self._httpd = ThreadingHTTPServer((self.host, self.port), RequestHandler)
        except OSError as e:
            raise InputError(f"cannot serve HTTP on {self.host}:{self.port}: {e.strerror}") from None
        self._httpd.daemon_threads = True
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


class LiveView:
    """The newest annotated JPEG, encoded only while someone watches and at most ``max_fps`` times a second."""

    def __init__(self, max_fps: float = 15.0, quality: int = 80) -> None:
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
    """Serves /, /health, /metrics and /stream.mjpg for a running pipeline (``http:HOST:PORT``)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, *, max_fps: float = 15.0, stale_after: float = 5.0) -> None:
        self.server = HttpServer(host, port)
        self.view = LiveView(max_fps=max_fps)
        self.stale_after = stale_after
        self.info: dict[str, Any] = {}
        self.metrics: Any = None
        self.last_result: dict[str, Any] | None = None
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
        self.last_result = result.to_dict()
        self.view.offer(frame, result, self.metrics.recent_fps() if self.metrics is not None else None)

    def skip(self, frame: Frame) -> None:
        self.view.offer(frame, None)

    def close(self) -> None:
        self.running = False
        self.server.stop()

    # ---- routes --------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Status for load balancers and ``edgeship device status``: ok, degraded (source down / stale) or stopped."""
        snap = self.metrics.snapshot() if self.metrics is not None else {}
        last = getattr(self.metrics, "last_result_mono", None)
        age = time.monotonic() - last if last is not None else None
        status = "ok"
        if not self.running:
            status = "stopped"
        elif not snap.get("source_connected", True) or (age is not None and age > self.stale_after):
            status = "degraded"
        return {
            "status": status, "model": self.info.get("model"), "source": self.info.get("source"),
            "task": self.info.get("task"), "uptime_s": snap.get("duration_s"),
            "frames_processed": snap.get("frames_processed"), "fps": snap.get("recent_fps"),
            "reconnects": snap.get("reconnects"), "source_connected": snap.get("source_connected"),
            "last_result_age_s": round(age, 3) if age is not None else None, "last_result": self.last_result,
        }

    def _health(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        h = self.health()
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
