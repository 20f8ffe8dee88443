"""The device path on the device it names: two emulated Raspberry Pi 5s (arm64 Debian bookworm under
QEMU, each with its own network and sshd, see tests/helpers/pi.py) flashed with real ``rpi5`` bundles built with
``--wheels`` (aarch64 wheels from PyPI, installed offline on the device).

Covered, in order (the tests share the two devices): the README's fleet commands exactly as
written (only the addresses point at the emulated Pis), the security example producing events
under DEVICE_ROOT/data, the industrial example failing loudly without a GPIO chip and inspecting
with a pin factory, a release whose source never delivers rolled back, a failed first release
stopped, the int8 results on the device equal to the workstation's, data surviving prunes, the
root-owned releases and unprivileged runtime of a ``--sudo`` flash, and the device remembering
its init mode."""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import pi as emulated

WHY = emulated.why_unavailable()
pytestmark = [pytest.mark.skipif(WHY is not None, reason=WHY or ""), pytest.mark.slow]
README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EDGESHIP = str(Path(sys.executable).with_name("edgeship"))
ADDRESSES = ("pi@10.0.0.21", "pi@10.0.0.22")
ROOT = "/opt/edgeship"


def readme_fleet_commands() -> list[str]:
    """The ``edgeship ...`` lines of the README's fleet code block."""
    text = README.read_text()
    section = text[text.index("### Fleet: targets, bundle, flash"):]
    block = section[section.index("```bash") + 7:section.index("```", section.index("```bash") + 7)]
    return [ln.strip() for ln in block.splitlines() if ln.strip().startswith("edgeship ")]


@pytest.fixture(scope="module")
def pis(tmp_path_factory):
    base = tmp_path_factory.mktemp("pis")
    first = emulated.EmulatedPi(base / "pi1")
    second = emulated.EmulatedPi(base / "pi2", user_key=first.user_key)
    with first, second:
        yield first, second


