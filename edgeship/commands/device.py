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
@click.option("--expect", default=None, metavar="VERSION",
              help="The release every device should run [the newest release installed on any of them].")
def status(expect: str | None, **kw) -> None:
    """Running release, previous release, process, health, uptime and frames of each device, and
    which devices do not run the fleet's newest release (exit 1 when any is unreachable, unhealthy
    or behind).

    \b
    Example:
      edgeship device status --host pi@10.0.0.21 --json
      edgeship device status --hosts fleet.ini --limit line3
    """
    from ..targets.fleet import device_many, release_agreement

    as_json, parallel = kw.pop("as_json"), kw.pop("parallel")
    hosts, ssh, options = build(kw)
    results = release_agreement(device_many(hosts, "status", ssh=ssh, options=options, parallel=parallel), expect)
    _finish(results, as_json, ["host", "ok", "current", "previous", "init", "running", "healthy", "uptime_s",
                               "frames_processed", "restarts", "agrees", "degraded", "health_reason", "reason"])


@device.command()
@ssh_options
@click.option("--lines", "-n", default=100, show_default=True, type=click.IntRange(min=1), help="Last lines of the service log.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing the log as the runtime writes it (one device; Ctrl-C stops).")
@click.option("--for", "follow_s", type=FiniteRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="With --follow: stop after SECONDS.")
def logs(lines: int, follow: bool, follow_s: float | None, **kw) -> None:
    """The last lines of the service log (journalctl with systemd, the log file with --init none);
    --follow keeps printing new lines as the runtime writes them.

    \b
    Example:
      edgeship device logs --host pi@10.0.0.21 -n 50
      edgeship device logs --host pi@10.0.0.21 --follow
    """
    from ..targets.fleet import device_many, follow_logs

    as_json, parallel = kw.pop("as_json"), kw.pop("parallel")
    hosts, ssh, options = build(kw)
    if follow:
        if len(hosts) != 1 or as_json:
            raise click.UsageError("--follow takes one device and no --json")
        follow_logs(hosts[0], lambda text: click.echo(text, nl=False), ssh=ssh, options=options, lines=lines,
                    seconds=follow_s)
        return
    if follow_s is not None:
        raise click.UsageError("--for only applies with --follow")
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
    """Switch back to the newest earlier release that is not marked failed (or --to VERSION),
    restart it and check its health; if it fails too, on to the next; with none left the
    service is stopped. A release that failed its health check is never picked.

    \b
    Example:
      edgeship device rollback --host pi@10.0.0.21
      edgeship device rollback --host pi@10.0.0.21 --to shapes_int8-d778be26913b
    """
    from ..targets.agent import VERSION_RE
    from ..targets.fleet import device_many

    if version is not None and not VERSION_RE.match(version):
        raise click.BadParameter(f"{version!r} is not a release name (letters, digits and . _ + -, one folder name)",
                                 param_hint="--to")
    as_json, parallel = kw.pop("as_json"), kw.pop("parallel")
    hosts, ssh, options = build(kw)
    results = device_many(hosts, "rollback", ssh=ssh, options=options, parallel=parallel, version=version,
                          timeout=health_timeout)
    _finish(results, as_json, ["host", "ok", "version", "healthy", "reason"])
