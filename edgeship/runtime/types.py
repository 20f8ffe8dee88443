"""The small data types that flow through the runtime: Frame -> Result (Classification/Detections).

Pure numpy, no heavy imports. ``Detections`` is immutable with validated shapes (in the spirit of
roboflow/supervision): boxes are (N, 4) float32 ``x1, y1, x2, y2`` in source-frame pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    ``image`` is BGR uint8 (H, W, 3) as OpenCV delivers it; ``index`` counts frames read from the
    source (so gaps show frames the one-slot buffer dropped); ``t_capture`` is wall-clock
    ``time.time()`` and ``t_mono`` is ``time.monotonic()`` at the moment the frame was captured:
    when a live reader handed it over, and for files and folders when its reading (decoding)
    began, so glass-to-glass latency counts a file frame's decoding like a camera's exposure.
    For files and folders, ``t_media`` is the frame's position in the file (seconds, frames / fps,
    still growing across a loop) and ``t_scene`` is the first frame's capture time plus it; for
    live sources both are None. :attr:`scene_time` is the clock apps measure dwell and cooldowns
    on, so a recorded clip behaves as it did in front of the camera however fast it is processed.
    """

    image: np.ndarray
    index: int
    t_capture: float
    t_mono: float
    source: str = ""
    t_media: float | None = None
    t_scene: float | None = None

    @property
    def scene_time(self) -> float:
        """The scene's clock: ``t_scene`` for files, the capture time for live sources."""
        return self.t_capture if self.t_scene is None else self.t_scene

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


