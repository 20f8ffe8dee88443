"""HTTPS for the camera server: TLS 1.2+ from a PEM certificate and key (``--tls-cert``/``--tls-key``,
``server.tls_cert``/``server.tls_key``), the handshake inside the request-head deadline, one-line errors
for bad files, keys that never travel in a bundle, and the device agent's health check over HTTPS."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from edgeship.cli import cli
from edgeship.errors import ConfigError
from edgeship.runtime.config import load_config
from edgeship.runtime.httpserver import HttpServer, Limits
from edgeship.runtime.tls import client_context, server_context
from edgeship.targets import agent
from tests.helpers.certs import self_signed
from tests.helpers.demo import demo_dir
from tests.helpers.mjpeg import free_port, wait_port

TOKEN = "tls-test-token-1234"


@pytest.fixture(scope="module")
def pem(tmp_path_factory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("pem"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return demo_dir(tmp_path_factory)


def _get(url: str, cafile: Path | None, timeout: float = 5, **headers: str) -> tuple[int, bytes, dict]:
    ctx = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout, context=ctx) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def test_https_server_verifies_and_survives_plain_and_silent_clients(pem):
    cert, key = pem
    server = HttpServer("127.0.0.1", 0, token=TOKEN, tls=(cert, key),
                        limits=Limits(header_timeout=1.0, timeout=1.0, max_waiting=8))
    server.add_route("GET", "/ok", lambda body, q: (200, "text/plain", b"ok"))
    server.add_route("GET", "/", lambda body, q: (200, "text/html", b"<html></html>"))
    server.start()
    try:
        assert server.url.startswith("https://127.0.0.1:")
        # a client that checks the certificate (127.0.0.1 is in its names) gets the route with the token
        assert _get(server.url + "/ok", cert, Authorization=f"Bearer {TOKEN}")[:2] == (200, b"ok")
        assert _get(server.url + "/ok", cert)[0] == 401
        # the browser's ?token= swap sets a cookie that only travels over HTTPS
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            tls = ssl.create_default_context(cafile=str(cert)).wrap_socket(raw, server_hostname="127.0.0.1")
            tls.sendall(f"GET /?token={TOKEN} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            head = tls.recv(4096).decode()
        assert head.startswith("HTTP/1.1 303") and "HttpOnly; SameSite=Lax; Secure" in head
        # plain HTTP to the TLS port is a failed handshake, not an answer in clear
        with pytest.raises((urllib.error.URLError, ConnectionError, http_client_errors())):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health", timeout=5).read()
        # clients that connect and never say hello are dropped at the head deadline and hold up no one
        silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(12)]
        t0 = time.monotonic()
        assert _get(server.url + "/ok", cert, Authorization=f"Bearer {TOKEN}")[0] == 200
        assert time.monotonic() - t0 < 2
        for s in silent:
            s.settimeout(5)
        assert [s.recv(10) for s in silent] == [b""] * 12 and time.monotonic() - t0 < 4
        for s in silent:
            s.close()
        # a client whose handshake stalls half way is cut off too
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.sendall(b"\x16\x03\x01\x00\xff")  # the start of a ClientHello that never comes whole
            raw.settimeout(5)
            t0 = time.monotonic()
            try:
                left = raw.recv(10)
            except ConnectionResetError:
                left = b""
            assert left == b"" and time.monotonic() - t0 < 4
        assert _get(server.url + "/ok", cert, Authorization=f"Bearer {TOKEN}")[0] == 200
        # a handshake finished just before the deadline does not start a new one: cut off at accept + 1 s
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            t0 = time.monotonic()
            time.sleep(0.9)
            tls = ssl.create_default_context(cafile=str(cert)).wrap_socket(raw, server_hostname="127.0.0.1")
            tls.settimeout(5)
            try:
                left = tls.recv(10)
            except (ConnectionResetError, ssl.SSLError):
                left = b""
            # the deadline from accept: ~1.0-1.2 s; a fresh one after the handshake could not come before 0.9 + 1.0 s
            assert left == b"" and time.monotonic() - t0 < 1.85, time.monotonic() - t0
        # TLS 1.1 is refused by the server (the client offers it with ciphers that allow it: the refusal is the server's)
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            with pytest.raises(ssl.SSLError) as refused:
                old.wrap_socket(raw, server_hostname="127.0.0.1")
        if "NO_PROTOCOLS_AVAILABLE" in str(refused.value):
            pytest.skip("this OpenSSL cannot offer TLS 1.1 at all: nothing to refuse")
        assert "PROTOCOL_VERSION" in str(refused.value), refused.value
    finally:
        server.stop()


def http_client_errors() -> type:
    import http.client

    return http.client.HTTPException


def test_tls_files_are_checked_in_one_line(pem, tmp_path):
    cert, key = pem
    other_cert, other_key = self_signed(tmp_path, "other")
    locked_cert, locked_key = self_signed(tmp_path, "locked", passphrase=b"secret-pass")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = [((tmp_path / "missing.crt", key), "TLS certificate", "missing.crt", "does not exist"),
             ((cert, tmp_path / "missing.key"), "TLS private key", "missing.key", "does not exist"),
             ((garbage, key), "garbage.pem", "expected a PEM certificate", ""),
             ((cert, other_key), "other.key", "matching private key", ""),
             ((locked_cert, locked_key), "locked.key", "is encrypted", "openssl pkey")]
    for (c, k), *words in cases:
        with pytest.raises(ConfigError) as e:
            server_context(c, k)
        assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)
    assert server_context(other_cert, other_key).minimum_version == ssl.TLSVersion.TLSv1_2
    # a CA file is the only authority trusted (not added to the system's)
    assert client_context(cert).cert_store_stats()["x509_ca"] == 1


def test_config_tls_pair_and_bundle_keeps_keys_on_the_device(pem, demo, tmp_path):
    from edgeship.targets.bundle import build_bundle, read_release

    cert, key = pem
    art = demo / "models" / "shapes_int8.tflite"
    base = {"artifact": str(art), "source": str(demo / "videos" / "shapes.mp4")}
    cfg = tmp_path / "half.yaml"
    cfg.write_text(yaml.safe_dump({**base, "server": {"port": 8443, "tls_cert": str(cert)}}))
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        load_config(cfg)
    cfg.write_text(yaml.safe_dump({**base, "server": {"port": 8443, "tls_cert": str(cert), "tls_key": str(key)}}))
    assert load_config(cfg).server.tls == (str(cert), str(key))
    # a workstation path would put the key in the bundle: refused, with the fix
    with pytest.raises(Exception) as e:
        build_bundle(str(art), "rpi5", tmp_path / "b.tar.gz", config=str(cfg))
    assert "would travel in the bundle" in str(e.value) and "device:" in str(e.value)
    assert not (tmp_path / "b.tar.gz").exists()
    cfg.write_text(yaml.safe_dump({**base, "server": {"port": 8443, "tls_cert": "device:/etc/edgeship/tls/cert.pem",
                                                      "tls_key": "device:/etc/edgeship/tls/key.pem"}}))
    build_bundle(str(art), "rpi5", tmp_path / "b.tar.gz", config=str(cfg))
    import tarfile

    meta = read_release(tmp_path / "b.tar.gz")
    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        names = tar.getnames()
        deploy = tar.extractfile("deploy.yaml").read().decode()
    assert meta["health_scheme"] == "https" and meta["http_port"] == 8443
    assert not any(n.endswith((".pem", ".key", ".crt")) for n in names)
    assert "device:/etc/edgeship/tls/key.pem" in deploy
    assert {"/etc/edgeship/tls/cert.pem", "/etc/edgeship/tls/key.pem"} <= set(meta["device_files"])  # preflight checks them
    with pytest.raises(Exception, match="use --config with server.tls_cert"):
        build_bundle(str(art), "rpi5", tmp_path / "c.tar.gz", source=str(demo / "videos" / "shapes.mp4"),
                     run_args=("--tls-cert", "/etc/cert.pem"))
    assert agent.health_url(str(tmp_path), meta) == "https://127.0.0.1:8443/health"


def test_a_multi_camera_site_serves_https(pem, demo):
    cert, key = pem
    art, video = demo / "models" / "shapes_int8.tflite", demo / "videos" / "shapes.mp4"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edgeship.cli", "run", str(art), "--source", f"door={video}",
                             "--source", f"yard={video}", "--loop", "--realtime", "--sink", f"http:{port}",
                             "--tls-cert", str(cert), "--tls-key", str(key), "--duration", "60", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port, timeout=60)
        deadline, body = time.monotonic() + 30, b""
        while time.monotonic() < deadline:
            status, body, _ = _get(f"https://127.0.0.1:{port}/api/cameras", cert)
            if status == 200 and len(json.loads(body)["cameras"]) == 2:
                break
            time.sleep(0.3)
        assert sorted(json.loads(body)["cameras"]) == ["door", "yard"]
        # a camera is listed once it starts and healthy ("ok") once its first frame was processed: on a loaded
        # machine that can take a moment after the listing (it answered "starting", 503, in one full-suite run)
        deadline, health = time.monotonic() + 30, None
        while time.monotonic() < deadline:
            health = _get(f"https://127.0.0.1:{port}/cameras/door/health", cert)
            if health[0] == 200:
                break
            assert json.loads(health[1])["status"] == "starting", health
            time.sleep(0.3)
        assert health is not None and health[0] == 200, health
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_run_cli_serves_https_and_the_agent_probe_reads_it(pem, demo, tmp_path):
    cert, key = pem
    art = demo / "models" / "shapes_int8.tflite"
    video = demo / "videos" / "shapes.mp4"
    r = CliRunner()
    res = r.invoke(cli, ["run", str(art), "--source", str(video), "--tls-cert", str(cert), "--tls-key", str(key)])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "add --sink http:PORT" in res.output
    res = r.invoke(cli, ["run", str(art), "--source", str(video), "--sink", "http:0", "--tls-cert", str(cert)])
    assert res.exit_code == 1 and "tls_cert and tls_key go together" in res.output
    res = r.invoke(cli, ["run", str(art), "--source", str(video), "--sink", "http:0", "--tls-cert", str(cert),
                         "--tls-key", str(tmp_path / "nope.key")])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "--tls-key" in res.output and "nope.key" in res.output
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edgeship.cli", "run", str(art), "--source", str(video), "--loop",
                             "--realtime", "--sink", f"http:{port}", "--tls-cert", str(cert), "--tls-key", str(key),
                             "--duration", "60", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port, timeout=60)
        deadline, status = time.monotonic() + 30, None
        while time.monotonic() < deadline:
            status, body = agent.probe(f"https://127.0.0.1:{port}/health")
            if status == 200:
                break
            time.sleep(0.3)
        assert status == 200 and json.loads(body)["status"] == "ok"
        assert _get(f"https://127.0.0.1:{port}/metrics", cert)[0] == 200  # verified against the certificate
        assert agent.probe(f"http://127.0.0.1:{port}/health")[0] is None  # clear text gets nothing
    finally:
        proc.terminate()
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-2000:]
    assert json.loads(stdout)["frames_processed"] > 0


def test_webhooks_and_http_reject_outputs_check_the_receivers_certificate(pem, tmp_path):
    from edgeship.runtime.apps.events import WebhookEventSink, WebhookEvents
    from edgeship.runtime.apps.outputs import HttpOutput, HttpOutputCfg
    from tests.helpers.webhook import WebhookReceiver

    cert, key = pem
    with WebhookReceiver(tls=(cert, key)) as receiver:
        assert receiver.url.startswith("https://")
        # trusted through ca_file (a private CA): delivered
        sink = WebhookEventSink(**WebhookEvents(type="webhook", url=receiver.url, queue=str(tmp_path / "q.sqlite"),
                                                ca_file=str(cert), backoff_s=0.1).options())
        sink.open()
        sink.emit({"id": "ev-1", "type": "zone"})
        assert [r["json"]["id"] for r in receiver.wait(1)] == ["ev-1"]
        sink.close()
        # the system's authorities do not know this receiver: not delivered, and the reason is the certificate
        sink = WebhookEventSink(**WebhookEvents(type="webhook", url=receiver.url, queue=str(tmp_path / "q2.sqlite"),
                                                backoff_s=0.1, drain_s=0.5).options())
        sink.open()
        sink.emit({"id": "ev-2", "type": "zone"})
        deadline = time.monotonic() + 10
        while sink.last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        sink.close()
        assert "CERTIFICATE_VERIFY_FAILED" in (sink.last_error or "") and len(receiver.received) == 1
        out = HttpOutput(**HttpOutputCfg(type="http", url=receiver.url, ca_file=str(cert)).options())
        out.open()
        out.reject({"frame": 3, "verdict": "fail"})
        assert [r["json"].get("frame") for r in receiver.wait(2)][-1] == 3
        out.close()
    with pytest.raises(ValueError, match="ca_file is for an https:// url"):  # the config model refuses it
        HttpOutputCfg(type="http", url="http://127.0.0.1:9/x", ca_file=str(cert))
    with pytest.raises(ConfigError, match="ca_file is for an https:// url"):  # and so does the plugin built from Python
        HttpOutput("http://127.0.0.1:9/x", ca_file=str(cert))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("nope\n")
    with pytest.raises(ConfigError, match="expected PEM certificates"):
        HttpOutput(**HttpOutputCfg(type="http", url="https://127.0.0.1:9/x", ca_file=str(garbage)).options())


def test_a_renewed_certificate_is_served_without_a_restart(tmp_path, caplog):
    import os
    import shutil

    live = tmp_path / "live"
    first_cert, first_key = self_signed(tmp_path / "first", "server")
    second_cert, second_key = self_signed(tmp_path / "second", "server")
    live.mkdir()
    cert, key = live / "cert.pem", live / "key.pem"
    shutil.copy(first_cert, cert)
    shutil.copy(first_key, key)
    server = HttpServer("127.0.0.1", 0, tls=(cert, key))
    server.add_route("GET", "/ok", lambda body, q: (200, "text/plain", b"ok"))
    server.tls.check_every, server.tls._next = 0.1, 0.0  # look at the files every 0.1 s (5 s in service)
    server.start()

    def served() -> bytes:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                return tls.getpeercert(binary_form=True)

    def pem_der(path: Path) -> bytes:
        return ssl.PEM_cert_to_DER_cert(path.read_text())

    try:
        assert served() == pem_der(first_cert)
        # a renewal caught half-written (new certificate, old key): the previous certificate stays, with a warning
        os.replace(shutil.copy(second_cert, live / "cert.tmp"), cert)
        time.sleep(0.3)
        with caplog.at_level("WARNING", logger="edgeship.runtime.tls"):
            assert served() == pem_der(first_cert)
        assert "cannot be used yet (the previous one is kept)" in caplog.text
        os.replace(shutil.copy(second_key, live / "key.tmp"), key)
        time.sleep(0.3)
        served()  # the accept that notices the change
        assert served() == pem_der(second_cert)
        assert _get(server.url + "/ok", second_cert)[:2] == (200, b"ok")
    finally:
        server.stop()
