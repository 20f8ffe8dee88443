"""Bundles: contents, reproducible bytes, config rewriting, the systemd unit, and the CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from edgeship.errors import ConfigError, DeployError, InputError, ModelError
from edgeship.targets.bundle import build_bundle, read_release
from edgeship.targets.systemd import render_unit
from edgeship.targets.wheels import edgeship_wheel, source_tree
from tests.helpers.deploy import deploy_inputs

EDGESHIP = [sys.executable, "-m", "edgeship.cli"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return deploy_inputs(tmp_path_factory)


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def test_bundle_contents_and_checksums(inputs, tmp_path):
    r = build_bundle(inputs["artifact"], "rpi5", tmp_path / "b.tar.gz", source="/dev/video0", edgeship_wheel=inputs["edgeship_wheel"])
    files = _members(r.path)
    assert {"release.json", "run.sh", "agent.py", "SHA256SUMS", "systemd/edgeship.service.in",
            f"model/{inputs['artifact'].name}", "model/digits_f32.manifest.json",
            f"wheels/{inputs['edgeship_wheel'].name}"} <= set(files)
    assert [n for n in files if n.startswith("requirements/")] == ["requirements/py3.11.txt"]  # the Python proven
    assert "gpiozero" in files["requirements/py3.11.txt"].decode() and "lgpio" in files["requirements/py3.11.txt"].decode()
    assert "ai-edge-litert" in files["requirements/py3.11.txt"].decode()
    sums = dict(reversed(line.split("  ", 1)) for line in files["SHA256SUMS"].decode().splitlines())
    assert set(sums) == set(files) - {"SHA256SUMS"}
    assert all(hashlib.sha256(files[n]).hexdigest() == d for n, d in sums.items())
    meta = read_release(r.path)
    assert meta["architecture"] == "aarch64" and meta["format"] == "tflite" and meta["precision"] == "fp32"
    assert "--source" in meta["run"] and "/dev/video0" in files["run.sh"].decode()
    assert meta["cameras"] == ["/dev/video0"] and meta["device_files"] == []  # what the preflight looks for
    with tarfile.open(r.path, "r:gz") as tar:
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in tar)


def test_same_inputs_give_the_same_bytes(inputs, tmp_path):
    a = build_bundle(inputs["artifact"], "generic-x86_64", tmp_path / "a.tar.gz", source="/dev/video0", edgeship_wheel=inputs["edgeship_wheel"])
    b = build_bundle(inputs["artifact"], "generic-x86_64", tmp_path / "b.tar.gz", source="/dev/video0", edgeship_wheel=inputs["edgeship_wheel"])
    assert a.path.read_bytes() == b.path.read_bytes() and a.version == b.version
    c = build_bundle(inputs["artifact"], "generic-x86_64", tmp_path / "c.tar.gz", source="/dev/video1", edgeship_wheel=inputs["edgeship_wheel"])
    assert c.sha256 != a.sha256 and c.version != a.version


def test_edgeship_wheel_is_reproducible(tmp_path, monkeypatch):
    root = source_tree()
    frozen = tmp_path / "src"
    shutil.copytree(root / "edgeship", frozen / "edgeship", ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("setup.cfg", "pyproject.toml", "README.md"):
        if (root / f).exists():
            shutil.copy(root / f, frozen / f)
    monkeypatch.setattr("edgeship.targets.wheels.source_tree", lambda: frozen)
    monkeypatch.setenv("EDGESHIP_CACHE_DIR", str(tmp_path / "cache1"))
    one = edgeship_wheel().read_bytes()
    monkeypatch.setenv("EDGESHIP_CACHE_DIR", str(tmp_path / "cache2"))
    assert edgeship_wheel().read_bytes() == one


def test_config_is_rewritten_to_the_release(inputs, tmp_path):
    cfg = tmp_path / "deploy.yaml"
    cfg.write_text(yaml.safe_dump({"artifact": "/somewhere/else/model.tflite", "source": "/dev/video0",
                                   "sinks": ["jsonl:events.jsonl"],
                                   "server": {"host": "0.0.0.0", "port": 9090, "token": "a-secret-token"}}))
    r = build_bundle(inputs["artifact"], "rpi4", tmp_path / "b.tar.gz", config=cfg, edgeship_wheel=inputs["edgeship_wheel"])
    files = _members(r.path)
    deployed = yaml.safe_load(files["deploy.yaml"])
    assert deployed["artifact"] == f"model/{inputs['artifact'].name}" and deployed["sinks"] == ["jsonl:events.jsonl"]
    meta = json.loads(files["release.json"])
    assert meta["http_port"] == 9090 and meta["run"][:3] == ["run", "--config", "$REL/deploy.yaml"]
    with tarfile.open(r.path) as tar:  # the config holds the dashboard token: not world-readable
        assert tar.getmember("deploy.yaml").mode == 0o600 and tar.getmember("release.json").mode == 0o644
    nohttp = tmp_path / "nohttp.yaml"
    nohttp.write_text(yaml.safe_dump({"artifact": "m.tflite", "source": "0"}))
    with pytest.raises(InputError, match="no HTTP server"):
        build_bundle(inputs["artifact"], "rpi4", tmp_path / "x.tar.gz", config=nohttp, edgeship_wheel=inputs["edgeship_wheel"])


def test_config_is_validated_by_the_runtime_loader(inputs, tmp_path):
    """YAML and TOML, the runtime's own rules and one-line errors; the port comes from the validated config."""
    toml = tmp_path / "deploy.toml"
    (tmp_path / "names.txt").write_text("# classes\n" + "\n".join(str(i) for i in range(10)) + "\n")
    toml.write_text('artifact = "x.tflite"\nsource = "rtsp://cam/s"\nlabels = "names.txt"\n[server]\n')  # empty: 8080
    r = build_bundle(inputs["artifact"], "rpi4", tmp_path / "t.tar.gz", config=toml, edgeship_wheel=inputs["edgeship_wheel"])
    files = _members(r.path)
    assert json.loads(files["release.json"])["http_port"] == 8080
    deployed = yaml.safe_load(files["deploy.yaml"])
    assert deployed["source"] == "rtsp://cam/s" and deployed["labels"] == "model/names.txt"  # the labels travel along
    assert files["model/names.txt"] == (tmp_path / "names.txt").read_bytes()
    with pytest.raises(InputError, match="differs from the config's server.port 8080"):
        build_bundle(inputs["artifact"], "rpi4", tmp_path / "bad.tar.gz", config=toml, http_port=9000,
                     edgeship_wheel=inputs["edgeship_wheel"])
    bad = {
        "model.yaml": ({"model": "x.tflite", "source": "0", "server": {}}, "model: unknown key"),
        "sink.yaml": ({"artifact": "x", "source": "0", "sinks": ["http:0.0.0.0:9090"], "server": {}}, "sinks take jsonl:FILE"),
        "zone.yaml": ({"artifact": "x", "source": "0", "server": {}, "app": {"type": "security", "zones": [
            {"name": "z", "points": [[0, 0], [1, 1]]}]}}, r"app.zones\[0\].points: expected at least 3 points"),
        "token.yaml": ({"artifact": "x", "source": "0", "server": {"host": "0.0.0.0"}}, "token"),
        "port0.yaml": ({"artifact": "x", "source": "0", "server": {"port": 0}}, "needs a fixed port"),
    }
    for name, (data, message) in bad.items():
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        with pytest.raises((InputError, ConfigError), match=message) as e:
            build_bundle(inputs["artifact"], "rpi4", tmp_path / "bad.tar.gz", config=path, edgeship_wheel=inputs["edgeship_wheel"])
        assert "\n" not in str(e.value) and not (tmp_path / "bad.tar.gz").exists()
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    with pytest.raises(ConfigError, match="not a text file"):
        build_bundle(inputs["artifact"], "rpi4", tmp_path / "bad.tar.gz", config=binary, edgeship_wheel=inputs["edgeship_wheel"])


