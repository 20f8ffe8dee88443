"""edgeship convert: every format x precision loaded back through a real interpreter and compared with Keras."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeship.cli import cli
from edgeship.converters import convert
from edgeship.errors import ConversionError, InputError, ModelError, SpecError
from edgeship.manifest import Manifest
from tests.helpers import models as M


# ---- real interpreters ------------------------------------------------------------------------------
def run_tflite(path: Path, x: np.ndarray) -> list[np.ndarray]:
    """Run a .tflite sample by sample through ai_edge_litert; outputs dequantized, in manifest order."""
    from ai_edge_litert.interpreter import Interpreter

    man = Manifest.load(path)
    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    by_name = {d["name"]: d for d in it.get_output_details()}
    outs: list[list[np.ndarray]] = [[] for _ in man.outputs]
    for sample in x:
        s = sample[None].astype(np.float32)
        scale, zero = inp["quantization"]
        if np.dtype(inp["dtype"]).kind in "iu":
            info = np.iinfo(inp["dtype"])
            s = np.clip(np.round(s / scale + zero), info.min, info.max).astype(inp["dtype"])
        it.set_tensor(inp["index"], s)
        it.invoke()
        for k, t in enumerate(man.outputs):
            d = by_name[t.name]
            y = it.get_tensor(d["index"]).astype(np.float32)
            if t.scale:
                y = (y - t.zero_point) * t.scale
            outs[k].append(y[0])
    return [np.stack(o) for o in outs]


def run_openvino(path: Path, x: np.ndarray) -> list[np.ndarray]:
    """Run an IR on the CPU with f32 inference precision (no silent bf16)."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    outs: list[list[np.ndarray]] = [[] for _ in compiled.outputs]
    for sample in x:
        res = compiled(sample[None].astype(np.float32))
        for k, port in enumerate(compiled.outputs):
            outs[k].append(np.asarray(res[port])[0])
    return [np.stack(o) for o in outs]


RUNNERS = {"tflite": run_tflite, "openvino": run_openvino}


def _tflite_output_names(path: Path) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    return [d["name"] for d in Interpreter(model_path=str(path)).get_output_details()]


def _openvino_output_names(path: Path) -> list[str]:
    import openvino as ov

    return [p.get_any_name() for p in ov.Core().read_model(str(path)).outputs]


RUNNER_OUTPUTS = {"tflite": _tflite_output_names, "openvino": _openvino_output_names}


def keras_outputs(path: Path, x: np.ndarray) -> list[np.ndarray]:
    from edgeship.converters.keras_io import load_keras_model, predict

    return predict(load_keras_model(path), x)


# ---- fixtures -------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def holdout(calib):
    from edgeship.calibration import RepresentativeDataset

    x, _ = RepresentativeDataset.load(calib).split("holdout")
    return x


@pytest.fixture(scope="session")
def classifier(root) -> Path:
    return M.digits_classifier_keras(root)


@pytest.fixture(scope="session")
def reference(classifier, holdout):
    return keras_outputs(classifier, holdout)[0]


@pytest.fixture(scope="session")
def converted(tmp_path_factory, classifier, calib):
    """The classifier at every precision, both formats where available (one convert() per precision)."""
    out = tmp_path_factory.mktemp("converted")
    results = {}
    for precision, formats in (("fp32", ["tflite", "openvino"]), ("fp16", ["tflite", "openvino"]),
                               ("dynamic", ["tflite"]), ("int8", ["tflite", "openvino"])):
        for r in convert(classifier, formats=formats, precision=precision, calib=calib, out_dir=out, prefer="quantized"):
            results[(r.format, precision)] = r
    return results


# ---- accuracy of every format x precision ----------------------------------------------------------------
@pytest.mark.parametrize("fmt,precision,check", [
    ("tflite", "fp32", ("abs", 1e-4)), ("openvino", "fp32", ("abs", 1e-4)),
    ("tflite", "fp16", ("abs", 1e-2)), ("openvino", "fp16", ("abs", 1e-2)),
    ("tflite", "dynamic", ("top1", 0.98)),
    ("tflite", "int8", ("top1", 0.98)), ("openvino", "int8", ("top1", 0.98)),
])
def test_artifact_matches_keras(converted, reference, holdout, fmt, precision, check):
    r = converted[(fmt, precision)]
    got = RUNNERS[fmt](r.path, holdout)[0]
    assert got.shape == reference.shape
    kind, bound = check
    if kind == "abs":
        assert float(np.max(np.abs(got - reference))) <= bound
    else:
        agreement = float(np.mean(got.argmax(1) == reference.argmax(1)))
        assert agreement >= bound, f"{fmt} {precision}: top-1 agreement {agreement:.3f}"