class Detections:
    """Immutable set of N boxes: ``xyxy`` (N, 4) float32, ``scores`` (N,) float32, ``class_ids`` (N,) int64.

    ``labels`` is the model's class-name table (a tuple) or None; ``names`` gives each box's name.
    Indexing (int, slice, bool mask or index array) returns a new Detections.
    """

    __slots__ = ("_xyxy", "_scores", "_class_ids", "_labels")

    def __init__(self, xyxy: Any, scores: Any, class_ids: Any, labels: Sequence[str] | None = None) -> None:
        xyxy = np.asarray(xyxy, dtype=np.float32)
        if xyxy.size == 0:
            xyxy = xyxy.reshape(0, 4)
        if xyxy.ndim != 2 or xyxy.shape[1] != 4:
            raise InputError(f"Detections.xyxy must have shape (N, 4), got {xyxy.shape}")
        n = xyxy.shape[0]
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        class_ids = np.asarray(class_ids).reshape(-1)
        if scores.shape != (n,):
            raise InputError(f"Detections.scores must have shape ({n},), got {scores.shape}")
        if class_ids.shape != (n,):
            raise InputError(f"Detections.class_ids must have shape ({n},), got {class_ids.shape}")
        if class_ids.size and not np.all(np.isfinite(class_ids.astype(np.float64))):
            raise InputError("Detections.class_ids must be finite integers")
        object.__setattr__(self, "_xyxy", _readonly(xyxy))
        object.__setattr__(self, "_scores", _readonly(scores))
        object.__setattr__(self, "_class_ids", _readonly(class_ids.astype(np.int64)))
        object.__setattr__(self, "_labels", tuple(labels) if labels is not None else None)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Detections is immutable; build a new one")

    @classmethod
    def empty(cls, labels: Sequence[str] | None = None) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), labels)

    @property
    def xyxy(self) -> np.ndarray:
        return self._xyxy

    @property
    def scores(self) -> np.ndarray:
        return self._scores

    @property
    def class_ids(self) -> np.ndarray:
        return self._class_ids

    @property
    def labels(self) -> tuple[str, ...] | None:
        return self._labels

    @property
    def names(self) -> list[str]:
        """Each box's class name (the label when known, else the id as text)."""
        return [label_for(self._labels, int(c)) for c in self._class_ids]

    def __len__(self) -> int:
        return int(self._xyxy.shape[0])

    def __getitem__(self, idx: Any) -> "Detections":
        if isinstance(idx, (int, np.integer)):
            idx = [int(idx)]
        return Detections(self._xyxy[idx], self._scores[idx], self._class_ids[idx], self._labels)

    def __iter__(self) -> Iterator[tuple[np.ndarray, float, int]]:
        for i in range(len(self)):
            yield self._xyxy[i], float(self._scores[i]), int(self._class_ids[i])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Detections):
            return NotImplemented
        return (
            np.array_equal(self._xyxy, other._xyxy)
            and np.array_equal(self._scores, other._scores)
            and np.array_equal(self._class_ids, other._class_ids)
            and self._labels == other._labels
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Detections(n={len(self)}, classes={sorted(set(self._class_ids.tolist()))})"

    def with_min_score(self, threshold: float) -> "Detections":
        return self[self._scores >= threshold]

    def to_list(self) -> list[dict[str, Any]]:
        """JSON-ready list: one dict per box (``box`` is x1, y1, x2, y2 in source pixels)."""
        return [
            {"box": [round(float(v), 2) for v in b], "score": round(s, 5), "class_id": c, "label": label_for(self._labels, c)}
            for b, s, c in self
        ]


def label_for(labels: Sequence[str] | None, class_id: int) -> str:
    """The name of ``class_id`` (its index as text when there is no label for it)."""
    if labels is not None and 0 <= class_id < len(labels):
        return str(labels[class_id])
    return str(class_id)


@dataclass(frozen=True)
class Classification:
    """Top-k classes, best first: ``top`` is a tuple of (class_id, label, score)."""

    top: tuple[tuple[int, str, float], ...] = ()

    @property
    def class_id(self) -> int | None:
        return self.top[0][0] if self.top else None

    @property
    def label(self) -> str | None:
        return self.top[0][1] if self.top else None

    @property
    def score(self) -> float | None:
        return self.top[0][2] if self.top else None

    def __len__(self) -> int:
        return len(self.top)

    def to_list(self) -> list[dict[str, Any]]:
        return [{"class_id": c, "label": n, "score": round(float(s), 5)} for c, n, s in self.top]


@dataclass(frozen=True)
class Result:
    """What one processed frame produced.

    ``task`` is "classify", "detect" or "raw"; exactly the matching field is set
    (``classification``, ``detections`` or only ``raw``); ``raw`` always holds the float outputs.
    ``latency_ms`` has one entry per stage (``read``: the source's read, a file's decoding;
    ``preprocess``, ``infer``, ``postprocess``, ``sinks``) plus
    ``glass_to_glass`` (capture -> result) and ``age`` (capture -> inference start).
    ``camera``: which camera of a multi-camera run the frame came from (None with one source).
    """

    frame_index: int
    t_capture: float
    t_done: float
    task: str
    classification: Classification | None = None
    detections: Detections | None = None
    raw: tuple[np.ndarray, ...] | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    camera: str | None = None  # the camera's name in a multi-camera run

    def to_dict(self, *, include_raw: bool = False) -> dict[str, Any]:
        """JSON-ready dict (what the jsonl sink writes)."""
        d: dict[str, Any] = {
            **({"camera": self.camera} if self.camera is not None else {}),
            "frame": self.frame_index,
            "t_capture": round(self.t_capture, 6),
            "t_done": round(self.t_done, 6),
            "task": self.task,
            "latency_ms": {k: round(float(v), 3) for k, v in self.latency_ms.items()},
        }
        if self.classification is not None:
            d["classification"] = self.classification.to_list()
        if self.detections is not None:
            d["detections"] = self.detections.to_list()
        if self.raw is not None and (include_raw or self.task == "raw"):
            d["raw"] = [_raw_summary(a, full=include_raw) for a in self.raw]
        return d


def _raw_summary(a: np.ndarray, *, full: bool) -> dict[str, Any]:
    a = np.asarray(a)
    out: dict[str, Any] = {"shape": list(a.shape)}
    if full or a.size <= 64:
        out["values"] = a.astype(np.float64).round(6).tolist()
    else:
        flat = a.reshape(-1)
        out.update(min=float(flat.min()), max=float(flat.max()), argmax=int(flat.argmax()))
    return out
