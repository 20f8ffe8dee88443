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
                     log_every: float | None = None) -> Any:
    """Build everything ``cfg`` (a :class:`~edgeship.runtime.config.DeployConfig`) names; nothing runs yet.
    ``log_every``: write a status line to the ``edgeship.status`` log every so many seconds. A config with
    ``cameras:`` builds a :class:`SiteDeployment` (one process, one model, every camera)."""
    if cfg.cameras:
        return build_site(cfg, max_frames=max_frames, duration=duration, handle_signals=handle_signals,
                          keep_freed_frames=keep_freed_frames, log_every=log_every)
    from ..runner import build_pipeline
    from .dashboard import DashboardSink

    app = build_app(cfg.app) if cfg.app is not None else None
    defaults = app.defaults if app is not None else App.defaults
    sinks: list[Any] = [_with_overlays(s, app) if defaults["annotate"] else s for s in cfg.sinks]
    server = None
    if cfg.server is not None:
        s = cfg.server
        server = DashboardSink(s.host, s.port, app=app, token=s.token, max_fps=s.max_fps,
                               annotate=defaults["annotate"], dashboard=s.dashboard, tls=s.tls)
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
    if pipe.watch is not None:
        pipe.watch.emit = drift_events(app)
    return Deployment(pipe, app, server, cfg)


def drift_events(app: Any):
    """The drift watch's events as the app's events: an id and a time added, sent to every event sink of the
    app (JSON lines, webhook, MQTT with their durable queues), after the app's own ``on_drift`` (the industrial
    app keeps the episodes in its counters database); without an app or sinks only the log has them."""
    import logging

    from .base import iso_time, new_event_id

    sinks = list(getattr(app, "event_sinks", None) or [])
    record = getattr(app, "on_drift", None)

    def emit(event: dict) -> None:
        if record is not None:
            try:
                record(event)
            except Exception:  # the episode's record must not stop its event
                logging.getLogger(__name__).exception("%s could not record a drift event", type(app).__name__)
        event = {"id": new_event_id(), **event, "time": iso_time(event.get("time") or 0.0)}
        for sink in sinks:
            try:
                sink.emit(event, None)
            except Exception:  # one broken sink must not stop the others or the pipeline
                logging.getLogger(__name__).exception("event sink %s failed on drift event %s", type(sink).__name__,
                                                      event["id"])

    return emit


# ---- a site: several cameras, one model, one server --------------------------------------------------------
class SharedSink:
    """An event sink several cameras' apps write to: opened by the first, closed by the last (one outbox, one
    broker connection, one file for the whole site)."""

    def __init__(self, sink: Any) -> None:
        self.sink, self.users = sink, 0

    def open(self) -> None:
        if self.users == 0:
            self.sink.open()
        self.users += 1

    def close(self) -> None:
        self.users -= 1
        if self.users == 0:
            self.sink.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sink, name)


@dataclass
class SiteDeployment:
    site: Any  # a MultiPipeline
    apps: dict[str, Any]
    server: Any
    config: Any
    backend: Any

    def run(self) -> RunSummary:
        if self.server is not None:
            self.server.start()
        try:
            summary = self.site.run()
        finally:
            if self.server is not None:
                self.server.stop()
            self.backend.close()
        for name, app in self.apps.items():
            if app is not None and summary.cameras and name in summary.cameras:
                status = app.status()
                for key in ("recent_events", "recent_inspections"):
                    status.pop(key, None)
                summary.cameras[name]["app"] = status
        per_camera = [c["app"] for c in (summary.cameras or {}).values() if c.get("app")]
        if per_camera:
            summary.app = {"app": per_camera[0].get("app"), **site_totals(per_camera)}
        if self.server is not None:
            summary.url = self.server.url
        return summary


def site_totals(statuses: list[dict]) -> dict:
    """The site's app figures: every count (and mapping of counts) the cameras report, summed over them."""
    out: dict[str, Any] = {}
    for status in statuses:
        for key, v in status.items():
            if isinstance(v, bool) or key == "app":
                continue
            if isinstance(v, (int, float)) and isinstance(out.get(key, 0), (int, float)):
                out[key] = out.get(key, 0) + v
            elif isinstance(v, dict) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v.values()):
                mine = out.setdefault(key, {})
                if isinstance(mine, dict):
                    for k, x in v.items():
                        mine[k] = mine.get(k, 0) + x
    return out


def _camera_path(sink: str, camera: str) -> str:
    from ..config import CAMERA_PLACEHOLDER

    return sink.replace(CAMERA_PLACEHOLDER, camera)


