"""Cross-layer equalization on the Keras graph: even out per-channel activation ranges before int8.

TFLite and NNCF quantize weights per output channel but every activation tensor per tensor: one
step for all its channels. When the channels of an activation span very different ranges (the
depthwise half of a separable convolution, a BatchNorm whose gammas differ by 100x) the small
channels round to a few levels. Data-free quantization (Nagel et al. 2019) and SmoothQuant move that
imbalance into the weights, where per-channel quantization absorbs it: for a producer A and the
consumer B of its output (through ReLU, LeakyReLU, pooling, padding or dropout, all of which commute
with a positive per-channel scale) A's output channel c is divided by ``s_c`` and B's input channel
c multiplied by it. The float function is unchanged (checked: outputs within :data:`TOLERANCE`
relative, else the model is returned untouched).

- B depthwise (or a separable convolution's depthwise half): its weights are quantized per channel,
  so the activation is equalized fully, ``s_c = a_c / mean(a)`` (``a_c``: channel c's largest
  magnitude on the calibration samples; geometric mean).
- B a convolution or dense layer: ``s_c = sqrt(a_c / w_c)`` (``w_c``: B's largest weight on input c),
  SmoothQuant's balance between activation and weight ranges.
- Inside a SeparableConv2D (depthwise then pointwise, no bias or activation between) the depthwise
  output channels are balanced against the pointwise weights the same way.

A is a Conv2D, DepthwiseConv2D, SeparableConv2D or Dense with a linear or ReLU activation, or a
BatchNormalization with a scale (gamma). Statistics come from one run of the model on the
calibration samples: every rescaling is exact, so none changes what another pair measures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

EQUALIZE = ("auto", "on", "off")  # auto: built both ways, the one closer to the float model on the calibration data kept
TOLERANCE = 1e-5  # largest relative change of any output the equalized model may show
MAX_SAMPLES = 64
SCALE_LIMIT = 1e3  # no channel is scaled by more than this (either way)

PRODUCERS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense", "BatchNormalization")
CONSUMERS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense")
COMMUTING = ("ReLU", "LeakyReLU", "MaxPooling2D", "AveragePooling2D", "ZeroPadding2D", "Dropout", "SpatialDropout2D",
             "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Activation")
ACTIVATIONS = ("linear", "relu")  # activations a layer may apply and still commute with a positive scale


@dataclass
class Equalization:
    """What :func:`equalize` did: the pairs rescaled, the largest change seen in the outputs, or why not."""

    pairs: list[dict[str, Any]] = field(default_factory=list)  # {"from", "to", "through", "spread_before", "spread_after"}
    max_relative_change: float | None = None
    applied: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "pairs": len(self.pairs), "max_relative_change": self.max_relative_change,
                "reason": self.reason, "detail": self.pairs}


def _cls(op: Any) -> str:
    return type(op).__name__


def _act_name(op: Any) -> str:
    act = getattr(op, "activation", None)
    return getattr(act, "__name__", str(act)) if act is not None else "linear"


def _commutes(op: Any) -> bool:
    name = _cls(op)
    if name not in COMMUTING:
        return False
    if name == "Activation":
        return _act_name(op) in ("relu", "linear")
    if name == "ReLU":
        return getattr(op, "max_value", None) is None and float(getattr(op, "threshold", 0.0) or 0.0) == 0.0
    return True


def _producer_ok(op: Any) -> bool:
    name = _cls(op)
    if name not in PRODUCERS or not getattr(op, "weights", None):
        return False
    if name == "BatchNormalization":
        return bool(getattr(op, "scale", True)) and _channel_last_axis(op)
    if name == "Conv2D" and int(getattr(op, "groups", 1) or 1) != 1:
        return False
    return _act_name(op) in ACTIVATIONS and getattr(op, "data_format", "channels_last") == "channels_last"


def _consumer_ok(op: Any) -> bool:
    name = _cls(op)
    if name not in CONSUMERS or getattr(op, "data_format", "channels_last") != "channels_last":
        return False
    return not (name == "Conv2D" and int(getattr(op, "groups", 1) or 1) != 1)


def _channel_last_axis(op: Any) -> bool:
    axis = getattr(op, "axis", -1)
    if not isinstance(axis, int):
        axis = list(axis)
        if len(axis) != 1:
            return False
        axis = axis[0]
    shape = getattr(op, "input_shape", None) if not hasattr(op, "input") else None
    rank = len(shape) if shape else 4
    return axis in (-1, rank - 1, 3)


def _key(t: Any) -> tuple[int, int, int]:
    """A graph tensor's identity: (producing layer, call, output index), the same in Keras 3 and tf_keras."""
    h = t._keras_history  # noqa: SLF001 - the functional graph's own bookkeeping
    return id(h[0]), int(h[1]), int(h[2])


def _flat(ts: Any) -> list[Any]:
    return list(ts) if isinstance(ts, (list, tuple)) else [ts]


def _node_op(node: Any) -> Any:
    return getattr(node, "operation", None) or node.layer


