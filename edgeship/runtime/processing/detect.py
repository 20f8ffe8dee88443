"""Detection post-processing (pure numpy): SSD-style outputs, YOLO-style raw outputs, class-wise NMS.

Every decoder returns boxes in model-input pixels first and maps them to the source frame with the
:class:`edgeship.preprocess.Transform` that preprocessing applied (stretch, letterbox or centre-crop),
so a letterboxed detector draws boxes in the right place on the camera frame.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ...errors import SpecError
from ...preprocess import Transform
from ..types import Detections

DETECT_THRESHOLD = 0.25  # a YOLO / SSD detection's minimum score, unless told otherwise
NMS_IOU = 0.45  # boxes of one class overlapping more than this are one object (non-maximum suppression)


# ---- boxes ---------------------------------------------------------------------------------------
def cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    """(N, 4) centre-x, centre-y, width, height -> x1, y1, x2, y2."""
    b = np.asarray(b, dtype=np.float32)
    half = b[:, 2:4] / 2.0
    return np.concatenate([b[:, 0:2] - half, b[:, 0:2] + half], axis=1)


def yxyx_to_xyxy(b: np.ndarray) -> np.ndarray:
    """(N, 4) ymin, xmin, ymax, xmax -> x1, y1, x2, y2."""
    return np.asarray(b, dtype=np.float32)[:, [1, 0, 3, 2]]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xyxy boxes."""
    a = np.asarray(a, np.float32)[:, None, :]
    b = np.asarray(b, np.float32)[None, :, :]
    lt = np.maximum(a[..., :2], b[..., :2])
    rb = np.minimum(a[..., 2:], b[..., 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area_a = np.prod(np.clip(a[..., 2:] - a[..., :2], 0, None), axis=-1)
    area_b = np.prod(np.clip(b[..., 2:] - b[..., :2], 0, None), axis=-1)
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = NMS_IOU, class_ids: np.ndarray | None = None,
        max_det: int = 300) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first.

    With ``class_ids`` boxes only suppress boxes of their own class (class-wise NMS, done in one
    pass by offsetting each class's boxes so different classes never overlap).
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    if class_ids is not None:
        span = float(boxes.max() - min(boxes.min(), 0.0)) + 1.0
        boxes = boxes + (np.asarray(class_ids, np.float32).reshape(-1, 1) * span)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep: list[int] = []
    while order.size and len(keep) < max_det:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


# ---- SSD -----------------------------------------------------------------------------------------
def split_ssd_outputs(outputs: Sequence[np.ndarray], names: Sequence[str] | None = None):
    """Find (boxes, classes, scores, count) among SSD outputs by shape (and by name when they say).

    boxes: the (1, N, 4) tensor; count: the one with a single element; classes and scores: the two
    (1, N) tensors, told apart by their names ("class" / "score") or else by the TFLite
    TFLite_Detection_PostProcess order (classes before scores).
    """
    outs = [np.asarray(o) for o in outputs]
    names = [n.lower() for n in (names or [""] * len(outs))]
    box_i = [i for i, o in enumerate(outs) if o.ndim >= 2 and o.shape[-1] == 4 and o.size > 1]
    count_i = [i for i, o in enumerate(outs) if o.size == 1]
    if not box_i:
        raise SpecError(f"SSD outputs need a (1, N, 4) boxes tensor, got shapes {[o.shape for o in outs]}")
    b = box_i[0]
    n = outs[b].reshape(-1, 4).shape[0]
    vec = [i for i, o in enumerate(outs) if i != b and i not in count_i and o.size == n]
    if len(vec) != 2:
        raise SpecError(f"SSD outputs need classes and scores tensors of {n} values, got shapes {[o.shape for o in outs]}")
    by_name = {("score" in names[i]) - ("class" in names[i]): i for i in vec}
    cls_i, score_i = (by_name[-1], by_name[1]) if set(by_name) == {-1, 1} else (vec[0], vec[1])
    count = int(outs[count_i[0]].reshape(-1)[0]) if count_i else n
    return outs[b].reshape(-1, 4), outs[cls_i].reshape(-1), outs[score_i].reshape(-1), count


def decode_ssd(
    boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray, count: int | None, *, input_hw: tuple[int, int],
    transform: Transform, threshold: float = DETECT_THRESHOLD, labels: Sequence[str] | None = None, class_offset: int = 0,
) -> Detections:
    """SSD post-processed outputs (boxes ymin, xmin, ymax, xmax normalised to the model input) -> Detections."""
    n = len(scores) if count is None else max(0, min(int(count), len(scores)))
    b = yxyx_to_xyxy(np.asarray(boxes, np.float32).reshape(-1, 4)[:n])
    s = np.asarray(scores, np.float32).reshape(-1)[:n]
    c = np.rint(np.asarray(classes, np.float32).reshape(-1)[:n]).astype(np.int64) + int(class_offset)
    keep = s >= threshold
    h, w = input_hw
    b = b[keep] * np.asarray([w, h, w, h], np.float32)
    return Detections(transform.to_source(b), s[keep], c[keep], labels)


# ---- YOLO ----------------------------------------------------------------------------------------
def yolo_layout(shape: Sequence[int], num_classes: int | None = None) -> str:
    """"channels_first" for (1, 4+nc, A) (Ultralytics' export), "channels_last" for (1, A, 4+nc)."""
    if len(shape) != 3:
        raise SpecError(f"YOLO output must have shape (1, 4+nc, A) or (1, A, 4+nc), got {tuple(shape)}")
    _, a, b = shape
    if num_classes is not None:
        if a == 4 + num_classes and b != 4 + num_classes:
            return "channels_first"
        if b == 4 + num_classes and a != 4 + num_classes:
            return "channels_last"
    return "channels_first" if a < b else "channels_last"


def decode_yolo(
    output: np.ndarray, *, input_hw: tuple[int, int], transform: Transform, threshold: float = DETECT_THRESHOLD,
    iou_threshold: float = NMS_IOU, labels: Sequence[str] | None = None, normalized: bool | None = None,
    max_det: int = 300, max_candidates: int = 3000,
) -> Detections:
    """Ultralytics-style raw output (cx, cy, w, h + one score per class, no objectness) -> Detections.

    ``normalized``: boxes are fractions of the input size (Ultralytics' TFLite export) rather than
    input pixels (its OpenVINO / ONNX export); None guesses from the values (all <= 2 -> fractions).
    """
    out = np.asarray(output, np.float32)
    if out.ndim == 2:
        out = out[None]
    nc = len(labels) if labels else None
    if yolo_layout(out.shape, nc) == "channels_first":
        out = out[0].T  # (A, 4+nc)
    else:
        out = out[0]
    if out.shape[1] < 5:
        raise SpecError(f"YOLO output needs 4 box values and at least 1 class score per anchor, got {out.shape[1]}")
    cls_scores = out[:, 4:]
    class_ids = cls_scores.argmax(axis=1)
    scores = cls_scores[np.arange(len(out)), class_ids]
    keep = np.flatnonzero(scores >= threshold)
    if keep.size > max_candidates:
        keep = keep[np.argsort(-scores[keep], kind="stable")[:max_candidates]]
    boxes = out[keep, :4]
    if normalized is None:
        normalized = bool(boxes.size == 0 or float(np.abs(out[:, :4]).max()) <= 2.0)
    if normalized:
        h, w = input_hw
        boxes = boxes * np.asarray([w, h, w, h], np.float32)
    xyxy = cxcywh_to_xyxy(boxes)
    k = nms(xyxy, scores[keep], iou_threshold, class_ids[keep], max_det)
    sel = keep[k]
    return Detections(transform.to_source(xyxy[k]), scores[sel], class_ids[sel], labels)


def detect_format(shapes: Sequence[Sequence[int]]) -> str:
    """"ssd" for post-processed (boxes, classes, scores, count) outputs, "yolo" for one raw 3-D output."""
    if len(shapes) >= 3 and any(len(s) >= 2 and s[-1] == 4 for s in shapes):
        return "ssd"
    if len(shapes) == 1 and len(shapes[0]) in (2, 3):
        return "yolo"
    if len(shapes) == 2 and all(len(s) == 3 for s in shapes) and shapes[0][1] == shapes[1][1]:
        raise SpecError(
            f"outputs {[tuple(s) for s in shapes]} look like an anchor-based SSD head (box regressors and scores per "
            "anchor, e.g. MediaPipe/BlazeFace): give its anchor layout (--anchors blazeface-short, or anchors: in a "
            "config), or run --task raw (npz: sink)"
        )
    raise SpecError(
        f"cannot tell the detection format of outputs {[tuple(s) for s in shapes]}: expected SSD "
        "(boxes (1,N,4), classes, scores, count) or YOLO ((1, 4+nc, A) or (1, A, 4+nc))"
    )
