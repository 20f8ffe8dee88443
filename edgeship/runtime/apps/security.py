"""Security: tracked objects in polygon zones and across tripwires become events with a JPEG snapshot.

Each frame's detections go through a multi-object tracker (:mod:`.tracking`) that gives every
object a stable ``track_id``. Per zone (:mod:`.zones`), a track that stays for the zone's minimum
dwell fires one ``enter`` event (and, when asked, an ``exit`` event with its total dwell); the
occupancy of a zone is the number of tracks inside. Tripwires (:mod:`.lines`) count tracks crossing
them per direction and class, and raise ``line`` events. With ``tracker=False`` the app falls back
to presence per (zone, class) (no lines then). An optional motion gate (:mod:`.motion`) skips
inference on still frames. Events go to every configured event sink (:mod:`.events`: JSON lines,
webhook with a durable outbox, MQTT).

    app = SecurityApp(zones=[Zone("door", [(0.5, 0), (1, 0), (1, 1), (0.5, 1)], normalized=True,
                                  classes=("person",), min_dwell_frames=3, events=("enter", "exit"))],
                      lines=[Line("gate", [(0.5, 0), (0.5, 1)], normalized=True, classes=("person",))],
                      tracker=Tracker(max_age=15, min_hits=2),
                      event_sinks=[JsonlEventSink("events.jsonl")], snapshot_dir="snapshots")
    Pipeline(source, backend, spec=spec, postprocess=post, sinks=[app], gates=app.gates).run()
"""

from __future__ import annotations

import logging
import os
from collections import deque
from typing import Any, Literal, Optional, Sequence

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ...errors import ConfigError
from ..schema import Strict, config_defaults, default_of
from .base import App, iso_time, new_event_id
from .events import EventSinkCfg, event_sink
from .lines import Line, LineCfg, LineCounter
from .motion import MotionCfg, MotionGate
from .snapshots import SnapshotCfg, SnapshotStore, draw_box, draw_polygon, encode_jpeg
from .tracking import Track, Tracker, TrackerCfg, tracker_from_config
from .zones import TrackZones, Zone, ZoneCfg, ZoneTracker, zone_hits

log = logging.getLogger(__name__)

LINE_COLOR = (255, 0, 255)  # BGR magenta


class SecurityCfg(Strict):
    """``app: {type: security, ...}``."""

    type: Literal["security"]
    camera: str = Field("camera", description="the camera's name in every event")
    zones: list[ZoneCfg] = Field([], description="polygons that raise enter (and exit) events per tracked object")
    lines: list[LineCfg] = Field([], description="tripwires that count crossings by direction and class")
    tracker: TrackerCfg = Field(TrackerCfg(), description="the IoU tracker that gives objects stable ids")
    motion: Optional[MotionCfg] = Field(None, description="skip inference on still frames")
    snapshots: Optional[SnapshotCfg] = Field(None, description="folder that keeps a JPEG of every event")
    events: list[EventSinkCfg] = Field([], description="where events go")

    @field_validator("zones", "lines")
    @classmethod
    def _unique(cls, v: list, info: ValidationInfo) -> list:
        names = [z.name for z in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"{info.field_name[:-1]} names must be unique, got {dup} more than once")
        return v

    @model_validator(mode="after")
    def _something_to_watch(self) -> "SecurityCfg":
        if not self.zones and not self.lines:
            raise ValueError("give at least one zone (zones:) or tripwire (lines:)")
        if self.lines and not self.tracker.enabled:
            raise ValueError("lines count tracked objects: they need tracker.enabled: true")
        return self


QUOTA_MB = default_of(SnapshotCfg, "quota_mb")  # the snapshot folder's bound when the Python caller gives none


