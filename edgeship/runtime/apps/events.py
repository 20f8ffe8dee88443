"""Event sinks: where a security event (or an inspection verdict) goes.

Every sink has ``open()``, ``emit(event, jpeg)`` and ``close()``; its config model is the class's
``Config`` (keys = constructor keywords) and :data:`EVENT_SINKS` maps the config's ``type`` to it:

- ``jsonl``: one JSON object per line, appended and flushed per event.
- ``webhook``: HTTP POST of the event JSON with an ``Idempotency-Key`` header (the event id). The
  event is first written to a SQLite outbox (:mod:`.outbox`), then delivered in order by a
  background thread with exponential backoff, so it survives the receiver being down and the
  runtime being restarted; it is removed only after a 2xx answer, and the same id is never queued
  twice. A 4xx answer (other than 408/425/429) rejects the event for good: it moves to the
  outbox's ``dead`` table. The receiver should deduplicate on ``Idempotency-Key``: an answer lost
  on the way back (crash between the 2xx and the delete) is the one case that repeats a POST.
- ``mqtt``: the event JSON (with its ``id``) to ``TOPIC`` (QoS 1) and, when there is one, the
  JPEG snapshot to ``TOPIC/snapshot`` right after it. With ``queue`` (a SQLite file) the messages
  go through the same durable outbox as the webhook and are deleted only after the broker's
  PUBACK, so they survive a broker outage and a runtime restart; QoS 1 is at-least-once, so a
  consumer de-duplicates on the event ``id`` (a repeated snapshot is the same image).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field

from ...errors import ConfigError
from ..httpclient import HttpsTrustCfg
from ..schema import HttpUrl, OutFile, QueueFile, Strict, check_http_url, config_defaults, tagged_union
from .delivery import DeliveryWorker
from .mqtt import MqttBrokerCfg
from .outbox import MAX_MB, MAX_ROWS

log = logging.getLogger(__name__)

RETRY_4XX = (408, 425, 429)  # client errors worth retrying; any other 4xx rejects the event for good


def event_topic(template: str, event: dict) -> str:
    """An MQTT topic template with ``{camera}`` replaced by the event's camera (``camera`` when it names none)."""
    return template.replace("{camera}", str(event.get("camera") or "camera"))


def event_json(event: dict) -> bytes:
    return json.dumps(event, sort_keys=True, separators=(",", ":")).encode("utf-8")


class JsonlEvents(Strict):
    type: Literal["jsonl"]
    path: OutFile = Field(description="JSON-lines file the events are appended to (a relative path in a release: under DEVICE_ROOT/data)")


class JsonlEventSink:
    """Append events to a JSON-lines file (flushed after every event)."""

    Config = JsonlEvents

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fh = None
        self._lock = threading.Lock()
        self.count = 0

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    def emit(self, event: dict, jpeg: bytes | None = None) -> None:
        with self._lock:
            self._fh.write(event_json(event).decode() + "\n")
            self._fh.flush()
            self.count += 1

    def close(self) -> None:
        with self._lock:
            if self._fh:
                self._fh.close()
                self._fh = None

    def status(self) -> dict:
        return {"type": "jsonl", "path": str(self.path), "written": self.count}


class WebhookEvents(HttpsTrustCfg):
    type: Literal["webhook"]
    url: HttpUrl = Field(description="http(s) address each event is POSTed to (JSON, Idempotency-Key header = event id); redirects are not followed")
    queue: QueueFile = Field(description="SQLite file of the durable outbox (required: an event survives receiver outages and restarts)")
    timeout_s: float = Field(5.0, gt=0, description="seconds one POST may take")
    backoff_s: float = Field(0.5, gt=0, description="first retry delay after a failed POST, doubled up to max_backoff_s")
    max_backoff_s: float = Field(60.0, gt=0, description="longest retry delay")
    headers: dict[str, str] = Field({}, description="extra HTTP headers sent with every POST (an Authorization header, say)")
    include_snapshot: bool = Field(False, description="put the event's JPEG snapshot in the JSON as snapshot_jpeg_b64")
    drain_s: float = Field(3.0, ge=0, description="seconds spent at shutdown sending what is queued (the rest stays on disk)")
    max_queued: int = Field(MAX_ROWS, ge=1, le=10_000_000, description="outbox bound: the oldest events are dropped (and counted)")
    max_queue_mb: float = Field(MAX_MB, gt=0, le=1_000_000, description="outbox bound in MiB: beyond it the oldest events are dropped and counted")


