"""Calibration: real digits in PNG class folders, real videos, a real MJPEG camera, npz arrays,
the CLI, and round trips into a real TFLite int8 conversion and a real nncf.quantize."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeship.calibration import RepresentativeDataset, build_dataset
from edgeship.calibration.build import intermediate_spec
from edgeship.calibration.dedup import Deduper, frame_features
from edgeship.calibration.select import fair_quota, select_balanced, split_holdout
from edgeship.calibration.sources import evenly_spaced, interleave_by_class, source_kind
from edgeship.cli import cli
from edgeship.errors import CalibrationError, InputError, SpecError
from edgeship.spec import InputSpec
from edgeship.preprocess import preprocess
from tests.helpers.data import digits_bgr, moving_digit_frames, write_digits_folder, write_video
from tests.helpers.mjpeg import MjpegServer, free_port, wait_port

GRAY32 = InputSpec(32, 32, channels=1)
RGB32 = InputSpec(32, 32)


# ---- fixtures: real data written once per session ------------------------------------------------
@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """10 class folders x 40 real digits, plus a corrupt PNG and a text file."""
    root = write_digits_folder(tmp_path_factory.mktemp("calib") / "digits", per_class=40)
    (root / "3" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    (root / "README.txt").write_text("not an image\n")
    return root


@pytest.fixture(scope="session")
def factory_video(tmp_path_factory) -> Path:
    """A belt with moving digits (120 frames), a long static stretch (300), more motion (120)."""
    frames, _ = moving_digit_frames(240, size=(240, 320))
    rng = np.random.default_rng(1)
    still = frames[60]
    static = [np.clip(still.astype(np.int16) + rng.integers(-4, 5, still.shape), 0, 255).astype(np.uint8)
              for _ in range(300)]
    return write_video(tmp_path_factory.mktemp("calib") / "line.mp4", frames[:120] + static + frames[120:])


def _frame_index(origin: str) -> int:
    return int(origin.rsplit("#", 1)[1])


# ---- pure helpers ---------------------------------------------------------------------------------
def test_fair_quota_and_even_spacing():
    assert fair_quota([10, None, 3], 30) == [10, 17, 3]
    assert fair_quota([100, 100], 7) == [4, 3]
    assert sum(fair_quota([2, 2], 10)) == 4
    assert evenly_spaced(900, 3).tolist() == [150, 450, 750]
    assert evenly_spaced(5, 10).tolist() == [0, 1, 2, 3, 4]
    order = interleave_by_class(["a"] * 5 + ["b"] * 2 + ["c"] * 5, np.random.default_rng(0))
    labels = (["a"] * 5 + ["b"] * 2 + ["c"] * 5)
    assert sorted(labels[i] for i in order[:6]) == ["a", "a", "b", "b", "c", "c"]
    chosen = select_balanced(["x"] * 90 + ["y"] * 10, 40)
    assert (chosen < 90).sum() == 30 and (chosen >= 90).sum() == 10


def test_stratified_holdout_split():
    y = [0] * 50 + [1] * 30 + [2] * 20
    calib, hold = split_holdout(y, 100, 0.2, np.random.default_rng(0))
    assert len(hold) == 20 and len(calib) == 80 and not set(calib) & set(hold)
    assert np.bincount(np.asarray(y)[hold]).tolist() == [10, 6, 4]


def test_deduper_uses_largest_cell_difference():
    base = np.full((240, 320, 3), 40, np.uint8)
    moved = base.copy()
    moved[100:140, 10:50] = 255  # a small part appears: few cells change a lot
    flicker = np.clip(base.astype(int) + 5, 0, 255).astype(np.uint8)  # every cell a little
    d = Deduper(12.0)
    assert d.offer(frame_features(base).thumb)
    assert not d.offer(frame_features(flicker).thumb)
    assert d.offer(frame_features(moved).thumb)
    assert Deduper(12.0, enabled=False).offer(frame_features(base).thumb)


@pytest.mark.parametrize("spec", [
    InputSpec(40, 48, resize="letterbox"),
    InputSpec(24, 24, resize="center-crop", color_order="BGR", layout="NCHW", mean=(0.5,), std=(0.25,)),
    InputSpec(20, 36, channels=1),
])
def test_resize_first_then_normalise_equals_preprocess(spec):
    rng = np.random.default_rng(0)
    for frame in (rng.integers(0, 256, (61, 83, 3), dtype=np.uint8), rng.integers(0, 256, (30, 20), dtype=np.uint8)):
        direct = preprocess(frame, spec)
        two_step = preprocess(preprocess(frame, intermediate_spec(spec)), spec)
        np.testing.assert_array_equal(direct, two_step)


def test_source_kinds(tmp_path, digits_dir, factory_video):
    assert source_kind("rtsp://10.0.0.1/s")[0] == "stream"
    assert source_kind("0")[0] == "stream" and source_kind("/dev/video2")[0] == "stream"
    assert source_kind(str(digits_dir))[0] == "folder"
    assert source_kind(str(factory_video))[0] == "video"
    assert source_kind("x.npz")[0] == "array"
    assert source_kind(f"video:{digits_dir}") == ("video", str(digits_dir))
    with pytest.raises(InputError, match="does-not-exist"):
        source_kind(str(tmp_path / "does-not-exist"))


# ---- image folders ---------------------------------------------------------------------------------
def test_folder_is_balanced_labelled_and_counts_skipped_files(digits_dir):
    ds = build_dataset([str(digits_dir)], spec=GRAY32, count=300, holdout=0.2, seed=0)
    assert ds.labels == [str(i) for i in range(10)]
    assert ds.x_calib.shape == (240, 32, 32, 1) and ds.x_holdout.shape == (60, 32, 32, 1)
    assert ds.x_calib.dtype == np.float32 and 0.0 <= ds.x_calib.min() and ds.x_calib.max() <= 1.0
    assert np.bincount(ds.y_calib).tolist() == [24] * 10 and np.bincount(ds.y_holdout).tolist() == [6] * 10
    s = ds.meta["summary"]
    assert s["unreadable_skipped"] == 1 and s["not_images_skipped"] == 1
    assert s["source_sizes"] == {"32x32": 300}
    assert 0 < s["brightness"]["p5"] <= s["brightness"]["p50"] <= s["brightness"]["p95"] < 255
    # every sample is exactly the shared preprocess of the file it came from, with its folder's label
    import cv2

    origin = ds.meta["samples"]["holdout"][7]
    expected = preprocess(cv2.imread(origin), GRAY32)
    np.testing.assert_array_equal(ds.x_holdout[7], expected)
    assert ds.labels[ds.y_holdout[7]] == Path(origin).parent.name


def test_same_seed_same_dataset_other_seed_differs(digits_dir):
    a = build_dataset([str(digits_dir)], spec=RGB32, count=120, seed=3)
    b = build_dataset([str(digits_dir)], spec=RGB32, count=120, seed=3)
    c = build_dataset([str(digits_dir)], spec=RGB32, count=120, seed=4)
    assert a.sha256 == b.sha256 and a.sha256 != c.sha256


def test_labels_list_fixes_class_order_and_rejects_unknown_classes(digits_dir):
    names = [str(i) for i in reversed(range(10))]
    ds = build_dataset([str(digits_dir)], spec=GRAY32, count=50, labels=names)
    assert ds.labels == names
    first = ds.meta["samples"]["calib"][0]
    assert ds.labels[ds.y_calib[0]] == Path(first).parent.name
    with pytest.raises(CalibrationError, match="not in the labels list"):
        build_dataset([str(digits_dir)], spec=GRAY32, count=50, labels=["0", "1"])


def test_empty_folder_and_missing_path_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(CalibrationError, match="has no images"):
        build_dataset([str(tmp_path / "empty")], spec=GRAY32)
    with pytest.raises(InputError, match="missing"):
        build_dataset([str(tmp_path / "missing")], spec=GRAY32)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"garbage")
    (tmp_path / "bad" / "b.jpg").write_bytes(b"")
    with pytest.raises(CalibrationError, match="no usable samples.*2 unreadable"):
        build_dataset([str(tmp_path / "bad")], spec=GRAY32)


# ---- videos ---------------------------------------------------------------------------------------
def test_video_is_sampled_across_the_whole_file_and_static_frames_are_dropped(factory_video):
    ds = build_dataset([str(factory_video)], spec=RGB32, count=300, holdout=0.0)
    src = ds.meta["sources"][0]
    assert src["kind"] == "video" and src["details"]["frames"] == 540
    idx = sorted(_frame_index(o) for o in ds.meta["samples"]["calib"])
    assert idx[0] < 10 and idx[-1] > 530  # start to end of the file
    static = [i for i in idx if 125 <= i < 415]
    assert len(static) <= 3, static  # 300 copies of one frame give (almost) one sample
    assert src["duplicates"] >= 150 and ds.meta["summary"]["duplicates_dropped"] == src["duplicates"]
    assert ds.meta["summary"]["source_sizes"] == {"320x240": len(ds)}
    # each sample's camera frame focus, for the drift profile: frames of one size, calib then holdout
    assert ds.meta["frames"]["size"] == "320x240" and len(ds.meta["frames"]["focus"]) == len(ds)
    assert all(f >= 0 for f in ds.meta["frames"]["focus"]) and max(ds.meta["frames"]["focus"]) > 0  # 0: a flat frame
    plain = build_dataset([str(factory_video)], spec=RGB32, count=300, holdout=0.0, dedup=False)
    assert len(plain) == 300 and plain.meta["summary"]["duplicates_dropped"] == 0


def test_video_that_will_not_open_is_an_error(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    with pytest.raises(CalibrationError, match="broken.mp4"):
        build_dataset([str(bad)], spec=RGB32)


# ---- live streams ---------------------------------------------------------------------------------
def test_mjpeg_stream_is_captured_for_the_duration(tmp_path):
    frames, _ = moving_digit_frames(60, size=(120, 160))
    video = write_video(tmp_path / "cam.avi", frames, codec="MJPG")
    with MjpegServer(video, fps=20) as cam:
        t0 = time.monotonic()
        ds = build_dataset([cam.url], spec=RGB32, count=30, holdout=0.2, duration=1.5, timeout=10)
        elapsed = time.monotonic() - t0
    src = ds.meta["sources"][0]
    assert src["kind"] == "stream" and src["read"] >= 10
    assert 1.0 <= src["details"]["captured_s"] <= 3.0 and elapsed < 15
    assert ds.meta["summary"]["source_sizes"] == {"160x120": len(ds)}


RTSP_SERVER = """
import sys, gi
gi.require_version("Gst", "1.0"); gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer, GLib
Gst.init(None)
server = GstRtspServer.RTSPServer(); server.set_address("127.0.0.1"); server.set_service(sys.argv[1])
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch("( videotestsrc pattern=ball is-live=true ! video/x-raw,width=320,height=240,framerate=20/1 "
                   "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=20 ! rtph264pay name=pay0 pt=96 )")
