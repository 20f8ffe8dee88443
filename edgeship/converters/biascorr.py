"""Bias correction: the int8 model's per-channel mean output error folded back into each layer's bias.

Rounding weights and activations to int8 shifts the mean of a layer's outputs, channel by channel, and
the next layers carry the shift on (Nagel et al. 2019, "Data-Free Quantization", section 4.2; NNCF's
``BiasCorrection``). Empirical bias correction measures that shift on calibration samples and
subtracts it from the layer's bias.

For TFLite this module does it on the quantized flatbuffer: for each convolution, depthwise
convolution and fully connected layer, in the order the graph runs them, the mean of each output
channel over the samples (dequantized) is compared with the calibrated float model's mean of the same
tensor, and the difference, in the bias's own int32 units (input scale x weight scale of the channel),
is subtracted from the int32 bias. ``full`` corrects one layer at a time and measures the next one on
the already corrected model (what the upstream layers' corrections changed is not corrected twice);
``fast`` measures every layer once on the uncorrected model and corrects them all together; ``auto``
measures ``full`` against no correction on calibration samples the correction was not fitted on and
keeps it only where it is :data:`~edgeship.converters.ranges.CHOICE_MARGIN_DB` closer to the float
model. For OpenVINO the same names select NNCF's ``BiasCorrection`` (full), ``FastBiasCorrection``
(fast) or neither (none); there ``auto`` measures fast against full (:func:`edgeship.converters.openvino._choose`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ConversionError

log = logging.getLogger(__name__)

# --bias-correction: the first is the default. auto: measured per model (TFLite: full against none; OpenVINO: NNCF's
# full against its fast one); full: layer by layer; fast: every layer from one measurement; none: no correction
BIAS_CORRECTION = ("auto", "full", "fast", "none")
DEFAULT_BIAS_CORRECTION = BIAS_CORRECTION[0]
BIASED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")  # TFLite ops whose input 2 is the bias
MAX_SAMPLES = 64  # calibration samples each layer's mean output is measured on


@dataclass(frozen=True)
class BiasTarget:
    """One layer to correct: its int32 bias tensor's name and index, its output tensor's name, and the float range its
    int8 output can hold (None: not an int8 output)."""

    bias: str
    bias_index: int
    output: str
    output_range: tuple[float, float] | None = None


def _name(t: Any) -> str:
    return t.name.decode() if isinstance(t.name, bytes) else str(t.name)


def targets(model: Any) -> list[BiasTarget]:
    """The layers of a quantized flatbuffer model object (``flatbuffer_utils`` form) whose int32 bias can be
    corrected, in the order the main subgraph runs them."""
    from tensorflow.lite.python import schema_py_generated as schema

    from .ranges import _op_names

    g = model.subgraphs[0]
    ops = _op_names(model)
    out = []
    for op in g.operators:
        if ops[op.opcodeIndex] not in BIASED_OPS or len(op.inputs) < 3 or int(op.inputs[2]) < 0:
            continue
        b = g.tensors[int(op.inputs[2])]
        if b.type != schema.TensorType.INT32 or b.quantization is None or b.quantization.scale is None:
            continue
        if model.buffers[b.buffer].data is None:  # a bias stored outside the flatbuffer (offset buffers): left alone
            continue
        o = g.tensors[int(op.outputs[0])]
        out.append(BiasTarget(_name(b), int(op.inputs[2]), _name(o), _int8_range(o, schema)))
    names = [t.bias for t in out] + [t.output for t in out]
    return [t for t in out if names.count(t.bias) == 1 and names.count(t.output) == 1]  # a name must say which tensor


def _int8_range(t: Any, schema: Any) -> tuple[float, float] | None:
    """The float values an int8 tensor (one scale) can hold: what its layer's output saturates at."""
    q = t.quantization
    if t.type != schema.TensorType.INT8 or q is None or q.scale is None or len(q.scale) != 1:
        return None
    scale, zero = float(q.scale[0]), int(q.zeroPoint[0]) if q.zeroPoint is not None and len(q.zeroPoint) else 0
    return (-128 - zero) * scale, (127 - zero) * scale


