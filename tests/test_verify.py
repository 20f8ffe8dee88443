"""edgeship verify: real artifacts through the runtime backends, exit codes through the CLI."""

import json
import logging

import numpy as np
import pytest
from click.testing import CliRunner

from edgeship.calibration import RepresentativeDataset
from edgeship.cli import cli
from edgeship.converters.verify import verify_artifact
from edgeship.manifest import Manifest
from edgeship.spec import InputSpec
from tests.helpers.sensitive import converted, workspace


@pytest.fixture(scope="module")
def ws():
    return workspace()


def invoke(*args):
    return CliRunner().invoke(cli, ["verify", *map(str, args)])


def test_cli_exit_codes_and_json(ws):
    good = converted("good", 1.0)["tflite"].path
    bad = converted("sensitive", None)["tflite"].path
    r = invoke(good, "--reference", ws["good"], "--data", ws["calib"], "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["passed"] is True and d["measured"] == "drop" and d["samples"] == len(ws["dataset"].x_holdout)
    assert 0.0 <= d["agreement"] <= 100.0 and d["executed_precision"] == "int8" and d["backend"] == "tflite"
    assert d["outputs"][0]["cosine"] > 0.99 and d["outputs"][0]["sqnr_db"] > 15
    lo, hi = d["drop_ci"]
    assert lo <= d["drop"] <= hi
    assert {c["class"] for c in d["per_class"]} == set(range(10))

    r = invoke(bad, "--reference", ws["sensitive"], "--data", ws["calib"])
    assert r.exit_code == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: accuracy drop") and "exceeds the budget of 1 points" in last
    assert "top-1 agreement" in r.stdout and "classes that lost accuracy" in r.stdout

    assert invoke(bad, "--reference", ws["sensitive"], "--data", ws["calib"], "--max-drop", "none").exit_code == 0
    assert invoke(bad, "--reference", ws["sensitive"], "--data", ws["calib"], "--max-drop", "99.5").exit_code == 0
    assert invoke(bad, "--reference", ws["sensitive"], "--data", ws["calib"], "--max-drop", "x").exit_code == 1


def test_cli_bad_data_is_one_line_error(ws, tmp_path):
    small = RepresentativeDataset.from_arrays(np.zeros((10, 8, 8, 1), np.float32), spec=InputSpec(8, 8, channels=1))
    small.save(tmp_path / "small.npz")
    r = invoke(converted("good", 1.0)["tflite"].path, "--reference", ws["good"], "--data", tmp_path / "small.npz")
    assert r.exit_code == 1
    assert r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1 and "(16, 16, 1)" in r.stderr


def test_layers_name_the_culprit_in_both_formats(ws):
    plain = converted("sensitive", None)
    tfl = verify_artifact(plain["tflite"].path, ws["sensitive"], ws["dataset"], layers=3, max_drop=None)
    assert len(tfl.layers) == 3 and tfl.passed is None
    culprit = tfl.layers[0]  # conv2's output; the tensors after it look damaged too, but come later
    assert "conv2" in culprit["name"] and culprit["error"] > 0.5 and any("conv3" in c for c in culprit["consumers"])
    assert culprit["layer"] == "conv2"  # the Keras layer, as the user wrote it
    ov = verify_artifact(plain["openvino"].path, ws["sensitive"], ws["dataset"], layers=2, max_drop=None)
    top = ov.layers[0]
    assert top["error"] > 0.5 and top["op"] == "Relu" and top["consumers"]
    assert top["layer"] == "conv2"  # OpenVINO renamed the node (Relu_1/fq_output_0): the row still names the layer
    assert top["fp32_sqnr_db"] is not None and top["fp32_sqnr_db"] < 20.0
    healthy = verify_artifact(converted("good", 1.0)["openvino"].path, ws["good"], ws["dataset"], layers=2)
    assert all(e["error"] < 0.05 for e in healthy.layers)
    # a healthy int8 model has no damaged layer: each op's error is measured against the float op on the
    # same inputs, over all samples (no reused interpreter buffers, no per-sample ratios of dense outputs)
    healthy = verify_artifact(converted("good", 1.0)["tflite"].path, ws["good"], ws["dataset"], layers=50)
    assert len(healthy.layers) >= 5
    assert all(e["error"] < 0.05 and e["sqnr_db"] > 20.0 for e in healthy.layers), healthy.layers


def test_unlabelled_data_gates_on_disagreement(ws):
    ds = ws["dataset"]
    unlabelled = RepresentativeDataset(ds.spec, ds.x_calib, ds.x_holdout)
    report = verify_artifact(converted("sensitive", None)["openvino"].path, ws["sensitive"], unlabelled, max_drop=5.0)
    assert report.labelled is False and report.drop is None and report.per_class == []
    assert report.measured == "disagreement" and report.disagreement > 50.0 and report.passed is False
    assert "disagreement" in report.reason


def test_warns_about_the_classic_mistakes(ws, caplog):
    ds = ws["dataset"]
    twice = RepresentativeDataset(ds.spec, ds.x_calib / 255.0, ds.x_holdout / 255.0, y_calib=ds.y_calib, y_holdout=ds.y_holdout)
    with caplog.at_level(logging.WARNING, logger="edgeship.converters.verify"):
        report = verify_artifact(converted("good", 1.0)["tflite"].path, ws["good"], twice, split="all", max_drop=None)
    assert report.samples == len(ds)
    assert any("normalised twice" in w for w in report.warnings)
    assert any("the float model predicts class" in w for w in report.warnings)
    assert any("normalised twice" in rec.getMessage() for rec in caplog.records)


def test_fp32_openvino_runs_in_f32_and_matches(ws, tmp_path):
    from edgeship.converters import convert

    (r,) = convert(ws["good"], formats=["openvino"], precision="fp32", calib=ws["calib"], out_dir=tmp_path, name="f32")
    report = verify_artifact(r.path, ws["good"], ws["calib"])
    assert report.executed_precision == "f32" and report.precision == "fp32"
    assert report.agreement == 100.0 and report.drop == 0.0
    assert report.outputs[0].cosine > 0.99999 and report.outputs[0].max_abs_error < 1e-4


def test_save_records_accuracy_in_the_manifest(ws, tmp_path):
    import shutil

    src = converted("good", 1.0)["tflite"]
    art = tmp_path / src.path.name
    shutil.copy(src.path, art)
    shutil.copy(src.manifest_path, tmp_path / src.manifest_path.name)
    r = invoke(art, "--reference", ws["good"], "--data", ws["calib"], "--save", "--layers", "2")
    assert r.exit_code == 0, r.output
    acc = Manifest.load(art).accuracy
    assert acc.passed is True and acc.split == "holdout" and acc.executed_precision == "int8"
    assert "layers with the largest quantization error" in r.stdout