factory.set_shared(True)
server.get_mount_points().add_factory("/cam", factory)
server.attach(None)
GLib.MainLoop().run()
"""


@pytest.fixture
def rtsp_camera(tmp_path):
    """A real RTSP camera (GStreamer's RTSP server, run by Debian's python3) on 127.0.0.1."""
    probe = subprocess.run(["/usr/bin/python3", "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip("GStreamer RTSP server missing: run scripts/system-deps.sh")
    script = tmp_path / "rtsp_server.py"
    script.write_text(RTSP_SERVER)
    port = free_port()
    proc = subprocess.Popen(["/usr/bin/python3", str(script), str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield f"rtsp://127.0.0.1:{port}/cam"
    finally:
        proc.kill()
        proc.wait(5)


def test_rtsp_camera_is_captured(rtsp_camera):
    ds = build_dataset([rtsp_camera], spec=RGB32, count=20, holdout=0.0, duration=1.5, timeout=10)
    src = ds.meta["sources"][0]
    assert src["kind"] == "stream" and src["read"] >= 10 and len(ds) == 20
    assert ds.meta["summary"]["source_sizes"] == {"320x240": 20}
    assert ds.x_calib.std() > 0.01  # real moving pictures, not a blank frame


def test_stream_that_does_not_answer_is_a_one_line_error():
    with socket.socket() as silent:  # accepts the connection, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/stream.mjpg"
        t0 = time.monotonic()
        with pytest.raises(CalibrationError, match=r"did not answer within 1 s"):
            build_dataset([url], spec=RGB32, duration=1, timeout=1)
        assert time.monotonic() - t0 < 6
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CalibrationError, match=f"127.0.0.1:{port}"):
        build_dataset([f"http://127.0.0.1:{port}/x.mjpg"], spec=RGB32, duration=1, timeout=2)
    with pytest.raises(CalibrationError, match="stream 7 "):
        build_dataset(["7"], spec=RGB32, duration=1, timeout=2)


# ---- arrays ---------------------------------------------------------------------------------------
def test_npz_frames_with_labels_and_preprocessed_samples(tmp_path):
    x, y = digits_bgr(32)
    names = np.asarray([f"digit-{i}" for i in range(10)])
    np.savez(tmp_path / "frames.npz", images=x[:500], y=y[:500], label_names=names)
    ds = build_dataset([str(tmp_path / "frames.npz")], spec=GRAY32, count=200, holdout=0.25)
    assert ds.labels == [f"digit-{i}" for i in range(10)] and len(ds) == 200 and len(ds.x_holdout) == 50
    assert np.bincount(ds.y_calib, minlength=10).min() >= 14

    samples = np.stack([preprocess(f, GRAY32) for f in x[:150]])
    np.save(tmp_path / "samples.npy", samples)
    ds2 = build_dataset([str(tmp_path / "samples.npy")], spec=GRAY32, count=100, holdout=0.0, dedup=False)
    assert ds2.labels is None and ds2.y_calib is None and len(ds2) == 100
    rows = {r.tobytes() for r in samples}
    assert all(r.tobytes() in rows for r in ds2.x_calib)  # used as they are

    with pytest.raises(SpecError, match=r"\(N, 32, 32, 3\)"):
        build_dataset([str(tmp_path / "samples.npy")], spec=RGB32)


def test_a_calibration_file_is_a_source_and_mixed_sources_share_the_count(tmp_path, digits_dir, factory_video, caplog):
    first = build_dataset([str(digits_dir)], spec=GRAY32, count=100)
    first.save(tmp_path / "first.npz")
    again = build_dataset([str(tmp_path / "first.npz")], spec=GRAY32, count=100, holdout=0.2, dedup=False)
    assert again.labels == first.labels and len(again) == 100
    with caplog.at_level(logging.WARNING, logger="edgeship"):
        mixed = build_dataset([str(digits_dir), str(factory_video)], spec=GRAY32, count=200, holdout=0.1)
    assert mixed.labels is None and "labels dropped" in caplog.text
    kept = {d["kind"]: d["selected"] for d in mixed.meta["sources"]}
    assert mixed.meta["frames"] == {"size": None, "focus": None}  # frames of several sizes: no frame reference
    assert kept["folder"] + kept["video"] == 200 and kept["video"] >= 40 and kept["folder"] >= 100


# ---- the dataset file --------------------------------------------------------------------------------
def test_save_load_round_trip_without_pickles(tmp_path, digits_dir):
    ds = build_dataset([str(digits_dir)], spec=GRAY32, count=100, holdout=0.3)
    path = ds.save(tmp_path / "calib.npz")
    with np.load(path, allow_pickle=False) as raw:
        meta = json.loads(str(raw["meta"]))
        assert set(raw.files) == {"x_calib", "x_holdout", "y_calib", "y_holdout", "meta"}
    assert meta["spec"] == GRAY32.to_dict() and meta["sha256"] == ds.sha256 and meta["sources"][0]["kind"] == "folder"
    back = RepresentativeDataset.load(path)
    assert back.sha256 == ds.sha256 and back.labels == ds.labels and back.spec == GRAY32
    x, y = back.split("holdout")
    np.testing.assert_array_equal(x, ds.x_holdout)
    np.testing.assert_array_equal(y, ds.y_holdout)
    assert back.split("all")[0].shape == (100, 32, 32, 1)
    batches = list(back.to_tflite()())
    assert len(batches) == 70 and isinstance(batches[0], list) and len(batches[0]) == 1
    assert batches[0][0].shape == (1, 32, 32, 1) and batches[0][0].dtype == np.float32


def test_corrupt_file_and_failed_write_leave_nothing_behind(tmp_path, monkeypatch):
    x, y = digits_bgr(32)
    ds = RepresentativeDataset.from_arrays(x[:50], y[:50], spec=RGB32, labels=[str(i) for i in range(10)])
    assert ds.x_calib.shape == (40, 32, 32, 3) and len(ds.y_holdout) == 10
    assert ds.x_calib.max() <= 1.0  # uint8 frames went through preprocess, not just a cast
    path = ds.save(tmp_path / "ok.npz")
    data = dict(np.load(path, allow_pickle=False))
    data["x_calib"] = data["x_calib"] + 0.01
    np.savez(tmp_path / "tampered.npz", **data)
    with pytest.raises(CalibrationError, match="corrupt"):
        RepresentativeDataset.load(tmp_path / "tampered.npz")

    def exploding_savez(fh, **arrays):
        fh.write(b"PK partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", exploding_savez)
    with pytest.raises(OSError):
        ds.save(tmp_path / "half.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.npz", "tampered.npz"]


# ---- CLI --------------------------------------------------------------------------------------------
def test_cli_json_table_and_exit_codes(tmp_path, digits_dir, factory_video):
    runner = CliRunner()
    out = tmp_path / "c.npz"
    r = runner.invoke(cli, ["calibrate", str(digits_dir), str(factory_video), "--input-size", "24x32",
                            "--color-order", "GRAY", "--mean", "0.5", "--std", "0.5", "--count", "120",
                            "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["counts"] == {"calib": 96, "holdout": 24, "total": 120}
    assert result["spec"]["height"] == 24 and result["spec"]["mean"] == [0.5]
    assert {s["kind"] for s in result["sources"]} == {"folder", "video"}
    ds = RepresentativeDataset.load(out)
    assert ds.sha256 == result["sha256"] and ds.x_calib.min() < -0.5  # (0 * 1/255 - 0.5) / 0.5 = -1

    r = runner.invoke(cli, ["calibrate", str(digits_dir), "--input-size", "32x32", "--count", "50",
                            "--out", str(tmp_path / "t.npz")])
    assert r.exit_code == 0 and "Samples kept" in r.stdout and "brightness" in r.stdout
    assert "fewer than 100" in r.stderr

    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(str(i) for i in range(10)) + "\n")
    r = runner.invoke(cli, ["calibrate", str(digits_dir), "--input-size", "32", "--labels", str(labels),
                            "--count", "20", "--json", "--out", str(tmp_path / "l.npz")])
    assert r.exit_code == 0 and json.loads(r.stdout)["labels"] == [str(i) for i in range(10)]

    for args, code, needle in [
        ([str(tmp_path / "nowhere")], 1, "nowhere"),
        ([str(tmp_path / "x.npz") + "_missing.mp4"], 1, "does not exist"),
    ]:
        dest = tmp_path / "fail.npz"
        r = runner.invoke(cli, ["calibrate", *args, "--input-size", "32x32", "--out", str(dest)])
        assert r.exit_code == code and needle in r.stderr
        assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: ")
        assert not dest.exists()
    assert runner.invoke(cli, ["calibrate", str(digits_dir), "--out", str(tmp_path / "u.npz")]).exit_code == 1
    assert runner.invoke(cli, ["calibrate", str(digits_dir), "--input-size", "32x32", "--holdout", "1.5",
                               "--out", str(tmp_path / "u.npz")]).exit_code == 1


def test_calibration_does_not_import_tensorflow(digits_dir):
    import subprocess

    code = ("import sys\nfrom edgeship.calibration import build_dataset\nfrom edgeship.spec import InputSpec\n"
            f"ds = build_dataset([{str(digits_dir)!r}], spec=InputSpec(32, 32), count=20)\n"
            "list(ds.to_tflite()())\n"
            "print([m for m in ('tensorflow', 'keras', 'nncf', 'openvino') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


# ---- round trips into the real converters ----------------------------------------------------------------
@pytest.fixture(scope="session")
def saved_model_dir(tmp_path_factory) -> Path:
    """A tiny Keras 3 CNN on 32x32x1, exported as a SavedModel (untrained: ranges are what matter)."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((32, 32, 1)),
        keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    path = tmp_path_factory.mktemp("calib") / "saved_model"
    model.export(str(path), verbose=False)
    return path