def channel_means(model: bytes, names: Sequence[str], x: np.ndarray,
                  clamp: dict[str, tuple[float, float] | None] | None = None) -> dict[str, np.ndarray]:
    """Per-channel (last axis) mean of each named tensor over the samples ``x``, dequantized, when the (float-I/O)
    ``model`` runs them with every tensor kept; a tensor named in ``clamp`` is clipped to its (lo, hi) first (a float
    reference seen through the int8 output's range: what that range clips is not a bias to correct)."""
    import tensorflow as tf

    it = tf.lite.Interpreter(model_content=bytes(model), experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    details = {d["name"]: d for d in it.get_tensor_details()}
    wanted = [details[n] for n in names if n in details]
    inp = it.get_input_details()[0]
    sums: dict[str, np.ndarray] = {}
    for s in x:
        it.set_tensor(inp["index"], np.ascontiguousarray(s[None], dtype=inp["dtype"]))
        it.invoke()
        for d in wanted:
            v = it.get_tensor(d["index"]).astype(np.float64)
            scale, zero = d["quantization"]
            if scale:
                v = (v - zero) * scale
            bounds = (clamp or {}).get(d["name"])
            if bounds is not None:
                v = np.clip(v, *bounds)
            m = v.reshape(-1, v.shape[-1]).mean(axis=0)
            sums[d["name"]] = sums.get(d["name"], 0.0) + m
    return {k: v / max(1, len(x)) for k, v in sums.items()}


def _bias_values(model: Any, t: BiasTarget) -> np.ndarray:
    return np.frombuffer(bytes(bytearray(model.buffers[model.subgraphs[0].tensors[t.bias_index].buffer].data)),
                         dtype=np.int32).copy()


def _set_bias(model: Any, index: int, values: np.ndarray) -> None:
    """Write int32 ``values`` into tensor ``index``'s buffer (a buffer other tensors share is copied first)."""
    from tensorflow.lite.python import schema_py_generated as schema

    g = model.subgraphs[0]
    buf = g.tensors[index].buffer
    shared = sum(1 for sg in model.subgraphs for t in sg.tensors if t.buffer == buf) > 1
    if shared:
        fresh = schema.BufferT()
        model.buffers.append(fresh)
        g.tensors[index].buffer = len(model.buffers) - 1
        buf = g.tensors[index].buffer
    model.buffers[buf].data = np.frombuffer(values.astype("<i4").tobytes(), dtype=np.uint8)


def _delta(model: Any, t: BiasTarget, error: np.ndarray) -> np.ndarray | None:
    """The int32 change that removes ``error`` (per output channel, in float) from the bias of ``t``."""
    scale = np.asarray(model.subgraphs[0].tensors[t.bias_index].quantization.scale, dtype=np.float64)
    if error.shape[0] != _bias_values(model, t).shape[0] or scale.size not in (1, error.shape[0]) or np.any(scale <= 0):
        return None
    return -np.round(error / scale).astype(np.int64)


def _add(model: Any, t: BiasTarget, delta: np.ndarray) -> None:
    values = _bias_values(model, t).astype(np.int64) + delta
    _set_bias(model, t.bias_index, np.clip(values, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32))


def correct(quantized: bytes, reference: dict[str, np.ndarray], x: np.ndarray, method: str = "full",
            progress: Callable[[], None] | None = None) -> tuple[bytes, dict[str, np.ndarray]]:
    """``quantized`` (a float-I/O int8 model) with its biases corrected toward ``reference`` (output tensor name ->
    the float model's per-channel mean on ``x``), and the int32 change made to each bias (by bias tensor name).
    ``method``: ``full`` (one layer at a time, each measured after the ones before it were corrected) or ``fast``
    (every layer from one measurement of the uncorrected model)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(quantized))
    todo = [t for t in targets(model) if t.output in reference]
    deltas: dict[str, np.ndarray] = {}
    current = bytes(quantized)
    measured = channel_means(current, [t.output for t in todo], x) if method == "fast" else {}
    for t in todo:
        means = measured if method == "fast" else channel_means(current, [t.output], x)
        d = _delta(model, t, means[t.output] - reference[t.output]) if t.output in means else None
        if d is not None and np.any(d):
            _add(model, t, d)
            deltas[t.bias] = d
            if method == "full":
                current = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
        if progress is not None:
            progress()
    if method == "fast" and deltas:
        current = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return current, deltas


def apply(model_bytes: bytes, deltas: dict[str, np.ndarray]) -> bytes:
    """The same bias changes made in another quantization of the same calibrated model (the artifact with its own I/O
    types): each bias is found by its tensor name and must have as many channels (else a ConversionError)."""
    if not deltas:
        return model_bytes
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    by_name = {t.bias: t for t in targets(model)}
    for name, d in deltas.items():
        t = by_name.get(name)
        if t is None or _bias_values(model, t).shape != d.shape:
            raise ConversionError(f"bias correction: the artifact has no int32 bias {name!r} of {d.shape[0]} channels "
                                  "(the quantizer named its tensors differently)")
        _add(model, t, d)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def choose(calibrated: bytes, quantized: bytes, x: np.ndarray, method: str,
           run: Callable[[bytes, np.ndarray], list[np.ndarray]]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The bias changes to make (empty: none) and a record of the choice, for ``quantized`` (a float-I/O int8 model
    of the float ``calibrated`` one). Fitted on the first part of ``x``; ``auto`` judges full correction against
    none on the rest (:func:`edgeship.converters.ranges.sample_sqnr`, kept when CHOICE_MARGIN_DB closer)."""
    from tensorflow.lite.tools import flatbuffer_utils

    from ..progress import progress
    from .ranges import judge_alternative, split_samples

    if method not in BIAS_CORRECTION:
        raise ValueError(f"bias correction must be one of {', '.join(BIAS_CORRECTION)}, got {method!r}")
    if method == "none":
        return {}, {"method": "none"}
    fit, judge = split_samples(x, fit=MAX_SAMPLES) if method == "auto" else (x[:MAX_SAMPLES], x[:0])
    if method == "auto" and len(judge) == 0:
        return {}, {"method": "none", "reason": "too few calibration samples to judge the correction on unseen ones"}
    found = targets(flatbuffer_utils.convert_bytearray_to_object(bytearray(quantized)))
    reference = channel_means(calibrated, [t.output for t in found], fit, clamp={t.output: t.output_range for t in found})
    bar = progress(total=len(found), desc="bias correction", unit="layer")
    try:
        corrected, deltas = correct(quantized, reference, fit, "full" if method == "auto" else method,
                                    progress=lambda: bar.update(1))
    finally:
        bar.close()
    applied = "full" if method == "auto" and deltas else ("none" if method == "auto" else method)
    record: dict[str, Any] = {"method": applied, "corrected_layers": len(deltas), "layers": len(found)}
    if method != "auto" or not deltas:
        return deltas, record
    keep, measured = judge_alternative(run(calibrated, judge), {"none": run(quantized, judge), "full": run(corrected, judge)},
                                       "the correction")
    record.update(measured)
    if keep:
        return deltas, record
    record["method"] = "none"
    del record["corrected_layers"]
    return {}, record
