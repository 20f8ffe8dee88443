"""Video files and live streams (RTSP, HTTP MJPEG, camera index, /dev/videoN) as calibration sources.

Video files are sampled evenly across the whole file: frames in between are skipped with
``grab()`` and only chosen frames are decoded into images with ``retrieve()``. Streams are
captured for ``duration`` seconds, keeping frames evenly spread over that time. A stream that
does not deliver a frame within ``timeout`` seconds is an error naming it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import numpy as np

from ..errors import CalibrationError, InputError
from ..progress import progress
from .sources import Candidate, SourceOptions, SourceStats, evenly_spaced

log = logging.getLogger(__name__)
T = TypeVar("T")


def import_cv2():
    """Import OpenCV and keep its and FFmpeg's warnings off stderr unless edgeship runs verbose.

    Errors still reach the user, as one edgeship error line naming the source.
    """
    quiet = not logging.getLogger("edgeship").isEnabledFor(logging.DEBUG)
    if quiet:
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # read when FFmpeg is first used
    import cv2

    if quiet:
        try:
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        except AttributeError:  # pragma: no cover - very old OpenCV
            pass
    return cv2


class CaptureTimeout(CalibrationError):
    """A capture call is still blocked after its timeout (the capture must not be released)."""


def call_with_timeout(fn: Callable[[], T], timeout: float, what: str) -> T:
    """Run a blocking call (opening or reading a capture) and give up after ``timeout`` seconds."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=work, name="edgeship-capture", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise CaptureTimeout(f"{what} did not answer within {timeout:g} s (--timeout)")
    if "error" in box:
        raise box["error"]
    return box["value"]


# ---- video files ----------------------------------------------------------------------------------
class VideoSource:
    """A video file, sampled evenly across its whole length."""

    kind = "video"

    def __init__(self, target: str, options: SourceOptions):
        self.name = str(target)
        self.path = Path(target)
        if not self.path.is_file():
            raise InputError(f"video file {self.path} does not exist")
        self.options = options
        self.stats = SourceStats(source=self.name, kind=self.kind)
        cap = self._open()
        try:
            cv2 = import_cv2()
            self.frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            self.size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        finally:
            cap.release()
        if self.frame_count <= 0:
            self.frame_count = self._count_frames()
        if self.frame_count <= 0:
            raise CalibrationError(f"video file {self.path} opened but has no frames")
        self.stats.details.update(frames=self.frame_count, fps=round(self.fps, 3), width=self.size[0], height=self.size[1])

    def _open(self):
        cv2 = import_cv2()
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise CalibrationError(
                f"video file {self.path} could not be opened (expected a video OpenCV/FFmpeg can decode)"
            )
        return cap

    def _count_frames(self) -> int:
        """Some containers do not store a frame count: count by skipping through the file once."""
        cap = self._open()
        n = 0
        try:
            while cap.grab():
                n += 1
        finally:
            cap.release()
        return n

    def available(self) -> int:
        return self.frame_count

    def candidates(self, want: int, rng: np.random.Generator) -> Iterator[Candidate]:
        chosen = evenly_spaced(self.frame_count, want)
        if chosen.size == 0:
            return
        cap = self._open()
        pos = 0
        bar = progress(total=int(chosen.size), desc=f"video {self.path.name}", unit="frame")
        try:
            for target in chosen:
                while pos < target:
                    if not cap.grab():
                        log.warning("video %s ended at frame %d of %d it announced", self.path, pos, self.frame_count)
                        return
                    pos += 1
                ok = cap.grab()
                pos += 1
                frame = cap.retrieve()[1] if ok else None
                if frame is None:
                    if not ok:
                        log.warning("video %s ended at frame %d of %d it announced", self.path, pos - 1, self.frame_count)
                        return
                    self.stats.unreadable += 1
                    continue
                self.stats.read += 1
                bar.update(1)
                yield Candidate(frame, None, f"{self.path}#{int(target)}")
        finally:
            bar.close()
            cap.release()


