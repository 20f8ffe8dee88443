"""Near-duplicate detection and per-frame image statistics.

A static factory camera gives hundreds of copies of the same frame; calibrating on them wastes
the sample budget. Each frame is reduced to a 16x16 grayscale thumbnail (each cell the mean of
many pixels, so sensor noise and compression artefacts average out). A frame is dropped when no
thumbnail cell differs by more than a threshold (gray levels 0-255) from an already-kept
thumbnail of the same class. The largest cell difference is used rather than the mean: a small
part moving on a static belt changes a few cells a lot and the mean hardly at all, while a
static scene with flicker changes every cell a little. The comparison against all kept
thumbnails is one numpy expression.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..spec import InputSpec

THUMB_SIZE = 16
STATS_SIZE = 64
DEFAULT_THRESHOLD = 12.0


@dataclass(frozen=True)
class FrameFeatures:
    """What dedup and the summary need from one frame."""

    thumb: np.ndarray  # (THUMB_SIZE * THUMB_SIZE,) float32 gray levels
    brightness: float  # mean gray level, 0-255
    contrast: float  # standard deviation of gray levels (RMS contrast), 0-255
    size: str  # "WxH" of the source frame, or "sample" for preprocessed input
    focus: float = 0.0  # the frame's own focus (edgeship.runtime.drift.frame_focus): the drift watch's reference


def _gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    if frame.ndim == 3 and frame.shape[2] == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    return frame.reshape(frame.shape[0], frame.shape[1])


def frame_features(frame: np.ndarray, size: str | None = None) -> FrameFeatures:
    """Thumbnail, brightness, contrast and focus of one BGR/gray uint8 frame."""
    import cv2

    from ..runtime.drift_stats import frame_focus

    gray = _gray(frame)
    small = cv2.resize(gray, (STATS_SIZE, STATS_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    thumb = cv2.resize(small, (THUMB_SIZE, THUMB_SIZE), interpolation=cv2.INTER_AREA)
    h, w = frame.shape[:2]
    return FrameFeatures(thumb.reshape(-1), float(small.mean()), float(small.std()), size or f"{w}x{h}",
                         frame_focus(frame))


def sample_to_frame(sample: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Undo the InputSpec's normalisation of a float sample: an (H, W, C) uint8 image for statistics."""
    x = np.asarray(sample, dtype=np.float32)
    if spec.layout == "NCHW":
        x = np.transpose(x, (1, 2, 0))
    if spec.dtype == "float32":
        std = np.asarray(spec.std, dtype=np.float32)
        mean = np.asarray(spec.mean, dtype=np.float32)
        x = (x * std + mean) / spec.scale
    img = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if img.shape[2] == 3 and spec.color_order == "RGB":
        img = img[:, :, ::-1]
    return np.ascontiguousarray(img)


class Deduper:
    """Keeps thumbnails of kept frames per key (class) and rejects near-identical new ones."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, enabled: bool = True):
        if threshold < 0:
            raise InputError(f"dedup threshold must be >= 0 gray levels, got {threshold}")
        self.threshold = float(threshold)
        self.enabled = enabled
        self._bank: dict[object, np.ndarray] = {}
        self._n: dict[object, int] = {}

    def distance(self, thumb: np.ndarray, key: object = None) -> float:
        """Smallest largest-cell difference to a kept thumbnail of the same key (inf when none)."""
        n = self._n.get(key, 0)
        if n == 0:
            return float("inf")
        return float(np.abs(self._bank[key][:n] - thumb).max(axis=1).min())

    def offer(self, thumb: np.ndarray, key: object = None) -> bool:
        """Keep ``thumb`` unless it duplicates a kept one; return True when kept."""
        if self.enabled and self.distance(thumb, key) <= self.threshold:
            return False
        n = self._n.get(key, 0)
        bank = self._bank.get(key)
        if bank is None or n == len(bank):
            grown = np.empty((max(64, 2 * n), thumb.size), dtype=np.float32)
            if bank is not None:
                grown[:n] = bank[:n]
            self._bank[key] = bank = grown
        bank[n] = thumb
        self._n[key] = n + 1
        return True
