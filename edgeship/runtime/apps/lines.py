"""Tripwires: named line segments that count tracked objects crossing them, with the direction.

A :class:`Line` runs from its first point A to its second point B (pixels or normalised 0..1).
A track crosses it when the path of its anchor point (bottom-centre of the box by default) between
two frames it was seen on cuts the segment. Direction, as drawn on the image: ``in`` is from the
left-hand side of A->B to its right-hand side (for a line drawn left to right, from above it to
below it), ``out`` the other way. Points within ``hysteresis_px`` of the line count as on neither
side, so a box jittering on the line is not counted over and over.

:class:`LineCounter` counts every crossing of a confirmed track (per line, direction and class)
and returns the ones the line's ``direction`` asks an event for. A crossing made while a track was
still tentative is held and reported when it is confirmed (dropped if it never is).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np
from pydantic import Field

from ...errors import ConfigError
from ..schema import default_of
from .zones import PlaceCfg, anchor_points, place_checked, points_px, wants

if TYPE_CHECKING:
    from .tracking import Track

LINE_DIRECTIONS = ("both", "in", "out")


def check_line_points(pts: Sequence[Any], where: str = "") -> Sequence[Any]:
    """A tripwire is exactly 2 different points, A then B."""
    if len(pts) != 2:
        raise ConfigError(f"{where}a line is exactly 2 points [[x1, y1], [x2, y2]], got {len(pts)}")
    if tuple(pts[0]) == tuple(pts[1]):
        raise ConfigError(f"{where}the 2 points must differ, got {[list(p) for p in pts]}")
    return pts


class LineCfg(PlaceCfg):
    """One entry of the security app's ``lines:`` (keys = :class:`Line` fields)."""

    direction: Literal[LINE_DIRECTIONS] = Field("both", description="crossings that raise events")  # type: ignore[valid-type]
    hysteresis_px: float = Field(2.0, ge=0, description="a crossing counts only once the anchor is this many pixels past the line")

    points_rule = staticmethod(check_line_points)


@dataclass(frozen=True)
class Line:
    """A named tripwire from ``points[0]`` (A) to ``points[1]`` (B)."""

    name: str
    points: tuple[tuple[float, float], ...]
    # every default is LineCfg's (the one home of each)
    normalized: bool | None = default_of(LineCfg, "normalized")  # None: normalised when every coordinate is in 0..1
    classes: tuple[str, ...] = default_of(LineCfg, "classes")  # empty: every class
    min_score: float = default_of(LineCfg, "min_score")
    direction: str = default_of(LineCfg, "direction")  # crossings that raise events ("both", "in", "out"); counters count both
    anchor: str = default_of(LineCfg, "anchor")
    hysteresis_px: float = default_of(LineCfg, "hysteresis_px")

    def __post_init__(self) -> None:
        place_checked(self, LineCfg, "line")

    def segment_px(self, width: int, height: int) -> np.ndarray:
        """A and B as a (2, 2) float array in pixels of a ``width`` x ``height`` frame."""
        return points_px(self.points, self.normalized, width, height)

    def wants(self, label: str, score: float) -> bool:
        return wants(self.classes, self.min_score, label, score)


LineCfg.builds = Line  # what a lines: entry builds


def side_of(points: np.ndarray, a: np.ndarray, b: np.ndarray, hysteresis_px: float = 0.0) -> np.ndarray:
    """(N,) side of each (N, 2) point w.r.t. the line through A->B: +1 right-hand (on screen), -1 left, 0 on it.

    "On it" means within ``hysteresis_px`` pixels of the infinite line.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d = b - a
    dist = (d[0] * (p[:, 1] - a[1]) - d[1] * (p[:, 0] - a[0])) / float(np.hypot(*d))
    return np.where(dist > hysteresis_px, 1, np.where(dist < -hysteresis_px, -1, 0))


def segments_intersect(p0: np.ndarray, p1: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
    """Whether segment p0-p1 meets segment a-b (touching counts)."""
    def orient(o, u, v) -> float:
        return float((u[0] - o[0]) * (v[1] - o[1]) - (u[1] - o[1]) * (v[0] - o[0]))

    def on(o, u, v) -> bool:  # v on segment o-u, given collinear
        return min(o[0], u[0]) <= v[0] <= max(o[0], u[0]) and min(o[1], u[1]) <= v[1] <= max(o[1], u[1])

    d1, d2 = orient(a, b, p0), orient(a, b, p1)
    d3, d4 = orient(p0, p1, a), orient(p0, p1, b)
    if ((d1 > 0) != (d2 > 0)) and d1 != 0 and d2 != 0 and ((d3 > 0) != (d4 > 0)) and d3 != 0 and d4 != 0:
        return True
    return ((d1 == 0 and on(a, b, p0)) or (d2 == 0 and on(a, b, p1)) or (d3 == 0 and on(p0, p1, a))
            or (d4 == 0 and on(p0, p1, b)))


@dataclass(frozen=True)
class Crossing:
    """A confirmed track crossing a line: ``direction`` is "in" or "out"."""

    line: str
    track: "Track"
    direction: str


def _empty_counts() -> dict:
    return {"in": 0, "out": 0, "per_class": {}}


@dataclass
class LineCounter:
    """Crossing counters per line; :meth:`update` once per inferred frame with the tracker's live tracks."""

    lines: Sequence[Line]
    _last: dict[tuple[str, int], tuple[np.ndarray, int]] = field(default_factory=dict)
    _pending: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    counts: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [ln.name for ln in self.lines]
        if len(set(names)) != len(names):
            raise ConfigError(f"line names must be unique, got {names}")
        self.counts = {ln.name: _empty_counts() for ln in self.lines}

    def update(self, tracks: Sequence["Track"], frame_wh: tuple[int, int]) -> list[Crossing]:
        """Feed the live tracks (tentative included); count crossings; return those that raise events."""
        alive = {tr.track_id for tr in tracks}
        seen = [tr for tr in tracks if tr.seen]
        out: list[Crossing] = []
        for line in self.lines if seen else ():
            a, b = line.segment_px(*frame_wh)
            anchors = anchor_points(np.asarray([tr.box for tr in seen]), line.anchor)
            sides = side_of(anchors, a, b, line.hysteresis_px)
            for tr, p, s in zip(seen, anchors, sides):
                if not line.wants(tr.label, tr.score):
                    continue
                key = (line.name, tr.track_id)
                directions = self._pending.pop(key, [])
                if s != 0:
                    prev = self._last.get(key)
                    if prev is not None and prev[1] != s and segments_intersect(prev[0], p, a, b):
                        directions.append("in" if prev[1] < 0 else "out")
                    self._last[key] = (p, int(s))
                if not tr.confirmed:
                    if directions:
                        self._pending[key] = directions
                    continue
                for d in directions:
                    self._count(line.name, tr.label, d)
                    if line.direction in ("both", d):
                        out.append(Crossing(line.name, tr, d))
        for store in (self._last, self._pending):
            for key in [k for k in store if k[1] not in alive]:
                del store[key]
        return out

    def _count(self, line: str, label: str, direction: str) -> None:
        c = self.counts[line]
        c[direction] += 1
        per = c["per_class"].setdefault(label, {"in": 0, "out": 0})
        per[direction] += 1

    def status(self) -> dict[str, dict]:
        """Line name -> {"in", "out", "per_class": {label: {"in", "out"}}} (a copy)."""
        return {name: {"in": c["in"], "out": c["out"], "per_class": {k: dict(v) for k, v in c["per_class"].items()}}
                for name, c in self.counts.items()}
