"""Inspection counters in SQLite, bucketed per hour and per class, kept across restarts.

One row per (hour, class) with total / pass / fail counts. Totals, per-class counts and the
yield per hour that ``edgeship stats`` prints are all sums over these rows.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from ...errors import InputError

SCHEMA = """
CREATE TABLE IF NOT EXISTS inspections (
    hour INTEGER NOT NULL,          -- unix time // 3600
    label TEXT NOT NULL,
    total INTEGER NOT NULL DEFAULT 0,
    passed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, label)
);
"""


class Counters:
    """Persistent pass/fail counters (thread-safe)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: never corrupt, ~40x faster per count than FULL; a power cut may lose the last counts
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def record(self, label: str, passed: bool, t: float | None = None) -> None:
        """Count one inspection of ``label`` at time ``t`` (seconds since the epoch)."""
        hour = int((time.time() if t is None else t) // 3600)
        p, f = (1, 0) if passed else (0, 1)
        with self._lock:
            self._db.execute(
                "INSERT INTO inspections (hour, label, total, passed, failed) VALUES (?, ?, 1, ?, ?) "
                "ON CONFLICT(hour, label) DO UPDATE SET total = total + 1, passed = passed + ?, failed = failed + ?",
                (hour, str(label), p, f, p, f),
            )

    def totals(self) -> dict:
        """{'total', 'pass', 'fail', 'yield', 'per_class': {label: {'total','pass','fail'}}}."""
        with self._lock:
            rows = self._db.execute(
                "SELECT label, SUM(total), SUM(passed), SUM(failed) FROM inspections GROUP BY label ORDER BY label"
            ).fetchall()
        per = {r[0]: {"total": int(r[1]), "pass": int(r[2]), "fail": int(r[3])} for r in rows}
        total = sum(v["total"] for v in per.values())
        passed = sum(v["pass"] for v in per.values())
        return {"total": total, "pass": passed, "fail": total - passed,
                "yield": round(passed / total, 6) if total else None, "per_class": per}

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _query(path: str | os.PathLike, sql: str, args: tuple) -> list[tuple]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"counters database {p} does not exist")
    try:
        db = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=30)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        raise InputError(f"{p} is not an edgeship counters database: {e}") from e


def _since(hours: int | None, now: float | None) -> tuple[str, tuple]:
    if hours is None:
        return "", ()
    return "WHERE hour > ?", (int((time.time() if now is None else now) // 3600) - int(hours),)


def yield_per_hour(path: str | os.PathLike, hours: int | None = None, now: float | None = None) -> list[dict]:
    """Rows {'hour' (UTC start), 'total', 'pass', 'fail', 'yield'} from a counters database, oldest first.

    ``hours`` keeps only the last N hours (counting the current one).
    """
    import datetime as dt

    where, args = _since(hours, now)
    rows = _query(path, f"SELECT hour, SUM(total), SUM(passed), SUM(failed) FROM inspections {where} "
                        "GROUP BY hour ORDER BY hour", args)
    out = []
    for hour, total, passed, failed in rows:
        start = dt.datetime.fromtimestamp(hour * 3600, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:00Z")
        out.append({"hour": start, "total": int(total), "pass": int(passed), "fail": int(failed),
                    "yield": round(passed / total, 6) if total else None})
    return out


def class_totals(path: str | os.PathLike, hours: int | None = None, now: float | None = None) -> dict[str, dict]:
    """{label: {'total', 'pass', 'fail'}} over the same window as :func:`yield_per_hour`."""
    where, args = _since(hours, now)
    rows = _query(path, f"SELECT label, SUM(total), SUM(passed), SUM(failed) FROM inspections {where} "
                        "GROUP BY label ORDER BY label", args)
    return {r[0]: {"total": int(r[1]), "pass": int(r[2]), "fail": int(r[3])} for r in rows}
