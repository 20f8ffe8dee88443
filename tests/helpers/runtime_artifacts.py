"""Real artifacts for the runtime tests: TFLite (float, int8 with int8 I/O) and OpenVINO IR of the
digits classifier, and a tiny YOLO-layout "detector" whose output is a known constant.

Built once per pytest session (under ``models_root``) with TensorFlow / OpenVINO in the test process;
every artifact gets a manifest written with :class:`edgeship.manifest.Manifest`, as the converters do.

    from tests.helpers.runtime_artifacts import artifacts
    a = artifacts(tmp_path_factory)      # dict: "tflite_f32", "tflite_int8", "openvino", "yolo_tflite", "yolo_openvino"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeship.manifest import Manifest, TensorInfo, tool_versions
from edgeship.spec import InputSpec

from .models import SPEC, _cached, digits_classifier_savedmodel, digits_labels, digits_xy, models_root

YOLO_SPEC = InputSpec(height=64, width=64, channels=3, color_order="RGB", scale=1.0 / 255.0)
YOLO_ANCHORS = 20
YOLO_LABELS = ["bolt", "nut"]
# the one confident box the constant detector emits: class 1 ("nut"), cx, cy, w, h normalised
YOLO_BOX = (0.5, 0.5, 0.5, 0.25)
YOLO_SCORE = 0.9

_CACHE: dict[str, Any] = {}


def _tflite_io(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))

    def info(d: dict) -> TensorInfo:
        scale, zp = d["quantization"]
        return TensorInfo(d["name"], [int(s) for s in d["shape"]], np.dtype(d["dtype"]).name,
                          float(scale) if scale else None, int(zp) if scale else None)

    return [info(d) for d in it.get_input_details()], [info(d) for d in it.get_output_details()]


def _write_manifest(artifact: Path, fmt: str, precision: str, spec: InputSpec, labels: list[str], task: str) -> None:
    inputs, outputs = _tflite_io(artifact) if fmt == "tflite" else ([], [])
    Manifest(
        name=artifact.stem, format=fmt, precision=precision, artifact=artifact.name, input_spec=spec,
        labels=labels, task=task, inputs=inputs, outputs=outputs, versions=tool_versions(),
        io_dtype={"input": inputs[0].dtype, "output": outputs[0].dtype} if inputs else {},
    ).save(artifact)


def _to_tflite(saved_model: Path, out: Path, int8: bool = False, calib: np.ndarray | None = None) -> None:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if int8:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([c[None]] for c in calib)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    out.write_bytes(conv.convert())


def _to_openvino(saved_model: Path, out_xml: Path) -> None:
    import openvino as ov

    ov.save_model(ov.convert_model(str(saved_model)), str(out_xml), compress_to_fp16=False)


def _yolo_savedmodel(root: Path) -> Path:
    """A detector with a constant (1, 6, A) output: zero kernel, the bias holds the boxes and scores."""

    def write(p: Path) -> None:
        import keras

        bias = np.full((4 + len(YOLO_LABELS), YOLO_ANCHORS), 0.01, np.float32)
        bias[:4, :] = 0.1  # small boxes everywhere, low scores
        bias[:4, 0] = YOLO_BOX
        bias[4 + 1, 0] = YOLO_SCORE
        inp = keras.layers.Input((YOLO_SPEC.height, YOLO_SPEC.width, 3), name="images")
        x = keras.layers.Conv2D(4, 3, strides=4, activation="relu")(inp)
        x = keras.layers.GlobalAveragePooling2D()(x)
        dense = keras.layers.Dense(bias.size, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(bias.reshape(-1)))
        out = keras.layers.Reshape(bias.shape, name="output0")(dense(x))
        keras.Model(inp, out).export(str(p), verbose=False)

    return _cached(root / "yolo_const_savedmodel", write)


def artifacts(tmp_path_factory) -> dict[str, Path]:
    """Build (once per session) and return the runtime test artifacts, each with its manifest."""
    if "paths" in _CACHE:
        return _CACHE["paths"]
    root = models_root(tmp_path_factory) / "runtime"
    root.mkdir(parents=True, exist_ok=True)
    sm = digits_classifier_savedmodel(models_root(tmp_path_factory))
    x, _ = digits_xy()
    calib = x[np.random.default_rng(1).permutation(len(x))[:200]]
    labels = digits_labels()
    paths: dict[str, Path] = {}

    def make(key: str, name: str, build, fmt: str, precision: str, spec: InputSpec, labels: list[str], task: str) -> None:
        out = root / name
        if not out.exists():
            _cached(out, build)
            _write_manifest(out, fmt, precision, spec, labels, task)
        paths[key] = out

    make("tflite_f32", "digits_f32.tflite", lambda p: _to_tflite(sm, p), "tflite", "fp32", SPEC, labels, "classify")
    make("tflite_int8", "digits_int8.tflite", lambda p: _to_tflite(sm, p, True, calib), "tflite", "int8", SPEC, labels, "classify")
    ov_xml = root / "digits_fp32.xml"
    if not ov_xml.exists():
        _to_openvino(sm, ov_xml)
        _write_manifest(ov_xml, "openvino", "fp32", SPEC, labels, "classify")
    paths["openvino"] = ov_xml
    ysm = _yolo_savedmodel(root)
    make("yolo_tflite", "yolo_const.tflite", lambda p: _to_tflite(ysm, p), "tflite", "fp32", YOLO_SPEC, YOLO_LABELS, "detect")
    y_xml = root / "yolo_const_ov.xml"
    if not y_xml.exists():
        _to_openvino(ysm, y_xml)
        _write_manifest(y_xml, "openvino", "fp32", YOLO_SPEC, YOLO_LABELS, "detect")
    paths["yolo_openvino"] = y_xml
    paths["savedmodel"] = sm
    _CACHE["paths"] = paths
    return paths
