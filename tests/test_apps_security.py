"""Security app end to end: the tiny shapes detector (trained in the session, int8 TFLite) on a video
where shapes cross zones gives exactly the expected events; motion gate; JPEG snapshots; webhook
with a durable outbox across receiver downtime and a runtime restart; MQTT to a real mosquitto."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from edgeship.runtime.apps.deploy import run_config
from tests.helpers.demo import demo_dir
from tests.helpers.mjpeg import free_port
from tests.helpers.mqtt import Mosquitto, Subscriber, mosquitto_binary
from tests.helpers.webhook import WebhookReceiver

EXPECTED = {("yard", "square"), ("fence", "circle")}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return demo_dir(tmp_path_factory)


def write_config(path: Path, demo: Path, *, events: list, motion: bool = True, cooldown: float = 30.0) -> Path:
    cfg = {
        "artifact": str(demo / "models" / "shapes_int8.tflite"),
        "source": str(demo / "videos" / "shapes.mp4"),
        "task": "detect",
        "threshold": 0.5,
        "app": {
            "type": "security",
            "camera": "test-cam",
            "zones": [
                {"name": "yard", "points": [[0.5, 0.5], [1, 0.5], [1, 1], [0.5, 1]], "classes": ["square", "triangle"],
                 "min_score": 0.6, "min_dwell_frames": 3, "cooldown_s": cooldown},
                {"name": "fence", "points": [[40, 0], [280, 0], [280, 90], [40, 90]], "classes": ["circle"],
                 "min_score": 0.6, "min_dwell_frames": 3, "anchor": "center", "cooldown_s": cooldown},
            ],
            "snapshots": {"dir": "snaps", "quota_mb": 5},
            "events": events,
        },
    }
    if motion:
        cfg["app"]["motion"] = {"threshold": 25, "min_area": 0.002}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_shape_crossing_zones_gives_exactly_the_expected_events(demo, tmp_path):
    cfg = write_config(tmp_path / "deploy.yaml", demo, events=[{"type": "jsonl", "path": "events.jsonl"}])
    summary = run_config(cfg, handle_signals=False)
    events = read_jsonl(tmp_path / "events.jsonl")
    assert sorted((e["zone"], e["class"]) for e in events) == sorted(EXPECTED)
    truth = json.loads((demo / "videos" / "shapes.json").read_text())["objects"]
    for e in events:
        assert e["score"] >= 0.6 and len(e["id"]) == 32 and e["camera"] == "test-cam"
        snap = Path(e["snapshot"])
        assert snap.parent == tmp_path / "snaps" and snap.read_bytes()[:2] == b"\xff\xd8"
        # the event's box matches the scripted object on that frame
        gt = [o["box"] for o in truth[e["frame"]] if o["class"] == e["class"]]
        assert gt and max(abs(a - b) for a, b in zip(e["box"], gt[0])) < 12
    assert summary.app["events"] == 2 and summary.app["events_per_zone"] == {"yard": 1, "fence": 1}
    # the motion gate skipped the still stretches (counted as skipped frames) without losing an event
    assert summary.frames_skipped_gate > 40
    assert summary.frames_processed + summary.frames_skipped_gate == 240


def test_without_motion_gate_and_zero_cooldown_same_events(demo, tmp_path):
    cfg = write_config(tmp_path / "deploy.yaml", demo, events=[{"type": "jsonl", "path": "events.jsonl"}], motion=False,
                       cooldown=0)
    summary = run_config(cfg, handle_signals=False)
    assert summary.frames_skipped_gate == 0 and summary.frames_processed == 240
    # each shape is present once: one event per zone even with no cooldown (fires once per presence)
    assert sorted((e["zone"], e["class"]) for e in read_jsonl(tmp_path / "events.jsonl")) == sorted(EXPECTED)


def test_webhook_survives_receiver_down_and_runtime_restart_exactly_once(demo, tmp_path):
    receiver = WebhookReceiver(port=free_port())  # not started: the receiver is down
    events = [{"type": "jsonl", "path": "events.jsonl"},
              {"type": "webhook", "url": receiver.url, "queue": "outbox.sqlite", "backoff_s": 0.2,
               "max_backoff_s": 0.5, "timeout_s": 2, "drain_s": 0.5}]
    cfg = write_config(tmp_path / "deploy.yaml", demo, events=events)
    first = run_config(cfg, handle_signals=False)
    webhook = next(s for s in first.app["sinks"] if s["type"] == "webhook")
    assert webhook["delivered"] == 0 and webhook["queued"] == 2 and webhook["failures"] >= 2
    first_ids = {e["id"] for e in read_jsonl(tmp_path / "events.jsonl")}
    assert len(first_ids) == 2

    with receiver:  # the receiver comes back, answering 503 once; then the runtime restarts
        receiver.fail_next = 1
        cfg = write_config(tmp_path / "deploy.yaml", demo, events=[*events[:1], {**events[1], "drain_s": 10}])
        second = run_config(cfg, handle_signals=False)
        got = receiver.wait(4, timeout=15)
        all_ids = {e["id"] for e in read_jsonl(tmp_path / "events.jsonl")}
        import time

        time.sleep(1.0)  # nothing else may arrive: no duplicates from retries
        got = list(receiver.received)
    assert len(all_ids) == 4 and first_ids <= all_ids
    assert sorted(r["json"]["id"] for r in got) == sorted(all_ids)  # every event exactly once
    assert all(r["headers"]["Idempotency-Key"] == r["json"]["id"] for r in got)
    assert all(r["path"] == "/events" for r in got)
    sink = next(s for s in second.app["sinks"] if s["type"] == "webhook")
    assert sink["queued"] == 0 and sink["delivered"] == 4


@pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto not installed (scripts/system-deps.sh)")
def test_mqtt_events_and_snapshots_reach_a_real_broker(demo, tmp_path):
    with Mosquitto(tmp_path / "broker") as broker, Subscriber(broker.port, "site/#") as sub:
        events = [{"type": "mqtt", "broker": f"127.0.0.1:{broker.port}", "topic": "site/cam1/events"}]
        cfg = write_config(tmp_path / "deploy.yaml", demo, events=events)
        summary = run_config(cfg, handle_signals=False)
        msgs = sub.wait(4, timeout=10)
    payloads = [json.loads(p) for t, p in msgs if t == "site/cam1/events"]
    snaps = [p for t, p in msgs if t == "site/cam1/events/snapshot"]
    assert sorted((e["zone"], e["class"]) for e in payloads) == sorted(EXPECTED)
    assert len(snaps) == 2 and all(s[:2] == b"\xff\xd8" for s in snaps)
    assert next(s for s in summary.app["sinks"] if s["type"] == "mqtt")["published"] == 2


def test_webhook_receiver_stopped_and_restarted_mid_stream(tmp_path):
    """Receiver up, down (events queue), runtime stops, receiver back, runtime restarts: each event once, in order."""
    from edgeship.runtime.apps.events import WebhookEventSink

    def event(n: int) -> dict:
        return {"id": f"evt-{n}", "zone": "door", "class": "person", "n": n}

    receiver = WebhookReceiver().start()
    sink = WebhookEventSink(receiver.url, tmp_path / "q.sqlite", backoff_s=0.1, max_backoff_s=0.3, drain_s=0.5)
    sink.open()
    sink.emit(event(1))
    assert [r["json"]["n"] for r in receiver.wait(1, timeout=10)] == [1]
    receiver.stop()
    sink.emit(event(2))
    sink.emit(event(2))  # the same event twice (a replay) is queued once
    sink.emit(event(3))
    sink.close()  # runtime stops with the receiver still down
    assert sink.status()["queued"] == 2 and sink.failures >= 1
    receiver.start()  # same port
    again = WebhookEventSink(receiver.url, tmp_path / "q.sqlite", backoff_s=0.1, max_backoff_s=0.3, drain_s=5)
    again.open()  # runtime restart: the queue is picked up
    again.emit(event(4))
    got = receiver.wait(4, timeout=15)
    again.close()
    receiver.stop()
    assert [r["json"]["n"] for r in got] == [1, 2, 3, 4]
    assert [r["headers"]["Idempotency-Key"] for r in got] == ["evt-1", "evt-2", "evt-3", "evt-4"]
    assert again.status()["queued"] == 0 and len(receiver.received) == 4


def test_webhook_rejected_event_does_not_block_the_queue(tmp_path):
    from edgeship.runtime.apps.events import WebhookEventSink

    with WebhookReceiver() as receiver:
        receiver.reject_next = 1  # HTTP 400 for the first event: retrying cannot help
        sink = WebhookEventSink(receiver.url, tmp_path / "q.sqlite", backoff_s=0.1, drain_s=5)
        sink.open()
        sink.emit({"id": "bad"})
        sink.emit({"id": "good"})
        got = receiver.wait(1, timeout=10)
        sink.close()
    assert [r["json"]["id"] for r in got] == ["good"] and [r["id"] for r in receiver.rejected] == ["bad"]
    st = sink.status()
    assert st["rejected"] == 1 and st["delivered"] == 1 and st["queued"] == 0
