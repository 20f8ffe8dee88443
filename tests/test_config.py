"""Deployment config: validation errors name the key's path (one line, exit 1), relative paths,
TOML, and the examples run as they are once the demo data sits in ./quickstart-out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from edgeship.cli import cli
from edgeship.errors import ConfigError
from edgeship.records import RunSummary
from edgeship.runtime.config import key_path, load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def files(tmp_path) -> Path:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.tflite").write_bytes(b"not checked here")
    (tmp_path / "clip.mp4").write_bytes(b"")
    return tmp_path


def base(**extra) -> dict:
    return {"artifact": "models/m.tflite", "source": "clip.mp4", "task": "detect", **extra}


def security(**zone) -> dict:
    z = {"name": "door", "points": [[0, 0], [1, 0], [1, 1]], **zone}
    return {"type": "security", "zones": [z]}


def error_of(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    return str(e.value)


def test_valid_config_resolves_paths_against_its_folder(files):
    cfg_dir = files / "conf"
    cfg_dir.mkdir()
    p = cfg_dir / "deploy.yaml"
    p.write_text(yaml.safe_dump(base(artifact="../models/m.tflite", source="../clip.mp4", app=security(),
                                     sinks=["jsonl:out/results.jsonl"])))
    cfg = load_config(p)
    assert cfg.artifact == files / "models" / "m.tflite"
    assert cfg.source.uri == str(files / "clip.mp4") and cfg.source.loop is False
    assert cfg.sinks == [f"jsonl:{cfg_dir / 'out' / 'results.jsonl'}"]
    assert cfg.app.type == "security" and cfg.app.zones[0].min_dwell_frames == 1
    # URLs and camera indexes are not files
    p.write_text(yaml.safe_dump(base(artifact="../models/m.tflite", source="rtsp://10.0.0.5/stream")))
    assert load_config(p).source.uri == "rtsp://10.0.0.5/stream"
    p.write_text(yaml.safe_dump(base(artifact="../models/m.tflite", source=0)))
    assert load_config(p).source.uri == "0"


@pytest.mark.parametrize("data, message", [
    (base(app=security(points=[[0, 0], [1, 1]])), "app.zones[0].points: expected at least 3 points, got 2"),
    (base(app=security(min_scor=0.3)), "app.zones[0].min_scor: unknown key"),
    (base(app=security(min_dwell_frames="three")), "app.zones[0].min_dwell_frames: Input should be a valid integer"),
    (base(app=security(min_score=1.5)), "app.zones[0].min_score: Input should be less than or equal to 1"),
    (base(artifact="models/missing.tflite"), "artifact: file not found: "),
    (base(source="missing.mp4"), "source.uri: file not found: "),
    (base(app={"type": "parking"}), "app: type must be one of 'security', 'industrial', 'robot', got 'parking'"),
    (base(app={"type": "industrial"}), "app.counters: required key is missing"),
    (base(app={"type": "industrial", "counters": "c.db", "trigger": {"mode": "interval"}}),
     "app.trigger: mode 'interval' needs interval_ms"),
    (base(app={"type": "industrial", "counters": "c.db", "trigger": {"mode": "interval", "interval_ms": float("nan")}}),
     "app.trigger.interval_ms: Input should be a finite number, got nan"),
    (base(app={"type": "industrial", "counters": "c.db", "inspect": {"uncertain": "maybe"}}),
     "app.inspect.uncertain: Input should be 'pass' or 'fail'"),
    (base(app={"type": "industrial", "counters": "c.db", "inspect": {"pass_classes": ["a"], "fail_classes": ["b"]}}),
     "app.inspect: give pass_classes or fail_classes, not both"),
    (base(app={"type": "security", "zones": [{"name": "a", "points": [[0, 0], [1, 0], [1, 1]]}],
               "events": [{"type": "webhook", "url": "http://x/y"}]}), "app.events[0].queue: required key is missing"),
    (base(app={"type": "security", "zones": [{"name": "a", "points": [[0, 0], [1, 0], [1, 1]]}],
               "events": [{"type": "mqtt", "broker": "host:notaport"}]}), "app.events[0].broker: MQTT broker must look like host:port"),
    (base(app={"type": "robot", "udp": ["nowhere"]}), "app.udp: UDP target must look like host:port"),
    (base(server={"host": "0.0.0.0", "port": 8080}), "server.token: the HTTP server on 0.0.0.0 needs a token"),
    (base(sinks=["http:8080"]), "sinks: sinks take jsonl:FILE | jsonl-raw:FILE | npz:FILE | video:FILE"),
    (base(typo=1), "typo: unknown key"),
    ({"source": "clip.mp4"}, "artifact: required key is missing"),
])
def test_errors_name_the_key_path(files, data, message):
    msg = error_of(files / "deploy.yaml", data)
    assert msg.startswith(f"{files / 'deploy.yaml'}: {message}"), msg
    assert "\n" not in msg


def test_toml_and_bad_syntax(files):
    p = files / "deploy.toml"
    p.write_text('artifact = "models/m.tflite"\nsource = "clip.mp4"\n[app]\ntype = "robot"\nrate_hz = 50\n')
    assert load_config(p).app.rate_hz == 50
    p.write_text('artifact = "models/m.tflite\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
    y = files / "bad.yaml"
    y.write_text("artifact: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(y)
    y.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(y)


def test_key_path_formatting():
    assert key_path(("app", "security", "zones", 0, "points")) == "app.zones[0].points"
    assert key_path(("app", "security", "events", 1, "webhook", "url")) == "app.events[1].url"
    assert key_path(()) == "(top level)"


def test_cli_prints_one_line_and_exits_1(files):
    p = files / "deploy.yaml"
    p.write_text(yaml.safe_dump(base(app=security(points=[[0, 0]]))))
    res = CliRunner().invoke(cli, ["run", "--config", str(p)])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines == [f"error: {p}: app.zones[0].points: expected at least 3 points, got 1"]
    res = CliRunner().invoke(cli, ["run", "--config", str(p), "model.tflite"])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "--config names the artifact" in res.output
    res = CliRunner().invoke(cli, ["run", "--config", str(files / "nope.yaml")])
    assert res.exit_code == 1 and "does not exist" in res.output


@pytest.mark.parametrize("name", ["security", "industrial", "robot", "site"])
def test_examples_run_as_they_are_on_the_demo_data(name, tmp_path, tmp_path_factory):
    from tests.helpers.demo import demo_dir
    from tests.helpers.mjpeg import free_port

    demo = demo_dir(tmp_path_factory)
    (tmp_path / "quickstart-out").symlink_to(demo, target_is_directory=True)
    (tmp_path / "examples").mkdir()
    text = (ROOT / "examples" / f"{name}.yaml").read_text()
    for port in ("8080", "8081", "8082", "9870"):  # other test runs may hold the example's ports
        text = text.replace(f"port: {port}", f"port: {free_port()}").replace(f":{port}\"", f":{free_port()}\"")
    (tmp_path / "examples" / f"{name}.yaml").write_text(text)
    duration = {"robot": ["--duration", "2"], "site": ["--duration", "6"]}.get(name, [])
    args = ["run", "--config", f"examples/{name}.yaml", "--json"] + duration
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)  # from the repository root, as the README says
    try:
        res = CliRunner().invoke(cli, args)
    finally:
        os.chdir(cwd)
    assert res.exit_code == 0, res.output
    summary = RunSummary.from_dict(json.loads(res.stdout))
    assert summary.frames_processed > 0 and summary.app["app"] == {"site": "security"}.get(name, name)
    if name == "security":
        assert summary.app["events_per_zone"] == {"yard": 1, "fence": 1}
        assert len((tmp_path / "security-out" / "events.jsonl").read_text().splitlines()) == 2
    if name == "industrial":
        assert summary.app["counters"]["total"] == summary.frames_processed
    if name == "robot":
        assert summary.app["published"] >= 20
    if name == "site":  # three cameras, one model: each ran, the capped ones at their cap
        assert set(summary.cameras) == {"door", "yard", "dock"}
        for cam in summary.cameras.values():
            assert cam["frames_processed"] > 0, cam
        assert summary.cameras["yard"]["frames_processed"] <= 6 * 5 + 2
        events = [json.loads(line) for line in (tmp_path / "site-out" / "events.jsonl").read_text().splitlines()]
        assert events and {e["camera"] for e in events} <= {"door", "yard", "dock"}
        assert (tmp_path / "site-out" / "results_door.jsonl").exists()


def test_run_flags_build_the_same_deploy_config_as_a_file(art, tmp_path):
    """`edgeship run`'s flags are validated as the deployment config they stand for: same object as the YAML."""
    import cv2
    import numpy as np
    import yaml

    from edgeship.commands.run import deploy_config, run

    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((32, 32, 3), np.uint8))
    args = [str(art["tflite_int8"]), "--source", str(folder), "--task", "classify", "--threshold", "0.2", "--threads", "1",
            "--loop", "--sink", f"jsonl:{tmp_path / 'r.jsonl'}", "--sink", "http:0", "--scale", "0.5", "--mean", "1,1,1",
            "--no-pin", "--max-frames", "7"]
    ctx = run.make_context("run", list(args))
    params = dict(ctx.params)
    sinks = params.pop("sinks")
    for k in ("artifact", "sources", "config", "as_json"):
        params.pop(k)
    from_flags = deploy_config(str(art["tflite_int8"]), str(folder), sinks, params)
    doc = {"artifact": str(art["tflite_int8"]), "task": "classify", "threshold": 0.2, "max_frames": 7,
           "source": {"uri": str(folder), "loop": True}, "backend": {"threads": 1, "pin": False},
           "input_spec": {"scale": 0.5, "mean": [1, 1, 1]}, "sinks": [f"jsonl:{tmp_path / 'r.jsonl'}"],
           "server": {"port": 0}}
    (tmp_path / "deploy.yaml").write_text(yaml.safe_dump(doc))
    assert from_flags == load_config(tmp_path / "deploy.yaml")
    assert from_flags.run_options().backend.pin is False and from_flags.run_options().input_spec.scale == 0.5
