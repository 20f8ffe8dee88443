"""Annotate a frame with a Result: boxes and labels for detections, the top classes for classification."""

from __future__ import annotations

import numpy as np

from .types import Result

# BGR colours, one per class id (cycled)
PALETTE = ((56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
           (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0))


def color_for(class_id: int) -> tuple[int, int, int]:
    return PALETTE[int(class_id) % len(PALETTE)]


def annotate(image: np.ndarray, result: Result | None, *, fps: float | None = None) -> np.ndarray:
    """A copy of ``image`` (BGR uint8) with the result drawn on it."""
    import cv2

    out = np.ascontiguousarray(image).copy()
    h, w = out.shape[:2]
    thick = max(1, round(min(h, w) / 320))
    font = 0.4 * thick + 0.1
    if result is not None and result.detections is not None:
        for box, score, cid in result.detections:
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            c = color_for(cid)
            cv2.rectangle(out, (x1, y1), (x2, y2), c, thick)
            text = f"{_name(result, cid)} {score:.2f}"
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, 1)
            ty = y1 - 3 if y1 - th - 4 >= 0 else y1 + th + 3
            cv2.rectangle(out, (x1, ty - th - 2), (x1 + tw + 2, ty + 2), c, -1)
            cv2.putText(out, text, (x1 + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, font, (255, 255, 255), 1, cv2.LINE_AA)
    lines = []
    if result is not None and result.classification is not None:
        lines = [f"{label} {score:.2f}" for _, label, score in result.classification.top[:3]]
    if fps is not None:
        lines.append(f"{fps:.1f} fps")
    for i, text in enumerate(lines):
        y = int((i + 1) * (22 * font + 6))
        cv2.putText(out, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, font * 1.2, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, font * 1.2, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _name(result: Result, cid: int) -> str:
    labels = result.detections.labels if result.detections is not None else None
    return labels[cid] if labels is not None and 0 <= cid < len(labels) else str(cid)


def encode_jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return buf.tobytes() if ok else b""
