"""A detector's budget: the artifact's boxes scored against the float model's own detections (no labels).

The detector is the demo's shapes model (YOLO layout (1, 4 + 3, 144), trained here); its int8 artifacts
are real TFLite / OpenVINO conversions. A damaged artifact is made by degrading the real int8 outputs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeship.cli import cli
from edgeship.converters import metrics as M
from edgeship.demo import demo_paths
from tests.helpers.demo import demo_dir


def _dets(boxes, classes, scores=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.linspace(0.9, 0.5, len(boxes)) if scores is None else np.asarray(scores, np.float32)
    return boxes, scores, np.asarray(classes, np.int64)


def test_detection_agreement_rules():
    a = _dets([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1])
    assert M.detection_agreement([a], [a])["ap50"] == pytest.approx(100.0)
    wrong_class = _dets([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0])
    r = M.detection_agreement([a], [wrong_class])
    assert r["recall"] == pytest.approx(50.0) and r["precision"] == pytest.approx(50.0)
    shifted = _dets([[6, 6, 16, 16], [20, 20, 30, 30]], [0, 1])  # IoU 0.22 with its twin: a miss
    assert M.detection_agreement([a], [shifted])["recall"] == pytest.approx(50.0)
    duplicate = _dets([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], [0, 0, 1])  # one box matched once
    assert M.detection_agreement([a], [duplicate])["precision"] == pytest.approx(200.0 / 3)
    empty = _dets(np.zeros((0, 4)), [])
    assert M.detection_agreement([empty], [empty])["ap50"] == 100.0
    assert M.detection_agreement([a], [empty])["ap50"] == 0.0
    # nothing detected by the float model: no evidence either way, the budget does not apply
    from edgeship.converters.verify import budget
    assert budget({"detection": M.detection_agreement([empty], [a])})[1] is None
    # a confident false positive ranked first costs AP even when recall is full
    fp_first = _dets([[50, 50, 60, 60], [0, 0, 10, 10], [20, 20, 30, 30]], [0, 0, 1], [0.99, 0.9, 0.8])
    assert M.detection_agreement([a], [fp_first])["ap50"] < 100.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_paths(demo_dir(tmp_path_factory))


@pytest.mark.parametrize("key", ["shapes_int8"])
def test_verify_scores_a_detector_on_its_boxes(demo, key):
    r = CliRunner().invoke(cli, ["verify", str(demo[key]), "--reference", str(demo["shapes_keras"]),
                                 "--data", str(demo["shapes_calib"]), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["measured"] == "detection" and d["passed"] is True
    assert d["detection"]["reference_boxes"] >= 20 and d["detection"]["ap50"] >= 95.0
    text = CliRunner().invoke(cli, ["verify", str(demo[key]), "--reference", str(demo["shapes_keras"]),
                                    "--data", str(demo["shapes_calib"])]).stdout
    assert "detections vs float" in text and "AP@0.5" in text


def test_the_budget_catches_lost_detections(demo):
    """Real int8 outputs with the class scores squashed: boxes fall under the threshold, the budget fails."""
    from edgeship.converters.keras_io import load_keras_model, predict
    from edgeship.converters.verify import budget, compare, detector_for, judge, load_dataset, run_artifact

    ds = load_dataset(str(demo["shapes_calib"]))
    x, _ = ds.split("holdout")
    ref = predict(load_keras_model(demo["shapes_keras"]), x)
    art, _ = run_artifact(demo["shapes_int8"], x)
    detector = detector_for(ds.spec, ref)
    healthy = compare(ref, art, detector=detector)
    assert budget(healthy)[0] == "detection" and judge(*budget(healthy), 1.0)[0] is True
    damaged = [np.array(a, copy=True) for a in art]
    damaged[0][:, 4:, :] *= 0.3  # YOLO layout: rows 4.. are the class scores
    cmp = compare(ref, damaged, detector=detector)
    measured, value = budget(cmp)
    passed, reason = judge(measured, value, 1.0)
    assert measured == "detection" and value > 5.0 and passed is False
    assert "AP@0.5 lost against the float model's own detections" in reason
    assert cmp["detection"]["recall"] < 95.0


def test_the_gate_budgets_a_detector_on_its_boxes(demo, tmp_path):
    r = CliRunner().invoke(cli, ["convert", str(demo["shapes_keras"]), "--calib", str(demo["shapes_calib"]), "-f", "tflite",
                                 "-p", "int8", "--task", "detect", "--max-drop", "2", "-o", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    manifest = json.loads(next(tmp_path.glob("*.manifest.json")).read_text())
    gate = manifest["conversion"]["accuracy_gate"]
    assert gate["status"] == "passed", gate
    assert manifest["accuracy"]["measured"] == "detection" and manifest["accuracy"]["detection"]["ap50"] >= 95.0
