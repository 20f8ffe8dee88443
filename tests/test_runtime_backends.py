"""LiteRT and OpenVINO backends on real converted artifacts: float, int8 with int8 I/O, bad files, shapes."""

import subprocess
import sys

import numpy as np
import pytest

from edgeship.errors import BackendError, ModelError, SpecError
from edgeship.manifest import Manifest
from edgeship.runtime import backends as B
from edgeship.runtime.backends import dequantize, open_backend, quantize
from edgeship.manifest import TensorInfo
from tests.helpers.models import digits_split


@pytest.fixture(scope="module")
def holdout():
    _, _, x, y = digits_split()
    return x[:120], y[:120]


def test_runtime_never_imports_tensorflow_keras_or_nncf(art):
    code = (
        "import sys, numpy as np\n"
        "import edgeship.runtime, edgeship.runtime.backends, edgeship.runtime.sources, edgeship.runtime.sinks\n"
        "import edgeship.runtime.pipeline, edgeship.runtime.runner, edgeship.runtime.bench, edgeship.runtime.processing\n"
        "import edgeship.runtime.metrics, edgeship.runtime.draw, edgeship.runtime.types\n"
        "from edgeship.runtime.backends import open_backend\n"
        f"for p in {[str(art['tflite_int8']), str(art['openvino'])]!r}:\n"
        "    with open_backend(p) as b:\n"
        "        b.infer(np.zeros((1, 32, 32, 3), np.float32))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras', 'nncf') or m.startswith('edgeship.converters')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_litert_float_matches_openvino_and_classifies(art, holdout):
    x, y = holdout
    with open_backend(art["tflite_f32"], threads=2) as tfl, open_backend(art["openvino"], precision="f32") as ov:
        assert tfl.name == "tflite" and ov.name == "openvino"
        assert tfl.executed_precision == "f32" and ov.executed_precision == "f32"
        assert tfl.manifest is not None and tfl.manifest.labels[0] == "0"
        p_tfl, p_ov = tfl.infer(x)[0], ov.infer(x)[0]
    assert p_tfl.shape == (len(x), 10) and p_tfl.dtype == np.float32
    np.testing.assert_allclose(p_tfl, p_ov, atol=1e-4)
    assert (p_tfl.argmax(1) == y).mean() > 0.85


def test_int8_io_is_dequantized_against_the_float_model(art, holdout):
    x, y = holdout
    with open_backend(art["tflite_int8"]) as q, open_backend(art["tflite_f32"]) as f:
        assert q.inputs[0].dtype == "int8" and q.inputs[0].quantized and q.outputs[0].dtype == "int8"
        assert q.executed_precision == "int8"
        pq, pf = q.infer(x)[0], f.infer(x)[0]
        # batch of N through a batch-1 interpreter equals N single calls
        np.testing.assert_array_equal(pq[:3], np.concatenate([q.infer(x[i : i + 1])[0] for i in range(3)]))
        raw = q.run_prepared(q.prepare_inputs(x[:1]))[0]
    assert raw.dtype == np.int8  # the model really speaks int8
    assert pq.dtype == np.float32 and pq.min() >= 0.0 and pq.max() <= 1.0
    np.testing.assert_allclose(pq.sum(1), 1.0, atol=0.05)  # probabilities, not int8 codes
    assert np.abs(pq - pf).max() < 0.15
    assert (pq.argmax(1) == pf.argmax(1)).mean() >= 0.95


def test_quantize_roundtrip_and_clipping():
    info = TensorInfo("t", [1, 4], "int8", scale=0.5, zero_point=-10)
    q = quantize(np.array([[0.0, 1.0, 1000.0, -1000.0]], np.float32), info)
    assert q.dtype == np.int8 and q.tolist() == [[-10, -8, 127, -128]]
    np.testing.assert_allclose(dequantize(q, info), [[0.0, 1.0, 68.5, -59.0]])
    u8 = TensorInfo("u", [1, 2], "uint8", scale=1 / 255, zero_point=0)
    assert quantize(np.array([[0.0, 1.0]]), u8).tolist() == [[0, 255]]


def test_openvino_precision_hint_and_executed_precision(art):
    with open_backend(art["openvino"], precision="f32", hint="throughput", threads=1) as b:
        assert b.config["INFERENCE_PRECISION_HINT"] == "f32" and b.config["PERFORMANCE_HINT"] == "THROUGHPUT"
        assert b.inference_precision == "f32" and b.executed_precision == "f32"
        tp = b.throughput(np.zeros((1, 32, 32, 3), np.float32), duration=0.3)
        assert tp["iterations"] > 0 and tp["fps"] > 0
    with open_backend(art["openvino"]) as b:  # default: whatever the CPU prefers, reported honestly
        assert b.executed_precision in ("f32", "bf16", "f16")
        assert b.executed_precision == b.inference_precision


def test_shape_mismatch_is_one_line_naming_expected_and_got(art):
    for key in ("tflite_int8", "openvino"):
        with open_backend(art[key]) as b:
            with pytest.raises(SpecError) as e:
                b.infer(np.zeros((1, 28, 28, 3), np.float32))
            msg = str(e.value)
            assert "(N, 32, 32, 3)" in msg and "(1, 28, 28, 3)" in msg and "\n" not in msg
            with pytest.raises(SpecError, match="takes 1 input"):
                b.infer([np.zeros((1, 32, 32, 3)), np.zeros((1, 32, 32, 3))])


def test_bad_files_are_one_line_model_errors(tmp_path, art):
    cases = {
        "missing.tflite": None,
        "garbage.tflite": b"this is not a flatbuffer",
        "empty.tflite": b"",
        "broken.xml": b"<net><layers>",
        "notes.txt": b"hello",
    }
    for name, data in cases.items():
        p = tmp_path / name
        if data is not None:
            p.write_bytes(data)
        if name == "broken.xml":
            p.with_suffix(".bin").write_bytes(b"\0" * 8)
        with pytest.raises(ModelError) as e:
            open_backend(p)
        assert "\n" not in str(e.value) and (name in str(e.value) or "notes" in str(e.value))
    lone = tmp_path / "lone.xml"
    lone.write_bytes(art["openvino"].read_bytes())
    with pytest.raises(ModelError, match=r"is incomplete: .*lone\.bin missing"):
        open_backend(lone)
    with pytest.raises(ModelError, match="is a folder"):
        open_backend(tmp_path, backend="tflite")


def test_registry_dispatch_by_manifest_suffix_and_override(art, monkeypatch, tmp_path):
    assert B.resolve_backend("m.tflite", None) == "tflite" and B.resolve_backend("m.xml", None) == "openvino"
    assert B.resolve_backend("m.bin", Manifest("m", "openvino", "fp32", "m.bin")) == "openvino"
    assert B.resolve_backend("m.tflite", None, "litert") == "tflite"
    with pytest.raises(BackendError, match="unknown backend 'onnxruntime'"):
        B.resolve_backend("m.tflite", None, "onnxruntime")
    # swap the registry: dispatch reaches whatever class is registered, without hardware
    calls = []

    class Fake(B.Backend):
        name = "fake"

        def _load(self):
            calls.append((self.path.name, self.threads, self.options["device"]))
            self.inputs = [TensorInfo("x", [1, 2], "float32")]
            self.outputs = [TensorInfo("y", [1, 2], "float32")]

        def _run(self, tensors):
            return [tensors[0] * 2]

    from edgeship import formats

    monkeypatch.setitem(formats.FORMATS, "fake", formats.Format("fake", "Fake", ".fake", (), ("fp32",), "edgeship.formats.tflite",
                                                                f"{__name__}:_FAKE"))
    monkeypatch.setattr(sys.modules[__name__], "_FAKE", Fake, raising=False)
    p = tmp_path / "m.fake"
    p.write_bytes(b"x")
    with open_backend(p, threads=3, device="NPU") as b:
        assert b.infer(np.ones((3, 2), np.float32))[0].tolist() == [[2, 2]] * 3  # batch-1 model looped over N=3
    assert calls == [("m.fake", 3, "NPU")]
    with pytest.raises(BackendError, match="backend is closed"):
        b.infer(np.ones((1, 2)))


def test_manifest_path_opens_its_artifact(art):
    from edgeship.manifest import manifest_path

    with open_backend(manifest_path(art["tflite_f32"])) as b:
        assert b.path == art["tflite_f32"] and b.manifest.format == "tflite"
    with open_backend(art["openvino"]) as b:
        assert b.describe()["device"] == "CPU"
    with pytest.raises(BackendError, match="device NPU"):
        open_backend(art["openvino"], device="NPU")


def test_already_quantized_input_gives_the_same_outputs(art, holdout):
    from edgeship.preprocess import preprocess
    from tests.helpers.data import digits_bgr

    imgs, _ = digits_bgr(8)
    with open_backend(art["tflite_int8"]) as b, open_backend(art["tflite_f32"]) as f:
        spec, quant = b.manifest.input_spec, b.input_quantization
        assert quant is not None and quant.dtype == "int8" and f.input_quantization is None
        xq = np.stack([preprocess(i, spec, quant) for i in imgs[:8]])
        xf = np.stack([preprocess(i, spec) for i in imgs[:8]])
        np.testing.assert_array_equal(b.infer(xq, quantized=True)[0], b.infer(xf)[0])
        with pytest.raises(SpecError, match="is int8; got an already-quantized float32 array"):
            b.infer(xf, quantized=True)


@pytest.mark.parametrize("key", ["openvino", "tflite_int8"])
def test_openvino_fixes_a_dynamic_batch_to_one_and_gives_the_same_outputs(art, holdout, key):
    """A .tflite read by OpenVINO (and many IRs) has batch ``?``: static batch 1 unless batch=None."""
    import openvino as ov

    path = art[key]
    dynamic = ov.Core().read_model(str(path)).inputs[0].get_partial_shape()[0].is_dynamic
    x = holdout[0][:5]
    with open_backend(path, backend="openvino") as one, open_backend(path, backend="openvino", batch=None) as free:
        assert one.inputs[0].shape[0] == 1
        assert free.inputs[0].shape[0] == (-1 if dynamic else 1)
        a, b = one.infer(x)[0], free.infer(x)[0]  # batch 1 looped == one batched call
        if one.outputs[0].dtype in ("int8", "uint8"):  # int8 outputs: OpenVINO's batched int8 kernels (AMX here) may
            assert np.abs(a.astype(int) - b.astype(int)).max() <= 4  # round a few steps apart from batch 1
            assert (a.argmax(-1) == b.argmax(-1)).all()
        else:
            np.testing.assert_allclose(a, b, atol=1e-5)
