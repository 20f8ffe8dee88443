"""Polygon zones and the per-zone dwell / cooldown logic of the security app.

Pure numpy and plain Python: no camera, no model. A :class:`Zone` is a polygon in source-frame
pixels or in normalised (0..1) coordinates; a detection is "in" a zone when its anchor point
(bottom-centre of the box by default, the way Frigate places a person's feet) is inside.

Two engines turn per-frame detections into events:

- :class:`TrackZones` (the default, fed by :mod:`.tracking`): per tracked object. A track whose
  anchor stays in a zone for ``min_dwell_frames`` inferred frames *and* ``min_dwell_s`` seconds
  fires one ``enter`` event with its ``track_id`` and dwell; leaving (or being lost) fires an
  ``exit`` event with the total dwell when the zone asks for it (``events``). Occupancy is the
  number of tracks inside. ``cooldown_s`` silences the same track coming back into the same zone.
- :class:`ZoneTracker` (``tracker: {enabled: false}``): per (zone, class) presence, for detectors
  too sparse in time to track: a (zone, class) pair fires once per presence, then waits for its
  cooldown. It cannot tell two objects of one class apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Literal, Optional, Sequence

import numpy as np
from pydantic import Field, field_validator, model_validator

from ...errors import ConfigError
from ..schema import Score, Strict, checked, default_of, validated

if TYPE_CHECKING:
    from .tracking import Track

ANCHORS = ("bottom-center", "center", "top-center")
ZONE_EVENTS = ("enter", "exit")


def check_zone_points(pts: Sequence[Any], where: str = "") -> Sequence[Any]:
    """A zone is a polygon: at least 3 points."""
    if len(pts) < 3:
        raise ConfigError(f"{where}expected at least 3 points, got {len(pts)}")
    return pts


def place_checked(place: Any, config: type["PlaceCfg"], kind: str) -> None:
    """A Zone or Line dataclass checked by its config model (the one home of its rules), then its points
    and classes stored as tuples."""
    from dataclasses import fields

    validated(config, f"{kind} {place.name!r}", **{f.name: getattr(place, f.name) for f in fields(place)})
    object.__setattr__(place, "points", tuple((float(x), float(y)) for x, y in place.points))
    if place.normalized is None:
        object.__setattr__(place, "normalized", looks_normalized(place.points))
    object.__setattr__(place, "classes", tuple(place.classes))


def looks_normalized(points: Sequence[Sequence[float]]) -> bool:
    """Points given without ``normalized`` are normalised when every coordinate is within 0..1."""
    return all(0.0 <= v <= 1.0 for p in points for v in p)


def points_px(points: Sequence[tuple[float, float]], normalized: bool, width: int, height: int) -> np.ndarray:
    """Points as an (N, 2) float array in pixels of a ``width`` x ``height`` frame."""
    p = np.asarray(points, dtype=np.float64)
    if normalized:
        p = p * np.asarray([width, height], dtype=np.float64)
    return p


def wants(classes: tuple[str, ...], min_score: float, label: str, score: float) -> bool:
    """Whether a detection of ``label`` at ``score`` counts for a zone or line with these filters."""
    return (not classes or label in classes) and score >= min_score


class PlaceCfg(Strict):
    """What a zone and a tripwire line share in the config: a name, points, and which detections count."""

    name: str = Field(min_length=1, description="the name events and counts carry")
    points: list[tuple[float, float]] = Field(description="corners (zones: 3 or more) or ends A, B (lines), in pixels or 0..1")
    normalized: Optional[bool] = Field(None, description="None: normalised when every coordinate is within 0..1")
    classes: list[str] = Field([], description="classes that count (empty: every class)")
    min_score: Score = Field(0.5, description="detections below this score do not count")
    anchor: Literal[ANCHORS] = Field("bottom-center", description="the point of a box that decides where it is")  # type: ignore[valid-type]

    points_rule: ClassVar[Callable[..., Any]]  # the subclass's point-count check (zones: 3+, lines: 2)
    builds: ClassVar[type]  # the dataclass a config entry builds

    @field_validator("points")
    @classmethod
    def _points(cls, v: list) -> list:
        return checked(cls.points_rule)(v)

    def build(self) -> Any:
        return type(self).builds(**self.options())

    @model_validator(mode="after")
    def _normalised_in_range(self) -> "PlaceCfg":
        if self.normalized and not looks_normalized(self.points):
            raise ValueError(f"normalised points must lie in 0..1, got {[list(p) for p in self.points]}")
        return self

    def options(self) -> dict[str, Any]:
        opts = super().options()
        if opts["normalized"] is None:
            opts["normalized"] = looks_normalized(opts["points"])
        return {**opts, "classes": tuple(opts["classes"])}


class ZoneCfg(PlaceCfg):
    """One entry of the security app's ``zones:`` (keys = :class:`Zone` fields)."""

    min_dwell_frames: int = Field(1, ge=1, description="inferred frames an object spends inside before its enter event")
    min_dwell_s: float = Field(0.0, ge=0, description="seconds an object spends inside before its enter event (scene time)")
    cooldown_s: float = Field(30.0, ge=0, description="the same object back in the zone within this many seconds stays silent")
    max_gap_frames: int = Field(2, ge=0, description="frames an object may be missed inside before its visit ends")
    events: list[Literal[ZONE_EVENTS]] = Field(["enter"], description="per-track events (with the tracker)")  # type: ignore[valid-type]

    points_rule = staticmethod(check_zone_points)