@config_defaults()
class WebhookEventSink:
    """POST events to ``url`` from a durable SQLite outbox, retried with exponential backoff."""

    Config = WebhookEvents

    def __init__(self, url: str, queue: str | os.PathLike, *, timeout_s: float, backoff_s: float, max_backoff_s: float,
                 headers: dict[str, str], include_snapshot: bool, drain_s: float, max_queued: int,
                 max_queue_mb: float, ca_file: str | None) -> None:
        from ..httpclient import opener_for

        self.url, self.queue_path = check_http_url(url, "webhook url"), Path(queue)
        self.opener = opener_for(self.url, ca_file)
        self.timeout = float(timeout_s)
        self.headers = dict(headers or {})
        self.include_snapshot = include_snapshot
        self.queue = DeliveryWorker("webhook", self.url, self.queue_path, deliver=self.deliver_due, backoff_s=backoff_s,
                                    max_backoff_s=max_backoff_s, max_queued=max_queued, max_queue_mb=max_queue_mb,
                                    timeout_s=timeout_s, drain_s=drain_s)
        self.delivered = 0
        self.failures = 0
        self.rejected = 0
        self.last_error: str | None = None

    @property
    def outbox(self):
        return self.queue.outbox

    def open(self) -> None:
        self.queue.open()

    def emit(self, event: dict, jpeg: bytes | None = None) -> None:
        body = dict(event)
        if self.include_snapshot and jpeg is not None:
            body["snapshot_jpeg_b64"] = base64.b64encode(jpeg).decode()
        self.queue.outbox.put(str(event["id"]), event_json(body))
        self.queue.wake()

    def post(self, event_id: str, body: bytes) -> None:
        """One delivery attempt; raises OSError/HTTPError on anything but a 2xx answer."""
        from ..httpclient import post

        post(self.url, body, {"Content-Type": "application/json", "Idempotency-Key": event_id, "User-Agent": "edgeship",
                              **self.headers}, self.timeout, self.opener)

    def deliver_due(self) -> int:
        """Try every due event once; returns how many were delivered."""
        n = 0
        for item in self.outbox.due():
            if self.queue.stopping:
                break
            try:
                self.post(item.id, item.body)
            except urllib.error.HTTPError as e:
                if 400 <= e.code < 500 and e.code not in RETRY_4XX:
                    self.rejected += 1
                    self.outbox.bury(item.id, f"HTTP {e.code}: {e.reason}")
                    log.error("webhook %s rejected event %s with HTTP %d; moved to the dead table of %s",
                              self.url, item.id, e.code, self.queue_path)
                    continue
                self.failures += 1
                self.last_error = f"HTTP {e.code}: {e.reason}"
                delay = self.outbox.fail(item.id, self.last_error)
                log.info("webhook %s: delivery of %s failed (HTTP %d); retry in %.1fs", self.url, item.id, e.code, delay)
                break
            except OSError as e:
                self.failures += 1
                self.last_error = f"{type(e).__name__}: {e}"
                delay = self.outbox.fail(item.id, self.last_error)
                log.info("webhook %s: delivery of %s failed (%s); retry in %.1fs", self.url, item.id, e, delay)
                break  # keep order: wait for the backoff before trying younger events
            self.outbox.ack(item.id)
            self.delivered += 1
            self.last_error = None
            n += 1
        return n

    def close(self) -> None:
        """Stop after trying (for at most ``drain_s``) to send what is queued; the rest stays on disk."""
        self.queue.close()
        self.queue.close_outbox()

    def status(self) -> dict:
        return {"type": "webhook", "url": self.url, "delivered": self.delivered, "failures": self.failures,
                "rejected": self.rejected, "last_error": self.last_error, "queued": self.queue.queued(),
                "dropped": self.queue.dropped()}


class MqttEvents(MqttBrokerCfg):
    type: Literal["mqtt"]
    topic: str = Field("edgeship/events", description="topic the event JSON is published to (QoS 1); snapshots go to TOPIC/snapshot; {camera} is replaced by the event's camera (edgeship/{camera}/events)")
    snapshots: bool = Field(True, description="also publish the event's JPEG snapshot to TOPIC/snapshot")
    queue: Optional[QueueFile] = Field(None, description="durable outbox; without it events wait in memory while the broker is down")
    timeout_s: float = Field(5.0, gt=0, description="seconds to wait for the broker's PUBACK before the message is retried")
    backoff_s: float = Field(0.5, gt=0, description="first reconnect / retry delay, doubled up to max_backoff_s")
    max_backoff_s: float = Field(30.0, gt=0, description="longest reconnect / retry delay")
    drain_s: float = Field(3.0, ge=0, description="seconds spent at shutdown sending what is queued (the rest stays on disk)")
    max_queued: int = Field(MAX_ROWS, ge=1, le=10_000_000, description="outbox bound in events: beyond it the oldest are dropped and counted")
    max_queue_mb: float = Field(MAX_MB, gt=0, le=1_000_000, description="outbox bound in MiB: beyond it the oldest events are dropped and counted")


