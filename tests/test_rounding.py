"""GPTQ weight rounding (issue 27): each layer's int8 weights rounded together so their errors cancel in its output."""

import numpy as np
import pytest

from edgeship.converters import rounding as R
from tests.helpers.sensitive import workspace


def _correlated(rows: int, cols: int, n: int = 4000, seed: int = 0):
    """Weights, per-row steps and the second moments of inputs whose columns are strongly correlated (as neighbouring
    pixels of a feature map are)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 4))
    x = base @ rng.normal(size=(4, cols)) + 0.1 * rng.normal(size=(n, cols))
    w = rng.normal(size=(rows, cols))
    step = np.abs(w).max(axis=1) / R.LEVELS
    return w, step, x.T @ x


def test_gptq_cancels_rounding_errors_that_nearest_leaves():
    w, step, h = _correlated(16, 36)
    q = R.gptq(w, h, step)
    near = R.nearest(w, step)
    assert q.shape == w.shape and np.all(np.abs(q) <= R.LEVELS) and np.array_equal(q, np.round(q))
    assert np.any(q != near)
    assert np.all(np.abs(q - w / step[:, None]) <= 8)  # a few steps at most from the weight: the same grid, no drift
    assert R.output_error(w, q, step, h) < 0.5 * R.output_error(w, near, step, h)
    # one H per row (a depthwise layer) gives each row what a run of that row alone with its own H gives it
    hs = np.stack([_correlated(1, 36, seed=s)[2] for s in range(len(w))])
    per_row = R.gptq(w, hs, step)
    assert np.array_equal(per_row, np.concatenate([R.gptq(w[r:r + 1], hs[r], step[r:r + 1]) for r in range(len(w))]))
    assert not np.array_equal(per_row, q)
    # a zero weight (pruned) stays zero; the others make up for it
    pruned = np.where(np.abs(w) < 0.5, 0.0, w)
    qp = R.gptq(pruned, h, step)
    assert np.all(qp[pruned == 0] == 0) and np.any(qp != R.nearest(pruned, step))
    assert R.output_error(pruned, qp, step, h) < R.output_error(pruned, R.nearest(pruned, step), step, h)
    # uncorrelated inputs (diagonal H): there is nothing to cancel, and GPTQ is nearest rounding
    assert np.array_equal(R.gptq(w, np.diag(np.diag(h)), step), near)


def test_gptq_on_a_real_int8_model_is_exact_and_lowers_every_layers_error(tmp_path):
    """On the trained digits CNN: the levels fitted on its float-I/O twin are written exactly into the int8-I/O artifact
    (the int8 weights and nothing else change), every layer's output error on the calibration samples drops, and a
    layer kept in float by a candidate is skipped, not an error."""
    import tensorflow as tf

    from edgeship.converters import tflite as T
    from tests.test_int8_quality import _calibrated_digits, _changed_tensors

    calibrated, twin, x = _calibrated_digits(tmp_path)
    found = R.fit(calibrated, twin, x)
    assert found.layers >= 5 and len(found.levels) == found.layers, found.to_dict()
    assert 0 < found.error_ratio < 0.8, found.to_dict()
    int8_io = T.quantize_calibrated(calibrated, tf, io="int8", out_io="int8")
    rounded = R.apply(int8_io, found.levels)
    assert _changed_tensors(int8_io, rounded) == {"int8"}
    back = R.quantized_weights(R._model(rounded))
    model = R._model(rounded)
    for name, levels in found.levels.items():
        stored = R._buffer(model, back[name].tensor_index, "i1")
        assert np.array_equal(stored, levels.values), name
    nope = R.Levels(np.zeros((2, 2), np.int8), np.ones(2))
    with pytest.raises(Exception, match="no int8 weights of shape"):
        R.apply(int8_io, {"nope": nope})
    assert R.apply(int8_io, {"nope": nope}, strict=False) == int8_io
    name, first = next(iter(found.levels.items()))  # levels on other steps (another quantization) are refused
    with pytest.raises(Exception, match="on the fitted steps"):
        R.apply(int8_io, {name: R.Levels(first.values, first.steps * 1.5)})
    # a candidate that keeps the first layer in float: its weights stay float, the other layers get their levels
    mixed = T.quantize_calibrated(calibrated, tf, io="float", out_io="float", nodes=[name])
    assert name not in R.quantized_weights(R._model(mixed))
    with pytest.raises(Exception, match="no int8 weights"):
        R.apply(mixed, found.levels)
    got = R.quantized_weights(R._model(R.apply(mixed, found.levels, strict=False)))
    others = [n for n in found.levels if n != name and n in got]
    assert others and all(np.array_equal(R._buffer(R._model(R.apply(mixed, found.levels, strict=False)),
                                                     got[n].tensor_index, "i1"), found.levels[n].values) for n in others)


@pytest.mark.parametrize("op,stride,dilation,same,mult", [
    ("CONV_2D", (2, 2), (1, 1), True, 1), ("CONV_2D", (1, 1), (2, 2), False, 1), ("CONV_2D", (2, 1), (1, 1), False, 1),
    ("DEPTHWISE_CONV_2D", (2, 2), (1, 1), True, 2), ("DEPTHWISE_CONV_2D", (1, 1), (2, 2), True, 1)])
def test_patches_are_what_each_output_position_multiplies(op, stride, dilation, same, mult):
    """Rows of patches times the weights in TFLite's layout give TensorFlow's own convolution, position by
    position (stride, dilation, SAME padding with its extra pixel after, a depth multiplier)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 9, 10, 3)).astype(np.float32)
    layer = R.WeightLayer(op, "y", 0, 1, stride=stride, dilation=dilation, same_padding=same)
    pad = "SAME" if same else "VALID"
    if op == "CONV_2D":
        w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)  # (O, kh, kw, I)
        ref = tf.nn.conv2d(a, np.transpose(w, (1, 2, 3, 0)), strides=[1, *stride, 1], padding=pad,
                           dilations=list(dilation)).numpy()
        got = R._patches(a, layer, w.shape) @ w.reshape(4, -1).T
    else:
        w = rng.normal(size=(1, 3, 3, 3 * mult)).astype(np.float32)  # (1, kh, kw, C*mult)
        ref = tf.nn.depthwise_conv2d(a, w[0].reshape(3, 3, 3, mult), strides=[1, *stride, 1], padding=pad,
                                     dilations=list(dilation)).numpy()
        p = R._patches(a, layer, w.shape)  # (positions, kh*kw, C)
        rows = R.as_rows(op, w)  # (C*mult, kh*kw): output channel c reads input channel c // mult
        got = np.einsum("nkc,ck->nc", p[:, :, np.arange(3 * mult) // mult], rows)
    np.testing.assert_allclose(got, ref.reshape(-1, ref.shape[-1]), rtol=1e-4, atol=1e-4)
    sampled = R._patches(a, layer, w.shape, np.random.default_rng(1))
    assert len(sampled) == min(R.MAX_ROWS, len(got))


def test_weight_rounding_options_recorded_and_int16x8_gains(tmp_path):
    """convert: gptq and nearest differ only in int8 weights, auto records what it measured and keeps exactly one of
    the two; in int16x8, where weights are what limits the model, GPTQ brings the outputs closer to the float model;
    bad values are one-line errors with nothing written."""
    import json

    from click.testing import CliRunner

    from edgeship.cli import cli
    from edgeship.converters import convert
    from edgeship.converters.ranges import output_sqnr
    from edgeship.converters.verify import reference_outputs, run_artifact
    from edgeship.errors import InputError
    from tests.test_int8_quality import _changed_tensors

    ws = workspace()
    common = dict(precision="int8", calib=ws["calib"], max_drop=None, equalize="off", ranges="minmax",
                  bias_correction="none")
    got = {}
    for wr in ("nearest", "gptq", "auto"):
        (r,) = convert(ws["good"], formats="tflite", out_dir=tmp_path / wr, name=wr, weight_rounding=wr, **common)
        got[wr] = (r.path.read_bytes(), r.manifest.conversion.quantization["weight_rounding"])
    assert got["nearest"][1] == {"method": "nearest"}
    assert got["gptq"][1]["method"] == "gptq" and got["gptq"][1]["rounded_layers"] >= 5
    assert _changed_tensors(got["nearest"][0], got["gptq"][0]) == {"int8"}
    auto = got["auto"][1]
    assert set(auto["sqnr_db"]) == {"nearest", "gptq"} and "not fitted on" in auto["chosen_by"]
    assert got["auto"][0] == got[auto["method"]][0]
    with pytest.raises(InputError, match="weight_rounding must be one of auto, gptq, nearest"):
        convert(ws["good"], formats="tflite", out_dir=tmp_path / "x", weight_rounding="adaround", **common)
    with pytest.raises(InputError, match="needs a calibration set"):
        convert(ws["good"], formats="tflite", precision="dynamic", out_dir=tmp_path / "x", weight_rounding="gptq")
    assert not (tmp_path / "x").exists()
    # OpenVINO: NNCF rounds to nearest; an explicit gptq is recorded as not applied, with why
    (r,) = convert(ws["good"], formats="openvino", out_dir=tmp_path / "ov", weight_rounding="gptq", preset="performance",
                   **{**common, "bias_correction": "fast"})
    noted = r.manifest.conversion.quantization["weight_rounding"]
    assert noted["method"] == "nearest" and "NNCF" in noted["reason"], noted

    x_hold, _ = ws["dataset"].split("holdout")
    ref = reference_outputs(ws["good"], x_hold)
    sqnr, records = {}, {}
    for wr in ("nearest", "gptq", "auto"):
        r = CliRunner().invoke(cli, ["convert", str(ws["good"]), "-f", "tflite", "-p", "int16x8", "--calib",
                                     str(ws["calib"]), "--weight-rounding", wr, "-o", str(tmp_path / f"i16_{wr}"), "--json"])
        assert r.exit_code == 0, r.output
        (a,) = json.loads(r.stdout)["artifacts"]
        records[wr] = a["manifest"]["conversion"]["quantization"]["weight_rounding"]
        sqnr[wr] = output_sqnr(ref, run_artifact(a["path"], x_hold)[0])
    assert records["nearest"]["method"] == "nearest" and records["gptq"]["method"] == "gptq"
    assert sqnr["gptq"] > sqnr["nearest"] + 1.0, sqnr
    # auto: the weights dominate int16x8's error, so GPTQ is kept unless it measures worse on unseen samples
    assert "kept when not worse" in records["auto"]["chosen_by"], records["auto"]
    judged = records["auto"]["sqnr_db"]
    assert records["auto"]["method"] == ("gptq" if judged["gptq"] >= judged["nearest"] else "nearest")
    assert sqnr["auto"] == sqnr[records["auto"]["method"]]
    r = CliRunner().invoke(cli, ["convert", str(ws["good"]), "-f", "tflite", "-p", "int8", "--calib", str(ws["calib"]),
                                 "--weight-rounding", "sometimes", "-o", str(tmp_path / "y")])
    assert r.exit_code != 0 and "sometimes" in r.output and not (tmp_path / "y").exists()
    r = CliRunner().invoke(cli, ["convert", str(ws["good"]), "-f", "tflite", "-p", "int8", "--calib", str(ws["calib"]),
                                 "--max-drop", "none", "--weight-rounding", "gptq", "--equalize", "off", "-o",
                                 str(tmp_path / "z")])
    assert r.exit_code == 0 and "equalization not kept" not in r.output, r.output
    assert "ranges " in r.output and "weights gptq, bias correction " in r.output, r.output  # what was kept, one line


def test_recipe_names_what_each_step_kept():
    from edgeship.records import ConversionRecord

    q = {"equalization": {"kept": False}, "ranges": {"method": "minmax"}, "weight_rounding": {"method": "gptq"},
         "bias_correction": {"method": "none", "reason": "x"}, "qat": {"epochs": 3}}
    assert ConversionRecord(quantization=q).recipe() == ("equalization not kept, ranges minmax, weights gptq, "
                                                         "bias correction none, QAT 3 epochs")
    assert ConversionRecord(quantization={"preset": {"method": "mixed"}, "equalization": {"kept": True}}).recipe() == \
        "equalized, preset mixed"
    assert ConversionRecord().recipe() is None