@dataclass(frozen=True)
class Zone:
    """A named polygon with the rules that make an event inside it."""

    name: str
    points: tuple[tuple[float, float], ...]
    # every default is ZoneCfg's (the one home of each): Python callers and config files get the same zone
    normalized: bool | None = default_of(ZoneCfg, "normalized")  # None: normalised when every coordinate is in 0..1
    classes: tuple[str, ...] = default_of(ZoneCfg, "classes")  # empty: every class
    min_score: float = default_of(ZoneCfg, "min_score")
    min_dwell_frames: int = default_of(ZoneCfg, "min_dwell_frames")
    min_dwell_s: float = default_of(ZoneCfg, "min_dwell_s")
    cooldown_s: float = default_of(ZoneCfg, "cooldown_s")
    max_gap_frames: int = default_of(ZoneCfg, "max_gap_frames")  # frames an object may be missed before its presence ends
    anchor: str = default_of(ZoneCfg, "anchor")
    events: tuple[str, ...] = default_of(ZoneCfg, "events")  # per-track events this zone emits (TrackZones only)

    def __post_init__(self) -> None:
        place_checked(self, ZoneCfg, "zone")
        object.__setattr__(self, "events", tuple(self.events))

    def polygon_px(self, width: int, height: int) -> np.ndarray:
        """The polygon as an (N, 2) float array in pixels of a ``width`` x ``height`` frame."""
        return points_px(self.points, self.normalized, width, height)

    def wants(self, label: str, score: float) -> bool:
        return wants(self.classes, self.min_score, label, score)


ZoneCfg.builds = Zone  # what a zones: entry builds


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


# ---- per-track zones ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ZoneEvent:
    """A track entering (dwell reached) or leaving a zone; ``dwell_s`` is the time inside so far / in total."""

    kind: str  # "enter" | "exit"
    zone: str
    track: "Track"
    dwell_s: float
    dwell_frames: int


@dataclass
class _Visit:
    track: "Track"
    first_t: float
    last_t: float
    frames: int = 1
    missed: int = 0
    qualified: bool = False  # reached the zone's dwell
    announced: bool = False  # its enter was reported (an exit is reported only for these: none inside a cooldown)


