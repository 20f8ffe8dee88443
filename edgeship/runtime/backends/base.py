"""The Backend base class: shape checks, (de)quantization and batching shared by every backend.

A concrete backend implements ``_load`` (fill ``inputs`` / ``outputs``), ``_run`` (one batch of
raw tensors in, raw tensors out) and ``_close``. Everything a user sees goes through :meth:`infer`:
float32 in (the InputSpec's float domain), float32 out, any batch size N.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ... import formats
from ...limits import check_threads
from ...errors import BackendError, ModelError, SpecError
from ...manifest import Manifest, TensorInfo
from ...preprocess import Quantization, quantize_values

log = logging.getLogger(__name__)

def quantization(info: TensorInfo) -> Quantization | None:
    """The tensor's quantization parameters, or None for a float (or unquantized integer) tensor."""
    return Quantization(float(info.scale), int(info.zero_point or 0), np.dtype(info.dtype).name) if info.quantized else None


def quantize(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Float -> the tensor's dtype: ``round(x / scale + zero_point)`` clipped for quantized tensors."""
    dtype = np.dtype(info.dtype)
    q = quantization(info)
    if q is not None:
        return quantize_values(x, q)
    if dtype.kind in "iu":
        return np.clip(np.rint(x), np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)
    return np.asarray(x, dtype=dtype)


def dequantize(q: np.ndarray, info: TensorInfo) -> np.ndarray:
    """The tensor's dtype -> float32: ``(q - zero_point) * scale`` for quantized tensors."""
    if info.quantized:
        return ((q.astype(np.float32) - np.float32(info.zero_point or 0)) * np.float32(info.scale)).astype(np.float32)
    return np.asarray(q, dtype=np.float32)


def check_shape(x: np.ndarray, info: TensorInfo, where: str) -> None:
    """Raise a one-line SpecError when ``x`` (N, ...) does not fit the tensor's per-sample shape."""
    want = list(info.shape[1:])
    got = list(x.shape[1:])
    fits = x.ndim == len(info.shape) and all(w is None or w < 0 or w == g for w, g in zip(want, got))
    if not fits:
        shown = ["N"] + ["?" if (w is None or w < 0) else str(w) for w in want]
        raise SpecError(
            f"{where}: input {info.name!r} expects shape ({', '.join(shown)}), got {tuple(x.shape)}"
        )


class Backend:
    """Base class of every inference backend (use :func:`edgeship.runtime.backends.open_backend`).

    Attributes: ``path``, ``inputs`` / ``outputs`` (lists of TensorInfo), ``manifest`` (or None),
    ``executed_precision`` ("f32", "bf16", "f16", "int8"), ``name`` (registry key).
    """

    name = "base"

    def __init__(self, path: str | Path, *, threads: int | None = None, manifest: Manifest | None = None, **options: Any) -> None:
        self.path = Path(path)
        self.threads = check_threads(threads)
        self.manifest = manifest
        self.options = options
        self.inputs: list[TensorInfo] = []
        self.outputs: list[TensorInfo] = []
        self.executed_precision = "f32"
        self._closed = False
        if not self.path.exists():
            raise ModelError(f"model file {self.path} does not exist")
        if self.path.is_dir():
            raise ModelError(f"model {self.path} is a folder; expected a {formats.describe_suffixes()} file")
        self._load()
        if manifest is not None and [t.name for t in manifest.outputs] == [t.name for t in self.outputs]:
            for t, m in zip(self.outputs, manifest.outputs):  # each output's role, as convert recorded it
                t.role = m.role

    # ---- subclass hooks ------------------------------------------------------------------
    def _load(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _run(self, tensors: list[np.ndarray]) -> list[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _close(self) -> None:
        return None

    def _accepts_batch(self, n: int) -> bool:
        """Whether one ``_run`` call may take a batch of ``n`` (static batch-1 models loop instead)."""
        b = self.inputs[0].shape[0] if self.inputs and self.inputs[0].shape else 1
        return n == b or b is None or b < 0

    # ---- public API ----------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.inputs[0].shape)

    @property
    def input_quantization(self) -> Quantization | None:
        """The single input's quantization (int8/uint8 models), else None: what ``preprocess(quant=)`` takes."""
        return quantization(self.inputs[0]) if len(self.inputs) == 1 else None

    @property
    def output_quantization(self) -> Quantization | None:
        """The first output's quantization (int8/uint8 outputs), else None."""
        return quantization(self.outputs[0]) if self.outputs else None

    def infer(self, x: np.ndarray | Sequence[np.ndarray], *, quantized: bool = False) -> list[np.ndarray]:
        """Run a float batch (N, *sample_shape) (or one array per model input); float32 outputs, batch N.

        ``quantized=True``: ``x`` is already in the input tensor's dtype (e.g. from
        ``preprocess(frame, spec, quant=backend.input_quantization)``) and is passed through as is.
        """
        return self.dequantize_outputs(self.run_prepared(self.prepare_inputs(x, quantized=quantized)))

    def dequantize_outputs(self, raw: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Raw outputs of :meth:`run_prepared` -> float32 (scale and zero point of each output tensor)."""
        return [dequantize(r, info) for r, info in zip(raw, self.outputs)]

    def prepare_inputs(self, x: np.ndarray | Sequence[np.ndarray], *, quantized: bool = False) -> list[np.ndarray]:
        """Check shapes and quantize a float batch into the model's input tensors (what :meth:`run_prepared` takes)."""
        if self._closed:
            raise BackendError(f"{self.path.name}: backend is closed")
        xs = [np.asarray(a) for a in x] if isinstance(x, (list, tuple)) else [np.asarray(x)]
        if len(xs) != len(self.inputs):
            raise SpecError(f"{self.path.name}: model takes {len(self.inputs)} input(s), got {len(xs)}")
        for a, info in zip(xs, self.inputs):
            check_shape(a, info, self.path.name)
            if quantized and a.dtype != np.dtype(info.dtype):
                raise SpecError(f"{self.path.name}: input {info.name!r} is {info.dtype}; got an already-quantized {a.dtype} array")
        n = xs[0].shape[0]
        if any(a.shape[0] != n for a in xs):
            raise SpecError(f"{self.path.name}: inputs have different batch sizes {[a.shape[0] for a in xs]}")
        if quantized:
            return [np.ascontiguousarray(a) for a in xs]
        return [np.ascontiguousarray(quantize(a, info)) for a, info in zip(xs, self.inputs)]

    def run_prepared(self, q: list[np.ndarray]) -> list[np.ndarray]:
        """Run already-quantized input tensors; raw (still quantized) outputs. Loops batch-1 models over N."""
        n = q[0].shape[0]
        if self._accepts_batch(n):
            raw = self._run(q)
        else:
            parts = [self._run([a[i : i + 1] for a in q]) for i in range(n)]
            raw = [np.concatenate([p[k] for p in parts], axis=0) for k in range(len(self.outputs))] if parts else [
                np.zeros((0,) + tuple(max(d, 1) for d in o.shape[1:]), np.dtype(o.dtype)) for o in self.outputs
            ]
        return raw

    def last_call_ms(self) -> float | None:
        """The runtime's own timing of the last model call in ms, where it keeps one (OpenVINO), else None."""
        return None

    # ---- several model calls at once (a multi-camera run) -------------------------------------------
    parallel_runners = 1  # how many runners may call the model at the same time
    default_runners = 1  # how many inference workers a multi-camera run starts when not told

    def runner(self) -> Any:
        """A model call (``run(quantized inputs) -> raw outputs``, like :meth:`run_prepared`) for one inference
        worker. Backends that can run several calls at once (:attr:`parallel_runners` > 1) give each worker its own
        request or interpreter; otherwise every runner is the backend's own call, for one worker at a time."""
        return self.run_prepared

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (summaries, /health)."""
        return {
            "backend": self.name,
            "model": str(self.path),
            "executed_precision": self.executed_precision,
            "threads": self.threads,
            "inputs": [vars(t) for t in self.inputs],
            "outputs": [vars(t) for t in self.outputs],
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path.name!r}, precision={self.executed_precision})"
