"""Frame readers: video files, image folders, cameras, FFmpeg streams (RTSP...), GStreamer pipelines.

A reader opens, returns BGR uint8 frames one at a time (None at the end or on failure) and closes;
:class:`~edgeship.runtime.sources.capture.LatestFrameSource` runs it in a thread. ``live`` readers
(cameras, streams) are reconnected when they fail; files end (or loop).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ...errors import SourceError

log = logging.getLogger(__name__)

# every still-image suffix OpenCV's imread decodes (folders of images, for calibration and the runtime)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm",
                  ".pnm", ".jp2", ".ras", ".sr")

# GStreamer pipeline templates for board cameras (need an OpenCV built with GStreamer, as on JetPack
# and Raspberry Pi OS's python3-opencv; the PyPI wheels are built without it).
GST_TEMPLATES = {
    "jetson-csi": (
        "nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM),width={width},height={height},"
        "framerate={fps}/1 ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
        "appsink drop=true max-buffers=1 sync=false"
    ),
    "pi-libcamera": (
        "libcamerasrc ! video/x-raw,width={width},height={height},framerate={fps}/1 ! videoconvert ! "
        "video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false"
    ),
}


def gst_pipeline(template: str, *, width: int = 1280, height: int = 720, fps: int = 30, sensor: int = 0) -> str:
    """Expand a named board-camera template (``jetson-csi``, ``pi-libcamera``) into a GStreamer pipeline."""
    if template not in GST_TEMPLATES:
        raise SourceError(f"unknown GStreamer template {template!r}; expected one of {', '.join(GST_TEMPLATES)}")
    return GST_TEMPLATES[template].format(width=width, height=height, fps=fps, sensor=sensor)


def _cv2():
    import cv2

    return cv2


def _as_bgr(img: np.ndarray) -> np.ndarray:
    cv2 = _cv2()
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


class CaptureReader:
    """Base for readers backed by ``cv2.VideoCapture``; ``decode_threads``: FFmpeg's decoding threads (None: its own
    choice, about one per CPU)."""

    live = False

    def __init__(self, target: Any, name: str | None = None, *, decode_threads: int | None = None) -> None:
        self.target = target
        self.name = name or str(target)
        self.cap = None
        self.fps: float | None = None
        self.decode_threads = decode_threads

    def _thread_params(self) -> list[int]:
        """``[CAP_PROP_N_THREADS, n]`` when threads were asked for and this OpenCV knows the property (Debian's
        4.6 does not: FFmpeg's own choice then)."""
        prop = getattr(_cv2(), "CAP_PROP_N_THREADS", None)
        return [] if self.decode_threads is None or prop is None else [prop, int(self.decode_threads)]

    def _capture(self, timeout: float):  # pragma: no cover - abstract
        raise NotImplementedError

    def open(self, timeout: float = 10.0) -> None:
        self.close()
        cap = self._capture(timeout)
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            raise SourceError(f"cannot open {self.name}")
        self.cap = cap
        fps = float(cap.get(_cv2().CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.5 < fps < 1000 else None

    def read(self) -> np.ndarray | None:
        if self.cap is None:
            return None
        ok, img = self.cap.read()
        return _as_bgr(img) if ok and img is not None else None

    def rewind(self) -> bool:
        if self.cap is not None and self.cap.set(_cv2().CAP_PROP_POS_FRAMES, 0):
            return True
        try:
            self.open()
        except SourceError:
            return False
        return True

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class VideoFileReader(CaptureReader):
    """A video file read with OpenCV (FFmpeg); ``fps`` is the file's frame rate."""

    def _capture(self, timeout: float):
        p = Path(self.target)
        if not p.is_file():
            raise SourceError(f"video file {p} does not exist")
        cv2 = _cv2()
        cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG, self._thread_params())
        if cap.isOpened():
            ok, first = cap.read()
            if not ok:
                cap.release()
                raise SourceError(f"{p} is not a readable video: expected a file OpenCV/FFmpeg can decode, got no frames")
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        return cap


class CameraReader(CaptureReader):
    """A local camera by index or ``/dev/videoN`` (V4L2 on Linux), with a one-frame driver buffer."""

    live = True

    def __init__(self, target: Any, name: str | None = None, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None) -> None:
        super().__init__(target, name or (f"camera:{target}" if isinstance(target, int) else str(target)))
        self.want = {"width": width, "height": height, "fps": fps}

    def _capture(self, timeout: float):
        cv2 = _cv2()
        target = self.target
        if isinstance(target, str) and not Path(target).exists():
            raise SourceError(f"camera {target} does not exist")
        api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        cap = cv2.VideoCapture(target, api)
        if cap.isOpened():
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            for key, prop in (("width", cv2.CAP_PROP_FRAME_WIDTH), ("height", cv2.CAP_PROP_FRAME_HEIGHT), ("fps", cv2.CAP_PROP_FPS)):
                if self.want[key]:
                    cap.set(prop, float(self.want[key]))
        return cap


class StreamReader(CaptureReader):
    """A network stream through OpenCV's FFmpeg (RTSP, RTMP, HLS, HTTP video...), with open/read timeouts.

    RTSP defaults to TCP transport (set ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` yourself to override). The
    transport is passed to FFmpeg for the open call only: the process environment is left as it was.
    """

    live = True

    def __init__(self, target: str, name: str | None = None, *, rtsp_transport: str = "tcp",
                 read_timeout: float = 5.0, decode_threads: int | None = None) -> None:
        super().__init__(target, name or _redact(target), decode_threads=decode_threads)
        self.rtsp_transport = rtsp_transport
        self.read_timeout = read_timeout

    def _capture(self, timeout: float):
        cv2 = _cv2()
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(timeout * 1000), cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                  int(self.read_timeout * 1000), *self._thread_params()]
        options = f"rtsp_transport;{self.rtsp_transport}" if str(self.target).startswith(("rtsp://", "rtsps://")) else None
        with _ffmpeg_options(options):
            return cv2.VideoCapture(str(self.target), cv2.CAP_FFMPEG, params)


_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def _ffmpeg_options(options: str | None) -> Iterator[None]:
    """OpenCV reads FFmpeg's capture options from the environment when a capture opens: set them for
    that call only (unless the user set their own), under a lock so two readers opening at once do not mix."""
    if options is None:
        yield
        return
    with _ENV_LOCK:
        if "OPENCV_FFMPEG_CAPTURE_OPTIONS" in os.environ:  # the user's own (checked under the lock: not ours)
            yield
            return
        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = options
        try:
            yield
        finally:
            os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)


