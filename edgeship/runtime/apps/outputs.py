"""Reject outputs: what tells the line to push a failed part off the belt.

Each output has ``open()``, ``reject(record)`` and ``close()``; its config model is the class's
``Config`` (keys = constructor keywords) and :data:`OUTPUTS` maps the config's ``type`` to it:

- ``mqtt``: the inspection record (JSON) to a topic, QoS 1.
- ``http``: POST of the record (JSON) to a URL (a PLC gateway, Node-RED...).
- ``gpio``: a pulse on a Raspberry Pi pin through gpiozero; where gpiozero (or a GPIO chip) is
  absent it logs once and does nothing, so the same config runs on a workstation.
- ``none``: nothing (counters and saved frames only).

Signals are sent from a worker thread so a slow receiver never stalls the camera pipeline.

Reject signals are deliberately **not durable** (no SQLite outbox, unlike the event sinks in
:mod:`.events`): a reject is useful only while the part is still in front of the ejector, and one
replayed after a restart or a long outage would push a good part off the line. The durable record
of a reject is the counters database and the saved frame; for a durable copy of every verdict, add
an ``events`` sink with a ``queue``. During a short broker outage paho still holds QoS 1 signals in
memory and sends them after the reconnect, so each record carries its capture ``time`` and the PLC
should ignore signals older than the belt's travel time.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Any, Callable, Literal, Optional

from pydantic import Field

from ...errors import ConfigError
from ..schema import Broker, HttpUrl, Strict, check_http_url, tagged_union

log = logging.getLogger(__name__)


class _Worker:
    """Runs ``send(record)`` for each queued record on its own thread."""

    def __init__(self, name: str, send: Callable[[dict], None]) -> None:
        self._send, self._q = send, queue.Queue(maxsize=1000)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.sent = 0
        self.errors = 0
        self._thread.start()

    def put(self, record: dict) -> None:
        try:
            self._q.put_nowait(record)
        except queue.Full:
            self.errors += 1
            log.warning("reject output queue full; dropping a signal")

    def _run(self) -> None:
        while True:
            record = self._q.get()
            if record is None:
                return
            try:
                self._send(record)
                self.sent += 1
            except Exception as e:  # the line keeps running; the failure is counted and logged
                self.errors += 1
                log.warning("reject output failed: %s", e)

    def close(self, timeout: float = 5.0) -> None:
        self._q.put(None)
        self._thread.join(timeout)


class NoOutputCfg(Strict):
    type: Literal["none"]


class NoOutput:
    """Counts rejects and does nothing else."""

    kind = "none"
    Config = NoOutputCfg

    def __init__(self) -> None:
        self.sent = 0

    def open(self) -> None:
        return None

    def reject(self, record: dict) -> None:
        self.sent += 1

    def close(self) -> None:
        return None

    def status(self) -> dict:
        return {"type": self.kind, "signals": self.sent}


class MqttOutputCfg(Strict):
    type: Literal["mqtt"]
    broker: Broker = "127.0.0.1:1883"
    topic: str = "edgeship/reject"
    username: Optional[str] = None
    password: Optional[str] = None


class MqttOutput:
    kind = "mqtt"
    Config = MqttOutputCfg

    def __init__(self, broker: str = "127.0.0.1:1883", topic: str = "edgeship/reject", *,
                 username: str | None = None, password: str | None = None) -> None:
        from .mqtt import parse_mqtt_url

        self.host, self.port = parse_mqtt_url(broker)
        self.topic, self.auth = topic, {"username": username, "password": password}
        self.client = None
        self.sent = 0

    def open(self) -> None:
        from .mqtt import MqttClient

        self.client = MqttClient(self.host, self.port, **self.auth)
        if not self.client.wait_connected(5.0):
            log.warning("MQTT broker %s:%d not reachable yet; reject signals are queued", self.host, self.port)

    def reject(self, record: dict) -> None:
        self.client.publish(self.topic, json.dumps(record, sort_keys=True), qos=1)
        self.sent += 1

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def status(self) -> dict:
        return {"type": self.kind, "topic": self.topic, "signals": self.sent}


class HttpOutputCfg(Strict):
    type: Literal["http"]
    url: HttpUrl
    timeout_s: float = Field(2.0, gt=0)
    headers: dict[str, str] = {}


class HttpOutput:
    kind = "http"
    Config = HttpOutputCfg

    def __init__(self, url: str, timeout_s: float = 2.0, headers: dict[str, str] | None = None) -> None:
        self.url, self.timeout, self.headers = check_http_url(url, "reject output url"), float(timeout_s), dict(headers or {})
        self._worker: _Worker | None = None

    def _post(self, record: dict) -> None:
        from ..httpclient import post

        post(self.url, json.dumps(record).encode(), {"Content-Type": "application/json", **self.headers}, self.timeout)

    def open(self) -> None:
        self._worker = _Worker("reject-http", self._post)

    def reject(self, record: dict) -> None:
        self._worker.put(record)

    def close(self) -> None:
        if self._worker:
            self._worker.close(self.timeout + 1)

    def status(self) -> dict:
        w = self._worker
        return {"type": self.kind, "url": self.url, "signals": w.sent if w else 0, "errors": w.errors if w else 0}


class GpioOutputCfg(Strict):
    type: Literal["gpio"]
    pin: int = Field(ge=0, le=40)
    pulse_ms: float = Field(100.0, gt=0)
    active_high: bool = True


class GpioOutput:
    """Pulse a GPIO pin (BCM numbering) high for ``pulse_ms`` per reject, via gpiozero when present."""

    kind = "gpio"
    Config = GpioOutputCfg

    def __init__(self, pin: int, pulse_ms: float = 100.0, active_high: bool = True) -> None:
        self.pin, self.pulse_s, self.active_high = int(pin), float(pulse_ms) / 1000.0, bool(active_high)
        self.device = None
        self.available = False
        self._worker: _Worker | None = None
        self.skipped = 0

    def open(self) -> None:
        try:
            from gpiozero import OutputDevice

            self.device = OutputDevice(self.pin, active_high=self.active_high, initial_value=False)
            self.available = True
        except Exception as e:  # ImportError off a Pi, BadPinFactory without a GPIO chip
            log.warning("GPIO output on pin %d unavailable (%s: %s); reject signals are not sent",
                        self.pin, type(e).__name__, e)
        self._worker = _Worker("reject-gpio", self._pulse)

    def _pulse(self, record: dict) -> None:
        if self.device is None:
            self.skipped += 1
            return
        self.device.on()
        time.sleep(self.pulse_s)
        self.device.off()

    def reject(self, record: dict) -> None:
        self._worker.put(record)

    def close(self) -> None:
        if self._worker:
            self._worker.close()
        if self.device is not None:
            self.device.close()

    def status(self) -> dict:
        w = self._worker
        return {"type": self.kind, "pin": self.pin, "available": self.available,
                "signals": (w.sent - self.skipped) if w else 0}


# registry: the config's ``type`` -> output class (its ``Config`` is the config model)
OUTPUTS: dict[str, Any] = {
    "none": NoOutput,
    "mqtt": MqttOutput,
    "http": HttpOutput,
    "gpio": GpioOutput,
}

OutputCfg = tagged_union(OUTPUTS.values())


def reject_output(cfg: Any) -> Any:
    """The reject output for a validated ``outputs:`` entry."""
    if cfg.type not in OUTPUTS:
        raise ConfigError(f"unknown reject output {cfg.type!r}; expected one of {', '.join(OUTPUTS)}")
    return OUTPUTS[cfg.type](**cfg.options())
