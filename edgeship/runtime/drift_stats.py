"""Per-sample statistics of the drift watch (:mod:`edgeship.runtime.drift`): of a model input (brightness,
contrast, channel means, axis alignment, focus), of a camera frame (its own focus and size), of a model output
(top-1 confidence; detections, their score and box area) and int8 saturation. The same functions make the
profile at convert time (:mod:`edgeship.converters.profile`, :mod:`edgeship.calibration`) and watch the frames
on the device, so the two sides cannot compute a statistic differently.

Pure NumPy: ``import edgeship.runtime`` never imports TensorFlow.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

MAX_SIDE = 48  # statistics are taken on the input subsampled to at most this many pixels a side
FOCUS_SIDE = 96  # ... and focus at full resolution on as many pixels as a crop this many pixels a side
TAN_7_5 = math.tan(math.radians(7.5))  # a gradient within 7.5 degrees of an image axis counts as aligned
INPUT_STATS = ("brightness", "contrast", "focus", "axis_alignment")
DETECT_STATS = ("detections", "detection_score", "box_area")
RETIRED = {"sharpness": "focus replaced it"}  # statistics older profiles hold -> what replaced them


def scale_zero(quant: Any) -> tuple[float, int]:
    """(scale, zero point) of a preprocess.Quantization or of a (scale, zero_point) pair."""
    return (quant.scale, quant.zero_point) if hasattr(quant, "scale") else (quant[0], quant[1])


# ---- per-sample statistics --------------------------------------------------------------------------------
def subsample(x: np.ndarray) -> np.ndarray:
    """An HxWxC (or HxW) image subsampled to at most MAX_SIDE pixels a side (strided: no filtering, it is cheap;
    done before any conversion, on the int8 tensor itself)."""
    h, w = x.shape[:2]
    step = max(1, int(math.ceil(max(h, w) / MAX_SIDE)))
    return x[::step, ::step] if step > 1 else x


def regions(x: np.ndarray, side: int | None = None) -> list[np.ndarray]:
    """Where focus is measured, at the image's own resolution: the whole image when it is at most ``side``
    (FOCUS_SIDE) pixels a side, else a 3x3 grid of patches a third of that size, one in the middle of each cell
    (as many pixels as one side x side crop, spread over the frame: a crop in the middle alone would see mostly
    the static background of many scenes, and whatever crosses it would move the statistic)."""
    side = FOCUS_SIDE if side is None else side
    h, w = x.shape[:2]
    if max(h, w) <= side:
        return [x]
    p = max(5, side // 3)
    out = []
    for j in range(3):
        for i in range(3):
            cy, cx = int(h * (j + 0.5) / 3), int(w * (i + 0.5) / 3)
            top, left = max(0, min(h - p, cy - p // 2)), max(0, min(w - p, cx - p // 2))
            out.append(x[top:top + p, left:left + p])
    return out


def _laplacians(g: np.ndarray) -> tuple[float, float]:
    """Sums of the absolute Laplacian of neighbouring pixels and of pixels two apart over a gray patch."""
    if min(g.shape[:2]) < 5:
        return 0.0, 0.0
    c = 4 * g[2:-2, 2:-2]
    fine = np.abs(g[2:-2, 3:-1] + g[2:-2, 1:-3] + g[3:-1, 2:-2] + g[1:-3, 2:-2] - c).sum()
    coarse = np.abs(g[2:-2, 4:] + g[2:-2, :-4] + g[4:, 2:-2] + g[:-4, 2:-2] - c).sum()
    return float(fine), float(coarse)


def focus(image: np.ndarray) -> float:
    """How much of an image's detail is at the finest scale: the absolute Laplacian of neighbouring pixels over
    that of pixels two apart, summed over :func:`regions` (HxW, or HxWxC with the channels averaged per region).
    Blur (a lens out of focus, a dirty window) removes the finest detail first, so it lowers this ratio;
    brightness, contrast and a dtype's offset and scale cancel out (an int8 tensor gives what its dequantized
    values give), and the scene's content matters far less than for the Laplacian alone. Taken at the image's
    own resolution: subsampling would hide what blur takes away."""
    fine = coarse = 0.0
    for r in regions(np.asarray(image)):
        g = r.mean(axis=2, dtype=np.float32) if r.ndim == 3 else r.astype(np.float32)
        f, c = _laplacians(g)
        fine, coarse = fine + f, coarse + c
    return fine / coarse if coarse > 0 else 0.0


def frame_focus(frame: np.ndarray) -> float:
    """:func:`focus` of a camera frame itself (BGR or gray uint8, its own resolution), before the resize to the
    model's input: a blur of a pixel or two there is a fraction of a pixel in a 96x96 input. Compared only with
    calibration frames of the same size (``DriftProfile.frame_size``). A codec's compression removes fine detail
    too: calibrate from a recording of the stream the camera sends (same codec and bitrate), not a re-encoded
    copy, or a changed bitrate reads as a blur."""
    return focus(frame)


def frame_size(frame: np.ndarray) -> str:
    """"WxH" of a frame (how the calibration records a source frame's size)."""
    h, w = np.asarray(frame).shape[:2]
    return f"{w}x{h}"


def input_stats(sample: np.ndarray, quant: Any = None) -> dict[str, float]:
    """Statistics of one model input (HxWxC or HxW, in the model's input units; an int8 or uint8 tensor with its
    ``quant``, a preprocess.Quantization or a (scale, zero_point) pair, is dequantized first): on a subsampled
    copy, brightness and contrast (mean and spread of the gray level), each channel's mean and axis alignment
    (the share of gradient energy at pixels whose gradient lies within 7.5 degrees of an image axis: a turned
    camera lowers it); at full resolution, :func:`focus` (blur lowers it)."""
    x = np.asarray(sample)
    if x.ndim == 4:
        x = x[0]
    if x.ndim == 3 and x.shape[2] == 1:
        x = x[..., 0]
    out = {"focus": focus(x)}
    x = subsample(x)
    if x.dtype in (np.int8, np.uint8) and quant is not None:
        scale, zero = scale_zero(quant)
        x = (x.astype(np.float32) - zero) * scale
    x = x.astype(np.float32, copy=False)
    gray = x.mean(axis=2) if x.ndim == 3 else x
    out.update(brightness=float(gray.mean()), contrast=float(gray.std()))
    if x.ndim == 3:
        out.update({f"channel{c}": float(m) for c, m in enumerate(x.mean(axis=(0, 1)))})
    ax = np.abs(gray[1:-1, 2:] - gray[1:-1, :-2])
    ay = np.abs(gray[2:, 1:-1] - gray[:-2, 1:-1])
    mag = ax + ay
    total = float(mag.sum())
    aligned = np.minimum(ax, ay) <= TAN_7_5 * np.maximum(ax, ay)
    out["axis_alignment"] = float(mag[aligned].sum()) / total if total > 0 else 0.0
    return out


def output_stats(outputs: Iterable[np.ndarray] | None, *, task: str, detections: Any = None,
                 area_scale: float | None = None, min_score: float | None = None) -> dict[str, float]:
    """Statistics of one frame's model output: top-1 confidence (classify); detections per frame, their mean
    score and mean box area (detect). ``area_scale`` turns a box's area in the detections' pixels into a share
    of the model's input (see :func:`box_area_scale`), so boxes mapped back to a 1280x720 frame on the device
    compare with the calibration's boxes in input pixels (None: no box area). ``min_score``: only detections at
    least this sure count (the profile's decoding threshold, whatever the device's own is). The box area keeps 4
    significant digits: the calibration measures boxes in input pixels, the device maps them to the frame and
    back, and the same boxes (a static scene's) should fall in the same bin, not a rounding error apart (a value on a
    rounding boundary still may not)."""
    if task == "detect" and detections is not None:
        scores = np.asarray(detections.scores, dtype=np.float32).reshape(-1)
        boxes = np.asarray(detections.xyxy, dtype=np.float32).reshape(-1, 4)
        if min_score is not None:
            keep = scores >= min_score
            scores, boxes = scores[keep], boxes[keep]
        if not scores.size:
            return {"detections": 0.0}
        out = {"detections": float(scores.size), "detection_score": float(scores.mean())}
        if area_scale is not None:
            area = float(np.mean((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))) * area_scale
            out["box_area"] = float(f"{area:.4g}")  # see the docstring: the same boxes, the same bin
        return out
    outs = list(outputs or [])
    if task == "classify" and outs:
        p = np.asarray(outs[0], dtype=np.float32).reshape(-1)
        if p.size > 1 and (p.min() < 0 or abs(float(p.sum()) - 1.0) > 0.05):  # logits: softmax them
            e = np.exp(p - p.max())
            p = e / e.sum()
        return {"confidence": float(p.max()) if p.size else 0.0}
    return {}


def box_area_scale(frame_hw: tuple[int, int] | None, spec: Any) -> float | None:
    """What a box area in the pixels of a ``frame_hw`` frame is multiplied by to become a share of the model's
    input (the resize the frame went through, :func:`edgeship.preprocess.resize_transform`); None without a spec
    or a frame size (then no box area is taken: pixels of an unknown frame are not the profile's shares)."""
    if spec is None or frame_hw is None:
        return None
    from ..preprocess import resize_transform

    t = resize_transform(frame_hw, spec)
    return float(t.scale_x * t.scale_y) / float(spec.height * spec.width)


def probability_range(quant: Any) -> bool:
    """Whether a quantized tensor spans exactly [0, 1) in steps of 1/256 (TFLite's fixed range for softmax and
    logistic outputs): its ends are a probability of 0 and 1, reached by the model's answer, never clipped, so
    their share is no saturation to watch (a classifier's confidence already is)."""
    if quant is None:
        return False
    scale, zero = scale_zero(quant)
    dtype = getattr(quant, "dtype", "int8")
    return abs(float(scale) * 256 - 1) < 1e-6 and int(zero) == (-128 if dtype == "int8" else 0)


def saturation(tensor: np.ndarray) -> float:
    """Share of an int8 (or uint8) tensor's values on the ends of its range."""
    t = np.asarray(tensor)
    if t.dtype == np.int8:
        return float(np.count_nonzero((t == -128) | (t == 127)) / max(t.size, 1))
    if t.dtype == np.uint8:
        return float(np.count_nonzero((t == 0) | (t == 255)) / max(t.size, 1))
    return 0.0
