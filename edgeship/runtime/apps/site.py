"""One server and one dashboard for every camera of a site (a multi-camera deployment).

    GET /                         the grid: every camera's live view, health and counters (``static/site.html``)
    GET /health                   the box: ``ok`` when every camera is; a camera down makes it ``degraded``
                                  (503), an output that cannot work ``failed``; each camera's health inside
    GET /api/cameras              each camera's health, metrics and app status
    GET /metrics                  every camera's Prometheus metrics, labelled ``camera="NAME"``
    GET /cameras/NAME/            that camera's own dashboard (and its /health, /api/status, /stream.mjpg and
                                  the app's routes, e.g. POST /cameras/NAME/trigger)

Each camera's routes are a :class:`~edgeship.runtime.apps.dashboard.DashboardSink` in that camera's
lane, registered on this one :class:`~edgeship.runtime.httpserver.HttpServer` under its prefix.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

from ..httpserver import TOKEN_ENV, HttpServer
from ..sinks.http import LIVE_FPS, PUBLIC_HEALTH
from .dashboard import STATIC_TYPES, DashboardSink, static_file

ORDER = {"ok": 0, "stopped": 1, "starting": 2, "degraded": 3, "failed": 4}  # worst wins


def _median(values: list[Any]) -> float | None:
    """The median of the cameras' figures that are known (None when none is)."""
    import statistics

    known = [float(v) for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


def box_status(cameras: dict[str, dict[str, Any]], states: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """(status, reason) of the box from each camera's health and lane state (pure).

    A camera that is down (never opened, or lost) or stale makes the box ``degraded``; an output that cannot
    work ``failed``; the box is ``starting`` while every camera still is, ``ok`` when every camera is."""
    worst, reasons = "ok", []
    for name, h in cameras.items():
        status = h.get("status", "starting")
        if states.get(name, {}).get("state") == "down" and status in ("starting", "ok"):
            status, h = "degraded", {**h, "reason": states[name].get("reason") or "the camera is down"}
        if status == "starting" and any(c.get("status") != "starting" for c in cameras.values()):
            status = "degraded"  # one camera still waiting while the others run
        if status != "ok":
            reasons.append(f"{name}: {h.get('reason') or status}")
        if ORDER.get(status, 3) > ORDER[worst]:
            worst = status
    if worst == "stopped" and any(h.get("status") != "stopped" for h in cameras.values()):
        worst = "degraded"
    return worst, "; ".join(reasons)


class SiteServer:
    """The site's HTTP server: the grid, the box's health, and one :class:`DashboardSink` per camera."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, *, token: str | None = None, max_fps: float = LIVE_FPS,
                 dashboard: bool = True, tls: tuple[str, str] | None = None) -> None:
        self.server = HttpServer(host, port, token=token if token is not None else (os.environ.get(TOKEN_ENV) or None),
                                 tls=tls)
        self.max_fps, self.dashboard = max_fps, dashboard
        self.views: dict[str, DashboardSink] = {}
        self.states: Callable[[], dict[str, dict[str, Any]]] = dict  # set by the deployment: the lanes' states
        self.started = time.time()
        self.server.add_route("GET", "/health", self._health)
        self.server.add_route("GET", "/api/cameras", self._cameras)
        self.server.add_route("GET", "/metrics", self._metrics)
        if dashboard:
            self.server.add_route("GET", "/", lambda body, q: (200, STATIC_TYPES[".html"], static_file("site.html")))
            for name in ("site.js", "style.css"):
                suffix = "." + name.rsplit(".", 1)[-1]
                data = static_file(name)
                self.server.add_route("GET", f"/static/{name}", lambda body, q, d=data, t=STATIC_TYPES[suffix]: (200, t, d))

    @property
    def url(self) -> str:
        return self.server.url

    def view(self, camera: str, *, app: Any = None, annotate: bool = True) -> DashboardSink:
        """The sink of one camera's lane: its dashboard, health, stream and app routes under ``/cameras/NAME``."""
        sink = DashboardSink(app=app, max_fps=self.max_fps, annotate=annotate, dashboard=self.dashboard,
                             server=self.server, prefix=f"/cameras/{camera}")
        self.views[camera] = sink
        return sink

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    # ---- routes ----------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        cams = {name: {k: v for k, v in view.health().items() if k != "last_result"} for name, view in self.views.items()}
        states = self.states()
        for name, st in states.items():
            if name in cams:
                cams[name]["state"], cams[name]["required"] = st.get("state"), st.get("required")
        status, reason = box_status(cams, states)
        return {"status": status, "reason": reason, "release": os.environ.get("EDGESHIP_RELEASE"),
                "frames_processed": sum(int(c.get("frames_processed") or 0) for c in cams.values()),
                "frames_skipped_gate": sum(int(c.get("frames_skipped_gate") or 0) for c in cams.values()),
                "infer_ms": _median([c.get("infer_ms") for c in cams.values()]),
                **({"degraded": "; ".join(f"{n}: {c['degraded']}" for n, c in cams.items() if c.get("degraded"))}
                   if any(c.get("degraded") for c in cams.values()) else {}),
                "cameras": cams}

    def _health(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        h = self.health()
        if query.get("_public"):  # no token: what a health check needs, nothing about the cameras
            h = {k: h[k] for k in PUBLIC_HEALTH if k in h}
        return (200 if h["status"] == "ok" else 503), "application/json", json.dumps(h).encode()

    def _cameras(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        from ...fileio import to_jsonable

        health = self.health()
        out = {"time": time.time(), "status": health["status"], "reason": health["reason"], "cameras": {}}
        for name, view in self.views.items():
            st = view.status()
            st.pop("last_result", None)
            app = st.get("app") or {}
            for key in ("recent_events", "recent_inspections"):
                if isinstance(app, dict) and key in app:
                    app = {**app, key: app[key][:5]}
            out["cameras"][name] = {**st, "app": app or None, "health": health["cameras"][name]}
        return 200, "application/json", json.dumps(to_jsonable(out)).encode()

    def _metrics(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        parts = []
        for name, view in self.views.items():
            if view.metrics is None:
                continue
            labels = {"model": str(view.info.get("model_name") or ""), "task": str(view.info.get("task") or ""),
                      "camera": name}
            parts.append(view.metrics.prometheus(labels))
        if not parts:
            return 503, "text/plain", b"# no camera started yet\n"
        return 200, "text/plain; version=0.0.4; charset=utf-8", _merge_prometheus(parts).encode()


def _merge_prometheus(parts: list[str]) -> str:
    """Several cameras' exposition texts as one: each ``# HELP`` / ``# TYPE`` once, the samples under it."""
    order: list[str] = []
    heads: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for text in parts:
        current = ""
        for line in text.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                current = line.split()[2]
                if current not in heads:
                    order.append(current)
                    heads[current], samples[current] = [], []
                if line not in heads[current]:
                    heads[current].append(line)
            elif line.strip():
                name = line.split("{")[0].split()[0]
                key = current if current and name.startswith(current) else name
                if key not in heads:
                    order.append(key)
                    heads[key], samples[key] = [], []
                samples[key].append(line)
    return "".join("\n".join(heads[k] + samples[k]) + "\n" for k in order)
