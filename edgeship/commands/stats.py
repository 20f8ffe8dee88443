"""``edgeship stats``: inspection yield per hour and drift episodes from an industrial app's counters database."""

from __future__ import annotations

import click

from ._common import emit_json, format_table


@click.command("stats")
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--hours", type=click.IntRange(min=1), default=None, help="Only the last N hours (default: everything recorded).")
@click.option("--camera", default=None, metavar="NAME", help="Only this camera's inspections (a multi-camera deployment counts each camera apart).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: per-hour rows, totals, per-class and per-camera counts, drift episodes.")
def stats(db: str, hours: int | None, camera: str | None, as_json: bool) -> None:
    """Print total, pass, fail and yield per hour from the SQLite counters DB.

    The industrial app (``app: {type: industrial, counters: FILE}`` in a deployment config) counts
    every inspection per hour and class; the counters survive restarts. Hours are UTC.
    The drift watch's episodes (when the camera stopped looking like the model's calibration, what moved,
    when it recovered) are kept in the same file and listed after the counts.

    \b
    Example:
      edgeship stats industrial-out/counters.sqlite
      edgeship stats /var/lib/edgeship/counters.sqlite --hours 8 --json
      edgeship stats site-out/counters.sqlite --camera line2
    """
    from ..runtime.apps.counters import camera_totals, class_totals, drift_episodes, yield_per_hour

    rows = yield_per_hour(db, hours, camera=camera)
    per_class = class_totals(db, hours, camera=camera)
    per_camera = camera_totals(db, hours)
    if camera is not None and camera not in per_camera and not drift_episodes(db, hours, camera=camera):
        from ..errors import InputError

        raise InputError(f"{db} has no inspections by camera {camera!r}; it has: {', '.join(per_camera) or 'no named cameras'}")
    total = sum(r["total"] for r in rows)
    passed = sum(r["pass"] for r in rows)
    summary = {"db": db, "hours": hours, "camera": camera, "total": total, "pass": passed, "fail": total - passed,
               "yield": round(passed / total, 6) if total else None, "per_hour": rows, "per_class": per_class,
               "per_camera": per_camera, "drift": drift_episodes(db, hours, camera=camera)}
    if as_json:
        emit_json(summary)
        return
    table = [[r["hour"], r["total"], r["pass"], r["fail"], _pct(r["yield"])] for r in rows]
    table.append(["all", total, passed, total - passed, _pct(summary["yield"])])
    click.echo(format_table(["hour (UTC)", "total", "pass", "fail", "yield"], table))
    if per_class:
        click.echo()
        click.echo(format_table(["class", "total", "pass", "fail"],
                                [[k, v["total"], v["pass"], v["fail"]] for k, v in per_class.items()]))
    if per_camera and camera is None:
        click.echo()
        click.echo(format_table(["camera", "total", "pass", "fail", "yield"],
                                [[k, v["total"], v["pass"], v["fail"], _pct(v["yield"])] for k, v in per_camera.items()]))
    if summary["drift"]:
        click.echo()
        click.echo(format_table(["drift from (UTC)", "until", "camera", "what moved"],
                                [[e["start"], (e["end"] + (" (run stopped)" if e["ended"] == "stopped" else ""))
                                  if e["end"] else "still drifting", e["camera"] or "-",
                                  ", ".join(f"{k} {v:g}" for k, v in sorted(e["what"].items(), key=lambda kv: -kv[1]))]
                                 for e in summary["drift"]]))


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100.0 * v:.1f}%"
