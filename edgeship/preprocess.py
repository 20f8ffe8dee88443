"""Preprocessing: a camera frame to the model's input tensor, by the one rule an :class:`InputSpec` states.

Calibration, verify and the device runtime all call :func:`preprocess`, so the int8 model sees on the
device exactly the value range it was calibrated on. The float value fed to the model is
``(pixel * scale - mean) / std`` per channel, after the frame is resized (stretch, letterbox or
center-crop, with the spec's interpolation) and put in the model's colour order. Because a pixel's
value depends only on its byte and its channel, the value stage is a 256-entry look-up table per
channel, and :func:`preprocess` can produce a quantized tensor directly (``quant=``), bit-identical
to quantizing the float sample (:func:`quantize_values`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

from .errors import SpecError
from .spec import InputSpec

@dataclass(frozen=True)
class Transform:
    """Maps model-input pixel coordinates back to source-frame coordinates.

    ``x_src = (x_in - pad_x) / scale_x``, ``y_src = (y_in - pad_y) / scale_y``.
    """

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    src_width: int
    src_height: int

    def to_source(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Map (N, 4) boxes in model-input pixels to source pixels, clipped to the frame."""
        b = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4).copy()
        b[:, [0, 2]] = (b[:, [0, 2]] - self.pad_x) / self.scale_x
        b[:, [1, 3]] = (b[:, [1, 3]] - self.pad_y) / self.scale_y
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, self.src_width)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, self.src_height)
        return b


