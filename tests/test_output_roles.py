"""Issue 15: outputs have roles; verify and the gate measure the class-score output, not output 0;
a 1000-class softmax keeps summing to 1 after int8; a collapsed output is named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeship import roles as R
from edgeship.cli import cli
from edgeship.calibration import RepresentativeDataset
from edgeship.converters import convert
from edgeship.converters.verify import compare, verify_artifact
from edgeship.errors import InputError
from edgeship.manifest import Manifest
from edgeship.runtime.backends import open_backend
from tests.helpers.models import digits_split, digits_spec


def test_roles_and_collapse_are_pure_functions():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(1000) * 0.05, size=16)
    boxes = rng.uniform(0, 1, (16, 4))
    assert R.guess_roles([boxes, probs, rng.normal(size=(16, 7, 7, 3))]) == ["boxes", "class_scores", "raw"]
    assert R.class_output(["boxes", "class_scores"]) == 1 and R.class_output(["raw", "raw"]) is None
    assert R.class_output(["class_scores", "class_scores"]) is None  # ambiguous: agreement metrics only
    flat = np.full((4, 1000), 1e-3)
    assert R.int8_lost_mass(flat, True) > 0.99 and R.int8_lost_mass(np.eye(10)[:4], True) == 0.0
    q = np.round(flat * 256) / 256  # what TFLite's 1/256 int8 softmax gives: all zeros
    assert "instead of 1" in R.collapsed(flat, q) and R.collapsed(flat, flat) is None
    confident = np.full((4, 10), 1e-5)
    confident[:, 3] = 1 - 9e-5
    assert R.collapsed(confident, np.round(confident * 256) / 256) is None  # tiny probabilities to 0: harmless
    heat = rng.uniform(0.2, 1.0, (4, 8, 8))
    assert "significant values" in R.collapsed(heat, np.zeros_like(heat))
    assert R.parse_role_overrides(["digit=class_scores", "1=boxes"], ["digit", "box"]) == {0: "class_scores", 1: "boxes"}
    with pytest.raises(InputError, match="has no output 'nope'"):
        R.parse_role_overrides(["nope=raw"], ["digit", "box"])
    with pytest.raises(InputError, match="ROLE one of"):
        R.parse_role_overrides(["digit=logits"], ["digit"])


def test_compare_uses_the_class_score_output_wherever_it_is():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, 50)
    scores = np.eye(10)[y] * 0.9 + 0.01
    boxes = rng.uniform(0, 1, (50, 4))
    out = compare([boxes, scores], [boxes + 0.01, scores], labels=y)
    assert out["class_output"] == 1 and out["reference_accuracy"] == 100.0 and out["drop"] == 0.0
    assert [o.role for o in out["outputs"]] == ["boxes", "class_scores"]
    swapped = compare([boxes, scores], [scores, boxes], labels=y)  # a file listing its outputs in another order
    assert swapped["class_output"] == 1 and swapped["agreement"] == 100.0
    none = compare([boxes, rng.normal(size=(50, 3, 3))], [boxes, rng.normal(size=(50, 3, 3))], labels=y)
    assert none["class_output"] is None and "agreement" not in none


@pytest.fixture(scope="module")
def box_first(tmp_path_factory) -> Path:
    """A two-output digits model trained here: a 4-value box regression FIRST, then 10-way class scores."""
    import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = L.Input((32, 32, 3), name="image")
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inp)
    x = L.BatchNormalization(momentum=0.9)(x)
    x = L.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(32, activation="relu")(x)
    box = L.Dense(4, name="box")(x)
    digit = L.Dense(10, activation="softmax", name="digit")(x)
    model = keras.Model(inp, [box, digit])
    x_tr, y_tr, _, _ = digits_split()
    ink = x_tr.mean(axis=(1, 2))  # a real regression target: the ink per channel and overall
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=["mse", "sparse_categorical_crossentropy"])
    model.fit(x_tr, (np.concatenate([ink, ink.mean(axis=1, keepdims=True)], axis=1), y_tr), epochs=8, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("boxfirst") / "box_first.keras"
    model.save(path)
    return path


def test_two_output_model_converts_from_unlabelled_frames_and_verifies_the_scores(box_first, tmp_path):
    _, _, x_te, y_te = digits_split()
    spec = digits_spec()
    unlabelled = RepresentativeDataset.from_arrays(x_te[:200], spec=spec, holdout=0.3)  # what a camera gives
    results = convert(box_first, formats=["tflite", "openvino"], precision="int8", calib=unlabelled, out_dir=tmp_path / "out")
    labelled = RepresentativeDataset.from_arrays(x_te, y_te, spec=spec, labels=[str(i) for i in range(10)], holdout=0.5)
    for r in results:
        assert [t.role for t in r.manifest.outputs] == ["boxes", "class_scores"]
        report = verify_artifact(r.path, box_first, labelled, max_drop=2.0)
        assert report.class_output == 1 and report.reference_accuracy > 40, r.path.name  # chance: 10%
        assert report.passed and [o.role for o in report.outputs] == ["boxes", "class_scores"]
    # a deliberately broken int8 artifact (scores of another, untrained model) fails the budget
    import keras

    broken = keras.models.clone_model(keras.saving.load_model(box_first))
    bad = convert(broken, formats=["tflite"], precision="int8", calib=unlabelled, out_dir=tmp_path / "bad", max_drop=None,
                  name="broken")
    report = verify_artifact(bad[0].path, box_first, labelled, max_drop=2.0)
    assert report.passed is False and report.class_output == 1


def test_a_1000_class_softmax_keeps_summing_to_one_in_int8(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = L.Input((32, 32, 3))
    x = L.Conv2D(16, 3, activation="relu")(inp)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Softmax()(L.Dense(1000)(x))
    model = keras.Model(inp, out)
    from edgeship.spec import InputSpec

    spec = InputSpec(32, 32)
    frames = np.random.default_rng(0).integers(0, 256, (80, 32, 32, 3), dtype=np.uint8)
    ds = RepresentativeDataset.from_arrays(frames, spec=spec, holdout=0.25)
    [r] = convert(model, formats=["tflite"], precision="int8", calib=ds, out_dir=tmp_path / "out", max_drop=None, name="wide")
    m = Manifest.load(r.path)
    assert m.io_dtype == {"input": "int8", "output": "float32"} and "SOFTMAX" in m.conversion.options["denylisted_ops"]
    with open_backend(r.path) as b:
        y = b.infer(ds.x_holdout)[0]
    assert np.allclose(y.sum(axis=1), 1.0, atol=0.02)
    ref = model.predict(ds.x_holdout, verbose=0)
    assert R.collapsed(ref, y) is None
    # the plain int8 conversion (what it was before) collapses, and verify says so
    from edgeship.converters.keras_io import export_saved_model
    from edgeship.converters.tflite import to_tflite

    saved = export_saved_model(model, tmp_path / "sm", sample_shape=spec.sample_shape)
    plain = to_tflite(saved, tmp_path / "plain.tflite", precision="int8", dataset=ds)
    with open_backend(plain) as b:
        collapsed = b.infer(ds.x_holdout)[0]
    assert "instead of 1" in R.collapsed(ref, collapsed)


def test_openvino_conversion_error_keeps_its_cause():
    from edgeship.converters.openvino import ov_error_summary

    e = RuntimeError("Check 'is_conversion_successful' failed at src/frontends/tensorflow/src/frontend.cpp:436:\n"
                     "FrontEnd API failed with OpConversionFailure:\n"
                     "[TensorFlow Frontend] Internal error, no translator found for operation(s): Conv2DTransposeBias\n"
                     "To facilitate the conversion of unsupported operations, refer to https://docs.openvino.ai/\n"
                     "No translator found for Conv2DTransposeBias node.")
    line = ov_error_summary(e)
    assert "\n" not in line and line.startswith("[TensorFlow Frontend] Internal error")
    assert line.endswith("(cause: No translator found for Conv2DTransposeBias node.)")


def test_raw_outputs_in_full(art, tmp_path):
    """npz:DIR keeps every output tensor of every frame; jsonl-raw:FILE writes their values in full."""
    import json

    import cv2
    from click.testing import CliRunner

    from edgeship.cli import cli

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i}.png"), np.full((32, 32, 3), 60 * i, np.uint8))
    r = CliRunner().invoke(cli, ["run", str(art["tflite_f32"]), "--source", str(frames), "--task", "raw",
                                 "--sink", f"npz:{tmp_path / 'npz'}", "--sink", f"jsonl-raw:{tmp_path / 'r.jsonl'}", "--json"])
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "npz").glob("frame_*.npz"))
    assert len(files) == 3
    with open_backend(art["tflite_f32"]) as b:
        n_out = b.outputs[0].shape[-1]
    with np.load(files[0]) as z:
        assert z["output_0"].shape == (n_out,) and int(z["frame"]) >= 0
    lines = [json.loads(ln) for ln in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and len(lines[0]["raw"][0]["values"][0]) == n_out


def test_layouts_no_decoder_knows_are_refused_with_their_shapes():
    from edgeship.errors import SpecError
    from edgeship.runtime.processing import make_postprocess
    from edgeship.spec import InputSpec

    spec = InputSpec(128, 128)
    with pytest.raises(SpecError, match=r"anchor-based SSD head"):  # MediaPipe face detection's raw head
        make_postprocess("detect", spec=spec, output_shapes=[(1, 896, 16), (1, 896, 1)])
    with pytest.raises(SpecError, match=r"\(1, 4\), \(1, 10\)"):  # boxes first, scores second, no roles known
        make_postprocess("classify", spec=spec, output_shapes=[(1, 4), (1, 10)])
    post = make_postprocess("classify", spec=spec, output_shapes=[(1, 4), (1, 10)], output_roles=["boxes", "class_scores"],
                            labels=[str(i) for i in range(10)])
    scores = np.zeros((1, 10), np.float32)
    scores[0, 7] = 1.0
    assert post([np.ones((1, 4), np.float32), scores], (64, 64))["classification"].top[0][1] == "7"


def test_an_sqnr_budget_gates_a_model_without_class_scores(box_first, tmp_path):
    """--min-sqnr: the budget for outputs that are not class scores (here the ink regression alone)."""
    import keras

    from edgeship.records import GateRecord

    full = keras.saving.load_model(box_first)
    regression = keras.Model(full.input, full.outputs[0])
    path = tmp_path / "ink.keras"
    regression.save(path)
    _, _, x_te, _ = digits_split()
    unlabelled = RepresentativeDataset.from_arrays(x_te[:200], spec=digits_spec(), holdout=0.3)
    [ok] = convert(path, formats=["tflite"], precision="int8", calib=unlabelled, out_dir=tmp_path / "ok", max_drop=None,
                   min_sqnr=10.0, prefer="quantized")
    gate = ok.manifest.conversion.accuracy_gate
    assert isinstance(gate, GateRecord) and gate.status == "passed" and gate.min_sqnr_db == 10.0 and ok.manifest.precision == "int8"
    int8_sqnr = ok.manifest.accuracy.worst_sqnr
    assert int8_sqnr is not None and 10.0 <= int8_sqnr < 200.0
    # a budget no rung meets: the gate keeps the closest (fp32) and says it failed
    [strict] = convert(path, formats=["tflite"], precision="int8", calib=unlabelled, out_dir=tmp_path / "strict",
                       max_drop=None, min_sqnr=200.0)
    g = strict.manifest.conversion.accuracy_gate
    assert g.status == "failed" and strict.manifest.precision == "fp32" and "below the budget of 200 dB" in g.reason
    assert "no rung meets" in g.reason and [r["rung"] for r in g.ladder if r["status"] == "kept"] == ["fp32"]
    # verify: the same budget from the command line, exit 1 when an output falls short
    unlabelled.save(tmp_path / "calib.npz")
    base = ["verify", str(ok.path), "--reference", str(path), "--data", str(tmp_path / "calib.npz"), "--max-drop", "none"]
    r = CliRunner().invoke(cli, base + ["--min-sqnr", str(int8_sqnr + 30)])
    assert r.exit_code == 1 and "output 0 SQNR" in r.stderr and "below the budget" in r.stderr
    r = CliRunner().invoke(cli, base + ["--min-sqnr", "10", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["passed"] is True and json.loads(r.stdout)["worst_sqnr"] >= 10
    r = CliRunner().invoke(cli, base)  # no budget that applies: reported, not judged
    assert r.exit_code == 0
