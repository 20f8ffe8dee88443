"""Tracing a Keras 3 functional graph into dependency groups: channel layouts, steps, handlers per layer kind."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ...errors import ConversionError, ModelError
from ..keras_io import check_graph_model, load_keras_model, model_flavor
from .records import ChannelGroup
from .kinds import _in_conv, _in_conv_t, _in_dense, _in_separable, _macs_conv, _macs_conv_t, _macs_dense, _macs_depthwise, _macs_separable, _out_conv, _out_conv_t, _out_dense, _out_separable, _rw_channel_params, _rw_conv, _rw_conv_transpose, _rw_dense, _rw_depthwise, _rw_rescaling, _rw_reshape, _rw_separable


class _Unsupported(Exception):
    """Raised by a trace handler: the layer is frozen, for this reason."""


@dataclass(frozen=True)
class _Layout:
    """The channel axis of a tensor: these groups side by side, repeated ``repeat`` times (after Flatten)."""

    groups: tuple[int, ...]
    repeat: int = 1


@dataclass
class _Step:
    """One call of one operation in the traced graph."""

    node: Any
    op: Any
    role: str  # producer | param | pass | merge | concat | frozen
    ins: list[_Layout]
    outs: list[_Layout]
    kind: _Kind | None = None


@dataclass(frozen=True)
class _Kind:
    """How one layer class is traced, rewritten, scored and counted."""

    trace: Callable[[Any, Any, Any, list[_Layout]], tuple[str, list[_Layout]]]
    rewrite: Callable[..., None] | None = None  # (op, cfg, weights, in_keeps, out_keeps, widths) -> None
    out_norms: Callable[[Any, dict, Callable], np.ndarray] | None = None  # per output channel
    in_norms: Callable[[Any, dict, Callable], np.ndarray] | None = None  # per input row
    macs: Callable[[Any, tuple, tuple, int, int], int] | None = None  # (op, in_shape, out_shape, cin, cout)


class _Graph:
    """The traced graph of one model: steps in topological order, tensor layouts, groups (union-find)."""

    def __init__(self, model: Any, *, keep_stem: bool = True):
        self.model = model
        self.fn = _functional(model)
        self.keep_stem = bool(keep_stem)
        self.parent: list[int] = []
        self.size: list[int] = []
        self.reasons: dict[int, list[str]] = {}
        self.layouts: dict[int, _Layout] = {}
        self.steps: list[_Step] = []
        self.unsupported: dict[str, str] = {}
        self.input_groups: list[int] = []
        self._trace()

    # union-find
    def new_group(self, size: int, reason: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.size.append(int(size))
        if reason:
            self.reasons[len(self.parent) - 1] = [reason]
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        self.parent[rb] = ra
        merged = self.reasons.pop(ra, []) + self.reasons.pop(rb, [])
        if merged:
            self.reasons[ra] = list(dict.fromkeys(merged))

    def freeze(self, layout: _Layout, reason: str) -> None:
        for g in layout.groups:
            reasons = self.reasons.setdefault(self.find(g), [])
            if reason not in reasons:
                reasons.append(reason)

    def width(self, layout: _Layout) -> int:
        return sum(self.size[g] for g in layout.groups)

    def merge(self, layouts: Sequence[_Layout]) -> _Layout:
        """Tie the channels of tensors that are combined elementwise; the layouts must line up."""
        first = layouts[0]
        for other in layouts[1:]:
            if other.repeat != first.repeat or [self.size[g] for g in other.groups] != [self.size[g] for g in first.groups]:
                raise _Unsupported("its inputs have channel layouts that do not line up")
        for other in layouts[1:]:
            for a, b in zip(first.groups, other.groups):
                self.union(a, b)
        return first

    def roots(self) -> list[int]:
        return list(dict.fromkeys(self.find(g) for g in range(len(self.parent))))

    # tracing
    def _trace(self) -> None:
        from keras import tree

        nodes = _topo_nodes(self.fn)
        calls: dict[int, int] = {}
        for node in nodes:
            calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
        for t in self.fn.inputs:
            g = self.new_group(_last_dim(t), reason=f"model input {_input_name(t)!r}")
            self.input_groups.append(g)
            self.layouts[id(t)] = _Layout((g,))
        for node in nodes:
            op = node.operation
            if type(op).__name__ == "InputLayer":
                continue
            ins = [self.layouts[id(t)] for t in node.input_tensors]
            kind = _kind_for(op)
            try:
                if kind is None:
                    raise _Unsupported(_unknown_reason(op))
                if calls[id(op)] > 1:
                    raise _Unsupported(f"shared layer called {calls[id(op)]} times")
                role, outs = _guarded_trace(kind, self, op, node, ins)
            except _Unsupported as e:
                role, outs = "frozen", []
                self.unsupported[op.name] = str(e)
                for layout in ins:
                    self.freeze(layout, f"touched by {op.name!r} ({e})")
            if role == "frozen":
                outs = [_Layout((self.new_group(_last_dim(t), reason=f"output of frozen {op.name!r}"),)) for t in node.outputs]
            self.steps.append(_Step(node, op, role, ins, outs, kind if role != "frozen" else None))
            for t, layout in zip(node.outputs, outs):
                self.layouts[id(t)] = layout
        for t in tree.flatten(self.fn.outputs):
            self.freeze(self.layouts[id(t)], f"feeds model output {t._keras_history.operation.name!r}")
        if self.keep_stem:
            inputs = {self.find(g) for g in self.input_groups}
            for step in self.steps:
                if step.role == "producer" and any(self.find(g) in inputs for g in step.ins[0].groups):
                    self.freeze(step.outs[0], f"stem {step.op.name!r} (keep_stem=True)")

    # groups
    def trunks(self) -> set[int]:
        """Roots of the groups a residual merge joins (Add, Subtract, Average, Maximum, Minimum): the trunks that
        carry a network's skip connections. A broadcasting Multiply (squeeze-and-excite's gate) is not one."""
        out: set[int] = set()
        for step in self.steps:
            if step.role == "merge" and type(step.op).__name__ in RESIDUAL_MERGES:
                out.update(self.find(g) for layout in step.outs for g in layout.groups)
        return out

    def labels(self) -> dict[int, str]:
        """Root group -> name of its first producer (groups without a producer are not listed)."""
        out: dict[int, str] = {}
        for step in self.steps:
            if step.role == "producer":
                out.setdefault(self.find(step.outs[0].groups[0]), step.op.name)
        return out

    def groups(self, keep: dict[int, np.ndarray]) -> list[ChannelGroup]:
        producers: dict[int, list[str]] = {}
        consumers: dict[int, list[str]] = {}
        for step in self.steps:
            if step.role == "producer":
                producers.setdefault(self.find(step.outs[0].groups[0]), []).append(step.op.name)
            if step.role in ("producer", "frozen"):
                for layout in step.ins:
                    for g in layout.groups:
                        names = consumers.setdefault(self.find(g), [])
                        if step.op.name not in names:
                            names.append(step.op.name)
        out = []
        for root, name in self.labels().items():
            k = keep.get(root)
            out.append(ChannelGroup(
                name=name, size=self.size[root], keep=list(range(self.size[root])) if k is None else [int(i) for i in k],
                producers=producers.get(root, []), consumers=consumers.get(root, []), frozen=list(self.reasons.get(root, [])),
            ))
        return out

    def positions(self, layout: _Layout, keep: dict[int, np.ndarray]) -> np.ndarray:
        """Indices along a tensor's last axis that survive ``keep`` (root -> kept channel indices)."""
        parts, off = [], 0
        for g in layout.groups:
            k = keep.get(self.find(g))
            parts.append(off + (np.arange(self.size[g]) if k is None else np.asarray(k, dtype=np.int64)))
            off += self.size[g]
        base = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
        if layout.repeat == 1:
            return base
        return (np.arange(layout.repeat, dtype=np.int64)[:, None] * off + base[None, :]).reshape(-1)

    def spread(self, layout: _Layout, values: np.ndarray, combine: Callable[[np.ndarray], np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
        """Split a vector over a tensor's last axis into (root, per-channel vector) pieces."""
        width = self.width(layout)
        if width == 0 or values.size != width * layout.repeat:
            return
        folded = combine(values.reshape(layout.repeat, width))
        off = 0
        for g in layout.groups:
            yield self.find(g), folded[off : off + self.size[g]]
            off += self.size[g]


def _message(e: BaseException) -> str:
    """The informative line of an exception (Keras puts 'Exception encountered when calling...' first)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.strip().startswith("Exception encountered")]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:240]


def _guarded_trace(kind: _Kind, graph: _Graph, op: Any, node: Any, ins: list[_Layout]) -> tuple[str, list[_Layout]]:
    """Run a trace handler; a layer whose attributes or shapes surprise it is frozen, never guessed."""
    try:
        return kind.trace(graph, op, node, ins)
    except _Unsupported:
        raise
    except (AttributeError, TypeError, ValueError, IndexError, KeyError) as e:
        raise _Unsupported(f"cannot be traced ({_message(e)[:160]})") from None


def _functional(model: Any) -> Any:
    """The Functional graph of a model: itself, or the one a built Sequential keeps."""
    if _is_sequential(model):
        fn = getattr(model, "_functional", None)
        if fn is None:
            raise ModelError(f"Sequential model {model.name!r} is not built; give it an Input or call build(input_shape) first")
        return fn
    return model


def _is_sequential(model: Any) -> bool:
    return "Sequential" in {c.__name__ for c in type(model).__mro__}


def _topo_nodes(fn: Any) -> list[Any]:
    by_depth = fn._nodes_by_depth  # noqa: SLF001 - the functional graph, deepest (inputs) first
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def _last_dim(t: Any) -> int:
    shape = tuple(t.shape)
    return int(shape[-1]) if shape and shape[-1] is not None else 0


def _input_name(t: Any) -> str:
    hist = getattr(t, "_keras_history", None)
    return hist.operation.name if hist is not None and hist.operation is not None else t.name


def _channel_axis(axis: Any, rank: int) -> bool:
    """True when ``axis`` (int, list or tuple) includes the last (channel) axis of a rank-``rank`` tensor."""
    axes = [axis] if isinstance(axis, numbers.Integral) else list(axis or [])
    return any(int(a) % rank == rank - 1 for a in axes)


def _only_channel_axis(axis: Any, rank: int) -> bool:
    axes = [axis] if isinstance(axis, numbers.Integral) else list(axis or [])
    return len(axes) == 1 and _channel_axis(axes, rank)


def _need_channels_last(op: Any) -> None:
    fmt = getattr(op, "data_format", None)
    if fmt not in (None, "channels_last"):
        raise _Unsupported(f"data_format={fmt!r}; expected channels_last")


def _need_plain(op: Any) -> None:
    if getattr(op, "quantization_mode", None):
        raise _Unsupported(f"quantized ({op.quantization_mode})")
    if getattr(op, "lora_enabled", False):
        raise _Unsupported("LoRA enabled")


def _rank(t: Any) -> int:
    return len(tuple(t.shape))


def _t_producer(graph: _Graph, op: Any, node: Any, ins: list[_Layout]) -> tuple[str, list[_Layout]]:
    _need_channels_last(op)
    _need_plain(op)
    if int(getattr(op, "groups", 1) or 1) != 1:
        raise _Unsupported(f"grouped convolution (groups={op.groups})")
    if len(ins) != 1:
        raise _Unsupported(f"called on {len(ins)} tensors")
    return "producer", [_Layout((graph.new_group(_last_dim(node.outputs[0])),))]


def _t_depthwise(graph: _Graph, op: Any, node: Any, ins: list[_Layout]) -> tuple[str, list[_Layout]]:
    _need_channels_last(op)
    _need_plain(op)
    if int(op.depth_multiplier) != 1:
        raise _Unsupported(f"depth_multiplier={op.depth_multiplier}; only 1 ties input to output channels")
    return "param", [ins[0]]


def _t_channel_param(graph: _Graph, op: Any, node: Any, ins: list[_Layout]) -> tuple[str, list[_Layout]]:
    rank = _rank(node.input_tensors[0])
    name = type(op).__name__
    if name in ("BatchNormalization", "LayerNormalization") and not _only_channel_axis(op.axis, rank):
        raise _Unsupported(f"normalizes over axis {op.axis}; expected the channel axis only")
    if name == "Normalization" and op.axis and not _only_channel_axis(op.axis, rank):
        raise _Unsupported(f"per-axis statistics over {op.axis}; expected the channel axis")
    return "param", [ins[0]]


def _t_elementwise(graph: _Graph, op: Any, node: Any, ins: list[_Layout]) -> tuple[str, list[_Layout]]:
    name = type(op).__name__
    if len(ins) != 1:
        raise _Unsupported(f"called on {len(ins)} tensors")
    if name == "Activation" and getattr(op.activation, "__name__", "") in ("softmax", "log_softmax"):
        raise _Unsupported(f"{op.activation.__name__} mixes the channels")
    if name == "Softmax" and _channel_axis(op.axis, _rank(node.input_tensors[0])):
        raise _Unsupported("softmax over the channel axis mixes the channels")
    return "pass", [ins[0]]


def _t_spatial(graph: _Graph, op: Any, node: Any, ins: list[_Layout]) -> tuple[str, list[_Layout]]:
    _need_channels_last(op)
    if len(ins) != 1 or ins[0].repeat != 1:
        raise _Unsupported("expected one spatial tensor")
    return "pass", [ins[0]]


def _t_merge(graph: _Graph, op: Any, node: Any, ins: list[_Layout]) -> tuple[str, list[_Layout]]:
    out_c = _last_dim(node.outputs[0])
    # an input with one channel broadcast over all (a spatial attention map) is not tied to the others
    tied = [layout for layout, t in zip(ins, node.input_tensors) if not (_last_dim(t) == 1 and out_c != 1)]
    if not tied:
        raise _Unsupported("no input carries the output channels")
    return "merge", [graph.merge(tied)]


def _t_concat(graph: _Graph, op: Any, node: Any, ins: list[_Layout]) -> tuple[str, list[_Layout]]:
    if not _channel_axis(op.axis, _rank(node.outputs[0])):
        return "merge", [graph.merge(ins)]  # stacked along a spatial axis: every input has the same channels
    if any(layout.repeat != 1 for layout in ins):
        raise _Unsupported("concatenates flattened tensors")
    return "concat", [_Layout(tuple(g for layout in ins for g in layout.groups))]


def _t_reshape(graph: _Graph, op: Any, node: Any, ins: list[_Layout]) -> tuple[str, list[_Layout]]:
    if type(op).__name__ == "Flatten":
        _need_channels_last(op)
    s_in, s_out = tuple(node.input_tensors[0].shape[1:]), tuple(node.outputs[0].shape[1:])
    layout = ins[0]
    if None in s_in or None in s_out or not s_in or not s_out:
        raise _Unsupported(f"reshape {s_in} -> {s_out} with unknown sizes")
    if len(s_in) == 1 and s_in == s_out:
        return "pass", [layout]
    if layout.repeat == 1 and s_in[-1] == s_out[-1] and math.prod(s_in[:-1]) == math.prod(s_out[:-1]):
        return "pass", [layout]  # only the spatial axes change; channels stay innermost
    if layout.repeat == 1 and len(s_out) == 1 and len(s_in) >= 2:
        return "pass", [_Layout(layout.groups, math.prod(s_in[:-1]))]  # NHWC flatten: index = position * C + c
    if len(s_in) == 1 and layout.repeat > 1 and s_out[-1] * layout.repeat == s_in[0] and math.prod(s_out[:-1]) == layout.repeat:
        return "pass", [_Layout(layout.groups, 1)]  # un-flatten back to (..., C)
    raise _Unsupported(f"reshape {s_in} -> {s_out} moves the channel axis")


def _t_op(graph: _Graph, op: Any, node: Any, ins: list[_Layout]) -> tuple[str, list[_Layout]]:
    """keras.ops elementwise functions (``x + 3``, ``ops.relu``...) recorded in a functional graph."""
    from keras import tree

    from keras.src.backend import KerasTensor

    for arg in tree.flatten((node.arguments.args, node.arguments.kwargs)):
        if not isinstance(arg, KerasTensor) and not (arg is None or isinstance(arg, (str, bool)) or np.ndim(arg) == 0):
            raise _Unsupported(f"constant argument of shape {np.shape(arg)}")
    if not ins:
        raise _Unsupported("no tensor argument")
    if len(ins) == 1:
        return "pass", [ins[0]]
    return _t_merge(graph, op, node, ins)


_CONV = _Kind(_t_producer, _rw_conv, _out_conv, _in_conv, _macs_conv)


_CONV_T = _Kind(_t_producer, _rw_conv_transpose, _out_conv_t, _in_conv_t, _macs_conv_t)


_DENSE = _Kind(_t_producer, _rw_dense, _out_dense, _in_dense, _macs_dense)


_SEPARABLE = _Kind(_t_producer, _rw_separable, _out_separable, _in_separable, _macs_separable)


_DEPTHWISE = _Kind(_t_depthwise, _rw_depthwise, None, _in_conv, _macs_depthwise)


_PARAMS = _Kind(_t_channel_param, _rw_channel_params)


_ELEMENTWISE = _Kind(_t_elementwise)


_RESCALING = _Kind(_t_elementwise, _rw_rescaling)


_SPATIAL = _Kind(_t_spatial)


_MERGE = _Kind(_t_merge)


_CONCAT = _Kind(_t_concat)


_RESHAPE = _Kind(_t_reshape, _rw_reshape)


_OP = _Kind(_t_op)


# Keras layer class name -> how it is handled (only classes defined by Keras itself are looked up)
LAYER_KINDS: dict[str, _Kind] = {
    **dict.fromkeys(("Conv1D", "Conv2D", "Conv3D"), _CONV),
    **dict.fromkeys(("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"), _CONV_T),
    "Dense": _DENSE,
    **dict.fromkeys(("SeparableConv1D", "SeparableConv2D"), _SEPARABLE),
    **dict.fromkeys(("DepthwiseConv1D", "DepthwiseConv2D"), _DEPTHWISE),
    **dict.fromkeys(("BatchNormalization", "LayerNormalization", "PReLU", "Normalization"), _PARAMS),
    **dict.fromkeys((
        "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
        "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity",
    ), _ELEMENTWISE),
    "Rescaling": _RESCALING,
    **dict.fromkeys((
        "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
        "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
        "GlobalMaxPooling2D", "GlobalMaxPooling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
        "Cropping1D", "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D",
    ), _SPATIAL),
    **dict.fromkeys(("Add", "Subtract", "Multiply", "Maximum", "Minimum", "Average"), _MERGE),
    "Concatenate": _CONCAT,
    **dict.fromkeys(("Flatten", "Reshape"), _RESHAPE),
}


# merges whose inputs are a residual sum (trunks), not a gate (Multiply, Divide, Power)
RESIDUAL_MERGES = ("Add", "Subtract", "Maximum", "Minimum", "Average")


# keras.ops operation class name (non-layer operations in a functional graph) -> handler
OP_KINDS: dict[str, _Kind] = dict.fromkeys((
    "Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum", "Power",
    "Relu", "Relu6", "Sigmoid", "Softplus", "Softsign", "Silu", "LeakyRelu", "HardSigmoid", "HardSilu", "Elu",
    "Selu", "Gelu", "Celu", "TanhShrink", "HardTanh", "HardShrink", "SoftShrink", "LogSigmoid", "Squareplus",
    "Abs", "Absolute", "Negative", "Square", "Sqrt", "Exp", "Tanh", "Clip", "Sign", "Reciprocal",
), _OP)


def _unknown_reason(op: Any) -> str:
    import keras

    if isinstance(op, keras.Model):
        return f"nested model {type(op).__name__} (its layers are not traced)"
    if not type(op).__module__.startswith("keras."):
        return f"custom {type(op).__module__}.{type(op).__name__} is not understood by channel pruning"
    return f"{type(op).__name__} is not understood by channel pruning"


def _kind_for(op: Any) -> _Kind | None:
    """The handler for a graph operation, or None (then the operation freezes what it touches)."""
    import keras

    module = type(op).__module__
    if not module.startswith("keras."):
        return None  # user-defined class, even when named like a Keras layer
    if isinstance(op, keras.layers.Layer):
        return None if isinstance(op, keras.Model) else LAYER_KINDS.get(type(op).__name__)
    return OP_KINDS.get(type(op).__name__) if module.startswith("keras.src.ops.") else None


def _graph_model(model: Any) -> Any:
    model = load_keras_model(model)
    flavor = model_flavor(model)
    if flavor != "keras":
        raise ConversionError(f"channel pruning: model {getattr(model, 'name', '?')!r} is a {flavor} model; expected a Keras 3 model (.keras)")
    check_graph_model(model, "channel pruning")
    return model
