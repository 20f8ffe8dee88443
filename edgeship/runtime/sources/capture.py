"""LatestFrameSource: a capture thread feeding a one-slot buffer (or a short read-ahead queue for
offline files), with reconnects and pacing.

Capture runs in its own thread so decoding overlaps inference. In ``latest`` mode (cameras,
streams, real-time file playback) a new frame replaces the unread one, which is counted as
dropped: the consumer always gets the freshest frame and latency never builds up. In ``all``
mode (offline processing of a file or folder) the reader waits for the consumer instead: it
decodes and preprocesses up to ``read_ahead`` frames while the consumer still works, so every
frame is processed, decoding never idles and a slow frame (a key frame takes 2-3x longer to
decode) does not stall the model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ...errors import SourceError
from ..affinity import pin_current_thread
from ..types import Frame

log = logging.getLogger(__name__)

MODES = ("latest", "all")


@dataclass(frozen=True)
class Captured:
    """A frame plus its preprocessed sample when the source was given a ``prepare`` function.

    ``read_ms``: time in the reader's ``read`` (a file's decoding; for a live source it includes
    waiting for the frame); ``prepare_ms``: time in ``prepare``."""

    frame: Frame
    sample: np.ndarray | None = None
    prepare_ms: float = 0.0
    read_ms: float = 0.0

READ_AHEAD = 4  # frames decoded ahead of the consumer in every-frame mode (one camera; a site shares them)


class LatestFrameSource:
    """Runs ``reader`` in a thread; :meth:`get` returns the newest captured frame.

    ``reader`` implements ``open(timeout)``, ``read() -> ndarray | None``, ``close()``, ``rewind()``
    and has ``name``, ``live`` and ``fps``. ``realtime`` paces a file at its fps (a simulated
    camera); ``loop`` restarts a finished file; a live reader that fails is reopened with
    exponential backoff (``backoff`` = (first delay, max delay)), giving up after
    ``reconnect_timeout`` seconds (None: never). ``prepare(image) -> sample`` runs in the capture
    thread (preprocessing overlapped with inference). ``read_ahead``: frames decoded ahead of the
    consumer in ``all`` mode (``latest`` mode keeps one, the newest). ``max_fps`` caps the frames handed
    to the consumer (a live camera's extra frames are read and not kept: counted as ``capped``).
    ``on_frame()`` is called (in the capture thread) after each frame is handed over: a multi-camera
    scheduler waits on it instead of polling every camera.
    """

    def __init__(self, reader: Any, *, mode: str | None = None, realtime: bool = False, loop: bool = False,
                 open_timeout: float = 10.0, reconnect_timeout: float | None = None,
                 backoff: tuple[float, float] = (0.25, 8.0), prepare: Callable[[np.ndarray], np.ndarray] | None = None,
                 read_ahead: int | None = None, max_fps: float | None = None, on_frame: Callable[[], None] | None = None) -> None:
        live = bool(getattr(reader, "live", False))
        mode = mode or ("latest" if (live or realtime) else "all")
        if mode not in MODES:
            raise SourceError(f"capture mode must be one of {', '.join(MODES)}, got {mode!r}")
        read_ahead = READ_AHEAD if read_ahead is None else read_ahead
        if int(read_ahead) < 1:
            raise SourceError(f"read_ahead must be at least 1 frame, got {read_ahead}")
        self.reader = reader
        self.name = str(getattr(reader, "name", reader))
        self.mode, self.realtime, self.loop = mode, realtime, loop
        self.open_timeout, self.reconnect_timeout, self.backoff = float(open_timeout), reconnect_timeout, backoff
        self.prepare = prepare
        if max_fps is not None and not max_fps > 0:
            raise SourceError(f"max_fps must be a positive frame rate, got {max_fps}")
        self.max_fps = max_fps
        self.on_frame = on_frame
        self.capped = 0
        self._last_kept: float | None = None
        self._cond = threading.Condition()
        self._depth = int(read_ahead) if mode == "all" else 1
        self._frames: deque[Captured] = deque()  # the newest frame (latest mode) or the frames read ahead (all mode)
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._thread: threading.Thread | None = None
        self.finished = False
        self.error: SourceError | None = None
        self.captured = self.dropped = self.reconnects = self.reconnect_attempts = self.read_failures = 0
        self.connected = False
        self.t_start: float | None = None
        self._t_origin: float | None = None  # wall time of a file's first frame (its scene clock's zero)
        self.cpus: frozenset[int] | None = None  # CPUs the capture thread is pinned to (set before start)
        self.last_error: str | None = None

    # ---- consumer side ------------------------------------------------------------------------
    def start(self) -> "LatestFrameSource":
        """Start capturing; raises SourceError when the source does not open within ``open_timeout``."""
        if self._thread is not None:
            return self
        self.t_start = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"capture:{self.name}", daemon=True)
        self._thread.start()
        self._opened.wait()
        if self.error is not None and self.captured == 0 and not self.connected:
            self.stop()
            raise self.error
        return self

    def get(self, timeout: float = 1.0) -> Captured | None:
        """The next frame (latest mode: the newest unread one), or None after ``timeout`` s or once the
        source is finished and drained."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._frames and not self.finished:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            if not self._frames:
                return None
            item = self._frames.popleft()
            if len(self._frames) <= self._depth // 2:  # the capture thread refills the queue in bursts
                self._cond.notify_all()
            return item

    @property
    def exhausted(self) -> bool:
        """True when the source has ended (end of file, or a stream given up) and nothing is left to read."""
        with self._cond:
            return self.finished and not self._frames

    def stop(self) -> None:
        """Stop the capture thread and close the reader."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.open_timeout + 5.0)
        self.finished = True

    def stats(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - (self.t_start or time.monotonic()), 1e-9)
        return {
            "source": self.name, "mode": self.mode, "connected": self.connected, "frames_captured": self.captured,
            "frames_dropped": self.dropped, "frames_capped": self.capped, "reconnects": self.reconnects, "reconnect_attempts": self.reconnect_attempts,
            "source_fps": self.captured / elapsed if self.t_start else 0.0, "nominal_fps": getattr(self.reader, "fps", None),
            "last_error": self.last_error,
        }

    def __enter__(self) -> "LatestFrameSource":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- capture thread -------------------------------------------------------------------------
    def _run(self) -> None:
        pin_current_thread(self.cpus)
        try:
            self._open_first()
        except SourceError as e:
            self.error = e
            self._finish()
            self._opened.set()
            return
        self._opened.set()
        try:
            self._capture_loop()
        except Exception as e:  # noqa: BLE001 - a reader bug must end the run visibly, not hang it
            log.exception("capture thread for %s failed", self.name)
            self.error = SourceError(f"source {self.name} failed: {type(e).__name__}: {e}")
        finally:
            self._close_reader()
            self._finish()

    def _open_first(self) -> None:
        deadline = time.monotonic() + self.open_timeout
        delay = self.backoff[0]
        while True:
            try:
                self.reader.open(max(0.5, deadline - time.monotonic()))
                self.connected = True
                return
            except SourceError as e:
                self.last_error = str(e)
                if not getattr(self.reader, "live", False) or time.monotonic() + delay >= deadline or self._stop.is_set():
                    raise SourceError(f"cannot open source {self.name} within {self.open_timeout:g}s: {e}") from None
            if self._stop.wait(delay):
                raise SourceError(f"source {self.name}: stopped before it opened")
            delay = min(delay * 2, self.backoff[1])

    def _capture_loop(self) -> None:
        fps = getattr(self.reader, "fps", None) or 30.0
        live = bool(getattr(self.reader, "live", False))
        paced = self.realtime and not live
        t0, n = time.monotonic(), 0
        while not self._stop.is_set():
            if paced:  # a simulated camera: the next frame exists at its time on the file's clock
                wait = t0 + n / fps - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    return
            if self.mode == "all" and not self._wait_for_room():
                return
            stamp = (time.time(), time.monotonic())  # a file's frame exists once its decoding begins
            try:
                img = self.reader.read()
            except (OSError, ValueError) as e:
                self.last_error, img = f"{type(e).__name__}: {e}", None
            if img is None:
                if self._stop.is_set():
                    return
                if not live:
                    if self.loop and self.reader.rewind():
                        t0, n = time.monotonic(), 0
                        continue
                    return
                self.read_failures += 1
                if not self._reconnect():
                    return
                t0, n = time.monotonic(), 0
                continue
            n += 1
            read_ms = (time.monotonic() - stamp[1]) * 1e3
            if live:  # a camera's or stream's frame exists when the reader hands it over
                stamp = (time.time(), time.monotonic())
            if not self._publish(img, *stamp, read_ms):
                return

    def _publish(self, img: np.ndarray, now: float, t_mono: float, read_ms: float) -> bool:
        """Frame the image, preprocess it and hand it to the consumer; False when stopping."""
        if self.max_fps is not None and (self.realtime or getattr(self.reader, "live", False)):  # files: every frame
            if self._last_kept is not None and t_mono - self._last_kept < 1.0 / self.max_fps - 1e-4:
                self.capped += 1
                return True
            self._last_kept = t_mono
        t_media = t_scene = None
        if not getattr(self.reader, "live", False):  # files and folders: the scene runs on the file's clock
            t_media = self.captured / (getattr(self.reader, "fps", None) or 30.0)
            if self._t_origin is None:
                self._t_origin = now
            t_scene = self._t_origin + t_media
        frame = Frame(img, self.captured, now, t_mono, self.name, t_media, t_scene)
        self.captured += 1
        sample, ms = None, 0.0
        if self.prepare is not None:
            t = time.perf_counter()
            sample = self.prepare(img)
            ms = (time.perf_counter() - t) * 1e3
        item = Captured(frame, sample, ms, read_ms)
        with self._cond:
            if self.mode == "all":  # room was made before the frame was read (:meth:`_wait_for_room`)
                if self._stop.is_set():
                    return False
            elif self._frames:
                self._frames.clear()
                self.dropped += 1
            self._frames.append(item)
            self._cond.notify_all()
        if self.on_frame is not None:
            self.on_frame()
        return True

    def _wait_for_room(self) -> bool:
        """Every-frame mode: wait while ``read_ahead`` frames are already waiting, before decoding the next one (a
        frame decoded first and then held would be one more frame-sized buffer per camera); False when stopping."""
        with self._cond:
            while len(self._frames) >= self._depth and not self._stop.is_set():
                self._cond.wait(0.1)
            return not self._stop.is_set()

    def _reconnect(self) -> bool:
        """Reopen a dropped live source with exponential backoff; False when giving up or stopping."""
        self.connected = False
        self._close_reader()
        lost = time.monotonic()
        delay = self.backoff[0]
        log.warning("source %s dropped (%s); reconnecting", self.name, self.last_error or "read failed")
        while not self._stop.wait(delay):
            self.reconnect_attempts += 1
            try:
                self.reader.open(self.open_timeout)
            except SourceError as e:
                self.last_error = str(e)
            else:
                self.connected = True
                self.reconnects += 1
                log.warning("source %s reconnected after %.1fs", self.name, time.monotonic() - lost)
                return True
            if self.reconnect_timeout is not None and time.monotonic() - lost > self.reconnect_timeout:
                self.error = SourceError(
                    f"source {self.name} lost and not back after {self.reconnect_timeout:g}s: {self.last_error}")
                return False
            delay = min(delay * 2, self.backoff[1])
        return False

    def _close_reader(self) -> None:
        try:
            self.reader.close()
        except (OSError, ValueError) as e:  # closing a broken stream may itself fail
            log.debug("closing %s: %s", self.name, e)

    def _finish(self) -> None:
        with self._cond:
            self.finished = True
            self._cond.notify_all()
