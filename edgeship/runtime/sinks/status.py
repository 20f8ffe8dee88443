"""A sink that writes a one-line status to the log while the runtime runs (the service's log).

    StatusLog(every_s=60)   # "running ...", "first frame after 0.4 s", then every minute: frames, fps, skipped

A device's service log is what ``edgeship device logs`` shows: without these lines a healthy
runtime writes nothing until it stops. Lines go to the ``edgeship.status`` logger at INFO.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..types import Frame, Result

log = logging.getLogger("edgeship.status")


class StatusLog:
    """Logs what runs when it opens, when the first frame is through, then every ``every_s`` seconds."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = float(every_s)
        self.metrics: Any = None
        self.started = self.next_at = 0.0
        self.first = True

    def open(self, info: dict[str, Any]) -> None:
        self.metrics = info.get("metrics")
        self.started = time.monotonic()
        self.next_at = self.started + self.every_s
        log.info("running %s (%s) on %s", info.get("model_name") or info.get("model"), info.get("task"), info.get("source"))

    def _tick(self) -> None:
        now = time.monotonic()
        if self.first:
            self.first = False
            log.info("first frame through after %.1f s", now - self.started)
        if now < self.next_at or self.metrics is None:
            return
        self.next_at = now + self.every_s
        s = self.metrics.snapshot()
        log.info("%d frames processed (%.1f fps now), %d skipped (%d dropped, %d gated), %d reconnects, source %s",
                 s["frames_processed"], s["recent_fps"], s["skipped"], s["frames_dropped"], s["frames_skipped_gate"],
                 s["reconnects"], "connected" if s["source_connected"] else "DISCONNECTED")

    def write(self, frame: Frame, result: Result) -> None:
        self._tick()

    def skip(self, frame: Frame) -> None:
        self._tick()

    def close(self) -> None:
        if self.metrics is not None:
            s = self.metrics.snapshot()
            log.info("stopped after %d frames processed in %.0f s", s["frames_processed"], s["duration_s"])
