"""Security: objects of interest in polygon zones become events with a JPEG snapshot.

A detector's boxes are tested against each zone (:mod:`.zones`); a (zone, class) that stays for
the zone's minimum dwell fires one event, then waits for its cooldown. An optional motion gate
(:mod:`.motion`) skips inference on still frames. Events go to every configured event sink
(:mod:`.events`: JSON lines, webhook with a durable outbox, MQTT).

    app = SecurityApp(zones=[Zone("door", [(0.5, 0), (1, 0), (1, 1), (0.5, 1)], normalized=True,
                                  classes=("person",), min_dwell_frames=3, cooldown_s=30)],
                      event_sinks=[JsonlEventSink("events.jsonl")], snapshot_dir="snapshots")
    Pipeline(source, backend, spec=spec, postprocess=post, sinks=[app], gates=app.gates).run()
"""

from __future__ import annotations

import logging
import os
from collections import deque
from typing import Any, Sequence

from .base import App, iso_time, new_event_id
from .motion import MotionGate
from .snapshots import SnapshotStore, draw_box, draw_polygon, encode_jpeg
from .zones import Hit, Zone, ZoneTracker, zone_hits

log = logging.getLogger(__name__)


class SecurityApp(App):
    name = "security"

    def __init__(self, zones: Sequence[Zone], *, event_sinks: Sequence[Any] = (),
                 snapshot_dir: str | os.PathLike | None = None, snapshot_quota_mb: float = 200.0,
                 motion: dict | None = None, camera: str = "camera", recent: int = 50) -> None:
        super().__init__()
        self.zones = list(zones)
        self.tracker = ZoneTracker(self.zones)
        self.event_sinks = list(event_sinks)
        self.snapshots = SnapshotStore(snapshot_dir, quota_mb=snapshot_quota_mb) if snapshot_dir else None
        self.camera = camera
        self.motion = MotionGate(**motion, keep_alive=lambda: self.tracker.active > 0) if motion is not None else None
        if self.motion is not None:
            self.gates.append(self.motion)
        self.recent: deque[dict] = deque(maxlen=recent)
        self.events = 0
        self.per_zone: dict[str, int] = {z.name: 0 for z in self.zones}
        self._opened: list[Any] = []

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
        hits = zone_hits(self.zones, dets.xyxy, dets.scores, dets.class_ids, dets.labels,
                         (frame.width, frame.height))
        for hit in self.tracker.update(hits, frame.t_capture):
            self._fire(frame, result, hit)

    def _fire(self, frame, result, hit: Hit) -> None:
        event_id = new_event_id()
        event: dict[str, Any] = {
            "id": event_id,
            "type": "zone",
            "camera": self.camera,
            "time": iso_time(frame.t_capture),
            "t_capture": round(frame.t_capture, 6),
            "frame": frame.index,
            "zone": hit.zone,
            "class": hit.label,
            "class_id": hit.class_id,
            "score": round(hit.score, 4),
            "box": [round(v, 1) for v in hit.box],
            "snapshot": None,
        }
        image = draw_box(frame.image, hit.box, f"{hit.label} {hit.score:.2f}")
        jpeg = encode_jpeg(image)
        if self.snapshots is not None:
            path = self.snapshots.save(f"{int(frame.t_capture * 1000)}-{hit.zone}-{hit.label}-{event_id[:8]}.jpg",
                                       jpeg=jpeg)
            event["snapshot"] = str(path)
        with self._lock:
            self.events += 1
            self.per_zone[hit.zone] = self.per_zone.get(hit.zone, 0) + 1
            self.recent.appendleft(event)
        log.info("event %s: %s in %s (%.2f)", event_id, hit.label, hit.zone, hit.score)
        for sink in self.event_sinks:
            try:
                sink.emit(event, jpeg)
            except Exception:  # one broken sink must not stop the others or the pipeline
                log.exception("event sink %s failed on event %s", type(sink).__name__, event_id)

    def annotate(self, image, result) -> None:
        h, w = image.shape[:2]
        for z in self.zones:
            draw_polygon(image, z.polygon_px(w, h), z.name)

    def status(self) -> dict:
        with self._lock:
            out = {
                "app": self.name,
                "frames": self.frames,
                "events": self.events,
                "events_per_zone": dict(self.per_zone),
                "occupancy": self.tracker.occupancy(),
                "recent_events": list(self.recent)[:20],
                "sinks": [s.status() for s in self.event_sinks],
            }
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
