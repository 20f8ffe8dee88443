"""JPEG snapshots on disk with a size quota: the oldest files are deleted first.

Used for security event snapshots and for the failed frames an inspection keeps for review.
Each file is written atomically; a device whose SD card fills up stops working, so the quota is
enforced after every write.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
from pydantic import Field

from ...fileio import atomic_write_bytes
from ..schema import OutPath, Strict, config_defaults


class SnapshotCfg(Strict):
    """A folder of saved frames (security snapshots, industrial rejects) kept under a quota."""

    dir: OutPath = Field(description="folder of the JPEG files (a relative path in a release: under DEVICE_ROOT/data)")
    quota_mb: float = Field(200.0, gt=0, le=1_000_000, description="at most a terabyte")

log = logging.getLogger(__name__)


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """BGR uint8 image -> JPEG bytes."""
    import cv2

    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - cv2 encodes any uint8 image
        raise ValueError(f"cv2 could not encode an image of shape {image.shape} as JPEG")
    return buf.tobytes()


def draw_box(image: np.ndarray, box: Sequence[float], text: str, color=(0, 0, 255)) -> np.ndarray:
    """A copy of ``image`` with one labelled box drawn on it."""
    import cv2

    out = image.copy()
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    cv2.rectangle(out, (x1, y1), (x2, y2), color, 2)
    cv2.putText(out, text, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)
    return out


def draw_polygon(image: np.ndarray, polygon: np.ndarray, name: str, color=(0, 200, 255)) -> None:
    """Draw a zone outline and its name on ``image`` in place."""
    import cv2

    pts = np.round(polygon).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(image, [pts], True, color, 1, cv2.LINE_AA)
    x, y = pts[0, 0]
    cv2.putText(image, name, (int(x) + 3, int(y) + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)


@config_defaults(SnapshotCfg)
class SnapshotStore:
    """A folder of JPEG files kept under ``quota_mb`` megabytes."""

    def __init__(self, folder: str | os.PathLike, *, quota_mb: float, quality: int = 85) -> None:
        self.folder = Path(folder)
        self.quota_bytes = int(float(quota_mb) * 1024 * 1024)
        self.quality = int(quality)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.saved = 0
        self.rotated = 0

    def save(self, name: str, image: np.ndarray | None = None, *, jpeg: bytes | None = None) -> Path:
        """Write ``name`` (a file name ending in .jpg) from an image or ready JPEG bytes; rotate."""
        data = jpeg if jpeg is not None else encode_jpeg(image, self.quality)
        path = self.folder / name
        with self._lock:
            atomic_write_bytes(path, data)
            self.saved += 1
            self._enforce_quota(keep=path)
        return path

    def files(self) -> list[Path]:
        """JPEG files, oldest first (by modification time, then name)."""
        items = [p for p in self.folder.glob("*.jpg") if p.is_file()]
        return sorted(items, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def usage_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("*.jpg") if p.is_file())

    def _enforce_quota(self, keep: Path) -> None:
        files = self.files()
        total = sum(p.stat().st_size for p in files)
        for p in files:
            if total <= self.quota_bytes:
                break
            if p == keep:
                continue
            size = p.stat().st_size
            try:
                p.unlink()
            except FileNotFoundError:
                continue
            total -= size
            self.rotated += 1
            log.debug("snapshot quota: removed %s", p)
