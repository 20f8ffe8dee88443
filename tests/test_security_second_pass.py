"""Issue 25, the second hostile pass: slow clients against /health, the root agent against what its
service user plants in run/ and logs/, release ownership whatever the tar headers say, the token in
percent-encoded query keys, and the other defects the pass found."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import socket
import stat
import tarfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edgeship.runtime.httpserver import redact
from edgeship.runtime.sinks.http import HttpSink
from edgeship.runtime.types import Frame
from edgeship.targets import agent

TOKEN = "s3cret-token-123"


def _health(port: int, timeout: float = 5) -> tuple[int, float]:
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout) as r:
            code = r.status
            json.loads(r.read())
    except urllib.error.HTTPError as e:
        code = e.code
        json.loads(e.read())
    return code, time.monotonic() - t0


class _Slowloris(threading.Thread):
    """A client that sends one header line every ``every`` seconds and reconnects when cut off."""

    def __init__(self, port: int, stop: threading.Event, every: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.port, self.stop, self.every, self.cut = port, stop, every, 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                while not self.stop.wait(self.every):
                    s.sendall(b"X-Slow: 1\r\n")
            except OSError:
                self.cut += 1
            finally:
                try:
                    s.close()
                except Exception:  # noqa: BLE001
                    pass


class _Viewer(threading.Thread):
    def __init__(self, port: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.stop, self.first = port, stop, b""

    def run(self) -> None:
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            s.sendall(f"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
            s.settimeout(1)
            while not self.stop.is_set():
                try:
                    data = s.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    break
                self.first = self.first or data[:40]
            s.close()
        except OSError:
            pass


@pytest.mark.parametrize("token", [None, TOKEN])
def test_health_answers_within_a_second_under_slowloris_and_viewers(token):
    sink = HttpSink("127.0.0.1", 0, token=token)
    sink.open({"model": "m", "source": "s"})
    stop = threading.Event()
    frame = Frame(image=np.zeros((48, 64, 3), np.uint8), index=0, t_capture=time.time(), t_mono=time.monotonic())
    port = sink.server.port
    attackers = [_Slowloris(port, stop) for _ in range(40)]
    viewers = [_Viewer(port, stop) for _ in range(40)]
    try:
        for t in attackers + viewers:
            t.start()
        worst, answered, deadline = 0.0, 0, time.monotonic() + 14  # past the 10 s head deadline: the cut-offs reconnect
        while time.monotonic() < deadline:
            sink.view._last = 0
            sink.skip(frame)  # frames for the viewers
            code, took = _health(port)
            assert code in (200, 503)
            worst, answered = max(worst, took), answered + 1
            time.sleep(0.2)
        assert answered >= 30 and worst < 1.0, worst
        assert sum(a.cut for a in attackers) >= 40  # every slow client was cut off at its deadline at least once
        assert sink.view.viewers <= sink.server.limits.max_streams  # the rest were turned away with 503
        refused = [v for v in viewers if v.first.startswith(b"HTTP/1.1 503")]
        assert len(refused) >= 40 - sink.server.limits.max_streams - 1
    finally:
        stop.set()
        sink.close()


def test_percent_encoded_token_keys_never_reach_the_log(caplog):
    caplog.set_level(logging.DEBUG, logger="edgeship")
    sink = HttpSink("127.0.0.1", 0, token=TOKEN)
    sink.open({})
    try:
        for key, login in (("tok%65n", True), ("t%6fk%65n", True), ("token", True), ("TOKEN", False)):
            with socket.create_connection(("127.0.0.1", sink.server.port)) as c:
                c.sendall(f"GET /?{key}={TOKEN}&x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                reply = c.recv(200)
            assert reply.startswith(b"HTTP/1.1 303" if login else b"HTTP/1.1 401")  # a login or not...
    finally:
        sink.close()
    assert TOKEN not in caplog.text  # ...and never logged
    assert redact(f"GET /?tok%65n={TOKEN}&x=1 HTTP/1.1") == "GET /?tok%65n=***&x=1 HTTP/1.1"
    assert redact("GET /?x=1&token+=abc") == "GET /?x=1&token+=***"


# ---- the root agent against its service user ------------------------------------------------------
AGENT = Path(agent.__file__)


def _agent(*args: str, timeout: float = 5.0) -> dict:
    """Run the agent as the device would (a separate process); a hang fails the test instead of blocking it."""
    import subprocess
    import sys

    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(AGENT), *args], capture_output=True, text=True, timeout=timeout)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["_seconds"] = time.monotonic() - t0
    return out


def _device(tmp_path: Path) -> Path:
    root = tmp_path / "dev"
    rel = root / "releases" / "v1"
    rel.mkdir(parents=True)
    (rel / "release.json").write_text(json.dumps({"version": "v1", "http_port": 9}))
    (rel / "run.sh").write_text("#!/bin/sh\nsleep 30\n")
    (rel / agent.VERIFIED).write_text("x\n")
    for d in ("run", "logs", "data"):
        (root / d).mkdir()
    return root


@pytest.mark.parametrize("plant", ["fifo", "symlink-secret", "symlink-zero"])
def test_agent_reads_nothing_through_what_the_service_user_plants(tmp_path, plant):
    root = _device(tmp_path)
    secret = tmp_path / "root-only"
    secret.write_text("the secret\n")
    secret.chmod(0o600)
    targets = [root / "run" / "supervisor.pid", root / "run" / "child.pid", root / "run" / "state.json",
               root / "logs" / "edgeship.log"]
    for t in targets:
        if plant == "fifo":
            os.mkfifo(t)
        else:
            t.symlink_to(secret if plant == "symlink-secret" else "/dev/zero")
    common = ("--root", str(root), "--init", "none")
    status = _agent("status", *common)
    assert status["ok"] and status["running"] is False and status["_seconds"] < 5
    logs = _agent("logs", *common)
    assert logs["ok"] and logs["log"] == "" and "secret" not in json.dumps(logs)
    for command in (("activate", "--version", "v1", "--timeout", "2"), ("rollback", "--timeout", "2")):
        out = _agent(command[0], *common, *command[1:])
        assert not out["ok"] and out["_seconds"] < 5 and "secret" not in json.dumps(out)
    act = _agent("activate", *common, "--version", "v1", "--timeout", "2")
    assert "log file" in act["reason"] and ("link, FIFO or device" in act["reason"] or "not a plain file" in act["reason"])
    log = targets[-1]  # not followed, not replaced (stale pid files in run/ are unlinked: that follows nothing)
    assert log.is_symlink() if plant != "fifo" else stat.S_ISFIFO(log.lstat().st_mode)
    assert secret.read_text() == "the secret\n" and secret.stat().st_uid == os.getuid()


def _tar(path: Path, files: dict[str, bytes], *, uid: int = 1000, mode: int = 0o4777, dirs: tuple[str, ...] = ()) -> str:
    sums = "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in sorted(files.items()))
    files = {**files, "SHA256SUMS": sums.encode()}
    with tarfile.open(path, "w:gz") as tar:
        for d in dirs:
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode, ti.uid, ti.gid, ti.uname = tarfile.DIRTYPE, 0o777, uid, uid, "pi"
            tar.addfile(ti)
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.uid, ti.gid, ti.uname, ti.gname, ti.mode = len(data), uid, uid, "pi", "pi", mode
            tar.addfile(ti, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership is only enforced when root installs")
def test_a_release_is_root_owned_without_setuid_whatever_the_tar_says(tmp_path):
    root = tmp_path / "dev"
    part = tmp_path / "b.part"
    files = {"release.json": b'{"version": "v7"}', "run.sh": b"#!/bin/sh\n", "agent.py": b"print()\n",
             "systemd/edgeship.service.in": b"[Unit]\n"}
    sha = _tar(part, files, dirs=("systemd",))
    out = _agent("install", "--root", str(root), "--part", str(part), "--sha256", sha, timeout=60)
    assert not out["ok"] and "requirements" in out["reason"]  # extraction went through; this bundle has no runtime
    rel = root / "releases" / "v7"
    for p in [rel, rel / "systemd", *(rel / n for n in files)]:
        st = p.lstat()
        assert (st.st_uid, st.st_gid) == (0, 0), p
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | 0o022), (p, oct(st.st_mode))
    assert not (rel / agent.VERIFIED).exists()  # never installed: rollback cannot pick it
    rb = _agent("rollback", "--root", str(root), "--init", "none", "--version", "v7")
    assert not rb["ok"] and "not installed and verified" in rb["reason"]


def test_a_bundle_with_its_own_venv_is_refused_before_install(tmp_path):
    root = tmp_path / "dev"
    part = tmp_path / "b.part"
    sha = _tar(part, {"release.json": b'{"version": "v8"}', "venv/bin/python": b"#!/bin/sh\n"}, uid=os.getuid(), mode=0o644,
               dirs=("venv", "venv/bin"))
    out = _agent("install", "--root", str(root), "--part", str(part), "--sha256", sha, timeout=60)
    assert not out["ok"] and "'venv' entry" in out["reason"]
    assert not (root / "releases" / "v8").exists()


# ---- full disks, read-only folders, native lines ------------------------------------------------------
EDGESHIP = [str(Path(__import__("sys").executable).with_name("edgeship"))]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The demo's models and videos (built once per session, shared with the app tests)."""
    from tests.helpers.demo import demo_dir

    return demo_dir(tmp_path_factory)


