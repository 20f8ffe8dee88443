"""What builds an artifact of each format, registered by the format's name (:data:`BUILDERS`).

:mod:`edgeship.formats` is the table of facts (suffixes, companion files, precisions, how tensors
are read); the device runtime opens artifacts through :mod:`edgeship.runtime.backends`. What makes
an artifact lives here, on the workstation side, for each format:

- ``build(saved_model, out, plan, dataset)``: convert a SavedModel to the artifact ``out``;
- ``candidates(saved_model, dataset, artifact, tmp, plan)``: the accuracy gate's candidate builder
  (ranks the layers int8 hurts, builds a model with some of them kept in float, and the fp16 one);
- ``layer_errors(artifact, saved_model, x, ...)``: the per-layer quantization error report;
- ``qat(result, out, plan)``: the artifact of a quantization-aware training run (:mod:`.qat`).

Every builder reads the typed :class:`~edgeship.converters.plan.ArtifactPlan`. A new format is a row
of :data:`edgeship.formats.FORMATS` plus a builder registered here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import ModelError
from ..formats.openvino import import_openvino
from .plan import ArtifactPlan, scope_names


class Builder(Protocol):
    rounds_weights: bool  # whether --weight-rounding gptq applies to this format's int8 weights

    def build(self, saved_model: Path, out: Path, plan: ArtifactPlan, dataset: Any,
              notes: dict[str, Any] | None = None) -> Path: ...
    def candidates(self, saved_model: Path, dataset: Any, artifact: Path, tmp: Path, plan: ArtifactPlan) -> Any: ...
    def qat(self, result: Any, out: Path, plan: ArtifactPlan) -> Path: ...
    def layer_errors(self, artifact: Path, saved_model: Path, x: np.ndarray, *, manifest: Any, float_nodes: list[str],
                     tmp: Path, limit: int, model: Any = None) -> list[Any]: ...


class TFLiteBuilder:
    """The TFLite converter (MLIR quantizer for int8); the gate grows a denylist of nodes kept in float."""

    rounds_weights = True  # --weight-rounding gptq applies (converters.rounding)

    def build(self, saved_model: Path, out: Path, plan: ArtifactPlan, dataset: Any,
              notes: dict[str, Any] | None = None) -> Path:
        """``notes`` (a dict, when given) receives how int8 was calibrated (the ranges and bias correction chosen)."""
        from .tflite import to_tflite

        return to_tflite(saved_model, out, precision=plan.precision, dataset=dataset, io=plan.io,
                         denylisted_nodes=plan.denylisted_nodes, denylisted_ops=plan.denylisted_ops, out_io=plan.out_io,
                         ranges=plan.ranges, bias_correction=plan.bias_correction,
                         weight_rounding=plan.weight_rounding, notes=notes)

    def qat(self, result: Any, out: Path, plan: ArtifactPlan) -> Path:
        """The full-int8 model the quantization-aware training worker converted (a QATResult), written to ``out``."""
        from ..fileio import atomic_write_bytes

        return atomic_write_bytes(out, result.tflite.read_bytes())

    def candidates(self, saved_model: Path, dataset: Any, artifact: Path, tmp: Path, plan: ArtifactPlan) -> Any:
        from .candidates import TFLiteCandidates

        return TFLiteCandidates(saved_model, dataset, plan.io, tmp, plan.denylisted_nodes, plan.denylisted_ops,
                                out_io=plan.out_io, ranges=plan.ranges, bias_correction=plan.bias_correction,
                                weight_rounding=plan.weight_rounding)

    def layer_errors(self, artifact: Path, saved_model: Path, x: np.ndarray, *, manifest: Any, float_nodes: list[str],
                     tmp: Path, limit: int, model: Any = None) -> list[Any]:
        """Per-layer int8 errors of a TFLite artifact (each op against its float twin on ``x``), each row
        named by its Keras layer (TensorFlow's op names carry it)."""
        from . import layers as L
        from .layer_names import tflite_layer

        dtypes = (manifest.io_dtype if manifest is not None and manifest.io_dtype else {}) or {}
        io, out_io = ({"float32": "float"}.get(v, v) if v in ("float32", "int8", "uint8") else "int8"
                      for v in (dtypes.get("input") or "int8", dtypes.get("output") or "int8"))
        denylisted_ops = (manifest.conversion.option("denylisted_ops") if manifest is not None else None) or ()
        probe = L.TFLiteProbe(saved_model, x, io=io, out_io=out_io, limit=limit, denylisted_ops=denylisted_ops)
        errors = probe.rank(float_nodes)
        names = {layer.name for layer in getattr(model, "layers", [])}
        for e in errors:
            e.layer = tflite_layer(e.name, names)
        return errors


class OpenVINOBuilder:
    """OpenVINO's converter, then ``nncf.quantize`` for int8; the gate grows an ignored scope."""

    rounds_weights = False  # NNCF rounds weights to nearest

    def build(self, saved_model: Path, out: Path, plan: ArtifactPlan, dataset: Any,
              notes: dict[str, Any] | None = None) -> Path:
        """``notes`` receives NNCF's settings as chosen; an explicit ``weight_rounding="gptq"`` is recorded as not
        applied (NNCF rounds weights to nearest; GPTQ is the TFLite builder's)."""
        from .openvino import to_openvino
        from .tflite import ROUNDED_PRECISIONS

        if plan.weight_rounding == "gptq" and plan.precision in ROUNDED_PRECISIONS and notes is not None:
            notes["weight_rounding"] = {"method": "nearest", "reason": "NNCF rounds weights to nearest; GPTQ is "
                                                                      "TFLite's (--weight-rounding)"}
        return to_openvino(saved_model, out, precision=plan.precision, dataset=dataset, preset=plan.preset,
                           dynamic_batch=plan.dynamic_batch, ignored_scope=plan.ignored_scope, ranges=plan.ranges,
                           bias_correction=plan.bias_correction, notes=notes)

    def qat(self, result: Any, out: Path, plan: ArtifactPlan) -> Path:
        """The QAT SavedModel read by OpenVINO's TensorFlow frontend: its FakeQuant ops become FakeQuantize nodes (an
        int8 IR with the ranges tfmot learned), so no nncf.quantize runs on top."""
        from .openvino import to_openvino

        return to_openvino(result.saved_model, out, precision="fp32", dynamic_batch=plan.dynamic_batch)

    def candidates(self, saved_model: Path, dataset: Any, artifact: Path, tmp: Path, plan: ArtifactPlan) -> Any:
        from .candidates import OpenVINOCandidates

        from .openvino import Quantization

        q = Quantization(preset=plan.preset, ranges=plan.ranges, bias_correction=plan.bias_correction)
        return OpenVINOCandidates(saved_model, dataset, artifact, q, plan.dynamic_batch, tmp,
                                  list(scope_names(plan.ignored_scope)))

    def layer_errors(self, artifact: Path, saved_model: Path, x: np.ndarray, *, manifest: Any, float_nodes: list[str],
                     tmp: Path, limit: int, model: Any = None) -> list[Any]:
        """Per-layer int8 errors of an IR (each FakeQuantize's error, and the SQNR against the FP32 IR), each row
        named by the Keras layer its tensor comes out of (found by the compute node's weights)."""
        ov = import_openvino()

        from . import layers as L
        from .layer_names import ov_compute_layers, ov_upstream_compute
        from .openvino import to_openvino

        errors = L.OpenVINOProbe(artifact, x, limit=limit).rank()
        dynamic = bool(manifest is not None and manifest.conversion.option("dynamic_batch"))
        fp32 = to_openvino(saved_model, tmp / "fp32.xml", precision="fp32", dynamic_batch=dynamic)
        core = ov.Core()
        int8_model, fp32_model = core.read_model(str(artifact)), core.read_model(str(fp32))
        sqnr = L.compare_with_fp32(int8_model, fp32_model, x, limit=limit)
        keras_layers = ov_compute_layers(fp32_model, model) if model is not None else {}
        for e in errors:
            if e.consumers and e.consumers[0] in sqnr:
                e.fp32_sqnr_db = sqnr[e.consumers[0]]
            e.layer = keras_layers.get(ov_upstream_compute(int8_model, e.producer), "")
        return errors


# registry: format name (a key of edgeship.formats.FORMATS) -> its builder
BUILDERS: dict[str, Builder] = {"tflite": TFLiteBuilder(), "openvino": OpenVINOBuilder()}


def builder(fmt: str) -> Builder:
    """The builder of format ``fmt``."""
    try:
        return BUILDERS[fmt]
    except KeyError:
        raise ModelError(f"no builder for format {fmt!r}; expected one of {', '.join(BUILDERS)}") from None
