"""Inspection triggers: gates that decide which frames are inspected.

- ``frame``: every frame.
- ``interval``: one frame every ``interval_ms`` milliseconds (capture time).
- ``external``: one frame per external trigger, an HTTP ``POST /trigger`` on the runtime's
  server or a message on an MQTT topic. The inspected frame is the first one captured at or after
  the trigger, so a part that was still moving into place when the trigger fired is not judged.
  A trigger body may be JSON with an ``id`` (a part serial) that is copied into the record.

Frames a trigger does not select are counted as skipped by the pipeline. The ``trigger:`` config
is :class:`TriggerCfg`; :func:`trigger` builds the one it names through :data:`TRIGGERS`.
"""

from __future__ import annotations

import math

import json
import threading
import time
from collections import deque
from typing import Any, Callable, Literal, Optional

from pydantic import Field, model_validator

from ...errors import ConfigError
from ..schema import Strict, checked
from .mqtt import MqttBrokerCfg


CLIENT_OPTIONS = ("client_id", "keepalive")  # from Python only: passed to the MQTT client as they are


class MqttTopicCfg(MqttBrokerCfg):
    topic: str = Field("edgeship/trigger", description="a message on this topic triggers one inspection")


class TriggerCfg(Strict):
    mode: Literal["frame", "interval", "external"] = Field("frame", description="frame: every frame; interval: every interval_ms; external: POST /trigger or an MQTT message")
    interval_ms: Optional[float] = Field(None, description="checked by IntervalTrigger")
    mqtt: Optional[MqttTopicCfg] = Field(None, description="external mode: the MQTT topic that triggers an inspection")

    @model_validator(mode="after")
    def _consistent(self) -> "TriggerCfg":
        if self.mode == "interval" and self.interval_ms is None:
            raise ValueError("mode 'interval' needs interval_ms")
        if self.interval_ms is not None:
            checked(IntervalTrigger)(self.interval_ms)  # the trigger's own rule
        if self.mqtt is not None and self.mode != "external":
            raise ValueError("an MQTT trigger needs mode 'external'")
        return self


class EveryFrameTrigger:
    kind = "frame"

    @classmethod
    def from_config(cls, cfg: TriggerCfg) -> "EveryFrameTrigger":
        return cls()

    def should_infer(self, frame) -> bool:
        return True

    def tag_for(self, frame_index: int) -> Any:
        return None

    def status(self) -> dict:
        return {"mode": self.kind}


class IntervalTrigger:
    kind = "interval"

    @classmethod
    def from_config(cls, cfg: TriggerCfg) -> "IntervalTrigger":
        return cls(cfg.interval_ms)

    def __init__(self, interval_ms: float) -> None:
        if not isinstance(interval_ms, (int, float)) or not math.isfinite(interval_ms) or interval_ms <= 0:
            raise ConfigError(f"trigger interval_ms must be a finite number > 0, got {interval_ms!r}")
        self.interval_s = float(interval_ms) / 1000.0
        self._next: float | None = None
        self.fired = 0

    def should_infer(self, frame) -> bool:
        t = frame.t_mono
        if self._next is not None and t < self._next:
            return False
        # schedule from the ideal grid so the rate does not drift with frame jitter
        self._next = t + self.interval_s if self._next is None or t - self._next > self.interval_s else self._next + self.interval_s
        self.fired += 1
        return True

    def tag_for(self, frame_index: int) -> Any:
        return None

    def status(self) -> dict:
        return {"mode": self.kind, "interval_ms": self.interval_s * 1000.0, "fired": self.fired}


class ExternalTrigger:
    """Pending triggers fed by HTTP or MQTT; each selects one frame captured after it."""

    kind = "external"

    @classmethod
    def from_config(cls, cfg: TriggerCfg) -> "ExternalTrigger":
        return cls(mqtt=cfg.mqtt.options() if cfg.mqtt is not None else None)

    def __init__(self, *, mqtt: dict | None = None, max_pending: int = 100,
                 clock: Callable[[], float] = time.time) -> None:
        self.mqtt_options = dict(mqtt) if mqtt else None
        self._mqtt = None
        self._broker = None
        if self.mqtt_options:  # the broker and its TLS files are checked here, before the run starts
            from .mqtt import parse_mqtt_url, tls_context

            opts = self.mqtt_options
            unknown = sorted(set(opts) - set(MqttTopicCfg.model_fields) - set(CLIENT_OPTIONS))
            if unknown:
                raise ConfigError(f"trigger mqtt: unknown key {unknown[0]!r} (expected "
                                  f"{', '.join(sorted(set(MqttTopicCfg.model_fields) | set(CLIENT_OPTIONS)))})")
            self._broker = parse_mqtt_url(opts.get("broker") or "127.0.0.1:1883")
            self._tls = tls_context(self._broker, opts.get("tls"))
        self._pending: deque[tuple[float, Any]] = deque(maxlen=max_pending)
        self._tags: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self.received = 0
        self.fired = 0

    def open(self) -> None:
        """Subscribe to the MQTT trigger topic when one is configured (``{broker, topic}``)."""
        if not self.mqtt_options:
            return
        from .mqtt import MqttClient

        opts = {k: v for k, v in self.mqtt_options.items() if k not in ("broker", "tls")}
        topic = opts.pop("topic", "edgeship/trigger")
        self._mqtt = MqttClient(self._broker.host, self._broker.port, tls=self._tls, **opts)
        self._mqtt.subscribe(topic, lambda _t, payload: self.fire_from_body(payload))
        self._mqtt.wait_connected(5.0)

    def close(self) -> None:
        if self._mqtt is not None:
            self._mqtt.close()
            self._mqtt = None

    @property
    def subscribed(self) -> bool:
        return self._mqtt is not None and self._mqtt.connected

    def fire(self, tag: Any = None, t: float | None = None) -> None:
        """Request one inspection (``tag`` is stored with its record)."""
        with self._lock:
            self._pending.append((self._clock() if t is None else t, tag))
            self.received += 1

    def fire_from_body(self, body: bytes) -> Any:
        """Trigger from an HTTP/MQTT payload: empty, or JSON with an optional ``id``."""
        tag = None
        if body and body.strip():
            try:
                data = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError):
                data = body.decode("utf-8", "replace").strip()
            tag = data.get("id") if isinstance(data, dict) else data
        self.fire(tag)
        return tag

    def should_infer(self, frame) -> bool:
        with self._lock:
            if not self._pending or self._pending[0][0] > frame.t_capture:
                return False
            _, tag = self._pending.popleft()
            self._tags[frame.index] = tag
            self.fired += 1
            return True

    def tag_for(self, frame_index: int) -> Any:
        with self._lock:
            return self._tags.pop(frame_index, None)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def http_handler(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        """``POST /trigger`` handler for the runtime's HTTP server."""
        tag = self.fire_from_body(body)
        return 202, "application/json", json.dumps({"accepted": True, "id": tag, "pending": self.pending}).encode()

    def status(self) -> dict:
        return {"mode": self.kind, "received": self.received, "fired": self.fired, "pending": self.pending}


TRIGGERS: dict[str, Any] = {
    "frame": EveryFrameTrigger,
    "interval": IntervalTrigger,
    "external": ExternalTrigger,
}


def trigger(cfg: TriggerCfg) -> Any:
    """The trigger a validated ``trigger:`` section names."""
    return TRIGGERS[cfg.mode].from_config(cfg)
