"""TFLite (LiteRT flatbuffer): opening a file with a LiteRT interpreter and reading its tensors.

Needs only ai-edge-litert (what a device has). What builds a .tflite lives with the converters
(:mod:`edgeship.converters.builders`); what runs one for inference with the runtime
(:mod:`edgeship.runtime.backends.litert`).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import BackendError, ModelError
from ..native_stderr import filtered_stderr
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


# module that provides ``Interpreter``, in order of preference
INTERPRETER_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite")


def interpreter_class() -> tuple[Callable[..., Any], str]:
    """The first available LiteRT Interpreter class and the module it came from."""
    for name in INTERPRETER_MODULES:
        if importlib.util.find_spec(name.split(".")[0]) is None:
            continue
        try:
            mod = importlib.import_module(name)
        except ImportError as e:  # e.g. tflite_runtime built against numpy 1
            log.debug("cannot import %s: %s", name, e)
            continue
        return mod.Interpreter, name
    raise BackendError(
        "no LiteRT interpreter found: install ai-edge-litert (pip install ai-edge-litert); "
        f"tried {', '.join(INTERPRETER_MODULES)}"
    )


def load_interpreter(path: Any, threads: int | None = None) -> Any:
    """A LiteRT Interpreter for ``path`` with its tensors allocated; a file LiteRT refuses is one ModelError line.

    A model that needs an op LiteRT does not have built in is named as such (with the op), not
    called an invalid file.
    """
    cls, _ = interpreter_class()
    kw: dict[str, Any] = {"model_path": str(path)}
    if threads:
        kw["num_threads"] = int(threads)
    try:
        with filtered_stderr():  # LiteRT's "Created XNNPACK delegate" INFO line on every load
            it = cls(**kw)
            it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ModelError(_load_error(path, e)) from None
    return it


def _load_error(path: Any, e: BaseException) -> str:
    text = str(e)
    m = re.search(r"Encountered unresolved custom op: ([A-Za-z0-9_.\-]+)", text) or re.search(r"custom op[^A-Za-z0-9]*([A-Za-z0-9_.\-]+)", text, re.I)
    if m and "custom" in text.lower():
        return (f"{path} needs the custom op {m.group(1)}, which is not built into LiteRT: run it where that op is "
                "registered (a LiteRT build or interpreter with the op added), or re-export the model without it")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f"{path} is not a valid TFLite model: {lines[0] if lines else type(e).__name__}"


def read_tensors(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    interp = load_interpreter(path)
    ins, outs = io_details(interp)
    return [tensor_info(d) for d in ins], [tensor_info(d) for d in outs]


def inference_precision(path: Path, manifest: Any) -> str | None:
    """LiteRT runs what the file holds: nothing to force."""
    return None
