"""Robot feed end to end: the newest detections published at a fixed rate over UDP and GET /state,
with capture timestamp and age, from a camera-like (real-time, one-slot) source."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from edgeship.runtime.apps.deploy import build_deployment
from edgeship.runtime.config import load_config
from tests.helpers.demo import demo_dir
from tests.helpers.mjpeg import free_port, wait_port


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return demo_dir(tmp_path_factory)


def test_robot_publishes_latest_state_at_fixed_rate(demo, tmp_path):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.2)
    port = free_port()
    cfg = tmp_path / "robot.yaml"
    cfg.write_text(yaml.safe_dump({
        "artifact": str(demo / "models" / "shapes_int8.tflite"),
        "source": {"uri": str(demo / "videos" / "shapes.mp4"), "loop": True},
        "threshold": 0.5,
        "app": {"type": "robot", "rate_hz": 20, "stale_ms": 250, "udp": [f"127.0.0.1:{udp.getsockname()[1]}"]},
        "server": {"port": port, "dashboard": False},
    }))
    dep = build_deployment(load_config(cfg), duration=3.0, handle_signals=False)
    assert dep.pipeline.source.mode == "latest"  # robot default: one-slot live buffer, even for a file
    out: dict = {}
    runner = threading.Thread(target=lambda: out.update(dep.run().to_dict()))
    runner.start()
    states, http_state = [], None
    try:
        wait_port(port)
        t_end = time.monotonic() + 2.5
        while time.monotonic() < t_end:
            try:
                data, _ = udp.recvfrom(65536)
                states.append((time.monotonic(), json.loads(data)))
            except socket.timeout:
                pass
            if http_state is None and len(states) > 10:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/state", timeout=5) as resp:
                    http_state = json.loads(resp.read())
        no_page = urllib.request.urlopen(f"http://127.0.0.1:{port}/static/app.js", timeout=5)
    except urllib.error.HTTPError as e:
        no_page = e
    finally:
        runner.join(30)
        udp.close()
    assert no_page.code == 404  # dashboard: false (only /state, /health, /metrics, /stream.mjpg, /api/status)
    live = [s for _, s in states if s["result"] is not None]
    assert len(live) >= 25  # ~20 Hz over ~2.5 s
    seqs = [s["seq"] for _, s in states]
    assert seqs == sorted(seqs)
    gaps = [b[0] - a[0] for a, b in zip(states, states[1:])]
    assert 0.03 < sorted(gaps)[len(gaps) // 2] < 0.08  # median period ~50 ms
    fresh = [s for s in live if not s["stale"]]
    assert len(fresh) >= 0.8 * len(live)
    for s in live:
        assert s["age_ms"] == pytest.approx((s["t_publish"] - s["t_capture"]) * 1000, abs=0.05)
        assert s["stale"] == (s["age_ms"] > 250)
        assert s["result"]["task"] == "detect" and isinstance(s["result"]["detections"], list)
    assert any(d["label"] in ("square", "circle") for s in live for d in s["result"]["detections"])
    assert http_state is not None and http_state["result"] is not None and "age_ms" in http_state
    assert out["app"]["published"] >= len(states) and out["task"] == "detect"
