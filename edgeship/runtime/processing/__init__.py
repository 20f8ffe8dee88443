"""Post-processing by task, through a registry: classify, detect (SSD or YOLO outputs), raw.

    post = make_postprocess("detect", spec=spec, labels=labels, output_shapes=[o.shape for o in b.outputs])
    fields = post(outputs, frame_hw)   # {"classification": ..., "detections": ..., "raw": ...}

The task comes from ``--task``, else the manifest's ``task``, else a guess from the outputs
(one (1, C) output -> classify, otherwise raw).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ...errors import InputError, SpecError
from ...spec import InputSpec
from ...preprocess import resize_transform
from .classify import classify_outputs, softmax, top_k
from .anchors import ANCHOR_THRESHOLD
from .detect import (DETECT_THRESHOLD, box_iou, cxcywh_to_xyxy, decode_ssd, decode_yolo, detect_format, nms,
                     split_ssd_outputs, yxyx_to_xyxy)

__all__ = [
    "TASKS", "make_postprocess", "resolve_task", "top_k", "softmax", "classify_outputs", "nms", "box_iou",
    "decode_ssd", "decode_yolo", "split_ssd_outputs", "detect_format", "cxcywh_to_xyxy", "yxyx_to_xyxy",
    "Classify", "Detect", "Raw",
]


@dataclass(frozen=True)
class Classify:
    """Top-k of the class-score output (``index``); ``threshold`` drops low scores."""

    labels: tuple[str, ...] | None = None
    k: int = 5
    threshold: float = 0.0
    index: int = 0

    def __call__(self, outputs: Sequence[np.ndarray], frame_hw: tuple[int, int]) -> dict[str, Any]:
        return {"classification": classify_outputs([outputs[self.index]], k=self.k, labels=self.labels,
                                                   threshold=self.threshold)}


def class_score_output(shapes: Sequence[Sequence[int]], roles: Sequence[str | None] = ()) -> int:
    """Which output holds the class scores: the one the manifest marks ``class_scores``, else the only
    output when it is (1, C); anything else is refused with one line naming the shapes."""
    from ... import roles as R

    marked = R.class_output(list(roles)) if roles and any(roles) else None
    if marked is not None:
        return marked
    if len(shapes) == 1 and (len(shapes[0]) == 1 or (len(shapes[0]) == 2 and (shapes[0][-1] or 0) != 1)):
        return 0
    raise SpecError(f"--task classify needs one class-score output (1, C); this model's outputs are "
                    f"{', '.join(str(tuple(s)) for s in shapes)}: mark the right one when converting "
                    "(convert --output NAME=class_scores), or run --task raw")


@dataclass(frozen=True)
class Detect:
    """SSD or YOLO decoding (``fmt``), mapped back to the source frame through the InputSpec's resize."""

    spec: InputSpec
    fmt: str = "yolo"
    labels: tuple[str, ...] | None = None
    threshold: float = DETECT_THRESHOLD
    iou: float | None = None  # None: the decoder's own (NMS_IOU; the anchor layout's)
    max_det: int = 300
    output_names: tuple[str, ...] | None = None
    normalized: bool | None = None
    anchors: Any = None  # an anchor layout (anchors.LAYOUTS) for fmt "anchors"

    def __call__(self, outputs: Sequence[np.ndarray], frame_hw: tuple[int, int]) -> dict[str, Any]:
        t = resize_transform(frame_hw, self.spec)
        hw = (self.spec.height, self.spec.width)
        if self.fmt == "anchors":
            from .anchors import decode_anchors

            return {"detections": decode_anchors(outputs, self.anchors, transform=t, threshold=self.threshold,
                                                 iou_threshold=self.iou, labels=self.labels, max_det=self.max_det,
                                                 output_names=self.output_names)}
        if self.fmt == "ssd":
            boxes, classes, scores, count = split_ssd_outputs(outputs, self.output_names)
            det = decode_ssd(boxes, classes, scores, count, input_hw=hw, transform=t, threshold=self.threshold,
                             labels=self.labels)
            return {"detections": det[: self.max_det]}
        nms_iou = {} if self.iou is None else {"iou_threshold": self.iou}  # else decode_yolo's default
        det = decode_yolo(outputs[0], input_hw=hw, transform=t, threshold=self.threshold, **nms_iou,
                          labels=self.labels, normalized=self.normalized, max_det=self.max_det)
        return {"detections": det}


@dataclass(frozen=True)
class Raw:
    """Outputs passed through unchanged (``Result.raw``), for models edgeship has no decoder for."""

    def __call__(self, outputs: Sequence[np.ndarray], frame_hw: tuple[int, int]) -> dict[str, Any]:
        return {}


def _make_classify(*, labels=None, top_k: int = 5, threshold: float | None = None,
                   output_shapes: Sequence[Sequence[int]] = (), output_roles: Sequence[str | None] = (), **_: Any) -> Classify:
    index = class_score_output(output_shapes, output_roles) if output_shapes else 0
    return Classify(tuple(labels) if labels else None, int(top_k), 0.0 if threshold is None else float(threshold), index)


def _make_detect(*, spec: InputSpec, labels=None, threshold: float | None = None, iou: float | None = None,
                 output_shapes: Sequence[Sequence[int]] = (), output_names: Sequence[str] | None = None,
                 max_det: int = 300, box_format: str | None = None, normalized: bool | None = None, anchors: Any = None,
                 **_: Any) -> Detect:
    if anchors is not None:  # an anchor-based SSD head: the layout says where the anchors are
        from .anchors import anchor_spec, check_layout

        layout = anchor_spec(anchors)
        if output_shapes:
            check_layout(layout, output_shapes)
        return Detect(spec, "anchors", tuple(labels) if labels else None,
                      ANCHOR_THRESHOLD if threshold is None else float(threshold),
                      None if iou is None else float(iou), int(max_det), tuple(output_names) if output_names else None,
                      None, layout)
    fmt = box_format or detect_format([list(s) for s in output_shapes])
    if fmt not in ("ssd", "yolo"):
        raise InputError(f"detection format must be ssd or yolo, got {fmt!r}")
    return Detect(spec, fmt, tuple(labels) if labels else None, DETECT_THRESHOLD if threshold is None else float(threshold),
                  None if iou is None else float(iou), int(max_det), tuple(output_names) if output_names else None, normalized)


def _make_raw(**_: Any) -> Raw:
    return Raw()


# registry: task name -> factory(**options) -> callable(outputs, frame_hw) -> Result fields
TASKS: dict[str, Callable[..., Callable[[Sequence[np.ndarray], tuple[int, int]], dict[str, Any]]]] = {
    "classify": _make_classify,
    "detect": _make_detect,
    "raw": _make_raw,
}


def make_postprocess(task: str, **options: Any):
    """The post-processing callable for ``task`` (see :data:`TASKS`)."""
    if task not in TASKS:
        raise InputError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return TASKS[task](**options)


def resolve_task(task: str | None, manifest_task: str | None, output_shapes: Sequence[Sequence[int]]) -> str:
    """--task, else the manifest's task, else classify for a single (1, C) output, else raw."""
    for t in (task, manifest_task):
        if t:
            if t not in TASKS:
                raise InputError(f"task must be one of {', '.join(TASKS)}, got {t!r}")
            return t
    if len(output_shapes) == 1 and len(output_shapes[0]) == 2:
        return "classify"
    return "raw"
