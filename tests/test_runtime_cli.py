"""``edgeship run`` and ``edgeship bench`` as a user runs them: real subprocesses, signals, exit codes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from edgeship.cli import cli
from edgeship.manifest import Manifest
from edgeship.records import RunSummary
from tests.helpers.data import moving_digit_frames, write_video
from tests.helpers.mjpeg import MjpegServer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    frames, _ = moving_digit_frames(60)
    return write_video(tmp_path_factory.mktemp("cli") / "belt.mp4", frames, fps=30)


def edgeship(*args, **kw):
    env = {**os.environ, "EDGESHIP_PROGRESS": "0", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "edgeship.cli", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_sigterm_stops_cleanly_and_flushes_every_sink(art, video, tmp_path):
    out, vid = tmp_path / "res.jsonl", tmp_path / "out.mp4"
    p = edgeship("run", art["yolo_tflite"], "--source", video, "--loop", "--realtime", "--sink", f"jsonl:{out}",
                 "--sink", f"video:{vid}", "--json")
    deadline = time.monotonic() + 60
    while (not out.exists() or len(out.read_text().splitlines()) < 10) and time.monotonic() < deadline:
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=30)
    assert p.returncode == 0, stderr
    summary = RunSummary.from_dict(json.loads(stdout))  # exactly one JSON object on stdout, a run summary
    assert summary.stopped_by == "signal" and summary.frames_processed >= 10
    lines = out.read_text().splitlines()
    assert len(lines) == summary.frames_processed and all(json.loads(ln)["task"] == "detect" for ln in lines)
    cap = cv2.VideoCapture(str(vid))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == summary.frames_processed  # video closed properly
    assert not list(tmp_path.glob(".out.mp4*"))


def test_run_over_mjpeg_survives_a_camera_restart(art, video, tmp_path):
    out = tmp_path / "res.jsonl"
    with MjpegServer(video, fps=30) as cam:
        p = edgeship("run", art["tflite_int8"], "--source", cam.url, "--duration", 7, "--sink", f"jsonl:{out}", "--json")
        deadline = time.monotonic() + 30
        while (not out.exists() or len(out.read_text().splitlines()) < 5) and time.monotonic() < deadline:
            time.sleep(0.1)
        cam.kill()
        time.sleep(1.0)
        n_down = len(out.read_text().splitlines())
        cam.start()
        stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 0, stderr
    s = json.loads(stdout)
    assert s["stopped_by"] == "duration" and s["reconnects"] == 1
    assert s["frames_processed"] > n_down + 5  # frames kept coming after the reconnect
    assert "reconnect" in stderr


def test_run_cli_exit_codes_and_messages(art, video, tmp_path):
    r = CliRunner()
    res = r.invoke(cli, ["run", str(tmp_path / "missing.tflite"), "--source", str(video)])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "error: ARTIFACT: file not found" in res.output
    res = r.invoke(cli, ["run", str(art["tflite_f32"]), "--source", str(tmp_path / "nope.mp4")])
    assert res.exit_code == 1 and "error: --source: file not found" in res.output and "nope.mp4" in res.output
    res = r.invoke(cli, ["run", str(art["tflite_f32"]), "--source", str(video), "--sink", "http:0", "--sink", "http:0"])
    assert res.exit_code == 1 and "one --sink http:" in res.output
    res = r.invoke(cli, ["run", str(art["tflite_f32"]), "--source", str(video), "--sink", "http:0", "--token", "short"])
    assert res.exit_code == 1 and "error: --token: the HTTP token must be at least 8 characters" in res.output
    for stdout_sink in ("jsonl", "jsonl:", "jsonl-raw:-"):  # results on stdout would break the one JSON summary
        res = r.invoke(cli, ["run", str(art["tflite_f32"]), "--source", str(video), "--json", "--sink", stdout_sink])
        assert res.exit_code == 1 and "--json prints the summary on stdout" in res.stderr
    res = r.invoke(cli, ["run", str(art["tflite_f32"]), "--source", str(video), "--task", "segment"])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "'segment' is not one of" in res.output
    res = r.invoke(cli, ["run", str(art["tflite_f32"]), "--source", str(video), "--json", "--sink", "jsonl:-"])
    assert res.exit_code == 1 and res.stderr.count("\n") == 1 and "--json" in res.stderr
    assert json.loads(res.stdout)["error"] == res.stderr.strip()[len("error: "):]  # with --json, stdout says it too
    res = r.invoke(cli, ["run", str(art["tflite_f32"]), "--source", str(video), "--sink", "ftp:x"])
    assert res.exit_code == 1 and "sink must look like" in res.output
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"digit-{i}" for i in range(10)))
    res = r.invoke(cli, ["run", str(art["tflite_f32"]), "--source", str(video), "--max-frames", "3", "--labels", str(labels),
                         "--threshold", "0.0", "--top-k", "1"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(ln) for ln in res.stdout.splitlines() if ln.startswith("{")]
    assert len(rows) == 3 and rows[0]["classification"][0]["label"].startswith("digit-")
    assert "3 frames" in res.stderr and "glass_to_glass" in res.stderr


def test_bench_cli_json_and_save(art, tmp_path):
    model = tmp_path / "digits_int8.tflite"
    shutil.copy(art["tflite_int8"], model)
    shutil.copy(art["tflite_int8"].with_name("digits_int8.manifest.json"), tmp_path / "digits_int8.manifest.json")
    res = CliRunner().invoke(cli, ["bench", str(model), "--duration", "0.5", "--warmup", "2", "--threads", "1", "--json", "--save"])
    assert res.exit_code == 0, res.output
    b = json.loads(res.stdout)
    lat = b["latency_ms"]
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] and b["iterations"] >= 10
    assert b["executed_precision"] == "int8" and b["load_ms"] > 0 and b["first_inference_ms"] > 0
    assert b["throughput_fps"] > 0 and b["peak_rss_mb"] > 10 and b["machine"]["cores"] >= 1
    saved = Manifest.load(model).latency
    assert saved.p50_ms == lat["p50"] and saved.threads == 1 and saved.executed_precision == "int8"
    assert b["latency_source"] == "wall clock" and b["call_ms"]["p50"] == lat["p50"]  # LiteRT: timed around invoke
    res = CliRunner().invoke(cli, ["bench", str(art["openvino"]), "--duration", "0.3", "--json"])
    ov = json.loads(res.stdout)
    # OpenVINO: its own per-request latency (what benchmark_app reports), taken inside each Python call
    assert ov["latency_source"] == "openvino request latency" and 0 < ov["latency_ms"]["p50"] <= ov["call_ms"]["p50"]
    res = CliRunner().invoke(cli, ["bench", str(art["openvino"]), "--duration", "0.3", "--precision", "f32", "--hint", "throughput"])
    assert res.exit_code == 0 and "(f32)" in res.output and "throughput (async" in res.output
    bad = tmp_path / "bad.xml"
    bad.write_text("<net>")
    bad.with_suffix(".bin").write_bytes(b"")
    res = CliRunner().invoke(cli, ["bench", str(bad)])
    assert res.exit_code == 1 and res.output.startswith("error: ") and res.output.count("\n") == 1


def test_native_litert_info_line_is_filtered_but_native_errors_are_kept(art, tmp_path):
    from edgeship.native_stderr import keep_lines

    text = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nERROR: tensor 3 is broken\n"
    assert keep_lines(text, (r"^INFO: Created TensorFlow Lite XNNPACK",)) == "ERROR: tensor 3 is broken\n"
    p = edgeship("bench", art["tflite_int8"], "--duration", "0.2", "--warmup", "1", "--json")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0 and json.loads(out)["iterations"] > 0
    assert "XNNPACK" not in err, err
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    p = edgeship("bench", bad)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1 and err.strip().splitlines()[-1].startswith(f"error: {bad} is not a valid TFLite model")
