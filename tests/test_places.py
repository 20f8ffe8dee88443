"""Paths that mean one thing (issue 24): which paths of a deploy config are the workstation's (packed into
the bundle), which are the device's (``device:``), and where outputs land (a release writes under
DEVICE_ROOT/data, never inside releases/)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import yaml

from edgeship.errors import ConfigError, InputError
from edgeship.runtime.config import load_config, validate_config
from edgeship.runtime.places import data_dir_of, device_path, output_path, split_device, under
from edgeship.targets.bundle import build_bundle, read_release
from edgeship.targets.flash import preflight_problems
from tests.helpers.deploy import deploy_inputs


def test_output_rules():
    assert under(("..", "..", "out", "x.jsonl")) == ("out", "x.jsonl")
    assert under(("a", "..", "..", "b")) == ("b",) and under((".",)) == ()
    assert output_path("../out/e.jsonl", base="/w/examples", data=None) == Path("/w/out/e.jsonl")
    assert output_path("../out/e.jsonl", base="/r/releases/v1", data="/r/data") == Path("/r/data/out/e.jsonl")
    assert output_path("/var/log/e.jsonl", base="/x", data="/r/data") == Path("/var/log/e.jsonl")
    assert split_device("device:/opt/clip.mp4") == (True, "/opt/clip.mp4") and split_device("clip.mp4") == (False, "clip.mp4")
    assert device_path("clips/a.mp4", base="/r/releases/v1", data="/r/data") == Path("/r/data/clips/a.mp4")
    assert device_path("/srv/a.mp4", base="/x", data=None) == Path("/srv/a.mp4")


def _release(root: Path, version: str = "v1") -> Path:
    rel = root / "releases" / version
    (rel / "model").mkdir(parents=True)
    (rel / "model" / "m.tflite").write_bytes(b"x")
    (rel / "media").mkdir()
    (rel / "media" / "clip.mp4").write_bytes(b"")
    (rel / "release.json").write_text(json.dumps({"version": version}))
    return rel


def test_a_release_writes_its_outputs_under_the_data_folder(tmp_path):
    rel = _release(tmp_path / "edgeship")
    data = tmp_path / "edgeship" / "data"
    cfg = {"artifact": "model/m.tflite", "source": "media/clip.mp4", "sinks": ["jsonl:../security-out/results.jsonl"],
           "app": {"type": "industrial", "counters": "../industrial-out/counters.sqlite", "rejects": {"dir": "rejects"},
                   "events": [{"type": "jsonl", "path": "../industrial-out/inspections.jsonl"},
                              {"type": "webhook", "url": "http://127.0.0.1:9/e", "queue": "../q/webhook.sqlite"}]}}
    (rel / "deploy.yaml").write_text(yaml.safe_dump(cfg))
    assert data_dir_of(rel) == data
    c = load_config(rel / "deploy.yaml")
    assert c.sinks == [f"jsonl:{data / 'security-out' / 'results.jsonl'}"]
    assert c.app.counters == data / "industrial-out" / "counters.sqlite" and c.app.rejects.dir == data / "rejects"
    assert [e.path if e.type == "jsonl" else e.queue for e in c.app.events] == [
        data / "industrial-out" / "inspections.jsonl", data / "q" / "webhook.sqlite"]
    assert c.artifact == rel / "model" / "m.tflite" and c.source.uri == str(rel / "media" / "clip.mp4")
    # the same file outside a release keeps resolving against its folder (the workstation's examples/)
    (rel / "release.json").unlink()
    assert load_config(rel / "deploy.yaml").sinks == [f"jsonl:{tmp_path / 'edgeship' / 'releases' / 'security-out' / 'results.jsonl'}"]


def test_device_paths_are_checked_on_the_device_only(tmp_path):
    rel = _release(tmp_path / "edgeship")
    cfg = {"artifact": "model/m.tflite", "source": "device:clips/line3.mp4"}
    # on the workstation, for a device: not looked for
    v = validate_config(cfg, base=rel, where="w", for_device=True)
    assert v.source.uri == "device:clips/line3.mp4"
    # on the device: relative to the data folder, and checked there
    with pytest.raises(ConfigError, match="file not found on this device: .*data/clips/line3.mp4"):
        validate_config(cfg, base=rel, where="d.yaml", data_dir=data_dir_of(rel))
    clip = tmp_path / "edgeship" / "data" / "clips" / "line3.mp4"
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"")
    assert validate_config(cfg, base=rel, where="d", data_dir=data_dir_of(rel)).source.uri == str(clip)
    with pytest.raises(ConfigError, match="device: needs a path"):
        validate_config({**cfg, "source": "device:"}, base=rel, where="d")
    # a missing workstation file says how to name a device file
    with pytest.raises(ConfigError, match=r"file not found: .*nope.mp4 \(a file that is only on the device: write device:nope.mp4\)"):
        validate_config({**cfg, "source": "nope.mp4"}, base=rel, where="w", for_device=True)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return deploy_inputs(tmp_path_factory)


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def test_bundle_packs_a_workstation_clip_and_leaves_device_files(inputs, tmp_path):
    conf = tmp_path / "examples"
    conf.mkdir()
    (conf / "deploy.yaml").write_text(yaml.safe_dump({
        "artifact": "ignored.tflite", "source": f"../{inputs['video'].name}", "task": "classify",
        "sinks": ["jsonl:../out/results.jsonl"], "server": {"port": 8123}}))
    (tmp_path / inputs["video"].name).write_bytes(inputs["video"].read_bytes())
    b = build_bundle(inputs["artifact"], "rpi5", tmp_path / "b.tar.gz", config=conf / "deploy.yaml",
                     edgeship_wheel=inputs["edgeship_wheel"])
    files = _members(b.path)
    assert files[f"media/{inputs['video'].name}"] == inputs["video"].read_bytes()
    shipped = yaml.safe_load(files["deploy.yaml"])
    assert shipped["source"] == {"uri": f"media/{inputs['video'].name}", "loop": True, "realtime": True}
    assert files["deploy.yaml"].startswith(b"# Written by edgeship bundle") and b"DEVICE_ROOT/data" in files["deploy.yaml"]
    meta = read_release(b.path)
    assert meta["device_files"] == [] and meta["cameras"] == []  # a clip needs no camera: no camera warning
    # a file only on the device travels as a name; the preflight looks for it there
    b2 = build_bundle(inputs["artifact"], "rpi5", tmp_path / "b2.tar.gz", source="device:/opt/edgeship/data/line3.mp4",
                      edgeship_wheel=inputs["edgeship_wheel"])
    meta = read_release(b2.path)
    assert meta["device_files"] == ["/opt/edgeship/data/line3.mp4"] and not any(n.startswith("media/") for n in _members(b2.path))
    facts = {"architecture": "aarch64", "python": "3.11.2", "glibc": "2.36", "free_mb": 5000, "has_venv_module": True,
             "systemd": False, "root_user": True, "init": "none", "device_files": {"/opt/edgeship/data/line3.mp4": False}}
    [problem] = preflight_problems(meta, facts, size_mb=1, init="auto")
    assert "reads /opt/edgeship/data/line3.mp4 on the device" in problem and "copy it there first" in problem
    facts["device_files"] = {"/opt/edgeship/data/line3.mp4": True}
    assert preflight_problems(meta, facts, size_mb=1, init="auto") == []
    # a --source clip on this machine is packed and looped like a camera
    b3 = build_bundle(inputs["artifact"], "rpi5", tmp_path / "b3.tar.gz", source=str(inputs["video"]),
                      edgeship_wheel=inputs["edgeship_wheel"])
    run_sh = _members(b3.path)["run.sh"].decode()
    assert f'"${{REL}}"/media/{inputs["video"].name}' in run_sh and "--loop" in run_sh and "--realtime" in run_sh
    with pytest.raises((ConfigError, InputError), match="--source: file not found.*write device:"):
        build_bundle(inputs["artifact"], "rpi5", tmp_path / "b4.tar.gz", source=str(tmp_path / "missing.mp4"),
                     edgeship_wheel=inputs["edgeship_wheel"])
    assert not (tmp_path / "b4.tar.gz").exists()
