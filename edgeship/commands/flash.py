"""``edgeship flash``: deploy a bundle to devices over SSH with health check and automatic rollback."""

from __future__ import annotations

import click

from ._common import FiniteRange, echo_err, emit_json, format_table
from ._ssh import build, ssh_options

EXAMPLES = """
\b
Example:
  edgeship flash digits-rpi5.tar.gz --host pi@10.0.0.21 --identity ~/.ssh/id_ed25519
  edgeship flash digits-rpi5.tar.gz pi@10.0.0.5 --sudo
  edgeship flash line3.tar.gz --hosts line3.txt --parallel 8 --health-timeout 90 --json
  edgeship flash b.tar.gz --host me@cam1:2222 --init none --device-root /home/me/edgeship
"""


@click.command(epilog=EXAMPLES)
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False))
@click.argument("targets", nargs=-1, metavar="[USER@HOST[:PORT]]...")
@ssh_options
@click.option("--health-timeout", default=60.0, show_default=True, type=FiniteRange(min=1),
              help="Seconds the new release has to answer /health before it is rolled back.")
@click.option("--keep", default=3, show_default=True, type=click.IntRange(min=2), help="Releases kept on each device.")
@click.option("--venvs-dir", help="Runtime venvs folder on the device, shared between device roots [DEVICE_ROOT/venvs].")
@click.option("--bwlimit", type=FiniteRange(min=1), help="Upload bandwidth limit per device, KiB/s.")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE",
              help="A variable for the service's environment (repeatable), kept in DEVICE_ROOT/device.env (0600), "
                   "e.g. --env EDGESHIP_HTTP_TOKEN=... or --env GPIOZERO_PIN_FACTORY=mock.")
def flash(bundle, targets, health_timeout, keep, venvs_dir, bwlimit, env, **kw) -> None:
    """Deploy BUNDLE to one or many devices over SSH (devices as arguments, --host or --hosts).

    \b
    Per device: preflight (architecture, OS, Python, glibc, free disk, camera) -> upload into
    DEVICE_ROOT/incoming -> verify checksums on the device -> DEVICE_ROOT/releases/<version>
    -> runtime venv (shared by releases with identical requirements; offline from the bundle's
    wheels) -> switch DEVICE_ROOT/current atomically -> start -> health check: the runtime is
    up, has processed a frame from its source, its outputs work (a reject pin, a broker) and it
    is not restarting. A release that fails is marked failed and rolled back to the newest
    release that is not; with none, the service is stopped (no release runs) and the table
    says so. Exit 1 when any device failed.

    \b
    Log in as root, or as a user with passwordless sudo and --sudo (Raspberry Pi OS, Jetson,
    Ubuntu): device steps run under `sudo -n`, releases are root-owned, the service still runs
    as the profile's service user (systemd) or as the login user (--init none). A sudo that asks
    for a password is refused in the preflight, before anything changes on the device.

    \b
    A bundle made with --system-opencv (Jetson profiles, gst: sources) needs cv2 in the device's
    Python (--python, default python3; apt install python3-opencv): refused when it is missing,
    a warning when that cv2 has no GStreamer.
    """
    from ..targets.fleet import flash_many

    as_json, parallel = kw.pop("as_json"), kw.pop("parallel")
    kw["hosts"] = (*targets, *kw["hosts"])
    hosts, ssh, options = build(kw, health_timeout=health_timeout, keep=keep, venvs=venvs_dir, bwlimit_kbps=bwlimit,
                                env=tuple(env))

    def done(r):
        if not as_json:
            echo_err(f"{r.host}: {r.status}" + (f" ({r.reason})" if r.reason else ""))
            for w in r.warnings:
                echo_err(f"{r.host}: warning: {w}")

    results = flash_many(bundle, hosts, ssh=ssh, options=options, parallel=parallel, on_done=done)
    ok = all(r.ok for r in results)
    if as_json:
        emit_json({"ok": ok, "bundle": bundle, "results": [r.to_dict() for r in results]})
    else:
        rows = [(r.host, r.status, r.version, r.running, round(sum(r.seconds.values()), 1), r.reason) for r in results]
        click.echo(format_table(["host", "status", "release", "running", "seconds", "reason"], rows))
    if not ok:
        raise SystemExit(1)
