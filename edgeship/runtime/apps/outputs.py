"""Reject outputs: what tells the line to push a failed part off the belt.

Each output has ``open()``, ``reject(record)`` and ``close()``; its config model is the class's
``Config`` (keys = constructor keywords) and :data:`OUTPUTS` maps the config's ``type`` to it:

- ``mqtt``: the inspection record (JSON) to a topic, QoS 1.
- ``http``: POST of the record (JSON) to a URL (a PLC gateway, Node-RED...).
- ``gpio``: a pulse on a pin (BCM numbering) through gpiozero (Raspberry Pi: lgpio on a Pi 5) or
  Jetson.GPIO (NVIDIA Jetson), picked by ``driver`` (``auto``: Jetson.GPIO on a Jetson).
- ``none``: nothing (counters and saved frames only).

An output that cannot work (no GPIO library or chip, an MQTT broker that does not answer) reports
it through ``problem()``, which fails the runtime's health check (``/health`` 503 "failed": a flash
then rolls the release back) unless the output is marked ``optional: true``; an optional one only
logs a warning and is skipped.

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

import glob
import json
import logging
import os
import queue
import threading
import time
from typing import Any, Callable, Literal

from pydantic import Field

from ...errors import ConfigError
from ..httpclient import HttpsTrustCfg
from ..schema import HttpUrl, Strict, check_http_url, config_defaults, tagged_union
from .mqtt import MqttBrokerCfg

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


class BaseOutputCfg(Strict):
    """What every reject output's config has."""

    optional: bool = Field(False, description="True: a failure to work is logged, not a failed health check")


class NoOutputCfg(BaseOutputCfg):
    type: Literal["none"]


@config_defaults()
class NoOutput:
    """Counts rejects and does nothing else."""

    kind = "none"
    Config = NoOutputCfg

    def __init__(self, optional: bool) -> None:
        self.sent = 0

    def open(self) -> None:
        return None

    def problem(self) -> str | None:
        return None

    def reject(self, record: dict) -> None:
        self.sent += 1

    def close(self) -> None:
        return None

    def status(self) -> dict:
        return {"type": self.kind, "signals": self.sent}


class MqttOutputCfg(BaseOutputCfg, MqttBrokerCfg):
    type: Literal["mqtt"]
    topic: str = Field("edgeship/reject", description="topic every reject record is published to (QoS 1)")


@config_defaults()
class MqttOutput:
    kind = "mqtt"
    Config = MqttOutputCfg

    def __init__(self, broker: str, topic: str, *, username: str | None, password: str | None, tls: Any,
                 optional: bool) -> None:
        from .mqtt import parse_mqtt_url, tls_context

        self.optional = bool(optional)
        self.address = parse_mqtt_url(broker)
        self.topic = topic
        self.auth = {"username": username, "password": password, "tls": tls_context(self.address, tls)}
        self.client = None
        self.sent = 0
        self.why: str | None = None  # a TLS reason the broker cannot be reached

    def open(self) -> None:
        from .mqtt import MqttClient

        self.client = MqttClient(self.address.host, self.address.port, on_connected=self._connected, **self.auth)
        if not self.client.wait_connected(5.0):
            log.warning("MQTT broker %s not reachable yet; reject signals are queued", self.address)
            self.client.explain_failure(self._tls_failure)

    def _tls_failure(self, why: str) -> None:
        self.why = why
        log.warning("MQTT broker %s: %s", self.address, why)

    def _connected(self) -> None:
        self.why = None

    def reject(self, record: dict) -> None:
        self.client.publish(self.topic, json.dumps(record, sort_keys=True), qos=1)
        self.sent += 1

    def problem(self) -> str | None:
        if self.optional or self.client is None or self.client.connected:
            return None
        return (f"reject output mqtt: broker {self.address} is not reachable"
                f"{f' ({self.why})' if self.why else ''} (signals wait in memory)")

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def status(self) -> dict:
        return {"type": self.kind, "topic": self.topic, "signals": self.sent}


class HttpOutputCfg(BaseOutputCfg, HttpsTrustCfg):
    type: Literal["http"]
    url: HttpUrl = Field(description="http(s) address every reject record is POSTed to (a PLC gateway, Node-RED)")
    timeout_s: float = Field(2.0, gt=0, description="seconds one POST may take")
    headers: dict[str, str] = Field({}, description="extra HTTP headers sent with every POST")


@config_defaults()
class HttpOutput:
    kind = "http"
    Config = HttpOutputCfg

    def __init__(self, url: str, timeout_s: float, headers: dict[str, str] | None, optional: bool,
                 ca_file: str | None) -> None:
        from ..httpclient import opener_for

        self.url, self.timeout, self.headers = check_http_url(url, "reject output url"), float(timeout_s), dict(headers or {})
        self.opener = opener_for(self.url, ca_file)
        self._worker: _Worker | None = None

    def _post(self, record: dict) -> None:
        from ..httpclient import post

        post(self.url, json.dumps(record).encode(), {"Content-Type": "application/json", **self.headers}, self.timeout,
             self.opener)

    def open(self) -> None:
        self._worker = _Worker("reject-http", self._post)

    def reject(self, record: dict) -> None:
        self._worker.put(record)

    def problem(self) -> str | None:
        return None  # a receiver that is down shows in errors; it may come back between parts

    def close(self) -> None:
        if self._worker:
            self._worker.close(self.timeout + 1)

    def status(self) -> dict:
        w = self._worker
        return {"type": self.kind, "url": self.url, "signals": w.sent if w else 0, "errors": w.errors if w else 0}