def test_tflite_int8_conversion_uses_the_dataset(tmp_path, digits_dir, saved_model_dir):
    import tensorflow as tf

    build_dataset([str(digits_dir)], spec=GRAY32, count=100).save(tmp_path / "c.npz")
    ds = RepresentativeDataset.load(tmp_path / "c.npz")
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = ds.to_tflite()
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    blob = conv.convert()
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=blob)
    it.allocate_tensors()
    scale, zero = it.get_input_details()[0]["quantization"]
    lo, hi = float(ds.x_calib.min()), float(ds.x_calib.max())
    assert it.get_input_details()[0]["dtype"] == np.int8
    assert scale == pytest.approx((hi - lo) / 255.0, rel=0.05)  # the input range came from our samples
    x = ds.x_holdout[:1]
    it.set_tensor(it.get_input_details()[0]["index"], np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8))
    it.invoke()
    assert it.get_tensor(it.get_output_details()[0]["index"]).shape == (1, 10)

    # --model reads size and channels from the artifact; a manifest next to it wins
    model = tmp_path / "digits.tflite"
    model.write_bytes(blob)
    runner = CliRunner()
    r = runner.invoke(cli, ["calibrate", str(digits_dir), "--model", str(model), "--count", "20", "--json",
                            "--out", str(tmp_path / "m.npz")])
    assert r.exit_code == 0, r.output
    spec = json.loads(r.stdout)["spec"]
    assert (spec["height"], spec["width"], spec["channels"], spec["color_order"]) == (32, 32, 1, "GRAY")
    from edgeship.manifest import Manifest

    shipped = InputSpec(32, 32, channels=1, mean=(0.5,), std=(0.5,), resize="letterbox")
    Manifest(name="digits", format="tflite", precision="int8", artifact=model.name, input_spec=shipped).save(model)
    r = runner.invoke(cli, ["calibrate", str(digits_dir), "--model", str(model), "--count", "20", "--json",
                            "--out", str(tmp_path / "m.npz")])
    assert r.exit_code == 0, r.output
    assert InputSpec.from_dict(json.loads(r.stdout)["spec"]) == shipped


def test_nncf_quantize_on_openvino_model(digits_dir, saved_model_dir):
    import nncf
    import openvino as ov

    ds = build_dataset([str(digits_dir)], spec=GRAY32, count=60)
    ov_model = ov.convert_model(str(saved_model_dir))
    q = nncf.quantize(ov_model, ds.to_nncf(), subset_size=len(ds.x_calib))
    fq = [op for op in q.get_ops() if op.get_type_name() == "FakeQuantize"]
    assert fq, "nncf inserted no FakeQuantize nodes"
    compiled = ov.Core().compile_model(q, "CPU")
    out = compiled(ds.x_holdout[:1])[0]
    assert out.shape == (1, 10) and np.isfinite(out).all()
