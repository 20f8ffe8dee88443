"""Event sinks: where a security event (or an inspection verdict) goes.

Every sink has ``open()``, ``emit(event, jpeg)`` and ``close()`` and is built from a config dict
through :data:`EVENT_SINKS`:

- ``jsonl``: one JSON object per line, appended and flushed per event.
- ``webhook``: HTTP POST of the event JSON with an ``Idempotency-Key`` header (the event id). The
  event is first written to a SQLite outbox (:mod:`.outbox`), then delivered in order by a
  background thread with exponential backoff, so it survives the receiver being down and the
  runtime being restarted; it is removed only after a 2xx answer, and the same id is never queued
  twice. A 4xx answer (other than 408/425/429) rejects the event for good: it moves to the
  outbox's ``dead`` table. The receiver should deduplicate on ``Idempotency-Key``: an answer lost
  on the way back (crash between the 2xx and the delete) is the one case that repeats a POST.
- ``mqtt``: the event JSON to ``TOPIC`` (QoS 1) and, when there is one, the JPEG snapshot to
  ``TOPIC/snapshot``.
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
from typing import Any, Callable, Protocol

from ...errors import ConfigError
from .outbox import Outbox

log = logging.getLogger(__name__)

RETRY_4XX = (408, 425, 429)  # client errors worth retrying; any other 4xx rejects the event for good


class EventSink(Protocol):
    def open(self) -> None: ...
    def emit(self, event: dict, jpeg: bytes | None = None) -> None: ...
    def close(self) -> None: ...
    def status(self) -> dict: ...


def event_json(event: dict) -> bytes:
    return json.dumps(event, sort_keys=True, separators=(",", ":")).encode("utf-8")


class JsonlEventSink:
    """Append events to a JSON-lines file (flushed after every event)."""

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


class WebhookEventSink:
    """POST events to ``url`` from a durable SQLite outbox, retried with exponential backoff."""

    def __init__(self, url: str, queue: str | os.PathLike, *, timeout: float = 5.0, backoff_s: float = 0.5,
                 max_backoff_s: float = 60.0, headers: dict[str, str] | None = None,
                 include_snapshot: bool = False, drain_s: float = 3.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook url must start with http:// or https://, got {url!r}")
        self.url, self.queue_path = url, Path(queue)
        self.timeout, self.backoff_s, self.max_backoff_s = float(timeout), float(backoff_s), float(max_backoff_s)
        self.headers = dict(headers or {})
        self.include_snapshot, self.drain_s = include_snapshot, float(drain_s)
        self.outbox: Outbox | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failures = 0
        self.rejected = 0
        self._left: int | None = None

    def open(self) -> None:
        self.outbox = Outbox(self.queue_path, base_s=self.backoff_s, max_s=self.max_backoff_s)
        left = self._left = len(self.outbox)
        if left:
            log.info("webhook: %d event(s) left from an earlier run will be delivered to %s", left, self.url)
        self._thread = threading.Thread(target=self._worker, name="webhook-outbox", daemon=True)
        self._thread.start()

    def emit(self, event: dict, jpeg: bytes | None = None) -> None:
        body = dict(event)
        if self.include_snapshot and jpeg is not None:
            body["snapshot_jpeg_b64"] = base64.b64encode(jpeg).decode()
        self.outbox.put(str(event["id"]), event_json(body))
        self._wake.set()

    def post(self, event_id: str, body: bytes) -> None:
        """One delivery attempt; raises OSError/HTTPError on anything but a 2xx answer."""
        req = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Idempotency-Key": event_id, "User-Agent": "edgeship", **self.headers})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            resp.read()
            if not 200 <= resp.status < 300:  # urlopen raises for >= 400; 1xx/3xx land here
                raise urllib.error.HTTPError(self.url, resp.status, "not a 2xx answer", resp.headers, None)

    def deliver_due(self) -> int:
        """Try every due event once; returns how many were delivered."""
        n = 0
        for item in self.outbox.due():
            if self._stop.is_set():
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
                delay = self.outbox.fail(item.id, f"HTTP {e.code}: {e.reason}")
                log.info("webhook %s: delivery of %s failed (HTTP %d); retry in %.1fs", self.url, item.id, e.code, delay)
                break
            except OSError as e:
                self.failures += 1
                delay = self.outbox.fail(item.id, f"{type(e).__name__}: {e}")
                log.info("webhook %s: delivery of %s failed (%s); retry in %.1fs", self.url, item.id, e, delay)
                break  # keep order: wait for the backoff before trying younger events
            self.outbox.ack(item.id)
            self.delivered += 1
            n += 1
        return n

    def _worker(self) -> None:
        while not self._stop.is_set():
            self.deliver_due()
            wait = self.outbox.next_due_in()
            self._wake.wait(timeout=1.0 if wait is None else min(max(wait, 0.01), 1.0))
            self._wake.clear()

    def close(self) -> None:
        """Stop the worker after trying (for at most ``drain_s``) to send what is queued; the rest stays on disk."""
        import time

        if self._thread is None:
            return
        deadline = time.monotonic() + self.drain_s
        while time.monotonic() < deadline and len(self.outbox) > 0:  # retries keep their backoff
            self._wake.set()
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=self.timeout + 1.0)
        self._thread = None
        left = self._left = len(self.outbox)
        if left:
            log.warning("webhook %s: %d event(s) still queued in %s; they are sent on the next run",
                        self.url, left, self.queue_path)
        self.outbox.close()
        self.outbox = None

    def status(self) -> dict:
        return {"type": "webhook", "url": self.url, "delivered": self.delivered, "failures": self.failures,
                "rejected": self.rejected,
                "queued": len(self.outbox) if self.outbox is not None else self._left}


class MqttEventSink:
    """Publish events (QoS 1) and their snapshots to an MQTT broker."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, *, topic: str = "edgeship/events",
                 snapshots: bool = True, username: str | None = None, password: str | None = None) -> None:
        self.host, self.port, self.topic, self.snapshots = host, int(port), topic.rstrip("/"), snapshots
        self.username, self.password = username, password
        self.client = None
        self.count = 0

    def open(self) -> None:
        from .mqtt import MqttClient

        self.client = MqttClient(self.host, self.port, username=self.username, password=self.password)
        if not self.client.wait_connected(5.0):
            log.warning("MQTT broker %s:%d not reachable yet; events are queued until it is", self.host, self.port)

    def emit(self, event: dict, jpeg: bytes | None = None) -> None:
        self.client.publish(self.topic, event_json(event), qos=1)
        if self.snapshots and jpeg is not None:
            self.client.publish(f"{self.topic}/snapshot", jpeg, qos=1)
        self.count += 1

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def status(self) -> dict:
        return {"type": "mqtt", "broker": f"{self.host}:{self.port}", "topic": self.topic, "published": self.count,
                "connected": bool(self.client and self.client.connected)}


EVENT_SINKS: dict[str, Callable[..., Any]] = {
    "jsonl": JsonlEventSink,
    "webhook": WebhookEventSink,
    "mqtt": MqttEventSink,
}


def make_event_sink(kind: str, **options: Any):
    """Build an event sink from its registry name and keyword options."""
    try:
        factory = EVENT_SINKS[kind]
    except KeyError:
        raise ConfigError(f"unknown event sink {kind!r}; expected one of {', '.join(EVENT_SINKS)}") from None
    return factory(**options)
