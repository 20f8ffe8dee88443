"""Many cameras, one model: the config, the fair scheduler, per-camera results and events, faults that stay
local, one server with every camera (health, API, metrics, the grid in a real Chromium), and the CLI."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from edgeship.cli import cli
from edgeship.errors import ConfigError
from edgeship.runtime.apps.deploy import build_deployment
from edgeship.runtime.affinity import cpu_count
from edgeship.runtime.apps.site import box_status
from edgeship.runtime.config import load_config, validate_config
from tests.helpers.chromium import Chromium, chromium_binary
from tests.helpers.demo import demo_dir
from tests.helpers.mjpeg import free_port, wait_port
from tests.helpers.mqtt import Mosquitto, Subscriber, mosquitto_binary

ZONE = {"name": "yard", "points": [[0.5, 0.5], [1, 0.5], [1, 1], [0.5, 1]], "classes": ["square", "triangle"],
        "min_dwell_frames": 2, "cooldown_s": 0}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return demo_dir(tmp_path_factory)


def site(demo: Path, tmp_path: Path, cameras: list[dict], **extra) -> Path:
    cfg = {"artifact": str(demo / "models" / "shapes_int8.tflite"), "threshold": 0.5, "cameras": cameras,
           "app": {"type": "security", "zones": [ZONE], "events": [{"type": "jsonl", "path": "events.jsonl"}]},
           "sinks": ["jsonl:results_{camera}.jsonl"], **extra}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def video(demo: Path, **opts) -> dict:
    return {"uri": str(demo / "videos" / "shapes.mp4"), **opts}


def frames_in(demo: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(demo / "videos" / "shapes.mp4"))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    return n


# ---- the config ----------------------------------------------------------------------------------------------
def test_cameras_inherit_the_app_and_override_it_key_by_key(demo, tmp_path):
    other_zone = {**ZONE, "name": "gate", "points": [[0, 0], [0.5, 0], [0.5, 0.5], [0, 0.5]]}
    cfg = load_config(site(demo, tmp_path, [
        {"name": "door", "source": str(demo / "videos" / "shapes.mp4")},
        {"name": "yard-2", "source": video(demo, max_fps=5, realtime=True), "required": True,
         "app": {"zones": [other_zone], "tracker": {"iou": 0.4}}},
    ]))
    door, yard = cfg.cameras
    assert door.app.camera == "door" and [z.name for z in door.app.zones] == ["yard"]
    assert yard.app.camera == "yard-2" and [z.name for z in yard.app.zones] == ["gate"]  # lists are replaced
    assert yard.app.tracker.iou == 0.4 and yard.app.tracker.enabled is True  # mappings merge key by key
    assert yard.app.events == door.app.events and yard.source.max_fps == 5 and yard.required
    assert cfg.source is None and len(cfg.camera_list) == 2


@pytest.mark.parametrize("cameras, extra, message", [
    ([{"name": "door cam", "source": "x.mp4"}], {}, "cameras[0].name: String should match pattern"),
    ([{"name": "a", "source": "{v}"}, {"name": "a", "source": "{v}"}], {}, "names must be unique, got a more than once"),
    ([{"name": "a", "source": "{v}"}, {"name": "b", "source": "{v}"}], {"sinks": ["jsonl:all.jsonl"]},
     "each file needs {camera} in its name"),
    ([{"name": "a", "source": "{v}"}], {"source": "{v}"}, "not both"),
    ([], {}, "give source: (one camera) or cameras: (several)"),
    ([{"name": "a", "source": "{v}", "app": {"zones": [{"name": "z", "points": [[0, 0], [1, 1]]}]}}], {},
     "cameras[0].app.zones[0].points"),
])
def test_bad_camera_configs_are_one_line_errors(demo, tmp_path, cameras, extra, message):
    v = str(demo / "videos" / "shapes.mp4")
    data = {"artifact": str(demo / "models" / "shapes_int8.tflite"), "cameras": json.loads(json.dumps(cameras).replace("{v}", v)),
            "app": {"type": "security", "zones": [ZONE]}, **{k: (x.replace("{v}", v) if isinstance(x, str) else x) for k, x in extra.items()}}
    with pytest.raises(ConfigError) as e:
        validate_config(data, base=tmp_path, where="site.yaml")
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_box_status_a_dead_camera_degrades_the_box():
    ok = {"status": "ok", "reason": ""}
    assert box_status({"a": ok, "b": ok}, {}) == ("ok", "")
    down = {"a": ok, "b": {"status": "starting", "reason": "no frame processed yet"}}
    status, reason = box_status(down, {"b": {"state": "down", "reason": "cannot open rtsp://x"}})
    assert status == "degraded" and "b: cannot open rtsp://x" in reason
    assert box_status({"a": ok, "b": {"status": "failed", "reason": "GPIO"}}, {})[0] == "failed"
    assert box_status({"a": {"status": "starting"}, "b": {"status": "starting"}}, {})[0] == "starting"


# ---- running -------------------------------------------------------------------------------------------------
def test_three_cameras_one_model_every_frame_each_named(demo, tmp_path):
    n = frames_in(demo)
    cams = [{"name": f"cam{i}", "source": str(demo / "videos" / "shapes.mp4")} for i in range(3)]
    cams[2]["source"] = video(demo, read_ahead=3)
    cfg = load_config(site(demo, tmp_path, cams))
    dep = build_deployment(cfg, handle_signals=False)
    # the cameras share one camera's read-ahead (4 frames: 1 each), unless a camera says otherwise
    assert [lane.pipeline.source._depth for lane in dep.site.lanes] == [1, 1, 3]
    assert {lane.pipeline.source.reader.decode_threads for lane in dep.site.lanes} == {max(1, cpu_count() // 3)}
    summary = dep.run()
    assert summary.stopped_by == "end_of_source" and set(summary.cameras) == {"cam0", "cam1", "cam2"}
    for name, cam in summary.cameras.items():
        assert cam["frames_processed"] == n and cam["camera"] == name and cam["state"] == "done", cam
        rows = [json.loads(line) for line in (tmp_path / f"results_{name}.jsonl").read_text().splitlines()]
        assert len(rows) == n and {r["camera"] for r in rows} == {name} and [r["frame"] for r in rows] == list(range(n))
        assert cam["app"]["events"] >= 1
    assert summary.frames_processed == 3 * n
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert {e["camera"] for e in events} == {"cam0", "cam1", "cam2"}  # one shared events file, each event named
    assert len(events) == sum(c["app"]["events"] for c in summary.cameras.values())


def test_fair_scheduler_a_fast_camera_does_not_starve_slow_ones(demo, tmp_path):
    cams = [{"name": "fast", "source": video(demo, realtime=True, loop=True, max_fps=30)}] + \
           [{"name": f"slow{i}", "source": video(demo, realtime=True, loop=True, max_fps=5)} for i in range(3)]
    dep = build_deployment(load_config(site(demo, tmp_path, cams)), duration=6, handle_signals=False)
    summary = dep.run()
    for i in range(3):
        c = summary.cameras[f"slow{i}"]
        assert c["frames_processed"] >= 0.9 * c["frames_captured"] - 1, c  # nothing of a slow camera is dropped
        assert c["frames_processed"] >= 0.9 * 5 * 6 - 3, c
    assert summary.cameras["fast"]["processed_fps"] > 3 * summary.cameras["slow0"]["processed_fps"]


def test_a_camera_whose_sink_lags_does_not_hold_the_shared_model(demo, tmp_path):
    """One inference worker, three cameras; one camera's sink takes 0.2 s a frame. The worker gives that camera a
    frame only when its output queue has room, so the other two run every frame of their video at full speed
    (waiting on the slow camera's hand-off, they would get about 5 frames a second each)."""
    n = frames_in(demo)

    class SlowSink:
        def open(self, info) -> None:
            pass

        def write(self, frame, result) -> None:
            time.sleep(0.2)

        def close(self) -> None:
            pass

    cams = [{"name": name, "source": str(demo / "videos" / "shapes.mp4")} for name in ("lagging", "a", "b")]
    dep = build_deployment(load_config(site(demo, tmp_path, cams, backend={"workers": 1})), duration=5,
                           handle_signals=False)
    lanes = {lane.name: lane for lane in dep.site.lanes}
    assert dep.site.workers == 1
    lanes["lagging"].pipeline.sinks.append(SlowSink())
    summary = dep.run()
    cams_done = summary.cameras
    assert cams_done["a"]["frames_processed"] == n and cams_done["b"]["frames_processed"] == n, cams_done
    assert cams_done["lagging"]["frames_processed"] <= 5 / 0.2 + 3, cams_done["lagging"]


def test_a_camera_that_never_opens_is_reported_not_fatal_unless_required(demo, tmp_path):
    dead = {"uri": f"rtsp://127.0.0.1:{free_port()}/nothing", "timeout_s": 1}
    cams = [{"name": "ok", "source": video(demo, realtime=True)}, {"name": "dead", "source": dead}]  # plays for seconds
    summary = build_deployment(load_config(site(demo, tmp_path, cams)), handle_signals=False).run()
    assert summary.cameras["ok"]["frames_processed"] >= 0.9 * frames_in(demo)
    assert summary.cameras["dead"]["state"] == "down" and "cannot open" in summary.cameras["dead"]["error"]
    assert summary.cameras["dead"]["frames_processed"] == 0 and summary.source_connected is False
    cams[1]["required"] = True
    (tmp_path / "r").mkdir()
    with pytest.raises(Exception, match="camera dead \\(required\\)"):
        build_deployment(load_config(site(demo, tmp_path / "r", cams)), handle_signals=False).run()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_one_server_every_camera_and_the_grid_in_chromium(demo, tmp_path):
    port = free_port()
    dead = {"uri": f"rtsp://127.0.0.1:{free_port()}/nothing", "timeout_s": 1}
    cams = [{"name": n, "source": video(demo, realtime=True, loop=True)} for n in ("door", "yard")] + \
           [{"name": "roof", "source": dead}]
    dep = build_deployment(load_config(site(demo, tmp_path, cams, server={"port": port, "max_fps": 10})),
                           duration=60, handle_signals=False)
    out: dict = {}
    runner = threading.Thread(target=lambda: out.update(dep.run().to_dict()))
    runner.start()
    try:
        wait_port(port)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status, body = get(base + "/health")
            h = json.loads(body)
            if h["cameras"]["door"]["status"] == "ok" and h["cameras"]["yard"]["status"] == "ok":
                break
            time.sleep(0.3)
        assert status == 503 and h["status"] == "degraded" and "roof" in h["reason"], h  # one dead camera: degraded
        assert h["cameras"]["roof"]["state"] == "down" and h["cameras"]["door"]["camera"] == "door"
        cams_api = json.loads(get(base + "/api/cameras")[1])["cameras"]
        assert set(cams_api) == {"door", "yard", "roof"} and cams_api["door"]["app"]["app"] == "security"
        status, body = get(base + "/cameras/yard/api/status")
        assert status == 200 and json.loads(body)["camera"] == "yard"
        metrics = get(base + "/metrics")[1].decode()
        assert 'camera="door"' in metrics and 'camera="yard"' in metrics
        assert metrics.count("# TYPE edgeship_frames_processed_total counter") == 1
        if chromium_binary() is not None:
            with Chromium() as browser:
                browser.open(base + "/")
                browser.wait_for("document.querySelectorAll('section.cam').length === 3", timeout=20)
                browser.wait_for("Number(document.body.dataset.polls) >= 2", timeout=20)
                states = browser.eval("JSON.stringify([...document.querySelectorAll('section.cam')].map(s => [s.dataset.camera, s.dataset.status]))")
                assert dict(json.loads(states)) == {"door": "ok", "yard": "ok", "roof": "starting"}
                assert browser.eval("document.getElementById('health').textContent") == "degraded"
                # live views decode: the first tile's image has the camera's size
                browser.wait_for("document.querySelector('section.cam img').naturalWidth === 320", timeout=20)
                browser.open(base + "/cameras/door/")  # one click to one camera's own dashboard
                browser.wait_for("Number(document.body.dataset.polls) >= 1", timeout=20)
                assert browser.eval("document.getElementById('app-title').textContent") == "security"
    finally:
        dep.site.stop()
        runner.join(30)
    assert out["cameras"]["door"]["frames_processed"] > 0 and out["cameras"]["roof"]["state"] == "down"


@pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto not installed (scripts/system-deps.sh)")
def test_events_reach_mqtt_per_camera_topic(demo, tmp_path):
    with Mosquitto(tmp_path / "mq") as broker, Subscriber(broker.port, "site/+/events") as sub:
        cams = [{"name": n, "source": str(demo / "videos" / "shapes.mp4")} for n in ("east", "west")]
        path = site(demo, tmp_path, cams)
        data = yaml.safe_load(path.read_text())
        data["app"]["events"] = [{"type": "mqtt", "broker": f"127.0.0.1:{broker.port}", "topic": "site/{camera}/events",
                                  "snapshots": False, "queue": "mqtt.sqlite"}]
        path.write_text(yaml.safe_dump(data))
        summary = build_deployment(load_config(path), handle_signals=False).run()
        expected = sum(c["app"]["events"] for c in summary.cameras.values())
        got = sub.wait(expected, timeout=15)
    assert len(got) == expected >= 2
    for topic, payload in got:
        assert topic == f"site/{json.loads(payload)['camera']}/events"
    assert {t for t, _ in got} == {"site/east/events", "site/west/events"}


def test_cli_repeated_sources(demo, tmp_path):
    v = str(demo / "videos" / "shapes.mp4")
    out = tmp_path / "r_{camera}.jsonl"
    r = CliRunner().invoke(cli, ["run", str(demo / "models" / "shapes_int8.tflite"), "--source", f"a={v}",
                                 "--source", f"b={v}", "--sink", f"jsonl:{out}", "--max-frames", "10", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert set(s["cameras"]) == {"a", "b"} and all(c["frames_processed"] == 10 for c in s["cameras"].values())
    assert len((tmp_path / "r_a.jsonl").read_text().splitlines()) == 10
    r = CliRunner().invoke(cli, ["run", str(demo / "models" / "shapes_int8.tflite"), "--source", v, "--source", v])
    assert r.exit_code != 0 and "NAME=SOURCE" in r.output