def test_int8_tflite_has_int8_io_and_manifest(converted, calib, classifier):
    from edgeship.calibration import RepresentativeDataset
    from edgeship.fileio import sha256_file

    r = converted[("tflite", "int8")]
    m = Manifest.load(r.path)
    assert m.format == "tflite" and m.precision == "int8" and m.artifact == r.path.name
    assert m.io_dtype == {"input": "int8", "output": "int8"}
    assert m.inputs[0].shape[1:] == [32, 32, 3] and m.inputs[0].scale == pytest.approx(1 / 255, rel=1e-3)
    assert m.outputs[0].zero_point is not None and m.outputs[0].shape[-1] == 10
    assert m.hashes["artifact"] == sha256_file(r.path)
    assert m.hashes["source_model"] == sha256_file(classifier)
    assert m.hashes["calibration"] == RepresentativeDataset.load(calib).sha256
    assert m.input_spec == M.SPEC and m.labels == M.digits_labels() and m.task == "classify"
    assert 0 < m.sizes["gzip_bytes"] < m.sizes["raw_bytes"] == r.path.stat().st_size
    assert m.versions["tensorflow"] and m.versions["openvino"] and m.versions["nncf"] and m.versions["tfmot"]
    assert m.conversion.options["io"] == "int8" and m.conversion.timings["convert_s"] > 0
    assert m.conversion.accuracy_gate.max_drop_pp == 1.0
    assert m.sparsity["overall"] is None


def test_openvino_ir_pair_fixed_batch_and_f32_weights(converted):
    import openvino as ov

    fp32, fp16 = converted[("openvino", "fp32")], converted[("openvino", "fp16")]
    for r in (fp32, fp16):
        assert r.path.with_suffix(".bin").exists()
        assert r.manifest.inputs[0].shape == [1, 32, 32, 3] and r.manifest.io_dtype["input"] == "float32"
        assert "artifact.bin" in r.manifest.hashes
    consts = [op for op in ov.Core().read_model(str(fp32.path)).get_ops() if op.get_type_name() == "Constant"]
    assert not any(c.get_element_type() == ov.Type.f16 for c in consts), "fp32 IR must keep f32 weights"
    bins = [r.path.with_suffix(".bin").stat().st_size for r in (fp16, fp32)]
    assert bins[0] < 0.6 * bins[1], f"fp16 weights should take about half the bytes: {bins}"


def test_io_float_and_uint8(tmp_path, classifier, calib, holdout, reference):
    for io, dtype in (("uint8", "uint8"), ("float", "float32")):
        (r,) = convert(classifier, formats="tflite", precision="int8", calib=calib, io=io, out_dir=tmp_path, name=f"io_{io}",
                       prefer="quantized")
        assert r.manifest.io_dtype == {"input": dtype, "output": dtype}
        got = run_tflite(r.path, holdout)[0]
        assert np.mean(got.argmax(1) == reference.argmax(1)) >= 0.98


def test_denylisted_nodes_stay_float(tmp_path, classifier, calib, converted):
    from edgeship.converters.tflite import tflite_ops

    fp32 = tflite_ops(converted[("tflite", "fp32")].path)
    first_conv = next(op["outputs"][0] for op in fp32 if op["op"] == "CONV_2D")
    (r,) = convert(classifier, formats="tflite", precision="int8", calib=calib, out_dir=tmp_path, name="deny",
                   denylisted_nodes=[first_conv])
    ops = tflite_ops(r.path)
    kept = [op for op in ops if op["outputs"] and op["outputs"][0] == first_conv]
    assert kept and kept[0]["dtypes"] == ["float32"]
    assert any(op["op"] == "CONV_2D" and op["dtypes"] == ["int8"] for op in ops)
    assert r.manifest.io_dtype["input"] == "int8"
    assert r.manifest.conversion.options["denylisted_nodes"] == [first_conv]


