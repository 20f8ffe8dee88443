"""A small multi-object tracker: stable ids for detections across frames (SORT-style, pure numpy).

Each frame's detections are matched to the live tracks by IoU between the detection and the
track's predicted box (constant velocity in pixels per frame), per class by default. Matching is
greedy by IoU, highest first (deterministic; no SciPy needed on the device) or optimal
(Hungarian, ``matcher="hungarian"``, needs SciPy). A new track is *tentative* until it has been
matched ``min_hits`` times (a tentative track missed once is dropped: detector flicker), then
*confirmed*; a confirmed track survives ``max_age`` inferred frames unseen (occlusion) before it is
deleted. Ids count up from 1 and are never reused.

    tracker = Tracker(iou=0.3, max_age=15, min_hits=2)
    for frame, dets in stream:
        for tr in tracker.update(dets, frame.t_capture, frame_index=frame.index):
            print(tr.track_id, tr.label, tr.box, tr.missed)

No camera, no model, no clock: the same inputs give the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
from pydantic import Field, field_validator

from ...errors import ConfigError
from ..schema import Strict, checked, config_defaults, validated
from ..types import Detections, label_for


@dataclass(frozen=True)
class Track:
    """One tracked object as of the latest update.

    ``box`` is x1, y1, x2, y2 in source pixels: the matched detection's box when ``missed == 0``,
    else the box predicted from its velocity. ``age`` counts updates since the track was created,
    ``hits`` the updates it was matched on, ``missed`` the updates since it was last matched.
    ``first_seen`` / ``last_seen`` are the times (the ``t`` given to :meth:`Tracker.update`) of its
    first and latest match.
    """

    track_id: int
    box: tuple[float, float, float, float]
    label: str
    class_id: int
    score: float
    age: int
    hits: int
    missed: int
    first_seen: float
    last_seen: float
    confirmed: bool

    @property
    def seen(self) -> bool:
        """Matched to a detection on the latest update (False while coasting through an occlusion)."""
        return self.missed == 0

    def to_dict(self) -> dict[str, Any]:
        return {"track_id": self.track_id, "label": self.label, "class_id": self.class_id,
                "score": round(self.score, 4), "box": [round(v, 1) for v in self.box], "age": self.age,
                "hits": self.hits, "missed": self.missed, "first_seen": round(self.first_seen, 6),
                "last_seen": round(self.last_seen, 6)}


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in (N, 4) ``a`` with every box in (M, 4) ``b`` (xyxy) -> (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def match_greedy(score: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (row, col) taken by descending score, each row and column at most once, score >= threshold.

    Ties are broken by row then column index (a stable sort), so the result is deterministic.
    """
    score = np.asarray(score, dtype=np.float64)
    if score.size == 0:
        return []
    rows, cols = np.nonzero(score >= threshold)
    order = np.argsort(-score[rows, cols], kind="stable")
    used_r: set[int] = set()
    used_c: set[int] = set()
    pairs = []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        pairs.append((r, c))
    return sorted(pairs)


def _require_scipy() -> None:
    try:
        import scipy.optimize  # noqa: F401
    except ImportError:  # pragma: no cover - scipy is present wherever the tests run
        raise ConfigError("tracker.matcher 'hungarian' needs SciPy (pip install scipy); "
                          "use matcher 'greedy' on devices without it") from None


