"""Pruning: Keras 3 -> tf_keras bridge proven exact, tfmot in a subprocess, sparsity measured and enforced."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeship.cli import cli
from edgeship.errors import ConversionError
from edgeship.manifest import Manifest
from tests.helpers import models as M
from tests.helpers.data import write_digits_folder
from tests.test_convert import run_tflite


def test_bridge_is_exact_for_functional_sequential_and_two_outputs(root):
    from edgeship.converters.bridge import check_bridge, to_tf_keras

    _, _, x, _ = M.digits_split()
    for maker in (M.digits_classifier_keras, M.digits_sequential_keras, M.digits_two_output_keras):
        k3 = M.load_keras(maker(root))
        tfk = to_tf_keras(k3)
        assert type(tfk).__module__.startswith("tf_keras")
        assert [layer.name for layer in tfk.layers if layer.weights] == [layer.name for layer in k3.layers if layer.weights]
        assert check_bridge(k3, tfk, x[:64]) <= 1e-5
    assert os.environ.get("TF_USE_LEGACY_KERAS") in (None, "0"), "the bridge must not switch this process to legacy Keras"


def test_bridge_refuses_a_copy_that_differs(root):
    from edgeship.converters.bridge import check_bridge, to_tf_keras

    _, _, x, _ = M.digits_split()
    k3 = M.load_keras(M.digits_classifier_keras(root))
    tfk = to_tf_keras(k3)
    w = tfk.get_layer("probs").get_weights()
    w[0][:, 0] += 0.05  # one class's logit moves: the softmax output changes
    tfk.get_layer("probs").set_weights(w)
    with pytest.raises(ConversionError, match="differs from the Keras 3 model"):
        check_bridge(k3, tfk, x[:32])


def test_check_sparsity_allows_one_point_and_one_weight():
    from edgeship.converters.prune import check_sparsity

    ok = {"overall": 0.505, "layers": {"a": {"weights": 1000, "sparsity": 0.509}, "tiny": {"weights": 33, "sparsity": 16 / 33}}}
    check_sparsity(0.5, ok)
    with pytest.raises(ConversionError, match="big 0.0%"):
        check_sparsity(0.5, {"overall": 0.495, "layers": {"big": {"weights": 5000, "sparsity": 0.0}}})
    with pytest.raises(ConversionError, match="overall 47.0%"):
        check_sparsity(0.5, {"overall": 0.47, "layers": {}})


def test_one_shot_prune_keeps_the_surviving_weights(tmp_path, root, calib):
    from edgeship.calibration import RepresentativeDataset
    from edgeship.converters.prune import prune_model

    k3 = M.load_keras(M.digits_classifier_keras(root))
    x = RepresentativeDataset.load(calib).split("calib")[0]
    pruned, report = prune_model(k3, sparsity=0.5, calib_x=x, workdir=tmp_path)
    assert report.mode == "oneshot" and abs(report.overall - 0.5) <= 0.01
    assert set(report.layers) == {"stem_conv", "pw_conv", "branch_conv", "head_conv", "fc", "probs"}
    assert report.bridge_max_abs_diff is not None and report.bridge_max_abs_diff <= 1e-5
    for name in report.layers:
        before = k3.get_layer(name).get_weights()[0]
        after = pruned.get_layer(name).get_weights()[0]
        kept = after != 0
        assert abs(1 - kept.mean() - 0.5) <= 0.01
        np.testing.assert_array_equal(after[kept], before[kept])  # masks only, no weight update
        assert np.abs(before[kept]).min() >= np.abs(before[~kept]).max()  # the smallest magnitudes went
    # BatchNorm statistics and unpruned layers are untouched
    for name in ("stem_bn", "dw_conv"):
        for a, b in zip(k3.get_layer(name).get_weights(), pruned.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert report.sizes["after_gzip_bytes"] < report.sizes["before_gzip_bytes"]
    assert os.environ.get("TF_USE_LEGACY_KERAS") in (None, "0")


def test_cli_prune_finetune_polynomial_to_tflite_int8(tmp_path, root, calib):
    folder = write_digits_folder(tmp_path / "train", per_class=30)
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["convert", str(M.digits_classifier_keras(root)), "-f", "tflite", "-p", "int8",
                                 "--calib", str(calib), "--prune", "0.6", "--prune-schedule", "polynomial",
                                 "--finetune", str(folder), "--epochs", "2", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    (art,) = json.loads(r.stdout)["artifacts"]
    m = Manifest.load(art["path"])
    sp = m.sparsity
    assert sp["target"] == 0.6 and abs(sp["overall"] - 0.6) <= 0.01 and sp["mode"] == "finetune"
    assert sp["schedule"]["kind"] == "polynomial" and all(abs(v - 0.6) <= 0.02 for v in sp["layers"].values())
    assert "not latency" in sp["note"]
    assert sp["float_model_sizes"]["after_gzip_bytes"] < sp["float_model_sizes"]["before_gzip_bytes"]
    assert Path(art["path"]).name == "digits_classifier_int8_p60.tflite"
    # the pruned, fine-tuned int8 model still reads digits
    from edgeship.calibration import RepresentativeDataset

    x, y = RepresentativeDataset.load(calib).split("holdout")
    acc = float(np.mean(run_tflite(Path(art["path"]), x)[0].argmax(1) == y))
    assert acc >= 0.8, acc  # 60% of the weights gone after 2 epochs: still far above chance (0.1)
    assert m.accuracy.drop is not None and m.accuracy.drop <= 100 / m.accuracy.samples + 1e-9, m.accuracy  # int8 kept what pruning left


def test_tfmot_default_frequency_on_a_short_run_is_caught(tmp_path, root, calib):
    """A short fine-tune with tfmot's default frequency (100) prunes nothing: convert must fail, leave nothing."""
    folder = write_digits_folder(tmp_path / "train", per_class=10)
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["convert", str(M.digits_classifier_h5(root)), "-f", "tflite", "-p", "fp32",
                                 "--prune", "0.5", "--prune-schedule", "polynomial", "--prune-frequency", "100",
                                 "--finetune", str(folder), "--epochs", "1", "-o", str(out)])
    assert r.exit_code == 1, r.output
    line = [ln for ln in r.output.strip().splitlines() if not ln.startswith("WARNING: ")]  # (the default-InputSpec note)
    assert len(line) == 1 and "target sparsity 50.0% missed" in line[0] and "overall 0.0%" in line[0]
    assert not out.exists() or not any(out.iterdir())
