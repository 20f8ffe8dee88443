"""Anchor-based SSD heads (MediaPipe / BlazeFace style): raw box regressors + scores per anchor.

A model such as MediaPipe's face detection outputs ``regressors (1, A, 4+2k)`` (box centre offset,
size, then k keypoints) and ``classificators (1, A, 1)`` (a logit per anchor) for ``A`` anchors laid
on feature-map grids. Decoding needs the anchor layout, described by an :class:`AnchorSpec` (the
fields of MediaPipe's ``SsdAnchorsCalculatorOptions`` with ``fixed_anchor_size``), given by name
(:data:`PRESETS`) or in full in a deployment config. Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from ...errors import SpecError
from ...preprocess import Transform
from ..types import Detections
from .detect import nms


@dataclass(frozen=True)
class AnchorSpec:
    """Where the anchors sit: input size, one stride per feature layer, anchors per cell per layer.

    Consecutive layers with the same stride share a grid (their anchors are interleaved per cell, as
    MediaPipe generates them). ``scale`` divides the raw regressors (MediaPipe: the input size).
    """

    input_hw: tuple[int, int]
    strides: tuple[int, ...]
    per_layer: int = 2  # aspect ratio 1 plus the interpolated scale, with fixed_anchor_size
    offset: float = 0.5
    scale: tuple[float, float] | None = None  # (x, y) regressor scale; default: input width, height
    score_clip: float = 100.0
    iou: float = 0.3  # NMS IoU when none is given (MediaPipe's min_suppression_threshold)

    def __post_init__(self) -> None:
        if not self.strides or any(int(s) <= 0 for s in self.strides) or self.per_layer < 1:
            raise SpecError(f"anchor spec needs positive strides and anchors per cell, got {self.strides}, {self.per_layer}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AnchorSpec":
        return cls(input_hw=tuple(int(v) for v in d["input_hw"]), strides=tuple(int(s) for s in d["strides"]),
                   per_layer=int(d.get("per_layer", 2)), offset=float(d.get("offset", 0.5)),
                   scale=tuple(float(v) for v in d["scale"]) if d.get("scale") else None)


# MediaPipe's face detectors (face_detection_short_range.tflite: 128x128, 896 anchors)
PRESETS: dict[str, AnchorSpec] = {
    "blazeface-short": AnchorSpec((128, 128), (8, 16, 16, 16)),
    "blazeface-full": AnchorSpec((192, 192), (4,), per_layer=1),
}


def anchor_spec(value: Any) -> AnchorSpec:
    """An AnchorSpec from a preset name, a dict, or itself."""
    if isinstance(value, AnchorSpec):
        return value
    if isinstance(value, dict):
        return AnchorSpec.from_dict(value)
    if str(value) in PRESETS:
        return PRESETS[str(value)]
    raise SpecError(f"unknown anchor layout {value!r}; expected one of {', '.join(PRESETS)} or "
                    "{input_hw, strides, per_layer, offset, scale}")


@lru_cache(maxsize=16)
def anchor_centres(spec: AnchorSpec) -> np.ndarray:
    """(A, 2) anchor centres (x, y) normalised to 0..1, in the order the model's outputs list them."""
    h, w = spec.input_hw
    out = []
    i = 0
    while i < len(spec.strides):
        stride, layers = spec.strides[i], 1
        while i + layers < len(spec.strides) and spec.strides[i + layers] == stride:
            layers += 1
        gh, gw = -(-h // stride), -(-w // stride)
        ys, xs = np.meshgrid((np.arange(gh) + spec.offset) / gh, (np.arange(gw) + spec.offset) / gw, indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(cells, layers * spec.per_layer, axis=0))
        i += layers
    return np.concatenate(out).astype(np.float32)


def check_layout(spec: AnchorSpec, shapes: Sequence[Sequence[int]]) -> None:
    """The outputs must be regressors + scores with as many anchors as the layout places."""
    dims = [tuple(int(d) for d in s) for s in shapes]
    if len(dims) != 2 or any(len(d) not in (2, 3) for d in dims) or dims[0][-2] != dims[1][-2]:
        raise SpecError(f"anchor decoding needs two outputs (1, A, 4+) and (1, A, C), got {dims}")
    if max(dims[0][-1], dims[1][-1]) < 4:
        raise SpecError(f"anchor regressors need at least 4 values per anchor, got {dims}")
    n = anchor_centres(spec).shape[0]
    if dims[0][-2] != n:
        raise SpecError(f"the anchor layout gives {n} anchors, the model's outputs {dims}: check the anchors preset or config")


def split_anchor_outputs(outputs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(regressors (A, >=4), logits (A, C)) from the two outputs, whichever order the file lists them in."""
    arrs = [np.asarray(o).reshape(np.asarray(o).shape[-2:]) for o in outputs]
    reg, cls = sorted(arrs, key=lambda a: -a.shape[1])
    return reg, cls


def decode_anchors(outputs: Sequence[np.ndarray], spec: AnchorSpec, *, transform: Transform, threshold: float = 0.5,
                   iou_threshold: float | None = None, labels: Sequence[str] | None = None, max_det: int = 100) -> Detections:
    """Regressors + logits per anchor -> Detections in source-frame pixels (sigmoid scores, NMS per class).

    The outputs' shapes are checked once, with :func:`check_layout`, when the post-processing is built."""
    reg, logits = split_anchor_outputs(outputs)
    centres = anchor_centres(spec)
    h, w = spec.input_hw
    sx, sy = spec.scale or (float(w), float(h))
    cx = reg[:, 0] / sx + centres[:, 0]
    cy = reg[:, 1] / sy + centres[:, 1]
    bw, bh = reg[:, 2] / sx, reg[:, 3] / sy
    scores_all = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -spec.score_clip, spec.score_clip)))
    cls = scores_all.argmax(axis=1)
    scores = scores_all[np.arange(len(cls)), cls]
    keep = scores >= threshold
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)[keep] * np.asarray([w, h, w, h], np.float32)
    scores, cls = scores[keep].astype(np.float32), cls[keep].astype(np.int64)
    order = nms(boxes, scores, spec.iou if iou_threshold is None else iou_threshold, class_ids=cls, max_det=max_det)
    return Detections(transform.to_source(boxes[order]), scores[order], cls[order], labels)
