"""edgeship flash --sudo: a throw-away non-root user logs in over a real sshd on 127.0.0.1 and flashes
with passwordless sudo (--init none: no systemd here). The release is root-owned, the runtime runs
as the login user; without the sudoers entry the flash is refused in one line and nothing changes.
Also: the systemd path's service account and data/logs ownership (the agent's own code, run here)."""

from __future__ import annotations

import json
import os
import pwd
import grp
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from edgeship.targets import agent
from edgeship.targets.bundle import build_bundle
from edgeship.targets.fleet import device_call, flash_many
from edgeship.targets.flash import FlashOptions, agent_args, preflight_problems, uses_sudo
from edgeship.targets.remote import SSHOptions, SudoRefused, parse_host
from edgeship.targets.systemd import unit_template
from tests.helpers import sshd
from tests.helpers.deploy import deploy_inputs, health, stop_supervisor

NEEDS = [t for t in ("sudo", "useradd", "userdel", "visudo") if shutil.which(t) is None]
pytestmark = [
    pytest.mark.skipif(not sshd.available(), reason="openssh-server is not installed (scripts/system-deps.sh)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="creates a throw-away user and a sudoers.d entry: needs root"),
    pytest.mark.skipif(bool(NEEDS), reason=f"missing {', '.join(NEEDS)} (scripts/system-deps.sh installs sudo)"),
]
DEVICE_PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
EDGESHIP = [sys.executable, "-m", "edgeship.cli"]


class SudoUser:
    """A login user with a shell and no password, whose sudoers.d NOPASSWD entry can be switched."""

    def __init__(self) -> None:
        self.name = f"es{secrets.token_hex(3)}"
        self.sudoers = Path(f"/etc/sudoers.d/edgeship-test-{self.name}")
        # password '*': no password login, but not a locked account (sshd refuses locked ones)
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", "--password", "*", self.name], check=True)
        self.uid = pwd.getpwnam(self.name).pw_uid

    def allow(self) -> None:
        tmp = self.sudoers.with_name(f".{self.sudoers.name}.tmp")  # sudo skips names with a dot
        tmp.write_text(f"{self.name} ALL=(root) NOPASSWD: ALL\n")
        tmp.chmod(0o440)
        subprocess.run(["visudo", "-c", "-q", "-f", str(tmp)], check=True)
        tmp.replace(self.sudoers)

    def deny(self) -> None:
        self.sudoers.unlink(missing_ok=True)

    def remove(self) -> None:
        self.deny()
        subprocess.run(["userdel", "--remove", self.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def user():
    u = SudoUser()
    try:
        u.allow()
        yield u
    finally:
        u.remove()


@pytest.fixture(scope="module")
def scratch():
    """A folder the throw-away user can traverse (pytest's own temp folders are root-only)."""
    d = Path(tempfile.mkdtemp(prefix="edgeship-sudo-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    stop_supervisor(d / "device")
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def server(user, scratch):
    with sshd.SSHServer(scratch / "sshd", user=user.name) as srv:
        yield srv


@pytest.fixture(scope="module")
def setup(server, scratch, tmp_path_factory):
    inputs = deploy_inputs(tmp_path_factory)
    video = scratch / "belt.mp4"  # the runtime runs as the login user: its camera must be readable
    shutil.copyfile(inputs["video"], video)
    video.chmod(0o644)
    port = sshd.free_port()
    bundle = build_bundle(inputs["artifact"], "generic-x86_64", scratch / "b.tar.gz", source=str(video), http_port=port,
                          run_args=("--loop", "--realtime"), version="sudo-1", wheels=True,
                          wheelhouse=inputs["wheelhouse"], python="3.11", edgeship_wheel=inputs["edgeship_wheel"],
                          compresslevel=1)
    ssh = SSHOptions(identity=str(server.user_key), known_hosts=str(server.known_hosts))
    conn = ["--identity", ssh.identity, "--known-hosts", ssh.known_hosts, "--device-root", str(scratch / "device"),
            "--python", DEVICE_PY]
    return {"bundle": bundle, "port": port, "root": scratch / "device", "ssh": ssh, "conn": conn,
            "host": parse_host(server.host_spec)}


def _owners(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for base, dirs, files in os.walk(root):
        for n in [base, *(os.path.join(base, x) for x in dirs + files)]:
            st = os.lstat(n)
            out[os.path.relpath(n, root)] = (st.st_uid, st.st_mode)
    return out


def _proc_uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[2])  # effective uid


def test_sudo_flash_lands_root_owned_and_runs_as_the_login_user(setup, user):
    root = setup["root"]
    proc = subprocess.run([*EDGESHIP, "flash", str(setup["bundle"].path), setup["host"].label, "--sudo", "--init", "none",
                           *setup["conn"], "--json"], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    [res] = json.loads(proc.stdout)["results"]
    assert res["status"] == "deployed" and res["running"] == "sudo-1"
    facts = res["device"]
    assert facts["root_user"] and facts["sudo"] == "passwordless" and facts["user"] == user.name
    assert res["health"]["run_as"] == user.name
    # the code is root's: the release, its files, the venv, the current link, the incoming folder
    release = root / "releases" / "sudo-1"
    assert os.readlink(root / "current") == "releases/sudo-1"
    for p in (root, release, release / "run.sh", release / "release.json", root / "current", root / "incoming",
              Path(os.path.realpath(release / "venv"))):
        assert os.lstat(p).st_uid == 0, p
    assert (root / "incoming").stat().st_mode & 0o777 == 0o700
    assert root.stat().st_mode & 0o755 == 0o755  # the device root stays reachable for the service user
    # ... the runtime is the login user's: it runs as that user and owns its working folders
    for d in ("run", "logs", "data"):
        assert (root / d).stat().st_uid == user.uid, d
    child = int((root / "run" / "child.pid").read_text())
    assert _proc_uid(child) == user.uid
    assert health(setup["port"]) == 200


def test_device_helpers_with_sudo(setup, user):
    opts = FlashOptions(device_root=str(setup["root"]), init="none", python=DEVICE_PY, sudo=True)
    st = device_call(setup["host"], "status", ssh=setup["ssh"], options=opts)
    assert st["ok"] and st["current"] == "sudo-1" and st["running"] and st["healthy"]
    before = st["pid"]
    # rollback --to the running release: restarts it through the same sudo path, still as the login user
    back = device_call(setup["host"], "rollback", ssh=setup["ssh"], options=opts, version="sudo-1", timeout=60)
    assert back["ok"] and back["run_as"] == user.name, back
    child = int((setup["root"] / "run" / "child.pid").read_text())
    assert child != before and _proc_uid(child) == user.uid
    logs = subprocess.run([*EDGESHIP, "device", "logs", "--host", setup["host"].label, "--sudo", "--init", "none",
                           *setup["conn"], "-n", "20", "--json"], capture_output=True, text=True, timeout=60)
    assert logs.returncode == 0, logs.stderr
    assert json.loads(logs.stdout)["results"][0]["log"]
    # a login user reading root's device state without --sudo still works for status (the tree is 0755)
    assert device_call(setup["host"], "status", ssh=setup["ssh"],
                       options=FlashOptions(device_root=str(setup["root"]), init="none", python=DEVICE_PY))["current"] == "sudo-1"


def test_systemd_without_sudo_is_refused_and_suggests_it(setup, user):
    opts = FlashOptions(device_root=str(setup["root"]), init="systemd", python=DEVICE_PY)
    [res] = flash_many(setup["bundle"].path, [setup["host"]], ssh=setup["ssh"], options=opts)
    assert res.status == "refused"
    assert f"needs root on the device: {user.name} has passwordless sudo: add --sudo" in res.reason
    assert res.device["sudo"] == "passwordless" and not res.device["root_user"]


def test_sudo_asking_for_a_password_is_refused_and_nothing_changes(setup, user):
    root = setup["root"]
    before, pid_before = _owners(root), (root / "run" / "child.pid").read_text()
    user.deny()
    try:
        cmd = [*EDGESHIP, "flash", str(setup["bundle"].path), setup["host"].label, "--sudo", "--init", "none", *setup["conn"]]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1, proc.stderr + proc.stdout
        line = f"sudo on {setup['host'].label} asks for a password: allow passwordless sudo for this user"
        [err] = [ln for ln in proc.stderr.splitlines() if "sudo" in ln]
        assert f"{setup['host'].label}: refused ({line}" in err and err.endswith("or log in as root)")
        assert "refused" in proc.stdout
        # from Python: the same refusal, for flash and for the device helpers
        opts = FlashOptions(device_root=str(root), init="none", python=DEVICE_PY, sudo=True)
        [res] = flash_many(setup["bundle"].path, [setup["host"]], ssh=setup["ssh"], options=opts)
        assert res.status == "refused" and res.reason.startswith(line) and res.seconds.keys() == {"preflight"}
        with pytest.raises(SudoRefused, match="asks for a password"):
            device_call(setup["host"], "status", ssh=setup["ssh"], options=opts)
        # without --sudo the preflight now reports that sudo wants a password
        [res] = flash_many(setup["bundle"].path, [setup["host"]], ssh=setup["ssh"],
                           options=FlashOptions(device_root=str(root), init="systemd", python=DEVICE_PY))
        assert res.device["sudo"] == "password" and "allowing passwordless sudo for" in res.reason
    finally:
        user.allow()
    assert _owners(root) == before
    assert (root / "run" / "child.pid").read_text() == pid_before
    assert health(setup["port"]) == 200


@pytest.fixture
def service_account():
    name = f"essvc{secrets.token_hex(2)}"
    yield name
    subprocess.run(["userdel", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["groupdel", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_systemd_service_account_and_writable_paths(service_account, tmp_path):
    """What `--init systemd` does as root before starting the unit (systemctl itself needs systemd)."""
    root = tmp_path / "edgeship"
    (root / "data" / "outbox").mkdir(parents=True)
    (root / "data" / "outbox" / "q.sqlite").write_bytes(b"x")  # left by an earlier root-run release
    template = unit_template({"user": service_account, "supplementary_groups": ["video", "no-such-group-es"]},
                             target="generic-x86_64", artifact="m.tflite")
    unit, facts = agent.prepare_service_identity(str(root), template.replace("@DEVICE_ROOT@", str(root)))
    assert facts["created_user"] and facts["created_group"] and facts["dropped_groups"] == ["no-such-group-es"]
    pw = pwd.getpwnam(service_account)
    assert pw.pw_shell.endswith(("nologin", "false")) and grp.getgrgid(pw.pw_gid).gr_name == service_account
    assert "SupplementaryGroups=video\n" in unit and f"User={service_account}\n" in unit
    for p in (root / "data", root / "logs", root / "data" / "outbox" / "q.sqlite"):
        assert p.stat().st_uid == pw.pw_uid, p
    # a second flash finds the account and changes nothing
    _, again = agent.prepare_service_identity(str(root), unit)
    assert not again["created_user"] and not again["created_group"] and again["dropped_groups"] == []


@pytest.mark.parametrize("sudo, hint", [
    ("passwordless", "pi has passwordless sudo: add --sudo"),
    ("password", "add --sudo after allowing passwordless sudo for pi"),
    ("missing", "sudo is not installed there: log in as root"),
])
def test_preflight_hint_for_a_non_root_login(sudo, hint):
    meta = {"architecture": "x86_64", "python": ["3.11"], "target": "generic-x86_64", "format": "tflite"}
    facts = {"architecture": "x86_64", "python": "3.11.2", "free_mb": 10**6, "has_venv_module": True,
             "systemd": True, "root_user": False, "user": "pi", "sudo": sudo}
    [problem] = preflight_problems(meta, facts, size_mb=1, init="systemd")
    assert problem.startswith("--init systemd installs a unit and needs root on the device: ") and hint in problem
    assert preflight_problems(meta, {**facts, "root_user": True}, size_mb=1, init="systemd") == []


def test_sudo_applies_to_non_root_logins_only():
    opts = FlashOptions(device_root="/opt/edgeship", init="none", sudo=True)
    assert uses_sudo(parse_host("pi@10.0.0.5"), opts) and not uses_sudo(parse_host("root@10.0.0.5"), opts)
    assert agent_args(parse_host("pi@10.0.0.5"), opts)[-2:] == ["--run-as", "pi"]
    assert "--run-as" not in agent_args(parse_host("root@10.0.0.5"), opts)
    assert "--run-as" not in agent_args(parse_host("pi@10.0.0.5"), FlashOptions(init="systemd", sudo=True))