def test_openvino_ignored_scope_and_dynamic_batch(tmp_path, classifier, calib, holdout, converted):
    import openvino as ov

    from edgeship.converters.openvino import openvino_layers

    # node names are stable across conversions: a name read from the fp32 IR applies to a new one
    convs = openvino_layers(converted[("openvino", "fp32")].path, types=("Convolution",))
    assert convs[0] == "Convolution_0"
    from edgeship import ConvertOptions
    from edgeship.converters import GateOptions, IOOptions

    # the option groups of the Python API (the flat keywords are the same options, tested elsewhere)
    opts = ConvertOptions(io=IOOptions(dynamic_batch=True), gate=GateOptions(ignored_scope=[convs[0]], preset="mixed",
                                                                             prefer="quantized"))
    (r,) = convert(classifier, calib, formats="openvino", precision="int8", out_dir=tmp_path, name="q", options=opts)
    model = ov.Core().read_model(str(r.path))
    conv = next(op for op in model.get_ops() if op.get_friendly_name() == convs[0])
    producers = [conv.input_value(i).get_node() for i in range(2)]
    # NNCF quantizes activations with FakeQuantize and stores weights as int8 + a "fq_weights" Multiply
    assert not [n for n in producers if n.get_type_name() == "FakeQuantize" or "/fq_" in n.get_friendly_name()], \
        "the ignored convolution must not be quantized"
    assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
    assert r.manifest.inputs[0].shape[0] == -1 and r.manifest.conversion.options["ignored_scope"] == [convs[0]]
    compiled = ov.Core().compile_model(str(r.path), "CPU")
    assert compiled(holdout[:5])[compiled.outputs[0]].shape == (5, 10)


def test_importing_converters_stays_light():
    import subprocess
    import sys

    code = "import sys, edgeship.converters; print([m for m in ('tensorflow', 'keras', 'tf_keras', 'openvino', 'nncf') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- every input form --------------------------------------------------------------------------------------
@pytest.mark.parametrize("maker", ["digits_classifier_h5", "digits_classifier_savedmodel",
                                   "digits_classifier_tf_keras_savedmodel", "digits_sequential_keras"])
def test_input_forms_convert_exactly(tmp_path, root, holdout, maker):
    path = getattr(M, maker)(root)
    ref = keras_outputs(path, holdout)[0]
    (r,) = convert(path, formats="tflite", precision="fp32", out_dir=tmp_path)
    assert float(np.max(np.abs(run_tflite(r.path, holdout)[0] - ref))) <= 1e-4
    assert r.manifest.input_spec.size == (32, 32)


def test_in_memory_keras3_and_tf_keras_models(tmp_path, root, holdout):
    k3 = M.load_keras(M.digits_classifier_keras(root))
    tfk = M.load_tf_keras(M.digits_classifier_h5(root))
    for model, flavor in ((k3, "keras"), (tfk, "tf_keras")):
        (r,) = convert(model, formats="openvino", precision="fp32", out_dir=tmp_path, name=flavor)
        ref = np.asarray(model(holdout, training=False))
        assert float(np.max(np.abs(run_openvino(r.path, holdout)[0] - ref))) <= 1e-4
        assert r.manifest.conversion.source["flavor"] == flavor and len(r.manifest.hashes["source_model"]) == 64


def test_two_output_model_keeps_output_order(tmp_path, root, holdout):
    path = M.digits_two_output_keras(root)
    ref = keras_outputs(path, holdout)
    results = convert(path, formats=["tflite", "openvino"], precision="fp32", out_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["digits_two_output_fp32_tflite.tflite", "digits_two_output_fp32_tflite.manifest.json",
         "digits_two_output_fp32_openvino.xml", "digits_two_output_fp32_openvino.bin",
         "digits_two_output_fp32_openvino.manifest.json"])
    for r in results:
        assert r.manifest.task == "raw" and [t.shape[-1] for t in r.manifest.outputs] == [10, 1]
        # the artifact itself lists its outputs in Keras order (runtimes read them in file order)
        assert [t.name for t in r.manifest.outputs] == RUNNER_OUTPUTS[r.format](r.path)
        got = RUNNERS[r.format](r.path, holdout)
        for g, e in zip(got, ref):
            assert float(np.max(np.abs(g - e))) <= 1e-4


# ---- bad input: one line, exit 1, nothing left in --out -------------------------------------------------------
def _cli(*args):
    return CliRunner().invoke(cli, ["convert", *map(str, args)])


def _assert_clean_failure(result, out: Path, *words):
    assert result.exit_code == 1, result.output
    err = result.output.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), result.output
    for w in words:
        assert w in err[0], err[0]
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