@config_defaults()
class SecurityApp(App):
    name = "security"
    Config = SecurityCfg

    @classmethod
    def from_config(cls, cfg: SecurityCfg) -> "SecurityApp":
        tracker = tracker_from_config(cfg.tracker)
        snap = cfg.snapshots
        return cls([z.build() for z in cfg.zones], lines=[ln.build() for ln in cfg.lines],
                   tracker=tracker if tracker is not None else False,
                   event_sinks=[event_sink(e) for e in cfg.events], camera=cfg.camera,
                   snapshot_dir=snap.dir if snap else None, snapshot_quota_mb=snap.quota_mb if snap else QUOTA_MB,
                   motion=cfg.motion.options() if cfg.motion else None)

    def __init__(self, zones: Sequence[Zone] = (), *, lines: Sequence[Line] = (), tracker: Tracker | bool = True,
                 event_sinks: Sequence[Any] = (), snapshot_dir: str | os.PathLike | None = None,
                 snapshot_quota_mb: float = QUOTA_MB, motion: dict | None = None, camera: str,
                 recent: int = 50) -> None:
        super().__init__()
        self.zones, self.lines = list(zones), list(lines)
        if not self.zones and not self.lines:
            raise ConfigError("the security app needs at least one zone or line")
        self.tracker: Tracker | None = Tracker() if tracker is True else (tracker or None)
        if self.tracker is None and self.lines:
            raise ConfigError("lines count tracked objects: they need the tracker (tracker.enabled: true)")
        self.zone_tracker = ZoneTracker(self.zones) if self.tracker is None else None  # per (zone, class)
        self.track_zones = TrackZones(self.zones) if self.tracker is not None else None
        self.line_counter = LineCounter(self.lines)
        self.event_sinks = list(event_sinks)
        self.snapshots = SnapshotStore(snapshot_dir, quota_mb=snapshot_quota_mb) if snapshot_dir else None
        self.camera = camera
        self.motion = MotionGate(**motion, keep_alive=lambda: self._active() > 0) if motion is not None else None
        if self.motion is not None:
            self.gates.append(self.motion)
        self.recent: deque[dict] = deque(maxlen=recent)
        self.events = 0
        self.per_zone: dict[str, int] = {z.name: 0 for z in self.zones}
        self._tracks: list[Track] = []  # confirmed tracks seen on the latest inferred frame (for drawing)
        self._opened: list[Any] = []

    def _active(self) -> int:
        """Objects being followed: the motion gate keeps inferring while any exist."""
        if self.tracker is not None:
            return self.tracker.active
        return self.zone_tracker.active

    def open(self, info: dict) -> None:
        super().open(info)
        for sink in self.event_sinks:
            sink.open()
            self._opened.append(sink)

    def write(self, frame, result) -> None:
        dets = result.detections
        self.frames += 1
        if dets is None:
            return
        wh = (frame.width, frame.height)
        if self.tracker is None:
            hits = zone_hits(self.zones, dets.xyxy, dets.scores, dets.class_ids, dets.labels, wh)
            with self._lock:
                fired = self.zone_tracker.update(hits, frame.scene_time)
            for hit in fired:
                self._fire(frame, {"type": "zone", "zone": hit.zone, "action": "enter"},
                           hit.label, hit.class_id, hit.score, hit.box)
            return
        with self._lock:
            tracks = self.tracker.update(dets, frame.scene_time, frame_index=frame.index, tentative=True)
            self._tracks = [tr for tr in tracks if tr.confirmed and tr.seen]
            zone_events = self.track_zones.update(tracks, wh, frame.scene_time)
            crossings = self.line_counter.update(tracks, wh)
        for ev in zone_events:
            self._fire(frame, {"type": "zone", "zone": ev.zone, "action": ev.kind, "track_id": ev.track.track_id,
                               "dwell_s": round(ev.dwell_s, 3), "dwell_frames": ev.dwell_frames}, *_what(ev.track))
        for c in crossings:
            self._fire(frame, {"type": "line", "line": c.line, "direction": c.direction,
                               "track_id": c.track.track_id}, *_what(c.track))

    def _fire(self, frame, fields: dict, label: str, class_id: int, score: float, box) -> None:
        event_id = new_event_id()
        event: dict[str, Any] = {
            "id": event_id,
            "type": fields["type"],
            "camera": self.camera,
            "time": iso_time(frame.t_capture),
            "t_capture": round(frame.t_capture, 6),
            "media_s": None if frame.t_media is None else round(frame.t_media, 3),
            "frame": frame.index,
            **{k: v for k, v in fields.items() if k != "type"},
            "class": label,
            "class_id": class_id,
            "score": round(score, 4),
            "box": [round(v, 1) for v in box],
            "snapshot": None,
        }
        where = fields.get("zone") or fields.get("line")
        tag = f"#{fields['track_id']}" if "track_id" in fields else ""
        image = draw_box(frame.image, box, f"{label}{tag} {score:.2f}")
        jpeg = encode_jpeg(image)
        if self.snapshots is not None:
            kind = fields.get("action") or fields.get("direction")
            path = self.snapshots.save(f"{int(frame.t_capture * 1000)}-{where}-{kind}-{label}-{event_id[:8]}.jpg",
                                       jpeg=jpeg)
            event["snapshot"] = str(path)
        with self._lock:
            self.events += 1
            if "zone" in fields:
                self.per_zone[where] = self.per_zone.get(where, 0) + 1
            self.recent.appendleft(event)
        log.info("event %s: %s%s %s %s (%.2f)", event_id, label, tag, fields.get("action") or fields.get("direction"),
                 where, score)
        for sink in self.event_sinks:
            try:
                sink.emit(event, jpeg)
            except Exception:  # one broken sink must not stop the others or the pipeline
                log.exception("event sink %s failed on event %s", type(sink).__name__, event_id)

    def annotate(self, image, result) -> None:
        """Zones, tripwires (with their in/out counts) and the confirmed tracks' ids, drawn in place."""
        import cv2

        h, w = image.shape[:2]
        for z in self.zones:
            draw_polygon(image, z.polygon_px(w, h), z.name)
        with self._lock:
            counts = self.line_counter.status()
            tracks = list(self._tracks) if result is not None else []
        for line in self.lines:
            (ax, ay), (bx, by) = (tuple(int(round(v)) for v in p) for p in line.segment_px(w, h))
            cv2.line(image, (ax, ay), (bx, by), LINE_COLOR, 2, cv2.LINE_AA)
            c = counts[line.name]
            cv2.putText(image, f"{line.name} in {c['in']} out {c['out']}", (min(ax, bx) + 3, max(12, min(ay, by) + 14)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.45, LINE_COLOR, 1, cv2.LINE_AA)
        for tr in tracks:
            x1, y1 = int(round(tr.box[0])), int(round(tr.box[1]))
            text = f"#{tr.track_id}"
            cv2.putText(image, text, (x1 + 2, y1 + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(image, text, (x1 + 2, y1 + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)

    def status(self) -> dict:
        with self._lock:
            out = {
                "app": self.name,
                "frames": self.frames,
                "events": self.events,
                "events_per_zone": dict(self.per_zone),
                "recent_events": list(self.recent)[:20],
                "sinks": [s.status() for s in self.event_sinks],
            }
            if self.tracker is None:
                out["occupancy"] = self.zone_tracker.occupancy()
            else:
                occupants = self.track_zones.occupants()
                out["occupancy"] = {z: [o["label"] for o in occ] for z, occ in occupants.items()}
                out["occupancy_count"] = {z: len(occ) for z, occ in occupants.items()}
                out["occupants"] = occupants
                out["tracks"] = [tr.to_dict() for tr in self._tracks]
                out["tracker"] = self.tracker.status()
                out["lines"] = self.line_counter.status()
        if self.motion is not None:
            out["motion"] = self.motion.status()
        if self.snapshots is not None:
            out["snapshots"] = {"saved": self.snapshots.saved, "rotated": self.snapshots.rotated}
        return out

    def close(self) -> None:
        while self._opened:
            sink = self._opened.pop()
            try:
                sink.close()
            except Exception:
                log.exception("closing event sink %s failed", type(sink).__name__)


def _what(track: Track) -> tuple[str, int, float, tuple[float, float, float, float]]:
    return track.label, track.class_id, track.score, track.box
