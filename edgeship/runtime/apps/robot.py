"""Robot perception feed: the latest result, published at a fixed rate, with its age.

A robot's control loop wants the newest perception at a steady rate, and must know how old it
is. :class:`RobotApp` keeps only the latest result; a publisher thread sends it every
``1 / rate_hz`` seconds as one JSON datagram over UDP and serves it on ``GET /state``. Each state
carries the capture timestamp, its age at publish time, and ``stale: true`` once the age passes
``stale_ms`` (a stalled camera or model never looks like a fresh "nothing in front of me").
The config defaults for robots are the lowest-latency ones: one-slot buffer, no annotation, no
snapshots.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from typing import Literal, Sequence

from pydantic import Field, field_validator

from ..schema import Strict, checked, config_defaults
from .base import App

log = logging.getLogger(__name__)


def build_state(result, *, seq: int, now: float, stale_ms: float, source: str = "") -> dict:
    """The published state for ``result`` (None before the first result) at wall time ``now``."""
    if result is None:
        return {"seq": seq, "t_publish": round(now, 6), "stale": True, "age_ms": None, "result": None,
                "source": source}
    age_ms = (now - result.t_capture) * 1000.0
    body = result.to_dict()
    return {
        "seq": seq,
        "t_publish": round(now, 6),
        "t_capture": round(result.t_capture, 6),
        "age_ms": round(age_ms, 2),
        "stale": age_ms > stale_ms,
        "frame": result.frame_index,
        "source": source,
        "result": body,
    }


def parse_udp_target(target: str) -> tuple[str, int]:
    """``host:port`` -> (host, port)."""
    from ...errors import ConfigError

    host, _, port = str(target).rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise ConfigError(f"UDP target must look like host:port, got {target!r}") from None


class RobotCfg(Strict):
    """``app: {type: robot, ...}`` (keys = :class:`RobotApp` keywords)."""

    type: Literal["robot"]
    rate_hz: float = Field(30.0, gt=0, le=1000, description="how often the newest result is published")
    stale_ms: float = Field(200.0, gt=0, description="a result older than this is flagged stale")
    udp: list[str] = Field([], description="HOST:PORT addresses each result is sent to as one JSON datagram")

    @field_validator("udp")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        for t in v:
            checked(parse_udp_target)(t)
        return v


@config_defaults()
class RobotApp(App):
    name = "robot"
    Config = RobotCfg
    defaults = {"realtime": True, "annotate": False}  # one-slot live buffer, no drawing, no snapshots

    @classmethod
    def from_config(cls, cfg: RobotCfg) -> "RobotApp":
        return cls(**cfg.options())

    def __init__(self, *, rate_hz: float, stale_ms: float, udp: Sequence[str], max_datagram: int = 60000) -> None:
        super().__init__()
        self.rate_hz, self.stale_ms = float(rate_hz), float(stale_ms)
        self.targets = [parse_udp_target(t) for t in udp]
        self.max_datagram = int(max_datagram)
        self._latest = None
        self._seq = 0
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.published = 0
        self.stale_published = 0
        self.too_big = 0

    def open(self, info: dict) -> None:
        super().open(info)
        if self.targets:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._thread = threading.Thread(target=self._publish_loop, name="robot-publisher", daemon=True)
        self._thread.start()

    def write(self, frame, result) -> None:
        with self._lock:
            self._latest = result
            self.frames += 1

    def state(self, now: float | None = None) -> dict:
        """The current state (what /state returns and what is sent over UDP)."""
        with self._lock:
            self._seq += 1
            latest, seq = self._latest, self._seq
        return build_state(latest, seq=seq, now=time.time() if now is None else now, stale_ms=self.stale_ms,
                           source=str(self.info.get("source", "")))

    def _publish_loop(self) -> None:
        period = 1.0 / self.rate_hz
        next_t = time.monotonic()
        while not self._stop.is_set():
            state = self.state()
            self._send(state)
            next_t += period
            delay = next_t - time.monotonic()
            if delay < -period:  # fell behind (suspended, overloaded): resync, never burst
                next_t = time.monotonic()
                delay = 0.0
            self._stop.wait(max(0.0, delay))

    def _send(self, state: dict) -> None:
        self.published += 1
        self.stale_published += int(bool(state["stale"]))
        if self._sock is None:
            return
        data = json.dumps(state, separators=(",", ":")).encode()
        if len(data) > self.max_datagram:
            self.too_big += 1
            log.warning("robot state of %d bytes exceeds one datagram (%d); not sent", len(data), self.max_datagram)
            return
        for target in self.targets:
            try:
                self._sock.sendto(data, target)
            except OSError as e:  # nobody listening yet is normal for UDP; keep publishing
                log.debug("UDP send to %s failed: %s", target, e)

    def http_state(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        return 200, "application/json", json.dumps(self.state()).encode()

    def routes(self):
        return [("GET", "/state", self.http_state)]

    def status(self) -> dict:
        with self._lock:
            latest = self._latest
        age = None if latest is None else round((time.time() - latest.t_capture) * 1000.0, 2)
        return {"app": self.name, "frames": self.frames, "rate_hz": self.rate_hz, "stale_ms": self.stale_ms,
                "published": self.published, "stale_published": self.stale_published, "age_ms": age,
                "stale": age is None or age > self.stale_ms,
                "udp_targets": [f"{h}:{p}" for h, p in self.targets]}

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
