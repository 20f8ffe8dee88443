"""Issue 16, security and reliability: the camera server, run.sh, the device agent and the event outbox,
each attacked or misused for real (servers on 127.0.0.1, the real agent on a temporary device root)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeship.cli import cli
from edgeship.errors import ConfigError
from edgeship.runtime.apps.events import WebhookEventSink
from edgeship.runtime.apps.outbox import Outbox
from edgeship.runtime.httpserver import HttpServer, redact
from edgeship.runtime.sinks.http import HttpSink
from edgeship.runtime.types import Frame
from edgeship.targets import agent
from edgeship.targets.bundle import run_command, run_script
from tests.helpers.mjpeg import free_port

TOKEN = "not-a-guessable-token"


def _get(url: str, method: str = "GET", timeout: float = 5, **headers: str) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


# ---- 1, 7: the token, however the server is started ----------------------------------------------
def test_cli_http_sink_off_loopback_needs_a_token(art, tmp_path, monkeypatch):
    monkeypatch.delenv("EDGESHIP_HTTP_TOKEN", raising=False)
    folder = tmp_path / "imgs"
    folder.mkdir()
    import cv2

    cv2.imwrite(str(folder / "a.png"), np.zeros((32, 32, 3), np.uint8))
    args = ["run", str(art["tflite_int8"]), "--source", str(folder), "--max-frames", "1", "--sink", f"http:0.0.0.0:{free_port()}"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and "needs a token" in r.output and len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(cli, args + ["--token", "short"])
    assert r.exit_code == 1 and "at least 8 characters" in r.output
    r = CliRunner().invoke(cli, args + ["--json"], env={"EDGESHIP_HTTP_TOKEN": TOKEN})
    assert r.exit_code == 0, r.output


@pytest.fixture
def guarded():
    sink = HttpSink("127.0.0.1", 0, token=TOKEN)
    sink.open({"model": "m", "source": "s"})
    try:
        yield sink
    finally:
        sink.close()


def test_token_as_header_or_cookie_never_in_the_log(guarded, caplog):
    base = guarded.url
    caplog.set_level(logging.DEBUG, logger="edgeship")
    for path in ("/metrics", "/stream.mjpg", "/"):
        assert _get(base + path)[0] == 401
    status, body, _ = _get(base + "/health")  # a health check without the token learns nothing about the camera
    assert set(json.loads(body)) == {"status", "reason", "release", "frames_processed", "frames_skipped_gate", "infer_ms"}
    assert _get(base + "/metrics", Authorization=f"Bearer {TOKEN}")[0] == 503  # authorised (no pipeline yet)
    assert _get(base + "/health", **{"X-Edgeship-Token": TOKEN})[0] in (200, 503)
    # a browser: /?token= is swapped for an HttpOnly cookie and a redirect to a URL without it
    conn = socket.create_connection(("127.0.0.1", guarded.server.port))
    conn.sendall(f"GET /?token={TOKEN} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    reply = b""
    while chunk := conn.recv(4096):
        reply += chunk
    conn.close()
    head = reply.decode("latin-1")
    assert head.startswith("HTTP/1.1 303") and "Location: /\r\n" in head and "HttpOnly" in head
    assert _get(base + "/", Cookie=f"edgeship_token={TOKEN}")[0] == 200
    assert _get(base + f"/metrics?token={TOKEN}")[0] == 401  # not in URLs: they end up in logs and histories
    assert TOKEN not in caplog.text and "token=***" in caplog.text
    assert redact(f"GET /?token={TOKEN}&x=1") == "GET /?token=***&x=1"


# ---- 14: idle, slow and broken clients -----------------------------------------------------------
def test_server_survives_idle_slow_and_rude_clients(capfd):
    from edgeship.runtime.httpserver import Limits

    server = HttpServer("127.0.0.1", 0, limits=Limits(header_timeout=1.0, timeout=1.0, max_waiting=16, max_requests=2))
    gate = threading.Event()
    server.add_route("GET", "/ok", lambda body, q: (200, "text/plain", b"ok"))
    server.add_route("POST", "/ok", lambda body, q: (200, "text/plain", body))
    server.add_route("GET", "/slow", lambda body, q: (gate.wait(10), (200, "text/plain", b"slow"))[1])
    server.start()
    threads_before = threading.active_count()
    idle = []
    try:
        for _ in range(40):  # 40 idle connections: at most 16 wait for a request head, none beyond its deadline
            s = socket.create_connection(("127.0.0.1", server.port))
            s.settimeout(8)
            idle.append(s)
        time.sleep(0.3)
        assert len(server._httpd.waiting) <= 16
        t0 = time.monotonic()  # every one of them is closed within its head deadline (1 s): none kept forever
        answers = [s.recv(100) for s in idle]
        assert answers == [b""] * 40 and time.monotonic() - t0 < 3
        time.sleep(0.3)
        assert threading.active_count() <= threads_before + 2
        # ordinary requests share max_requests slots: a third at once gets 503; /health would take none
        slow = [threading.Thread(target=_get, args=(server.url + "/slow",)) for _ in range(2)]
        for t in slow:
            t.start()
        time.sleep(0.3)
        assert _get(server.url + "/ok")[0] == 503
        gate.set()
        for t in slow:
            t.join(10)
        assert _get(server.url + "/ok")[0] == 200
        # a slow request (headers never finished) is cut off too
        slow = socket.create_connection(("127.0.0.1", server.port))
        slow.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n")
        slow.settimeout(5)
        t0 = time.monotonic()
        assert slow.recv(100) == b"" and time.monotonic() - t0 < 4
        # Content-Length -1: 400 at once, no thread left blocked
        bad = socket.create_connection(("127.0.0.1", server.port))
        bad.settimeout(5)
        bad.sendall(b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
        assert bad.recv(100).startswith(b"HTTP/1.1 400")
        bad.close()
        # HEAD answers like GET without a body
        status, body, headers = _get(server.url + "/ok", method="HEAD")
        assert status == 200 and body == b"" and headers["Content-Length"] == "2"
        # clients that vanish mid-answer: no traceback
        for _ in range(20):
            c = socket.create_connection(("127.0.0.1", server.port))
            c.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            c.close()
        assert _get(server.url + "/ok")[0] == 200
    finally:
        for s in idle:
            s.close()
        server.stop()
    assert "Traceback" not in capfd.readouterr().err


def test_live_view_viewer_leaving_is_quiet(capfd):
    sink = HttpSink("127.0.0.1", 0)
    sink.open({})
    try:
        frame = Frame(image=np.zeros((48, 64, 3), np.uint8), index=0, t_capture=time.time(), t_mono=time.monotonic())
        for _ in range(5):
            c = socket.create_connection(("127.0.0.1", sink.server.port))
            c.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
            deadline = time.monotonic() + 3
            while sink.view.viewers == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            sink.view._last = 0
            sink.skip(frame)
            c.close()
            time.sleep(0.3)
            sink.view._last = 0
            sink.skip(frame)
    finally:
        sink.close()
    assert "Traceback" not in capfd.readouterr().err


# ---- 2: run.sh passes every user word byte for byte ----------------------------------------------
def test_run_sh_expands_only_edgeships_own_variables(tmp_path):
    marker = tmp_path / "pwned"
    hostile = [f"--threads=$(touch {marker})", "`touch " + str(marker) + "`", "it's", 'a "quoted" word', "$HOME", "${PATH}",
               "back\\slash", "new\nline", "*", ""]
    source = "rtsp://user:pa$$w0rd`x`@127.0.0.1/s"
    argv = run_command("model/m.tflite", config=False, source=source, http_port=8123, task="detect", extra_args=tuple(hostile))
    release = tmp_path / "releases" / "v1"
    (release / "venv" / "bin").mkdir(parents=True)
    fake = release / "venv" / "bin" / "edgeship"
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    "print(json.dumps({'argv': sys.argv[1:], 'release': os.environ.get('EDGESHIP_RELEASE')}))\n")
    fake.chmod(0o755)
    (release / "run.sh").write_text(run_script(argv))
    env = {k: v for k, v in os.environ.items() if k != "EDGESHIP_HTTP_PORT"}
    out = json.loads(subprocess.run(["/bin/sh", str(release / "run.sh")], capture_output=True, text=True, env=env,
                                    check=True).stdout)
    real = str(release.resolve())
    assert out["argv"] == ["run", f"{real}/model/m.tflite", "--source", source, "--log-every", "60", "--sink",
                           "http:127.0.0.1:8123", "--task", "detect", *hostile]
    assert out["release"] == "v1" and not marker.exists()
    env["EDGESHIP_HTTP_PORT"] = "9999"  # edgeship's own variable is still expanded
    out = json.loads(subprocess.run(["/bin/sh", str(release / "run.sh")], capture_output=True, text=True, env=env).stdout)
    assert out["argv"][7] == "http:127.0.0.1:9999"


# ---- 12: a webhook that redirects has not received the event -------------------------------------
class _Redirector:
    def __init__(self) -> None:
        self.posts, self.gets = 0, 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):  # noqa: N802
                owner.posts += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(302)
                self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):  # noqa: N802
                owner.gets += 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/events"


def test_webhook_redirect_is_a_failed_delivery(tmp_path):
    target = _Redirector()
    sink = WebhookEventSink(target.url, tmp_path / "q.sqlite", backoff_s=10.0, drain_s=0.0)
    sink.queue.outbox = Outbox(sink.queue_path)  # the outbox without its delivery thread: one attempt, by hand
    try:
        sink.outbox.put("e1", b'{"id": "e1"}')
        assert sink.deliver_due() == 0
        assert len(sink.outbox) == 1 and sink.delivered == 0 and target.posts == 1 and target.gets == 0
        assert "302" in sink.last_error and "/elsewhere" in sink.last_error
    finally:
        sink.outbox.close()
        target.httpd.shutdown()


# ---- 15: the outbox is bounded ------------------------------------------------------------------
def test_outbox_is_bounded_and_counts_what_it_drops(tmp_path):
    q = Outbox(tmp_path / "q.sqlite", max_rows=5, max_bytes=1000)
    for i in range(8):
        assert q.put(f"e{i}", b"x" * 100)
    assert len(q) == 5 and q.dropped() == 3
    assert [p.id for p in q.due()] == ["e3", "e4", "e5", "e6", "e7"]  # the oldest went first
    assert q.put("big", b"y" * 650)  # bytes too: 5 x 100 + 650 > 1000 -> drop the oldest until it fits
    assert [p.id for p in q.due()] == ["e5", "e6", "e7", "big"] and q.dropped() == 5
    assert not q.put("huge", b"z" * 2000) and q.dropped() == 6  # larger than the whole bound: dropped, counted
    q.close()
    again = Outbox(tmp_path / "q.sqlite", max_rows=5, max_bytes=1000)
    assert again.dropped() == 6 and len(again) == 4  # the count survives a restart
    again.close()
    with pytest.raises(ConfigError, match="is a folder"):
        Outbox(tmp_path)


# ---- 3, 4, 5, 10, 11, 17: the device agent against a malicious bundle or service account -------
def _bundle(tmp_path: Path, files: dict[str, bytes], sums: str | None = None) -> tuple[Path, str]:
    if sums is None:
        sums = "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in sorted(files.items()))
    files = {**files, "SHA256SUMS": sums.encode()}
    path = tmp_path / f"b{len(list(tmp_path.iterdir()))}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _agent(capsys, *args: str) -> dict:
    code = agent.main(list(args))
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (code == 0) == bool(out.get("ok"))
    return out


@pytest.mark.parametrize("version", ["../../escape", "/tmp/abs", "..", ".", "a/b", "", "x" * 200])
def test_release_version_cannot_leave_releases(tmp_path, capsys, version):
    root, outside = tmp_path / "dev", tmp_path / "escape"
    outside.mkdir()
    (outside / "keep").write_text("precious")
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    part, sha = _bundle(bundles, {"release.json": json.dumps({"version": version}).encode()})
    out = _agent(capsys, "install", "--root", str(root), "--part", str(part), "--sha256", sha)
    assert not out["ok"] and "is not valid" in out["reason"]
    assert (outside / "keep").read_text() == "precious" and sorted(p.name for p in outside.iterdir()) == ["keep"]
    assert not any(p for p in (root / "releases").iterdir() if not p.name.startswith("."))
    out = _agent(capsys, "activate", "--root", str(root), "--version", version or "..")
    assert not out["ok"] and "is not valid" in out["reason"]


def test_malformed_checksums_and_reused_version(tmp_path, capsys):
    root = tmp_path / "dev"
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    part, sha = _bundle(bundles, {"release.json": b'{"version": "v1"}'}, sums="not a checksum line\n")
    out = _agent(capsys, "install", "--root", str(root), "--part", str(part), "--sha256", sha)
    assert not out["ok"] and "SHA256SUMS line 1 is malformed" in out["reason"]
    installed = root / "releases" / "v1"
    installed.mkdir(parents=True)
    (installed / agent.BUNDLE_SHA).write_text("0" * 64 + "\n")  # v1 is installed, from another bundle
    part, sha = _bundle(bundles, {"release.json": b'{"version": "v1"}', "model/m.tflite": b"new content"})
    out = _agent(capsys, "install", "--root", str(root), "--part", str(part), "--sha256", sha)
    assert not out["ok"] and "already installed with different content" in out["reason"] and "new --version" in out["reason"]
    assert not (installed / "model").exists()


def test_rollback_skips_a_release_that_failed(tmp_path):
    root = tmp_path / "dev"
    for v in ("v0", "v1", "v2"):
        (root / "releases" / v).mkdir(parents=True)
        (root / "releases" / v / ".verified").write_text("x\n")
    (root / "releases" / "v2" / agent.FAILED_MARKER).write_text("{}\n")
    (root / "history.json").write_text(json.dumps([{"version": v} for v in ("v0", "v1", "v2", "v1")]))
    os.symlink("releases/v1", root / "current")
    assert agent.rollback_candidates(str(root)) == ["v0"]  # not v2, whose health check failed
    (root / "history.json").write_text(json.dumps([{"version": "../x"}, {"version": "v1"}]))
    assert agent.rollback_candidates(str(root)) == []


def test_log_file_planted_as_a_link_is_refused(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    secret = tmp_path / "root-only"
    secret.write_text("secret\n")
    secret.chmod(0o600)
    (logs / "edgeship.log").symlink_to(secret)
    with pytest.raises(agent.StepFailed, match="link, FIFO or device"):
        agent.open_log_safely(str(logs / "edgeship.log"), 12345, 12345)
    (logs / "edgeship.log").unlink()
    os.link(secret, logs / "edgeship.log")  # a hard link, where the kernel allows it
    with pytest.raises(agent.StepFailed, match="not a plain file"):
        agent.open_log_safely(str(logs / "edgeship.log"), 12345, 12345)
    st = secret.stat()
    assert secret.read_text() == "secret\n" and (st.st_uid, st.st_mode & 0o777) == (os.getuid(), 0o600)
    (logs / "edgeship.log").unlink()
    fd = agent.open_log_safely(str(logs / "edgeship.log"))
    os.close(fd)
    assert (logs / "edgeship.log").is_file()


def test_stop_never_signals_a_process_the_pid_file_merely_names(tmp_path):
    root = tmp_path / "dev"
    (root / "run").mkdir(parents=True)
    victim = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        (root / "run" / "supervisor.pid").write_text(f"{victim.pid}\n")
        agent.none_stop(str(root), timeout=1)
        time.sleep(0.2)
        assert victim.poll() is None  # still alive: it is not this root's supervisor
    finally:
        victim.kill()
        victim.wait()
    # the real supervisor is stopped
    sup = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "agent.py", "supervise", "--root", str(root)],
                           start_new_session=True)
    try:
        (root / "run" / "supervisor.pid").write_text(f"{sup.pid}\n")
        deadline = time.monotonic() + 5  # until the child has exec'd (its cmdline is the parent's before that)
        while not agent.is_supervisor(sup.pid, str(root)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert agent.is_supervisor(sup.pid, str(root))
        agent.none_stop(str(root), timeout=5)
        assert sup.wait(5) is not None
    finally:
        if sup.poll() is None:
            sup.send_signal(signal.SIGKILL)


def test_secrets_are_not_world_readable(tmp_path):
    (tmp_path / "deploy.yaml").write_text("server: {token: abcdefghij}\n")
    (tmp_path / "deploy.yaml").chmod(0o644)
    agent.protect_secrets(str(tmp_path))
    assert (tmp_path / "deploy.yaml").stat().st_mode & 0o777 == 0o600
    agent.protect_secrets(str(tmp_path), gid=os.getgid())
    assert (tmp_path / "deploy.yaml").stat().st_mode & 0o777 == (0o640 if os.geteuid() == 0 else 0o600)


# ---- 9: the health check must hear from the new release ------------------------------------------
def test_health_names_its_release(monkeypatch):
    monkeypatch.setenv("EDGESHIP_RELEASE", "v7")
    sink = HttpSink("127.0.0.1", 0)
    sink.open({})
    try:
        status, body, _ = _get(sink.url + "/health")
        assert agent.health_release(body.decode()) == "v7"
    finally:
        sink.close()
    assert agent.health_release("not json") is None and agent.health_release('{"status": "ok"}') is None


# ---- 16: what a killed run leaves is swept by the next one ------------------------------------------
def test_a_killed_runs_leftovers_are_swept(tmp_path):
    from edgeship.converters.convert import STAGE_PREFIX
    from edgeship.fileio import atomic_write_text, sweep_stale

    dead = 2 ** 22 + 12345  # above the usual pid range
    while agent.pid_alive(dead):
        dead += 1
    old = time.time() - 3600
    stale_file = tmp_path / f".calib.npz.{dead}.k3j2_x.tmp"
    stale_stage = tmp_path / f"{STAGE_PREFIX}{dead}.ab12cd"
    live_file = tmp_path / f".calib.npz.{os.getppid()}.zz9.tmp"  # a live process's: kept
    sibling = tmp_path / f".calib.npz.20240101.{dead}.q1.tmp"  # another file's temp name: kept
    for p in (stale_file, live_file, sibling):
        p.write_text("half")
    stale_stage.mkdir()
    (stale_stage / "saved_model").mkdir()
    for p in (stale_file, stale_stage, live_file, sibling):
        os.utime(p, (old, old))
    atomic_write_text(tmp_path / "calib.npz", "done")  # the next write of the same file sweeps its leftovers
    assert not stale_file.exists() and live_file.exists() and sibling.exists()
    assert [p.name for p in sweep_stale(tmp_path, STAGE_PREFIX)] == [stale_stage.name] and not stale_stage.exists()
