"""Demo data (what quickstart and examples/*.yaml use): models trained in seconds, int8 artifacts with
manifests, videos with ground truth, reuse on a second call, no TensorFlow on import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeship.demo import build_demo, demo_paths
from edgeship.demo.scenes import SHAPE_CLASSES, Obj, Track, scene_frames
from edgeship.manifest import Manifest
from tests.helpers.demo import demo_dir


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return demo_dir(tmp_path_factory)


def test_artifacts_and_manifests(demo):
    digits = Manifest.load(demo / "models" / "digits_int8.tflite")
    assert digits.task == "classify" and digits.labels == [str(i) for i in range(10)] and digits.precision == "int8"
    assert (digits.input_spec.height, digits.input_spec.width, digits.input_spec.color_order) == (32, 32, "GRAY")
    assert digits.accuracy.extra["keras_accuracy"] >= 0.9
    shapes = Manifest.load(demo / "models" / "shapes_int8.tflite")
    assert shapes.task == "detect" and shapes.labels == list(SHAPE_CLASSES)
    assert shapes.outputs[0].shape[1:] == [4 + len(SHAPE_CLASSES), 144]  # YOLO-style (N, 4+nc, A)
    assert shapes.inputs[0].dtype == "int8" and shapes.outputs[0].scale is not None
    assert shapes.accuracy.extra["keras_recall"] >= 0.9
    for key in ("digits_keras", "shapes_keras", "digits_calib", "shapes_calib"):
        assert Path(demo_paths(demo)[key]).stat().st_size > 0


def test_videos_match_their_ground_truth(demo):
    import cv2

    labels = json.loads((demo / "videos" / "belt.json").read_text())["labels"]
    truth = json.loads((demo / "videos" / "shapes.json").read_text())
    for name, n in (("belt.mp4", len(labels)), ("shapes.mp4", len(truth["objects"]))):
        cap = cv2.VideoCapture(str(demo / "videos" / name))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == n
        cap.release()
    assert set(labels) <= set(range(10)) and len(set(labels)) == 10
    seen = {o["class"] for objs in truth["objects"] for o in objs}
    assert seen == {"square", "circle"} and truth["size"] == [320, 240]


def test_second_build_reuses_everything(demo):
    before = {p: p.stat().st_mtime_ns for p in demo.rglob("*") if p.is_file()}
    again = build_demo(demo)
    assert again["trained"] == []
    assert {p: p.stat().st_mtime_ns for p in demo.rglob("*") if p.is_file()} == before


def test_scene_truth_excludes_partial_objects():
    tr = Track(0, (0.0, 100.0), (300.0, 100.0), 0, 4, r=20)
    frames, truth = scene_frames(4, [tr], hw=(200, 300))
    assert len(frames) == 4 and frames[0].shape == (200, 300, 3)
    assert [len(t) for t in truth] == [0, 1, 1, 0]  # centre at x=0 and x=300: half outside
    assert isinstance(truth[1][0], Obj) and truth[1][0].box == pytest.approx((80, 80, 120, 120))
    assert frames[1][100, 100].mean() > frames[0][100, 100].mean() + 50  # the shape is drawn


def test_detector_targets_pick_the_centre_cell():
    from edgeship.demo.train import shapes_targets

    t = shapes_targets([[Obj(2, 160.0, 120.0, 20.0, (255, 255, 255))]], hw=(240, 320), grid=12)
    a = 6 * 12 + 6
    assert t.shape == (1, 4 + 3 + 1, 144) and t[0, -1].sum() == 1 and t[0, -1, a] == 1
    assert t[0, :4, a] == pytest.approx([0.5, 0.5, 40 / 320, 40 / 240])
    assert t[0, 4:7, a].tolist() == [0, 0, 1]


def test_import_does_not_load_tensorflow():
    code = "import sys, edgeship.demo, edgeship.runtime.apps.deploy, edgeship.runtime.config; " \
           "print(sorted(m for m in ('tensorflow', 'keras', 'tf_keras', 'nncf') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_digits_reference_model_is_reproducible_and_good():
    """The quickstart's float digits CNN: same seed, same model, and the 96% the belt camera allows (issue 18)."""
    from edgeship.demo import train
    from edgeship.quickstart.plan import Options

    epochs = Options().digits_epochs
    first = train.train_digits(epochs=epochs, seed=0)
    again = train.train_digits(epochs=epochs, seed=0)
    assert first.metrics["accuracy"] == again.metrics["accuracy"]
    assert first.metrics["accuracy"] >= 0.95, first.metrics
