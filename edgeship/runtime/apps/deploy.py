"""Turn a validated deployment config into a running pipeline: backend, source, app, server, sinks.

    from edgeship.runtime.apps.deploy import run_config
    summary = run_config("examples/security.yaml", max_frames=300)

The summary is the pipeline's (fps, latency percentiles, skipped frames...) plus ``app`` (the
app's final status: events, counters or published states) and ``url`` when a server ran.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from ...records import RunSummary
from ..sinks.files import VideoSink
from ..types import Frame
from .base import App
from . import build_app


@dataclass
class Deployment:
    pipeline: Any
    app: Any
    server: Any
    config: Any

    def run(self) -> RunSummary:
        summary = self.pipeline.run()
        if self.app is not None:
            status = self.app.status()
            for key in ("recent_events", "recent_inspections"):
                status.pop(key, None)
            summary.app = status
        if self.server is not None:
            summary.url = self.server.url
        return summary


def build_deployment(cfg, *, max_frames: int | None = None, duration: float | None = None,
                     handle_signals: bool = True, keep_freed_frames: bool = False,
                     log_every: float | None = None) -> Deployment:
    """Build everything ``cfg`` (a :class:`~edgeship.runtime.config.DeployConfig`) names; nothing runs yet.
    ``log_every``: write a status line to the ``edgeship.status`` log every so many seconds."""
    from ..runner import build_pipeline
    from .dashboard import DashboardSink

    app = build_app(cfg.app) if cfg.app is not None else None
    defaults = app.defaults if app is not None else App.defaults
    sinks: list[Any] = [_with_overlays(s, app) if defaults["annotate"] else s for s in cfg.sinks]
    server = None
    if cfg.server is not None:
        s = cfg.server
        server = DashboardSink(s.host, s.port, app=app, token=s.token, max_fps=s.max_fps,
                               annotate=defaults["annotate"], dashboard=s.dashboard)
        sinks.append(server)
    elif app is not None and app.routes():
        # the app's routes (POST /trigger, GET /state) need a server: serve them on the default port
        server = DashboardSink(app=app, annotate=defaults["annotate"])
        sinks.append(server)
    if app is not None:
        sinks.insert(0, app)  # the app sees each result before the other sinks
    if log_every is not None:
        from ..sinks.status import StatusLog

        sinks.append(StatusLog(log_every))
    pipe = build_pipeline(
        str(cfg.artifact), cfg.source.uri, labels=str(cfg.labels) if cfg.labels else None, sinks=sinks,
        gates=list(app.gates) if app is not None else [],
        max_frames=max_frames if max_frames is not None else cfg.max_frames,
        duration=duration if duration is not None else cfg.duration,
        options=cfg.run_options(realtime=defaults["realtime"]), handle_signals=handle_signals,
        keep_freed_frames=keep_freed_frames,
    )
    return Deployment(pipe, app, server, cfg)


class AppVideoSink(VideoSink):
    """The annotated ``video:FILE`` sink plus the app's overlays (zones, lines, track ids, verdicts)."""

    def __init__(self, path: str, app: Any) -> None:
        super().__init__(path)
        self.app = app

    def _drawn(self, frame: Frame, result) -> Frame:
        image = frame.image.copy()
        self.app.annotate(image, result)
        return replace(frame, image=image)

    def write(self, frame: Frame, result) -> None:
        super().write(self._drawn(frame, result), result)

    def skip(self, frame: Frame) -> None:
        super().skip(self._drawn(frame, None))


def _with_overlays(sink: str, app: Any) -> Any:
    """``video:FILE`` with an app becomes an :class:`AppVideoSink`; other sinks stay as they are."""
    if app is None or not sink.startswith("video:"):
        return sink
    return AppVideoSink(sink.partition(":")[2], app)


def run_config(path: str | os.PathLike, *, max_frames: int | None = None, duration: float | None = None,
               handle_signals: bool = True, keep_freed_frames: bool = False) -> RunSummary:
    """Load, validate and run a deployment config; returns the run summary (``keep_freed_frames``: see
    :func:`edgeship.runtime.runner.build_pipeline`; ``edgeship run --config`` sets it)."""
    from ..config import load_config

    cfg = load_config(path)
    return build_deployment(cfg, max_frames=max_frames, duration=duration, handle_signals=handle_signals,
                            keep_freed_frames=keep_freed_frames).run()