@pytest.fixture(scope="module")
def site(pis, quickstart_small, tmp_path_factory):
    """A user's folder after `edgeship quickstart`: quickstart-out/ and examples/, a HOME whose
    ~/.ssh holds the key and both Pis' host keys, and a way to run a README line there."""
    out, _, _ = quickstart_small
    work = tmp_path_factory.mktemp("site")
    shutil.copytree(EXAMPLES, work / "examples")
    for sub in ("models", "videos"):
        shutil.copytree(out / sub, work / "quickstart-out" / sub)
    home = work / "home"  # ~ for the shell: ~/.ssh/id_ed25519 is the test key
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    shutil.copy(pis[0].user_key, home / ".ssh" / "id_ed25519")
    # the key is also in an ssh-agent, as a user's would be: the README lines without --identity use it
    sock = work / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(sock.exists, 10, 0.1)
    env = {**os.environ, "HOME": str(home), "PATH": f"{Path(EDGESHIP).parent}:{os.environ['PATH']}", "SSH_AUTH_SOCK": str(sock)}
    subprocess.run(["ssh-add", "-q", str(home / ".ssh" / "id_ed25519")], env=env, check=True, capture_output=True)
    hosts = dict(zip(ADDRESSES, (p.host("pi") for p in pis)))

    def line(text: str, **kw) -> subprocess.CompletedProcess:
        for address, real in hosts.items():
            text = text.replace(address, real)
        return subprocess.run(["bash", "-c", text], cwd=work, env=env, capture_output=True, text=True, **kw)

    def edgeship(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return line(" ".join(shlex.quote(a) for a in [EDGESHIP, *args]), timeout=timeout)

    # OpenSSH reads ~/.ssh/known_hosts from the account's home, not $HOME: the Pis' host keys go there for the
    # module and are taken out again
    known = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ssh" / "known_hosts"
    known.parent.mkdir(mode=0o700, exist_ok=True)
    added = [ln for p in pis for ln in p.known_hosts.read_text().splitlines()]
    with open(known, "a") as f:
        f.write("".join(ln + "\n" for ln in added))
    try:
        yield {"dir": work, "env": env, "line": line, "edgeship": edgeship, "hosts": hosts}
    finally:
        kept = [ln for ln in known.read_text().splitlines() if ln not in added]
        known.write_text("".join(ln + "\n" for ln in kept))
        agent.terminate()
        agent.wait(10)


def _ssh(pi) -> list[str]:
    return ["--identity", str(pi.user_key), "--known-hosts", str(pi.known_hosts), "--sudo"]


def _events(pi, rel: str) -> list[dict]:
    path = pi.path(f"{ROOT}/data/{rel}")
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _wait(predicate, timeout: float = 60.0, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return predicate()


def _runtime_pid(pi, root: str = ROOT) -> int | None:
    try:
        return int(pi.path(f"{root}/run/child.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def test_readme_fleet_commands_as_written(pis, site):
    commands = readme_fleet_commands()
    assert [c.split()[1] for c in commands] == ["targets", "targets", "bundle", "flash", "device", "device", "device"]
    for text in commands[:2]:
        proc = site["line"](text, timeout=60)
        assert proc.returncode == 0, proc.stderr
    bundle = site["line"](commands[2], timeout=900)
    assert bundle.returncode == 0, bundle.stderr
    assert (site["dir"] / "line3.tar.gz").stat().st_size > 10 << 20  # the aarch64 wheels are inside

    flash = site["line"](commands[3], timeout=900)
    assert flash.returncode == 0, flash.stdout + flash.stderr
    assert flash.stdout.count("deployed") == 2
    warnings = [ln for ln in flash.stderr.splitlines() if "warning" in ln.lower()]
    assert len(warnings) == len(set(warnings))  # each preflight warning once (none here: no camera is read)

    status = site["line"](commands[4] + " --json", timeout=120)
    assert status.returncode == 0, status.stderr
    [st] = json.loads(status.stdout)["results"]
    assert st["healthy"] and st["init"] == "none" and st["running"]  # remembered: flashed without systemd
    assert st["frames_processed"] >= 1 and st["stray"] == []

    # the live runtime log, as it is written
    logs = subprocess.Popen(["bash", "-c", commands[5].replace(ADDRESSES[0], site["hosts"][ADDRESSES[0]])],
                            cwd=site["dir"], env=site["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = ""
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "frames processed" not in seen and "first frame" not in seen:
            seen += logs.stdout.readline()
    finally:
        logs.terminate()
        logs.wait(10)
    assert "running shapes_int8 (detect)" in seen and "first frame" in seen

    for pi in pis:  # the security example: zone events and snapshots under DEVICE_ROOT/data, nothing in releases/
        events = _wait(lambda: _events(pi, "security-out/events.jsonl"), 90)
        assert {e["zone"] for e in events} >= {"yard"} and all(e["action"] == "enter" for e in events)
        assert list(pi.path(f"{ROOT}/data/security-out/snapshots").glob("*.jpg"))
        assert sorted(p.name for p in pi.path(f"{ROOT}/releases").iterdir()) == [json.loads(
            pi.path(f"{ROOT}/current/release.json").read_text())["version"]]
    # --sudo: the code is root's, the runtime runs as the login user
    pi = pis[0]
    release = pi.path(f"{ROOT}/current").resolve()
    for f in (release / "run.sh", release / "agent.py", release / "deploy.yaml", release):
        st = f.stat()
        assert st.st_uid == 0 and not st.st_mode & 0o6022, f
    pid = _runtime_pid(pi)
    uid = next(int(ln.split()[1]) for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("Uid:"))
    assert uid == emulated.PI_UID


def test_industrial_example_fails_loudly_without_a_gpio_chip_then_inspects(pis, site):
    pi = pis[0]
    out = site["dir"] / "industrial.tar.gz"
    b = site["edgeship"]("bundle", "quickstart-out/models/digits_int8.tflite", "--target", "rpi5", "--config",
                         "examples/industrial.yaml", "--wheels", "-o", str(out))
    assert b.returncode == 0, b.stderr
    # gpiozero and lgpio are installed on the Pi, but this one has no GPIO chip: a failed health check
    f = site["edgeship"]("flash", str(out), "--host", pi.host("pi"), *_ssh(pi), "--health-timeout", "30", "--json")
    assert f.returncode == 1
    [r] = json.loads(f.stdout)["results"]
    assert r["status"] == "rolled-back" and "reject output gpio pin 17 cannot work" in r["reason"]
    assert "no GPIO chip" in r["reason"] and "rolled back to shapes_int8" in r["reason"]
    probe = pi.run(f"{ROOT}/releases/{r['version']}/venv/bin/python -c 'import importlib.metadata as m, gpiozero, lgpio; "
                   "print(m.version(\"gpiozero\"))'", user="pi")
    assert probe.stdout.strip().startswith("2.")
    # with gpiozero's mock pin factory standing in for the chip, the same release inspects and signals rejects
    f = site["edgeship"]("flash", str(out), "--host", pi.host("pi"), *_ssh(pi), "--env", "GPIOZERO_PIN_FACTORY=mock",
                         "--json")
    assert f.returncode == 0, f.stdout + f.stderr
    records = _wait(lambda: len(_events(pi, "industrial-out/inspections.jsonl")) >= 40 and
                    _events(pi, "industrial-out/inspections.jsonl"), 90)
    inspections = [r for r in records if r.get("type") == "inspection"]  # the file could also carry drift events
    assert not [r for r in records if r.get("type") == "drift"]  # calibrated on the belt camera's own frames
    assert inspections and {r["verdict"] for r in inspections} == {"pass", "fail"}
    status = json.loads(pi.http_get("http://127.0.0.1:8081/api/status"))
    [gpio] = status["app"]["outputs"]
    assert gpio["available"] and gpio["signals"] >= 1 and status["health"]["status"] == "ok"
    assert pi.path(f"{ROOT}/data/industrial-out/counters.sqlite").stat().st_size > 0


def test_int8_results_on_the_device_equal_the_workstations(pis, site, tmp_path):
    """The same frames give the same int8 outputs on the Pi (arm64, NEON kernels) as here (x86), bit for bit:
    preprocessing included (its bilinear step is OpenCV's bit-exact one). The frames are PNGs: an MPEG-4
    clip decodes one grey level apart on the two CPUs (its IDCT is not bit-exact), a decoder matter."""
    import cv2

    pi = pis[0]
    release = pi.path(f"{ROOT}/current").resolve()
    model, clip = release / "model" / "digits_int8.tflite", release / "media" / "belt.mp4"
    frames = pi.path("/tmp/frames")
    frames.mkdir()
    cap = cv2.VideoCapture(str(clip))
    for i in range(30):
        ok, image = cap.read()
        assert ok
        cv2.imwrite(str(frames / f"{i:03d}.png"), image)
    dev = lambda p: "/" + p.relative_to(pi.root).as_posix()  # noqa: E731
    proc = pi.run(f"{dev(release)}/venv/bin/edgeship run {dev(model)} --source /tmp/frames --sink jsonl-raw:/tmp/device.jsonl "
                  "--json", user="pi", timeout=300)
    assert json.loads(proc.stdout.strip().splitlines()[-1])["frames_processed"] == 30
    subprocess.run([EDGESHIP, "run", str(model), "--source", str(frames), "--sink", f"jsonl-raw:{tmp_path / 'here.jsonl'}",
                    "--json"], check=True, capture_output=True)
    device = [json.loads(x) for x in pi.path("/tmp/device.jsonl").read_text().splitlines()]
    here = [json.loads(x) for x in (tmp_path / "here.jsonl").read_text().splitlines()]
    assert len(device) == len(here) == 30
    for d, h in zip(device, here):
        assert d["frame"] == h["frame"] and d["raw"] == h["raw"], d["frame"]  # int8 on arm64 = on x86, bit for bit
        assert d["classification"] == h["classification"]


def test_a_release_whose_source_never_delivers_is_rolled_back(pis, site, tmp_path):
    pi = pis[1]
    artifact = site["dir"] / "quickstart-out" / "models" / "shapes_int8.tflite"
    out = tmp_path / "silent.tar.gz"
    b = site["edgeship"]("bundle", str(artifact), "--target", "rpi5", "--source", "rtsp://127.0.0.1:9/none", "--wheels",
                         "--version", "silent-1", "-o", str(out))
    assert b.returncode == 0, b.stderr
    f = site["edgeship"]("flash", str(out), "--host", pi.host("pi"), *_ssh(pi), "--health-timeout", "20", "--json")
    assert f.returncode == 1
    [r] = json.loads(f.stdout)["results"]
    assert r["status"] == "rolled-back" and "cannot open source rtsp://127.0.0.1:9/none" in r["reason"]
    assert r["running"].startswith("shapes_int8-")
    assert pi.path(f"{ROOT}/releases/silent-1/.failed").is_file()
    # a failed first release on a fresh device root: stopped and marked, no release runs, and it says so
    fresh = "/opt/edgeship-fresh"
    f = site["edgeship"]("flash", str(out), "--host", pi.host("pi"), *_ssh(pi), "--device-root", fresh, "--venvs-dir",
                         f"{ROOT}/venvs", "--health-timeout", "15", "--json")
    [r] = json.loads(f.stdout)["results"]
    assert f.returncode == 1 and r["status"] == "failed" and "no release runs on this device" in r["reason"]
    assert not pi.path(f"{fresh}/current").exists() and pi.path(f"{fresh}/releases/silent-1/.failed").is_file()
    s = site["edgeship"]("device", "status", "--host", pi.host("pi"), *_ssh(pi), "--device-root", fresh, "--json")
    [st] = json.loads(s.stdout)["results"]
    assert st["current"] is None and not st["running"] and "silent-1" in st["failed"]
    # an explicit rollback never lands on a failed release
    rb = site["edgeship"]("device", "rollback", "--host", pi.host("pi"), *_ssh(pi), "--to", "silent-1", "--json")
    assert rb.returncode == 1 and "failed its health check" in json.loads(rb.stdout)["results"][0]["reason"]


def test_a_release_served_over_https_passes_its_health_check_on_the_device(pis, site, tmp_path):
    """HTTPS on the device: the certificate and key stay on the Pi (device: paths, never in the bundle), the service
    user reads the key, and the agent's health check reads /health over TLS."""
    from tests.helpers.certs import self_signed

    pi = pis[1]
    cert, key = self_signed(tmp_path)
    tls = pi.path("/etc/edgeship/tls")
    tls.mkdir(parents=True, exist_ok=True)
    shutil.copy(cert, tls / "cert.pem")
    shutil.copy(key, tls / "key.pem")
    # the key readable by the account the runtime runs as here (the login user: no systemd, see "run_as") only
    pi.run("chown pi:pi /etc/edgeship/tls/key.pem && chmod 0600 /etc/edgeship/tls/key.pem")
    cfg = site["dir"] / "examples" / "https.yaml"
    cfg.write_text("artifact: ../quickstart-out/models/shapes_int8.tflite\n"
                   "source: {uri: ../quickstart-out/videos/shapes.mp4, loop: true, realtime: true}\n"
                   "task: detect\n"
                   "server: {port: 8443, tls_cert: device:/etc/edgeship/tls/cert.pem, "
                   "tls_key: device:/etc/edgeship/tls/key.pem}\n")
    out = tmp_path / "https.tar.gz"
    b = site["edgeship"]("bundle", "quickstart-out/models/shapes_int8.tflite", "--target", "rpi5", "--config",
                         str(cfg), "--wheels", "--version", "https-1", "-o", str(out))
    assert b.returncode == 0, b.stderr
    f = site["edgeship"]("flash", str(out), "--host", pi.host("pi"), *_ssh(pi), "--json")
    assert f.returncode == 0, f.stdout + f.stderr
    [r] = json.loads(f.stdout)["results"]
    assert r["status"] == "deployed" and r["running"] == "https-1" and r["health"]["url"] == "https://127.0.0.1:8443/health"
    code = ("import json, ssl, urllib.request as u; c = ssl.create_default_context(cafile='/etc/edgeship/tls/cert.pem'); "
            "print(json.load(u.urlopen('https://127.0.0.1:8443/health', timeout=10, context=c))['status'])")
    assert pi.run(f"python3 -c {shlex.quote(code)}", user="pi").stdout.strip() == "ok"
    assert not any(p.suffix in (".pem", ".key") for p in pi.path(f"{ROOT}/releases/https-1").rglob("*"))


def test_readme_rollback_and_outputs_survive_prunes(pis, site):
    pi = pis[0]
    before = _events(pi, "security-out/events.jsonl")
    rollback = site["line"](readme_fleet_commands()[6] + " --json", timeout=300)
    assert rollback.returncode == 0, rollback.stdout + rollback.stderr
    [r] = json.loads(rollback.stdout)["results"]
    assert r["ok"] and r["version"].startswith("shapes_int8-")  # back from the industrial release
    # the security runtime keeps appending to the same file under data/, which no prune touches
    assert _wait(lambda: len(_events(pi, "security-out/events.jsonl")) > len(before), 90)
    releases = pi.path(f"{ROOT}/releases")
    assert not (releases / "security-out").exists() and not (releases / "industrial-out").exists()
    st = json.loads(site["edgeship"]("device", "status", "--host", pi.host("pi"), *_ssh(pi), "--json").stdout)["results"][0]
    assert st["stray"] == [] and st["current"] == r["version"] and st["healthy"]
