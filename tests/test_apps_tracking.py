"""Per-object tracking in the security app: the IoU tracker on hand-built boxes (side by side, crossing
paths, occlusion, flicker, ids never reused), per-track zone dwell with enter/exit and occupancy,
tripwire crossings with direction and counters, the app driven with real Frame/Result objects, and
the real shapes detector (int8 TFLite) on generated videos through ``edgeship run``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgeship.errors import ConfigError
from edgeship.runtime.apps.lines import Line, LineCounter, segments_intersect, side_of
from edgeship.runtime.apps.tracking import Track, Tracker, iou_matrix, match_greedy, match_hungarian
from edgeship.runtime.apps.zones import TrackZones, Zone, ZoneTracker, zone_hits
from edgeship.runtime.types import Detections, Frame, Result

LABELS = ("person", "car")
ROOT = Path(__file__).resolve().parents[1]


def dets(*boxes, classes=None, scores=None) -> Detections:
    n = len(boxes)
    return Detections(np.asarray(boxes, np.float32).reshape(n, 4), np.full(n, 0.9) if scores is None else scores,
                      np.zeros(n, int) if classes is None else classes, LABELS)


def box(cx: float, cy: float, w: float = 20, h: float = 40) -> tuple[float, float, float, float]:
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def ids_by_x(tracks) -> list[int]:
    return [t.track_id for t in sorted(tracks, key=lambda t: t.box[0])]


# ---- tracker ----------------------------------------------------------------------------------------
def test_iou_and_matchers():
    iou = iou_matrix([[0, 0, 10, 10], [0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    assert iou.round(4).tolist() == [[1.0, 0.3333, 0.0], [1.0, 0.3333, 0.0]]
    # greedy takes the best pair first; the optimal assignment gives both rows a partner
    score = np.array([[0.9, 0.8], [0.85, 0.0]])
    assert match_greedy(score, 0.3) == [(0, 0)]
    assert match_hungarian(score, 0.3) == [(0, 1), (1, 0)]
    assert match_greedy(np.array([[0.2]]), 0.3) == [] and match_hungarian(np.zeros((0, 2)), 0.3) == []
    with pytest.raises(ConfigError, match="tracker: matcher: Input should be 'greedy' or 'hungarian', got 'nearest'"):
        Tracker(matcher="nearest")
    for bad, key in (({"iou": 0}, "iou"), ({"max_age": -1}, "max_age"), ({"min_hits": 0}, "min_hits")):
        with pytest.raises(ConfigError, match=f"^tracker: {key}: "):  # the config's rule, for Python callers too
            Tracker(**bad)


def test_two_objects_side_by_side_keep_their_ids():
    tr = Tracker(min_hits=2)
    out = [tr.update(dets(box(50 + 5 * i, 100), box(80 + 5 * i, 100)), t=i * 0.1) for i in range(12)]
    assert out[0] == []  # tentative on the first frame (min_hits=2)
    assert all(ids_by_x(o) == [1, 2] for o in out[1:])
    last = sorted(out[-1], key=lambda t: t.box[0])[0]
    assert isinstance(last, Track) and last.label == "person" and last.hits == 12 and last.age == 12
    assert last.first_seen == 0.0 and last.last_seen == pytest.approx(1.1) and last.box == box(105, 100)


def test_crossing_paths_keep_ids_with_velocity():
    """Two people walk past each other (same class, overlapping boxes for several frames)."""
    def frame(i):
        return dets(box(40 + 8 * i, 100), box(196 - 8 * i, 104))

    tr = Tracker(min_hits=1)
    first = tr.update(frame(0), 0.0)
    a, b = ids_by_x(first)  # a starts left, b right
    for i in range(1, 21):
        tracks = {t.track_id: t for t in tr.update(frame(i), i / 10)}
    # after passing each other, a is on the right and b on the left: no swap
    assert tracks[a].box[0] > tracks[b].box[0] and tracks[a].box == box(200, 100)
    # without the motion model the overlapping boxes swap ids at the crossing
    still = Tracker(min_hits=1, velocity=False)
    still.update(frame(0), 0.0)
    for i in range(1, 21):
        tracks = {t.track_id: t for t in still.update(frame(i), i / 10)}
    assert tracks[a].box[0] < tracks[b].box[0]


def test_occlusion_coasts_then_same_id_and_ids_never_reused():
    tr = Tracker(min_hits=2, max_age=4)
    for i in range(5):
        tr.update(dets(box(50 + 10 * i, 100)), t=float(i))
    for i in range(5, 8):  # hidden for 3 frames: the track coasts along its predicted path
        coast = tr.update(dets(), t=float(i))
        assert len(coast) == 1 and coast[0].missed == i - 4 and not coast[0].seen
        assert coast[0].box == pytest.approx(box(50 + 10 * i, 100))
    back = tr.update(dets(box(130, 100)), t=8.0)
    assert [(t.track_id, t.missed, t.last_seen) for t in back] == [(1, 0, 8.0)]
    for i in range(9, 14):  # gone for 5 > max_age frames: the track is deleted
        tr.update(dets(), t=float(i))
    assert tr.tracks() == [] and tr.active == 0
    new = [tr.update(dets(box(130, 100)), t=14.0 + k) for k in range(2)]
    assert new[0] == [] and [t.track_id for t in new[1]] == [2]  # a new id, 1 is not reused
    assert tr.status()["created"] == 2 and tr.status()["confirmed"] == 2


def test_flicker_is_never_confirmed_and_classes_do_not_mix():
    tr = Tracker(min_hits=3)
    seen = [tr.update(dets(box(50, 50)) if i % 2 == 0 else dets(), t=float(i)) for i in range(8)]
    assert all(s == [] for s in seen) and tr.status()["confirmed"] == 0
    # a car detected where a person is tracked starts its own track (class-aware matching)
    tr = Tracker(min_hits=1)
    tr.update(dets(box(50, 50), classes=[0]), 0.0)
    out = tr.update(dets(box(51, 50), classes=[1]), 1.0)
    assert sorted((t.track_id, t.label, t.missed) for t in out) == [(1, "person", 1), (2, "car", 0)]
    blind = Tracker(min_hits=1, class_aware=False)
    blind.update(dets(box(50, 50), classes=[0]), 0.0)
    assert [(t.track_id, t.label) for t in blind.update(dets(box(51, 50), classes=[1]), 1.0)] == [(1, "car")]


def test_frame_index_scales_the_prediction_over_skipped_frames():
    tr = Tracker(min_hits=1)
    tr.update(dets(box(50, 100)), 0.0, frame_index=0)
    tr.update(dets(box(56, 100)), 0.1, frame_index=1)  # 6 px per frame
    # 10 frames later (dropped by a live buffer) the object is 60 px further: still the same track
    out = tr.update(dets(box(116, 100)), 1.1, frame_index=11)
    assert [(t.track_id, t.missed) for t in out] == [(1, 0)]
    plain = Tracker(min_hits=1)  # without frame indexes the jump looks like one frame: a new track
    plain.update(dets(box(50, 100)), 0.0)
    plain.update(dets(box(56, 100)), 0.1)
    assert sorted(t.track_id for t in plain.update(dets(box(116, 100)), 1.1)) == [1, 2]


# ---- zones per track ------------------------------------------------------------------------------------
YARD = Zone("yard", [(100, 0), (300, 0), (300, 200), (100, 200)], classes=("person",), min_dwell_frames=3,
            cooldown_s=60, events=("enter", "exit"))


def run_zones(zones, frames, tracker=None):
    tr = tracker or Tracker(min_hits=2)
    tz = TrackZones(zones)
    out = []
    for i, d in enumerate(frames):
        tracks = tr.update(d, float(i), tentative=True)
        out.append([(e.kind, e.zone, e.track.track_id, e.dwell_s, e.dwell_frames) for e in tz.update(tracks, (400, 200), float(i))])
    return out, tz


def test_two_people_in_a_zone_are_two_events_with_their_own_dwell():
    # person 1 walks through the zone (10 px per frame, in from frame 5, out at frame 25, passing in front of
    # person 2); person 2 comes in at frame 8 and stays
    frames = []
    for i in range(28):
        boxes = [box(55 + 10 * i, 150, w=40)]
        if i >= 8:
            boxes.append(box(200, 120))
        frames.append(dets(*boxes))
    out, tz = run_zones([YARD], frames)
    fired = [(i, e) for i, evs in enumerate(out) for e in evs]
    # enter after 3 frames inside: person 1 at frame 7 (inside 5, 6, 7), person 2 at frame 10 (8, 9, 10)
    assert fired[:2] == [(7, ("enter", "yard", 1, 2.0, 3)), (10, ("enter", "yard", 2, 2.0, 3))]
    # person 1's anchor passes x=300 on frame 25: exit with the total dwell (t=5..24, 20 frames)
    assert fired[2:] == [(25, ("exit", "yard", 1, 19.0, 20))]
    assert tz.occupancy() == {"yard": ["person"]}
    assert tz.occupants()["yard"][0]["track_id"] == 2
    # the per-(zone, class) engine sees one presence for the same frames: one event only
    old = ZoneTracker([YARD])
    n = sum(len(old.update(zone_hits([YARD], d.xyxy, d.scores, d.class_ids, LABELS, (400, 200)), float(i)))
            for i, d in enumerate(frames))
    assert n == 1


def test_dwell_seconds_occlusion_and_cooldown_per_track():
    zone = Zone("door", [(0, 0), (200, 0), (200, 200), (0, 200)], min_dwell_frames=1, min_dwell_s=2.5,
                cooldown_s=100, max_gap_frames=2, events=("enter", "exit"))
    # tall boxes: one step down moves the anchor (bottom centre) out of the zone, the box still overlaps
    inside, outside = dets(box(100, 140, h=100)), dets(box(100, 160, h=100))
    frames = [inside] * 4 + [dets()] * 2 + [inside] * 2 + [outside] * 2 + [inside] * 5
    out, tz = run_zones([zone], frames, Tracker(min_hits=1, max_age=10, velocity=False))
    fired = [(i, e[0], e[2], e[3], e[4]) for i, evs in enumerate(out) for e in evs]
    # enter once 2.5 s have passed (frame 3); the 2-frame occlusion does not end the visit, stepping out
    # does (exit: inside from t=0 to t=7, seen on 6 frames); the same track back within the cooldown is silent
    assert fired == [(3, "enter", 1, 3.0, 4), (8, "exit", 1, 7.0, 6)]
    assert [o["track_id"] for o in tz.occupants()["door"]] == [1]
    # stepping out again after the silent return: still no exit, every exit answers an enter
    out, _ = run_zones([zone], frames + [outside] * 2, Tracker(min_hits=1, max_age=10, velocity=False))
    assert [e[0] for evs in out for e in evs] == ["enter", "exit"]


def test_zone_events_setting_and_errors():
    with pytest.raises(ConfigError, match=r"zone 'a': events\[0\]: Input should be 'enter' or 'exit', got 'linger'"):
        Zone("a", [(0, 0), (1, 0), (1, 1)], events=("linger",))
    with pytest.raises(ConfigError, match="zone 'a': min_score: "):
        Zone("a", [(0, 0), (1, 0), (1, 1)], min_score=1.5)
    quiet = Zone("a", [(0, 0), (200, 0), (200, 200), (0, 200)], events=())
    out, tz = run_zones([quiet], [dets(box(50, 50))] * 3)
    assert out == [[], [], []] and tz.occupancy() == {"a": ["person"]}


# ---- tripwires ---------------------------------------------------------------------------------------------
def test_side_and_segment_geometry():
    a, b = np.array([0.0, 100.0]), np.array([200.0, 100.0])  # drawn left to right
    # above it is the left-hand side (-1), below the right-hand side (+1), within 2 px: on it (0)
    assert side_of(np.array([[50, 50], [50, 150], [50, 101], [300, 99]]), a, b, 2.0).tolist() == [-1, 1, 0, 0]
    assert segments_intersect(np.array([50, 50]), np.array([50, 150]), a, b)
    assert not segments_intersect(np.array([250, 50]), np.array([250, 150]), a, b)  # past the end
    assert segments_intersect(np.array([200, 50]), np.array([200, 150]), a, b)  # through the end point


def walk(tracker, counter, path, start=0, t0=0.0, classes=None):
    """Feed one object per frame along ``path`` (anchor points); return the crossings per frame."""
    out = []
    for k, (x, y) in enumerate(path):
        d = dets(box(x, y - 20, w=40)) if not classes else dets(box(x, y - 20, w=40), classes=[classes[k]])
        tracks = tracker.update(d, t0 + k, tentative=True)
        out.append([(c.line, c.track.track_id, c.direction) for c in counter.update(tracks, (400, 200))])
    return out


def test_line_crossings_both_directions_with_counts():
    gate = Line("gate", [(200, 0), (200, 200)])  # drawn downwards: its right-hand side is the image's left
    counter, tr = LineCounter([gate]), Tracker(min_hits=2)
    right = walk(tr, counter, [(150 + 10 * i, 150) for i in range(11)])  # left -> right across x=200
    assert [c for f in right for c in f] == [("gate", 1, "out")] and right[6] == [("gate", 1, "out")]
    tr2 = Tracker(min_hits=2)
    left = walk(tr2, counter, [(250 - 10 * i, 150) for i in range(11)])  # right -> left
    assert [c for f in left for c in f] == [("gate", 1, "in")]
    assert counter.status() == {"gate": {"in": 1, "out": 1, "per_class": {"person": {"in": 1, "out": 1}}}}
    # back and forth: every crossing counts
    tr3 = Tracker(min_hits=1)
    walk(tr3, counter, [(180, 150), (190, 150), (205, 150), (215, 150), (205, 150), (195, 150), (185, 150)])
    assert counter.status()["gate"]["in"] == 2 and counter.status()["gate"]["out"] == 2


def test_line_direction_filter_classes_jitter_and_normalised():
    lines = [Line("in-only", [(0.5, 0), (0.5, 1)], normalized=True, direction="in"),
             Line("cars", [(100, 0), (100, 200)], classes=("car",))]
    counter = LineCounter(lines)
    events = walk(Tracker(min_hits=1), counter, [(250 - 20 * i, 150) for i in range(10)])  # person right -> left
    assert [c for f in events for c in f] == [("in-only", 1, "in")]
    events = walk(Tracker(min_hits=1), counter, [(150 + 20 * i, 150) for i in range(6)])  # left -> right: "out"
    assert [c for f in events for c in f] == []  # counted, but no event for that direction
    assert counter.status()["in-only"]["out"] == 1 and counter.status()["cars"] == {"in": 0, "out": 0, "per_class": {}}
    # a box jittering on the line (within hysteresis_px) is not counted
    jitter = LineCounter([Line("gate", [(200, 0), (200, 200)], hysteresis_px=3)])
    walk(Tracker(min_hits=1), jitter, [(195, 150)] + [(200 + (2 if i % 2 else -2), 150) for i in range(10)])
    assert jitter.status()["gate"]["in"] + jitter.status()["gate"]["out"] == 0
    with pytest.raises(ConfigError, match="exactly 2 points"):
        Line("bad", [(0, 0), (1, 1), (2, 2)])
    with pytest.raises(ConfigError, match="line 'bad': direction: Input should be 'both', 'in' or 'out'"):
        Line("bad", [(0, 0), (1, 1)], direction="up")


def test_crossing_while_tentative_is_reported_on_confirmation_and_dropped_if_never():
    counter = LineCounter([Line("gate", [(200, 0), (200, 200)])])
    tr = Tracker(min_hits=3)
    out = walk(tr, counter, [(190, 150), (210, 150), (220, 150), (230, 150)])
    assert out == [[], [], [("gate", 1, "out")], []]  # crossed on frame 1, confirmed on frame 2
    flicker = LineCounter([Line("gate", [(200, 0), (200, 200)])])
    tr = Tracker(min_hits=3)
    walk(tr, flicker, [(190, 150), (210, 150)])
    tr.update(dets(), 9.0)  # the tentative track is lost: its crossing never counts
    assert flicker.update(tr.tracks(tentative=True), (400, 200)) == [] and flicker.status()["gate"]["out"] == 0


# ---- the app with real Frame / Result objects ----------------------------------------------------------------
def frame_result(i: int, d: Detections, t0: float = 1_700_000_000.0) -> tuple[Frame, Result]:
    img = np.full((200, 400, 3), 30, np.uint8)
    t = t0 + i / 10
    return Frame(img, i, t, time.monotonic(), "test"), Result(i, t, t, "detect", detections=d)


def test_security_app_events_status_and_overlays(tmp_path):
    from edgeship.runtime.apps.events import JsonlEventSink
    from edgeship.runtime.apps.security import SecurityApp

    app = SecurityApp([YARD], lines=[Line("gate", [(200, 0), (200, 200)], direction="both")],
                      tracker=Tracker(min_hits=2), event_sinks=[JsonlEventSink(tmp_path / "events.jsonl")],
                      snapshot_dir=tmp_path / "snaps", camera="cam1")
    app.open({})
    for i in range(28):  # the two-people walk of the zone test: person 1 also crosses the gate at x=200
        boxes = [box(55 + 10 * i, 150, w=40)] + ([box(200, 120)] if i >= 8 else [])
        app.write(*frame_result(i, dets(*boxes)))
        if i == 20:
            mid = app.status()
    app.close()
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["type"], e.get("action") or e.get("direction"), e["track_id"]) for e in events] == [
        ("zone", "enter", 1), ("zone", "enter", 2), ("line", "out", 1), ("zone", "exit", 1)]
    enter, line, exit_ = events[0], events[2], events[3]
    assert enter["zone"] == "yard" and enter["dwell_s"] == pytest.approx(0.2) and enter["camera"] == "cam1"
    assert line["line"] == "gate" and line["frame"] == 15 and line["class"] == "person"
    assert exit_["dwell_s"] == pytest.approx(1.9) and exit_["dwell_frames"] == 20
    assert all(Path(e["snapshot"]).read_bytes()[:2] == b"\xff\xd8" for e in events)
    assert mid["occupancy"] == {"yard": ["person", "person"]} and mid["occupancy_count"] == {"yard": 2}
    assert [o["track_id"] for o in mid["occupants"]["yard"]] == [1, 2]
    assert sorted(t["track_id"] for t in mid["tracks"]) == [1, 2]
    st = app.status()
    assert st["lines"] == {"gate": {"in": 0, "out": 1, "per_class": {"person": {"in": 0, "out": 1}}}}
    assert st["occupancy_count"] == {"yard": 1} and st["events"] == 4 and st["events_per_zone"] == {"yard": 3}
    assert st["tracker"]["confirmed"] == 2
    # overlays: the tripwire (magenta) and each track's id are drawn on the live view / annotated frames
    f, r = frame_result(30, dets(box(100, 100, w=60, h=60)))
    app.write(f, r)
    app.write(*frame_result(31, dets(box(100, 100, w=60, h=60))))
    img = np.full((200, 400, 3), 30, np.uint8)
    app.annotate(img, r)
    assert (img[:, 198:203] == (255, 0, 255)).all(axis=2).sum() > 150  # the gate line, top to bottom
    assert [t["track_id"] for t in app.status()["tracks"]] == [3]
    label = img[72:86, 72:100]  # "#3" in white on black at the box's top-left corner
    assert (label > 150).all(axis=2).sum() > 10
    bare = np.full((200, 400, 3), 30, np.uint8)
    app.annotate(bare, None)  # a frame the motion gate skipped: zones and lines, no track ids
    assert (bare[72:86, 72:100] > 150).all(axis=2).sum() == 0


def test_security_app_without_tracker_keeps_presence_per_zone_and_class(tmp_path):
    from edgeship.runtime.apps.security import SecurityApp

    app = SecurityApp([YARD], tracker=False)
    for i in range(28):
        app.write(*frame_result(i, dets(box(55 + 10 * i, 150, w=40), *([box(200, 120)] if i >= 8 else []))))
    st = app.status()
    assert st["events"] == 1 and "tracks" not in st and "lines" not in st
    with pytest.raises(ConfigError, match="need the tracker"):
        SecurityApp([YARD], lines=[Line("gate", [(0, 0), (0, 1)])], tracker=False)
    with pytest.raises(ConfigError, match="at least one zone or line"):
        SecurityApp([])


# ---- config -------------------------------------------------------------------------------------------------
@pytest.fixture()
def files(tmp_path) -> Path:
    (tmp_path / "m.tflite").write_bytes(b"x")
    (tmp_path / "clip.mp4").write_bytes(b"x")
    return tmp_path


ZONE = {"name": "door", "points": [[0, 0], [1, 0], [1, 1]]}


@pytest.mark.parametrize("app, message", [
    ({"lines": [{"name": "g", "points": [[0, 0], [1, 1], [1, 0]]}]}, "app.lines[0].points: a line is exactly 2 points"),
    ({"lines": [{"name": "g", "points": [[0, 0], [0, 0]]}]}, "app.lines[0].points: the 2 points must differ"),
    ({"lines": [{"name": "g", "points": [[0, 0], [0, 1]], "direction": "up"}]}, "app.lines[0].direction: Input should be"),
    ({"lines": [{"name": "g", "points": [[0, 0], [0, 1]]}] * 2}, "app.lines: line names must be unique"),
    ({"lines": [{"name": "g", "points": [[0, 0], [0, 1]]}], "tracker": {"enabled": False}},
     "app: lines count tracked objects: they need tracker.enabled: true"),
    ({}, "app: give at least one zone (zones:) or tripwire (lines:)"),
    ({"zones": [ZONE], "tracker": {"max_age": -1}}, "app.tracker.max_age: Input should be greater than or equal to 0"),
    ({"zones": [ZONE], "tracker": {"matcher": "nearest"}}, "app.tracker.matcher: Input should be 'greedy' or 'hungarian'"),
    ({"zones": [ZONE], "tracker": {"max_hits": 3}}, "app.tracker.max_hits: unknown key"),
    ({"zones": [{**ZONE, "events": ["enter", "linger"]}]}, "app.zones[0].events[1]: Input should be 'enter' or 'exit'"),
])
def test_config_errors_name_the_key(files, app, message):
    from edgeship.runtime.config import load_config

    p = files / "deploy.yaml"
    p.write_text(yaml.safe_dump({"artifact": "m.tflite", "source": "clip.mp4", "app": {"type": "security", **app}}))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(f"{p}: {message}"), str(e.value)


def test_config_builds_the_tracked_app(files):
    from edgeship.runtime.apps import build_app
    from edgeship.runtime.config import load_config

    p = files / "deploy.yaml"
    p.write_text(yaml.safe_dump({"artifact": "m.tflite", "source": "clip.mp4", "app": {
        "type": "security", "tracker": {"max_age": 5, "min_hits": 3, "matcher": "hungarian", "iou": 0.4},
        "lines": [{"name": "g", "points": [[0.5, 0], [0.5, 1]], "classes": ["car"], "direction": "in"}]}}))
    app = build_app(load_config(p).app)
    assert (app.tracker.max_age, app.tracker.min_hits, app.tracker.matcher, app.tracker.iou_threshold) == (5, 3, "hungarian", 0.4)
    assert app.lines == [Line("g", ((0.5, 0.0), (0.5, 1.0)), normalized=True, classes=("car",), direction="in")]
    assert app.zones == []


# ---- the real shapes detector (int8 TFLite) through the pipeline ---------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    from tests.helpers.demo import demo_dir

    return demo_dir(tmp_path_factory)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_example_config_tracks_zones_and_a_tripwire_from_the_cli(demo, tmp_path):
    """examples/security-tracking.yaml as the README runs it: the square walks left to right through the
    yard, later the circle crosses the top strip right to left; both cross the centre tripwire."""
    from click.testing import CliRunner

    from edgeship.cli import cli
    from tests.helpers.mjpeg import free_port

    (tmp_path / "quickstart-out").symlink_to(demo, target_is_directory=True)
    (tmp_path / "examples").mkdir()
    text = (ROOT / "examples" / "security-tracking.yaml").read_text().replace("port: 8083", f"port: {free_port()}")
    (tmp_path / "examples" / "security-tracking.yaml").write_text(text)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        res = CliRunner().invoke(cli, ["run", "--config", "examples/security-tracking.yaml", "--json"])
    finally:
        os.chdir(cwd)
    assert res.exit_code == 0, res.output
    app = json.loads(res.stdout)["app"]
    events = read_jsonl(tmp_path / "security-out" / "tracking-events.jsonl")
    got = [(e["type"], e.get("zone") or e.get("line"), e.get("action") or e.get("direction"), e["class"]) for e in events]
    assert got == [("line", "middle", "out", "square"), ("zone", "yard", "enter", "square"),
                   ("zone", "yard", "exit", "square"), ("zone", "fence", "enter", "circle"),
                   ("line", "middle", "in", "circle")]
    square, circle = events[0]["track_id"], events[3]["track_id"]
    assert [e["track_id"] for e in events] == [square, square, square, circle, circle] and square != circle
    truth = json.loads((demo / "videos" / "shapes.json").read_text())["objects"]
    line = events[0]  # the square's box on the crossing frame is the scripted one, and straddles x=160
    gt = [o["box"] for o in truth[line["frame"]] if o["class"] == "square"][0]
    assert max(abs(a - b) for a, b in zip(line["box"], gt)) < 12 and line["box"][0] < 160 < line["box"][2]
    assert events[2]["dwell_s"] >= events[1]["dwell_s"] >= 0 and events[2]["frame"] > events[1]["frame"]
    assert app["lines"]["middle"] == {"in": 1, "out": 1, "per_class": {"square": {"in": 0, "out": 1},
                                                                        "circle": {"in": 1, "out": 0}}}
    assert app["events_per_zone"] == {"yard": 2, "fence": 1} and app["occupancy_count"] == {"yard": 0, "fence": 0}


def test_two_objects_side_by_side_are_two_tracks_with_the_real_detector(demo, tmp_path):
    """Two squares walk through the yard side by side: two enter events (one per object) and the tripwire
    counts 2; the per-(zone, class) engine (tracker disabled) sees a single presence."""
    from edgeship.demo import scenes
    from edgeship.runtime.apps.deploy import run_config

    sq = scenes.SHAPE_CLASSES.index("square")
    walk_ = [scenes.Track(sq, (-10.0, 140.0), (330.0, 140.0), 10, 90, r=20, color=(60, 200, 255)),
             scenes.Track(sq, (-30.0, 200.0), (310.0, 200.0), 10, 90, r=20, color=(80, 255, 120))]
    frames, truth = scenes.scene_frames(110, tracks=walk_)
    scenes.write_video(tmp_path / "two.mp4", frames)

    def run(tracker: dict, name: str) -> tuple[dict, list[dict]]:
        app = {"type": "security", "tracker": tracker, "events": [{"type": "jsonl", "path": f"{name}.jsonl"}],
               "zones": [{"name": "yard", "points": [[0.5, 0.5], [1, 0.5], [1, 1], [0.5, 1]], "classes": ["square"],
                          "min_score": 0.6, "min_dwell_frames": 3, "events": ["enter", "exit"]}]}
        if tracker.get("enabled", True):
            app["lines"] = [{"name": "middle", "points": [[160, 0], [160, 240]], "direction": "out"}]
        cfg = {"artifact": str(demo / "models" / "shapes_int8.tflite"), "source": str(tmp_path / "two.mp4"),
               "task": "detect", "threshold": 0.5, "app": app, "sinks": [f"video:{name}.mp4"]}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        summary = run_config(tmp_path / f"{name}.yaml", handle_signals=False)
        return summary.app, read_jsonl(tmp_path / f"{name}.jsonl")

    app, events = run({"min_hits": 2, "max_age": 10}, "tracked")
    enters = [e for e in events if e.get("action") == "enter"]
    exits = [e for e in events if e.get("action") == "exit"]
    lines = [e for e in events if e["type"] == "line"]
    assert len(enters) == 2 and len({e["track_id"] for e in enters}) == 2
    assert sorted(e["track_id"] for e in exits) == sorted(e["track_id"] for e in enters)
    assert sorted(e["track_id"] for e in lines) == sorted(e["track_id"] for e in enters)
    assert [e["direction"] for e in lines] == ["out", "out"] and app["lines"]["middle"]["out"] == 2
    # each enter event's box is one of the two scripted squares on that frame, a different one each
    matched = set()
    for e in enters:
        gt = [o.box for o in truth[e["frame"]]]
        err = [max(abs(a - b) for a, b in zip(e["box"], g)) for g in gt]
        assert min(err) < 12
        matched.add(int(np.argmin(err)))
    assert matched == {0, 1}
    # the annotated video carries the app's overlays: the tripwire (magenta) down the frame's centre column
    import cv2

    cap = cv2.VideoCapture(str(tmp_path / "tracked.mp4"))
    ok, img = cap.read()
    cap.release()
    assert ok and img.shape == (240, 320, 3)
    magenta = (img[:, :, 0] > 180) & (img[:, :, 1] < 90) & (img[:, :, 2] > 180)
    assert magenta[:, 158:163].sum() > 150 and magenta[:, :150].sum() < 20
    legacy, legacy_events = run({"enabled": False}, "legacy")
    assert len(legacy_events) == 1 and legacy["events_per_zone"] == {"yard": 1} and "lines" not in legacy


def test_dashboard_shows_line_counts_and_track_ids(demo, tmp_path):
    """The live dashboard in headless Chromium: the tripwire's counts in the app summary, track ids in the table."""
    import threading

    from edgeship.runtime.apps.deploy import build_deployment
    from edgeship.runtime.config import load_config
    from tests.helpers.chromium import Chromium, chromium_binary
    from tests.helpers.mjpeg import free_port, wait_port

    if chromium_binary() is None:
        pytest.skip("chromium not installed (scripts/system-deps.sh)")
    port = free_port()
    cfg = tmp_path / "deploy.yaml"
    cfg.write_text(yaml.safe_dump({
        "artifact": str(demo / "models" / "shapes_int8.tflite"),
        "source": {"uri": str(demo / "videos" / "shapes.mp4"), "loop": True, "realtime": True},
        "threshold": 0.5,
        "app": {"type": "security", "lines": [{"name": "middle", "points": [[160, 0], [160, 240]]}]},
        "server": {"port": port},
    }))
    dep = build_deployment(load_config(cfg), duration=60, handle_signals=False)
    runner = threading.Thread(target=dep.run)
    runner.start()
    try:
        wait_port(port)
        with Chromium() as browser:
            browser.open(f"http://127.0.0.1:{port}/")
            browser.wait_for("/middle in \\d+ out [1-9]/.test(document.getElementById('app-summary').textContent)",
                             timeout=30)
            row = browser.eval("document.querySelector('#app-table tbody tr').textContent")
            assert "middle" in row and "out" in row and "square" in row and "#" in row
            assert not browser.eval("document.body.dataset.error || ''")
    finally:
        dep.pipeline.stop()
        runner.join(30)