def test_wrong_inputs_are_refused(inputs, tmp_path):
    with pytest.raises(InputError, match="exactly one of"):
        build_bundle(inputs["artifact"], "rpi4", tmp_path / "b.tar.gz", edgeship_wheel=inputs["edgeship_wheel"])
    xml = tmp_path / "m.xml"
    xml.write_text("<net/>")
    (tmp_path / "m.bin").write_bytes(b"\0")
    with pytest.raises(InputError, match="jetson-nano cannot run openvino"):
        build_bundle(xml, "jetson-nano", tmp_path / "b.tar.gz", source="0", edgeship_wheel=inputs["edgeship_wheel"])
    assert not (tmp_path / "b.tar.gz").exists()
    with pytest.raises(InputError, match="m.xml is not a valid OpenVINO IR model"):  # refused here, not on the device
        build_bundle(xml, "generic-x86_64", tmp_path / "b.tar.gz", source="0", edgeship_wheel=inputs["edgeship_wheel"])
    for bad in (b"", b"not a model at all"):
        (tmp_path / "m.tflite").write_bytes(bad)
        with pytest.raises((InputError, ModelError), match="m.tflite is not a valid TFLite model"):
            build_bundle(tmp_path / "m.tflite", "rpi4", tmp_path / "b.tar.gz", source="0", edgeship_wheel=inputs["edgeship_wheel"])
    assert not (tmp_path / "b.tar.gz").exists()
    cut = tmp_path / "cut.tar.gz"
    good = build_bundle(inputs["artifact"], "rpi4", tmp_path / "g.tar.gz", source="0", edgeship_wheel=inputs["edgeship_wheel"])
    cut.write_bytes(good.path.read_bytes()[:-200])
    with pytest.raises(DeployError, match="truncated or corrupt"):
        read_release(cut)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_verifies(inputs, tmp_path):
    r = build_bundle(inputs["artifact"], "rpi5", tmp_path / "b.tar.gz", source="/dev/video0", edgeship_wheel=inputs["edgeship_wheel"])
    root = tmp_path / "opt" / "edgeship"
    (root / "current").mkdir(parents=True)
    (root / "current" / "run.sh").write_text("#!/bin/sh\n")
    unit = tmp_path / "edgeship.service"
    unit.write_text(render_unit(_members(r.path)["systemd/edgeship.service.in"].decode(), str(root)))
    assert "@DEVICE_ROOT@" not in unit.read_text() and f"ExecStart=/bin/sh {root}/current/run.sh" in unit.read_text()
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert proc.returncode == 0 and not (proc.stderr + proc.stdout).strip(), proc.stderr + proc.stdout
    # the check can fail: a typo in a key is reported
    unit.write_text(unit.read_text().replace("CPUWeight=", "CPUWeigth="))
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert "Unknown key 'CPUWeigth'" in proc.stderr


def test_cli_targets_and_bundle(inputs, tmp_path):
    out = json.loads(subprocess.run([*EDGESHIP, "targets", "list", "--json"], capture_output=True, check=True).stdout)
    names = {t["name"] for t in out["targets"]}
    assert {"rpi4", "rpi5", "jetson-nano", "jetson-orin-nano", "intel-x86", "generic-x86_64", "generic-aarch64"} <= names
    show = json.loads(subprocess.run([*EDGESHIP, "targets", "show", "intel-x86", "--json"], capture_output=True, check=True).stdout)
    assert show["format"] == "openvino" and any("openvino" in r for r in show["requirements"]["openvino"])
    bad = subprocess.run([*EDGESHIP, "targets", "show", "toaster"], capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown target 'toaster'" in bad.stderr
    b = subprocess.run([*EDGESHIP, "bundle", str(inputs["artifact"]), "--target", "rpi5", "--source", "/dev/video0",
                        "--edgeship-wheel", str(inputs["edgeship_wheel"]), "--out", str(tmp_path / "x.tar.gz"), "--json"],
                       capture_output=True, text=True)
    assert b.returncode == 0, b.stderr
    assert json.loads(b.stdout)["target"] == "rpi5" and (tmp_path / "x.tar.gz").is_file()
