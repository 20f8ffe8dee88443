"""OpenVINO IR (``.xml`` + ``.bin``): reading tensors, building, the gate's candidates and the layer probe.

Reading needs only openvino (the device runtime); building, the gate and the layer probe import
the converters (TensorFlow, NNCF) when they run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .tensors import TensorInfo


def tensor_info(port: Any, fallback: str) -> TensorInfo:
    """One model port -> TensorInfo. The name is the port's alphabetically first name (stable across
    reads, unlike ``get_any_name``), else ``fallback``; -1 marks a dynamic dimension."""
    names = sorted(port.get_names())
    return TensorInfo(
        name=names[0] if names else fallback,
        shape=[int(d.get_length()) if d.is_static else -1 for d in port.get_partial_shape()],
        dtype=np.dtype(port.get_element_type().to_dtype()).name,
    )


def model_tensors(model: Any) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """TensorInfo of an ``ov.Model`` or compiled model's inputs and outputs."""
    return ([tensor_info(p, f"input{i}") for i, p in enumerate(model.inputs)],
            [tensor_info(p, f"output{i}") for i, p in enumerate(model.outputs)])


def read_tensors(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    import openvino as ov

    return model_tensors(ov.Core().read_model(str(path)))


# artifact precisions whose IR runs in f32: OpenVINO would run them in bf16 (fewer mantissa bits than
# either) on CPUs with AMX / avx512_bf16; an FP16 IR's weights are decompressed to f32 on CPU anyway
FLOAT_IR_PRECISIONS = ("fp32", "fp16")


def inference_precision(path: Path, manifest: Any) -> str | None:
    """``"f32"`` for a float artifact, so that a bf16-capable CPU runs what the manifest states.

    OpenVINO runs an FP32 or FP16 IR in bf16 on CPUs with AMX / avx512_bf16 unless told otherwise.
    Without a manifest, an IR with no FakeQuantize node is float.
    """
    if manifest is not None:
        return "f32" if str(manifest.precision) in FLOAT_IR_PRECISIONS else None
    if path.suffix.lower() != ".xml":
        return "f32"
    try:
        text = path.read_text(errors="ignore")
    except OSError:
        return None
    return None if 'type="FakeQuantize"' in text else "f32"


# ---- workstation side ---------------------------------------------------------------------------------
def build(saved_model: Path, out: Path, *, precision: str, dataset: Any, options: dict[str, Any]) -> Path:
    from ..converters.openvino import to_openvino

    return to_openvino(saved_model, out, precision=precision, dataset=dataset,
                       preset=options.get("preset", "performance"), dynamic_batch=bool(options.get("dynamic_batch")),
                       ignored_scope=options.get("ignored_scope"))


def gate_candidates(saved_model: Path, dataset: Any, artifact: Path, tmp: Path, options: dict[str, Any]) -> Any:
    """The accuracy gate's candidate builder: ``nncf.quantize`` runs with a growing ignored scope."""
    from ..converters.gate import OpenVINOCandidates, scope_names

    return OpenVINOCandidates(saved_model, dataset, artifact, options.get("preset", "performance"),
                              bool(options.get("dynamic_batch")), tmp, scope_names(options.get("ignored_scope")))


def layer_errors(artifact: Path, saved_model: Path, x: np.ndarray, *, manifest: Any, float_nodes: list[str],
                 tmp: Path, limit: int) -> list[Any]:
    """Per-layer int8 errors of an IR (each FakeQuantize's error, and the SQNR against the FP32 IR)."""
    import openvino as ov

    from ..converters import layers as L
    from ..converters.openvino import to_openvino

    errors = L.OpenVINOProbe(artifact, x, limit=limit).rank()
    dynamic = bool(manifest is not None and manifest.conversion.option("dynamic_batch"))
    fp32 = to_openvino(saved_model, tmp / "fp32.xml", precision="fp32", dynamic_batch=dynamic)
    core = ov.Core()
    sqnr = L.compare_with_fp32(core.read_model(str(artifact)), core.read_model(str(fp32)), x, limit=limit)
    for e in errors:
        if e.consumers and e.consumers[0] in sqnr:
            e.fp32_sqnr_db = sqnr[e.consumers[0]]
    return errors