@pytest.fixture
def small_disks(tmp_path):
    """A 64 KiB tmpfs (full almost at once) and a read-only one (root only: mounts)."""
    import subprocess

    full, ro = tmp_path / "full", tmp_path / "ro"
    full.mkdir()
    ro.mkdir()
    mounted = []
    try:
        for where, opts in ((full, "size=64k"), (ro, "ro,size=64k")):
            subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], check=True, capture_output=True)
            mounted.append(where)
        yield full, ro
    finally:
        for where in mounted:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting the small disks needs root")
def test_full_disk_and_read_only_folders_are_one_line(small_disks, demo, tmp_path):
    import subprocess

    import cv2

    full, ro = small_disks
    qs = demo
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for k in range(40):  # a calibration set bigger than the full disk's 64 KiB
        cv2.imwrite(str(images / f"{k:02d}.png"), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    cases = [
        (["calibrate", str(images), "--input-size", "32x32", "--out", str(full / "c.npz")], "ENOSPC"),
        (["bundle", str(qs / "models" / "digits_int8.tflite"), "--target", "rpi5", "--source", "0", "-o", str(full / "b.tar.gz")],
         "ENOSPC"),
        (["prune", str(qs / "models" / "digits.keras"), "--channels", "0.3", "-o", str(full / "p.keras")], "ENOSPC"),
        (["convert", str(qs / "models" / "digits.keras"), "-f", "tflite", "-p", "fp16", "-o", str(ro / "out")], "EROFS"),
    ]
    for args, code in cases:
        proc = subprocess.run([*EDGESHIP, *args], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "EDGESHIP_PROGRESS": "0"})
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING: ")]
        assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: ") and code in lines[0], (args, proc.stderr)
        assert "internal error" not in lines[0]
        assert not [p for p in full.iterdir() if p.is_file()], sorted(full.iterdir())  # nothing half-written


