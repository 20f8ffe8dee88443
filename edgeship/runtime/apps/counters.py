"""Inspection counters in SQLite, bucketed per hour and per class, kept across restarts.

One row per (hour, camera, class) with total / pass / fail counts (``camera`` is "" for a one-camera
deployment). Totals, per-class and per-camera counts and the yield per hour that ``edgeship stats``
prints are all sums over these rows. A database written before cameras were counted gains the
column (its rows become camera "") the first time it is opened for writing.

The same database keeps the drift watch's episodes (:mod:`edgeship.runtime.drift`): one row per
episode and camera, from its drift event to its recovered event, or to the end of the run that saw
it (``end_t`` NULL while it lasts), so ``edgeship stats`` shows when the line stopped looking like
its calibration beside the yield. Times are the watch's: the scene's clock (for a file, its first
frame's capture time plus the frame's place in it).
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
    camera TEXT NOT NULL DEFAULT '',
    label TEXT NOT NULL,
    total INTEGER NOT NULL DEFAULT 0,
    passed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, camera, label)
);
CREATE TABLE IF NOT EXISTS drift_episodes (
    camera TEXT NOT NULL DEFAULT '',
    start_t REAL NOT NULL,          -- unix time the drift began (the watch's "since")
    end_t REAL,                     -- unix time it ended; NULL while the drift lasts
    ended TEXT,                     -- "recovered" (the watch saw it go) or "stopped" (the run ended first)
    what TEXT NOT NULL,             -- JSON: statistic -> its score when the drift was reported
    PRIMARY KEY (camera, start_t)
);
"""
MIGRATE = """
ALTER TABLE inspections RENAME TO inspections_before_cameras;
""" + SCHEMA + """
INSERT INTO inspections (hour, camera, label, total, passed, failed)
    SELECT hour, '', label, total, passed, failed FROM inspections_before_cameras;
DROP TABLE inspections_before_cameras;
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
        cols = [r[1] for r in self._db.execute("PRAGMA table_info(inspections)").fetchall()]
        if cols and "camera" not in cols:
            self._db.executescript("BEGIN IMMEDIATE;" + MIGRATE + "COMMIT;")
        self._db.executescript(SCHEMA)

    def record(self, label: str, passed: bool, t: float | None = None, *, camera: str = "") -> None:
        """Count one inspection of ``label`` by ``camera`` at time ``t`` (seconds since the epoch)."""
        hour = int((time.time() if t is None else t) // 3600)
        p, f = (1, 0) if passed else (0, 1)
        with self._lock:
            self._db.execute(
                "INSERT INTO inspections (hour, camera, label, total, passed, failed) VALUES (?, ?, ?, 1, ?, ?) "
                "ON CONFLICT(hour, camera, label) DO UPDATE SET total = total + 1, passed = passed + ?, "
                "failed = failed + ?",
                (hour, str(camera), str(label), p, f, p, f),
            )

    def drift_started(self, start: float, what: dict[str, float], *, camera: str = "") -> None:
        """An episode began at ``start`` (seconds since the epoch); ``what``: the statistics that moved."""
        import json

        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO drift_episodes (camera, start_t, end_t, ended, what) "
                             "VALUES (?, ?, NULL, NULL, ?)", (str(camera), float(start), json.dumps(what, sort_keys=True)))

    def drift_ended(self, start: float, end: float, *, camera: str = "") -> None:
        """The episode that began at ``start`` ended at ``end`` (the watch's recovered event)."""
        with self._lock:
            self._db.execute("UPDATE drift_episodes SET end_t = ?, ended = 'recovered' WHERE camera = ? AND start_t = ?",
                             (float(end), str(camera), float(start)))

    def drift_stopped(self, end: float, *, camera: str = "") -> int:
        """The run ends: ``camera``'s episodes still open end at ``end`` as "stopped" (a new run's watch starts
        afresh and opens a new episode if the drift is still there). Returns how many were open."""
        with self._lock:
            cur = self._db.execute("UPDATE drift_episodes SET end_t = MAX(start_t, ?), ended = 'stopped' "
                                   "WHERE camera = ? AND end_t IS NULL", (float(end), str(camera)))
            return cur.rowcount

    def totals(self, camera: str | None = None) -> dict:
        """{'total', 'pass', 'fail', 'yield', 'per_class': {label: {'total','pass','fail'}}} (one camera's, or all)."""
        where, args = ("WHERE camera = ?", (camera,)) if camera is not None else ("", ())
        with self._lock:
            rows = self._db.execute(
                f"SELECT label, SUM(total), SUM(passed), SUM(failed) FROM inspections {where} GROUP BY label ORDER BY label",
                args).fetchall()
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


def _where(hours: int | None, now: float | None, camera: str | None = None) -> tuple[str, tuple]:
    parts, args = [], []
    if hours is not None:
        parts.append("hour > ?")
        args.append(int((time.time() if now is None else now) // 3600) - int(hours))
    if camera is not None:
        parts.append("camera = ?")
        args.append(camera)
    return ("WHERE " + " AND ".join(parts)) if parts else "", tuple(args)


def _has_cameras(path: str | os.PathLike) -> bool:
    return any(r[1] == "camera" for r in _query(path, "PRAGMA table_info(inspections)", ()))


def yield_per_hour(path: str | os.PathLike, hours: int | None = None, now: float | None = None,
                   camera: str | None = None) -> list[dict]:
    """Rows {'hour' (UTC start), 'total', 'pass', 'fail', 'yield'} from a counters database, oldest first.

    ``hours`` keeps only the last N hours (counting the current one); ``camera`` one camera's inspections.
    """
    import datetime as dt

    where, args = _where(hours, now, camera if camera is None or _has_cameras(path) else "\0none")
    rows = _query(path, f"SELECT hour, SUM(total), SUM(passed), SUM(failed) FROM inspections {where} "
                        "GROUP BY hour ORDER BY hour", args)
    out = []
    for hour, total, passed, failed in rows:
        start = dt.datetime.fromtimestamp(hour * 3600, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:00Z")
        out.append({"hour": start, "total": int(total), "pass": int(passed), "fail": int(failed),
                    "yield": round(passed / total, 6) if total else None})
    return out


def class_totals(path: str | os.PathLike, hours: int | None = None, now: float | None = None,
                 camera: str | None = None) -> dict[str, dict]:
    """{label: {'total', 'pass', 'fail'}} over the same window as :func:`yield_per_hour`."""
    where, args = _where(hours, now, camera if camera is None or _has_cameras(path) else "\0none")
    rows = _query(path, f"SELECT label, SUM(total), SUM(passed), SUM(failed) FROM inspections {where} "
                        "GROUP BY label ORDER BY label", args)
    return {r[0]: {"total": int(r[1]), "pass": int(r[2]), "fail": int(r[3])} for r in rows}


def camera_totals(path: str | os.PathLike, hours: int | None = None, now: float | None = None) -> dict[str, dict]:
    """{camera: {'total', 'pass', 'fail', 'yield'}} (empty for a database without cameras)."""
    if not _has_cameras(path):
        return {}
    where, args = _where(hours, now)
    rows = _query(path, f"SELECT camera, SUM(total), SUM(passed), SUM(failed) FROM inspections {where} "
                        "GROUP BY camera ORDER BY camera", args)
    return {r[0]: {"total": int(r[1]), "pass": int(r[2]), "fail": int(r[3]),
                   "yield": round(r[2] / r[1], 6) if r[1] else None} for r in rows if r[0]}


def drift_episodes(path: str | os.PathLike, hours: int | None = None, now: float | None = None,
                   camera: str | None = None) -> list[dict]:
    """The drift episodes recorded in a counters database, oldest first: {'camera', 'start', 'end' (UTC ISO
    times; end None while it lasts), 'ended' ("recovered", "stopped" or None), 'lasted_s', 'what'}; ``hours``:
    only episodes still going or ended in the last N hours; ``camera``: one camera's. Empty for a database
    written before episodes were kept."""
    import datetime as dt
    import json

    if not any(r[0] == "drift_episodes" for r in _query(path, "SELECT name FROM sqlite_master WHERE type = 'table'", ())):
        return []
    parts, args = [], []
    if hours is not None:
        parts.append("(end_t IS NULL OR end_t > ?)")
        args.append((time.time() if now is None else now) - 3600 * int(hours))
    if camera is not None:
        parts.append("camera = ?")
        args.append(camera)
    where = ("WHERE " + " AND ".join(parts)) if parts else ""
    rows = _query(path, f"SELECT camera, start_t, end_t, ended, what FROM drift_episodes {where} ORDER BY start_t",
                  tuple(args))

    def iso(t: float | None) -> str | None:
        return None if t is None else dt.datetime.fromtimestamp(t, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    return [{"camera": c, "start": iso(s), "end": iso(e), "ended": how, "lasted_s": None if e is None else round(e - s, 1),
             "what": json.loads(w)} for c, s, e, how, w in rows]