@dataclass
class TrackZones:
    """Dwell, enter/exit and occupancy per (zone, track); :meth:`update` once per inferred frame."""

    zones: Sequence[Zone]
    _visits: dict[tuple[str, int], _Visit] = field(default_factory=dict)
    _last_fired: dict[tuple[str, int], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_name = {z.name: z for z in self.zones}
        if len(self._by_name) != len(self.zones):
            raise ConfigError(f"zone names must be unique, got {[z.name for z in self.zones]}")

    def update(self, tracks: Sequence["Track"], frame_wh: tuple[int, int], t: float) -> list[ZoneEvent]:
        """Feed the tracker's live tracks (tentative ones included) at time ``t``; return the events now."""
        alive = {tr.track_id: tr for tr in tracks}
        inside = self._inside(tracks, frame_wh)
        events: list[ZoneEvent] = []
        for key in list(self._visits):
            visit, zone = self._visits[key], self._by_name[key[0]]
            tr = alive.get(key[1])
            if key in inside:
                visit.track, visit.frames, visit.missed, visit.last_t = tr, visit.frames + 1, 0, t
                continue
            if tr is not None and not tr.seen:  # coasting through an occlusion: the visit holds for a while
                visit.track, visit.missed = tr, visit.missed + 1
                if visit.missed <= zone.max_gap_frames:
                    continue
            del self._visits[key]  # seen outside, lost, or unseen too long
            if visit.announced and "exit" in zone.events:
                events.append(ZoneEvent("exit", zone.name, visit.track, visit.last_t - visit.first_t, visit.frames))
        for key, tr in inside.items():
            if key not in self._visits:
                self._visits[key] = _Visit(tr, first_t=t, last_t=t)
        for key, visit in self._visits.items():
            zone = self._by_name[key[0]]
            if visit.qualified or not visit.track.confirmed or visit.missed:
                continue
            if visit.frames < zone.min_dwell_frames or t - visit.first_t < zone.min_dwell_s:
                continue
            visit.qualified = True
            last = self._last_fired.get(key)
            if last is not None and t - last < zone.cooldown_s:
                continue  # the same track back in the same zone within the cooldown
            self._last_fired[key] = t
            visit.announced = True
            if "enter" in zone.events:
                events.append(ZoneEvent("enter", zone.name, visit.track, t - visit.first_t, visit.frames))
        self._forget(alive, t)
        return events

    def _inside(self, tracks: Sequence["Track"], frame_wh: tuple[int, int]) -> dict[tuple[str, int], "Track"]:
        seen = [tr for tr in tracks if tr.seen]
        out: dict[tuple[str, int], Track] = {}
        if not seen:
            return out
        boxes = np.asarray([tr.box for tr in seen], dtype=np.float64)
        for zone in self.zones:
            hit = points_in_polygon(anchor_points(boxes, zone.anchor), zone.polygon_px(*frame_wh))
            for tr, h in zip(seen, hit):
                if h and zone.wants(tr.label, tr.score):
                    out[(zone.name, tr.track_id)] = tr
        return out

    def _forget(self, alive: dict, t: float) -> None:
        """Drop cooldown memories of tracks that are gone and whose cooldown is over (bounded memory)."""
        for key, last in list(self._last_fired.items()):
            if key[1] not in alive and t - last >= self._by_name[key[0]].cooldown_s:
                del self._last_fired[key]

    @property
    def active(self) -> int:
        """Visits in progress."""
        return len(self._visits)

    def occupants(self) -> dict[str, list[dict]]:
        """Zone name -> the confirmed tracks inside: track_id, label, dwell_s (oldest first)."""
        out: dict[str, list[dict]] = {z.name: [] for z in self.zones}
        for (zone, tid), v in sorted(self._visits.items(), key=lambda kv: kv[1].first_t):
            if v.track.confirmed:
                out[zone].append({"track_id": tid, "label": v.track.label, "dwell_s": round(v.last_t - v.first_t, 3)})
        return out

    def occupancy(self) -> dict[str, list[str]]:
        """Zone name -> the label of each confirmed track inside (one entry per object)."""
        return {z: [o["label"] for o in occ] for z, occ in self.occupants().items()}
