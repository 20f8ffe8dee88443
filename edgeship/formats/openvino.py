"""OpenVINO IR (``.xml`` + ``.bin``): reading tensors, and the precision a float IR must run in.

Needs only openvino (what a device has). What builds an IR lives with the converters
(:mod:`edgeship.converters.builders`); what runs one with the runtime
(:mod:`edgeship.runtime.backends.openvino`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from .tensors import TensorInfo


def no_telemetry() -> None:
    """Keep OpenVINO's converter and NNCF from sending usage telemetry: on an offline workstation its
    background process died with a urllib traceback on stderr. Both fall back to a no-op stub when
    ``openvino_telemetry`` cannot be imported, which this arranges. ``import openvino`` itself imports
    ``openvino_telemetry``, so this must come before the first one: every edgeship module imports
    OpenVINO through :func:`import_openvino`."""
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]


def import_openvino() -> Any:
    """``openvino``, imported with its telemetry stubbed out (see :func:`no_telemetry`)."""
    no_telemetry()
    import openvino

    return openvino


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
    ov = import_openvino()
    return model_tensors(ov.Core().read_model(str(path)))


# artifact precisions whose IR runs in f32: OpenVINO would run them in bf16 (fewer mantissa bits than
# either) on CPUs with AMX / avx512_bf16; an FP16 IR's weights are decompressed to f32 on CPU anyway
FLOAT_IR_PRECISIONS = ("fp32", "fp16", "dynamic")  # dynamic: int8 weights decompressed to float, float activations


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
