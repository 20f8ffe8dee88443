"""Issue 30, drift watch: the statistics and PSI (pure), the watch's episodes on a synthetic stream, then the
real path: calibrate from the belt video, convert (the manifest's profile), run the belt video as shot and
dimmed (events through the app's sinks, /health degraded but 200, the summary's episodes, --no-watch), and
`edgeship drift` on the workstation."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeship.cli import cli
from edgeship.runtime.drift import PERCENTILES, DriftProfile, DriftWatch, WatchCfg, bin_shares, profile_from_samples, psi
from edgeship.runtime.drift_stats import frame_focus, frame_size, input_stats, saturation
from edgeship.runtime.drift_check import check_drift
from tests.helpers.demo import demo_dir


def _scene(rng, n=200, size=48):
    """Axis-aligned bright rectangles on a textured background (a belt or a shelf): float images in [0, 1]."""
    out = []
    for _ in range(n):
        img = np.full((size, size, 1), 0.3, np.float32) + rng.normal(0, 0.03, (size, size, 1)).astype(np.float32)
        x0, y0 = rng.integers(4, size // 2, 2)
        img[y0:y0 + size // 3, x0:x0 + size // 3] = 0.8
        out.append(np.clip(img, 0, 1))
    return out


def test_statistics_move_with_light_blur_and_rotation():
    import cv2

    rng = np.random.default_rng(0)
    img = _scene(rng, 1)[0]
    base = input_stats(img)
    assert input_stats(img * 0.4)["brightness"] < 0.5 * base["brightness"]
    blurred = cv2.GaussianBlur(img[..., 0], (0, 0), 2.0)[..., None]
    assert input_stats(blurred)["focus"] < 0.8 * base["focus"]
    assert input_stats(img * 0.5 + 0.2)["focus"] == pytest.approx(base["focus"], rel=1e-4)  # light and offset cancel
    m = cv2.getRotationMatrix2D((24, 24), 15, 1.0)
    rotated = cv2.warpAffine(img[..., 0], m, (48, 48), borderMode=cv2.BORDER_REFLECT)[..., None]
    assert input_stats(rotated)["axis_alignment"] < 0.8 * base["axis_alignment"]
    frame = (np.repeat(img, 3, axis=2) * 255).astype(np.uint8)
    assert frame_focus(cv2.GaussianBlur(frame, (0, 0), 1.0)) < 0.8 * frame_focus(frame) and frame_size(frame) == "48x48"
    assert saturation(np.array([-128, 0, 127, 5], np.int8)) == 0.5 and saturation(np.zeros(4, np.float32)) == 0.0


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(1)
    ref = rng.normal(0, 1, 1000)
    edges = list(np.percentile(ref, np.linspace(10, 90, 9)))
    assert psi(rng.normal(0, 1, 300), edges) < 0.1
    assert psi(rng.normal(1.5, 1, 300), edges) > 1.0
    const = [5.0] * 9, [0.0, 1.0, 0.0]  # a constant reference: its deciles, and all of it on the one value
    assert psi(np.full(30, 5.0), *const) < 0.1 and psi(np.full(30, 9.0), *const) > 1.0 and psi(np.full(30, 1.0), *const) > 1.0
    ties = [0.9, 0.99, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # most confidences exactly 1.0
    ref = np.r_[np.full(70, 1.0), np.linspace(0.8, 0.999, 30)]
    shares = bin_shares(ref, ties)
    assert psi(np.r_[np.full(35, 1.0), np.linspace(0.8, 0.999, 15)], ties, shares) < 0.1
    assert psi(np.linspace(0.5, 0.95, 50), ties, shares) > 1.0


def test_the_tail_bins_tell_far_outside_from_the_lowest_tenth():
    """A fifth of a window far below anything calibrated on (a camera gone dim for the last 2 s of 10): the
    reference's 0.5% tails make that clear where its lowest decile (a tenth of the reference) hides it."""
    rng = np.random.default_rng(3)
    ref = rng.normal(0, 1, 2000)
    window = np.r_[rng.normal(0, 1, 40), rng.normal(-6, 0.2, 10)]
    deciles = list(np.percentile(ref, np.linspace(10, 90, 9)))
    tails = list(np.percentile(ref, PERCENTILES))
    with_tails, deciles_only = psi(window, tails, bin_shares(ref, tails)), psi(window, deciles, bin_shares(ref, deciles))
    assert with_tails > 2.5 * deciles_only and with_tails > 0.6, (with_tails, deciles_only)
    assert psi(rng.normal(0, 1, 50), tails, bin_shares(ref, tails)) < 0.5  # and the same distribution still reads as such


