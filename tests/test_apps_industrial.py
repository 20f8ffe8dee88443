"""Industrial inspection end to end with the digits CNN (trained in the session, int8 TFLite) on the
belt video: pass/fail, counters persisted across restarts, failed frames saved, `edgeship stats`,
external triggers over HTTP and MQTT, reject signals to MQTT and HTTP outputs."""

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
from edgeship.runtime.apps.deploy import build_deployment, run_config
from edgeship.runtime.config import load_config
from tests.helpers.demo import demo_dir
from tests.helpers.mjpeg import free_port, wait_port
from tests.helpers.mqtt import Mosquitto, Subscriber, mosquitto_binary
from tests.helpers.webhook import WebhookReceiver


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return demo_dir(tmp_path_factory)


def write_config(path: Path, demo: Path, **app) -> Path:
    cfg = {
        "artifact": str(demo / "models" / "digits_int8.tflite"),
        "source": str(demo / "videos" / "belt.mp4"),
        "task": "classify",
        "app": {"type": "industrial", "counters": "counters.sqlite",
                "inspect": {"fail_classes": ["7", "8", "9"], "min_score": 0.6},
                "rejects": {"dir": "rejects", "quota_mb": 20},
                "events": [{"type": "jsonl", "path": "inspections.jsonl"}], **app},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_every_part_judged_counters_persist_and_stats(demo, tmp_path):
    cfg = write_config(tmp_path / "deploy.yaml", demo, outputs=[{"type": "gpio", "pin": 17}])
    labels = json.loads((demo / "videos" / "belt.json").read_text())["labels"]
    first = run_config(cfg, handle_signals=False)
    records = [json.loads(x) for x in (tmp_path / "inspections.jsonl").read_text().splitlines()]
    assert len(records) == len(labels) == first.app["counters"]["total"]
    # the int8 digits model reads the real handwritten digits on the belt
    correct = sum(r["label"] == str(y) for r, y in zip(sorted(records, key=lambda r: r["frame"]), labels))
    assert correct / len(labels) >= 0.85
    fails = [r for r in records if r["verdict"] == "fail"]
    expected_fail = sum(str(y) in ("7", "8", "9") for y in labels)
    assert abs(len(fails) - expected_fail) <= 0.15 * len(labels)
    for r in fails:  # every failed frame is kept for review
        assert Path(r["image"]).parent == tmp_path / "rejects" and Path(r["image"]).read_bytes()[:2] == b"\xff\xd8"
        assert r["label"] in ("7", "8", "9") or r["reason"].startswith("uncertain")
    assert len(list((tmp_path / "rejects").glob("*.jpg"))) == len(fails)
    c = first.app["counters"]
    assert c["fail"] == len(fails) and c["pass"] + c["fail"] == c["total"]
    assert sum(v["total"] for v in c["per_class"].values()) == c["total"]
    gpio = first.app["outputs"][0]
    assert gpio["type"] == "gpio" and gpio["available"] is False and gpio["signals"] == 0  # no gpiozero here

    second = run_config(cfg, handle_signals=False)  # a restart keeps counting
    assert second.app["counters"]["total"] == 2 * len(labels)
    assert second.app["counters"]["fail"] == 2 * len(fails)

    res = CliRunner().invoke(cli, ["stats", str(tmp_path / "counters.sqlite"), "--json"])
    assert res.exit_code == 0, res.output
    st = json.loads(res.output)
    assert st["total"] == 2 * len(labels) and st["fail"] == 2 * len(fails)
    assert sum(r["total"] for r in st["per_hour"]) == st["total"]
    assert st["yield"] == pytest.approx(1 - len(fails) / len(labels), abs=1e-6)
    text = CliRunner().invoke(cli, ["stats", str(tmp_path / "counters.sqlite"), "--hours", "2"])
    assert text.exit_code == 0 and "yield" in text.output and f"{100 * st['yield']:.1f}%" in text.output
    bad = CliRunner().invoke(cli, ["stats", str(tmp_path / "missing.sqlite")])
    assert bad.exit_code == 1 and "does not exist" in bad.output


def test_an_output_that_cannot_work_fails_the_health_check_unless_optional(demo, tmp_path):
    """No GPIO library here: the gpio output says why, and a running deployment's /health answers 503 "failed"
    with that reason; marked optional, the same output is skipped and /health is 200 "ok"."""
    for optional, want in ((False, 503), (True, 200)):
        port = free_port()
        path = write_config(tmp_path / f"d{optional}.yaml", demo, outputs=[{"type": "gpio", "pin": 17, "optional": optional}])
        cfg = yaml.safe_load(path.read_text())
        cfg.update(source={"uri": cfg["source"], "loop": True, "realtime": True}, server={"port": port}, duration=6)
        path.write_text(yaml.safe_dump(cfg))
        done = threading.Thread(target=run_config, args=(path,), kwargs={"handle_signals": False})
        done.start()
        try:
            wait_port(port)
            deadline, answer = time.monotonic() + 5, None
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                        code, answer = r.status, json.loads(r.read())
                except urllib.error.HTTPError as e:
                    code, answer = e.code, json.loads(e.read())
                if answer["frames_processed"]:
                    break
                assert answer["status"] == "starting" and "no frame processed yet" in answer["reason"]
                time.sleep(0.05)
            assert code == want and answer["frames_processed"] > 0
            if optional:
                assert answer["status"] == "ok" and answer["reason"] == ""
            else:
                assert answer["status"] == "failed"
                assert answer["reason"].startswith("reject output gpio pin 17 cannot work (gpiozero: ModuleNotFoundError")
        finally:
            done.join(30)


@pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto not installed (scripts/system-deps.sh)")
def test_external_triggers_and_reject_outputs(demo, tmp_path):
    port = free_port()
    with Mosquitto(tmp_path / "broker") as broker, Subscriber(broker.port, "line1/#") as sub, WebhookReceiver() as plc:
        cfg = write_config(
            tmp_path / "deploy.yaml", demo,
            inspect={"pass_classes": ["__none__"]},  # nothing passes: every inspection is a reject
            trigger={"mode": "external", "mqtt": {"broker": f"127.0.0.1:{broker.port}", "topic": "line1/trigger"}},
            outputs=[{"type": "mqtt", "broker": f"127.0.0.1:{broker.port}", "topic": "line1/reject"},
                     {"type": "http", "url": plc.url}],
        )
        data = yaml.safe_load(cfg.read_text())
        data["source"] = {"uri": data["source"], "loop": True, "realtime": True}
        data["server"] = {"port": port}
        cfg.write_text(yaml.safe_dump(data))
        dep = build_deployment(load_config(cfg), duration=60, handle_signals=False)
        out: dict = {}
        runner = threading.Thread(target=lambda: out.update(dep.run().to_dict()))
        runner.start()
        try:
            wait_port(port)
            for part in ("A1", "A2", "A3"):
                req = urllib.request.Request(f"http://127.0.0.1:{port}/trigger", data=json.dumps({"id": part}).encode(),
                                             method="POST")
                with urllib.request.urlopen(req, timeout=5) as resp:
                    assert resp.status == 202
                time.sleep(0.3)
            deadline = time.monotonic() + 10
            while not dep.app.trigger.subscribed and time.monotonic() < deadline:
                time.sleep(0.05)
            sub.publish("line1/trigger", json.dumps({"id": "M1"}))
            sub.publish("line1/trigger", b"")
            deadline = time.monotonic() + 15
            while dep.app.session["total"] < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
            rejects = sub.wait(5 + 2, timeout=10)  # 2 trigger messages + 5 rejects on line1/#
            plc_posts = plc.wait(5, timeout=10)
        finally:
            dep.pipeline.stop()
            runner.join(30)
    assert out["app"]["session"] == {"total": 5, "pass": 0, "fail": 5}
    assert out["frames_skipped_gate"] > 0  # frames nobody asked for are not inspected
    records = [json.loads(x) for x in (tmp_path / "inspections.jsonl").read_text().splitlines()]
    assert [r["tag"] for r in records][:4] == ["A1", "A2", "A3", "M1"] and records[4]["tag"] is None
    reject_msgs = [json.loads(p) for t, p in rejects if t == "line1/reject"]
    assert sorted(m["id"] for m in reject_msgs) == sorted(r["id"] for r in records)
    assert sorted(p["json"]["id"] for p in plc_posts) == sorted(r["id"] for r in records)
    assert out["app"]["trigger"]["received"] == 5
