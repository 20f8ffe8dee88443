"""Real test data: scikit-learn's handwritten digits written as PNG class folders and videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def digits_arrays(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as (N, size, size) uint8 grayscale images (0-255) and (N,) labels."""
    import cv2
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = (d.images / 16.0 * 255.0).clip(0, 255).astype(np.uint8)
    imgs = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR) for im in imgs])
    return imgs, d.target.astype(np.int64)


def digits_bgr(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Digits as (N, size, size, 3) BGR uint8 frames, as a camera would deliver them."""
    imgs, y = digits_arrays(size)
    return np.repeat(imgs[:, :, :, None], 3, axis=3), y


def write_digits_folder(root: Path, per_class: int = 40, size: int = 32, seed: int = 0) -> Path:
    """Write ``per_class`` real digits per class as root/<digit>/<i>.png; returns root."""
    import cv2

    imgs, y = digits_bgr(size)
    rng = np.random.default_rng(seed)
    root = Path(root)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        idx = rng.choice(idx, size=min(per_class, idx.size), replace=False)
        d = root / str(c)
        d.mkdir(parents=True, exist_ok=True)
        for i in idx:
            cv2.imwrite(str(d / f"{i:04d}.png"), imgs[i])
    return root


def write_video(path: Path, frames, fps: float = 30.0, codec: str = "mp4v") -> Path:
    """Write BGR uint8 frames to a video file with cv2.VideoWriter."""
    import cv2

    frames = list(frames)
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (w, h))
    if not vw.isOpened():
        raise RuntimeError(f"cv2.VideoWriter could not open {path}")
    for f in frames:
        vw.write(np.ascontiguousarray(f))
    vw.release()
    return Path(path)


def moving_digit_frames(n: int, size: tuple[int, int] = (240, 320), seed: int = 0, digit_px: int = 64):
    """Frames of a dark belt with real digits sliding left to right (a new digit every ~40 frames)."""
    import cv2

    imgs, y = digits_arrays(digit_px)
    rng = np.random.default_rng(seed)
    h, w = size
    order = rng.permutation(len(imgs))
    frames, labels = [], []
    period = 40
    for t in range(n):
        k = t // period
        frac = (t % period) / period
        img = imgs[order[k % len(order)]]
        frame = np.full((h, w, 3), 20, dtype=np.uint8)
        frame[:, :, 1] += rng.integers(0, 6, size=(h, w), dtype=np.uint8)
        x = int(frac * (w - digit_px))
        y0 = (h - digit_px) // 2
        frame[y0 : y0 + digit_px, x : x + digit_px] = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        frames.append(frame)
        labels.append(int(y[order[k % len(order)]]))
    return frames, labels