class GStreamerReader(CaptureReader):
    """A GStreamer pipeline ending in ``appsink`` (Jetson CSI, Raspberry Pi libcamera: see :data:`GST_TEMPLATES`)."""

    live = True

    def __init__(self, target: str, name: str | None = None) -> None:
        text = target[4:] if target.startswith("gst:") else target
        if text in GST_TEMPLATES:
            text = gst_pipeline(text)
        super().__init__(text, name or f"gst:{text.split('!')[0].strip()}")

    def _capture(self, timeout: float):
        cv2 = _cv2()
        if not gstreamer_available():
            raise SourceError(
                f"{self.name}: the cv2 imported from {getattr(cv2, '__file__', '?')} (OpenCV {cv2.__version__}, "
                f"Python {sys.executable}) was built without GStreamer (pip's opencv-python wheels are); use the "
                "system OpenCV (apt install python3-opencv, JetPack's): on a device flash a bundle made with "
                "`edgeship bundle --system-opencv`, or use a camera index / URL instead")
        return cv2.VideoCapture(self.target, cv2.CAP_GSTREAMER)


def gstreamer_available() -> bool:
    """Whether the installed OpenCV can open GStreamer pipelines."""
    info = _cv2().getBuildInformation()
    return any("GStreamer" in ln and "YES" in ln for ln in info.splitlines())


class ImageFolderReader:
    """Every image in a folder (sorted by name; sub-folders too), or a single image file."""

    live = False

    def __init__(self, target: str | os.PathLike, name: str | None = None, *, fps: float | None = None) -> None:
        self.root = Path(target)
        self.name = name or str(target)
        self.fps = fps
        self.files: list[Path] = []
        self._i = 0
        self._first: np.ndarray | None = None

    def open(self, timeout: float = 10.0) -> None:
        if self.root.is_file():
            self.files = [self.root]
        elif self.root.is_dir():
            self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        else:
            raise SourceError(f"image folder {self.root} does not exist")
        if not self.files:
            raise SourceError(f"image folder {self.root} has no images: expected files ending in {', '.join(IMAGE_SUFFIXES)}")
        self._i = 0
        self._first = self._first_readable()

    def _first_readable(self) -> np.ndarray:
        """The first image that decodes (the first frame served): a folder of broken or empty files is an
        error here, not a run of 0 frames."""
        img = self._next_readable()
        if img is None:
            raise SourceError(f"image folder {self.root} has no readable image: all {len(self.files)} image file(s) "
                              "failed to decode (empty or damaged files?)")
        return img

    def _next_readable(self) -> np.ndarray | None:
        cv2 = _cv2()
        while self._i < len(self.files):
            path = self.files[self._i]
            self._i += 1
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is not None:
                return img
            log.warning("skipping unreadable image %s", path)
        return None

    def read(self) -> np.ndarray | None:
        if self._first is not None:
            img, self._first = self._first, None
            return img
        return self._next_readable()

    def rewind(self) -> bool:
        self._i, self._first = 0, None
        return bool(self.files)

    def close(self) -> None:
        return None


def _redact(url: str) -> str:
    """Hide a password in ``scheme://user:pass@host`` so it never reaches logs or summaries."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