def test_the_watch_raises_one_drift_and_one_recovered_event_per_episode():
    rng = np.random.default_rng(2)
    profile = profile_from_samples(_scene(rng, 200))
    events = []
    watch = DriftWatch(profile, WatchCfg(window_s=6, sample_hz=10, hold_s=1, max_cost=1.0), emit=events.append,
                       camera="line3")  # max_cost: nothing else runs here, the wall-time budget would bind
    frames = _scene(rng, 1200)
    t = 0.0
    for i, f in enumerate(frames):  # 10 s as shot, 10 s at 40% light, 20 s as shot, at 30 fps
        dim = 300 <= i < 600
        watch.observe(f * 0.4 if dim else f, [], None, t=t)
        t += 1 / 30
        if i == 299:
            before = watch.status()["closest"]  # the nearest call of the undimmed 10 s: well inside its limit
    assert before is not None and 0 < before["of_limit"] < 1 and before["score"] < before["limit"], before
    kinds = [e["type"] for e in events]
    assert kinds == ["drift", "recovered"], events
    drift = events[0]
    assert "brightness" in drift["what"] and drift["camera"] == "line3"
    assert 10.0 <= drift["since"] <= 14.0 and drift["time"] - drift["since"] < 2.1  # crossed within 4 s, reported after the hold
    seen = drift["details"]["brightness"]  # since the drift began: the dimmed frames only (40% of the light)
    assert seen["since_median"] < 0.6 * seen["calibration_median"] and seen["window_median"] > seen["since_median"]
    st = watch.status()
    assert st["state"] == "ok" and len(st["episodes"]) == 1 and st["episodes"][0]["end"] is not None
    assert st["closest"]["of_limit"] < 1  # the dim windows became the episode: no near miss outside it
    assert st["ms_per_frame"] < 5.0 and st["sampled"] < 0.4 * len(frames)  # 10 of the 30 frames a second


def test_a_crossing_too_short_for_an_episode_is_the_closest_call():
    """A dim spell shorter than hold_s raises nothing, and the run summary's ``closest`` shows it crossed."""
    rng = np.random.default_rng(4)
    profile = profile_from_samples(_scene(rng, 200))
    events = []
    watch = DriftWatch(profile, WatchCfg(window_s=4, sample_hz=10, hold_s=6, min_frames=5, max_cost=1.0),
                       emit=events.append)
    t = 0.0
    for i, f in enumerate(_scene(rng, 480)):  # 4 s as shot, 4 s at 40% light, 8 s as shot, at 30 fps
        watch.observe(f * 0.4 if 120 <= i < 240 else f, [], None, t=t)
        t += 1 / 30
    assert events == [] and watch.status()["state"] == "ok"
    near = watch.status()["closest"]
    assert near["of_limit"] >= 1 and 4.0 <= near["time"] <= 12.0, near


def test_watch_config_is_checked():
    profile = profile_from_samples(_scene(np.random.default_rng(3), 20))
    with pytest.raises(ValueError, match="watch.stats: 'colour' is not in the profile"):
        DriftWatch(profile, WatchCfg(stats=["colour"]))


