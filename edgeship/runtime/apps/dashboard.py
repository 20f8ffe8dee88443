"""The live dashboard on the runtime's HTTP server.

``GET /`` serves a page (``static/``: plain HTML/JS/CSS, no CDN: devices have no internet) with
the annotated live stream, fps / latency / skipped-frame charts drawn on ``<canvas>``, and the
app's recent events or counters, refreshed by polling ``GET /api/status``. The server binds
127.0.0.1 by default; bound to any other address it requires a token on every route (see
:mod:`edgeship.runtime.sinks.http`: a header or a cookie; ``/?token=...`` opens the page once and
swaps the token for the cookie).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from importlib import resources
from typing import Any, Callable

from ..sinks.http import LIVE_FPS, HttpSink
from ..types import Frame

STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


def static_file(name: str) -> bytes:
    """The bytes of ``static/NAME`` shipped in the package."""
    return resources.files(__package__).joinpath("static", name).read_bytes()


class DashboardSink(HttpSink):
    """The HTTP sink plus the dashboard page, ``/api/status``, the app's routes and its overlays."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, *, app: Any = None, token: str | None = None,
                 max_fps: float = LIVE_FPS, annotate: bool = True, dashboard: bool = True, server: Any = None,
                 prefix: str = "", tls: tuple[str, str] | None = None) -> None:
        # the server checks the token on every route; ``server``/``prefix``: one camera's routes on a site's server
        super().__init__(host, port, max_fps=max_fps, token=token, server=server, prefix=prefix, tls=tls)
        self.app, self.annotate = app, annotate
        self.started = time.time()
        self.add_route("GET", "/api/status", self._status)
        if dashboard:
            self.add_route("GET", "/", self._index_page)
            for name in ("app.js", "style.css"):
                self.add_route("GET", f"/static/{name}", self._page(name))
        for method, path, handler in (app.routes() if app is not None else []):
            self.add_route(method, path, handler)
        if app is not None:
            self.checks.append(app.problems)

    def _page(self, name: str) -> Callable:
        suffix = "." + name.rsplit(".", 1)[-1]
        data = static_file(name)
        return lambda body, query: (200, STATIC_TYPES.get(suffix, "application/octet-stream"), data)

    def _index_page(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        return 200, STATIC_TYPES[".html"], static_file("index.html")

    def write(self, frame: Frame, result) -> None:
        self.last_seen = time.monotonic()
        self.last_result = result.to_dict()
        if self.view.viewers <= 0:
            return
        fps = self.metrics.recent_fps() if self.metrics is not None else None
        if not self.annotate:
            self.view.offer(frame, None, fps)
            return
        if self.app is not None:
            image = frame.image.copy()
            self.app.annotate(image, result)
            frame = replace(frame, image=image)
        self.view.offer(frame, result, fps)

    def skip(self, frame: Frame) -> None:
        """Frames a gate skipped still reach the live view (with the app's overlays, no result)."""
        self.last_seen = time.monotonic()
        if self.view.viewers <= 0:
            return
        if self.annotate and self.app is not None:
            image = frame.image.copy()
            self.app.annotate(image, None)
            frame = replace(frame, image=image)
        self.view.offer(frame, None)

    def status(self) -> dict:
        """What ``/api/status`` returns: health, metrics, the app's status."""
        metrics = self.metrics.snapshot() if self.metrics is not None else {}
        return {
            "time": time.time(),
            "model": self.info.get("model_name"),
            "source": self.info.get("source"),
            "camera": self.info.get("camera"),
            "task": self.info.get("task"),
            "health": {k: v for k, v in self.health().items() if k != "last_result"},
            "metrics": metrics,
            "app": self.app.status() if self.app is not None else None,
            "last_result": self.last_result,
        }

    def _status(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        from ...fileio import to_jsonable

        return 200, "application/json", json.dumps(to_jsonable(self.status())).encode()
