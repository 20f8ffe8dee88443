"""Anchor-based SSD heads: raw box regressions + class scores per anchor, decoded with the anchor layout.

Two families, one layout class each with the same methods (``count``, ``split``, ``boxes``, ``scores``;
registry: :data:`LAYOUTS`, keyed by a config's ``type``):

- ``mediapipe`` (:class:`AnchorSpec`): MediaPipe / BlazeFace heads, e.g. face detection's
  ``regressors (1, A, 4+2k)`` (box centre offset and size in input pixels, then k keypoints) and
  ``classificators (1, A, 1)`` (a logit per anchor); the fields of MediaPipe's
  ``SsdAnchorsCalculatorOptions`` with ``fixed_anchor_size``.
- ``tf-od`` (:class:`GridAnchorSpec`): TensorFlow Object Detection API SSD heads exported without
  their post-processing op (``export_tflite_ssd_graph``'s ``raw_outputs/box_encodings (1, A, 4)``
  and ``raw_outputs/class_predictions (1, A, 1 + C)``, class 0 = background): multiple-grid anchors
  (``ssd_anchor_generator``: min/max scale, aspect ratios, feature-map sizes) and the Faster R-CNN
  box coder (``[ty, tx, th, tw]`` with scale factors 10, 10, 5, 5).

A layout is given by name (:data:`PRESETS`) or in full in a deployment config. Pure numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from ...errors import SpecError
from ...preprocess import Transform
from ..types import Detections
from .detect import nms

ANCHOR_THRESHOLD = 0.5  # an anchor head's minimum score (face detectors score lower than YOLO heads)


def _sigmoid(x: np.ndarray, clip: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x.astype(np.float64), -clip, clip)))


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
        _known(d, ("type", "input_hw", "strides", "per_layer", "offset", "scale"), "mediapipe")
        return cls(input_hw=tuple(int(v) for v in d["input_hw"]), strides=tuple(int(s) for s in d["strides"]),
                   per_layer=int(d.get("per_layer", 2)), offset=float(d.get("offset", 0.5)),
                   scale=tuple(float(v) for v in d["scale"]) if d.get("scale") else None)

    def count(self) -> int:
        return anchor_centres(self).shape[0]

    def split(self, outputs: Sequence[np.ndarray], names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(regressors (A, >=4), logits (A, C)): the wider output holds the regressors (box + keypoints)."""
        arrs = [np.asarray(o).reshape(np.asarray(o).shape[-2:]) for o in outputs]
        reg, cls = sorted(arrs, key=lambda a: -a.shape[1])
        return reg, cls

    def boxes(self, reg: np.ndarray) -> np.ndarray:
        """(A, 4) boxes x1, y1, x2, y2 normalised to the model input."""
        centres = anchor_centres(self)
        h, w = self.input_hw
        sx, sy = self.scale or (float(w), float(h))
        cx = reg[:, 0] / sx + centres[:, 0]
        cy = reg[:, 1] / sy + centres[:, 1]
        bw, bh = reg[:, 2] / sx, reg[:, 3] / sy
        return np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """(A, C) class probabilities (a sigmoid per logit)."""
        return _sigmoid(logits, self.score_clip)