def resize_transform(src_hw: Sequence[int], spec: InputSpec) -> Transform:
    """The geometric transform :func:`preprocess` applies to a frame of size ``src_hw``."""
    sh, sw = int(src_hw[0]), int(src_hw[1])
    th, tw = spec.height, spec.width
    if spec.resize == "stretch":
        return Transform(tw / sw, th / sh, 0.0, 0.0, sw, sh)
    if spec.resize == "letterbox":
        r = min(tw / sw, th / sh)
        nw, nh = round(sw * r), round(sh * r)
        return Transform(r, r, (tw - nw) // 2, (th - nh) // 2, sw, sh)
    # center-crop: scale so the short side fits, crop the centre
    r = max(tw / sw, th / sh)
    nw, nh = round(sw * r), round(sh * r)
    return Transform(r, r, -((nw - tw) // 2), -((nh - th) // 2), sw, sh)


def _shrink(img: np.ndarray, w: int, h: int, interpolation: str) -> np.ndarray:
    """Resize ``img`` to (w, h) with the spec's interpolation (bilinear when nothing shrinks).

    ``area`` keeps the rule specs were calibrated with before ``interpolation`` existed: INTER_AREA
    as soon as one axis shrinks. ``pyramid`` halves only while both axes are >= 2x the target.

    Bilinear steps use OpenCV's INTER_LINEAR_EXACT: its INTER_LINEAR rounds differently on x86
    (AVX) and ARM (NEON) builds (one grey level on ~20% of pixels, measured on an emulated Pi 5),
    so a device would not see the values the workstation calibrated and verified on. The 2x
    halvings are exact everywhere; INTER_AREA at other ratios (``area``) is not quite (1 level on
    0.04% of pixels).
    """
    import cv2

    sh, sw = img.shape[:2]
    if (sh, sw) == (h, w):
        return img
    if (sh <= h and sw <= w) or interpolation == "linear":
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR_EXACT)
    if interpolation == "area":
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    while sw >= 2 * w and sh >= 2 * h:  # pyramid: exact 2x box-filter halvings (OpenCV's fast integer path)
        img = cv2.resize(img, (sw // 2, sh // 2), interpolation=cv2.INTER_AREA)
        sh, sw = img.shape[:2]
    return img if (sh, sw) == (h, w) else cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR_EXACT)


def _resize(frame: np.ndarray, spec: InputSpec):
    sh, sw = frame.shape[:2]
    th, tw = spec.height, spec.width
    if (sh, sw) == (th, tw):
        return frame
    if spec.resize == "stretch":
        return _shrink(frame, tw, th, spec.interpolation)
    t = resize_transform((sh, sw), spec)
    nw, nh = round(sw * t.scale_x), round(sh * t.scale_y)
    resized = _shrink(frame, nw, nh, spec.interpolation)
    if spec.resize == "letterbox":
        out = np.full((th, tw) + frame.shape[2:], spec.pad_value, dtype=frame.dtype)
        y0, x0 = int(t.pad_y), int(t.pad_x)
        out[y0 : y0 + nh, x0 : x0 + nw] = resized
        return out
    y0, x0 = int(-t.pad_y), int(-t.pad_x)
    return resized[y0 : y0 + th, x0 : x0 + tw]


def _to_channels(frame: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Gray, or contiguous 3-channel BGR: the colour order is swapped after resizing (fewer pixels)."""
    import cv2

    if frame.ndim == 2:
        frame = frame[:, :, None]
    c = frame.shape[2]
    if spec.color_order == "GRAY":
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if c == 3 else (cv2.cvtColor(frame, cv2.COLOR_BGRA2GRAY) if c == 4 else frame[:, :, 0])
    if c == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if c == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(frame)


@dataclass(frozen=True)
class Quantization:
    """A quantized input tensor's parameters: ``q = round(x / scale + zero_point)`` clipped to ``dtype``."""

    scale: float
    zero_point: int
    dtype: str  # "int8" | "uint8" | "int16"


_INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def quantize_values(x: np.ndarray, q: Quantization) -> np.ndarray:
    """Float -> ``q.dtype``: ``rint(x / scale + zero_point)`` clipped (the one quantization formula)."""
    dtype = np.dtype(q.dtype)
    lo, hi = _INT_RANGES.get(dtype.name, (np.iinfo(dtype).min, np.iinfo(dtype).max))
    v = np.rint(np.asarray(x, np.float32) / np.float32(q.scale) + np.float32(q.zero_point or 0))
    return np.clip(v, lo, hi).astype(dtype)


def preprocess(frame_bgr_uint8: np.ndarray, spec: InputSpec, quant: Quantization | None = None) -> np.ndarray:
    """Turn one BGR uint8 frame (H, W[, C]) into one model-input sample of ``spec.sample_shape``.

    Vectorised: cv2 and numpy only. Returns float32 (or uint8 when ``spec.dtype`` is uint8, in
    which case normalisation is left to the model), C-contiguous, no batch dimension. With
    ``quant`` (a float32 spec and a quantized model input) it returns the quantized tensor in
    ``quant.dtype``, identical to ``quantize_values(preprocess(frame, spec), quant)`` at a fraction
    of the cost. Resizing works per channel, so swapping BGR to RGB after the resize gives the same
    pixels as before it, on far fewer of them.
    """
    import cv2

    frame = np.asarray(frame_bgr_uint8)
    if frame.dtype != np.uint8:
        raise SpecError(f"preprocess expects a uint8 frame, got dtype {frame.dtype}")
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (1, 3, 4)):
        raise SpecError(f"preprocess expects an HxW or HxWxC (C=1,3,4) frame, got shape {frame.shape}")
    img = _resize(_to_channels(frame, spec), spec)
    if spec.color_order == "RGB":
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if spec.dtype == "uint8":
        out = np.ascontiguousarray(img)
    else:
        out = apply_value_table(np.ascontiguousarray(img), spec, quant)
    if out.ndim == 2:
        out = out[:, :, None]
    if spec.layout == "NCHW":
        out = np.ascontiguousarray(np.transpose(out, (2, 0, 1)))
    return out


def _affine(spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel multiplier and offset: ``(pixel * scale - mean) / std == pixel * mul + add``."""
    mul = np.asarray([spec.scale / s for s in spec.std], dtype=np.float32)
    add = np.asarray([-m / s for m, s in zip(spec.mean, spec.std)], dtype=np.float32)
    return mul, add


@lru_cache(maxsize=32)
def value_table(spec: InputSpec, quant: Quantization | None = None) -> np.ndarray:
    """The model-input value of every byte in every channel, as a cv2.LUT table (1, 256, C or 1).

    float32 ``byte * mul + add`` (computed in float32, as a per-pixel affine would be), quantized
    with :func:`quantize_values` when ``quant`` is given. One channel when all channels agree.
    """
    mul, add = _affine(spec)
    byte = np.arange(256, dtype=np.uint8)[:, None]
    vals = np.empty((256, spec.channels), dtype=np.float32)
    np.multiply(byte, mul, out=vals, casting="unsafe")
    vals += add
    table = quantize_values(vals, quant) if quant is not None else vals
    if spec.channels > 1 and (table == table[:, :1]).all():
        table = table[:, :1]
    table = np.ascontiguousarray(table[None])
    table.setflags(write=False)
    return table


@lru_cache(maxsize=32)
def value_map(spec: InputSpec, quant: Quantization | None = None) -> tuple[np.ndarray, tuple[int, int, int, np.dtype] | None]:
    """:func:`value_table` and its :func:`byte_shift` form, looked up together (once per frame)."""
    table = value_table(spec, quant)
    return table, _shift_of(table)


def byte_shift(spec: InputSpec, quant: Quantization | None = None) -> tuple[int, int, int, np.dtype] | None:
    """``(low, high, offset, dtype)`` when the value table is ``clip(byte, low, high) + offset`` in an
    8-bit ``dtype`` (one table for every channel), else None.

    That is what the common int8 inputs come to (pixels / 255 quantized with scale 1/255 and zero
    point -128 or 0): one clip and one wrapping uint8 add, bit-identical to the look-up table at a
    fraction of its cost.
    """
    return value_map(spec, quant)[1]


def _shift_of(table: np.ndarray) -> tuple[int, int, int, np.dtype] | None:
    if table.shape[2] != 1 or table.dtype not in (np.dtype(np.int8), np.dtype(np.uint8)):
        return None
    t = table.reshape(256).astype(np.int16)
    offset = int(t[128]) - 128
    low, high = int(t[0]) - offset, int(t[255]) - offset
    if not (0 <= low <= high <= 255) or not np.array_equal(t, np.clip(np.arange(256), low, high) + offset):
        return None
    return low, high, offset, table.dtype


def apply_value_table(img: np.ndarray, spec: InputSpec, quant: Quantization | None = None) -> np.ndarray:
    """Map every byte of a contiguous uint8 image through :func:`value_table` (a clip and an add when
    :func:`byte_shift` applies, else cv2.LUT)."""
    import cv2

    table, shift = value_map(spec, quant)
    if shift is None:
        return cv2.LUT(img, table)
    low, high, offset, dtype = shift
    out = np.minimum(img, np.uint8(high)) if high < 255 else img.copy()
    if low > 0:
        np.maximum(out, np.uint8(low), out=out)
    if offset:
        out += np.uint8(offset % 256)  # wraps modulo 256: the int8 view then reads byte + offset
    return out.view(dtype)


def preprocess_batch(frames: Sequence[np.ndarray], spec: InputSpec) -> np.ndarray:
    """Preprocess several frames into one (N, ...) batch."""
    if len(frames) == 0:
        return np.zeros((0,) + spec.sample_shape, dtype=np.float32 if spec.dtype == "float32" else np.uint8)
    return np.stack([preprocess(f, spec) for f in frames])
