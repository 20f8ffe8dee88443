"""Many cameras, one model: one process runs every camera of a site against one loaded artifact.

    site = MultiPipeline([Lane(pipe1, "door"), Lane(pipe2, "yard", required=True)], backend, workers=2)
    summary = site.run()           # a RunSummary whose ``cameras`` holds each camera's own

Each camera is a *lane*: a :class:`~edgeship.runtime.pipeline.Pipeline` with its own capture thread
and one-slot latest-frame buffer (drops counted per camera), its gates, sinks, output thread and
metrics; only the backend is shared. Inference *workers* (threads) take frames from a
:class:`FairScheduler`: round-robin over the cameras that have a fresh frame and no frame in
flight, so a 30 fps camera cannot starve a 5 fps one and every camera's results stay in order. With
several workers each has its own runner (:meth:`Backend.runner`: an OpenVINO infer request, a
LiteRT interpreter), so frames of different cameras are in the model at the same time.

Faults stay local: a stream that drops reconnects with back-off inside its lane while the others go
on; a camera that does not open is retried in the background and reported (``down``), and ends the
run only when it is ``required``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..errors import EdgeshipError, SourceError
from ..records import RunSummary
from .sources import Captured
from .pipeline import stop_on_signals

log = logging.getLogger(__name__)

RETRY_S = (1.0, 30.0)  # a camera that did not open is retried after 1 s, doubling up to 30 s
CAMERA_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"  # URL-, topic- and file-name-safe


@dataclass
class Lane:
    """One camera: its pipeline (not started), name, whether the run needs it, and how to make its source again."""

    pipeline: Any
    name: str
    required: bool = False
    reopen: Callable[[], Any] | None = None  # a fresh, unstarted source for a retry (the first one failed to open)
    max_frames: int | None = None
    taken: int = 0
    busy: bool = False
    up: bool = False  # its source is running
    done: bool = False  # ended (its source finished, or max_frames)
    down_reason: str = ""
    opened: list[Any] = field(default_factory=list)
    retry_at: float = 0.0
    retry_delay: float = RETRY_S[0]


class FairScheduler:
    """Hands out (lane, frame) to inference workers: round-robin over lanes with a fresh frame, nothing in flight and
    room in their output queue (a camera whose sinks lag drops its own frames instead of holding a worker)."""

    def __init__(self, lanes: Sequence[Lane]) -> None:
        self.lanes = list(lanes)
        self._cond = threading.Condition()
        self._next = 0
        self.stopped = False

    def wake(self) -> None:
        """A camera has a new frame (called from its capture thread), or a lane changed."""
        with self._cond:
            self._cond.notify_all()

    def take(self, timeout: float = 0.25) -> tuple[Lane, Captured] | None:
        """The next lane in turn that has a frame, marked busy until :meth:`release`; None after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.stopped:
                n = len(self.lanes)
                for k in range(n):
                    lane = self.lanes[(self._next + k) % n]
                    if lane.busy or not lane.up or lane.done or lane.pipeline.output_full():
                        continue  # (a camera whose sinks lag keeps no shared worker waiting on its hand-off)
                    item = lane.pipeline.source.get(timeout=0)
                    if item is None:
                        continue
                    lane.busy = True
                    self._next = (self._next + k + 1) % n
                    return lane, item
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.05))  # also polls: a source that ended notifies nobody
        return None

    def release(self, lane: Lane) -> None:
        with self._cond:
            lane.busy = False
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()


