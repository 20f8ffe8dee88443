"""MQTT events are as durable as webhook events: a real mosquitto on 127.0.0.1 goes down and comes
back, the runtime "restarts" (the sink is closed and a new one opens the same queue file), and a
subscriber with a persistent session counts what arrives by event id."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from edgeship.errors import ConfigError
from edgeship.runtime.apps.events import MqttEventSink
from edgeship.runtime.apps.mqtt import pack_message, unpack_message
from tests.helpers.mjpeg import free_port
from tests.helpers.mqtt import Mosquitto, Subscriber, mosquitto_binary

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto not installed (scripts/system-deps.sh)")

TOPIC = "site/cam1/events"
JPEG = b"\xff\xd8\xff\xe0fake-but-binary\x00\xff\xd9"


def event(i: int) -> dict:
    return {"id": f"ev-{i:04d}", "type": "zone", "zone": "door", "class": "person", "score": 0.9, "seq": i}


def sink_for(port: int, queue: Path, **kw) -> MqttEventSink:
    opts = {"topic": TOPIC, "queue": queue, "backoff_s": 0.1, "max_backoff_s": 0.5, "timeout_s": 2.0, "drain_s": 2.0}
    return MqttEventSink(f"127.0.0.1:{port}", **{**opts, **kw})


def rows_on_disk(queue: Path) -> int:
    """Rows in the outbox, read through a separate connection (what a restart would find)."""
    with sqlite3.connect(str(queue)) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


def event_ids(msgs: list[tuple[str, bytes]]) -> list[str]:
    return [json.loads(p)["id"] for t, p in msgs if t == TOPIC]


def wait_until(cond, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.fixture
def broker(tmp_path):
    """A persistent mosquitto and a subscriber session registered on it, then the broker stopped."""
    b = Mosquitto(tmp_path / "broker", persistent=True).start()
    Subscriber(b.port, f"{TOPIC}/#", client_id="counter", clean_session=False).close()  # the session survives
    b.stop()
    yield b
    b.stop()


def test_pack_message_roundtrip_and_topic_check():
    assert unpack_message(pack_message("a/b", b"\x00\x01payload")) == ("a/b", b"\x00\x01payload")
    with pytest.raises(ConfigError, match="NUL"):
        pack_message("a\0b", b"x")
    with pytest.raises(ValueError, match="no NUL"):
        unpack_message(b"just-bytes")


def test_broker_down_at_start_events_wait_on_disk_then_arrive_in_order_once(broker, tmp_path):
    queue = tmp_path / "mqtt-outbox.sqlite"
    sink = sink_for(broker.port, queue)
    sink.open()
    try:
        for i in range(20):
            sink.emit(event(i), JPEG if i % 5 == 0 else None)
        time.sleep(0.5)  # the worker runs; with no broker nothing may leave the queue
        assert rows_on_disk(queue) == 24  # 20 events + 4 snapshots, on disk before any delivery
        st = sink.status()
        assert st["durable"] and st["queued"] == 24 and st["delivered"] == 0 and not st["connected"]
        assert "not connected" in st["last_error"] or "not reachable" in st["last_error"]
        broker.start()
        with Subscriber(broker.port, f"{TOPIC}/#", client_id="counter", clean_session=False) as sub:
            assert wait_until(lambda: sink.status()["queued"] == 0), sink.status()
            msgs = sub.wait(24, timeout=10)
        st = sink.status()
    finally:
        sink.close()
    assert event_ids(msgs) == [f"ev-{i:04d}" for i in range(20)]  # every event once, in order
    snaps = [i for i, (t, p) in enumerate(msgs) if t == f"{TOPIC}/snapshot"]
    assert len(snaps) == 4 and all(msgs[i][1] == JPEG for i in snaps)
    assert [json.loads(msgs[i - 1][1])["seq"] for i in snaps] == [0, 5, 10, 15]  # each right after its event
    assert st["delivered"] == 24 and st["queued"] == 0 and st["last_error"] is None and st["connected"]
    assert rows_on_disk(queue) == 0


def test_runtime_restart_with_the_broker_down_loses_nothing(broker, tmp_path):
    queue = tmp_path / "mqtt-outbox.sqlite"
    first = sink_for(broker.port, queue, drain_s=0.2)
    first.open()
    for i in range(10):
        first.emit(event(i))
    first.close()  # "power cut": the broker never came up during this run
    assert first.status()["queued"] == 10 and rows_on_disk(queue) == 10

    broker.start()
    with Subscriber(broker.port, f"{TOPIC}/#", client_id="counter", clean_session=False) as sub:
        second = sink_for(broker.port, queue)
        second.open()  # the next run finds the queue and publishes it before anything new
        second.emit(event(10))
        assert wait_until(lambda: second.status()["queued"] == 0), second.status()
        second.close()
        msgs = sub.wait(11, timeout=10)
    assert event_ids(msgs) == [f"ev-{i:04d}" for i in range(11)]
    assert second.status()["delivered"] == 11 and rows_on_disk(queue) == 0


def test_broker_stopped_and_restarted_mid_run_nothing_lost(broker, tmp_path):
    queue = tmp_path / "mqtt-outbox.sqlite"
    broker.start()
    n = 60
    with Subscriber(broker.port, f"{TOPIC}/#", client_id="counter", clean_session=False) as sub:
        sink = sink_for(broker.port, queue)
        sink.open()
        assert wait_until(lambda: sink.status()["connected"], 5)

        def produce() -> None:
            for i in range(n):
                sink.emit(event(i))
                time.sleep(0.02)

        producer = threading.Thread(target=produce)
        producer.start()
        assert wait_until(lambda: len(sub.messages) >= 10, 10)
        broker.stop()  # the broker reboots while events keep coming
        assert wait_until(lambda: not sink.status()["connected"], 5)
        time.sleep(0.5)
        mid_outage = sink.status()
        broker.start()
        producer.join()
        assert wait_until(lambda: sink.status()["queued"] == 0), sink.status()
        sink.close()
        wait_until(lambda: len(set(event_ids(sub.messages))) == n, 10)
        msgs = list(sub.messages)
    ids = event_ids(msgs)
    first_seen = list(dict.fromkeys(ids))
    assert first_seen == [f"ev-{i:04d}" for i in range(n)]  # nothing lost, first copies in order
    assert len(ids) - n <= 20  # QoS 1 may repeat what was in flight when the connection broke (<= window)
    assert mid_outage["queued"] > 0 and not mid_outage["connected"]
    assert sink.status()["delivered"] == n and rows_on_disk(queue) == 0


def test_without_a_queue_events_stay_in_memory(tmp_path):
    port = free_port()
    sink = MqttEventSink(f"127.0.0.1:{port}", topic=TOPIC, backoff_s=0.1, max_backoff_s=0.5, timeout_s=0.5)
    sink.open()
    try:
        sink.emit(event(0), JPEG)
        sink.emit(event(1))  # a second publish while disconnected must not raise (paho's NO_CONN)
        st = sink.status()
        assert not st["durable"] and st["queue"] is None and st["queued"] == 3 and st["published"] == 2
    finally:
        sink.close()


def test_config_mqtt_queue_key(tmp_path):
    from edgeship.runtime.apps.events import MqttEventSink, event_sink

    cfg = MqttEventSink.Config.model_validate({"type": "mqtt", "broker": "127.0.0.1:1999", "queue": "state/mqtt.sqlite",
                                               "timeout_s": 2, "backoff_s": 0.2}, context={"base": str(tmp_path)})
    sink = event_sink(cfg)
    assert sink.queue_path == tmp_path / "state" / "mqtt.sqlite" and sink.port == 1999
    assert sink.timeout == 2 and sink.backoff_s == 0.2


def test_dashboard_api_status_shows_the_queue(tmp_path):
    """The queue shows on the dashboard: /api/status -> app.sinks[] with queued / delivered / last_error."""
    import urllib.request

    from edgeship.runtime.apps.dashboard import DashboardSink
    from edgeship.runtime.apps.industrial import IndustrialApp, PassRule

    sink = sink_for(free_port(), tmp_path / "mqtt-outbox.sqlite")  # no broker on that port
    app = IndustrialApp(PassRule(pass_classes=("ok",)), counters_db=tmp_path / "counters.sqlite", event_sinks=[sink])
    server = DashboardSink(port=free_port(), app=app)
    app.open({})
    server.open({})
    try:
        sink.emit(event(0), JPEG)
        with urllib.request.urlopen(f"{server.url}/api/status", timeout=5) as resp:
            status = json.loads(resp.read())
    finally:
        server.close()
        app.close()
    (st,) = status["app"]["sinks"]
    assert st["type"] == "mqtt" and st["durable"] and st["queued"] == 2 and st["delivered"] == 0
    assert st["last_error"] and str(sink.port) in st["last_error"]


def test_webhook_status_reports_last_error_too(tmp_path):
    from edgeship.runtime.apps.events import WebhookEventSink

    port = free_port()  # nothing listens there
    sink = WebhookEventSink(f"http://127.0.0.1:{port}/events", tmp_path / "hook.sqlite", backoff_s=0.05,
                            max_backoff_s=0.1, timeout_s=1.0, drain_s=0)
    sink.open()
    try:
        sink.emit(event(0))
        assert wait_until(lambda: sink.status()["last_error"] is not None, 5)
        st = sink.status()
    finally:
        sink.close()
    assert st["queued"] == 1 and st["failures"] >= 1 and "Connection refused" in st["last_error"]


def test_the_same_sink_object_closed_and_reopened_delivers_everything(tmp_path):
    """Both durable sinks run on one delivery worker (runtime/apps/delivery.py): closing a sink and opening
    the same object again starts delivering again (the webhook sink used to stay stopped, its events piling
    up on disk)."""
    from edgeship.runtime.apps.events import WebhookEventSink
    from tests.helpers.webhook import WebhookReceiver

    b = Mosquitto(tmp_path / "broker").start()
    try:
        with Subscriber(b.port, f"{TOPIC}/#") as sub, WebhookReceiver() as hook:
            mqtt = sink_for(b.port, tmp_path / "mqtt.sqlite")
            web = WebhookEventSink(hook.url, tmp_path / "webhook.sqlite", backoff_s=0.1, max_backoff_s=0.5, drain_s=2.0)
            for round_ in range(3):
                for s in (mqtt, web):
                    s.open()
                for i in range(5):
                    e = event(10 * round_ + i)
                    mqtt.emit(e)
                    web.emit(e)
                assert wait_until(lambda: mqtt.status()["queued"] == 0 and web.status()["queued"] == 0), \
                    (round_, mqtt.status(), web.status())
                for s in (mqtt, web):
                    s.close()
            want = [f"ev-{10 * r + i:04d}" for r in range(3) for i in range(5)]
            assert event_ids(sub.wait(len(want), timeout=10)) == want
            assert [r["json"]["id"] for r in hook.received] == want
            assert mqtt.status()["delivered"] == web.status()["delivered"] == len(want)
    finally:
        b.stop()
