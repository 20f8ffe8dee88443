"""File sinks: JSON lines (stdout or a file) and an annotated video file."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

from ...errors import InputError
from ...fileio import atomic_path, ensure_dir
from ..draw import annotate
from ..types import Frame, Result

log = logging.getLogger(__name__)


class JsonlSink:
    """One JSON object per processed frame (``Result.to_dict()``), on stdout (``-``) or in a file.

    Each line is written and flushed whole, so a reader tailing the file never sees half a line and
    a stopped run loses nothing.
    """

    def __init__(self, target: str = "-", *, include_raw: bool = False) -> None:
        self.target = target or "-"
        self.include_raw = include_raw
        self._fh: TextIO | None = None
        self.lines = 0

    def open(self, info: dict[str, Any]) -> None:
        if self.target == "-":
            self._fh = sys.stdout
        else:
            p = Path(self.target)
            ensure_dir(p.parent, f"cannot write JSON lines to {p}")
            try:
                self._fh = open(p, "w", encoding="utf-8", buffering=1)
            except OSError as e:
                raise InputError(f"cannot write JSON lines to {p}: {e.strerror}") from None
        self.source = info.get("source")

    def write(self, frame: Frame, result: Result) -> None:
        if self._fh is None:
            return
        self._fh.write(json.dumps(result.to_dict(include_raw=self.include_raw), separators=(",", ":")) + "\n")
        self._fh.flush()
        self.lines += 1

    def close(self) -> None:
        if self._fh is not None and self._fh is not sys.stdout:
            self._fh.close()
        elif self._fh is sys.stdout:
            self._fh.flush()
        self._fh = None


class NpzSink:
    """Every output tensor of every frame, in full: ``DIR/frame_00000042.npz`` with ``output_0``,
    ``output_1``... (float32, batch dimension dropped), ``frame`` and ``t_capture``. For landmarks,
    masks and heatmaps, which the JSON lines only summarise. Each file is written atomically."""

    def __init__(self, folder: str) -> None:
        if not folder:
            raise InputError("npz sink needs a folder, e.g. npz:outputs/")
        self.folder = Path(folder)
        self.files = 0

    def open(self, info: dict[str, Any]) -> None:
        ensure_dir(self.folder, "cannot write the npz sink's folder")

    def write(self, frame: Frame, result: Result) -> None:
        import numpy as np

        if result.raw is None:
            return
        arrays = {f"output_{i}": np.asarray(a[0] if np.ndim(a) and np.shape(a)[0] == 1 else a) for i, a in enumerate(result.raw)}
        target = self.folder / f"frame_{result.frame_index:08d}.npz"
        with atomic_path(target, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, frame=np.int64(result.frame_index), t_capture=np.float64(result.t_capture), **arrays)
        self.files += 1

    def close(self) -> None:
        return None


FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


class VideoSink:
    """An annotated video file (boxes, labels, top classes drawn), written atomically on close.

    The codec follows the suffix (:data:`FOURCC`); the frame rate is the source's nominal fps
    (or ``fps``). Frames the gates skipped are written unannotated so the video keeps its timing.
    """

    def __init__(self, path: str, *, fps: float | None = None, annotate_frames: bool = True) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in FOURCC:
            raise InputError(f"video sink {path}: expected a file ending in {', '.join(FOURCC)}, got {self.path.suffix or 'no suffix'!r}")
        self.fps = fps
        self.annotate_frames = annotate_frames
        self._stack = contextlib.ExitStack()
        self._writer = None
        self._tmp: Path | None = None
        self.frames = 0

    def open(self, info: dict[str, Any]) -> None:
        self.fps = self.fps or info.get("fps") or 30.0
        self._tmp = self._stack.enter_context(atomic_path(self.path, suffix=self.path.suffix))

    def _writer_for(self, image) -> Any:
        if self._writer is None:
            import cv2

            h, w = image.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*FOURCC[self.path.suffix.lower()])
            self._writer = cv2.VideoWriter(str(self._tmp), fourcc, float(self.fps), (w, h))
            if not self._writer.isOpened():
                raise InputError(f"cannot write video {self.path}: OpenCV has no encoder for {self.path.suffix}")
            self._size = (w, h)
        return self._writer

    def _put(self, image) -> None:
        import cv2

        wr = self._writer_for(image)
        if (image.shape[1], image.shape[0]) != self._size:
            image = cv2.resize(image, self._size)
        wr.write(image)
        self.frames += 1

    def write(self, frame: Frame, result: Result) -> None:
        self._put(annotate(frame.image, result) if self.annotate_frames else frame.image)

    def skip(self, frame: Frame) -> None:
        self._put(frame.image)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.frames == 0 and self._tmp is not None and not self._tmp.exists():
            log.warning("video sink %s: no frames were written; no file created", self.path)
            self._stack.pop_all()
            return
        self._stack.close()
