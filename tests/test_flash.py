"""edgeship flash against a real OpenSSH server on 127.0.0.1 (the "device" is this machine, under a
temporary device root, with --init none): good flash, failing release rolled back, upload cut off,
unknown host key, two hosts in parallel, device status/logs/rollback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from edgeship.targets.bundle import build_bundle
from edgeship.targets.fleet import device_call, flash_many
from edgeship.targets.flash import FlashOptions
from edgeship.targets.remote import SSHOptions, parse_host
from tests.helpers import sshd
from tests.helpers.deploy import deploy_inputs

pytestmark = pytest.mark.skipif(not sshd.available(), reason="openssh-server is not installed (scripts/system-deps.sh)")
DEVICE_PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
EDGESHIP = [sys.executable, "-m", "edgeship.cli"]


@pytest.fixture(scope="module")
def flash_inputs(tmp_path_factory):
    return deploy_inputs(tmp_path_factory)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with sshd.SSHServer(tmp_path_factory.mktemp("sshd")) as srv:
        yield srv


@pytest.fixture(scope="module")
def ssh_opts(server) -> SSHOptions:
    return SSHOptions(identity=str(server.user_key), known_hosts=str(server.known_hosts))


@pytest.fixture(scope="module")
def bundles(flash_inputs, tmp_path_factory):
    """good: loops a video and serves /health; bad: its stream never delivers a frame (never healthy)."""
    d = tmp_path_factory.mktemp("bundles")
    common = dict(target="generic-x86_64", wheels=True, wheelhouse=flash_inputs["wheelhouse"], python="3.11",
                  edgeship_wheel=flash_inputs["edgeship_wheel"], compresslevel=1)
    good = build_bundle(flash_inputs["artifact"], out=d / "good.tar.gz", source=str(flash_inputs["video"]),
                        http_port=flash_inputs["port"], run_args=("--loop", "--realtime"), version="good-1", **common)
    bad = build_bundle(flash_inputs["artifact"], out=d / "bad.tar.gz", source=f"rtsp://127.0.0.1:{sshd.free_port()}/none",
                       http_port=flash_inputs["port"], version="bad-2", **common)
    return {"good": good, "bad": bad}


def _health(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status
    except OSError:
        return None


def _stop(root: Path) -> None:
    pid = (root / "run" / "supervisor.pid")
    if pid.exists():
        try:
            os.kill(int(pid.read_text()), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass
        for _ in range(100):
            if not pid.exists() or not Path(f"/proc/{pid.read_text().strip()}").exists():
                break
            time.sleep(0.1)


@pytest.fixture(scope="module")
def device(server, ssh_opts, bundles, flash_inputs, tmp_path_factory):
    """A device root with the good release flashed and running."""
    root = tmp_path_factory.mktemp("device") / "edgeship"
    opts = FlashOptions(device_root=str(root), init="none", health_timeout=60, python=DEVICE_PY,
                        venvs=str(flash_inputs["venvs"]))
    host = parse_host(server.host_spec)
    [res] = flash_many(bundles["good"].path, [host], ssh=ssh_opts, options=opts)
    yield {"root": root, "opts": opts, "host": host, "first": res}
    _stop(root)


def test_good_flash_is_running_and_healthy(device, flash_inputs):
    res, root = device["first"], device["root"]
    assert res.ok, res.reason
    assert res.status == "deployed" and res.running == "good-1"
    assert os.readlink(root / "current") == "releases/good-1"
    assert (root / "releases" / "good-1" / ".verified").is_file()
    assert not list((root / "incoming").glob("*.part"))
    assert _health(flash_inputs["port"]) == 200
    assert res.device["architecture"] == "x86_64" and res.device["python"].startswith("3.11")
    assert {"preflight", "upload", "install", "activate"} <= set(res.seconds)


def test_failing_release_rolls_back_to_the_running_one(device, bundles, ssh_opts, flash_inputs):
    opts = FlashOptions(**{**device["opts"].__dict__, "health_timeout": 20})
    [res] = flash_many(bundles["bad"].path, [device["host"]], ssh=ssh_opts, options=opts)
    assert not res.ok and res.status == "rolled-back"
    assert "bad-2 failed its health check" in res.reason and "rolled back to good-1, which is healthy" in res.reason
    assert res.running == "good-1"
    assert os.readlink(device["root"] / "current") == "releases/good-1"
    assert _health(flash_inputs["port"]) == 200
    # the two releases share one venv: identical requirements and wheels
    venvs = [p for p in flash_inputs["venvs"].iterdir() if p.is_dir()]
    assert len(venvs) == 1
    assert res.health.get("log") is not None  # the failing release's log tail comes back for the report

    # device status / logs / rollback over the CLI
    cli = [*EDGESHIP, "device"]
    conn = ["--host", device["host"].label, "--identity", ssh_opts.identity, "--known-hosts", ssh_opts.known_hosts,
            "--device-root", str(device["root"]), "--init", "none", "--python", DEVICE_PY, "--json"]
    st = json.loads(subprocess.run([*cli, "status", *conn], capture_output=True, check=True).stdout)
    [s] = st["results"]
    assert s["current"] == "good-1" and s["previous"] == "bad-2" and s["running"] and s["healthy"]
    logs = json.loads(subprocess.run([*cli, "logs", *conn, "-n", "50"], capture_output=True, check=True).stdout)
    assert logs["results"][0]["log"]
    # rolling back now means going to bad-2, which fails: the CLI says so and exits 1
    proc = subprocess.run([*cli, "rollback", *conn, "--to", "good-1", "--health-timeout", "30"], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"][0]["version"] == "good-1"


def test_cut_off_upload_leaves_the_running_release(device, bundles, ssh_opts, flash_inputs, tmp_path):
    root = device["root"]
    before = sorted(p.name for p in (root / "releases").iterdir())
    pid_before = (root / "run" / "child.pid").read_text()
    cmd = [*EDGESHIP, "flash", str(bundles["bad"].path), "--host", device["host"].label, "--identity", ssh_opts.identity,
           "--known-hosts", ssh_opts.known_hosts, "--device-root", str(root), "--init", "none", "--python", DEVICE_PY,
           "--bwlimit", "4000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    part = None
    while time.monotonic() < deadline and part is None:
        parts = [p for p in (root / "incoming").glob("*.part") if p.stat().st_size > 1 << 20]
        part = parts[0] if parts else None
        time.sleep(0.05)
    assert part is not None, "the upload never started"
    os.killpg(proc.pid, signal.SIGKILL)  # the workstation dies mid-upload
    proc.wait()
    time.sleep(0.5)
    assert part.stat().st_size < bundles["bad"].size
    assert sorted(p.name for p in (root / "releases").iterdir()) == before
    assert os.readlink(root / "current") == "releases/good-1"
    assert (root / "run" / "child.pid").read_text() == pid_before
    assert _health(flash_inputs["port"]) == 200
    # a truncated bundle is refused before any device is touched
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(bundles["good"].path.read_bytes()[: bundles["good"].size // 2])
    out = subprocess.run([*EDGESHIP, "flash", str(cut), *cmd[len(EDGESHIP) + 2:-2]], capture_output=True, text=True)
    assert out.returncode == 1 and "truncated or corrupt" in out.stderr


def test_unknown_host_key_is_refused(server, tmp_path, bundles):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    host = parse_host(server.host_spec)
    opts = FlashOptions(device_root=str(tmp_path / "root"), init="none", python=DEVICE_PY)
    [res] = flash_many(bundles["good"].path, [host], ssh=SSHOptions(identity=str(server.user_key), known_hosts=str(empty)), options=opts)
    assert not res.ok and "host key is unknown or changed" in res.reason
    assert not (tmp_path / "root").exists()
    # first contact allowed explicitly: the key is recorded, later calls check against it
    ok = device_call(host, "status", ssh=SSHOptions(identity=str(server.user_key), known_hosts=str(empty), accept_new_host_key=True), options=opts)
    assert ok["ok"] and ok["current"] is None
    assert "ssh-ed25519" in empty.read_text()


def test_preflight_refuses_another_architecture(server, ssh_opts, flash_inputs, tmp_path):
    b = build_bundle(flash_inputs["artifact"], "rpi5", tmp_path / "pi.tar.gz", source="/dev/video0",
                     edgeship_wheel=flash_inputs["edgeship_wheel"])
    opts = FlashOptions(device_root=str(tmp_path / "root"), init="none", python=DEVICE_PY)
    [res] = flash_many(b.path, [parse_host(server.host_spec)], ssh=ssh_opts, options=opts)
    assert res.status == "refused" and "bundle is for aarch64 (rpi5) but the device is x86_64" in res.reason


def test_two_hosts_in_parallel(server, ssh_opts, bundles, flash_inputs, tmp_path_factory):
    with sshd.SSHServer(tmp_path_factory.mktemp("sshd2"), user_key=server.user_key) as second:
        known = tmp_path_factory.mktemp("kh") / "known_hosts"
        known.write_text(server.known_hosts.read_text() + second.known_hosts.read_text())
        roots = [tmp_path_factory.mktemp(f"dev{i}") / "edgeship" for i in (1, 2)]
        ports = [sshd.free_port(), sshd.free_port()]
        hosts_file = tmp_path_factory.mktemp("hosts") / "hosts.txt"
        hosts_file.write_text(f"# line 3\n{server.host_spec} device_root={roots[0]} http_port={ports[0]}\n"
                              f"{second.host_spec} device_root={roots[1]} http_port={ports[1]}\n")
        cmd = [*EDGESHIP, "flash", str(bundles["good"].path), "--hosts", str(hosts_file), "--identity", str(server.user_key),
               "--known-hosts", str(known), "--init", "none", "--python", DEVICE_PY, "--parallel", "2",
               "--venvs-dir", str(flash_inputs["venvs"]), "--json"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
            assert proc.returncode == 0, proc.stderr + proc.stdout
            out = json.loads(proc.stdout)
            assert out["ok"] and [r["status"] for r in out["results"]] == ["deployed", "deployed"]
            assert all(_health(p) == 200 for p in ports)
        finally:
            for r in roots:
                _stop(r)
