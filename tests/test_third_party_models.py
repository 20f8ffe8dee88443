"""Issue 15: models nobody here wrote. MediaPipe's face detector (the TFLite file inside the mediapipe
wheel, fetched from PyPI with pip by the fixture) finds the astronaut's face in scikit-image's
photograph through `edgeship run --task detect`, with its anchor layout and its [-1, 1] input."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeship.cli import cli

WHEEL = "mediapipe==0.10.14"
MEMBER = "mediapipe/modules/face_detection/face_detection_short_range.tflite"
FACE = (180.0, 82.0, 274.0, 176.0)  # the astronaut's face in skimage.data.astronaut(), 512x512 (checked by eye)


@pytest.fixture(scope="module")
def face_model(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("mediapipe")
    r = subprocess.run([sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "--only-binary", ":all:",
                        "--platform", "manylinux2014_x86_64", "--python-version", "3.11", "-d", str(d), "-q"],
                       capture_output=True, text=True, timeout=600)
    wheels = list(d.glob("mediapipe-*.whl"))
    if r.returncode != 0 or not wheels:
        pytest.skip(f"cannot download {WHEEL} from PyPI: {r.stderr.strip()[-300:]}")
    out = d / "face_detection_short_range.tflite"
    with zipfile.ZipFile(wheels[0]) as z:
        out.write_bytes(z.read(MEMBER))
    return out


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory) -> Path:
    import cv2
    from skimage import data

    p = tmp_path_factory.mktemp("photos") / "astronaut.png"
    cv2.imwrite(str(p), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    return p


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_mediapipe_face_detection_finds_the_astronauts_face(face_model, astronaut, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("face\n")
    out = tmp_path / "faces.jsonl"
    r = CliRunner().invoke(cli, ["run", str(face_model), "--source", str(astronaut), "--task", "detect",
                                 "--anchors", "blazeface-short", "--scale", "0.00784313725", "--mean", "1",
                                 "--labels", str(labels), "--sink", f"jsonl:{out}", "--json"])
    assert r.exit_code == 0, r.output
    dets = json.loads(out.read_text().splitlines()[0])["detections"]
    assert len(dets) == 1 and dets[0]["label"] == "face" and dets[0]["score"] > 0.8
    assert _iou(dets[0]["box"], FACE) > 0.7, dets


def test_its_outputs_are_not_read_as_something_else(face_model, astronaut):
    for task, message in (("detect", "anchor-based SSD head"), ("classify", "(1, 896, 16), (1, 896, 1)")):
        r = CliRunner().invoke(cli, ["run", str(face_model), "--source", str(astronaut), "--task", task])
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
        assert r.exit_code == 1 and len(lines) == 1 and message in lines[0], r.stderr
    r = CliRunner().invoke(cli, ["run", str(face_model), "--source", str(astronaut), "--task", "detect",
                                 "--anchors", "blazeface-full"])
    assert r.exit_code == 1 and "gives 2304 anchors" in r.stderr


def test_anchor_layout_in_a_config(face_model, astronaut, tmp_path):
    from edgeship.runtime.config import load_config

    cfg = tmp_path / "faces.yaml"
    cfg.write_text(json.dumps({"artifact": str(face_model), "source": str(astronaut), "task": "detect",
                               "anchors": {"input_hw": [128, 128], "strides": [8, 16, 16, 16]},
                               "input_spec": {"scale": 0.00784313725, "mean": [1.0]}, "threshold": 0.8,
                               "sinks": [f"jsonl:{tmp_path / 'r.jsonl'}"], "max_frames": 1}))
    assert load_config(cfg).anchors["strides"] == [8, 16, 16, 16]
    r = CliRunner().invoke(cli, ["run", "--config", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    boxes = [d["box"] for d in json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])["detections"]]
    assert len(boxes) == 1 and _iou(boxes[0], FACE) > 0.7
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"artifact": str(face_model), "source": str(astronaut), "anchors": "ssd-9000"}))
    r = CliRunner().invoke(cli, ["run", "--config", str(bad)])
    assert r.exit_code == 1 and "anchors: unknown anchor layout 'ssd-9000'" in r.stderr


def test_anchor_centres_follow_mediapipes_layout():
    from edgeship.runtime.processing.anchors import PRESETS, anchor_centres

    a = anchor_centres(PRESETS["blazeface-short"])
    assert a.shape == (896, 2) and np.allclose(a[0], [0.03125, 0.03125]) and np.allclose(a[1], a[0])  # 2 per 8-px cell
    assert np.allclose(a[512:518], [0.0625, 0.0625])  # then 6 per 16-px cell
    assert anchor_centres(PRESETS["blazeface-full"]).shape == (2304, 2)


def test_tfod_ssd_head_through_convert_and_run(tmp_path):
    """A TF Object Detection API SSD head (raw box_encodings (1, 1917, 4) + class_predictions (1, 1917, 1 + C),
    the layout export_tflite_ssd_graph writes without its post-processing op) converted to both formats and
    decoded by `edgeship run --anchors ssd-300`: the boxes land where the reference coder put them, in the
    640x480 frame's pixels. No pretrained TF OD API model ships inside a PyPI package (mediapipe downloads its
    SSD at run time), so the head's outputs are fixed and encoded with tests/helpers/tfod_reference.py, an
    independent reading of the upstream anchor generator and box coder."""
    import cv2
    import keras

    from edgeship.runtime.processing.anchors import PRESETS, grid_anchors
    from tests.test_runtime_processing import _tfod_outputs

    targets = [(0.2, 0.3, 0.6, 0.5, 1), (0.55, 0.6, 0.95, 0.9, 2)]  # ymin, xmin, ymax, xmax, class
    enc, cls = _tfod_outputs(grid_anchors(PRESETS["ssd-300"]), targets, n_classes=3)
    inp = keras.Input((300, 300, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inp)
    heads = []
    for name, value in (("box_encodings", enc[0]), ("class_predictions", cls[0])):
        dense = keras.layers.Dense(value.size, kernel_initializer="zeros",
                                   bias_initializer=keras.initializers.Constant(value.ravel()))(pooled)
        heads.append(keras.layers.Reshape(value.shape, name=name)(dense))
    model_path = tmp_path / "ssd_head.keras"
    keras.Model(inp, heads).save(model_path)
    r = CliRunner().invoke(cli, ["convert", str(model_path), "-f", "tflite", "-f", "openvino", "-p", "fp32",
                                 "-o", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    frame = tmp_path / "frame.png"
    cv2.imwrite(str(frame), np.full((480, 640, 3), 90, np.uint8))
    labels = tmp_path / "labels.txt"
    labels.write_text("person\nbicycle\ncar\n")
    artifacts = sorted((tmp_path / "out").glob("*.tflite")) + sorted((tmp_path / "out").glob("*.xml"))
    assert len(artifacts) == 2
    for artifact in artifacts:
        out = tmp_path / f"{artifact.name}.jsonl"
        r = CliRunner().invoke(cli, ["run", str(artifact), "--source", str(frame), "--task", "detect",
                                     "--anchors", "ssd-300", "--labels", str(labels), "--sink", f"jsonl:{out}", "--json"])
        assert r.exit_code == 0, r.output
        dets = {d["label"]: d for d in json.loads(out.read_text().splitlines()[0])["detections"]}
        assert sorted(dets) == ["bicycle", "car"], dets
        for y0, x0, y1, x1, c in targets:
            d = dets[["person", "bicycle", "car"][c]]
            assert np.allclose(d["box"], [x0 * 640, y0 * 480, x1 * 640, y1 * 480], atol=0.5) and d["score"] > 0.89