@dataclass(frozen=True)
class GridAnchorSpec:
    """TF Object Detection API SSD anchors (``ssd_anchor_generator``) and its Faster R-CNN box coder.

    ``feature_maps``: (rows, columns) of each predictor layer, largest first. Layer ``i`` of ``n`` has
    scale ``min_scale + (max_scale - min_scale) * i / (n - 1)``; its boxes are one per aspect ratio plus,
    with ``interpolated_scale_aspect_ratio`` > 0, one at the geometric mean of its scale and the next
    layer's; with ``reduce_boxes_in_lowest_layer`` the first layer has three: (0.1, 1), (scale, 2),
    (scale, 0.5). Anchors are ordered layer by layer, row by row, column by column, box by box.
    """

    input_hw: tuple[int, int]
    feature_maps: tuple[tuple[int, int], ...]
    min_scale: float = 0.2
    max_scale: float = 0.95
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 0.3333)  # as the TF OD API sample configs write them
    interpolated_scale_aspect_ratio: float = 1.0
    reduce_boxes_in_lowest_layer: bool = True
    scale_factors: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)  # ty, tx, th, tw
    background: bool = True  # class 0 of the scores is "no object" (dropped)
    # how the class output becomes probabilities: "auto" = as they are when every value is in 0..1 (the
    # exporter applies the score converter to raw_outputs/class_predictions), else a sigmoid per class
    scores_from: str = "auto"
    score_clip: float = 100.0
    iou: float = 0.6  # NMS IoU when none is given (the TF OD API SSD configs' iou_threshold)

    def __post_init__(self) -> None:
        if not self.feature_maps or any(len(f) != 2 or int(f[0]) < 1 or int(f[1]) < 1 for f in self.feature_maps):
            raise SpecError(f"tf-od anchors need feature_maps [[rows, cols], ...] of positive sizes, got {self.feature_maps}")
        if not 0 < self.min_scale <= self.max_scale or not self.aspect_ratios or min(self.aspect_ratios) <= 0:
            raise SpecError(f"tf-od anchors need 0 < min_scale <= max_scale and positive aspect ratios, got "
                            f"{self.min_scale}, {self.max_scale}, {self.aspect_ratios}")
        if len(self.scale_factors) != 4 or min(self.scale_factors) <= 0:
            raise SpecError(f"tf-od scale_factors are 4 positive numbers (ty, tx, th, tw), got {self.scale_factors}")
        if self.scores_from not in SCORE_CONVERTERS:
            raise SpecError(f"tf-od scores_from must be one of {', '.join(SCORE_CONVERTERS)}, got {self.scores_from!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GridAnchorSpec":
        fields = ("type", "input_hw", "feature_maps", "min_scale", "max_scale", "aspect_ratios",
                  "interpolated_scale_aspect_ratio", "reduce_boxes_in_lowest_layer", "scale_factors", "background",
                  "scores_from")
        _known(d, fields, "tf-od")
        kw: dict[str, Any] = {"input_hw": tuple(int(v) for v in d["input_hw"]),
                              "feature_maps": tuple(tuple(int(v) for v in f) for f in d["feature_maps"])}
        for name in ("min_scale", "max_scale", "interpolated_scale_aspect_ratio"):
            if name in d:
                kw[name] = float(d[name])
        for name in ("aspect_ratios", "scale_factors"):
            if name in d:
                kw[name] = tuple(float(v) for v in d[name])
        for name in ("reduce_boxes_in_lowest_layer", "background"):
            if name in d:
                kw[name] = bool(d[name])
        if "scores_from" in d:
            kw["scores_from"] = str(d["scores_from"])
        return cls(**kw)

    def box_specs(self) -> list[list[tuple[float, float]]]:
        """(scale, aspect ratio) of each box per cell, per layer."""
        n = len(self.feature_maps)
        scales = [self.min_scale + (self.max_scale - self.min_scale) * i / (n - 1) for i in range(n)] if n > 1 else [self.min_scale]
        scales.append(1.0)
        out = []
        for i in range(n):
            if i == 0 and self.reduce_boxes_in_lowest_layer:
                out.append([(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)])
                continue
            layer = [(scales[i], a) for a in self.aspect_ratios]
            if self.interpolated_scale_aspect_ratio > 0:
                layer.append((math.sqrt(scales[i] * scales[i + 1]), self.interpolated_scale_aspect_ratio))
            out.append(layer)
        return out

    def count(self) -> int:
        return grid_anchors(self).shape[0]

    def split(self, outputs: Sequence[np.ndarray], names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(box encodings (A, 4), class scores (A, C)): the output with 4 values per anchor holds the
        encodings; when both have 4 (three classes and background), the one whose name says box /
        encoding / location, else the first (the order the exporter writes them in)."""
        arrs = [np.asarray(o).reshape(np.asarray(o).shape[-2:]) for o in outputs]
        fours = [k for k, a in enumerate(arrs) if a.shape[1] == 4] or [0]
        named = [k for k in fours if names and any(w in str(names[k]).lower() for w in BOX_WORDS)]
        i = (named or fours)[0]
        return arrs[i], arrs[1 - i]

    def boxes(self, reg: np.ndarray) -> np.ndarray:
        """(A, 4) boxes x1, y1, x2, y2 normalised to the model input (the Faster R-CNN box coder)."""
        a = grid_anchors(self)  # ycenter, xcenter, h, w
        r = reg.astype(np.float64) / np.asarray(self.scale_factors)
        h = np.exp(np.clip(r[:, 2], -10, 10)) * a[:, 2]
        w = np.exp(np.clip(r[:, 3], -10, 10)) * a[:, 3]
        cy = r[:, 0] * a[:, 2] + a[:, 0]
        cx = r[:, 1] * a[:, 3] + a[:, 1]
        return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """(A, C) class probabilities, the background column dropped."""
        kind = self.scores_from
        if kind == "auto":
            # int8 dequantisation may step just outside 0..1: a tolerance keeps such frames probabilities
            kind = "probabilities" if logits.size and logits.min() >= -0.01 and logits.max() <= 1.01 else "sigmoid"
        p = np.clip(SCORE_CONVERTERS[kind](logits.astype(np.float64), self.score_clip), 0.0, 1.0)
        return p[:, 1:] if self.background and p.shape[1] > 1 else p


def _softmax(z: np.ndarray, _clip: float) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# how a class output becomes probabilities ("auto" picks probabilities or sigmoid per frame)
SCORE_CONVERTERS = {"auto": None, "sigmoid": _sigmoid, "softmax": _softmax, "probabilities": lambda z, _clip: z}


def _known(d: dict[str, Any], fields: Sequence[str], kind: str) -> None:
    """Unknown keys and missing required ones (the two after ``type``) are one-line SpecErrors."""
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise SpecError(f"{kind} anchors: unknown key(s) {', '.join(unknown)}; expected {', '.join(fields[1:])}")
    missing = [k for k in fields[1:3] if k not in d]
    if missing:
        raise SpecError(f"{kind} anchors need {' and '.join(missing)}")


@lru_cache(maxsize=16)
def grid_anchors(spec: GridAnchorSpec) -> np.ndarray:
    """(A, 4) anchors (ycenter, xcenter, height, width), normalised, in the order the model lists them."""
    h, w = spec.input_hw
    short = min(h, w)
    base_h, base_w = short / h, short / w  # square anchors on a non-square input
    out = []
    for (rows, cols), layer in zip(spec.feature_maps, spec.box_specs()):
        scales = np.asarray([s for s, _ in layer])
        ratios = np.sqrt(np.asarray([a for _, a in layer]))
        bh, bw = scales / ratios * base_h, scales * ratios * base_w
        ys = (np.arange(rows) + 0.5) / rows
        xs = (np.arange(cols) + 0.5) / cols
        yy, xx, kk = np.meshgrid(ys, xs, np.arange(len(layer)), indexing="ij")
        out.append(np.stack([yy.ravel(), xx.ravel(), bh[kk.ravel()], bw[kk.ravel()]], axis=1))
    return np.concatenate(out).astype(np.float64)


BOX_WORDS = ("box", "encod", "loc", "regress")  # words in the name of a box-encodings output

# a deployment config's anchors ``type`` -> layout class
LAYOUTS: dict[str, type] = {"mediapipe": AnchorSpec, "tf-od": GridAnchorSpec}


# MediaPipe's face detectors (face_detection_short_range.tflite: 128x128, 896 anchors) and the TF OD API's
# ssd_mobilenet_v1/v2_coco and ssdlite_mobilenet_v2_coco (300x300, 1917 anchors)
PRESETS: dict[str, Any] = {
    "blazeface-short": AnchorSpec((128, 128), (8, 16, 16, 16)),
    "blazeface-full": AnchorSpec((192, 192), (4,), per_layer=1),
    "ssd-300": GridAnchorSpec((300, 300), ((19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1))),
}


def anchor_spec(value: Any) -> Any:
    """An anchor layout from a preset name, a dict (``type``: mediapipe (default) or tf-od), or itself."""
    if isinstance(value, tuple(LAYOUTS.values())):
        return value
    if isinstance(value, dict):
        kind = value.get("type", "mediapipe")
        if kind not in LAYOUTS:
            raise SpecError(f"anchors type must be one of {', '.join(LAYOUTS)}, got {kind!r}")
        return LAYOUTS[kind].from_dict(value)
    if str(value) in PRESETS:
        return PRESETS[str(value)]
    raise SpecError(f"unknown anchor layout {value!r}; expected one of {', '.join(PRESETS)} or a mapping "
                    "{type: mediapipe, input_hw, strides, ...} / {type: tf-od, input_hw, feature_maps, ...}")


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


def check_layout(spec: Any, shapes: Sequence[Sequence[int]]) -> None:
    """The outputs must be regressions + scores with as many anchors as the layout places."""
    dims = [tuple(int(d) for d in s) for s in shapes]
    if len(dims) != 2 or any(len(d) not in (2, 3) for d in dims) or dims[0][-2] != dims[1][-2]:
        raise SpecError(f"anchor decoding needs two outputs (1, A, 4+) and (1, A, C), got {dims}")
    if max(dims[0][-1], dims[1][-1]) < 4:
        raise SpecError(f"anchor regressors need at least 4 values per anchor, got {dims}")
    n = spec.count()
    if dims[0][-2] != n:
        raise SpecError(f"the anchor layout gives {n} anchors, the model's outputs {dims}: check the anchors preset or config")


def decode_anchors(outputs: Sequence[np.ndarray], spec: Any, *, transform: Transform, threshold: float = ANCHOR_THRESHOLD,
                   iou_threshold: float | None = None, labels: Sequence[str] | None = None, max_det: int = 100,
                   output_names: Sequence[str] | None = None) -> Detections:
    """Regressions + scores per anchor -> Detections in source-frame pixels (the best class per anchor, NMS per class).

    The outputs' shapes are checked once, with :func:`check_layout`, when the post-processing is built."""
    reg, logits = spec.split(outputs, output_names)
    scores_all = spec.scores(logits)
    cls = scores_all.argmax(axis=1)
    scores = scores_all[np.arange(len(cls)), cls]
    keep = scores >= threshold
    h, w = spec.input_hw
    boxes = spec.boxes(reg)[keep] * np.asarray([w, h, w, h], np.float64)  # every anchor: the layout indexes them all
    boxes = boxes.astype(np.float32)
    scores, cls = scores[keep].astype(np.float32), cls[keep].astype(np.int64)
    order = nms(boxes, scores, spec.iou if iou_threshold is None else iou_threshold, class_ids=cls, max_det=max_det)
    return Detections(transform.to_source(boxes[order]), scores[order], cls[order], labels)