def test_dwell_follows_the_files_clock_not_the_processing_speed(tmp_path):
    """A recorded clip processed 100x faster than real time fires the same 2-second dwell event."""
    from edgeship.runtime.apps.events import JsonlEventSink
    from edgeship.runtime.apps.security import SecurityApp

    door = Zone("door", [(0, 0), (400, 0), (400, 200), (0, 200)], min_dwell_frames=1, min_dwell_s=2.0)
    app = SecurityApp([door], tracker=Tracker(min_hits=1), event_sinks=[JsonlEventSink(tmp_path / "e.jsonl")])
    app.open({})
    t0 = 1_700_000_000.0
    for i in range(75):  # 2.5 s of a 30 fps file, "captured" within 0.075 s of wall time
        img = np.full((200, 400, 3), 30, np.uint8)
        f = Frame(img, i, t0 + i / 1000, time.monotonic(), "clip.mp4", t_media=i / 30, t_scene=t0 + i / 30)
        app.write(f, Result(i, f.t_capture, f.t_capture, "detect", detections=dets(box(100, 100))))
    app.close()
    events = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert len(events) == 1 and events[0]["frame"] == 60 and events[0]["media_s"] == 2.0
    assert events[0]["dwell_s"] == pytest.approx(2.0)
    # a live frame has no media time: the scene clock is the capture time
    live = Frame(np.zeros((2, 2, 3), np.uint8), 0, t0, 0.0, "rtsp://cam")
    assert live.t_media is None and live.scene_time == t0
