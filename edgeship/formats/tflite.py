"""TFLite (LiteRT flatbuffer): reading tensors, building, the gate's candidates and the layer probe.

Reading needs only ai-edge-litert (the device runtime); building, the gate and the layer probe
import the converters (TensorFlow) when they run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .tensors import TensorInfo, output_sort_key

log = logging.getLogger(__name__)


def tensor_info(detail: dict[str, Any]) -> TensorInfo:
    """One interpreter tensor detail -> TensorInfo (quantized: a non-zero scale on an integer dtype)."""
    scale, zero = detail.get("quantization", (0.0, 0))
    qp = detail.get("quantization_parameters") or {}
    if np.asarray(qp.get("scales", [])).size > 1:  # per-axis quantization on an I/O tensor is unusual
        log.warning("tensor %s has per-axis quantization; recording the first scale", detail["name"])
    dtype = np.dtype(detail["dtype"])
    quantized = bool(scale) and dtype.kind in "iu"
    sig = detail.get("shape_signature")
    shape = [int(d) for d in (sig if sig is not None and len(sig) else detail["shape"])]
    return TensorInfo(name=str(detail["name"]), shape=shape, dtype=dtype.name,
                      scale=float(scale) if quantized else None, zero_point=int(zero) if quantized else None)


def io_details(interp: Any, manifest: Any = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Input and output details of a loaded interpreter, in the one order every reader uses.

    The signature's order (``output_0``, ``output_1``... = the Keras model's outputs) when the file
    has a signature, else the file's; then the manifest's order when its names match exactly.
    """
    ins, outs = list(interp.get_input_details()), list(interp.get_output_details())
    try:
        sigs = interp.get_signature_list()
    except (ValueError, RuntimeError):
        sigs = {}
    if sigs:
        runner = interp.get_signature_runner(next(iter(sigs)))
        by_index = {d["index"]: d for d in ins + outs}
        si, so = runner.get_input_details(), runner.get_output_details()
        if all(si[k]["index"] in by_index for k in si) and all(so[k]["index"] in by_index for k in so):
            ins = [by_index[si[k]["index"]] for k in sorted(si, key=output_sort_key)]
            outs = [by_index[so[k]["index"]] for k in sorted(so, key=output_sort_key)]
    return ins, order_by_manifest(outs, manifest)


def order_by_manifest(details: list[dict[str, Any]], manifest: Any) -> list[dict[str, Any]]:
    """Output details in the manifest's order (matched by tensor name) when every name matches."""
    names = [t.name for t in (manifest.outputs if manifest is not None else [])]
    by_name = {d["name"]: d for d in details}
    if len(names) != len(details) or set(names) != set(by_name):
        return list(details)
    return [by_name[n] for n in names]


def read_tensors(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    from ..runtime.backends.litert import load_interpreter

    interp = load_interpreter(path)
    ins, outs = io_details(interp)
    return [tensor_info(d) for d in ins], [tensor_info(d) for d in outs]


def inference_precision(path: Path, manifest: Any) -> str | None:
    """LiteRT runs what the file holds: nothing to force."""
    return None


# ---- workstation side (imports the converters, hence TensorFlow, when called) ----------------------------
def build(saved_model: Path, out: Path, *, precision: str, dataset: Any, options: dict[str, Any]) -> Path:
    from ..converters.tflite import to_tflite

    return to_tflite(saved_model, out, precision=precision, dataset=dataset, io=options.get("io", "int8"),
                     denylisted_nodes=options.get("denylisted_nodes") or (),
                     denylisted_ops=options.get("denylisted_ops") or (), out_io=options.get("out_io"))


def gate_candidates(saved_model: Path, dataset: Any, artifact: Path, tmp: Path, options: dict[str, Any]) -> Any:
    """The accuracy gate's candidate builder: the MLIR quantizer with a growing denylist."""
    from ..converters.gate import TFLiteCandidates

    return TFLiteCandidates(saved_model, dataset, options.get("io", "int8"), tmp,
                            options.get("denylisted_nodes") or (), options.get("denylisted_ops") or (),
                            out_io=options.get("out_io"))


def layer_errors(artifact: Path, saved_model: Path, x: np.ndarray, *, manifest: Any, float_nodes: list[str],
                 tmp: Path, limit: int) -> list[Any]:
    """Per-layer int8 errors of a TFLite artifact (LiteRT's quantization debugger on ``x``)."""
    from ..converters import layers as L

    dtypes = (manifest.io_dtype if manifest is not None and manifest.io_dtype else {}) or {}
    io, out_io = ({"float32": "float"}.get(v, v) if v in ("float32", "int8", "uint8") else "int8"
                  for v in (dtypes.get("input") or "int8", dtypes.get("output") or "int8"))
    denylisted_ops = (manifest.conversion.option("denylisted_ops") if manifest is not None else None) or ()
    probe = L.TFLiteProbe(saved_model, x, io=io, out_io=out_io, limit=limit, denylisted_ops=denylisted_ops)
    return probe.rank(float_nodes)