class MultiPipeline:
    """Run every lane against one ``backend`` until every lane ended, ``duration`` passed, a required camera failed,
    or :meth:`stop` / a signal. ``workers``: inference threads (default: the backend's ``default_runners``; at
    most its ``parallel_runners`` and one per camera)."""

    def __init__(self, lanes: Sequence[Lane], backend: Any, *, workers: int | None = None, duration: float | None = None,
                 handle_signals: bool = True) -> None:
        if not lanes:
            raise EdgeshipError("a multi-camera run needs at least one camera")
        names = [lane.name for lane in lanes]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise EdgeshipError(f"camera names must be unique, got {', '.join(dup)} more than once")
        self.lanes, self.backend, self.duration = list(lanes), backend, duration
        cap = max(1, int(getattr(backend, "parallel_runners", 1) or 1))
        default = int(getattr(backend, "default_runners", 1) or 1)
        self.workers = max(1, min(int(workers) if workers else default, len(self.lanes), cap))
        self.handle_signals = handle_signals
        self.scheduler = FairScheduler(self.lanes)
        self._stop = threading.Event()
        self.stopped_by: str | None = None
        self.error: BaseException | None = None
        self.t_start: float | None = None
        self.summary: RunSummary | None = None
        for lane in self.lanes:
            lane.max_frames = lane.max_frames if lane.max_frames is not None else lane.pipeline.max_frames
            lane.pipeline.source.on_frame = self.scheduler.wake
            lane.pipeline.on_output_room = self.scheduler.wake

    def stop(self, reason: str = "stop") -> None:
        if self.stopped_by is None:
            self.stopped_by = reason
        self._stop.set()
        self.scheduler.stop()

    # ---- health, for the site server -----------------------------------------------------------------
    def camera_states(self) -> dict[str, dict[str, Any]]:
        """Each camera's state: up (frames flowing), down (and why), done, required."""
        out = {}
        for lane in self.lanes:
            src = lane.pipeline.source
            state = "done" if lane.done else ("up" if lane.up and getattr(src, "connected", False) else "down")
            out[lane.name] = {"state": state, "required": lane.required, "reason": lane.down_reason if state == "down" else "",
                              "source": src.name}
        return out

    # ---- run ---------------------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        restore = self._install_signals()
        error: BaseException | None = None
        threads: list[threading.Thread] = []
        try:
            for lane in self.lanes:
                lane.pipeline.begin(lane.opened, start_source=False)
            self.t_start = time.monotonic()
            starters = [threading.Thread(target=self._start_lane, args=(lane,), name=f"open:{lane.name}", daemon=True)
                        for lane in self.lanes]
            for t in starters:
                t.start()
            runners = [self.backend.runner() for _ in range(self.workers)]
            threads = [threading.Thread(target=self._work, args=(run,), name=f"infer-{i}", daemon=True)
                       for i, run in enumerate(runners)]
            for t in threads:
                t.start()
            self._watch()
        except BaseException as e:  # noqa: BLE001 - re-raised after every lane is closed
            error = e
            if isinstance(e, KeyboardInterrupt):
                self.stop("signal")
        finally:
            self.stop(self.stopped_by or "stop")
            for t in threads:
                t.join()
            close_errors = [lane.pipeline.end(lane.opened) for lane in self.lanes]
            restore()
        error = error or self.error
        if error is not None and not isinstance(error, KeyboardInterrupt):
            raise error
        first_close = next((e for e in close_errors if e is not None), None)
        if first_close is not None:
            raise first_close
        self.summary = self._summary()
        return self.summary

    def _start_lane(self, lane: Lane) -> None:
        """Open a camera (in its own thread: cameras open side by side); a required camera that fails ends the run."""
        try:
            lane.pipeline.source.start()
        except SourceError as e:
            if self._stop.is_set():  # the run ended while this camera was still trying: keep the reason it had
                return
            lane.down_reason = str(e)
            if lane.required:
                self.error = SourceError(f"camera {lane.name} (required): {e}")
                self.stop("source_error")
                return
            log.warning("camera %s did not open (%s); retrying in the background", lane.name, e)
            lane.retry_at = time.monotonic() + lane.retry_delay
            return
        lane.up, lane.down_reason = True, ""
        self.scheduler.wake()

    def _retry(self, lane: Lane) -> None:
        if lane.reopen is None:
            return
        lane.retry_delay = min(lane.retry_delay * 2, RETRY_S[1])
        lane.retry_at = float("inf")  # until this attempt is over
        source = lane.reopen()
        source.prepare = lane.pipeline.source.prepare
        source.on_frame = self.scheduler.wake
        lane.pipeline.source = source
        lane.pipeline.metrics.source = source

        def attempt() -> None:
            self._start_lane(lane)
            if not lane.up:
                lane.retry_at = time.monotonic() + lane.retry_delay

        threading.Thread(target=attempt, name=f"reopen:{lane.name}", daemon=True).start()

    def _work(self, run: Callable) -> None:
        while not self._stop.is_set():
            got = self.scheduler.take(0.25)
            if got is None:
                continue
            lane, item = got
            try:
                lane.pipeline.step(item, run)
                lane.taken += 1
                if lane.max_frames is not None and lane.taken >= lane.max_frames:
                    lane.done = True
                    lane.pipeline.stopped_by = lane.pipeline.stopped_by or "max_frames"
            except BaseException as e:  # noqa: BLE001 - a model failure ends the run, visibly
                self.error = e
                self.stop("error")
            finally:
                self.scheduler.release(lane)

    def _watch(self) -> None:
        """The main thread: end lanes whose source finished, retry cameras that are down, stop when all are done."""
        while not self._stop.wait(0.1):
            now = time.monotonic()
            if self.duration is not None and now - (self.t_start or now) >= self.duration:
                for lane in self.lanes:
                    lane.pipeline.stopped_by = lane.pipeline.stopped_by or "duration"
                self.stop("duration")
                return
            for lane in self.lanes:
                src = lane.pipeline.source
                if lane.up and not lane.done and not lane.busy and src.exhausted:
                    lane.done = True
                    lane.pipeline.stopped_by = lane.pipeline.stopped_by or ("source_error" if src.error else "end_of_source")
                    if src.error and lane.required:
                        self.error = SourceError(f"camera {lane.name} (required): {src.error}")
                        self.stop("source_error")
                        return
                if not lane.up and not lane.done and now >= lane.retry_at and lane.down_reason:
                    self._retry(lane)
            # done when every camera that ran has ended (files, max_frames); cameras that never came up do not keep
            # a finished site running (while any camera runs, they are retried)
            if any(lane.done for lane in self.lanes) and all(lane.done or not lane.up for lane in self.lanes):
                ran = [lane for lane in self.lanes if lane.done]
                self.stop("end_of_source" if all(lane.pipeline.stopped_by == "end_of_source" for lane in ran)
                          else "cameras_done")
                return

    def _install_signals(self) -> Callable[[], None]:
        return stop_on_signals(self.stop, self.handle_signals)

    def _summary(self) -> RunSummary:
        per: dict[str, Any] = {}
        for lane in self.lanes:
            p = lane.pipeline
            p.stopped_by = p.stopped_by or self.stopped_by
            s = p._summary()  # noqa: SLF001 - the lane's own summary
            d = s.to_dict()
            d["state"] = self.camera_states()[lane.name]["state"]
            d["required"] = lane.required
            if not lane.up:
                d["error"] = lane.down_reason or "did not open before the run ended"
            per[lane.name] = d
        total = lambda key: sum(int(v.get(key) or 0) for v in per.values())  # noqa: E731
        duration = max((float(v.get("duration_s") or 0.0) for v in per.values()), default=0.0)
        b = self.backend
        return RunSummary(
            source=f"{len(self.lanes)} cameras", model=str(getattr(b, "path", "")), backend=getattr(b, "name", None),
            executed_precision=getattr(b, "executed_precision", None), task=self.lanes[0].pipeline.task,
            stopped_by=self.stopped_by, duration_s=duration, frames_captured=total("frames_captured"),
            frames_processed=total("frames_processed"), frames_dropped=total("frames_dropped"),
            frames_skipped_gate=total("frames_skipped_gate"), skipped=total("skipped"), reconnects=total("reconnects"),
            source_connected=all(v["state"] != "down" for v in per.values()),
            processed_fps=round(sum(float(v.get("processed_fps") or 0.0) for v in per.values()), 3),
            sink_errors=total("sink_errors"), cameras=per)
