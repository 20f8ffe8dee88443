"""OpenVINO backend for IR (``.xml`` + ``.bin``) and ONNX artifacts.

Options: ``device`` (CPU, GPU, NPU, AUTO, or anything OpenVINO accepts such as ``AUTO:GPU,CPU``),
``hint`` (latency | throughput -> PERFORMANCE_HINT), ``streams`` (NUM_STREAMS), ``threads``
(INFERENCE_NUM_THREADS) and ``precision`` (INFERENCE_PRECISION_HINT: f32, f16, bf16).
On CPUs with AMX / avx512_bf16 OpenVINO runs an FP32 IR in bf16 unless ``precision="f32"``;
:attr:`executed_precision` reports what the compiled model actually runs, read from its properties
and its runtime graph.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np

from ... import formats
from ...errors import BackendError, InputError, ModelError
from ...formats.openvino import import_openvino, inference_precision, model_tensors
from .base import Backend

log = logging.getLogger(__name__)

HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
PRECISIONS = {"f32": "f32", "fp32": "f32", "f16": "f16", "fp16": "f16", "bf16": "bf16"}
# OpenVINO element type names -> edgeship's precision names
_TYPE_NAMES = {"f32": "f32", "bf16": "bf16", "f16": "f16", "i8": "int8", "u8": "int8", "fp32": "f32", "fp16": "f16",
               "i4": "int4", "u4": "int4", "bfloat16": "bf16", "float32": "f32", "float16": "f16"}
_COMPUTE_OPS = ("Convolution", "FullyConnected", "MatMul", "GroupConvolution", "Deconvolution")


def compile_config(*, hint: str = "latency", threads: int | None = None, streams: int | str | None = None,
                   precision: str | None = None) -> dict[str, str]:
    """The OpenVINO property dict for these options (validated; a bad value names the choices)."""
    if hint not in HINTS:
        raise InputError(f"hint must be one of {', '.join(HINTS)}, got {hint!r}")
    cfg = {"PERFORMANCE_HINT": HINTS[hint]}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = str(int(threads))
    if streams is not None:
        cfg["NUM_STREAMS"] = str(streams)
    if precision is not None:
        if precision.lower() not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(sorted(set(PRECISIONS.values())))}, got {precision!r}")
        cfg["INFERENCE_PRECISION_HINT"] = PRECISIONS[precision.lower()]
    return cfg


def static_batch(model: Any, batch: int | None) -> Any:
    """Fix a dynamic batch dimension to ``batch`` (None: leave it dynamic).

    Models read from .tflite files (and many IRs) come with a dynamic batch ``[?, H, W, C]``. A
    static shape lets OpenVINO fold the shape computations and pick static kernels: the int8
    MobileNetV2 224 runs ~10% faster per frame, which is what ``benchmark_app -shape`` measures.
    Only inputs whose other dimensions are all static are changed; if OpenVINO refuses, the
    model stays as it was.
    """
    if batch is None:
        return model
    ov = import_openvino()

    shapes = {}
    for port in model.inputs:
        ps = port.get_partial_shape()
        if ps.rank.is_dynamic or len(ps) == 0 or ps[0].is_static or not all(d.is_static for d in list(ps)[1:]):
            continue
        shapes[port] = ov.PartialShape([int(batch)] + [d.get_length() for d in list(ps)[1:]])
    if shapes:
        try:
            model.reshape(shapes)
        except RuntimeError as e:
            log.debug("keeping the dynamic batch: %s", _first_line(e))
    return model


def _type_name(t: Any) -> str:
    s = str(getattr(t, "get_type_name", lambda: t)() if not isinstance(t, str) else t).lower()
    s = s.replace("<type: '", "").replace("'>", "")
    return _TYPE_NAMES.get(s, s)


def runtime_precision(compiled: Any) -> str | None:
    """The precision most compute layers of the compiled graph run in ("int8", "bf16", "f32"...)."""
    try:
        ops = compiled.get_runtime_model().get_ordered_ops()
    except RuntimeError:
        return None
    seen: Counter[str] = Counter()
    for op in ops:
        info = op.get_rt_info()
        if "layerType" not in info or "runtimePrecision" not in info:
            continue
        if str(info["layerType"].astype(str)) not in _COMPUTE_OPS:
            continue
        seen[_type_name(str(info["runtimePrecision"].astype(str)))] += 1
    return seen.most_common(1)[0][0] if seen else None


class OpenVINOBackend(Backend):
    """Runs an OpenVINO IR (or ONNX) file on ``device`` with the given hint, streams, threads, precision."""

    name = "openvino"

    def _load(self) -> None:
        try:
            ov = import_openvino()
        except ImportError:
            raise BackendError("openvino is not installed: pip install 'edgeship[openvino]'") from None
        device = str(self.options.get("device") or "CPU").upper()
        # run what the manifest states: a float artifact in f32 even where the CPU would pick bf16 (other
        # devices keep their own default: a GPU runs an FP16 IR in f16, an NPU may not take the property)
        precision = self.options.get("precision") or (inference_precision(self.path, self.manifest) if device == "CPU" else None)
        cfg = compile_config(hint=self.options.get("hint") or "latency", threads=self.threads,
                             streams=self.options.get("streams"), precision=precision)
        core = ov.Core()
        formats.get("openvino").check_files(self.path)
        try:
            model = core.read_model(str(self.path))
        except RuntimeError as e:
            raise ModelError(f"{self.path} is not a valid OpenVINO model: {_first_line(e)}") from None
        model = static_batch(model, self.options.get("batch", 1))
        try:
            self._compiled = core.compile_model(model, device, cfg)
        except RuntimeError as e:
            devices = ", ".join(core.available_devices) or "none"
            raise BackendError(f"OpenVINO cannot compile {self.path.name} for device {device} "
                               f"(available: {devices}): {_first_line(e)}") from None
        self.device = device
        self.config = cfg
        self.inputs, self.outputs = model_tensors(self._compiled)
        self._request = self._compiled.create_infer_request()
        self._n_out = len(self.outputs)
        hint_prec = _type_name(self._compiled.get_property("INFERENCE_PRECISION_HINT")) if device != "AUTO" else None
        self.inference_precision = hint_prec
        self.executed_precision = runtime_precision(self._compiled) or hint_prec or "f32"
        try:
            self.streams = int(self._compiled.get_property("NUM_STREAMS"))
            self.optimal_requests = int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        except (RuntimeError, TypeError, ValueError):
            self.streams, self.optimal_requests = None, 1

    @property
    def parallel_runners(self) -> int:  # type: ignore[override]
        """OpenVINO's optimal number of infer requests in flight (the throughput hint raises it)."""
        return max(1, int(self.optimal_requests or 1))

    @property
    def default_runners(self) -> int:  # type: ignore[override]
        return self.parallel_runners

    def runner(self) -> Any:
        """Its own infer request on the shared compiled model: several cameras' frames in flight at once."""
        request = self._compiled.create_infer_request()
        n_out = self._n_out

        def run(tensors: list[np.ndarray]) -> list[np.ndarray]:
            try:
                request.infer({i: np.ascontiguousarray(t) for i, t in enumerate(tensors)}, share_inputs=True)
                return [request.get_output_tensor(i).data.copy() for i in range(n_out)]
            except RuntimeError as e:
                raise BackendError(f"{self.path.name}: OpenVINO inference failed: {_first_line(e)}") from None

        return run

    def _accepts_batch(self, n: int) -> bool:
        b = self.inputs[0].shape[0] if self.inputs[0].shape else 1
        return b < 0 or b == n

    def _run(self, tensors: list[np.ndarray]) -> list[np.ndarray]:
        r = self._request
        try:  # inputs shared, not copied (the call is synchronous); outputs copied out of the request
            r.infer({i: np.ascontiguousarray(t) for i, t in enumerate(tensors)}, share_inputs=True)
            return [r.get_output_tensor(i).data.copy() for i in range(self._n_out)]
        except RuntimeError as e:
            raise BackendError(f"{self.path.name}: OpenVINO inference failed: {_first_line(e)}") from None

    def last_call_ms(self) -> float | None:
        """OpenVINO's latency of the last request (measured in C++ around the call: what benchmark_app reports)."""
        try:
            return float(self._request.latency)
        except (AttributeError, RuntimeError, TypeError):
            return None

    def throughput(self, x: np.ndarray, *, duration: float = 5.0, requests: int | None = None) -> dict[str, float]:
        """Asynchronous throughput with ``requests`` parallel infer requests (default: OpenVINO's optimum)."""
        import time

        ov = import_openvino()

        q = self.prepare_inputs(x)
        nreq = int(requests or self.optimal_requests or 1)
        # No Python callback: a callback-holding AsyncInferQueue can deadlock when the compiled
        # model is released afterwards. Count submissions; wait_all() guarantees they finished.
        queue = ov.AsyncInferQueue(self._compiled, nreq)
        done = [0]
        inputs = {i: t for i, t in enumerate(q)}
        t0 = time.perf_counter()
        try:
            while time.perf_counter() - t0 < duration:
                queue.start_async(inputs)
                done[0] += 1
            queue.wait_all()
        finally:
            del queue
        elapsed = time.perf_counter() - t0
        return {"fps": done[0] * x.shape[0] / elapsed, "requests": nreq, "iterations": done[0]}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(device=self.device, config=self.config, streams=self.streams, inference_precision=self.inference_precision)
        return d

    def _close(self) -> None:
        self._request = None
        self._compiled = None


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    # OpenVINO prefixes messages with "Exception from src/...": keep the informative line
    useful = [ln for ln in lines if not ln.startswith(("Exception from", "Check '"))]
    return (useful or lines or [type(e).__name__])[0][:300]
