"""Video sources, picked from the source text through a registry.

    0, /dev/video0                      local camera (V4L2)
    rtsp://user:pass@host/stream        RTSP (and rtmp://, udp://, ...) through FFmpeg
    http://host:8080/stream.mjpg        MJPEG over HTTP, or a JPEG snapshot URL
    gst:jetson-csi, gst:pi-libcamera    board cameras (GStreamer templates); gst:<pipeline ... ! appsink>
    ./images/                           every image in a folder (or one image file)
    clip.mp4                            a video file (every frame, or --realtime to simulate a camera)

    with open_source("clip.mp4", realtime=True) as src:
        item = src.get()          # Captured(frame=Frame(...), sample=None)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...errors import SourceError
from .capture import Captured, LatestFrameSource
from .mjpeg import MjpegReader
from .readers import (GST_TEMPLATES, IMAGE_SUFFIXES, CameraReader, GStreamerReader, ImageFolderReader, StreamReader,
                      VideoFileReader, gst_pipeline, gstreamer_available)

__all__ = ["open_source", "make_reader", "source_kind", "parse_source", "LIVE_KINDS", "READERS", "LatestFrameSource", "Captured", "GST_TEMPLATES",
           "gst_pipeline", "gstreamer_available"]

# registry: source kind -> reader class
READERS: dict[str, type] = {
    "camera": CameraReader,
    "stream": StreamReader,
    "mjpeg": MjpegReader,
    "gstreamer": GStreamerReader,
    "folder": ImageFolderReader,
    "video": VideoFileReader,
}

_STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "rtmps://", "udp://", "tcp://", "srt://")
_RULES: list[tuple[Callable[[str], bool], str]] = [
    (lambda s: bool(re.fullmatch(r"\d+", s)) or s.startswith("/dev/video"), "camera"),
    (lambda s: s.lower().startswith(_STREAM_SCHEMES), "stream"),
    (lambda s: s.lower().startswith(("http://", "https://")), "mjpeg"),
    (lambda s: s.startswith("gst:") or " ! " in s, "gstreamer"),
    (lambda s: Path(s).is_dir() or Path(s).suffix.lower() in IMAGE_SUFFIXES, "folder"),
    (lambda s: True, "video"),
]
# kinds that are cameras or streams (reconnected, newest frame only) rather than files
LIVE_KINDS = frozenset(k for k, cls in READERS.items() if getattr(cls, "live", False))
# "KIND:target" names the kind outright (video:cam1.bin, folder:shots, stream:udp://...); gst: is GStreamer's own
_EXPLICIT = re.compile(r"^(camera|stream|mjpeg|folder|video):(?!//)(.+)$")


def parse_source(source: str | int) -> tuple[str, str]:
    """``(kind, target)`` for a source text: the one resolver calibration and the runtime share."""
    text = str(source).strip()
    if not text:
        raise SourceError("source is empty; expected a camera index, URL, folder or video file")
    m = _EXPLICIT.match(text)
    if m:
        return m.group(1), m.group(2)
    return next(kind for test, kind in _RULES if test(text)), text


def source_kind(source: str | int) -> str:
    """Which reader handles ``source`` (a key of :data:`READERS`)."""
    return parse_source(source)[0]


def make_reader(source: str | int, **options: Any):
    """The reader for ``source``; ``options`` that the reader does not take are ignored."""
    kind, text = parse_source(source)
    if kind == "camera":
        target: Any = int(text) if text.isdigit() else text
        return CameraReader(target, width=options.get("width"), height=options.get("height"), fps=options.get("fps"))
    if kind == "folder":
        return ImageFolderReader(text, fps=options.get("fps"))
    if kind == "stream":
        return READERS[kind](text, read_timeout=options.get("read_timeout", 5.0), decode_threads=options.get("decode_threads"))
    if kind == "mjpeg":
        return READERS[kind](text, read_timeout=options.get("read_timeout", 5.0))
    if kind == "video":
        return READERS[kind](text, decode_threads=options.get("decode_threads"))
    return READERS[kind](text)


def open_source(
    source: str | int,
    *,
    realtime: bool = False,
    loop: bool = False,
    open_timeout: float = 10.0,
    reconnect_timeout: float | None = None,
    prepare: Callable[[np.ndarray], np.ndarray] | None = None,
    mode: str | None = None,
    read_ahead: int | None = None,
    max_fps: float | None = None,
    **reader_options: Any,
) -> LatestFrameSource:
    """A (not yet started) :class:`LatestFrameSource` for ``source``; use it as a context manager or call ``start()``.

    Files and folders deliver every frame unless ``realtime`` (then they are paced at their fps and
    frames the consumer cannot keep up with are dropped, as with a camera). Live sources always
    keep only the newest frame. ``read_ahead``: frames decoded ahead of the consumer when every
    frame is delivered (default :data:`~edgeship.runtime.sources.capture.READ_AHEAD`). ``max_fps`` caps a
    live (or real-time) source's frame rate. ``reader_options``: ``decode_threads`` (video files and
    streams), ``read_timeout`` (streams), ``width``/``height``/``fps`` (cameras), ``fps`` (folders).
    """
    reader = make_reader(source, **reader_options)
    return LatestFrameSource(reader, mode=mode, realtime=realtime, loop=loop, open_timeout=open_timeout,
                             reconnect_timeout=reconnect_timeout, prepare=prepare, read_ahead=read_ahead, max_fps=max_fps)