def site_shares(cameras: int) -> dict[str, int]:
    """Each camera's share of a site's source settings (where its config leaves them unset): the frames decoded
    ahead in every-frame mode (one camera's :data:`~edgeship.runtime.sources.capture.READ_AHEAD`, shared: the
    scheduler always has another camera's frame to run) and FFmpeg's decoding threads (the CPUs, shared), at least
    1 each. Four decode-bound 1280x720 cameras on 2 CPUs: peak RSS 202 -> 194 MiB by the read-ahead; one decoding
    thread each against FFmpeg's two: decoding alone 1.19x faster, the whole site within noise (878 vs 867 fps)."""
    from ..affinity import cpu_count
    from ..sources.capture import READ_AHEAD

    n = max(1, cameras)
    if n == 1:
        return {}  # one camera: the defaults (FFmpeg's own thread count)
    return {"read_ahead": max(1, READ_AHEAD // n), "decode_threads": max(1, cpu_count() // n)}


def build_site(cfg, *, max_frames: int | None = None, duration: float | None = None, handle_signals: bool = True,
               keep_freed_frames: bool = False, log_every: float | None = None) -> SiteDeployment:
    """Every camera of ``cfg.cameras`` as a lane of one :class:`~edgeship.runtime.multi.MultiPipeline`: one backend,
    one server (:class:`~edgeship.runtime.apps.site.SiteServer`), event sinks shared where cameras share the
    top-level app's ``events``; file sinks get the camera's name in place of ``{camera}``."""
    import json

    from .. import allocator
    from ..backends import open_backend
    from ..multi import Lane, MultiPipeline
    from ..runner import build_pipeline
    from ..sources import open_source
    from .events import event_sink
    from .site import SiteServer

    be = cfg.backend
    hint = be.hint if "hint" in be.model_fields_set or len(cfg.cameras) < 2 else "throughput"  # requests in flight
    backend = open_backend(str(cfg.artifact), backend=be.name, threads=be.threads, device=be.device, hint=hint,
                           precision=be.precision)
    if keep_freed_frames:
        allocator.keep_freed_frames()
        allocator.limit_arenas()
    try:
        server = None
        if cfg.server is not None:
            s = cfg.server
            server = SiteServer(s.host, s.port, token=s.token, max_fps=s.max_fps, dashboard=s.dashboard, tls=s.tls)
        shared: dict[str, list[Any]] = {}  # events config (JSON) -> the sinks built for it, shared by its cameras
        apps: dict[str, Any] = {}
        lanes = []
        for cam in cfg.cameras:
            app = build_app(cam.app) if cam.app is not None else None
            if app is not None and getattr(app, "event_sinks", None) is not None and getattr(cam.app, "events", None):
                key = json.dumps([e.model_dump(mode="json") for e in cam.app.events], sort_keys=True)
                if key not in shared:
                    shared[key] = [SharedSink(event_sink(e)) for e in cam.app.events]
                app.event_sinks = list(shared[key])
            apps[cam.name] = app
            defaults = app.defaults if app is not None else App.defaults
            sinks: list[Any] = [_with_overlays(_camera_path(x, cam.name), app) if defaults["annotate"]
                                else _camera_path(x, cam.name) for x in cfg.sinks]
            if server is not None:
                sinks.append(server.view(cam.name, app=app, annotate=defaults["annotate"]))
            if app is not None:
                sinks.insert(0, app)
            if log_every is not None:
                from ..sinks.status import StatusLog

                sinks.append(StatusLog(log_every))
            options = cfg.run_options(realtime=defaults["realtime"], source_cfg=cam.source)
            shares = site_shares(len(cfg.cameras))  # what one camera would have, shared by the site's cameras
            unset = {k: v for k, v in shares.items() if getattr(options.source, k) is None}
            if unset:
                options = options.model_copy(update={"source": options.source.model_copy(update=unset)})
            pipe = build_pipeline(backend, cam.source.uri, labels=str(cfg.labels) if cfg.labels else None, sinks=sinks,
                                  gates=list(app.gates) if app is not None else [],
                                  max_frames=max_frames if max_frames is not None else cfg.max_frames,
                                  options=options, handle_signals=False, camera=cam.name)
            if pipe.watch is not None:
                pipe.watch.emit = drift_events(app)
            src = options.source

            def reopen(uri: str = cam.source.uri, o: Any = src) -> Any:
                return open_source(uri, realtime=bool(o.realtime), loop=o.loop, open_timeout=o.timeout_s,
                                   reconnect_timeout=o.reconnect_timeout_s, max_fps=o.max_fps, read_ahead=o.read_ahead,
                                   decode_threads=o.decode_threads)

            lanes.append(Lane(pipe, cam.name, required=cam.required, reopen=reopen))
        site = MultiPipeline(lanes, backend, workers=be.workers,
                             duration=duration if duration is not None else cfg.duration, handle_signals=handle_signals)
        if server is not None:
            server.states = site.camera_states
    except BaseException:
        backend.close()
        raise
    return SiteDeployment(site, apps, server, cfg, backend)


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