# ---- the real path ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def belt(tmp_path_factory):
    """The belt video, a 40%-light copy, a calibration set made from the video with `edgeship calibrate`, and the
    digits model converted to int8 TFLite with it (its manifest holds the profile)."""
    import cv2

    demo = demo_dir(tmp_path_factory)
    d = tmp_path_factory.mktemp("drift")
    video = demo / "videos" / "belt.mp4"
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while (ok := cap.read())[0]:
        frames.append(ok[1])
    w = cv2.VideoWriter(str(d / "dim.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, frames[0].shape[1::-1])
    for f in frames:
        w.write((f.astype(np.float32) * 0.4).astype(np.uint8))
    w.release()
    calib = d / "calib.npz"
    r = CliRunner().invoke(cli, ["calibrate", str(video), "--input-size", "32x32", "--color-order", "GRAY",
                                 "--out", str(calib)])
    assert r.exit_code == 0, r.output
    from edgeship.converters import convert

    (art,) = convert(demo / "models" / "digits.keras", formats=["tflite"], precision="int8", calib=calib,
                     out_dir=d / "model", max_drop=None, task="classify")
    return {"video": video, "dim": d / "dim.mp4", "artifact": art.path, "manifest": art.manifest, "dir": d,
            "frames": len(frames)}


def test_convert_writes_the_profile(belt):
    prof = belt["manifest"].drift
    assert prof and prof["samples"] >= 20
    assert {"brightness", "contrast", "focus", "axis_alignment", "confidence"} <= set(prof["edges"])
    assert all(len(PERCENTILES) - 2 <= len(v) <= len(PERCENTILES) for v in prof["edges"].values())
    assert len(prof["edges"]["brightness"]) == len(PERCENTILES)  # a continuous statistic keeps both tails
    assert 0.0 <= prof["saturation"]["input"] < 0.5  # int8 input: the calibration's share at the ends
    # its softmax output spans [0, 1) in steps of 1/256: its ends are answers, not clipping, and are not watched
    assert "output" not in prof["saturation"]
    old = DriftProfile.from_dict({**prof, "saturation": {**prof["saturation"], "output": 0.9}})
    assert not DriftWatch(old, output_quant=(1 / 256, -128))._saturation.keys() - {"input"}
    assert DriftWatch(old, output_quant=(0.05, 3))._saturation["output"] == 0.9  # a clipping range keeps it
    # calibrated from one video: each sample's own camera frame (96x96) focus, compared only with frames of that size
    assert prof["frame_size"] == "96x96" and "frame_focus" in prof["edges"]


def _config(belt, tmp_path, video, port):
    import yaml

    cfg = {"artifact": str(belt["artifact"]), "source": str(video), "task": "classify",
           "app": {"type": "industrial", "counters": str(tmp_path / "counters.sqlite"), "inspect": {"fail_classes": ["9"]},
                   "events": [{"type": "jsonl", "path": str(tmp_path / "events.jsonl")}]},
           # a 12 s clip processed flat out: sample every frame, and lift the wall-time budget a camera never reaches
           "watch": {"window_s": 4, "hold_s": 0.5, "sample_hz": 10, "max_cost": 1.0},
           "server": {"port": port}}
    p = tmp_path / "line.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_a_dimmed_line_raises_a_drift_event_and_the_health_says_degraded(belt, tmp_path):
    from edgeship.runtime.apps.deploy import build_deployment
    from edgeship.runtime.config import load_config
    from tests.helpers.mjpeg import free_port

    port = free_port()
    normal = build_deployment(load_config(_config(belt, tmp_path, belt["video"], port)), handle_signals=False).run()
    assert normal.drift["state"] == "ok" and normal.drift["episodes"] == [], normal.drift
    (tmp_path / "events.jsonl").unlink()
    dep = build_deployment(load_config(_config(belt, tmp_path, belt["dim"], port)), handle_signals=False)
    seen = {}
    view = next(s for s in dep.pipeline.sinks if hasattr(s, "health"))
    sent = dep.pipeline.watch.emit

    def probe(event):  # read /health over HTTP when the drift event goes out
        sent(event)
        if event["type"] == "drift":
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                seen["status"], seen["body"] = r.status, json.loads(r.read())

    dep.pipeline.watch.emit = probe
    summary = dep.run()
    assert view is not None and summary.drift["episodes"], summary.drift
    assert seen["status"] == 200 and seen["body"]["degraded"].startswith("drift: ") and "brightness" in seen["body"]["degraded"]
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    drift = [e for e in events if e.get("type") == "drift"]
    assert len(drift) == 1 and "brightness" in drift[0]["what"] and drift[0]["id"] and drift[0]["time"].startswith("20")
    t_first = min(e["t_capture"] for e in events if "t_capture" in e)
    assert drift[0]["since"] - t_first < 4.0  # dim from the first frame: judged once a second once the window fills
    # the episode is kept in the industrial app's counters database, and `edgeship stats` lists it
    r = CliRunner().invoke(cli, ["stats", str(tmp_path / "counters.sqlite"), "--json"])
    assert r.exit_code == 0, r.output
    (ep,) = json.loads(r.stdout)["drift"]
    assert "brightness" in ep["what"] and ep["start"].startswith("20") and ep["ended"] == "stopped"  # dim to the end
    assert ep["end"] >= ep["start"]
    table = CliRunner().invoke(cli, ["stats", str(tmp_path / "counters.sqlite")]).output
    assert "drift from (UTC)" in table and "(run stopped)" in table and "brightness" in table
    # --no-watch turns it off, with --config too
    r = CliRunner().invoke(cli, ["run", "--config", str(_config(belt, tmp_path, belt["dim"], free_port())), "--no-watch",
                                 "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout).get("drift") is None


def test_drift_command_on_the_workstation(belt, tmp_path):
    r = CliRunner().invoke(cli, ["drift", str(belt["artifact"]), "--data", str(belt["dim"]), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    rows = {row["statistic"]: row for row in rep["rows"]}
    assert rep["drifted"] and rows["brightness"]["drifted"] and rows["brightness"]["psi"] > 1.0
    assert rep["frames"] == belt["frames"]
    same = json.loads(CliRunner().invoke(cli, ["drift", str(belt["artifact"]), "--data", str(belt["video"]), "--json"]).stdout)
    assert not same["drifted"], same
    table = CliRunner().invoke(cli, ["drift", str(belt["artifact"]), "--data", str(belt["dim"])])
    assert "brightness" in table.output and "DRIFT" in table.output and "consider recalibrating" in table.output
    # a blur of 1 px on the camera's 96x96 frames (a third of a pixel of the 32x32 input): the frames' focus moves
    import cv2

    cap, frames = cv2.VideoCapture(str(belt["video"])), []
    while (ok := cap.read())[0]:
        frames.append(cv2.GaussianBlur(ok[1], (0, 0), 1.0))
    blurred = tmp_path / "blurred.mp4"
    w = cv2.VideoWriter(str(blurred), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, frames[0].shape[1::-1])
    for f in frames:
        w.write(f)
    w.release()
    rows = {r["statistic"]: r for r in check_drift(str(belt["artifact"]), str(blurred)).rows}
    assert rows["frame_focus"]["drifted"] and rows["frame_focus"]["data_p50"] < rows["frame_focus"]["calibration_p50"], rows
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(Path(belt["artifact"]).read_bytes())
    r = CliRunner().invoke(cli, ["drift", str(bare), "--data", str(belt["video"])])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "no drift profile" in r.output, r.output


def test_a_detector_profile_holds_detections_and_a_zoomed_out_camera_moves_them(tmp_path_factory, tmp_path):
    """The quickstart's shape detector: the profile holds detections per frame, their score and their box area as
    a share of the input (decoded by the runtime's own post-processing); fresh scenes from the generator the
    calibration came from (full-size frames, boxes mapped back to them on the device) read as the same, and the
    same scenes seen by a zoomed-out camera move the boxes' area."""
    import cv2

    from edgeship.converters import convert
    from edgeship.demo import demo_paths, scenes
    paths = demo_paths(demo_dir(tmp_path_factory))
    (art,) = convert(paths["shapes_keras"], formats=["tflite"], precision="int8", calib=paths["shapes_calib"],
                     out_dir=tmp_path / "model", max_drop=None, task="detect")
    prof = art.manifest.drift
    assert {"detections", "box_area", "detection_score"} <= set(prof["edges"]), sorted(prof["edges"])
    assert prof["medians"]["detections"] >= 1 and 0.0 < prof["medians"]["box_area"] < 0.5
    # decoded at the runtime's default threshold; a run that keeps only surer boxes decodes its sampled frames
    # again at the profile's threshold (a decoder it cannot re-set leaves the detection statistics out)
    from types import SimpleNamespace

    from edgeship.runtime.processing.detect import DETECT_THRESHOLD

    assert prof["detect_threshold"] == pytest.approx(DETECT_THRESHOLD)
    profile = DriftProfile.from_dict(prof)
    from edgeship.runtime.processing import make_postprocess

    strict = make_postprocess("detect", spec=art.manifest.input_spec, threshold=0.5, box_format="yolo")
    watch = DriftWatch(profile, task="detect", post=strict)
    assert {"detections", "box_area"} <= set(watch.names) and watch._redecode.threshold == pytest.approx(DETECT_THRESHOLD)
    assert "detections" not in DriftWatch(profile, task="detect", post=SimpleNamespace(threshold=0.5)).names
    assert {"detections", "box_area"} <= set(DriftWatch(profile, task="detect", post=SimpleNamespace(threshold=0.1)).names)
    old = DriftProfile.from_dict({**prof, "edges": {**prof["edges"], "sharpness": prof["edges"]["focus"]}})
    assert "sharpness" not in DriftWatch(old, task="detect").names  # an older profile's retired statistic
    rng = np.random.default_rng(99)
    same, zoomed = tmp_path / "same", tmp_path / "zoomed"
    same.mkdir(), zoomed.mkdir()
    for i in range(150):
        img = scenes.random_scene(rng)[0]
        h, w = img.shape[:2]
        cv2.imwrite(str(same / f"{i:03d}.png"), img)
        small = cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(zoomed / f"{i:03d}.png"), cv2.copyMakeBorder(small, h // 4, h - h // 2 - h // 4, w // 4,
                                                                     w - w // 2 - w // 4, cv2.BORDER_REPLICATE))
    rows = {r["statistic"]: r for r in check_drift(str(art.path), str(same)).rows}
    assert not any(r["drifted"] for r in rows.values()), rows
    assert abs(rows["box_area"]["data_p50"] - rows["box_area"]["calibration_p50"]) < 0.2 * rows["box_area"]["calibration_p50"]
    moved = {r["statistic"]: r for r in check_drift(str(art.path), str(zoomed)).rows}
    assert moved["box_area"]["drifted"] and moved["box_area"]["data_p50"] < 0.5 * rows["box_area"]["data_p50"], moved
    # the device's own watch in a run that keeps only boxes from 0.5: its counts compare with the profile's
    from edgeship.runtime.runner import build_pipeline

    from edgeship.runtime.options import RunOptions

    every = RunOptions(watch=WatchCfg(max_cost=1.0))  # a folder read flat out: no wall-time budget to skip frames
    pipe = build_pipeline(str(art.path), str(same), options=every, task="detect", threshold=0.5, handle_signals=False)
    try:
        pipe.run()
    finally:
        pipe.backend.close()
    status = pipe.watch.status()
    assert {"detections", "box_area"} <= set(status["scores"]) and status["state"] == "ok", status


def test_drift_episodes_in_the_counters_database(tmp_path):
    """Recovered, stopped by the end of the run, left open by a run that died (closed when the next one opens),
    and the --hours window, as `edgeship stats` reads them."""
    import time

    from edgeship.runtime.apps.counters import Counters, drift_episodes

    db = tmp_path / "counters.sqlite"
    now = time.time()
    c = Counters(db)
    c.record("ok", True, now, camera="line1")
    c.drift_started(now - 7200, {"brightness": 3.1}, camera="line1")
    c.drift_ended(now - 7200, now - 7000, camera="line1")  # recovered two hours ago
    c.drift_started(now - 60, {"focus": 2.0}, camera="line1")
    c.drift_started(now - 30, {"contrast": 1.5}, camera="line2")
    assert c.drift_stopped(now - 10, camera="line1") == 1  # the run ends: line1's open one is stopped
    c.close()
    eps = drift_episodes(db)
    assert [(e["camera"], e["ended"]) for e in eps] == [("line1", "recovered"), ("line1", "stopped"), ("line2", None)]
    assert eps[0]["lasted_s"] == 200.0 and eps[1]["lasted_s"] == 50.0 and eps[2]["end"] is None
    assert [e["camera"] for e in drift_episodes(db, hours=1)] == ["line1", "line2"]  # the recovered one is older
    assert [e["what"] for e in drift_episodes(db, camera="line2")] == [{"contrast": 1.5}]
    r = CliRunner().invoke(cli, ["stats", str(db), "--camera", "line2", "--json"])  # no inspections, one episode
    assert r.exit_code == 0 and json.loads(r.stdout)["drift"][0]["camera"] == "line2", r.output
    Counters(db).drift_stopped(0.0, camera="line2")  # what the next run's industrial app does when it opens
    assert drift_episodes(db, camera="line2")[0]["ended"] == "stopped"