@config_defaults()
class MqttEventSink:
    """Publish events (QoS 1) and their snapshots to an MQTT broker, durably when given a ``queue`` file.

    With ``queue`` every message (the event JSON, then its snapshot) is written to a SQLite
    :class:`~.outbox.Outbox` before delivery; a worker publishes the due rows in order and deletes a
    row only after the broker's PUBACK. While the broker is down nothing is published: paho
    reconnects with exponential backoff (``backoff_s`` doubling up to ``max_backoff_s``) and, once
    connected, the queue is sent oldest first. A PUBACK missing after ``timeout_s`` seconds backs off
    that row the same way (paho resends it on the next connection). What is still queued at
    ``close()`` (after up to ``drain_s`` of trying) stays on disk for the next run.

    Without ``queue`` messages wait in paho's memory only (lost when the process ends).

    QoS 1 is at-least-once: a PUBACK lost with the connection, or a crash between the PUBACK and
    the delete, sends a message again. Consumers de-duplicate events on their ``id`` field.
    """

    Config = MqttEvents

    def __init__(self, broker: str, *, topic: str, snapshots: bool, username: str | None, password: str | None,
                 tls: Any, queue: str | os.PathLike | None, timeout_s: float, backoff_s: float, max_backoff_s: float, drain_s: float,
                 max_queued: int, max_queue_mb: float, window: int = 20) -> None:
        from .mqtt import parse_mqtt_url, tls_context

        self.address = parse_mqtt_url(broker)
        self.tls = tls_context(self.address, tls)  # bad files fail here, before the run starts
        self.topic, self.snapshots = topic.rstrip("/"), snapshots
        self.username, self.password = username, password
        self.queue_path = Path(queue) if queue is not None else None
        self.timeout, self.backoff_s, self.max_backoff_s = float(timeout_s), float(backoff_s), float(max_backoff_s)
        self.window = int(window)
        self.queue = None if queue is None else DeliveryWorker(
            "mqtt", self.broker, queue, deliver=self.deliver_due, can_send=lambda: self.client is not None and self.client.connected,
            on_blocked=self._blocked, backoff_s=backoff_s, max_backoff_s=max_backoff_s, max_queued=max_queued,
            max_queue_mb=max_queue_mb, timeout_s=timeout_s, drain_s=drain_s)
        self.client = None
        self.count = 0
        self.delivered = 0
        self.failures = 0
        self.rejected = 0
        self.last_error: str | None = None
        self._inflight: dict[str, Any] = {}  # outbox id -> paho MQTTMessageInfo, oldest first

    @property
    def outbox(self):
        return self.queue.outbox if self.queue is not None else None

    def _blocked(self) -> None:
        self.last_error = f"broker {self.broker} not connected"

    @property
    def broker(self) -> str:
        return str(self.address)

    @property
    def host(self) -> str:
        return self.address.host

    @property
    def port(self) -> int:
        return self.address.port

    def open(self) -> None:
        from .mqtt import MqttClient

        if self.queue is None:
            log.warning("MQTT events to %s are kept in memory only while the broker is unreachable; "
                        "set 'queue:' to keep them across outages and restarts", self.broker)
        self.client = MqttClient(self.host, self.port, username=self.username, password=self.password,
                                 reconnect_min_s=self.backoff_s, reconnect_max_s=self.max_backoff_s,
                                 on_connected=self._on_connected, tls=self.tls)
        if self.queue is not None:
            self.queue.open()
        if not self.client.wait_connected(self.timeout if self.queue is None else 0.5):
            self.last_error = f"broker {self.broker} not reachable"
            self.client.explain_failure(self._tls_failure)
            log.warning("MQTT broker %s not reachable yet; events are queued (%s) until it is", self.broker,
                        self.queue_path or "in memory")

    def messages(self, event: dict, jpeg: bytes | None) -> list[tuple[str, str, bytes]]:
        """(outbox id, topic, payload) of what one event publishes: its JSON, then its snapshot."""
        topic = event_topic(self.topic, event)
        out = [(str(event["id"]), topic, event_json(event))]
        if self.snapshots and jpeg is not None:
            out.append((f"{event['id']}/snapshot", f"{topic}/snapshot", bytes(jpeg)))
        return out

    def emit(self, event: dict, jpeg: bytes | None = None) -> None:
        from .mqtt import pack_message

        for key, topic, payload in self.messages(event, jpeg):
            if self.outbox is not None:
                self.outbox.put(key, pack_message(topic, payload))
            else:
                self.client.publish(topic, payload, qos=1)
        self.count += 1
        if self.queue is not None:
            self.queue.wake()

    def _tls_failure(self, why: str) -> None:
        self.last_error = f"broker {self.broker} not reachable: {why}"
        log.warning("MQTT broker %s: %s", self.broker, why)

    def _on_connected(self) -> None:
        if self.outbox is not None:
            self.outbox.retry_now()  # the broker is back: no reason to sit out a backoff
        self.last_error = None
        if self.queue is not None:
            self.queue.wake()

    def deliver_due(self) -> int:
        """Publish the due rows (up to ``window``) in order and wait for their PUBACKs; returns how many were acked."""
        import time

        from .mqtt import NO_PUBACK, unpack_message, wait_puback

        items = self.outbox.due(limit=self.window)
        for item in items:
            if item.id in self._inflight:
                continue  # paho still holds it and resends it after a reconnect: never publish twice
            try:
                topic, payload = unpack_message(item.body)
                self._inflight[item.id] = self.client.publish(topic, payload, qos=1)
            except ValueError as e:  # a body/topic paho can never send (bad topic, payload > 256 MB)
                self.rejected += 1
                self.outbox.bury(item.id, f"{type(e).__name__}: {e}")
                log.error("mqtt: message %s cannot be published (%s); moved to the dead table of %s",
                          item.id, e, self.queue_path)
        deadline = time.monotonic() + self.timeout
        n = 0
        for item in items:
            info = self._inflight.get(item.id)
            if info is None:
                continue  # buried above
            error = wait_puback(info, max(0.0, deadline - time.monotonic()), self.queue.stop_event)
            if error is None:
                self.outbox.ack(item.id)
                del self._inflight[item.id]
                self.delivered += 1
                n += 1
                continue
            if error != NO_PUBACK:  # paho gave up on it (queue full...): publish it afresh next time
                del self._inflight[item.id]
            self.failures += 1
            self.last_error = f"{error} from {self.broker} for {item.id}"
            if not self.queue.stopping:
                delay = self.outbox.fail(item.id, self.last_error)
                log.info("mqtt %s: %s not acknowledged (%s); retry in %.1fs", self.broker, item.id, error, delay)
            break  # keep order: younger rows wait behind this one
        return n

    def close(self) -> None:
        """Stop publishing after trying (for at most ``drain_s``) to empty the queue; the rest stays on disk."""
        from .mqtt import wait_puback

        if self.client is None:
            return
        if self.queue is not None:
            self.queue.close()
        self.client.close()  # waits (up to 2 s) for the PUBACKs of what is in flight
        self.client = None
        if self.queue is not None and self.outbox is not None:
            for key, info in list(self._inflight.items()):  # acknowledged during that wait: do not send again
                if wait_puback(info, 0.0, self.queue.stop_event) is not None:
                    break
                self.outbox.ack(key)
                self.delivered += 1
            self.queue.close_outbox()
        self._inflight.clear()

    def status(self) -> dict:
        if self.queue is not None:
            queued = self.queue.queued()  # after close: what stays on disk for the next run
        else:
            queued = self.client.pending() if self.client is not None else 0  # in paho's memory
        return {"type": "mqtt", "broker": self.broker, "topic": self.topic, "published": self.count,
                "durable": self.queue_path is not None, "queue": str(self.queue_path) if self.queue_path else None,
                "queued": queued, "delivered": self.delivered, "failures": self.failures,
                "dropped": self.queue.dropped() if self.queue is not None else None,
                "rejected": self.rejected, "last_error": self.last_error,
                "connected": bool(self.client and self.client.connected)}


# registry: the config's ``type`` -> sink class (its ``Config`` is the config model)
EVENT_SINKS: dict[str, Any] = {
    "jsonl": JsonlEventSink,
    "webhook": WebhookEventSink,
    "mqtt": MqttEventSink,
}

EventSinkCfg = tagged_union(EVENT_SINKS.values())


def event_sink(cfg: Any) -> Any:
    """The event sink for a validated ``events:`` entry."""
    if cfg.type not in EVENT_SINKS:
        raise ConfigError(f"unknown event sink {cfg.type!r}; expected one of {', '.join(EVENT_SINKS)}")
    return EVENT_SINKS[cfg.type](**cfg.options())
