"""Industrial inspection: pass/fail per triggered frame, reject signal, persistent counters.

A trigger (:mod:`.triggers`) selects the frames to inspect; :func:`judge` turns a result into a
verdict from class names and score thresholds; a failed part sends a reject signal to the
configured output (:mod:`.outputs`), its frame is saved for review, and the counters
(:mod:`.counters`, SQLite, per hour and class) survive restarts. ``edgeship stats DB`` prints
the yield per hour.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Sequence

import numpy as np
from pydantic import Field, model_validator

from ...errors import ConfigError
from ..schema import OutFile, Score, Strict, checked, default_of

UNCERTAIN = ("pass", "fail")  # what a score below its class threshold counts as
from .base import App, iso_time, new_event_id
from .counters import Counters
from .events import EventSinkCfg, event_sink
from .outputs import OutputCfg, reject_output
from .snapshots import SnapshotCfg, SnapshotStore
from .triggers import EveryFrameTrigger, TriggerCfg, trigger

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PassRule:
    """How a result becomes pass or fail.

    Classification: the top class must be in ``pass_classes`` (or must not be in ``fail_classes``)
    with a score of at least its threshold (``class_thresholds`` or ``min_score``); a lower score is
    ``uncertain`` (failed by default: a factory rejects what it cannot vouch for).
    Detection: any box of a ``fail_classes`` class above its threshold fails; with
    ``pass_classes`` at least one box of those classes must be found.
    Raw outputs: the first output's maximum must not exceed ``fail_above``.
    """

    pass_classes: tuple[str, ...] = ()
    fail_classes: tuple[str, ...] = ()
    min_score: float = 0.0
    class_thresholds: dict[str, float] = field(default_factory=dict)
    uncertain: str = "fail"
    fail_above: float | None = None

    def __post_init__(self) -> None:
        if self.pass_classes and self.fail_classes:
            raise ConfigError("give pass_classes or fail_classes, not both")
        if self.uncertain not in UNCERTAIN:
            raise ConfigError(f"inspection: uncertain must be one of {', '.join(UNCERTAIN)}, got {self.uncertain!r}")
        object.__setattr__(self, "pass_classes", tuple(str(c) for c in self.pass_classes))
        object.__setattr__(self, "fail_classes", tuple(str(c) for c in self.fail_classes))

    def threshold(self, label: str) -> float:
        return float(self.class_thresholds.get(label, self.min_score))


@dataclass(frozen=True)
class Verdict:
    passed: bool
    label: str
    score: float | None
    reason: str


def judge(result, rule: PassRule) -> Verdict:
    """Pass or fail one result (classification, detections or raw outputs) under ``rule``."""
    if result.classification is not None:
        return _judge_classification(result.classification, rule)
    if result.detections is not None:
        return _judge_detections(result.detections, rule)
    if rule.fail_above is None:
        raise ConfigError("inspection of raw outputs needs fail_above (a score threshold)")
    score = float(np.max(result.raw[0]))
    ok = score <= rule.fail_above
    return Verdict(ok, "raw", score, f"score {score:.4g} {'<=' if ok else '>'} {rule.fail_above:g}")


def _judge_classification(cls, rule: PassRule) -> Verdict:
    label, score = str(cls.label), float(cls.score)
    if score < rule.threshold(label):
        return Verdict(rule.uncertain == "pass", label, score, f"uncertain: score {score:.3f} < {rule.threshold(label):g}")
    if rule.pass_classes:
        ok = label in rule.pass_classes
        return Verdict(ok, label, score, "pass class" if ok else "not a pass class")
    if rule.fail_classes:
        ok = label not in rule.fail_classes
        return Verdict(ok, label, score, "not a fail class" if ok else "fail class")
    return Verdict(True, label, score, "no class rule")


def _judge_detections(dets, rule: PassRule) -> Verdict:
    names = dets.names
    kept = [(n, float(s)) for n, s in zip(names, dets.scores) if float(s) >= rule.threshold(n)]
    bad = sorted(((s, n) for n, s in kept if n in rule.fail_classes), reverse=True)
    if bad:
        return Verdict(False, bad[0][1], bad[0][0], f"{len(bad)} defect(s) found")
    if rule.pass_classes:
        good = sorted(((s, n) for n, s in kept if n in rule.pass_classes), reverse=True)
        if not good:
            return Verdict(False, "none", None, "no pass-class object found")
        return Verdict(True, good[0][1], good[0][0], "pass-class object found")
    best = max(kept, key=lambda t: t[1]) if kept else ("none", None)
    return Verdict(True, best[0], best[1], "no defect found")


class InspectCfg(Strict):
    """The ``inspect:`` section (keys = :class:`PassRule` fields)."""

    pass_classes: list[str] = Field([], description="a part passes only when one of these classes is found (detectors) or is the top class")
    fail_classes: list[str] = Field([], description="a part fails when one of these classes is found or is the top class")
    min_score: Score = Field(0.0, description="detections and top classes below this score do not count")
    class_thresholds: dict[str, Score] = Field({}, description="a minimum score per class, over min_score")
    uncertain: Literal[UNCERTAIN] = Field("fail", description="the verdict when the top class scores under min_score")  # type: ignore[valid-type]
    fail_above: Optional[float] = Field(None, description="raw outputs: fail when the first output's value is above this")

    @model_validator(mode="after")
    def _rule(self) -> "InspectCfg":
        checked(self.build)()  # PassRule's own checks (one pass/fail rule)
        return self

    def build(self) -> PassRule:
        return PassRule(**self.options())


class IndustrialCfg(Strict):
    """``app: {type: industrial, ...}``."""

    type: Literal["industrial"]
    counters: OutFile = Field(description="SQLite file of the pass/fail counters (kept across restarts; `edgeship stats` reads it)")
    inspect: InspectCfg = Field(InspectCfg(), description="the pass/fail rule")
    trigger: TriggerCfg = Field(TriggerCfg(), description="which frames are inspected")
    outputs: list[OutputCfg] = Field([], description="reject signals sent for every failed part")
    rejects: Optional[SnapshotCfg] = Field(None, description="folder that keeps the frame of every failed part")
    events: list[EventSinkCfg] = Field([], description="where every inspection record goes")


QUOTA_MB = default_of(SnapshotCfg, "quota_mb")  # the reject folder's bound when the Python caller gives none


class IndustrialApp(App):
    name = "industrial"
    Config = IndustrialCfg

    @classmethod
    def from_config(cls, cfg: IndustrialCfg) -> "IndustrialApp":
        rej = cfg.rejects
        return cls(cfg.inspect.build(), counters_db=cfg.counters, trigger=trigger(cfg.trigger),
                   outputs=[reject_output(o) for o in cfg.outputs],
                   reject_dir=rej.dir if rej else None, reject_quota_mb=rej.quota_mb if rej else QUOTA_MB,
                   event_sinks=[event_sink(e) for e in cfg.events])

    def __init__(self, rule: PassRule, *, counters_db: str | os.PathLike, trigger: Any = None,
                 outputs: Sequence[Any] = (), reject_dir: str | os.PathLike | None = None,
                 reject_quota_mb: float = QUOTA_MB, event_sinks: Sequence[Any] = (), recent: int = 50) -> None:
        super().__init__()
        self.rule = rule
        self.trigger = trigger or EveryFrameTrigger()
        self.gates.append(self.trigger)
        self.counters_db = counters_db
        self.counters: Counters | None = None
        self.outputs = list(outputs)
        self.event_sinks = list(event_sinks)
        self.rejects = SnapshotStore(reject_dir, quota_mb=reject_quota_mb) if reject_dir else None
        self.recent: deque[dict] = deque(maxlen=recent)
        self.session = {"total": 0, "pass": 0, "fail": 0}
        self._opened: list[Any] = []
        self._final_counters: dict | None = None
        self._last_seen = 0.0  # the scene time of the last frame inspected (an open drift episode ends there)

    def open(self, info: dict) -> None:
        super().open(info)
        self.counters = Counters(self.counters_db)
        # an episode a run that died left open: it ended when that run did, at a time nobody recorded
        self.counters.drift_stopped(0.0, camera=self.info.get("camera") or "")
        for item in [*self.outputs, *self.event_sinks, self.trigger]:
            if not hasattr(item, "open"):
                continue
            item.open()
            self._opened.append(item)

    def routes(self):
        handler = getattr(self.trigger, "http_handler", None)
        return [("POST", "/trigger", handler)] if handler else []

    def write(self, frame, result) -> None:
        v = judge(result, self.rule)
        self.frames += 1
        camera = self.info.get("camera")
        record: dict[str, Any] = {
            "id": new_event_id(), "type": "inspection", **({"camera": camera} if camera else {}),
            "time": iso_time(frame.t_capture),
            "t_capture": round(frame.t_capture, 6), "frame": frame.index,
            "verdict": "pass" if v.passed else "fail", "label": v.label,
            "score": None if v.score is None else round(v.score, 4), "reason": v.reason,
            "tag": self.trigger.tag_for(frame.index), "image": None,
        }
        self.counters.record(v.label, v.passed, frame.t_capture, camera=camera or "")
        self._last_seen = frame.scene_time
        if not v.passed:
            if self.rejects is not None:
                name = f"{int(frame.t_capture * 1000)}-{camera + '-' if camera else ''}{frame.index}-{v.label}-{record['id'][:8]}.jpg"
                record["image"] = str(self.rejects.save(name, frame.image))
            for out in self.outputs:
                try:
                    out.reject(record)
                except Exception:
                    log.exception("reject output %s failed", type(out).__name__)
        for sink in self.event_sinks:
            try:
                sink.emit(record, None)
            except Exception:
                log.exception("event sink %s failed", type(sink).__name__)
        with self._lock:
            self.session["total"] += 1
            self.session["pass" if v.passed else "fail"] += 1
            self.recent.appendleft(record)

    def on_drift(self, event: dict) -> None:
        """The drift watch's events (:func:`edgeship.runtime.apps.deploy.drift_events`): each episode is kept in the
        counters database, where ``edgeship stats`` lists it."""
        if self.counters is None:
            return
        camera = self.info.get("camera") or ""
        if event["type"] == "drift":
            self.counters.drift_started(event["since"], event.get("what") or {}, camera=camera)
        elif event["type"] == "recovered":
            self.counters.drift_ended(event["since"], event["time"], camera=camera)

    def annotate(self, image, result) -> None:
        import cv2

        with self._lock:
            last = self.recent[0] if self.recent else None
        if last is not None:
            ok = last["verdict"] == "pass"
            cv2.putText(image, f"{last['verdict'].upper()} {last['label']}", (8, 24), cv2.FONT_HERSHEY_SIMPLEX,
                        0.7, (0, 200, 0) if ok else (0, 0, 255), 2, cv2.LINE_AA)

    def status(self) -> dict:
        with self._lock:
            out = {"app": self.name, "frames": self.frames, "session": dict(self.session),
                   "recent_inspections": list(self.recent)[:20]}
        out["counters"] = self.counters.totals(camera=self.info.get("camera")) if self.counters else self._final_counters
        out["trigger"] = self.trigger.status()
        out["outputs"] = [o.status() for o in self.outputs if hasattr(o, "status")]
        out["sinks"] = [s.status() for s in self.event_sinks if hasattr(s, "status")]
        return out

    def close(self) -> None:
        while self._opened:
            item = self._opened.pop()
            try:
                if hasattr(item, "close"):
                    item.close()
            except Exception:
                log.exception("closing %s failed", type(item).__name__)
        if self.counters is not None:
            self.counters.drift_stopped(self._last_seen, camera=self.info.get("camera") or "")
            self._final_counters = self.counters.totals(camera=self.info.get("camera"))
            self.counters.close()
            self.counters = None
