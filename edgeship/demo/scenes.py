"""Demo images and videos, generated (no downloads): shapes in a scene, real digits on a belt.

Shapes: circles, squares and triangles of random colours on a dark, noisy "floor", used to train
the tiny demo detector and to script a security video where shapes cross the frame.
Digits: scikit-learn's real handwritten digits on a textured belt as a triggered line camera
sees them (one frame per part), used by the inspection demo.
Pure numpy + OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

SHAPE_CLASSES = ("circle", "square", "triangle")
SCENE_HW = (240, 320)
BELT_HW = (96, 96)
BELT_FPS = 10.0  # the belt camera's frame rate (one part per frame)


@dataclass(frozen=True)
class Obj:
    """One shape: class index, centre (pixels), half-size (pixels), BGR colour."""

    cls: int
    cx: float
    cy: float
    r: float
    color: tuple[int, int, int]

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.cx - self.r, self.cy - self.r, self.cx + self.r, self.cy + self.r)


_NOISE: dict[tuple[int, int], np.ndarray] = {}


def _noise_bank(h: int, w: int) -> np.ndarray:
    """A fixed (2h, 2w, 3) uint8 tile of sensor noise (mean 12, sigma 4); random crops of it are cheap."""
    if (h, w) not in _NOISE:
        n = np.random.default_rng(1234).normal(12, 4, size=(2 * h, 2 * w, 3))
        _NOISE[(h, w)] = n.clip(0, 24).astype(np.uint8)
    return _NOISE[(h, w)]


def background(rng: np.random.Generator, hw: Sequence[int] = SCENE_HW, level: int | None = None) -> np.ndarray:
    """A dark floor with a soft gradient and sensor noise."""
    import cv2

    h, w = hw
    base = int(rng.integers(5, 50)) if level is None else level - 12
    floor = np.empty((h, w, 3), np.uint8)
    floor[:] = (base + np.linspace(0, 20, w)).astype(np.uint8)[None, :, None]
    y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
    return cv2.add(floor, _noise_bank(h, w)[y0:y0 + h, x0:x0 + w])


def draw_shape(img: np.ndarray, obj: Obj) -> None:
    """Draw one filled shape in place."""
    import cv2

    cx, cy, r = int(round(obj.cx)), int(round(obj.cy)), int(round(obj.r))
    if SHAPE_CLASSES[obj.cls] == "circle":
        cv2.circle(img, (cx, cy), r, obj.color, -1, cv2.LINE_AA)
    elif SHAPE_CLASSES[obj.cls] == "square":
        cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), obj.color, -1)
    else:
        pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], dtype=np.int32)
        cv2.fillPoly(img, [pts], obj.color, cv2.LINE_AA)


def random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    c = rng.integers(90, 256, size=3)
    c[rng.integers(0, 3)] = 255
    return tuple(int(v) for v in c)


def random_scene(rng: np.random.Generator, hw: Sequence[int] = SCENE_HW, max_objects: int = 3,
                 r_range: tuple[float, float] = (14, 30)) -> tuple[np.ndarray, list[Obj]]:
    """One training image with 0..max_objects non-overlapping shapes and their objects."""
    h, w = hw
    img = background(rng, hw)
    objs: list[Obj] = []
    for _ in range(int(rng.integers(0, max_objects + 1))):
        for _try in range(20):
            r = float(rng.uniform(*r_range))
            cx, cy = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
            if all(abs(cx - o.cx) > r + o.r + 4 or abs(cy - o.cy) > r + o.r + 4 for o in objs):
                objs.append(Obj(int(rng.integers(0, len(SHAPE_CLASSES))), cx, cy, r, random_color(rng)))
                break
    for o in objs:
        draw_shape(img, o)
    return img, objs


@dataclass(frozen=True)
class Track:
    """A shape moving in a straight line from ``start`` to ``end`` over frames [t0, t1)."""

    cls: int
    start: tuple[float, float]
    end: tuple[float, float]
    t0: int
    t1: int
    r: float = 22.0
    color: tuple[int, int, int] = (60, 200, 255)

    def at(self, t: int) -> Obj | None:
        if not self.t0 <= t < self.t1:
            return None
        a = (t - self.t0) / max(1, self.t1 - self.t0 - 1)
        return Obj(self.cls, self.start[0] + a * (self.end[0] - self.start[0]),
                   self.start[1] + a * (self.end[1] - self.start[1]), self.r, self.color)


def default_tracks() -> list[Track]:
    """The demo scene: a square walks left to right across the frame, later a circle crosses
    the top edge only; long still stretches between them (what the motion gate skips)."""
    return [
        Track(SHAPE_CLASSES.index("square"), (-10.0, 170.0), (330.0, 170.0), 20, 100, r=24, color=(60, 200, 255)),
        Track(SHAPE_CLASSES.index("circle"), (330.0, 50.0), (-10.0, 50.0), 140, 200, r=22, color=(255, 160, 60)),
    ]


def scene_frames(n: int = 240, tracks: Iterable[Track] | None = None, hw: Sequence[int] = SCENE_HW,
                 seed: int = 0) -> tuple[list[np.ndarray], list[list[Obj]]]:
    """Frames of the scripted scene and, per frame, the objects fully inside it."""
    tracks = list(default_tracks() if tracks is None else tracks)
    rng = np.random.default_rng(seed)
    floor = background(rng, hw, level=30)
    frames, truth = [], []
    for t in range(n):
        img = floor.copy()
        objs = [o for o in (tr.at(t) for tr in tracks) if o is not None]
        for o in objs:
            draw_shape(img, o)
        frames.append(img)
        h, w = hw
        truth.append([o for o in objs if o.cx - o.r >= 0 and o.cy - o.r >= 0 and o.cx + o.r <= w and o.cy + o.r <= h])
    return frames, truth


# ---- digits on a belt ---------------------------------------------------------------------------
def digits_images(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 real 8x8 digits as (N, size, size) uint8 images and (N,) labels."""
    import cv2
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = (d.images / 16.0 * 255.0).clip(0, 255).astype(np.uint8)
    return np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR) for im in imgs]), d.target.astype(np.int64)