def _on_jetson() -> bool:
    """An NVIDIA Jetson (L4T), by its release file or device-tree model."""
    if os.path.exists("/etc/nv_tegra_release"):
        return True
    try:
        with open("/proc/device-tree/model", "rb") as f:
            return b"jetson" in f.read().lower()
    except OSError:
        return False


class _GpiozeroPin:
    """A pin through gpiozero (Raspberry Pi; its lgpio pin factory drives a Pi 5's RP1 chip)."""

    def __init__(self, pin: int, active_high: bool) -> None:
        from gpiozero import OutputDevice

        self.device = OutputDevice(pin, active_high=active_high, initial_value=False)

    def set(self, on: bool) -> None:
        self.device.on() if on else self.device.off()

    def close(self) -> None:
        self.device.close()


class _JetsonPin:
    """A pin through NVIDIA's Jetson.GPIO (BCM numbering, as on the Raspberry Pi header)."""

    def __init__(self, pin: int, active_high: bool) -> None:
        import Jetson.GPIO as GPIO

        self.gpio, self.pin, self.active_high = GPIO, pin, active_high
        GPIO.setwarnings(False)
        GPIO.setmode(GPIO.BCM)
        GPIO.setup(pin, GPIO.OUT, initial=GPIO.LOW if active_high else GPIO.HIGH)

    def set(self, on: bool) -> None:
        self.gpio.output(self.pin, self.gpio.HIGH if on == self.active_high else self.gpio.LOW)

    def close(self) -> None:
        self.gpio.cleanup(self.pin)


# registry: gpio ``driver`` -> the class that opens a pin with it ("auto" picks by board)
GPIO_DRIVERS: dict[str, Any] = {"gpiozero": _GpiozeroPin, "jetson": _JetsonPin}


def gpio_driver(name: str) -> str:
    """The driver ``name`` stands for (``auto``: jetson on a Jetson, else gpiozero)."""
    return ("jetson" if _on_jetson() else "gpiozero") if name == "auto" else name


class GpioOutputCfg(BaseOutputCfg):
    type: Literal["gpio"]
    pin: int = Field(ge=0, le=40, description="BCM pin number of the reject signal")
    pulse_ms: float = Field(100.0, gt=0, description="length of the reject pulse")
    active_high: bool = Field(True, description="the pulse drives the pin high (false: low)")
    driver: Literal[("auto", *GPIO_DRIVERS)] = Field("auto", description="GPIO library: gpiozero (Raspberry Pi, lgpio on a Pi 5), jetson (Jetson.GPIO); auto picks by board")  # type: ignore[valid-type]


@config_defaults()
class GpioOutput:
    """Pulse a GPIO pin (BCM numbering) for ``pulse_ms`` per reject, through the board's GPIO library.

    A pin that cannot be opened (library not installed, no GPIO chip) is reported by ``problem()``
    (a failed health check) unless ``optional``; the output then skips its signals."""

    kind = "gpio"
    Config = GpioOutputCfg

    def __init__(self, pin: int, pulse_ms: float, active_high: bool, driver: str, optional: bool) -> None:
        self.pin, self.pulse_s, self.active_high = int(pin), float(pulse_ms) / 1000.0, bool(active_high)
        self.driver, self.optional = driver, bool(optional)
        self.device = None
        self.available = False
        self.error: str | None = None
        self._worker: _Worker | None = None
        self.skipped = 0

    def open(self) -> None:
        driver = gpio_driver(self.driver)
        try:
            self.device = GPIO_DRIVERS[driver](self.pin, self.active_high)
            self.available = True
        except Exception as e:  # ImportError without the library, BadPinFactory / OSError without a GPIO chip
            first = (str(e).strip().splitlines() or [""])[0][:200]
            self.error = f"{driver}: {type(e).__name__}: {first}" if first else f"{driver}: {type(e).__name__}"
            if not isinstance(e, ModuleNotFoundError) and not glob.glob("/dev/gpiochip*"):  # BadPinFactory is an ImportError
                self.error += "; this machine has no GPIO chip (/dev/gpiochip*)"
            log.warning("GPIO output on pin %d unavailable (%s); reject signals are not sent%s", self.pin, self.error,
                        "" if self.optional else " and /health reports failed")
        self._worker = _Worker("reject-gpio", self._pulse)

    def problem(self) -> str | None:
        if self.available or self.optional or self.error is None:
            return None
        return f"reject output gpio pin {self.pin} cannot work ({self.error})"

    def _pulse(self, record: dict) -> None:
        if self.device is None:
            self.skipped += 1
            return
        self.device.set(True)
        time.sleep(self.pulse_s)
        self.device.set(False)

    def reject(self, record: dict) -> None:
        self._worker.put(record)

    def close(self) -> None:
        if self._worker:
            self._worker.close()
        if self.device is not None:
            self.device.close()

    def status(self) -> dict:
        w = self._worker
        return {"type": self.kind, "pin": self.pin, "driver": gpio_driver(self.driver), "available": self.available,
                "error": self.error, "signals": (w.sent - self.skipped) if w else 0}


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
