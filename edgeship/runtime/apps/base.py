"""What every app shares: it is a pipeline sink, may bring gates and HTTP routes, and reports status.

    app.open(info)                 # the pipeline's run info (source, artifact, task, labels...)
    app.write(frame, result)       # every processed frame
    app.gates                      # objects with should_infer(frame) -> bool (False = skipped)
    app.routes()                   # [(method, path, handler)] registered on the runtime's HTTP server
    app.status()                   # JSON-ready dict shown by the dashboard (/api/status)
    app.problems()                 # why the app cannot do its job (fails /health), e.g. a dead reject output
    app.close()
"""

from __future__ import annotations

import datetime as _dt
import threading
import uuid
from typing import Any, Callable

Handler = Callable[[bytes, dict], tuple[int, str, bytes]]


def iso_time(t: float) -> str:
    """Seconds since the epoch -> ISO 8601 UTC with milliseconds."""
    return _dt.datetime.fromtimestamp(t, tz=_dt.timezone.utc).isoformat(timespec="milliseconds")


def new_event_id() -> str:
    """A globally unique id, used as the idempotency key of an event."""
    return uuid.uuid4().hex


class App:
    """Base class: subclasses fill in ``write`` and ``status``."""

    name = "app"
    # what the deployment does when the config does not say: buffer every frame (not only the
    # newest) and draw the app's overlays on the video/HTTP sinks
    defaults: dict[str, bool] = {"realtime": False, "annotate": True}

    def __init__(self) -> None:
        self.gates: list[Any] = []
        self.info: dict = {}
        self._lock = threading.Lock()
        self.frames = 0

    def open(self, info: dict) -> None:
        self.info = dict(info or {})

    def write(self, frame, result) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def routes(self) -> list[tuple[str, str, Handler]]:
        return []

    def status(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def problems(self) -> list[str]:
        """What stops the app from doing its job right now (an output that cannot work); each fails
        the health check with its reason. Default: the ``problem()`` of each output the app has."""
        return [p for out in getattr(self, "outputs", []) for p in [getattr(out, "problem", lambda: None)()] if p]

    def annotate(self, image, result) -> None:
        """Draw app-specific overlays (zones, verdicts) on an image in place; default: nothing."""

    def close(self) -> None:
        return None