def _node_inputs(node: Any) -> list[Any]:
    return _flat(node.keras_inputs if hasattr(node, "keras_inputs") else node.input_tensors)


def _node_outputs(node: Any) -> list[Any]:
    return _flat(node.output_tensors if hasattr(node, "operation") else node.outputs)


class _Graph:
    """Producers and consumers of every tensor of a functional model, Keras 3 or tf_keras (single-call layers only)."""

    def __init__(self, model: Any) -> None:
        from .channels.trace import _functional, _topo_nodes

        fn = _functional(model)
        self.nodes = _topo_nodes(fn)
        self.consumers: dict[tuple[int, int, int], list[Any]] = {}
        self.calls: dict[int, int] = {}
        self.outputs = {_key(t) for t in fn.outputs}
        for node in self.nodes:
            if getattr(node, "is_input", False):
                continue
            op = _node_op(node)
            self.calls[id(op)] = self.calls.get(id(op), 0) + 1
            for t in _node_inputs(node):
                self.consumers.setdefault(_key(t), []).append(node)

    def single_consumer(self, tensor: Any) -> Any | None:
        users = self.consumers.get(_key(tensor), [])
        if len(users) != 1 or _key(tensor) in self.outputs:
            return None
        node = users[0]
        return node if len(_node_inputs(node)) == 1 and self.calls.get(id(_node_op(node))) == 1 else None

    def pairs(self) -> list[tuple[Any, list[Any], Any, Any]]:
        """(A, commuting ops between, B, the tensor B reads) for every equalizable chain."""
        out = []
        for node in self.nodes:
            if getattr(node, "is_input", False):
                continue
            a = _node_op(node)
            if self.calls.get(id(a)) != 1 or not _producer_ok(a) or len(_node_outputs(node)) != 1:
                continue
            t, through = _node_outputs(node)[0], []
            nxt = self.single_consumer(t)
            while nxt is not None and _commutes(_node_op(nxt)) and len(_node_outputs(nxt)) == 1:
                through.append(_node_op(nxt))
                t = _node_outputs(nxt)[0]
                nxt = self.single_consumer(t)
            if nxt is not None and _consumer_ok(_node_op(nxt)):
                out.append((a, through, _node_op(nxt), t))
        return out

    def separables(self) -> list[tuple[Any, Any]]:
        """(SeparableConv2D, the tensor it reads) for every single-call separable convolution."""
        return [(_node_op(n), _node_inputs(n)[0]) for n in self.nodes
                if not getattr(n, "is_input", False) and _cls(_node_op(n)) == "SeparableConv2D"
                and self.calls.get(id(_node_op(n))) == 1 and getattr(_node_op(n), "data_format", "channels_last") == "channels_last"]


def _channel_max(x: np.ndarray) -> np.ndarray:
    return np.max(np.abs(x.reshape(-1, x.shape[-1])), axis=0)


def _geo_normalized(s: np.ndarray) -> np.ndarray:
    s = np.clip(s, 1.0 / SCALE_LIMIT, SCALE_LIMIT)
    return s / np.exp(np.mean(np.log(s)))


def _scales(act: np.ndarray, weight: np.ndarray | None) -> np.ndarray | None:
    """Per-channel scales from activation ranges (and the consumer's weight ranges for a balance); None when
    nothing would change (dead channels keep scale 1)."""
    live = act > 0
    if live.sum() < 2:
        return None
    s = np.ones_like(act, dtype=np.float64)
    if weight is None:
        s[live] = act[live]
    else:
        ok = live & (weight > 0)
        s[ok] = np.sqrt(act[ok] / weight[ok])
    s[live] = _geo_normalized(s[live])
    return None if np.allclose(s, 1.0, rtol=1e-3) else s


# ---- reading and writing the layers' weights ------------------------------------------------------------
def _consumer_weight_range(op: Any) -> np.ndarray | None:
    """B's largest weight per input channel, or None when B is depthwise (per-channel, so no balance needed)."""
    name, w = _cls(op), op.get_weights()
    if name in ("DepthwiseConv2D", "SeparableConv2D"):
        return None
    k = w[0]
    return np.max(np.abs(k.reshape(-1, k.shape[-2], k.shape[-1])), axis=(0, 2)) if k.ndim == 4 else np.max(np.abs(k), axis=1)


def _scale_outputs(op: Any, inv: np.ndarray) -> None:
    """Multiply A's output channel c by ``inv[c]`` (= 1/s_c)."""
    name, w = _cls(op), [np.array(v) for v in op.get_weights()]
    if name == "BatchNormalization":
        names = [v.name.split("/")[-1].split(":")[0] for v in op.weights]
        for i, n in enumerate(names):
            if n in ("gamma", "beta"):
                w[i] = w[i] * inv
    elif name == "DepthwiseConv2D":
        m = w[0].shape[-1]
        w[0] = w[0] * inv.reshape(-1, m)
        if len(w) > 1:
            w[1] = w[1] * inv
    elif name == "SeparableConv2D":
        w[1] = w[1] * inv  # pointwise kernel (1, 1, C*M, out)
        if len(w) > 2:
            w[2] = w[2] * inv
    else:  # Conv2D (kh, kw, in, out), Dense (in, out)
        w[0] = w[0] * inv
        if len(w) > 1:
            w[1] = w[1] * inv
    op.set_weights(w)


