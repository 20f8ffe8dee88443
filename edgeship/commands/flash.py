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
  edgeship flash line3.tar.gz --hosts fleet.ini --limit line3 --canary 1 --soak 300 --max-slowdown 20 \
      --waves 10%,50%,100% --max-failed 2 --rollback-on-halt
  edgeship flash --resume rollout-line3-7.json
  edgeship flash line3.tar.gz --hosts fleet.ini --engine ansible --canary 1 --waves 25%,100%
"""


@click.command(epilog=EXAMPLES)
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False), required=False)
@click.argument("targets", nargs=-1, metavar="[USER@HOST[:PORT]]...")
@ssh_options
@click.option("--canary", type=click.IntRange(min=0), default=0, show_default=True,
              help="Flash N devices first and judge them (see --soak) before any other device is touched.")
@click.option("--soak", "soak_s", type=FiniteRange(min=0), default=0.0, show_default=True, metavar="SECONDS",
              help="With --canary: let the canary run this long, then require it healthy on the new release, "
                   "processing frames and not restarting.")
@click.option("--max-slowdown", type=FiniteRange(min=0), default=None, metavar="PERCENT",
              help="With --canary: fail a canary whose inference (p50) is more than PERCENT slower than on the "
                   "release it ran before.")
@click.option("--waves", default=None, metavar="N|P%,...",
              help="Batch sizes after the canary, Ansible's serial rule: each N devices or P% of the fleet, the last "
                   "repeating (10%,50%,100%).")
@click.option("--wave-size", type=click.IntRange(min=1), default=None, help="Batches of N devices after the canary.")
@click.option("--max-failed", default=None, metavar="N|P%",
              help="Failure budget: once more devices failed, no further device is touched (default with --canary "
                   "or waves: 0; without: no budget, every device is tried).")
@click.option("--rollback-on-halt", is_flag=True,
              help="When the rollout halts, the devices of the halted batch that did switch go back to their previous release.")
@click.option("--state", "state_path", type=click.Path(dir_okay=False), default=None,
              help="Rollout state file, rewritten after every device [rollout-VERSION.json for a staged rollout].")
@click.option("--resume", "resume_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Finish the rollout a state file describes (same bundle, devices, options); devices already on "
                   "the new release are not flashed again.")
@click.option("--engine", type=click.Choice(("edgeship", "ansible")), default="edgeship", show_default=True,
              help="Who runs the rollout: edgeship itself, or ansible-playbook with the role `edgeship ansible init` "
                   "writes (pip install 'edgeship[ansible]'): same device agent, same batches.")
@click.option("--health-timeout", default=60.0, show_default=True, type=FiniteRange(min=1),
              help="Seconds the new release has to answer /health before it is rolled back.")
@click.option("--keep", default=3, show_default=True, type=click.IntRange(min=2), help="Releases kept on each device.")
@click.option("--venvs-dir", help="Runtime venvs folder on the device, shared between device roots [DEVICE_ROOT/venvs].")
@click.option("--bwlimit", type=FiniteRange(min=1), help="Upload bandwidth limit per device, KiB/s.")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE",
              help="A variable for the service's environment (repeatable), kept in DEVICE_ROOT/device.env (0600), "
                   "e.g. --env EDGESHIP_HTTP_TOKEN=... or --env GPIOZERO_PIN_FACTORY=mock.")
def flash(bundle, targets, health_timeout, keep, venvs_dir, bwlimit, env, canary, soak_s, max_slowdown, waves,
          wave_size, max_failed, rollback_on_halt, state_path, resume_path, engine, **kw) -> None:
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
    Staged rollouts (--canary, --waves, --wave-size, --max-failed): batches one after another;
    once the failure budget is spent no further device is touched, the table says per device
    what happened and why, and the exit code is 1 unless every device is on the new release.
    A staged rollout writes a state file; `--resume STATE` finishes a halted or interrupted one.

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
    from ..errors import InputError

    as_json, parallel = kw.pop("as_json"), kw.pop("parallel")
    if resume_path:
        if bundle or targets or kw["hosts"] or kw["hosts_file"]:
            raise InputError("--resume takes the bundle and devices from the state file: give no BUNDLE or hosts")
        from ..targets.rollout import resume

        _finish_rollout(resume(resume_path, on_event=None if as_json else echo_err), as_json)
        return
    if not bundle:
        raise InputError("flash needs a BUNDLE (or --resume STATE)")
    kw["hosts"] = (*targets, *kw["hosts"])
    hosts, ssh, options = build(kw, health_timeout=health_timeout, keep=keep, venvs=venvs_dir, bwlimit_kbps=bwlimit,
                                env=tuple(env))
    from ..targets.rollout import RolloutPlan

    plan = RolloutPlan(canary=canary, soak_s=soak_s, waves=tuple(w.strip() for w in (waves or "").split(",") if w.strip()),
                       wave_size=wave_size, max_failed=max_failed, max_slowdown=max_slowdown,
                       rollback_on_halt=rollback_on_halt)
    if engine == "ansible":
        from ..targets.playbook import run_playbook

        _finish_rollout(run_playbook(bundle, hosts, plan, ssh=ssh, options=options, parallel=parallel,
                                     echo=None if as_json else echo_err), as_json)
        return
    if plan.staged or state_path or plan.max_failed is not None:
        from ..targets.bundle import read_release
        from ..targets.rollout import roll_out

        state_path = state_path or f"rollout-{read_release(bundle)['version']}.json"
        result = roll_out(bundle, hosts, plan, ssh=ssh, options=options, parallel=parallel, state_path=state_path,
                          on_event=None if as_json else echo_err)
        _finish_rollout(result, as_json)
        return
    from ..targets.fleet import flash_many

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


def _finish_rollout(result, as_json: bool) -> None:
    """The rollout's table (or JSON) and its exit code: 0 only when every device is on the new release."""
    if as_json:
        emit_json(result.to_dict())
    else:
        rows = [(d.host, d.batch, d.status, d.previous, d.running, d.seconds, d.reason) for d in result.devices]
        click.echo(format_table(["host", "batch", "status", "previous", "running", "seconds", "reason"], rows))
        verdict = ("completed" if result.ok else f"halted: {result.halted}" if result.halted
                   else "completed with failures")
        echo_err(f"rollout of {result.version}: {verdict}" + (f" (state: {result.state_path})" if result.state_path else ""))
    if not result.ok:
        raise SystemExit(1)
