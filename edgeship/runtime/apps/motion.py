"""A motion gate: skip inference on still frames, the way Frigate does.

Each frame is shrunk to a small grayscale thumbnail, blurred, and compared with a running-average
background. When fewer than ``min_area`` of the thumbnail's pixels changed by more than
``threshold`` grey levels the frame is still and :meth:`MotionGate.should_infer` returns False
(the pipeline counts it as skipped). Inference keeps running for ``hold_frames`` frames after the
last motion, every ``max_skip`` frames regardless, and while ``keep_alive()`` says objects are
being tracked (so an intruder who stops moving in a zone keeps its dwell).
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np
from pydantic import Field

from ..schema import Strict, config_defaults


class MotionCfg(Strict):
    """The security app's ``motion:`` section (keys = :class:`MotionGate` keywords)."""

    threshold: float = Field(25.0, gt=0, le=255, description="grey-level difference that counts a pixel as moving")
    min_area: float = Field(0.002, ge=0, le=1, description="fraction of the (downscaled) frame that must move before the model runs")
    alpha: float = Field(0.2, gt=0, le=1, description="how fast the background model follows the scene (0..1)")
    width: int = Field(96, ge=16, description="width in pixels the frame is shrunk to before comparing")
    hold_frames: int = Field(5, ge=0, description="frames inferred after motion stops (objects that pause are still seen)")
    max_skip: int = Field(150, ge=1, description="frames skipped in a row at most: then one is inferred anyway")


def thumbnail(image: np.ndarray, width: int = 96) -> np.ndarray:
    """BGR/gray uint8 frame -> small blurred float32 grayscale thumbnail."""
    import cv2

    img = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    h, w = img.shape[:2]
    height = max(1, round(h * width / w))
    small = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(small, (5, 5), 0).astype(np.float32)


def changed_fraction(background: np.ndarray, thumb: np.ndarray, threshold: float) -> float:
    """Fraction of pixels whose absolute difference from the background exceeds ``threshold``."""
    return float(np.mean(np.abs(thumb - background) > threshold))


@config_defaults(MotionCfg)
class MotionGate:
    """Gate object for the pipeline: ``should_infer(frame) -> bool``."""

    def __init__(self, *, threshold: float, min_area: float, alpha: float, width: int, hold_frames: int, max_skip: int,
                 keep_alive: Callable[[], bool] | None = None) -> None:
        self.threshold, self.min_area, self.alpha, self.width = float(threshold), float(min_area), float(alpha), int(width)
        self.hold_frames, self.max_skip = int(hold_frames), int(max_skip)
        self.keep_alive = keep_alive
        self._bg: np.ndarray | None = None
        self._since_motion = 10**9
        self._since_infer = 0
        self._lock = threading.Lock()
        self.frames = 0
        self.motion_frames = 0
        self.skipped = 0
        self.last_fraction = 0.0

    def should_infer(self, frame) -> bool:
        image = getattr(frame, "image", frame)
        thumb = thumbnail(image, self.width)
        with self._lock:
            self.frames += 1
            if self._bg is None or self._bg.shape != thumb.shape:
                self._bg = thumb
                moving = True
                self.last_fraction = 1.0
            else:
                self.last_fraction = changed_fraction(self._bg, thumb, self.threshold)
                moving = self.last_fraction >= self.min_area
                self._bg = (1.0 - self.alpha) * self._bg + self.alpha * thumb
            if moving:
                self.motion_frames += 1
                self._since_motion = 0
            else:
                self._since_motion += 1
            infer = (
                self._since_motion <= self.hold_frames
                or self._since_infer + 1 >= self.max_skip
                or (self.keep_alive is not None and self.keep_alive())
            )
            self._since_infer = 0 if infer else self._since_infer + 1
            if not infer:
                self.skipped += 1
            return infer

    def status(self) -> dict:
        with self._lock:
            return {"frames": self.frames, "motion_frames": self.motion_frames, "skipped": self.skipped,
                    "changed_fraction": round(self.last_fraction, 5)}
