"""LiteRT (TensorFlow Lite) backend for ``.tflite`` artifacts.

The interpreter comes from ``ai_edge_litert`` (the maintained runtime), falling back to
``tflite_runtime`` and, only when neither is installed but TensorFlow is, ``tensorflow.lite``.
XNNPACK is the interpreter's default CPU delegate; ``threads`` sets its thread count.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import re
from typing import Any, Callable

import numpy as np

from ...errors import BackendError, ModelError
from ...formats.tflite import io_details, tensor_info
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


def _executed_precision(tensors: list[dict[str, Any]]) -> str:
    """int8 when the graph carries quantized int8/uint8 tensors (XNNPACK runs them in int8), else f32."""
    for t in tensors:
        scale, _ = t.get("quantization", (0.0, 0))
        if scale and np.dtype(t["dtype"]).name in ("int8", "uint8"):
            return "int8"
    return "f32"


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


class LiteRTBackend(Backend):
    """Runs a ``.tflite`` file with the LiteRT Interpreter (XNNPACK delegate, ``threads`` CPU threads)."""

    name = "tflite"

    def _load(self) -> None:
        self.runtime = interpreter_class()[1]
        self._it = load_interpreter(self.path, self.threads)
        in_details, out_details = io_details(self._it, self.manifest)
        self._batch = int(in_details[0]["shape"][0]) if len(in_details[0]["shape"]) else 1  # read once, not per call
        self._in_idx = [d["index"] for d in in_details]
        self._out_idx = [d["index"] for d in out_details]
        self.inputs = [tensor_info(d) for d in in_details]
        self.outputs = [tensor_info(d) for d in out_details]
        try:
            details = self._it.get_tensor_details()
        except (ValueError, RuntimeError):  # some runtimes cannot describe every tensor
            details = in_details + out_details
        self.executed_precision = _executed_precision(details)

    def _accepts_batch(self, n: int) -> bool:
        return n == self._batch

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
