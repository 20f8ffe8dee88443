"""Polygon zones and the per-zone dwell / cooldown logic of the security app.

Pure numpy and plain Python: no camera, no model. A :class:`Zone` is a polygon in source-frame
pixels or in normalised (0..1) coordinates; a detection is "in" a zone when its anchor point
(bottom-centre of the box by default, the way Frigate places a person's feet) is inside.
:class:`ZoneTracker` turns per-frame detections into events: a (zone, class) pair must be seen
for ``min_dwell_frames`` consecutive inferred frames *and* ``min_dwell_s`` seconds, fires once per
presence, and is then silent until it has left the zone and its cooldown has passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from ...errors import ConfigError

ANCHORS = ("bottom-center", "center", "top-center")


@dataclass(frozen=True)
class Zone:
    """A named polygon with the rules that make an event inside it."""

    name: str
    points: tuple[tuple[float, float], ...]
    normalized: bool = False
    classes: tuple[str, ...] = ()  # empty: every class
    min_score: float = 0.5
    min_dwell_frames: int = 1
    min_dwell_s: float = 0.0
    cooldown_s: float = 30.0
    max_gap_frames: int = 2  # frames an object may be missed before its presence ends
    anchor: str = "bottom-center"

    def __post_init__(self) -> None:
        pts = tuple((float(x), float(y)) for x, y in self.points)
        if len(pts) < 3:
            raise ConfigError(f"zone {self.name!r}: expected at least 3 points, got {len(pts)}")
        if self.normalized and any(not (0.0 <= v <= 1.0) for p in pts for v in p):
            raise ConfigError(f"zone {self.name!r}: normalised points must lie in 0..1, got {list(pts)}")
        if self.anchor not in ANCHORS:
            raise ConfigError(f"zone {self.name!r}: anchor must be one of {', '.join(ANCHORS)}, got {self.anchor!r}")
        if self.min_dwell_frames < 1:
            raise ConfigError(f"zone {self.name!r}: min_dwell_frames must be >= 1, got {self.min_dwell_frames}")
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "classes", tuple(self.classes))

    def polygon_px(self, width: int, height: int) -> np.ndarray:
        """The polygon as an (N, 2) float array in pixels of a ``width`` x ``height`` frame."""
        p = np.asarray(self.points, dtype=np.float64)
        if self.normalized:
            p = p * np.asarray([width, height], dtype=np.float64)
        return p

    def wants(self, label: str, score: float) -> bool:
        return (not self.classes or label in self.classes) and score >= self.min_score


def anchor_points(xyxy: np.ndarray, anchor: str = "bottom-center") -> np.ndarray:
    """The (N, 2) point of each (N, 4) box that decides whether it is inside a zone."""
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    x = (b[:, 0] + b[:, 2]) / 2.0
    y = {"bottom-center": b[:, 3], "center": (b[:, 1] + b[:, 3]) / 2.0, "top-center": b[:, 1]}[anchor]
    return np.stack([x, y], axis=1)


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd ray casting, vectorised over points: (N, 2) points, (M, 2) polygon -> (N,) bool."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    x, y = pts[:, 0:1], pts[:, 1:2]
    x1, y1 = poly[:, 0][None, :], poly[:, 1][None, :]
    x2, y2 = np.roll(poly[:, 0], -1)[None, :], np.roll(poly[:, 1], -1)[None, :]
    crosses = (y1 > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    hits = crosses & (x < x_at)
    return (hits.sum(axis=1) % 2) == 1


@dataclass
class Hit:
    """The best detection of one class inside one zone on one frame."""

    zone: str
    label: str
    class_id: int
    score: float
    box: tuple[float, float, float, float]


def zone_hits(zones: Sequence[Zone], xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
              labels: Sequence[str] | None, frame_wh: tuple[int, int]) -> list[Hit]:
    """For each zone and wanted class, the highest-scoring detection whose anchor is inside."""
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    names = [_label(labels, int(c)) for c in np.asarray(class_ids).reshape(-1)]
    best: dict[tuple[str, str], Hit] = {}
    for zone in zones:
        if len(xyxy) == 0:
            break
        inside = points_in_polygon(anchor_points(xyxy, zone.anchor), zone.polygon_px(*frame_wh))
        for i in np.flatnonzero(inside):
            label, score = names[i], float(scores[i])
            if not zone.wants(label, score):
                continue
            key = (zone.name, label)
            if key not in best or score > best[key].score:
                best[key] = Hit(zone.name, label, int(class_ids[i]), score, tuple(float(v) for v in xyxy[i]))
    return list(best.values())


def _label(labels: Sequence[str] | None, class_id: int) -> str:
    if labels is not None and 0 <= class_id < len(labels):
        return str(labels[class_id])
    return str(class_id)


@dataclass
class _Presence:
    first_t: float
    frames: int = 0
    missed: int = 0
    fired: bool = False


@dataclass
class ZoneTracker:
    """Dwell and cooldown state per (zone, class); :meth:`update` returns the hits that fire now."""

    zones: Sequence[Zone]
    _presence: dict[tuple[str, str], _Presence] = field(default_factory=dict)
    _last_fired: dict[tuple[str, str], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_name = {z.name: z for z in self.zones}
        if len(self._by_name) != len(self.zones):
            raise ConfigError(f"zone names must be unique, got {[z.name for z in self.zones]}")

    def update(self, hits: Iterable[Hit], t: float) -> list[Hit]:
        """Feed one inferred frame's hits at time ``t`` (seconds); return the hits that become events."""
        seen = {(h.zone, h.label): h for h in hits}
        fired: list[Hit] = []
        for key in list(self._presence):
            if key not in seen:
                p = self._presence[key]
                p.missed += 1
                if p.missed > self._by_name[key[0]].max_gap_frames:
                    del self._presence[key]
        for key, hit in seen.items():
            zone = self._by_name[key[0]]
            p = self._presence.get(key)
            if p is None:
                p = self._presence[key] = _Presence(first_t=t)
            p.frames += 1
            p.missed = 0
            if p.fired or p.frames < zone.min_dwell_frames or t - p.first_t < zone.min_dwell_s:
                continue
            last = self._last_fired.get(key)
            if last is not None and t - last < zone.cooldown_s:
                continue
            p.fired = True
            self._last_fired[key] = t
            fired.append(hit)
        return fired

    @property
    def active(self) -> int:
        """How many (zone, class) presences are being tracked (the motion gate keeps inferring then)."""
        return len(self._presence)

    def occupancy(self) -> dict[str, list[str]]:
        """Zone name -> classes currently present (for the dashboard)."""
        out: dict[str, list[str]] = {z.name: [] for z in self.zones}
        for (zone, label), p in self._presence.items():
            if p.missed == 0:
                out[zone].append(label)
        return out
