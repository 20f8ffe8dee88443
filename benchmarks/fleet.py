"""Wall time to roll a bundle out to 8, 16 and 32 simulated devices, with edgeship's engine and with Ansible.

    python benchmarks/fleet.py [--sizes 8,16,32] [--parallel 8]

The devices: one real OpenSSH server on 127.0.0.1 and one device root per device (each runs its own
runtime under edgeship's supervisor, --init none), as the tests do. The bundle is the test suite's
(a float digits classifier reading a 2 fps looping video, so 32 runtimes fit on 2 cores), with its
wheels; the runtime venv is shared by every device root (installed once, before the timing starts),
as on a fleet whose devices already hold the runtime of the previous release. Each size is rolled
out with both engines in one run (edgeship first, then Ansible, each on fresh device roots), batches
``--canary 1 --waves 25%,100%`` and at most ``--parallel`` devices at once (Ansible's forks).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


class _Factory:
    """What tests.helpers.deploy needs of pytest's tmp_path_factory."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def mktemp(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.base))

    def getbasetemp(self) -> Path:
        return self.base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="8,16,32")
    ap.add_argument("--parallel", type=int, default=8)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    from edgeship.targets.bundle import build_bundle
    from edgeship.targets.flash import FlashOptions
    from edgeship.targets.inventory import parse_hosts_file
    from edgeship.targets.playbook import run_playbook
    from edgeship.targets.remote import SSHOptions
    from edgeship.targets.rollout import RolloutPlan, roll_out
    from runtime_models import machine
    from tests.helpers import sshd
    from tests.helpers.data import moving_digit_frames, write_video
    from tests.helpers.deploy import deploy_inputs, stop_supervisor

    base = Path(tempfile.mkdtemp(prefix="edgeship-fleet-"))
    try:
        inputs = deploy_inputs(_Factory(base))
        video = write_video(base / "slow.mp4", moving_digit_frames(20)[0], fps=2)
        bundle = build_bundle(inputs["artifact"], out=base / "fleet.tar.gz", version="fleet-1", target="generic-x86_64",
                              wheels=True, wheelhouse=inputs["wheelhouse"], python="3.11",
                              edgeship_wheel=inputs["edgeship_wheel"], compresslevel=1, http_port=inputs["port"],
                              source=str(video), run_args=("--loop", "--realtime")).path
        plan = RolloutPlan(canary=1, waves=("25%", "100%"))
        rows = []
        with sshd.SSHServer(base / "sshd") as server:
            ssh = SSHOptions(identity=str(server.user_key), known_hosts=str(server.known_hosts))
            python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
            options = FlashOptions(init="none", health_timeout=120, python=python, venvs=str(inputs["venvs"]))

            def fleet(name: str, n: int):
                roots = [base / name / f"d{i}" / "edgeship" for i in range(n)]
                inv = base / f"{name}.ini"
                inv.write_text("[fleet]\n" + "".join(
                    f"{name}{i} ansible_host=127.0.0.1 ansible_port={server.port} ansible_user={server.user} "
                    f"device_root={r} http_port={sshd.free_port()}\n" for i, r in enumerate(roots)))
                return roots, parse_hosts_file(inv)

            roots, hosts = fleet("warm", 1)  # the shared runtime venv, installed once
            roll_out(bundle, hosts, RolloutPlan(), ssh=ssh, options=options)
            for r in roots:
                stop_supervisor(r)
            for n in sizes:
                row = {"n": n}
                for engine in ("edgeship", "ansible"):
                    roots, hosts = fleet(f"{engine}{n}", n)
                    t = time.monotonic()
                    if engine == "edgeship":
                        res = roll_out(bundle, hosts, plan, ssh=ssh, options=options, parallel=args.parallel)
                    else:
                        res = run_playbook(bundle, hosts, plan, ssh=ssh, options=options, parallel=args.parallel)
                    row[engine] = time.monotonic() - t
                    row[f"{engine}_ok"] = sum(d.status == "deployed" for d in res.devices)
                    print(f"  {n} devices, {engine}: {row[engine]:.1f} s, {row[f'{engine}_ok']}/{n} deployed", file=sys.stderr)
                    for r in roots:
                        stop_supervisor(r)
                rows.append(row)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"\nMachine: {machine()}; --canary 1 --waves 25%,100%, --parallel {args.parallel}; one sshd, "
          "one device root and runtime per device.\n")
    print("| devices | edgeship engine (s) | per device (s) | Ansible engine (s) | per device (s) | deployed (edgeship / Ansible) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['edgeship']:.1f} | {r['edgeship'] / r['n']:.2f} | {r['ansible']:.1f} | "
              f"{r['ansible'] / r['n']:.2f} | {r['edgeship_ok']} / {r['ansible_ok']} |")
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        for engine in ("edgeship", "ansible"):
            slope = (b[engine] - a[engine]) / (b["n"] - a["n"])
            print(f"\n{engine}: {slope:.2f} s per added device between {a['n']} and {b['n']}; a straight line "
                  f"predicts {b[engine] + slope * (1000 - b['n']):.0f} s for 1,000 devices at --parallel {args.parallel}.")


if __name__ == "__main__":
    main()
