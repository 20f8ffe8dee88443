"""Video files and live sources (cameras, RTSP/RTMP/HTTP streams, MJPEG, GStreamer) as calibration sources.

Video files are sampled evenly across the whole file: frames in between are skipped with
``grab()`` and only chosen frames are decoded into images with ``retrieve()``. Live sources are
read by the device runtime's own readers for ``duration`` seconds, keeping frames evenly spread
over that time. A source that does not deliver a frame within ``timeout`` seconds is an error
naming it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import CalibrationError, InputError
from ..progress import progress
from .sources import Candidate, SourceOptions, SourceStats, evenly_spaced

log = logging.getLogger(__name__)


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
class StreamSource:
    """A live source (camera, RTSP/RTMP/HTTP stream, MJPEG, GStreamer pipeline) captured for ``options.duration`` s.

    It is read by the device runtime's own reader and capture thread (newest frame only, as on the
    device), and a frame is kept every ``duration / want`` seconds.
    """

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

    def _start(self) -> Any:
        from ..errors import SourceError
        from ..runtime.sources import open_source

        timeout = self.options.timeout
        t0 = time.monotonic()
        try:
            src = open_source(self.name, open_timeout=timeout, reconnect_timeout=timeout, read_timeout=timeout)
            return src.start()
        except SourceError as e:
            if time.monotonic() - t0 >= 0.9 * timeout:
                raise CalibrationError(f"stream {self.name} did not answer within {timeout:g} s (--timeout): {e}") from None
            raise CalibrationError(f"stream {self.name} could not be opened: {e}") from None

    def candidates(self, want: int, rng: np.random.Generator) -> Iterator[Candidate]:
        if want <= 0:
            return
        timeout, duration = self.options.timeout, self.options.duration
        src = self._start()
        interval = duration / want
        taken = seen = 0
        bar = progress(total=want, desc=f"stream {self.name}", unit="frame")
        try:
            t0 = last = time.monotonic()
            next_keep = 0.0
            while taken < want:
                item = src.get(timeout=min(0.25, timeout))
                now = time.monotonic()
                if item is None:
                    if src.exhausted:
                        log.warning("stream %s stopped after %.1f s of %.1f s; keeping %d frames", self.name, now - t0, duration, taken)
                        break
                    if now - last >= timeout:
                        if seen == 0:
                            raise CalibrationError(f"stream {self.name} sent no frame within {timeout:g} s (--timeout)")
                        log.warning("stream %s sent nothing for %.1f s; keeping %d frames", self.name, now - last, taken)
                        break
                    continue
                seen += 1
                last = now
                if now - t0 >= next_keep:
                    self.stats.read += 1
                    taken += 1
                    bar.update(1)
                    yield Candidate(item.frame.image, None, f"{self.name}@{now - t0:.2f}s")
                    next_keep = taken * interval
                if now - t0 >= duration:
                    break
            self.stats.details.update(frames_seen=seen, captured_s=round(time.monotonic() - t0, 2))
        finally:
            bar.close()
            src.stop()
