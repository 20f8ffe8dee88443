"""The apps' pure logic on hand-built inputs: zones, dwell, cooldown, motion gate, snapshots quota,
outbox, triggers, pass/fail rules, counters, robot state."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgeship.errors import ConfigError
from edgeship.runtime.apps.counters import Counters, class_totals, yield_per_hour
from edgeship.runtime.apps.industrial import PassRule, judge
from edgeship.runtime.apps.motion import MotionGate
from edgeship.runtime.apps.outbox import Outbox, backoff_delay
from edgeship.runtime.apps.robot import build_state
from edgeship.runtime.apps.snapshots import SnapshotStore
from edgeship.runtime.apps.triggers import ExternalTrigger, IntervalTrigger
from edgeship.runtime.apps.zones import Hit, Zone, ZoneTracker, anchor_points, points_in_polygon, zone_hits
from edgeship.runtime.types import Classification, Detections, Frame, Result


def test_points_in_polygon_square_and_concave():
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    pts = np.array([[5, 5], [15, 5], [-1, 5], [9.9, 9.9], [5, 11]])
    assert points_in_polygon(pts, square).tolist() == [True, False, False, True, False]
    # an L shape: the notch (7, 7) is outside
    ell = np.array([[0, 0], [10, 0], [10, 4], [4, 4], [4, 10], [0, 10]], float)
    assert points_in_polygon(np.array([[2, 8], [7, 2], [7, 7]]), ell).tolist() == [True, True, False]


def test_anchor_points_and_normalised_zone():
    boxes = np.array([[10, 10, 30, 50]], float)
    assert anchor_points(boxes, "bottom-center").tolist() == [[20, 50]]
    assert anchor_points(boxes, "center").tolist() == [[20, 30]]
    z = Zone("right", [(0.5, 0), (1, 0), (1, 1), (0.5, 1)], normalized=True)
    assert z.polygon_px(200, 100).tolist() == [[100, 0], [200, 0], [200, 100], [100, 100]]
    with pytest.raises(ConfigError, match="at least 3 points"):
        Zone("bad", [(0, 0), (1, 1)])
    with pytest.raises(ConfigError, match="0..1"):
        Zone("bad", [(0, 0), (2, 0), (1, 1)], normalized=True)


def test_zone_hits_filters_class_score_and_keeps_best():
    z = Zone("door", [(0, 0), (100, 0), (100, 100), (0, 100)], classes=("person",), min_score=0.5, anchor="center")
    xyxy = np.array([[10, 10, 20, 20], [30, 30, 40, 40], [50, 50, 60, 60], [150, 150, 160, 160]], float)
    hits = zone_hits([z], xyxy, np.array([0.6, 0.9, 0.95, 0.99]), np.array([0, 0, 1, 0]), ("person", "car"), (200, 200))
    assert len(hits) == 1 and hits[0].label == "person" and hits[0].score == pytest.approx(0.9)
    assert hits[0].box == (30, 30, 40, 40)


def _hit(zone="door", label="person"):
    return Hit(zone, label, 0, 0.9, (0, 0, 1, 1))


def test_dwell_frames_fires_once_per_presence_and_cooldown():
    z = Zone("door", [(0, 0), (1, 0), (1, 1)], min_dwell_frames=3, cooldown_s=10, max_gap_frames=1)
    tr = ZoneTracker([z])
    fired = [len(tr.update([_hit()], t=i * 0.1)) for i in range(6)]
    assert fired == [0, 0, 1, 0, 0, 0]  # once, on the 3rd consecutive frame
    # one missed frame is tolerated (max_gap_frames=1), two end the presence
    tr.update([], t=0.7)
    tr.update([], t=0.8)
    # back within the cooldown: a new presence, but silent
    assert sum(len(tr.update([_hit()], t=1.0 + i * 0.1)) for i in range(5)) == 0
    tr.update([], t=2.0)
    tr.update([], t=2.1)
    # after the cooldown: fires again after its dwell
    assert [len(tr.update([_hit()], t=20 + i)) for i in range(4)] == [0, 0, 1, 0]


def test_dwell_seconds_and_independent_classes():
    z = Zone("yard", [(0, 0), (1, 0), (1, 1)], min_dwell_frames=1, min_dwell_s=2.0, cooldown_s=0)
    tr = ZoneTracker([z])
    out = [[h.label for h in tr.update([_hit("yard", "car"), _hit("yard", "person")] if t < 3 else [_hit("yard", "car")], t=t)]
           for t in (0.0, 1.0, 2.5, 3.0)]
    assert out == [[], [], ["car", "person"], []]
    assert tr.occupancy() == {"yard": ["car"]}


def _frame(img, i=0, t=None):
    t = time.time() if t is None else t
    return Frame(img, i, t, time.monotonic(), "test")


def test_motion_gate_skips_still_frames():
    rng = np.random.default_rng(0)
    still = np.full((120, 160, 3), 40, np.uint8)
    gate = MotionGate(threshold=20, min_area=0.01, hold_frames=2, max_skip=1000)
    decisions = []
    for i in range(45):
        img = still.copy()
        img += rng.integers(0, 3, size=img.shape, dtype=np.uint8)  # sensor noise only
        if 10 <= i < 15:  # a bright block moves through
            x = 20 + 15 * (i - 10)
            img[40:80, x:x + 30] = 230
        decisions.append(gate.should_infer(_frame(img, i)))
    assert decisions[0] is True  # first frame: no background yet
    assert not any(decisions[4:10])  # still -> skipped
    assert all(decisions[10:15])  # motion -> inferred
    # the running-average background forgets the block within ~10 frames (alpha 0.2), then still again
    assert all(decisions[15:18]) and not any(decisions[32:45])
    assert gate.skipped == decisions.count(False)
    # keep_alive (objects tracked in a zone) forces inference on still frames
    tracked = MotionGate(threshold=20, min_area=0.01, hold_frames=0, keep_alive=lambda: True)
    assert all(tracked.should_infer(_frame(still, i)) for i in range(5))
    # max_skip forces one inference every N frames
    periodic = MotionGate(threshold=20, min_area=0.01, hold_frames=0, max_skip=4)
    d = [periodic.should_infer(_frame(still, i)) for i in range(13)]
    assert d == [True, False, False, False, True, False, False, False, True, False, False, False, True]


def test_snapshot_store_rotates_oldest_under_quota(tmp_path):
    store = SnapshotStore(tmp_path / "snaps", quota_mb=0.01)  # ~10 kB
    rng = np.random.default_rng(1)
    for i in range(8):
        store.save(f"{i:02d}.jpg", rng.integers(0, 255, size=(64, 64, 3), dtype=np.uint8))
        time.sleep(0.01)
    names = [p.name for p in store.files()]
    assert store.usage_bytes() <= 0.01 * 1024 * 1024 or len(names) == 1
    assert names[-1] == "07.jpg" and "00.jpg" not in names
    assert store.rotated == 8 - len(names) and store.saved == 8


def test_outbox_is_durable_idempotent_and_backs_off(tmp_path):
    db = tmp_path / "q.sqlite"
    box = Outbox(db, base_s=0.5, max_s=4)
    assert box.put("a", b"1") and not box.put("a", b"1") and box.put("b", b"2")
    assert [p.id for p in box.due()] == ["a", "b"]
    delay = box.fail("a", "down")
    assert delay == 0.5 and box.due() == []  # in order: "b" waits behind "a"'s backoff
    assert [p.id for p in box.due(now=time.time() + 1)] == ["a", "b"]
    assert 0 < box.next_due_in() <= 0.5
    box.close()
    again = Outbox(db)  # a restart keeps what was not acknowledged
    assert len(again) == 2
    again.ack("b")
    assert len(again) == 1 and again.due(now=time.time() + 1)[0].attempts == 1
    again.bury("a", "HTTP 400")  # rejected for good: out of the queue, kept in the dead table
    assert len(again) == 0 and again.dead_count() == 1 and again.next_due_in() is None
    again.close()
    assert [backoff_delay(n, 0.5, 4) for n in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 4, 4]


def test_interval_and_external_triggers():
    t0 = 1000.0
    trig = IntervalTrigger(100)
    frames = [Frame(np.zeros((2, 2, 3), np.uint8), i, t0 + i * 0.033, t0 + i * 0.033) for i in range(20)]
    picked = [f.index for f in frames if trig.should_infer(f)]
    assert picked == [0, 4, 7, 10, 13, 16, 19]  # every 100 ms of capture time on a 30 fps stream
    ext = ExternalTrigger()
    ext.fire("part-1", t=t0 + 0.12)
    ext.fire_from_body(b'{"id": "part-2"}')  # now: later than every frame below
    chosen = [f.index for f in frames if ext.should_infer(f)]
    assert chosen == [4]  # the first frame captured at/after the trigger
    assert ext.tag_for(4) == "part-1" and ext.pending == 1
    status, ctype, body = ext.http_handler(b"", {})
    assert status == 202 and ext.pending == 2


def _cls_result(label_scores):
    top = tuple((i, lab, s) for i, (lab, s) in enumerate(label_scores))
    return Result(0, 0.0, 0.0, "classify", classification=Classification(top))


def test_judge_classification_rules():
    fail7 = PassRule(fail_classes=("7",), min_score=0.6)
    assert judge(_cls_result([("3", 0.9)]), fail7).passed
    assert not judge(_cls_result([("7", 0.9)]), fail7).passed
    v = judge(_cls_result([("3", 0.4)]), fail7)
    assert not v.passed and v.reason.startswith("uncertain")
    assert judge(_cls_result([("3", 0.4)]), PassRule(fail_classes=("7",), min_score=0.6, uncertain="pass")).passed
    only_ok = PassRule(pass_classes=("ok",), class_thresholds={"ok": 0.8})
    assert judge(_cls_result([("ok", 0.85)]), only_ok).passed
    assert not judge(_cls_result([("ok", 0.75)]), only_ok).passed
    with pytest.raises(ConfigError):
        PassRule(pass_classes=("a",), fail_classes=("b",))


def test_judge_detections_and_raw():
    labels = ("scratch", "dent", "label")
    det = Detections([[0, 0, 5, 5], [1, 1, 4, 4]], [0.4, 0.9], [0, 2], labels)
    res = Result(0, 0.0, 0.0, "detect", detections=det)
    assert judge(res, PassRule(fail_classes=("scratch", "dent"), min_score=0.5)).passed  # scratch below 0.5
    v = judge(res, PassRule(fail_classes=("scratch",), min_score=0.3))
    assert not v.passed and v.label == "scratch"
    assert judge(res, PassRule(pass_classes=("label",), min_score=0.5)).passed
    assert not judge(Result(0, 0, 0, "detect", detections=Detections.empty(labels)), PassRule(pass_classes=("label",))).passed
    raw = Result(0, 0, 0, "raw", raw=(np.array([[0.2, 0.7]], np.float32),))
    assert not judge(raw, PassRule(fail_above=0.5)).passed and judge(raw, PassRule(fail_above=0.8)).passed


def test_counters_persist_and_yield_per_hour(tmp_path):
    db = tmp_path / "c.sqlite"
    c = Counters(db)
    h0 = 3600 * 490000
    for label, ok, t in [("a", True, h0), ("a", False, h0 + 10), ("b", True, h0 + 3600), ("b", True, h0 + 3700)]:
        c.record(label, ok, t)
    c.close()
    c = Counters(db)  # a restart keeps the counts
    c.record("a", True, h0 + 3650)
    tot = c.totals()
    c.close()
    assert (tot["total"], tot["pass"], tot["fail"]) == (5, 4, 1)
    assert tot["per_class"] == {"a": {"total": 3, "pass": 2, "fail": 1}, "b": {"total": 2, "pass": 2, "fail": 0}}
    rows = yield_per_hour(db)
    assert [(r["total"], r["pass"], r["yield"]) for r in rows] == [(2, 1, 0.5), (3, 3, 1.0)]
    assert [r["total"] for r in yield_per_hour(db, hours=1, now=h0 + 3600)] == [3]
    assert class_totals(db, hours=1, now=h0 + 3600)["b"]["total"] == 2


def test_robot_state_age_and_stale():
    assert build_state(None, seq=1, now=10.0, stale_ms=100)["stale"] is True
    r = Result(7, 100.0, 100.01, "detect", detections=Detections([[1, 2, 3, 4]], [0.9], [0], ("box",)))
    fresh = build_state(r, seq=2, now=100.05, stale_ms=100)
    assert fresh["stale"] is False and fresh["age_ms"] == pytest.approx(50, abs=0.01) and fresh["frame"] == 7
    assert fresh["result"]["detections"][0]["label"] == "box"
    assert build_state(r, seq=3, now=100.2, stale_ms=100)["stale"] is True
