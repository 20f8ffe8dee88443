"""``edgeship device status|logs|rollback``: look at and steer deployed devices."""

from __future__ import annotations

import click

from ._common import FiniteRange, emit_json, format_table
from ._ssh import build, ssh_options


@click.group()
def device() -> None:
    """Status, logs and rollback of deployed devices (same connection options as `edgeship flash`).

    \b
    Example:
      edgeship device status --host pi@10.0.0.21
      edgeship device logs --host pi@10.0.0.21 --lines 200
      edgeship device rollback --hosts line3.txt --json
      edgeship device status --host pi@10.0.0.21 --sudo
    """


def _finish(results: list[dict], as_json: bool, columns: list[str]) -> None:
    ok = all(r.get("ok") for r in results)
    if as_json:
        emit_json({"ok": ok, "results": results})
    else:
        click.echo(format_table(columns, [[r.get(c) for c in columns] for r in results]))
    if not ok:
        raise SystemExit(1)


@device.command()
@ssh_options
def status(**kw) -> None:
    """Running release, previous release, process, health of each device.

    \b
    Example:
      edgeship device status --host pi@10.0.0.21 --json
    """
    from ..targets.fleet import device_many

    as_json, parallel = kw.pop("as_json"), kw.pop("parallel")
    hosts, ssh, options = build(kw)
    results = device_many(hosts, "status", ssh=ssh, options=options, parallel=parallel)
    _finish(results, as_json, ["host", "ok", "current", "previous", "running", "healthy", "pid", "restarts", "reason"])


@device.command()
@ssh_options
@click.option("--lines", "-n", default=100, show_default=True, type=click.IntRange(min=1), help="Last lines of the service log.")
def logs(lines: int, **kw) -> None:
    """The last lines of the service log (journalctl with systemd, the log file with --init none).

    \b
    Example:
      edgeship device logs --host pi@10.0.0.21 -n 50
    """
    from ..targets.fleet import device_many

    as_json, parallel = kw.pop("as_json"), kw.pop("parallel")
    hosts, ssh, options = build(kw)
    results = device_many(hosts, "logs", ssh=ssh, options=options, parallel=parallel, lines=lines)
    if as_json:
        emit_json({"ok": all(r.get("ok") for r in results), "results": results})
    else:
        for r in results:
            click.echo(f"==> {r['host']} <==\n{r.get('log') or r.get('reason', '')}")
    if not all(r.get("ok") for r in results):
        raise SystemExit(1)


@device.command()
@ssh_options
@click.option("--to", "version", help="Release to switch to [the one active before the current one].")
@click.option("--health-timeout", default=60.0, show_default=True, type=FiniteRange(min=1), help="Seconds to wait for /health.")
def rollback(version: str | None, health_timeout: float, **kw) -> None:
    """Switch back to the previous release (or --to VERSION), restart it and check its health.

    \b
    Example:
      edgeship device rollback --host pi@10.0.0.21
    """
    from ..targets.fleet import device_many

    as_json, parallel = kw.pop("as_json"), kw.pop("parallel")
    hosts, ssh, options = build(kw)
    results = device_many(hosts, "rollback", ssh=ssh, options=options, parallel=parallel, version=version,
                          timeout=health_timeout)
    _finish(results, as_json, ["host", "ok", "version", "healthy", "reason"])
