"""The one delivery worker of the durable event sinks (webhook, MQTT with a ``queue``).

    worker = DeliveryWorker("webhook", url, queue_path, deliver=sink.deliver_due, ...)
    worker.open()        # open the SQLite outbox, start the thread (again after close(), too)
    worker.outbox.put(id, body); worker.wake()
    worker.close()       # try to send what is queued for up to drain_s, stop the thread, close the outbox

The sink says how to deliver (``deliver()``: try the due rows once, return how many went) and
whether it can now (``can_send()``: an MQTT sink only while its broker is connected); the worker
owns the thread, the wake-ups and the outbox's lifetime, so both sinks start, drain, stop and
reopen the same way.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

from .outbox import Outbox

log = logging.getLogger(__name__)


class DeliveryWorker:
    """A thread that delivers an :class:`~.outbox.Outbox`'s due rows in order, woken by new rows and due retries."""

    def __init__(self, kind: str, target: str, queue: str | os.PathLike, *, deliver: Callable[[], int],
                 can_send: Callable[[], bool] = lambda: True, on_blocked: Callable[[], None] = lambda: None,
                 backoff_s: float, max_backoff_s: float, max_queued: int, max_queue_mb: float, timeout_s: float,
                 drain_s: float) -> None:
        self.kind, self.target, self.queue_path = kind, target, Path(queue)
        self.deliver, self.can_send, self.on_blocked = deliver, can_send, on_blocked
        self.backoff_s, self.max_backoff_s = float(backoff_s), float(max_backoff_s)
        self.max_queued, self.max_queue_mb = int(max_queued), float(max_queue_mb)
        self.timeout_s, self.drain_s = float(timeout_s), float(drain_s)
        self.outbox: Outbox | None = None
        self.left: int | None = None  # what stayed on disk at the last close (status after the run)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def stop_event(self) -> threading.Event:
        return self._stop

    def open(self) -> None:
        """Open the outbox and start delivering (a worker closed before starts again)."""
        if self._thread is not None:
            return
        self.outbox = Outbox(self.queue_path, base_s=self.backoff_s, max_s=self.max_backoff_s, max_rows=self.max_queued,
                             max_bytes=int(self.max_queue_mb * (1 << 20)))
        self.left = len(self.outbox)
        if self.left:
            log.info("%s: %d event(s) left from an earlier run will be delivered to %s", self.kind, self.left, self.target)
        self._stop.clear()
        self._wake.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self.kind}-outbox", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = 1.0
            if self.can_send():
                self.deliver()
                due_in = self.outbox.next_due_in()
                wait = 1.0 if due_in is None else min(max(due_in, 0.01), 1.0)
            elif len(self.outbox):
                self.on_blocked()
            self._wake.wait(timeout=wait)
            self._wake.clear()

    def close(self) -> None:
        """Try (for at most ``drain_s``, while it can send) to empty the outbox, stop the thread, close the outbox;
        what is left stays on disk for the next run (retries keep their backoff)."""
        if self._thread is None:
            return
        deadline = time.monotonic() + self.drain_s
        while time.monotonic() < deadline and len(self.outbox) > 0 and self.can_send():
            self._wake.set()
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=self.timeout_s + 1.0)
        self._thread = None

    def close_outbox(self) -> None:
        """Close the outbox (after :meth:`close`), warning about what stays on disk."""
        if self.outbox is None:
            return
        self.left = len(self.outbox)
        if self.left:
            log.warning("%s %s: %d event(s) still queued in %s; they are delivered on the next run",
                        self.kind, self.target, self.left, self.queue_path)
        self.outbox.close()
        self.outbox = None

    def queued(self) -> int | None:
        return len(self.outbox) if self.outbox is not None else self.left

    def dropped(self) -> int | None:
        return self.outbox.dropped() if self.outbox is not None else None
