"""The live dashboard in a real headless Chromium: the page loads, the annotated stream receives
frames, the metrics and the app panel update; a token guards every route off loopback."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from edgeship.errors import ConfigError
from edgeship.runtime.apps.dashboard import DashboardSink
from edgeship.runtime.apps.deploy import build_deployment
from edgeship.runtime.config import load_config
from tests.helpers.chromium import Chromium, chromium_binary
from tests.helpers.demo import demo_dir
from tests.helpers.mjpeg import free_port, wait_port

TOKEN = "s3cret-token-42"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return demo_dir(tmp_path_factory)


@pytest.fixture()
def running(demo, tmp_path):
    """A security deployment on a looping camera-like video, served on 0.0.0.0 with a token."""
    port = free_port()
    cfg = tmp_path / "deploy.yaml"
    cfg.write_text(yaml.safe_dump({
        "artifact": str(demo / "models" / "shapes_int8.tflite"),
        "source": {"uri": str(demo / "videos" / "shapes.mp4"), "loop": True, "realtime": True},
        "threshold": 0.5,
        "app": {"type": "security", "zones": [{"name": "yard", "points": [[0.5, 0.5], [1, 0.5], [1, 1], [0.5, 1]],
                                                "classes": ["square"], "min_dwell_frames": 2, "cooldown_s": 0}],
                "motion": {}, "events": [{"type": "jsonl", "path": "events.jsonl"}]},
        "server": {"host": "0.0.0.0", "port": port, "token": TOKEN, "max_fps": 15},
    }))
    dep = build_deployment(load_config(cfg), duration=90, handle_signals=False)
    out: dict = {}
    runner = threading.Thread(target=lambda: out.update(dep.run().to_dict()))
    runner.start()
    wait_port(port)
    yield port, dep, out
    dep.pipeline.stop()
    runner.join(30)


def get(url: str, **headers: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.skipif(chromium_binary() is None, reason="chromium not installed (scripts/system-deps.sh)")
def test_dashboard_in_headless_chromium(running):
    port, dep, out = running
    base = f"http://127.0.0.1:{port}"
    # every route needs the token off loopback; /health without it says only its status and release
    for path in ("/", "/api/status", "/metrics", "/static/app.js", "/stream.mjpg"):
        assert get(base + path)[0] == 401, path
    status, body = get(base + "/health")
    assert status in (200, 503) and set(json.loads(body)) == {"status", "reason", "release", "frames_processed", "frames_skipped_gate", "infer_ms"}
    assert get(base + "/api/status", Authorization="Bearer wrong-token")[0] == 401
    assert get(base + f"/api/status?token={TOKEN}")[0] == 401  # a token in a URL is not accepted (it ends up in logs)
    for headers in ({"Authorization": f"Bearer {TOKEN}"}, {"X-Edgeship-Token": TOKEN}, {"Cookie": f"edgeship_token={TOKEN}"}):
        status, body = get(base + "/api/status", **headers)
        assert status == 200 and json.loads(body)["app"]["app"] == "security"
    assert "model" in json.loads(get(base + "/health", Authorization=f"Bearer {TOKEN}")[1])

    with Chromium() as browser:
        browser.open(f"{base}/?token={TOKEN}")  # swapped for an HttpOnly cookie, and the URL loses the token
        assert browser.eval("document.title") == "edgeship dashboard"
        assert browser.eval("location.search") == "" and "edgeship_token" not in browser.eval("document.cookie")
        assert browser.eval("getComputedStyle(document.body).backgroundColor") == "rgb(16, 19, 23)"  # CSS loaded
        # the stream canvas is receiving decoded JPEG frames of the camera's size
        browser.wait_for("Number(document.body.dataset.frames) >= 5", timeout=30)
        assert browser.eval("document.body.dataset.frameSize") == "320x240"
        # the metrics poll keeps updating: processed count and the chart history grow
        browser.wait_for("Number(document.body.dataset.polls) >= 2", timeout=20)
        first = int(browser.eval("document.getElementById('processed').textContent"))
        polls = int(browser.eval("document.body.dataset.polls"))
        browser.wait_for(f"Number(document.body.dataset.polls) >= {polls + 2}", timeout=20)
        second = int(browser.eval("document.getElementById('processed').textContent"))
        assert second > first > 0
        fps = float(browser.eval("document.getElementById('fps').textContent"))
        assert fps > 1.0
        assert browser.eval("document.getElementById('health').textContent") == "ok"
        assert browser.eval("document.getElementById('app-title').textContent") == "security"
        # the fps chart has been drawn (non-blank pixels on the canvas)
        drawn = browser.eval("""(() => { const c = document.getElementById('chart-fps');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; })()""")
        assert drawn > 100
        # the square crossing the yard shows up as an event row
        browser.wait_for("document.querySelectorAll('#app-table tbody tr').length >= 1", timeout=30)
        row = browser.eval("document.querySelector('#app-table tbody tr').textContent")
        assert "yard" in row and "square" in row
        assert not browser.eval("document.body.dataset.error || document.body.dataset.streamError || ''")


def test_token_is_required_off_loopback():
    with pytest.raises(ConfigError, match="needs a token"):
        DashboardSink("0.0.0.0", 0)
    sink = DashboardSink("127.0.0.1", 0)  # loopback: no token needed
    assert ("GET", "/api/status") in sink.server.routes and ("GET", "/") in sink.server.routes
