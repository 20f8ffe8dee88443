"""HTTP sink: /health (JSON), /metrics (Prometheus text), /stream.mjpg (annotated MJPEG live view).

Served by :class:`edgeship.runtime.httpserver.HttpServer` (127.0.0.1 unless told otherwise; off
loopback a token guards every route; its limits keep ``/health`` answering whatever other clients
do). Without the token, ``/health`` answers only what a health check needs (:data:`PUBLIC_HEALTH`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Callable, Iterator

from ..draw import annotate, encode_jpeg
from ..httpserver import TOKEN_ENV, Handler, HttpServer, Limits
from ..types import Frame, Result

BOUNDARY = "edgeshipframe"
LIVE_FPS = 10.0  # default cap on the live view's frame rate (JPEG encoding costs CPU on a device)
PUBLIC_HEALTH = ("status", "reason", "release", "frames_processed", "frames_skipped_gate", "infer_ms", "degraded")  # nothing about the camera


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
                 token: str | None = None, limits: Limits | None = None, server: HttpServer | None = None,
                 prefix: str = "", tls: tuple[str, str] | None = None) -> None:
        """``server``: share a server another owner starts and stops (a multi-camera site), every route under
        ``prefix`` (``/cameras/NAME``); default: a server of its own on ``host:port`` (HTTPS with ``tls``:
        (certificate, private key) PEM files)."""
        self.owns_server = server is None
        self.server = server if server is not None else HttpServer(
            host, port, token=token if token is not None else (os.environ.get(TOKEN_ENV) or None), limits=limits, tls=tls)
        self.prefix = prefix.rstrip("/")
        self.view = LiveView(max_fps=max_fps)
        self.stale_after = stale_after
        self.info: dict[str, Any] = {}
        self.metrics: Any = None
        self.last_result: dict[str, Any] | None = None
        self.last_seen: float | None = None  # monotonic time of the last frame taken (inferred or gated)
        self.checks: list[Callable[[], list[str]]] = []  # each returns the problems that fail the health check
        self.running = False
        self.add_route("GET", "/health", self._health)
        self.add_route("GET", "/metrics", self._metrics)
        self.add_route("GET", "/stream.mjpg", self._stream)
        self.add_route("GET", "/", self._index)

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        self.server.add_route(method, self.prefix + path, handler)

    @property
    def url(self) -> str:
        return self.server.url

    def open(self, info: dict[str, Any]) -> None:
        self.info = info
        self.metrics = info.get("metrics")
        self.watch = info.get("watch")
        self.running = True
        if self.owns_server:
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
        if self.owns_server:
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
            **({"camera": self.info["camera"]} if self.info.get("camera") else {}),
            "source": self.info.get("source"), "task": self.info.get("task"), "uptime_s": snap.get("duration_s"),
            "frames_processed": snap.get("frames_processed"), "frames_skipped_gate": snap.get("frames_skipped_gate"),
            "fps": snap.get("recent_fps"), "reconnects": snap.get("reconnects"), "source_connected": snap.get("source_connected"),
            "infer_ms": (snap.get("latency_ms") or {}).get("infer", {}).get("p50"),  # a rollout's --max-slowdown reads it
            # a drifting camera is worth a look, not a failed health check: the status (and the HTTP code) stay
            **self._drift(),
            "last_result_age_s": round(age, 3) if age is not None else None, "last_result": self.last_result,
        }

    def _drift(self) -> dict[str, Any]:
        watch = getattr(self, "watch", None)
        if watch is None:
            return {}
        st = watch.status()
        out: dict[str, Any] = {"drift": {k: st[k] for k in ("state", "since", "scores")}}
        if st["state"] == "drift":
            out["degraded"] = "drift: " + ", ".join(sorted(k for k, v in (st["episodes"][-1]["what"] if st["episodes"] else {}).items()))
        return out

    def _health(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        h = self.health()
        if query.get("_public"):  # no token: what a health check needs, nothing about the camera
            h = {k: h[k] for k in PUBLIC_HEALTH if k in h}
        return (200 if h["status"] == "ok" else 503), "application/json", json.dumps(h).encode()

    def _metrics(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        if self.metrics is None:
            return 503, "text/plain", b"# pipeline not started\n"
        labels = {"model": str(self.info.get("model_name") or ""), "task": str(self.info.get("task") or "")}
        if self.info.get("camera"):
            labels["camera"] = str(self.info["camera"])
        return 200, "text/plain; version=0.0.4; charset=utf-8", self.metrics.prometheus(labels).encode()

    def _stream(self, body: bytes, query: dict) -> tuple[int, str, Iterator[bytes]]:
        return 200, f"multipart/x-mixed-replace; boundary={BOUNDARY}", self.view.stream(self.server.closing)

    def _index(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        import html

        page = INDEX_HTML % {"model": html.escape(str(self.info.get("model_name") or "model")),
                             "source": html.escape(str(self.info.get("source") or "source"))}
        return 200, "text/html; charset=utf-8", page.encode()
