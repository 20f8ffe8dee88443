"""Issue 29, fleet rollouts: batches and budgets (pure), inventories and --limit, then 8 real devices (one
real sshd on 127.0.0.1, 8 device roots, 8 runtimes) rolled out by edgeship's engine and by ansible-playbook,
halts (after the canary; on the third failure with --max-failed 2 and --rollback-on-halt) and --resume
after the workstation is killed mid-wave."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeship.errors import InputError
from edgeship.targets.bundle import build_bundle
from edgeship.targets.flash import FlashOptions
from edgeship.targets.inventory import parse_hosts_file, select
from edgeship.targets.remote import SSHOptions
from edgeship.targets.rollout import RolloutPlan, batches, resume, roll_out
from tests.helpers import sshd
from tests.helpers.deploy import deploy_inputs, health, stop_supervisor

DEVICE_PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
EDGESHIP = [sys.executable, "-m", "edgeship.cli"]
N = 8


# ---- pure: batches, budgets, plans, inventories -------------------------------------------------------------
def test_batches_follow_ansibles_serial_rule():
    plan = RolloutPlan(canary=1, waves=("25%", "100%"))
    assert plan.serial() == [1, "25%", "100%"] and batches(8, plan) == [1, 2, 5]
    assert batches(10, RolloutPlan(waves=("10%", "50%", "100%"))) == [1, 5, 4]
    assert batches(7, RolloutPlan(canary=2, wave_size=2)) == [2, 2, 2, 1]
    assert batches(3, RolloutPlan(waves=("1%",))) == [1, 1, 1]  # P% rounds down, at least 1 (Ansible)
    assert batches(5, RolloutPlan()) == [5]
    assert RolloutPlan(canary=1).budget(8) == 0 and RolloutPlan().budget(8) is None
    assert RolloutPlan(max_failed="25%").budget(8) == 2 and RolloutPlan(max_failed="10%").budget(8) == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"waves": ("10%", "x")}, "--waves: expected a number of devices N or a percentage P%, got 'x'"),
    ({"waves": ("150%",)}, "--waves: a percentage must be in (0, 100]"),
    ({"waves": ("0",)}, "a wave of 0 devices never ends"),
    ({"waves": ("2",), "wave_size": 2}, "give --waves or --wave-size, not both"),
    ({"max_failed": "two"}, "--max-failed: expected"),
    ({"soak_s": 30.0}, "--soak and --max-slowdown judge the canary: give --canary N"),
])
def test_bad_plans_are_one_line_errors(kwargs, message):
    with pytest.raises(InputError) as e:
        RolloutPlan(**kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_inventories_ini_and_yaml_groups_vars_and_limit(tmp_path):
    ini = tmp_path / "fleet.ini"
    ini.write_text("# site\n[line3]\ncam1 ansible_host=10.0.0.21 ansible_user=pi http_port=8081\n"
                   "pi@10.0.0.22:2222 edgeship_env=\"CAMERA=rtsp://10.0.0.50/s1,MODE=b\"\n"
                   "[line3:vars]\ndevice_root=/srv/edgeship\nhttp_port=8080\n"
                   "[line4]\ncam3 ansible_host=10.0.0.23 ansible_user=root\n[site:children]\nline3\nline4\n")
    hosts = parse_hosts_file(ini)
    assert [h.label for h in hosts] == ["pi@10.0.0.21", "pi@10.0.0.22:2222", "root@10.0.0.23"]
    cam1, cam2, cam3 = hosts
    assert cam1.http_port == 8081 and cam1.device_root == "/srv/edgeship"  # host vars over group vars
    assert cam2.http_port == 8080 and cam2.env == ("CAMERA=rtsp://10.0.0.50/s1", "MODE=b") and cam2.port == 2222
    assert cam1.groups == ("line3", "site") and cam3.device_root is None
    assert [h.name for h in select(hosts, "line3")] == ["cam1", "pi@10.0.0.22:2222"]
    assert [h.name for h in select(hosts, "site,!cam1")] == ["pi@10.0.0.22:2222", "cam3"]
    with pytest.raises(InputError, match="--limit 'line9' matches no device"):
        select(hosts, "line9")
    yml = tmp_path / "fleet.yml"
    yml.write_text("all:\n  vars: {device_root: /opt/e}\n  children:\n    line3:\n      hosts:\n"
                   "        cam1: {ansible_host: 10.0.0.21, ansible_user: pi, edgeship_env: {CAMERA: rtsp://x/1}}\n"
                   "      vars: {http_port: 8080}\n")
    (h,) = parse_hosts_file(yml)
    assert h.label == "pi@10.0.0.21" and h.device_root == "/opt/e" and h.http_port == 8080
    assert h.env == ("CAMERA=rtsp://x/1",) and h.groups == ("line3",)
    bad = tmp_path / "bad.ini"
    bad.write_text("[line3]\ncam1 ansible_host=10.0.0.21\n")
    with pytest.raises(InputError, match=r"bad.ini:2: host cam1 needs ansible_user"):
        parse_hosts_file(bad)
    bad.write_text("[line3]\npi@h http_port=99999\n")
    with pytest.raises(InputError, match=r"bad.ini:2: http_port: expected a port 1-65535"):
        parse_hosts_file(bad)


# ---- 8 real devices ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return deploy_inputs(tmp_path_factory)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not sshd.available():
        pytest.skip("openssh-server is not installed (scripts/system-deps.sh)")
    with sshd.SSHServer(tmp_path_factory.mktemp("sshd")) as srv:
        yield srv


@pytest.fixture(scope="module")
def bundles(inputs, tmp_path_factory):
    """v1 and v2: loop a video and serve /health; broken: its stream never delivers a frame."""
    d = tmp_path_factory.mktemp("bundles")
    common = dict(target="generic-x86_64", wheels=True, wheelhouse=inputs["wheelhouse"], python="3.11",
                  edgeship_wheel=inputs["edgeship_wheel"], compresslevel=1, http_port=inputs["port"])
    good = dict(source=str(inputs["video"]), run_args=("--loop", "--realtime"))
    return {
        "v1": build_bundle(inputs["artifact"], out=d / "v1.tar.gz", version="fleet-1", **good, **common).path,
        "v2": build_bundle(inputs["artifact"], out=d / "v2.tar.gz", version="fleet-2", **good, **common).path,
        "v4": build_bundle(inputs["artifact"], out=d / "v4.tar.gz", version="fleet-4", **good, **common).path,
        "broken": build_bundle(inputs["artifact"], out=d / "broken.tar.gz", version="fleet-3",
                               source=f"rtsp://127.0.0.1:{sshd.free_port()}/none", **common).path,
    }


class Fleet:
    """N device roots behind one sshd, as an INI inventory (group line3, per-host vars)."""

    def __init__(self, base: Path, server, inputs, name: str, bad_port: dict[int, int] | None = None) -> None:
        self.roots = [base / f"{name}{i}" / "edgeship" for i in range(N)]
        self.ports = [sshd.free_port() for _ in range(N)]
        for i, p in (bad_port or {}).items():
            self.ports[i] = p
        self.inventory = base / f"{name}.ini"
        lines = ["[line3]"] + [f"{name}{i} ansible_host=127.0.0.1 ansible_port={server.port} ansible_user={server.user} "
                               f"device_root={root} http_port={port}" for i, (root, port) in enumerate(zip(self.roots, self.ports))]
        self.inventory.write_text("\n".join(lines) + "\n")
        self.hosts = parse_hosts_file(self.inventory)
        self.ssh = SSHOptions(identity=str(server.user_key), known_hosts=str(server.known_hosts))
        self.options = FlashOptions(init="none", health_timeout=60, python=DEVICE_PY, venvs=str(inputs["venvs"]))
        self.cli = ["--hosts", str(self.inventory), "--identity", str(server.user_key), "--known-hosts",
                    str(server.known_hosts), "--init", "none", "--python", DEVICE_PY, "--venvs-dir", str(inputs["venvs"])]

    def current(self) -> list[str | None]:
        return [os.readlink(r / "current").split("/")[-1] if (r / "current").is_symlink() else None for r in self.roots]

    def stop(self) -> None:
        for r in self.roots:
            stop_supervisor(r)


def tree(root: Path) -> dict[str, tuple[int, str]]:
    """A release folder as {path: (mode, sha256 or link target)}; the venv link and edgeship's own marker of
    when it was verified left out."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = (0, os.readlink(p) if rel != "venv" else "venv")
        elif p.is_file():
            out[rel] = (p.stat().st_mode & 0o7777, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.fixture(scope="module")
def fleets(server, inputs, bundles, tmp_path_factory):
    base = tmp_path_factory.mktemp("fleet")
    made = {"native": Fleet(base, server, inputs, "n"), "ansible": Fleet(base, server, inputs, "a")}
    yield made
    for f in made.values():
        f.stop()


def test_eight_devices_canary_and_waves_with_both_engines(fleets, bundles):
    from edgeship.targets.playbook import run_playbook

    plan = RolloutPlan(canary=1, soak_s=2, max_slowdown=400, waves=("25%", "100%"))
    native, ans = fleets["native"], fleets["ansible"]
    r = roll_out(bundles["v1"], native.hosts, plan, ssh=native.ssh, options=native.options, parallel=4)
    assert r.ok and r.completed, [(d.host, d.status, d.reason) for d in r.devices]
    assert [d.batch for d in r.devices] == [1, 2, 2, 3, 3, 3, 3, 3]
    assert r.devices[0].soak["healthy"] and r.devices[0].soak["frames_processed"] > 0
    assert native.current() == ["fleet-1"] * N and all(health(p) == 200 for p in native.ports)
    native.stop()  # two fleets of 8 runtimes would overload 2 cores
    a = run_playbook(bundles["v1"], ans.hosts, plan, ssh=ans.ssh, options=ans.options, parallel=4)
    assert a.ok and a.completed, [(d.host, d.status, d.reason) for d in a.devices]
    assert [d.status for d in a.devices] == ["deployed"] * N and [d.batch for d in a.devices] == [1, 2, 2, 3, 3, 3, 3, 3]
    assert ans.current() == ["fleet-1"] * N and all(health(p) == 200 for p in ans.ports)
    for n_root, a_root in zip(native.roots, ans.roots):  # same agent, same steps: the same release on disk
        assert tree(n_root / "releases" / "fleet-1") == tree(a_root / "releases" / "fleet-1")
        assert sorted(p.name for p in (n_root / "releases").iterdir()) == sorted(p.name for p in (a_root / "releases").iterdir())
    ans.stop()


def test_a_bundle_broken_everywhere_halts_after_the_canary(fleets, bundles):
    native = fleets["native"]
    opts = FlashOptions(**{**native.options.__dict__, "health_timeout": 8})
    r = roll_out(bundles["broken"], native.hosts, RolloutPlan(canary=1, waves=("25%", "100%")), ssh=native.ssh,
                 options=opts, parallel=4)
    assert not r.ok and not r.completed and "1 device(s) failed" in r.halted
    assert r.devices[0].status == "rolled-back" and r.devices[0].running == "fleet-1"
    assert [d.status for d in r.devices[1:]] == ["skipped"] * (N - 1)
    assert native.current() == ["fleet-1"] * N  # the canary went back; the 7 others were never touched
    assert not any((root / "releases" / "fleet-3").exists() for root in native.roots[1:])
    native.stop()


def test_three_of_eight_fail_budget_two_halts_and_rolls_the_wave_back(fleets, bundles, server, inputs, tmp_path):
    """A per-host variable breaks the release on 3 devices (their http_port is taken: the runtime cannot serve
    /health): with --max-failed 2 the third failure halts the rollout in its wave, and --rollback-on-halt puts
    that wave's updated devices back on the old release."""
    native = fleets["native"]
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        from dataclasses import replace

        broken = Fleet(tmp_path, server, inputs, "b", bad_port={2: port, 4: port, 5: port})
        # the native fleet's devices (on fleet-1), three of them with a broken variable
        hosts = [replace(h, device_root=str(r)) for h, r in zip(broken.hosts, native.roots)]
        opts = FlashOptions(**{**native.options.__dict__, "health_timeout": 10})
        plan = RolloutPlan(canary=1, waves=("25%", "100%"), max_failed="2", rollback_on_halt=True)
        r = roll_out(bundles["v2"], hosts, plan, ssh=native.ssh, options=opts, parallel=5)
    finally:
        taken.close()
        native.stop()
    by = {i: d for i, d in enumerate(r.devices)}
    assert not r.ok and "3 device(s) failed, more than --max-failed allows (2)" in r.halted, r.halted
    assert [d.batch for d in r.devices] == [1, 2, 2, 3, 3, 3, 3, 3]
    # a broken host's own rollback fails too: the variable (written to the device's environment) breaks any release
    assert [by[i].status for i in (0, 1)] == ["deployed", "deployed"] and by[2].failed  # batch 2: the first failure
    assert by[4].failed and by[5].failed  # batch 3: failures two and three
    cur = native.current()
    for i in (3, 6, 7):  # the rest of batch 3 switched, and went back when the rollout halted
        assert by[i].status == "halted-back" and by[i].running == "fleet-1" and cur[i] == "fleet-1", (i, by[i])
    assert cur[0] == cur[1] == "fleet-2", cur


def test_resume_after_the_workstation_is_killed_mid_wave(fleets, bundles, tmp_path):
    native = fleets["native"]
    state = tmp_path / "rollout.json"
    cmd = [*EDGESHIP, "flash", str(bundles["v4"]), *native.cli, "--wave-size", "2", "--parallel", "2",
           "--state", str(state), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # kill -9 the workstation once 3 devices switched (mid wave 2)
            done = [d for d in json.loads(state.read_text())["devices"] if d["status"] == "deployed"] if state.exists() else []
            if len(done) >= 3:
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        before = json.loads(state.read_text())
        switched = [i for i, root in enumerate(native.roots) if native.current()[i] == "fleet-4"]
        assert 3 <= len(switched) < N, native.current()
        marks = {i: (native.roots[i] / "releases" / "fleet-4" / ".verified").stat().st_mtime_ns for i in switched}
        res = subprocess.run([*EDGESHIP, "flash", "--resume", str(state), "--json"], capture_output=True, text=True,
                             timeout=400)
        assert res.returncode == 0, res.stderr[-3000:] + res.stdout
        out = json.loads(res.stdout)
        assert out["ok"] and out["completed"] and native.current() == ["fleet-4"] * N
        statuses = [d["status"] for d in out["devices"]]
        for i in switched:  # not flashed again
            assert statuses[i] == "already" or before["devices"][i]["status"] == "deployed", (i, statuses)
            assert (native.roots[i] / "releases" / "fleet-4" / ".verified").stat().st_mtime_ns == marks[i]
        assert statuses.count("deployed") + statuses.count("already") == N
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        native.stop()


def test_resume_refuses_a_changed_bundle_and_bad_state(tmp_path, bundles):
    bad = tmp_path / "state.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="is not JSON"):
        resume(bad)
    bad.write_text(json.dumps({"state_version": 99}))
    with pytest.raises(InputError, match="not a state file of this edgeship"):
        resume(bad)
    import shutil

    copy = tmp_path / "b.tar.gz"
    shutil.copyfile(bundles["v1"], copy)
    state = tmp_path / "r.json"
    state.write_text(json.dumps({"state_version": 1, "hosts": [], "bundle": str(copy), "sha256": "0" * 64, "devices": []}))
    with pytest.raises(InputError, match="changed since the rollout started"):
        resume(state)


def test_ansible_init_writes_a_project_ansible_accepts(tmp_path):
    from click.testing import CliRunner

    from edgeship.cli import cli
    from edgeship.targets.playbook import PROJECT, ansible_playbook

    out = tmp_path / "deploy"
    r = CliRunner().invoke(cli, ["ansible", "init", str(out)])
    assert r.exit_code == 0, r.output
    assert all((out / rel).is_file() for rel in PROJECT)
    assert (out / "roles/edgeship_device/files/agent.py").read_bytes() == Path(
        __import__("edgeship.targets.remote", fromlist=["AGENT"]).AGENT).read_bytes()
    again = CliRunner().invoke(cli, ["ansible", "init", str(out)])
    assert again.exit_code == 1 and again.output.count("\n") == 1 and "pass --force" in again.output
    assert CliRunner().invoke(cli, ["ansible", "init", str(out), "--force"]).exit_code == 0
    inv = tmp_path / "inv.ini"
    inv.write_text("[line3]\ncam1 ansible_host=127.0.0.1 ansible_user=root\n")
    check = subprocess.run([ansible_playbook(), "-i", str(inv), str(out / "edgeship-rollout.yml"), "--syntax-check"],
                           capture_output=True, text=True, timeout=120, cwd=out)
    assert check.returncode == 0, check.stdout + check.stderr