def match_hungarian(score: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (row, col) maximising the total score (SciPy's linear_sum_assignment), score >= threshold."""
    _require_scipy()
    from scipy.optimize import linear_sum_assignment

    score = np.asarray(score, dtype=np.float64)
    if score.size == 0:
        return []
    gated = np.where(score >= threshold, score, 0.0)
    rows, cols = linear_sum_assignment(gated, maximize=True)
    return sorted((int(r), int(c)) for r, c in zip(rows, cols) if score[r, c] >= threshold)


# registry: matcher name -> (score matrix, threshold) -> [(track row, detection col)]
MATCHERS: dict[str, Callable[[np.ndarray, float], list[tuple[int, int]]]] = {
    "greedy": match_greedy,
    "hungarian": match_hungarian,
}


class _State:
    """The mutable state of one track (internal)."""

    __slots__ = ("track_id", "box", "velocity", "class_id", "label", "score", "age", "hits", "missed",
                 "first_seen", "last_seen", "last_index")

    def __init__(self, track_id: int, box: np.ndarray, class_id: int, label: str, score: float, t: float,
                 index: int) -> None:
        self.track_id = track_id
        self.box = box
        self.velocity = np.zeros(4)
        self.class_id, self.label, self.score = class_id, label, score
        self.age, self.hits, self.missed = 1, 1, 0
        self.first_seen = self.last_seen = t
        self.last_index = index

    def predicted(self, index: int) -> np.ndarray:
        """The box moved on by its velocity to frame ``index`` (at least one frame: counters may restart)."""
        return self.box + self.velocity * float(max(1, index - self.last_index))


class Tracker:
    """IoU multi-object tracker; :meth:`update` once per inferred frame.

    ``iou``: least IoU between a predicted track box and a detection to match them.
    ``max_age``: inferred frames a confirmed track survives unseen. ``min_hits``: matches before a
    track is confirmed (1: at once). ``velocity``: predict each box with its smoothed per-frame
    motion (off: the last box stays put). ``class_aware``: a track only matches detections of
    its own class. ``matcher``: a key of :data:`MATCHERS`.
    """

    def __init__(self, *, iou: float, max_age: int, min_hits: int, velocity: bool, class_aware: bool, matcher: str,
                 smoothing: float = 0.5) -> None:
        validated(TrackerCfg, "tracker", iou=iou, max_age=max_age, min_hits=min_hits, velocity=velocity,
                  class_aware=class_aware, matcher=matcher)  # the config's rules, for Python callers too
        if not 0.0 < smoothing <= 1.0:
            raise ConfigError(f"tracker smoothing must be in (0, 1], got {smoothing}")
        self.iou_threshold, self.max_age, self.min_hits = float(iou), int(max_age), int(min_hits)
        self.velocity, self.class_aware, self.smoothing = bool(velocity), bool(class_aware), float(smoothing)
        self.matcher = matcher
        self._match = MATCHERS[matcher]
        self._tracks: list[_State] = []
        self._next_id = 1
        self._updates = 0
        self._index = 0
        self.created = 0  # tracks ever started (tentative included)
        self.confirmed_total = 0  # tracks that reached min_hits

    def update(self, detections: Detections | None, t: float, *, frame_index: int | None = None,
               tentative: bool = False) -> list[Track]:
        """Feed one inferred frame's detections taken at time ``t``; return the live tracks.

        ``frame_index`` (the source's frame counter) scales the motion prediction over frames that
        were dropped or skipped; without it every update is one frame. Confirmed tracks only,
        unless ``tentative`` (then every live track, with ``confirmed`` telling which).
        """
        index = self._updates if frame_index is None else int(frame_index)
        self._updates += 1
        self._index = index
        dets = detections if detections is not None else Detections.empty()
        boxes = np.asarray(dets.xyxy, dtype=np.float64).reshape(-1, 4)
        classes = np.asarray(dets.class_ids, dtype=np.int64).reshape(-1)
        scores = np.asarray(dets.scores, dtype=np.float64).reshape(-1)
        pairs = self._associate(boxes, classes, index)
        matched_t = {r for r, _ in pairs}
        matched_d = {c for _, c in pairs}
        for r, c in pairs:
            self._hit(self._tracks[r], boxes[c], int(classes[c]), label_for(dets.labels, int(classes[c])),
                      float(scores[c]), t, index)
        survivors = []
        for r, st in enumerate(self._tracks):
            if r not in matched_t:
                st.age += 1
                st.missed += 1
                if st.hits < self.min_hits or st.missed > self.max_age:
                    continue  # a tentative track missed once is flicker; a confirmed one is lost after max_age
            survivors.append(st)
        for c in range(len(boxes)):
            if c not in matched_d:
                survivors.append(_State(self._next_id, boxes[c].copy(), int(classes[c]),
                                        label_for(dets.labels, int(classes[c])), float(scores[c]), t, index))
                self._next_id += 1
                self.created += 1
                if self.min_hits <= 1:
                    self.confirmed_total += 1
        self._tracks = survivors
        return [self._public(st, index) for st in self._tracks if tentative or st.hits >= self.min_hits]

    def _associate(self, boxes: np.ndarray, classes: np.ndarray, index: int) -> list[tuple[int, int]]:
        if not self._tracks or not len(boxes):
            return []
        predicted = np.stack([self._predict(st, index) for st in self._tracks])
        iou = iou_matrix(predicted, boxes)
        if self.class_aware:
            same = np.asarray([st.class_id for st in self._tracks])[:, None] == classes[None, :]
            iou = np.where(same, iou, 0.0)
        return self._match(iou, self.iou_threshold)

    def _predict(self, st: _State, index: int) -> np.ndarray:
        return st.predicted(index) if self.velocity else st.box

    def _hit(self, st: _State, box: np.ndarray, class_id: int, label: str, score: float, t: float, index: int) -> None:
        frames = max(1, index - st.last_index)
        if self.velocity:
            step = (box - st.box) / frames
            st.velocity = step if st.hits == 1 else self.smoothing * step + (1.0 - self.smoothing) * st.velocity
        st.box = box.copy()
        st.class_id, st.label, st.score = class_id, label, score
        st.age += 1
        st.hits += 1
        st.missed = 0
        st.last_seen = t
        st.last_index = index
        if st.hits == self.min_hits:
            self.confirmed_total += 1

    def _public(self, st: _State, index: int) -> Track:
        box = st.box if st.missed == 0 else self._predict(st, index)
        return Track(st.track_id, tuple(float(v) for v in box), st.label, st.class_id, st.score, st.age, st.hits,
                     st.missed, st.first_seen, st.last_seen, st.hits >= self.min_hits)

    @property
    def active(self) -> int:
        """Live tracks, tentative ones included (the motion gate keeps inferring while any exist)."""
        return len(self._tracks)

    def tracks(self, *, tentative: bool = False) -> list[Track]:
        """The live tracks as of the latest update, without updating."""
        return [self._public(st, self._index) for st in self._tracks if tentative or st.hits >= self.min_hits]

    def status(self) -> dict[str, Any]:
        return {"matcher": self.matcher, "live": sum(st.hits >= self.min_hits for st in self._tracks),
                "tentative": sum(st.hits < self.min_hits for st in self._tracks),
                "created": self.created, "confirmed": self.confirmed_total, "next_id": self._next_id}


class TrackerCfg(Strict):
    """The security app's ``tracker:`` section (keys = :class:`Tracker` keywords, plus ``enabled``)."""

    enabled: bool = Field(True, description="false: presence per (zone, class), no track ids, no lines")
    iou: float = Field(0.3, gt=0, le=1, description="a detection continues a track when their boxes overlap at least this much")
    max_age: int = Field(15, ge=0, description="frames a track survives unseen before it is dropped")
    min_hits: int = Field(2, ge=1, description="detections before a track is confirmed (and may raise events)")
    velocity: bool = Field(True, description="predict each track's box with its constant-velocity motion")
    class_aware: bool = Field(True, description="a track follows detections of its own class only")
    matcher: Literal[tuple(MATCHERS)] = Field("greedy", description="assignment of detections to tracks: greedy (by IoU) or hungarian (optimal)")  # type: ignore[valid-type]

    @field_validator("matcher")
    @classmethod
    def _available(cls, v: str) -> str:
        if v == "hungarian":
            checked(_require_scipy)()
        return v


def tracker_from_config(cfg: TrackerCfg) -> Tracker | None:
    """The :class:`Tracker` a ``tracker:`` section describes (``enabled: false`` -> None)."""
    opts = cfg.options()
    return Tracker(**opts) if opts.pop("enabled") else None


Tracker = config_defaults(TrackerCfg)(Tracker)  # its defaults are the config's (TrackerCfg is defined after it)