def belt_frame(digit: np.ndarray, rng: np.random.Generator, hw: Sequence[int] = BELT_HW,
               shift: int = 0) -> np.ndarray:
    """One line-camera frame: a digit (uint8 gray, bright on dark) on a textured belt, jittered."""
    import cv2

    h, w = hw
    belt = np.full((h, w), 35, np.float32)
    stripes = ((np.arange(w) + shift) % 24 < 2).astype(np.float32) * 18.0
    belt += stripes[None, :] + rng.normal(0, 3, size=(h, w)).astype(np.float32)
    dh, dw = digit.shape
    angle = float(rng.uniform(-8, 8))
    dx, dy = rng.integers(-5, 6, size=2)
    m = cv2.getRotationMatrix2D((dw / 2, dh / 2), angle, 1.0)
    m[:, 2] += [(w - dw) / 2 + dx, (h - dh) / 2 + dy]
    part = cv2.warpAffine(digit.astype(np.float32), m, (w, h))
    gain = float(rng.uniform(0.8, 1.1))
    img = np.maximum(belt, part * gain).clip(0, 255).astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)


def belt_frames(images: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple[list[np.ndarray], list[int]]:
    """One frame per part (a triggered line camera), the belt advancing between parts."""
    rng = np.random.default_rng(seed)
    frames = [belt_frame(img, rng, shift=7 * i) for i, img in enumerate(images)]
    return frames, [int(v) for v in labels]


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: float = 30.0) -> Path:
    """Write BGR frames to an .mp4 (mp4v) atomically."""
    import cv2

    from ..errors import InputError
    from ..fileio import atomic_path

    path = Path(path)
    h, w = frames[0].shape[:2]
    with atomic_path(path, suffix=path.suffix) as tmp:
        vw = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
        if not vw.isOpened():
            raise InputError(f"OpenCV cannot write video {path} (mp4v)")
        for f in frames:
            vw.write(np.ascontiguousarray(f))
        vw.release()
    return path


def recorded(frames: Sequence[np.ndarray], fps: float = BELT_FPS) -> np.ndarray:
    """The frames as a camera that sends :func:`write_video`'s codec delivers them: written to a video and read
    back. Calibrating from these rather than from the frames as drawn keeps the codec's loss of fine detail in
    the calibration profile (the drift watch's ``frame_focus`` would otherwise read the codec as a blur)."""
    import tempfile

    import cv2

    with tempfile.TemporaryDirectory(prefix="edgeship-recorded-") as tmp:
        path = write_video(Path(tmp) / "recorded.mp4", frames, fps=fps)
        cap = cv2.VideoCapture(str(path))
        out = []
        try:
            while (got := cap.read())[0]:
                out.append(got[1])
        finally:
            cap.release()
    if len(out) != len(frames):
        raise RuntimeError(f"the {len(frames)} frames written to a video came back as {len(out)}")
    return np.stack(out)