def test_no_native_lines_for_sources_that_do_not_open(tmp_path, demo):
    """FFmpeg's and OpenCV's own warnings ('moov atom not found', '[ WARN:0@...] global cap.cpp', '[tcp @ 0x...]
    Connection refused') stay off the terminal: edgeship's one error line says what failed."""
    import subprocess

    qs = demo
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes((qs / "videos" / "belt.mp4").read_bytes()[:20000])
    for source in (str(text), str(cut), "rtsp://127.0.0.1:9/none", "7"):
        proc = subprocess.run([*EDGESHIP, "run", str(qs / "models" / "digits_int8.tflite"), "--source", source,
                               "--source-timeout", "2", "--max-frames", "1"], capture_output=True, text=True, timeout=60)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: cannot open source"), (source, lines)


def test_an_idle_externally_triggered_station_is_healthy(demo, tmp_path):
    """No trigger for longer than the staleness window: frames still arrive (skipped by the trigger), so /health
    stays 200 "ok" instead of "degraded"."""
    import yaml

    from edgeship.runtime.apps.deploy import run_config
    from tests.helpers.mjpeg import free_port, wait_port

    qs = demo
    port = free_port()
    cfg = tmp_path / "station.yaml"
    cfg.write_text(yaml.safe_dump({
        "artifact": str(qs / "models" / "digits_int8.tflite"),
        "source": {"uri": str(qs / "videos" / "belt.mp4"), "loop": True, "realtime": True},
        "app": {"type": "industrial", "counters": "c.sqlite", "trigger": {"mode": "external"}},
        "server": {"port": port}, "duration": 9}))
    t = threading.Thread(target=run_config, args=(cfg,), kwargs={"handle_signals": False})
    t.start()
    try:
        wait_port(port)
        time.sleep(7)  # past the 5 s staleness window without a single trigger
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as r:
            answer = json.loads(r.read())
        assert r.status == 200 and answer["status"] == "ok" and answer["frames_processed"] == 0
        assert answer["frames_skipped_gate"] > 0
    finally:
        t.join(30)