def _scale_inputs(op: Any, s: np.ndarray) -> None:
    """Multiply B's weights on input channel c by ``s[c]``."""
    name, w = _cls(op), [np.array(v) for v in op.get_weights()]
    if name in ("DepthwiseConv2D", "SeparableConv2D"):
        w[0] = w[0] * s[:, None]  # depthwise kernel (kh, kw, C, M)
    elif name == "Conv2D":
        w[0] = w[0] * s[:, None]
    else:  # Dense
        w[0] = w[0] * s[:, None]
    op.set_weights(w)


def _balance_separable(op: Any, depthwise_out: np.ndarray) -> np.ndarray | None:
    """Scale the depthwise output channels of a SeparableConv2D against its pointwise weights (exact: no bias or
    activation between them). Returns the scales applied, or None."""
    w = [np.array(v) for v in op.get_weights()]
    pw_range = np.max(np.abs(w[1][0, 0]), axis=1)
    s = _scales(_channel_max(depthwise_out), pw_range)
    if s is None:
        return None
    m = w[0].shape[-1]
    w[0] = w[0] / s.reshape(-1, m)
    w[1] = w[1] * s[None, None, :, None]
    op.set_weights(w)
    return s


def _depthwise_part(op: Any, x: np.ndarray) -> np.ndarray:
    """The depthwise half of a SeparableConv2D applied to ``x`` (what TFLite and OpenVINO hold as a tensor)."""
    import keras

    k = op.get_weights()[0]
    return np.asarray(keras.ops.depthwise_conv(x, k, strides=op.strides, padding=op.padding,
                                               dilation_rate=op.dilation_rate))


def _spread(r: np.ndarray) -> float:
    live = r[r > 0]
    return float(live.max() / live.min()) if live.size else 1.0


# ---- the API --------------------------------------------------------------------------------------------
def equalize(model: Any, x: np.ndarray, *, tolerance: float = TOLERANCE) -> tuple[Any, Equalization]:
    """A copy of the Keras ``model`` with its activation channels equalized on the samples ``x`` (and what was done).

    The copy's outputs on ``x`` are checked against the original's: when any differs by more than
    ``tolerance`` (relative to that output's largest magnitude) the original is returned, unchanged."""
    from .keras_io import model_flavor, predict

    report = Equalization()
    try:
        keras = __import__("tf_keras" if model_flavor(model) == "tf_keras" else "keras")
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        graph = _Graph(clone)
    except Exception as e:  # noqa: BLE001 - subclassed or exotic models: nothing to equalize, say why
        report.reason = f"the model graph cannot be traced ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
        return model, report
    pairs, seps = graph.pairs(), graph.separables()
    if not pairs and not seps:
        report.reason = "no producer/consumer pair to equalize"
        return model, report
    xs = np.ascontiguousarray(x[:MAX_SAMPLES], dtype=np.float32)
    probes = [t for _, _, _, t in pairs] + [t for _, t in seps]
    inputs = clone.inputs[0] if len(clone.inputs) == 1 else clone.inputs
    acts = predict(keras.Model(inputs, probes), xs)
    for (a, through, b, _), act in zip(pairs, acts[:len(pairs)]):
        r = _channel_max(act)
        s = _scales(r, _consumer_weight_range(b))
        if s is None:
            continue
        _scale_outputs(a, 1.0 / s)
        _scale_inputs(b, s)
        report.pairs.append({"from": a.name, "to": b.name, "through": [o.name for o in through],
                             "spread_before": round(_spread(r), 2), "spread_after": round(_spread(r / s), 2)})
    for (op, _), act in zip(seps, acts[len(pairs):]):
        d = _depthwise_part(op, act)
        s = _balance_separable(op, d)
        if s is not None:
            r = _channel_max(d)
            report.pairs.append({"from": f"{op.name}/depthwise", "to": f"{op.name}/pointwise", "through": [],
                                 "spread_before": round(_spread(r), 2), "spread_after": round(_spread(r / s), 2)})
    if not report.pairs:
        report.reason = "every activation is already balanced"
        return model, report
    ref, got = predict(model, xs), predict(clone, xs)
    change = max(float(np.max(np.abs(g - r)) / max(float(np.max(np.abs(r))), 1e-12)) for r, g in zip(ref, got))
    report.max_relative_change = change
    if not np.isfinite(change) or change > tolerance:
        report.reason = f"outputs moved by {change:.2e} (more than {tolerance:g}): the model is left as it was"
        log.warning("equalization: %s", report.reason)
        return model, report
    report.applied = True
    return clone, report


def equalized_pairs(report: Equalization) -> Sequence[str]:
    """The pairs rescaled, as 'A -> B' lines (for a log or a manifest)."""
    return [f"{p['from']} -> {p['to']} (range spread {p['spread_before']:g}x -> {p['spread_after']:g}x)" for p in report.pairs]
