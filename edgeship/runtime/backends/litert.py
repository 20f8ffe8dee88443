"""LiteRT (TensorFlow Lite) backend for ``.tflite`` artifacts.

The interpreter comes from ``ai_edge_litert`` (the maintained runtime), falling back to
``tflite_runtime`` and, only when neither is installed but TensorFlow is, ``tensorflow.lite``.
XNNPACK is the interpreter's default CPU delegate; ``threads`` sets its thread count.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import Any, Callable

import numpy as np

from ...errors import BackendError, ModelError
from ...manifest import TensorInfo
from ...native_stderr import filtered_stderr
from .base import Backend

log = logging.getLogger(__name__)

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


def _tensor_info(d: dict[str, Any]) -> TensorInfo:
    scale, zero_point = d.get("quantization", (0.0, 0))
    shape = [int(s) for s in (d.get("shape_signature") if d.get("shape_signature") is not None else d["shape"])]
    return TensorInfo(
        name=str(d["name"]),
        shape=shape,
        dtype=np.dtype(d["dtype"]).name,
        scale=float(scale) if scale else None,
        zero_point=int(zero_point) if scale else None,
    )


def _executed_precision(tensors: list[dict[str, Any]]) -> str:
    """int8 when the graph carries quantized int8/uint8 tensors (XNNPACK runs them in int8), else f32."""
    for t in tensors:
        scale, _ = t.get("quantization", (0.0, 0))
        if scale and np.dtype(t["dtype"]).name in ("int8", "uint8"):
            return "int8"
    return "f32"


def order_by_manifest(details: list[dict[str, Any]], manifest: Any) -> list[dict[str, Any]]:
    """Output details in the manifest's order (matched by tensor name) when every name matches.

    The interpreter lists outputs in the file's order, which for files from other tools need not
    be the Keras model's; the manifest written at conversion time records the intended order.
    """
    names = [t.name for t in (manifest.outputs if manifest is not None else [])]
    by_name = {d["name"]: d for d in details}
    if len(names) != len(details) or set(names) != set(by_name):
        return list(details)
    return [by_name[n] for n in names]


class LiteRTBackend(Backend):
    """Runs a ``.tflite`` file with the LiteRT Interpreter (XNNPACK delegate, ``threads`` CPU threads)."""

    name = "tflite"

    def _load(self) -> None:
        cls, self.runtime = interpreter_class()
        kw: dict[str, Any] = {"model_path": str(self.path)}
        if self.threads:
            kw["num_threads"] = int(self.threads)
        try:
            with filtered_stderr():  # LiteRT's "Created XNNPACK delegate" INFO line on every load
                self._it = cls(**kw)
                self._it.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"{self.path} is not a valid TFLite model: {first}") from None
        in_details = self._it.get_input_details()
        out_details = order_by_manifest(self._it.get_output_details(), self.manifest)
        self._batch = int(in_details[0]["shape"][0]) if len(in_details[0]["shape"]) else 1  # read once, not per call
        self._in_idx = [d["index"] for d in in_details]
        self._out_idx = [d["index"] for d in out_details]
        self.inputs = [_tensor_info(d) for d in in_details]
        self.outputs = [_tensor_info(d) for d in out_details]
        try:
            details = self._it.get_tensor_details()
        except (ValueError, RuntimeError):  # some runtimes cannot describe every tensor
            details = in_details + out_details
        self.executed_precision = _executed_precision(details)

    def _accepts_batch(self, n: int) -> bool:
        return n == self._batch

    def _static_batch(self) -> int:
        return self._batch

    def _run(self, tensors: list[np.ndarray]) -> list[np.ndarray]:
        try:
            for idx, t in zip(self._in_idx, tensors):
                self._it.set_tensor(idx, np.ascontiguousarray(t))
            self._it.invoke()
            return [self._it.get_tensor(i).copy() for i in self._out_idx]
        except (ValueError, RuntimeError) as e:
            raise BackendError(f"{self.path.name}: LiteRT inference failed: {str(e).strip().splitlines()[0]}") from None

    def _close(self) -> None:
        self._it = None
