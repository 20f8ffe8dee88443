"""A durable outbox in SQLite: events wait here until a receiver has acknowledged them.

An event is inserted under its id (the idempotency key) before any delivery is attempted, so it
survives the receiver being down and the runtime being restarted. A row is deleted only after a
2xx answer; a failed attempt pushes ``next_try`` back with exponential backoff. Delivery is in
order: the oldest event goes first and younger ones wait behind it. An event the receiver rejects
for good (a 4xx answer) is moved to the ``dead`` table so it cannot block the queue. Inserting the
same id twice is a no-op, so a replayed event is never queued twice.

The outbox is bounded (``max_rows`` events, ``max_bytes`` of bodies; the dead table keeps the
newest ``max_dead``): a long outage cannot fill the disk. When a new event would go over a
bound, the OLDEST queued events are dropped to make room (the newest say most about what is
happening now), and every drop is counted, durably, in :meth:`Outbox.dropped` and in the sinks'
status.

The outbox knows nothing about the transport: the webhook sink stores the JSON body, the MQTT
event sink stores ``topic NUL payload`` (:func:`.mqtt.pack_message`) and acknowledges on the
broker's PUBACK. When the transport tells that the receiver is back (an MQTT reconnect),
:meth:`Outbox.retry_now` cancels the pending backoff.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ...errors import ConfigError

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_created ON outbox(created, id);
CREATE TABLE IF NOT EXISTS dead (
    id TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    created REAL NOT NULL,
    buried REAL NOT NULL,
    error TEXT
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""
MAX_ROWS = 10000  # default bounds (the event sinks' max_queued / max_queue_mb and the config take these)
MAX_MB = 64.0
MAX_BYTES = int(MAX_MB * (1 << 20))
MAX_DEAD = 1000


def backoff_delay(attempts: int, base_s: float = 0.5, max_s: float = 60.0) -> float:
    """Delay before retry number ``attempts`` (1, 2, ...): base * 2^(attempts-1), capped."""
    return min(float(max_s), float(base_s) * (2.0 ** max(0, attempts - 1)))


@dataclass
class Pending:
    id: str
    body: bytes
    attempts: int


class Outbox:
    """Thread-safe SQLite queue (WAL mode; one connection guarded by a lock)."""

    def __init__(self, path: str | os.PathLike, *, base_s: float = 0.5, max_s: float = 60.0, max_rows: int = MAX_ROWS,
                 max_bytes: int = MAX_BYTES, max_dead: int = MAX_DEAD) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ConfigError(f"event queue {self.path} is a folder; expected a file name for the SQLite outbox")
        if int(max_rows) < 1 or int(max_bytes) < 1 or int(max_dead) < 0:
            raise ConfigError(f"outbox bounds must be positive, got {max_rows} events, {max_bytes} bytes, {max_dead} dead")
        self.base_s, self.max_s = float(base_s), float(max_s)
        self.max_rows, self.max_bytes, self.max_dead = int(max_rows), int(max_bytes), int(max_dead)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            # the queue's size, scanned once here and then kept up to date by put/ack/bury (not per event)
            rows, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM outbox").fetchone()
        except (OSError, sqlite3.Error) as e:
            raise ConfigError(f"cannot open the event queue {self.path}: {e}") from None
        self._rows, self._bytes = int(rows), int(size)

    def put(self, event_id: str, body: bytes) -> bool:
        """Queue ``body`` under ``event_id``; False when that id is already queued (or the body alone is over the
        byte bound). Oldest events are dropped, and counted, to stay within the bounds."""
        now = time.time()
        if len(body) > self.max_bytes:
            self._count_drop(1)
            return False
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO outbox (id, body, created, next_try) VALUES (?, ?, ?, ?)",
                    (event_id, body, now, now),
                )
                added = cur.rowcount == 1
                rows, size = self._rows + added, self._bytes + (len(body) if added else 0)
                dropped = 0
                if rows > self.max_rows or size > self.max_bytes:  # drop the oldest until it fits
                    for event_id, length in self._db.execute(
                            "SELECT id, LENGTH(body) FROM outbox ORDER BY created, id").fetchall():
                        if rows <= self.max_rows and size <= self.max_bytes:
                            break
                        self._db.execute("DELETE FROM outbox WHERE id = ?", (event_id,))
                        rows, size, dropped = rows - 1, size - int(length), dropped + 1
                self._add_dropped(dropped)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._rows, self._bytes = rows, size
            return added

    def _add_dropped(self, n: int) -> None:
        if n:
            self._db.execute("INSERT INTO counters (name, value) VALUES ('dropped', ?) "
                             "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (int(n),))

    def _count_drop(self, n: int) -> None:
        with self._lock:
            self._add_dropped(n)

    def _forget(self, event_id: str) -> None:
        """Delete a row (lock held) and keep the running size right."""
        row = self._db.execute("SELECT LENGTH(body) FROM outbox WHERE id = ?", (event_id,)).fetchone()
        if row is not None:
            self._db.execute("DELETE FROM outbox WHERE id = ?", (event_id,))
            self._rows, self._bytes = self._rows - 1, self._bytes - int(row[0])

    def dropped(self) -> int:
        """Events dropped to keep the outbox within its bounds (over its whole life, across restarts)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        return int(row[0]) if row else 0

    def due(self, limit: int = 20, now: float | None = None) -> list[Pending]:
        """The oldest rows, in order, up to the first one still waiting for its retry time."""
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute(
                "SELECT id, body, attempts, next_try FROM outbox ORDER BY created, id LIMIT ?", (int(limit),)
            ).fetchall()
        out = []
        for r in rows:
            if r[3] > now:
                break
            out.append(Pending(r[0], bytes(r[1]), int(r[2])))
        return out

    def ack(self, event_id: str) -> None:
        """The receiver accepted the event: forget it."""
        with self._lock:
            self._forget(event_id)

    def fail(self, event_id: str, error: str) -> float:
        """Record a failed attempt and schedule the next one; returns the delay in seconds."""
        with self._lock:
            row = self._db.execute("SELECT attempts FROM outbox WHERE id = ?", (event_id,)).fetchone()
            attempts = (int(row[0]) if row else 0) + 1
            delay = backoff_delay(attempts, self.base_s, self.max_s)
            self._db.execute(
                "UPDATE outbox SET attempts = ?, next_try = ?, last_error = ? WHERE id = ?",
                (attempts, time.time() + delay, error[:500], event_id),
            )
        return delay

    def retry_now(self) -> int:
        """Make every waiting row due now (the receiver is reachable again); returns how many were waiting."""
        now = time.time()
        with self._lock:
            return self._db.execute("UPDATE outbox SET next_try = ? WHERE next_try > ?", (now, now)).rowcount

    def bury(self, event_id: str, error: str) -> None:
        """Move an event the receiver will never accept to the ``dead`` table."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR REPLACE INTO dead (id, body, created, buried, error) "
                "SELECT id, body, created, ?, ? FROM outbox WHERE id = ?", (time.time(), error[:500], event_id))
            self._forget(event_id)
            self._db.execute("DELETE FROM dead WHERE id IN (SELECT id FROM dead ORDER BY buried DESC LIMIT -1 OFFSET ?)",
                             (self.max_dead,))
            self._db.execute("COMMIT")

    def dead_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM dead").fetchone()[0])

    def next_due_in(self) -> float | None:
        """Seconds until the oldest queued row is due (0 if overdue), None when empty."""
        with self._lock:
            row = self._db.execute("SELECT next_try FROM outbox ORDER BY created, id LIMIT 1").fetchone()
        if row is None or row[0] is None:
            return None
        return max(0.0, float(row[0]) - time.time())

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