def test_bad_inputs_exit_1_and_leave_nothing(tmp_path, classifier, root):
    from edgeship.calibration import RepresentativeDataset
    from edgeship.spec import InputSpec

    out = tmp_path / "out"
    _assert_clean_failure(_cli(classifier, "-f", "tflite", "-p", "int8", "-o", out), out, "--calib")
    corrupt = tmp_path / "broken.keras"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip")
    _assert_clean_failure(_cli(corrupt, "-f", "tflite", "-p", "fp32", "-o", out), out, "broken.keras")
    _assert_clean_failure(_cli(classifier, "-f", "openvino", "-p", "int16x8", "-o", out), out, "int16x8", "openvino")
    spec16 = InputSpec(height=16, width=16, channels=3)
    small = RepresentativeDataset.from_arrays(np.zeros((10, 16, 16, 3), np.float32), spec=spec16).save(tmp_path / "c16.npz")
    _assert_clean_failure(_cli(classifier, "-f", "tflite", "-p", "int8", "--calib", small, "-o", out), out, "[16, 16, 3]")
    # a later failure (second format) must not leave the first artifact behind
    with pytest.raises(InputError):
        convert(classifier, formats=["tflite", "openvino"], precision="int16x8", out_dir=out)
    assert not out.exists()


def test_python_errors_are_typed(tmp_path, classifier):
    with pytest.raises(ModelError):
        convert(tmp_path / "missing.keras", formats="tflite", precision="fp32", out_dir=tmp_path / "o")
    with pytest.raises(SpecError):
        convert(classifier, formats="tflite", precision="fp32", out_dir=tmp_path / "o", input_size=(16, 16))
    with pytest.raises(InputError, match="unknown option.*maxdrop; expected one of .*max_drop"):
        convert(classifier, formats="tflite", precision="fp32", out_dir=tmp_path / "o", maxdrop=1.0)
    assert not (tmp_path / "o").exists()


def test_subclassed_model_and_unconvertible_layer_name_the_culprit(tmp_path):
    import keras
    import tensorflow as tf

    class Tiny(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(keras.ops.mean(x, axis=(1, 2)))

    sub = Tiny()
    sub(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ConversionError, match="subclassed"):
        convert(sub, formats="tflite", precision="fp32", out_dir=tmp_path / "o", input_size=(8, 8))

    class Fft(keras.layers.Layer):
        def call(self, x):
            return tf.math.real(tf.signal.fft2d(tf.cast(x, tf.complex64)))

    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(Fft(name="spectrum")(inp))))
    with pytest.raises(ConversionError) as e:
        convert(model, formats="tflite", precision="fp32", out_dir=tmp_path / "o")
    msg = str(e.value)
    assert "\n" not in msg and "spectrum" in msg and "tflite" in msg
    assert not (tmp_path / "o").exists()


# ---- CLI ------------------------------------------------------------------------------------------------------
def test_cli_json_and_target(tmp_path, classifier, calib):
    from edgeship.targets import get_target

    out = tmp_path / "out"
    r = _cli(classifier, "--target", "intel-x86", "-p", "fp16", "--calib", calib, "--name", "cam", "-o", out, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    (art,) = doc["artifacts"]
    assert art["format"] == get_target("intel-x86").format and art["precision"] == "fp16"
    assert Path(art["path"]).name == "cam" + (".xml" if art["format"] == "openvino" else ".tflite")
    assert art["manifest"]["labels"] == M.digits_labels()
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"digit {i}" for i in range(10)) + "\n")
    r = _cli(classifier, "-f", "tflite", "-p", "fp32", "--max-drop", "none", "--input-size", "32x32",
             "--labels", labels, "--task", "raw", "-o", out)
    assert r.exit_code == 0, r.output
    assert "digits_classifier_fp32.tflite" in r.output
    m = Manifest.load(out / "digits_classifier_fp32.tflite")
    assert m.conversion.accuracy_gate.max_drop_pp is None and m.conversion.options["max_drop"] is None
    assert m.labels == [f"digit {i}" for i in range(10)] and m.task == "raw"
    assert m.input_spec.size == (32, 32) and m.hashes["calibration"] is None
    notdir = tmp_path / "file"
    notdir.write_text("x")
    r = _cli(classifier, "-f", "tflite", "-p", "fp32", "-o", notdir)
    assert r.exit_code == 1 and r.output.strip().startswith("error: --out:")  # bad path: one line, exit 1
    with pytest.raises(InputError, match="is a file"):
        convert(classifier, formats="tflite", precision="fp32", out_dir=notdir)