# ---- live streams --------------------------------------------------------------------------------
def _capture_target(target: str) -> int | str:
    """What to hand to cv2.VideoCapture: an int for a camera index, else the URL/path."""
    t = target.strip()
    return int(t) if t.isdigit() else t


class StreamSource:
    """A live stream or camera, captured for ``options.duration`` seconds."""

    kind = "stream"

    def __init__(self, target: str, options: SourceOptions):
        self.name = str(target)
        self.options = options
        if options.duration <= 0:
            raise InputError(f"--duration must be positive to capture stream {self.name}, got {options.duration:g}")
        if options.timeout <= 0:
            raise InputError(f"--timeout must be positive, got {options.timeout:g}")
        self.stats = SourceStats(source=self.name, kind=self.kind)
        self.stats.details.update(duration_s=options.duration)

    def available(self) -> None:
        return None

    @property
    def _is_device(self) -> bool:
        return isinstance(_capture_target(self.name), int) or self.name.startswith("/dev/")

    def _call(self, fn: Callable[[], T]) -> tuple[T, float]:
        """Run a blocking capture call; return its value and how long it took.

        FFmpeg (URLs) enforces --timeout itself through the open/read timeout properties, so the
        call returns on its own. Local cameras have no such property: a watchdog thread gives up.
        """
        t0 = time.monotonic()
        if self._is_device:
            value = call_with_timeout(fn, self.options.timeout, f"stream {self.name}")
        else:
            value = fn()
        return value, time.monotonic() - t0

    def _no_answer(self, elapsed: float) -> bool:
        return elapsed >= 0.9 * self.options.timeout

    def _open(self):
        cv2 = import_cv2()
        target = _capture_target(self.name)
        ms = int(self.options.timeout * 1000)
        if self._is_device:
            opener = lambda: cv2.VideoCapture(target)  # noqa: E731
        else:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            opener = lambda: cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)  # noqa: E731
        cap, elapsed = self._call(opener)
        if not cap.isOpened():
            cap.release()
            if self._no_answer(elapsed):
                raise CalibrationError(f"stream {self.name} did not answer within {self.options.timeout:g} s (--timeout)")
            raise CalibrationError(
                f"stream {self.name} could not be opened (expected a reachable RTSP/HTTP MJPEG URL or camera)"
            )
        return cap

    def candidates(self, want: int, rng: np.random.Generator) -> Iterator[Candidate]:
        if want <= 0:
            return
        cap = self._open()
        timeout, duration = self.options.timeout, self.options.duration
        interval = duration / want
        taken, grabbed = 0, 0
        bar = progress(total=want, desc=f"stream {self.name}", unit="frame")
        stuck = False
        try:
            ok, elapsed = self._call(cap.grab)
            if not ok:
                if self._no_answer(elapsed):
                    raise CalibrationError(f"stream {self.name} sent no frame within {timeout:g} s (--timeout)")
                raise CalibrationError(f"stream {self.name} opened but delivered no frame")
            t0 = time.monotonic()
            next_keep = 0.0
            while True:
                now = time.monotonic() - t0
                if now >= next_keep and taken < want:
                    frame = cap.retrieve()[1]
                    if frame is None:
                        self.stats.unreadable += 1
                    else:
                        self.stats.read += 1
                        taken += 1
                        bar.update(1)
                        yield Candidate(frame, None, f"{self.name}@{now:.2f}s")
                    next_keep = taken * interval
                if now >= duration or taken >= want:
                    break
                grabbed += 1
                if not self._call(cap.grab)[0]:
                    log.warning("stream %s stopped after %.1f s of %.1f s; keeping %d frames", self.name, now, duration, taken)
                    break
            self.stats.details.update(frames_seen=grabbed + 1, captured_s=round(time.monotonic() - t0, 2))
        except CaptureTimeout:
            stuck = True  # a reader thread still holds the capture: releasing it now could crash
            raise
        finally:
            bar.close()
            if not stuck:
                cap.release()
