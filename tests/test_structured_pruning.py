"""edgeship prune and convert --prune-channels: channels removed, distillation (no labels needed), speed measured.

Models: keras.applications MobileNetV2 (nobody here wrote it; weights=None) and the demo's digits CNN
(trained here on scikit-learn's digits); the distillation data is the demo's unlabelled calibration set.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeship.cli import cli
from edgeship.demo import demo_paths
from tests.helpers.demo import demo_dir


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_paths(demo_dir(tmp_path_factory))


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    import keras

    path = tmp_path_factory.mktemp("mnv2") / "mobilenetv2.keras"
    keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None).save(str(path))
    return path


def test_prune_halves_the_flops_of_a_keras_applications_model(mobilenet, tmp_path):
    import keras

    out = tmp_path / "pruned.keras"
    r = CliRunner().invoke(cli, ["prune", str(mobilenet), "--flops", "0.5", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    c = report["channels"]
    assert 0.4 <= c["flops_after"] / c["flops_before"] <= 0.6 and c["params_after"] < c["params_before"]
    assert c["frozen"] == {}  # every layer of MobileNetV2 is understood
    pruned = keras.saving.load_model(str(out))  # plain Keras, compiled state included, no custom objects
    original = keras.saving.load_model(str(mobilenet))
    assert pruned.output_shape == original.output_shape
    x = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    assert np.allclose(pruned.predict(x, verbose=0).sum(axis=1), 1.0, atol=1e-4)
    assert json.loads((tmp_path / "pruned.prune.json").read_text())["channels"]["flops_after"] == c["flops_after"]
    # human output: totals, the per-layer table summarised, and the missing distillation said
    text = CliRunner().invoke(cli, ["prune", str(mobilenet), "--channels", "0.25", "-o", str(tmp_path / "p2.keras")]).stdout
    assert "parameters" in text and "GFLOPs" in text and "and " in text and "no distillation" in text
    # MobileNetV2's trunks are the narrow path: auto (the default above) kept them; --trunks prune cuts them too
    assert c["trunks"] == "kept"
    r = CliRunner().invoke(cli, ["prune", str(mobilenet), "--flops", "0.5", "--trunks", "prune", "-o", str(tmp_path / "k.keras"),
                                 "--json"])
    assert r.exit_code == 0, r.output
    k = json.loads(r.stdout)["channels"]
    assert k["trunks"] == "pruned" and 0.4 <= k["flops_after"] / k["flops_before"] <= 0.6 and k["pruned_groups"] > c["pruned_groups"]
    r = CliRunner().invoke(cli, ["convert", str(mobilenet), "-f", "tflite", "-p", "fp32", "--prune-trunks", "keep", "-o",
                                 str(tmp_path / "conv")])
    assert r.exit_code == 1 and "--prune-trunks only applies with --prune-channels" in r.output


def test_distillation_without_labels_wins_agreement_back(demo, tmp_path):
    out = tmp_path / "digits_pruned.keras"
    args = ["prune", str(demo["digits_keras"]), "--channels", "0.5", "--calib", str(demo["digits_calib"]), "-o", str(out)]
    r = CliRunner().invoke(cli, args + ["--distill", "8", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)["distillation"]
    assert d["labelled"] is False  # the demo's calibration set has no labels: the teacher's outputs are the targets
    assert d["after"]["agreement"] > d["before"]["agreement"] + 5.0 and d["after"]["agreement"] >= 80.0, d
    assert len(d["losses"]) == 8 and d["losses"][-1] < d["losses"][0]
    import keras

    student = keras.saving.load_model(str(out))  # plain Keras: no training state, no custom loss saved
    assert getattr(student, "optimizer", None) is None and not student.compiled


def test_prune_distil_cycles_reach_the_target_in_cuts(demo, tmp_path):
    """--cycles 3: three cuts, each the same share of what is left, distilled from the unpruned model in between."""
    from edgeship.converters.structured import cycle_fractions

    assert cycle_fractions(0.5, 1) == [0.5] and cycle_fractions(0.75, 2) == pytest.approx([0.5, 0.75])
    out = tmp_path / "cycled.keras"
    r = CliRunner().invoke(cli, ["prune", str(demo["digits_keras"]), "--flops", "0.6", "--cycles", "3", "--distill", "2",
                                 "--calib", str(demo["digits_calib"]), "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    cycles, c = rep["cycles"], rep["channels"]
    assert [e["cycle"] for e in cycles] == [1, 2, 3]
    assert cycles[0]["params"] > cycles[1]["params"] > cycles[2]["params"] == c["params_after"]
    assert cycles[0]["flops"] > cycles[1]["flops"] > cycles[2]["flops"] == c["flops_after"]
    assert all(e["distillation"]["epochs"] == 2 for e in cycles[:2]) and cycles[2]["distillation"] is None
    assert rep["distillation"]["epochs"] == 2  # after the last cut
    assert 0.45 <= 1 - c["flops_after"] / c["flops_before"] <= 0.75, c  # the cumulative target, within rounding to 8
    assert all(v["before"] >= v["after"] for v in c["layers"].values())  # channels before the first cut, after the last
    import keras

    assert keras.saving.load_model(str(out)).count_params() == c["params_after"]
    # --channels in cycles reaches what one cut removes (each cut rounding to multiples of 8 must not fall short)
    from edgeship.converters.channels import prune_channels

    _, one = prune_channels(keras.saving.load_model(str(demo["digits_keras"])), ratio=0.5)
    r = CliRunner().invoke(cli, ["prune", str(demo["digits_keras"]), "--channels", "0.5", "--cycles", "2", "--distill", "1",
                                 "--calib", str(demo["digits_calib"]), "-o", str(tmp_path / "c2.keras"), "--json"])
    assert r.exit_code == 0, r.output
    two = json.loads(r.stdout)["channels"]
    assert abs(two["flops_after"] - one.flops_after) <= 0.1 * one.flops_before, (two["flops_after"], one.flops_after)
    r = CliRunner().invoke(cli, ["prune", str(demo["digits_keras"]), "--flops", "0.6", "--cycles", "3",
                                 "--calib", str(demo["digits_calib"]), "-o", str(tmp_path / "y.keras")])
    assert r.exit_code == 1 and "cycles distil between cuts: add --distill" in r.stderr
    assert not (tmp_path / "y.keras").exists()


def test_convert_prunes_channels_then_quantizes_and_gates(demo, tmp_path):
    r = CliRunner().invoke(cli, ["convert", str(demo["digits_keras"]), "-f", "tflite", "-p", "int8", "--calib",
                                 str(demo["digits_calib"]), "--prune-channels", "0.5", "--distill", "3", "-o", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "channels pruned: parameters" in r.stderr
    manifest = json.loads(next(tmp_path.glob("*_c50*.manifest.json")).read_text())
    cp = manifest["conversion"]["channel_pruning"]
    assert cp["channels"]["params_after"] < cp["channels"]["params_before"] and cp["distillation"]["epochs"] == 3
    assert manifest["conversion"]["accuracy_gate"]["status"] in ("passed", "mixed", "fallback")


def test_speedup_prunes_in_measured_steps(demo, tmp_path):
    out = tmp_path / "fast.keras"
    r = CliRunner().invoke(cli, ["prune", str(demo["digits_keras"]), "--speedup", "20", "-p", "fp32", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    steps = rep["steps"]
    assert len(steps) >= 2 and all(s["base_ms"] > 0 and s["pruned_ms"] > 0 for s in steps)
    assert [s["flops_removed"] for s in steps] == sorted(s["flops_removed"] for s in steps)
    # 20x is out of reach: the fastest step measured is kept
    assert rep["latency"]["format"] == "tflite" and rep["latency"]["speedup"] == max(s["speedup"] for s in steps)
    assert out.exists()


@pytest.mark.parametrize("args, message", [
    (["--channels", "0.5", "--flops", "0.5"], "exactly one pruning target"),
    ([], "exactly one pruning target"),
    (["--channels", "0.5", "--distill", "3"], "need a calibration set"),
    (["--speedup", "2"], "--speedup measures the int8 artifact"),
])
def test_bad_prune_requests_are_one_line_errors(demo, tmp_path, args, message):
    out = tmp_path / "x.keras"
    r = CliRunner().invoke(cli, ["prune", str(demo["digits_keras"]), "-o", str(out)] + args)
    assert r.exit_code == 1 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output
    assert not out.exists()
    r = CliRunner().invoke(cli, ["prune", str(demo["digits_keras"]), "--channels", "0.5", "-o", str(tmp_path / "x.h5")])
    assert r.exit_code == 1 and "expected a .keras file name" in r.stderr
