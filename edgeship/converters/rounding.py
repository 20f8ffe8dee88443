"""GPTQ weight rounding for TFLite int8: each layer's weights rounded together, to cancel its output error.

TFLite quantizes the weights of a convolution, depthwise convolution or fully connected layer per
output channel and symmetric: one step ``s = max|w| / 127`` per channel, each weight rounded to its
nearest step. Nearest rounding makes every weight as close as it can be, but what the model feels is
the layer's output error ``(W - Q) x`` on the inputs ``x`` it sees, and the rounding errors of weights
whose inputs are correlated add up. GPTQ (Frantar et al. 2023, the greedy form of Optimal Brain
Quantization; AdaRound asks the same question with gradient descent) rounds one input column at a time
and moves the weights of the same output channel that are not rounded yet to cancel the error made so
far, weighted by ``H = X^T X``: the second moments of the layer's inputs on calibration samples (the
Hessian of its squared output error).

Here it runs on a finished TFLite artifact whose weights are int8 (full int8, int16x8, dynamic range):
``H`` is measured on the float model's own activations (the calibrated model, or the fp32 conversion),
and each layer's int8 weights are replaced by GPTQ's levels on the artifact's own steps, so nothing else
in the artifact changes (the int32 biases' scales included). Layers are matched by the tensor they write.
:func:`choose` keeps GPTQ only where the outputs of calibration samples it was not fitted on come out
:data:`~edgeship.converters.ranges.CHOICE_MARGIN_DB` closer to the float model in full int8, or not
further (:data:`WEIGHTS_ONLY_MARGIN_DB`) in int16x8 and dynamic range, where the weights dominate the
error (``weight_rounding="auto"``, the default), as the range setting and bias correction do. A weight
that is exactly zero stays zero (a pruned model keeps its sparsity). :func:`apply`
writes the same levels into another quantization of the same model (the artifact's int8-I/O twin, a
candidate with some layers kept in float).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import ConversionError

log = logging.getLogger(__name__)

# --weight-rounding: the first is the default. auto: GPTQ kept where it measures better; gptq: always; nearest: off
WEIGHT_ROUNDING = ("auto", "gptq", "nearest")
DEFAULT_WEIGHT_ROUNDING = WEIGHT_ROUNDING[0]
ROUNDED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")  # TFLite ops whose input 1 is a weight tensor
QUANTIZED_AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}  # the output-channel axis of each's weights
LEVELS = 127  # symmetric int8 weights: -127..127 steps
MAX_SAMPLES = 64  # calibration samples H is measured on (fewer leave a dense layer's H badly estimated)
MAX_ROWS = 1024  # input patches per sample and layer that enter H (a uniform subsample of a large feature map)
BLOCK_ROWS = 8192  # patch rows gathered before each product that adds to H
MAX_HESSIAN_BYTES = 512 * 2**20  # a layer whose H would be larger (8192 inputs per output channel) keeps nearest rounding
PASS_BYTES = 256 * 2**20  # H of several layers accumulated in one pass over the samples, up to this many bytes
DAMPING = 0.01  # added to H's diagonal, as a fraction of its mean (H from a few samples is near singular)
BLOCK = 128  # columns rounded between two updates of the rest of the weights
# auto's margin where the int8 weights dominate the error (int16x8, dynamic range: float or 16-bit activations):
# GPTQ kept unless it measures worse (0.4-10 dB closer on every model of benchmarks/real_models.py). Full int8,
# where the activations' rounding dominates and GPTQ moves the outputs within noise, takes the usual margin.
WEIGHTS_ONLY_MARGIN_DB = 0.0


@dataclass(frozen=True)
class WeightLayer:
    """A layer of the float model: its op, the tensor it writes (how the artifact's layer is found), its input and
    weight tensor indices, and the geometry of its window."""

    op: str
    output: str
    input_index: int
    weight_index: int
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    same_padding: bool = False


@dataclass(frozen=True)
class QuantizedWeights:
    """A layer's int8 weight tensor in an artifact: its tensor index, shape and per-output-channel steps."""

    tensor_index: int
    shape: tuple[int, ...]
    steps: np.ndarray  # one per output channel (a single step repeated when the tensor has one scale)


@dataclass(frozen=True)
class Levels:
    """One layer's rounded int8 weights (in the artifact's layout) and the per-output-channel steps they are on."""

    values: np.ndarray
    steps: np.ndarray


@dataclass(frozen=True)
class Rounding:
    """What :func:`fit` found: GPTQ's levels by the tensor each layer writes, how many layers it rounded of the
    artifact's int8-weight layers, and its output error against nearest rounding (mean ratio over layers, measured
    on the calibration samples' H)."""

    levels: dict[str, Levels]
    layers: int
    error_ratio: float | None

    def to_dict(self) -> dict[str, Any]:
        ratio = None if self.error_ratio is None else round(self.error_ratio, 3)
        return {"rounded_layers": len(self.levels), "layers": self.layers, "layer_error_vs_nearest": ratio}


# ---- the rounding itself (pure) ---------------------------------------------------------------------------
def nearest(w: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Integer levels of ``w`` (rows = output channels) rounded to nearest on the per-row ``step``."""
    return np.clip(np.round(w / step[:, None]), -LEVELS, LEVELS)


def gptq(w: np.ndarray, h: np.ndarray, step: np.ndarray, *, damping: float = DAMPING, block: int = BLOCK) -> np.ndarray | None:
    """Integer levels (in -127..127) for the float weights ``w`` (rows = output channels, columns = inputs) on the
    per-row grid ``step``, rounded column by column with the error fed forward through ``h``: the inputs' second
    moments, (columns, columns) shared by every row or (rows, columns, columns) one per row (a depthwise layer).
    A weight that is exactly zero stays zero (a pruned model keeps its sparsity; the others make up for it, as
    SparseGPT does). None when ``h`` cannot be inverted even damped."""
    w = np.array(w, dtype=np.float64)
    rows, cols = w.shape
    zero = w == 0
    h = np.array(h, dtype=np.float64).reshape(-1, cols, cols)
    diag = np.einsum("rii->ri", h)  # a view: writing it writes h's diagonal
    diag[diag <= 0] = 1.0  # an input that was always zero: its weight is rounded to nearest, no error fed on
    diag += damping * diag.mean(axis=1, keepdims=True)
    try:
        u = np.swapaxes(np.linalg.cholesky(np.linalg.inv(h)), 1, 2)  # upper: inv(h) = u^T u, per H
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(u)):
        return None
    q = np.zeros_like(w)
    for a in range(0, cols, block):
        b = min(a + block, cols)
        part, err = w[:, a:b].copy(), np.zeros((rows, b - a))
        for i in range(b - a):
            col = part[:, i]
            level = np.where(zero[:, a + i], 0.0, np.clip(np.round(col / step), -LEVELS, LEVELS))
            q[:, a + i] = level
            e = (col - level * step) / u[:, a + i, a + i]
            part[:, i:] -= e[:, None] * u[:, a + i, a + i:b]
            err[:, i] = e
        if b < cols:
            w[:, b:] -= err @ u[0, a:b, b:] if len(u) == 1 else np.einsum("ri,rij->rj", err, u[:, a:b, b:])
    return q


def output_error(w: np.ndarray, levels: np.ndarray, step: np.ndarray, h: np.ndarray) -> float:
    """tr((W - Q) H (W - Q)^T): the layer's summed squared output error on the samples ``h`` was measured on (``h``
    shared by the rows or one per row, as :func:`gptq` takes it)."""
    d = np.asarray(w, np.float64) - levels * step[:, None]
    h = np.asarray(h, np.float64)
    if h.ndim == 2:
        return float(np.sum((d @ h) * d))
    return float(np.sum(np.matmul(d[:, None, :], h)[:, 0, :] * d))


def as_rows(op: str, w: np.ndarray) -> np.ndarray:
    """Weights as (output channels, inputs per channel): CONV_2D (O,kh,kw,I) and FULLY_CONNECTED (O,I) as stored;
    DEPTHWISE_CONV_2D (1,kh,kw,C) one row per channel."""
    return w.reshape(-1, w.shape[-1]).T if op == "DEPTHWISE_CONV_2D" else w.reshape(w.shape[0], -1)


def from_rows(op: str, rows: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The inverse of :func:`as_rows`."""
    return rows.T.reshape(shape) if op == "DEPTHWISE_CONV_2D" else rows.reshape(shape)


def round_layer(op: str, w: np.ndarray, h: np.ndarray, step: np.ndarray) -> tuple[np.ndarray, float] | None:
    """(GPTQ's int8 levels in the weights' own layout, its output error over nearest rounding's) for one layer's
    float weights ``w`` on the per-output-channel ``step``; None when GPTQ does not do better on ``h``."""
    rows = as_rows(op, w).astype(np.float64)
    if op == "DEPTHWISE_CONV_2D":  # output channel c reads input channel c // multiplier
        h = h[np.arange(rows.shape[0]) // (rows.shape[0] // h.shape[0])]
    levels = gptq(rows, h, step)
    if levels is None:
        return None
    err, base = output_error(rows, levels, step, h), output_error(rows, nearest(rows, step), step, h)
    if not err < base:
        return None
    return from_rows(op, levels, w.shape).astype(np.int8), err / base


# ---- the float model's layers and their inputs' second moments ------------------------------------------------
def _model(data: bytes) -> Any:
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.convert_bytearray_to_object(bytearray(data))


def _buffer(model: Any, index: int, dtype: str) -> np.ndarray | None:
    t = model.subgraphs[0].tensors[index]
    data = model.buffers[t.buffer].data
    if data is None:
        return None
    return np.frombuffer(bytes(bytearray(data)), dtype=dtype).reshape([int(d) for d in t.shape]).copy()


def _ops(model: Any) -> Iterator[tuple[str, Any]]:
    from .ranges import _op_names

    names = _op_names(model)
    for op in model.subgraphs[0].operators:
        yield names[op.opcodeIndex], op


def weight_layers(model: Any) -> list[WeightLayer]:
    """The layers of a float flatbuffer model object (``flatbuffer_utils`` form) with float weights, in graph order."""
    from tensorflow.lite.python import schema_py_generated as schema

    from .ranges import _tensor_name

    g = model.subgraphs[0]
    out = []
    for name, op in _ops(model):
        if name not in ROUNDED_OPS or len(op.inputs) < 2:
            continue
        wt = g.tensors[int(op.inputs[1])]
        if wt.type != schema.TensorType.FLOAT32 or model.buffers[wt.buffer].data is None:
            continue
        o = op.builtinOptions
        geometry = {}
        if name != "FULLY_CONNECTED":
            geometry = {"stride": (int(o.strideH), int(o.strideW)), "same_padding": o.padding == schema.Padding.SAME,
                        "dilation": (int(o.dilationHFactor), int(o.dilationWFactor))}
        out.append(WeightLayer(name, _tensor_name(g.tensors[int(op.outputs[0])]), int(op.inputs[0]), int(op.inputs[1]),
                               **geometry))
    return out


def quantized_weights(model: Any) -> dict[str, QuantizedWeights]:
    """The int8 weight tensors of an artifact, by the tensor their layer writes: stored as the op's input 1, or behind
    a DEQUANTIZE (dynamic range). Symmetric per-output-channel (or per-tensor) steps only; weights other ops share
    are left out."""
    from tensorflow.lite.python import schema_py_generated as schema

    from .ranges import _tensor_name

    g = model.subgraphs[0]
    dequantized = {int(op.outputs[0]): int(op.inputs[0]) for name, op in _ops(model) if name == "DEQUANTIZE"}
    readers: dict[int, int] = {}
    for _, op in _ops(model):
        for i in op.inputs:
            readers[int(i)] = readers.get(int(i), 0) + 1
    holders: dict[int, int] = {}  # the exporter stores identical constants once: a buffer may back several tensors
    for t in g.tensors:
        holders[t.buffer] = holders.get(t.buffer, 0) + 1
    out = {}
    for name, op in _ops(model):
        if name not in ROUNDED_OPS or len(op.inputs) < 2:
            continue
        index = dequantized.get(int(op.inputs[1]), int(op.inputs[1]))
        t = g.tensors[index]
        q = t.quantization
        if t.type != schema.TensorType.INT8 or q is None or q.scale is None or model.buffers[t.buffer].data is None:
            continue
        shape = tuple(int(d) for d in t.shape)
        axis, scale = QUANTIZED_AXIS[name], np.asarray(q.scale, np.float64)
        zero = np.asarray(q.zeroPoint if q.zeroPoint is not None else [0])
        if readers.get(index, 0) != 1 or readers.get(int(op.inputs[1]), 0) != 1 or holders[t.buffer] != 1:
            continue  # shared weights: left alone
        if np.any(zero != 0) or np.any(scale <= 0) or (scale.size > 1 and (int(q.quantizedDimension) != axis
                                                                            or scale.size != shape[axis])):
            continue
        channels = shape[axis]
        out[_tensor_name(g.tensors[int(op.outputs[0])])] = QuantizedWeights(
            index, shape, np.broadcast_to(scale, (channels,)).copy() if scale.size == 1 else scale)
    return out


def _padding(size: int, k: int, stride: int, dilation: int, same: bool) -> tuple[int, int]:
    """(output size, padding before) along one axis, as TensorFlow pads (SAME: the extra pixel after)."""
    span = (k - 1) * dilation + 1
    if not same:
        return max(0, (size - span) // stride + 1), 0
    out = -(-size // stride)
    return out, max((out - 1) * stride + span - size, 0) // 2


def _patches(a: np.ndarray, layer: WeightLayer, shape: tuple[int, ...],
             rng: np.random.Generator | None = None) -> np.ndarray | None:
    """The layer's input as rows of what one output position multiplies: (positions, kh*kw*C) for a convolution,
    (positions, kh*kw, C) for a depthwise one, (rows, inputs) for a fully connected layer; at most :data:`MAX_ROWS`
    positions, drawn with ``rng`` before anything is gathered (all of them in order without one). None when the
    weights do not match the input (a grouped convolution)."""
    def pick(n: int) -> np.ndarray:
        return np.arange(n) if rng is None or n <= MAX_ROWS else np.sort(rng.choice(n, MAX_ROWS, replace=False))

    if layer.op == "FULLY_CONNECTED":
        if a.size % shape[-1]:
            return None
        rows = a.reshape(-1, shape[-1])
        return rows[pick(len(rows))]
    if a.ndim != 4:
        return None
    kh, kw, channels = shape[1], shape[2], a.shape[-1]
    if (layer.op == "CONV_2D" and shape[3] != channels) or (layer.op == "DEPTHWISE_CONV_2D" and shape[3] % channels):
        return None
    (sy, sx), (dy, dx) = layer.stride, layer.dilation
    oh, top = _padding(a.shape[1], kh, sy, dy, layer.same_padding)
    ow, left = _padding(a.shape[2], kw, sx, dx, layer.same_padding)
    padded = np.pad(a.astype(np.float32), ((0, 0), (top, kh * dy + oh * sy), (left, kw * dx + ow * sx), (0, 0)))
    n = a.shape[0] * oh * ow
    idx = pick(n)
    b, rest = np.divmod(idx, oh * ow)
    y, x = np.divmod(rest, ow)
    ys = (y * sy)[:, None] + np.arange(kh)[None, :] * dy  # rows of the padded map each window covers
    xs = (x * sx)[:, None] + np.arange(kw)[None, :] * dx
    p = padded[b[:, None, None], ys[:, :, None], xs[:, None, :]]  # (positions, kh, kw, C)
    return p.reshape(len(idx), kh * kw, channels) if layer.op == "DEPTHWISE_CONV_2D" else p.reshape(len(idx), -1)


def _moments(p: np.ndarray, op: str) -> np.ndarray:
    """P^T P of a block of patch rows, in float32 (a few thousand rows: float32 sums hold; summed in float64)."""
    p = np.asarray(p, dtype=np.float32)
    if op == "DEPTHWISE_CONV_2D":  # one H per channel: (C, k, n) @ (C, n, k)
        t = np.ascontiguousarray(p.transpose(2, 1, 0))
        return np.matmul(t, t.transpose(0, 2, 1))
    return p.T @ p


class _Moments:
    """H of one layer, summed from patch rows gathered into blocks of :data:`BLOCK_ROWS` (one product per block)."""

    def __init__(self, op: str) -> None:
        self.op, self.rows, self.h, self.failed = op, [], None, False

    def add(self, p: np.ndarray | None) -> None:
        if p is None:
            self.failed = True
        if self.failed:
            return
        self.rows.append(p)
        if sum(len(r) for r in self.rows) >= BLOCK_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.rows and not self.failed:
            m = _moments(np.concatenate(self.rows), self.op)
            if self.h is None:
                self.h = m.astype(np.float64)
            else:
                self.h += m
        self.rows = []

    def result(self) -> np.ndarray | None:
        self.flush()
        return None if self.failed else self.h


def _hessian_bytes(op: str, shape: Sequence[int]) -> int:
    k = int(np.prod(shape[1:3])) if op == "DEPTHWISE_CONV_2D" else int(np.prod(shape[1:]))
    return 8 * k * k * (int(shape[-1]) if op == "DEPTHWISE_CONV_2D" else 1)


def _groups(layers: Sequence[WeightLayer], shapes: Sequence[tuple[int, ...]]) -> Iterator[list[int]]:
    """Indices of layers whose H fit together in :data:`PASS_BYTES` (one pass over the samples each)."""
    group: list[int] = []
    used = 0
    for i, (layer, shape) in enumerate(zip(layers, shapes)):
        need = _hessian_bytes(layer.op, shape)
        if group and used + need > PASS_BYTES:
            yield group
            group, used = [], 0
        group.append(i)
        used += need
    if group:
        yield group


def second_moments(float_model: bytes, x: np.ndarray, layers: Sequence[WeightLayer], shapes: Sequence[tuple[int, ...]],
                   seed: int = 0) -> Iterator[tuple[int, np.ndarray | None]]:
    """(index into ``layers``, H) for each layer, H measured on the samples ``x`` run through the float model one at a
    time (None: the layer's input does not fit its weights)."""
    import tensorflow as tf

    for group in _groups(layers, shapes):
        it = tf.lite.Interpreter(model_content=bytes(float_model), experimental_preserve_all_tensors=True)
        it.allocate_tensors()
        inp = it.get_input_details()[0]
        rng = np.random.default_rng(seed)
        acc = {i: _Moments(layers[i].op) for i in group}
        for s in x:
            it.set_tensor(inp["index"], np.ascontiguousarray(s[None], dtype=np.float32))
            it.invoke()
            for i in group:
                if acc[i].failed:
                    continue
                acc[i].add(_patches(it.get_tensor(layers[i].input_index), layers[i], shapes[i], rng))
        del it
        for i in group:
            yield i, acc.pop(i).result()


# ---- fitting and applying --------------------------------------------------------------------------------
def fit(float_model: bytes, artifact: bytes, x: np.ndarray) -> Rounding:
    """GPTQ's levels for every int8-weight layer of ``artifact`` (any TFLite quantization of ``float_model``, float
    I/O or not) that the float model has under the same output name and weight shape, on the artifact's own steps,
    with H from the float model on the samples ``x`` (the first :data:`MAX_SAMPLES`)."""
    from ..progress import progress

    fm = _model(float_model)
    qw = quantized_weights(_model(artifact))
    pairs = [(lay, qw[lay.output]) for lay in weight_layers(fm) if lay.output in qw]
    pairs = [(lay, q) for lay, q in pairs if tuple(int(d) for d in fm.subgraphs[0].tensors[lay.weight_index].shape) == q.shape
             and _hessian_bytes(lay.op, q.shape) <= MAX_HESSIAN_BYTES]
    levels: dict[str, Levels] = {}
    ratios: list[float] = []
    bar = progress(total=len(pairs), desc="weight rounding", unit="layer")
    try:
        xs = np.asarray(x[:MAX_SAMPLES], dtype=np.float32)
        for i, h in second_moments(float_model, xs, [lay for lay, _ in pairs], [q.shape for _, q in pairs]):
            layer, q = pairs[i]
            w = _buffer(fm, layer.weight_index, "<f4")
            done = None if h is None or w is None else round_layer(layer.op, w, h, q.steps)
            ratios.append(1.0 if done is None else done[1])
            if done is not None:
                levels[layer.output] = Levels(done[0], q.steps)
            bar.update(1)
    finally:
        bar.close()
    return Rounding(levels, len(qw), float(np.mean(ratios)) if ratios else None)


def apply(artifact: bytes, levels: dict[str, Levels], *, strict: bool = True) -> bytes:
    """``artifact`` with the int8 weights of each layer named in ``levels`` replaced. A named layer the artifact does
    not hold as int8 weights of that shape on the same steps is a ConversionError when ``strict``, else left as it is
    (a candidate that keeps the layer in float)."""
    if not levels:
        return artifact
    model = _model(artifact)
    found = quantized_weights(model)
    changed = False
    for name, lv in levels.items():
        q = found.get(name)
        if q is None or q.shape != lv.values.shape or not np.allclose(q.steps, lv.steps, rtol=1e-6, atol=0):
            if strict:
                raise ConversionError(f"weight rounding: the artifact has no int8 weights of shape {lv.values.shape} "
                                      f"on the fitted steps for {name!r} (the quantizer named or scaled them differently)")
            continue
        t = model.subgraphs[0].tensors[q.tensor_index]
        data = np.ascontiguousarray(lv.values, dtype=np.int8).tobytes()
        model.buffers[t.buffer].data = np.frombuffer(data, dtype=np.uint8)
        changed = True
    if not changed:
        return artifact
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def choose(float_model: bytes, artifact: bytes, x: np.ndarray, method: str,
           run: Callable[[bytes, np.ndarray], list[np.ndarray]], *,
           margin_db: float | None = None) -> tuple[dict[str, Levels], dict[str, Any]]:
    """GPTQ's levels to write (empty: keep nearest rounding) into ``artifact`` (a float-I/O quantization of
    ``float_model``) under ``method``, and a record of the choice. Fitted on the first :data:`MAX_SAMPLES` of ``x``
    (as the gate's candidates are); ``auto`` judges GPTQ against nearest rounding on the rest
    (:func:`~edgeship.converters.ranges.judge_alternative`, with ``margin_db``: the usual CHOICE_MARGIN_DB when
    None). A failure inside ``auto`` (an exotic layer, memory) keeps nearest rounding, with the reason recorded."""
    from .ranges import CHOICE_MARGIN_DB, judge_alternative, split_samples

    if method not in WEIGHT_ROUNDING:
        raise ValueError(f"weight rounding must be one of {', '.join(WEIGHT_ROUNDING)}, got {method!r}")
    if method == "nearest":
        return {}, {"method": "nearest"}
    fit_x, judge = split_samples(x, fit=MAX_SAMPLES)
    if method == "gptq":
        fit_x = x  # fit() takes the first MAX_SAMPLES
    elif len(judge) == 0:
        return {}, {"method": "nearest", "reason": "too few calibration samples to judge GPTQ on unseen ones"}
    try:
        found = fit(float_model, artifact, fit_x)
    except Exception as e:  # noqa: BLE001 - auto must never cost the user their conversion
        if method == "gptq":
            raise
        log.warning("weight rounding: GPTQ left out (%s: %s)", type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
        return {}, {"method": "nearest", "reason": f"GPTQ failed: {type(e).__name__}"}
    record: dict[str, Any] = {"method": "gptq", **found.to_dict()}
    if not found.levels:
        record.update(method="nearest", reason="GPTQ rounded no layer better than nearest rounding")
        return {}, record
    if method == "gptq":
        return found.levels, record
    keep, measured = judge_alternative(run(float_model, judge), {"nearest": run(artifact, judge),
                                                                 "gptq": run(apply(artifact, found.levels), judge)}, "GPTQ",
                                       CHOICE_MARGIN_DB if margin_db is None else margin_db)
    record.update(measured)
    if keep:
        return found.levels, record
    record["method"] = "nearest"
    return {}, record
