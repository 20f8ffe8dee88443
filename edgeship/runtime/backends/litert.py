"""LiteRT (TensorFlow Lite) backend for ``.tflite`` artifacts.

The interpreter comes from ``ai_edge_litert`` (the maintained runtime), falling back to
``tflite_runtime`` and, only when neither is installed but TensorFlow is, ``tensorflow.lite``.
XNNPACK is the interpreter's default CPU delegate; ``threads`` sets its thread count.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ...errors import BackendError
from ...formats.tflite import interpreter_class, io_details, load_interpreter, tensor_info
from .base import Backend

log = logging.getLogger(__name__)


def _executed_precision(tensors: list[dict[str, Any]]) -> str:
    """int8 when the graph carries quantized int8/uint8 tensors (XNNPACK runs them in int8), else f32."""
    for t in tensors:
        scale, _ = t.get("quantization", (0.0, 0))
        if scale and np.dtype(t["dtype"]).name in ("int8", "uint8"):
            return "int8"
    return "f32"


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

    parallel_runners = 8  # one interpreter per worker (each with its own tensors): any number can run at once

    @property
    def default_runners(self) -> int:  # type: ignore[override]
        """One interpreter per CPU this process may use: on 2 cores, 4 inference-bound cameras ran 1.78x faster
        with 2 interpreters than with 1, decode-bound ones 0.83x (benchmarks/multi_camera.py)."""
        from ..affinity import cpu_count

        return max(1, min(self.parallel_runners, cpu_count()))

    def runner(self) -> Any:
        """The first runner is this interpreter; each further one is an interpreter of its own (its own tensor
        arena, ``threads`` threads), so several inference workers run the model at the same time."""
        if not getattr(self, "_handed_out", False):
            self._handed_out = True
            return self.run_prepared
        it = load_interpreter(self.path, self.threads)
        in_idx, out_idx = self._in_idx, self._out_idx

        def run(tensors: list[np.ndarray]) -> list[np.ndarray]:
            try:
                for idx, t in zip(in_idx, tensors):
                    it.set_tensor(idx, np.ascontiguousarray(t))
                it.invoke()
                return [it.get_tensor(i).copy() for i in out_idx]
            except (ValueError, RuntimeError) as e:
                raise BackendError(f"{self.path.name}: LiteRT inference failed: {str(e).strip().splitlines()[0]}") from None

        return run

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
