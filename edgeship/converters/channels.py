"""Structured channel pruning for Keras 3 models (DepGraph-style): fewer filters, not sparse weights.

Unlike :mod:`edgeship.converters.prune` (masks, same shapes), this removes whole channels, so the
model gets smaller and faster on every backend. Removing output channel ``j`` of a convolution
also removes input row ``j`` of every layer that reads it, the ``j``-th BatchNorm statistics
after it, and (through residual ``Add`` layers) channel ``j`` of every other layer on the same
trunk. The module therefore works in three steps:

1. **Trace** the functional graph into *dependency groups*: sets of channel axes that must shrink
   together. Every tensor gets a channel *layout* (the groups concatenated along its last axis,
   repeated per spatial position after a ``Flatten``). Producers (Conv/Dense/SeparableConv/
   ConvTranspose) start a group; pass-through layers (BN, activations, pooling, padding,
   depthwise...) carry it; merges (Add, Multiply...) join groups; ``Concatenate`` lays them side
   by side. A layer the tracer does not understand (Lambda, custom layers, attention...) freezes
   every group it touches, and so do model inputs and outputs: the model's interface never changes.
2. **Plan**: score each channel (``l1``/``l2`` filter norms, ``bn`` gammas or mean ``activation``),
   keep the best ``max(min_channels, round_up(round_to, (1 - ratio) * C))`` of every prunable
   group (:func:`plan`), or search the ratio that removes a fraction of the FLOPs (:func:`plan_for_flops`).
3. **Apply**: rebuild a new model from the layer configs with fewer ``filters``/``units`` and
   sliced weights (:func:`apply`). Layer names, order and the model's inputs/outputs are unchanged;
   the result saves and loads with plain ``keras.saving.load_model``.

:func:`prune_channels` does the three steps and returns a :class:`ChannelReport`. Only Keras 3
Functional and Sequential models in ``channels_last`` layout are pruned. The accuracy lost by
removing channels is not measured here: fine-tune the pruned model, then verify it.

Limits: a LayerNormalization over the channels stays in its group (as in DepGraph), but its
mean/variance then cover fewer channels, so pruning through it is never exact. Layers shared by
several calls, nested models, grouped convolutions, ``depth_multiplier > 1`` and merges of tensors
whose channel layouts do not line up (e.g. ``Add(concat(a, b), c)``) freeze the groups they touch.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import ConversionError, InputError, ModelError
from .keras_io import check_graph_model, load_keras_model, model_flavor

log = logging.getLogger(__name__)

__all__ = [
    "CRITERIA", "ChannelGroup", "ChannelReport", "PrunePlan", "apply", "count_flops", "count_params",
    "dependency_groups", "plan", "plan_for_flops", "plan_from_indices", "prune_channels", "resolve_trunks", "TRUNK_MODES",
]

CRITERIA = ("l1", "l2", "bn", "activation")
ACTIVATION_SAMPLES = 64  # calibration samples used by the "activation" criterion
_BISECT_STEPS = 24
_MAX_RATIO = 0.99


# ---- public records ------------------------------------------------------------------------------
@dataclass
class ChannelGroup:
    """Channel axes that shrink together, named after their first producer layer."""

    name: str
    size: int
    keep: list[int]
    producers: list[str]
    consumers: list[str]
    frozen: list[str] = field(default_factory=list)  # why the group is not pruned (empty: prunable)

    @property
    def removed(self) -> int:
        return self.size - len(self.keep)


@dataclass
class PrunePlan:
    """Which channels of every group a pruned model keeps; made by :func:`plan`, used by :func:`apply`."""

    model_name: str
    criterion: str
    ratio: float
    round_to: int
    min_channels: int
    keep_stem: bool
    groups: list[ChannelGroup]
    frozen_layers: dict[str, str]  # layer not understood -> reason
    flops_target: float | None = None
    flops_before: int | None = None
    flops_after: int | None = None
    trunks: str = "none"  # the residual trunks: "kept" whole, "pruned" with the rest, or "none" in the model
    _graph: Any = field(default=None, repr=False, compare=False)

    def group(self, name: str) -> ChannelGroup:
        for g in self.groups:
            if g.name == name or name in g.producers:
                return g
        raise InputError(f"plan for {self.model_name!r} has no channel group produced by layer {name!r}")

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if not k.startswith("_") and k != "groups"}
        out["groups"] = [asdict(g) | {"removed": g.removed} for g in self.groups]
        return out


@dataclass
class ChannelReport:
    """What channel pruning did: channels, parameters and FLOPs before/after, and what was left alone."""

    criterion: str
    ratio: float
    flops_target: float | None
    layers: dict[str, dict[str, int]]  # layer -> {"before": channels, "after": channels}
    params_before: int
    params_after: int
    flops_before: int | None  # None: a dynamic-size model pruned by ratio without input_size
    flops_after: int | None
    frozen: dict[str, str]  # layers the tracer did not understand -> reason
    kept_groups: dict[str, list[str]]  # groups never pruned -> reasons
    groups: int
    pruned_groups: int
    seconds: float = 0.0
    trunks: str = "none"  # the residual trunks: "kept" whole, "pruned" with the rest, or "none" in the model

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- tracing: layouts and groups ----------------------------------------------------------------
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


# ---- trace handlers ---------------------------------------------------------------------------------------
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


# ---- weight rewriting, importance and MACs per kind --------------------------------------------------------
def _take(w: np.ndarray, idx: np.ndarray, axis: int) -> np.ndarray:
    return np.take(w, idx, axis=axis)


def _except(w: np.ndarray, axis: int) -> tuple[int, ...]:
    return tuple(a for a in range(w.ndim) if a != axis % w.ndim)


def _rw_conv(op, cfg, w, ins, outs, widths):
    w["kernel"] = _take(_take(w["kernel"], ins[0], -2), outs[0], -1)
    if "bias" in w:
        w["bias"] = _take(w["bias"], outs[0], 0)
    cfg["filters"] = int(len(outs[0]))


def _rw_conv_transpose(op, cfg, w, ins, outs, widths):
    w["kernel"] = _take(_take(w["kernel"], ins[0], -1), outs[0], -2)
    if "bias" in w:
        w["bias"] = _take(w["bias"], outs[0], 0)
    cfg["filters"] = int(len(outs[0]))


def _rw_dense(op, cfg, w, ins, outs, widths):
    w["kernel"] = _take(_take(w["kernel"], ins[0], 0), outs[0], 1)
    if "bias" in w:
        w["bias"] = _take(w["bias"], outs[0], 0)
    cfg["units"] = int(len(outs[0]))


def _rw_separable(op, cfg, w, ins, outs, widths):
    mult = int(op.depth_multiplier)
    rows = (ins[0][:, None] * mult + np.arange(mult)[None, :]).reshape(-1)  # depthwise output c*mult + m
    w["depthwise_kernel"] = _take(w["depthwise_kernel"], ins[0], -2)
    w["pointwise_kernel"] = _take(_take(w["pointwise_kernel"], rows, -2), outs[0], -1)
    if "bias" in w:
        w["bias"] = _take(w["bias"], outs[0], 0)
    cfg["filters"] = int(len(outs[0]))


def _rw_depthwise(op, cfg, w, ins, outs, widths):
    w["kernel"] = _take(w["kernel"], ins[0], -2)
    if "bias" in w:
        w["bias"] = _take(w["bias"], ins[0], 0)


def _rw_channel_params(op, cfg, w, ins, outs, widths):
    """BN/LayerNorm/PReLU/Normalization: slice every per-channel array (last axis == channel count)."""
    keep, width = ins[0], widths[0]
    if len(keep) == width:
        return
    for name, value in w.items():
        if value.ndim >= 1 and value.shape[-1] == width:
            w[name] = _take(value, keep, -1)
    for key in ("mean", "variance"):  # Normalization(mean=..., variance=...) keeps them in its config
        value = cfg.get(key)
        if value is not None and np.ndim(value) >= 1 and np.shape(value)[-1] == width:
            cfg[key] = _take(np.asarray(value), keep, -1).tolist()


def _rw_reshape(op, cfg, w, ins, outs, widths):
    target = list(cfg.get("target_shape") or [])
    if target and target[-1] not in (-1, None):
        target[-1] = int(len(outs[0]))  # the channel axis stays last: only its size changes
        cfg["target_shape"] = tuple(target)


def _rw_rescaling(op, cfg, w, ins, outs, widths):
    keep, width = ins[0], widths[0]
    for key in ("scale", "offset"):  # per-channel factors live in the config
        value = np.asarray(getattr(op, key), dtype=np.float64)
        if value.ndim >= 1 and value.shape[-1] == width and len(keep) != width:
            cfg[key] = _take(value, keep, -1).tolist()


def _norm_fn(criterion: str) -> Callable[[np.ndarray, tuple[int, ...]], np.ndarray]:
    if criterion == "l2":
        return lambda w, axes: np.sqrt(np.sum(np.square(w, dtype=np.float64), axis=axes))
    return lambda w, axes: np.sum(np.abs(w, dtype=np.float64), axis=axes)


def _out_conv(op, w, norm):
    return norm(w["kernel"], _except(w["kernel"], -1))


def _in_conv(op, w, norm):
    return norm(w["kernel"], _except(w["kernel"], -2))


def _out_conv_t(op, w, norm):
    return norm(w["kernel"], _except(w["kernel"], -2))


def _in_conv_t(op, w, norm):
    return norm(w["kernel"], _except(w["kernel"], -1))


def _out_dense(op, w, norm):
    return norm(w["kernel"], (0,))


def _in_dense(op, w, norm):
    return norm(w["kernel"], (1,))


def _out_separable(op, w, norm):
    return norm(w["pointwise_kernel"], _except(w["pointwise_kernel"], -1))


def _in_separable(op, w, norm):
    return norm(w["depthwise_kernel"], _except(w["depthwise_kernel"], -2))


def _spatial(shape: tuple) -> int:
    return math.prod(int(d) for d in shape[1:-1])


def _macs_conv(op, s_in, s_out, cin, cout):
    return _spatial(s_out) * math.prod(op.kernel_size) * (cin // int(getattr(op, "groups", 1) or 1)) * cout


def _macs_conv_t(op, s_in, s_out, cin, cout):
    return _spatial(s_in) * math.prod(op.kernel_size) * cin * cout


def _macs_dense(op, s_in, s_out, cin, cout):
    return _spatial(s_in) * cin * cout


def _macs_depthwise(op, s_in, s_out, cin, cout):
    return _spatial(s_out) * math.prod(op.kernel_size) * cin * int(op.depth_multiplier)


def _macs_separable(op, s_in, s_out, cin, cout):
    mult, n = int(op.depth_multiplier), _spatial(s_out)
    return n * math.prod(op.kernel_size) * cin * mult + n * cin * mult * cout


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
TRUNK_MODES = ("auto", "keep", "prune")  # what channel pruning does with residual trunks (see keeps_trunks)
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


# ---- importance ----------------------------------------------------------------------------------------
def _weights(op: Any) -> dict[str, np.ndarray]:
    return {v.name: np.asarray(v.numpy()) for v in getattr(op, "weights", [])}


def _normalised(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    mean = float(v.mean()) if v.size else 0.0
    return v / mean if mean > 0 else v


def _importance(graph: _Graph, criterion: str, x: np.ndarray | None) -> dict[int, np.ndarray]:
    """Root group -> score per channel (higher = keep). Each layer's contribution is normalised to mean 1."""
    scores = {r: np.zeros(graph.size[r]) for r in graph.roots()}

    def add(root: int, v: np.ndarray) -> None:
        if v.size == scores[root].size:
            scores[root] += _normalised(v)

    if criterion == "activation":
        _activation_scores(graph, x, add)
        return scores
    norm = _norm_fn("l2" if criterion == "l2" else "l1")
    combine = (lambda m: np.sqrt(np.sum(np.square(m), axis=0))) if criterion == "l2" else (lambda m: np.sum(m, axis=0))
    magnitude = {r: np.zeros(graph.size[r]) for r in graph.roots()} if criterion == "bn" else scores
    has_bn: set[int] = set()
    for step in graph.steps:
        if step.kind is None:
            continue
        if criterion == "bn" and type(step.op).__name__ == "BatchNormalization" and step.op.scale:
            for root, v in graph.spread(step.ins[0], np.abs(_weights(step.op)["gamma"]), lambda m: np.sum(m, axis=0)):
                add(root, v)
                has_bn.add(root)
        w = _weights(step.op) if (step.kind.out_norms or step.kind.in_norms) else {}
        if step.kind.out_norms is not None:
            root = graph.find(step.outs[0].groups[0])
            v = step.kind.out_norms(step.op, w, norm)
            if v.size == magnitude[root].size:
                magnitude[root] += _normalised(v)
        if step.kind.in_norms is not None:
            for root, v in graph.spread(step.ins[0], step.kind.in_norms(step.op, w, norm), combine):
                if v.size == magnitude[root].size:
                    magnitude[root] += _normalised(v)
    if criterion == "bn":
        for root in scores:
            if root not in has_bn:
                scores[root] = magnitude[root]  # no BatchNorm in this group: fall back to l1 norms
    return scores


def _activation_scores(graph: _Graph, x: np.ndarray | None, add: Callable[[int, np.ndarray], None]) -> None:
    import keras

    prunable = {r for r in graph.roots() if not graph.reasons.get(r)}
    chosen: dict[int, list[Any]] = {}  # root -> tensors after activations/merges (else producer outputs)
    fallback: dict[int, list[Any]] = {}
    for step in graph.steps:
        if step.role == "frozen" or not step.node.outputs or step.outs[0].repeat != 1 or _rank(step.node.outputs[0]) < 2:
            continue
        target = chosen if step.role in ("pass", "merge") else fallback
        for g in step.outs[0].groups:
            if graph.find(g) in prunable:
                target.setdefault(graph.find(g), []).append(step.node.outputs[0])
    tensors: dict[int, Any] = {}
    for root in prunable:
        for t in chosen.get(root) or fallback.get(root, []):
            tensors[id(t)] = t
    if not tensors:
        return
    outputs = list(tensors.values())
    fn = graph.fn
    sub = keras.Model(fn.inputs[0], outputs)  # _check_options allows one input only
    sums = [np.zeros(_last_dim(t)) for t in outputs]
    n = 0
    for i in range(0, len(x), 16):
        ys = sub(np.ascontiguousarray(x[i : i + 16]), training=False)
        ys = ys if isinstance(ys, (list, tuple)) else [ys]
        for k, y in enumerate(ys):
            y = np.abs(np.asarray(y, dtype=np.float64))
            sums[k] += y.reshape(-1, y.shape[-1]).mean(axis=0) * len(y)
        n += len(ys[0])
    for t, s in zip(outputs, sums):
        for root, v in graph.spread(graph.layouts[id(t)], s / max(n, 1), lambda m: np.sum(m, axis=0)):
            if root in prunable:
                add(root, v)


# ---- planning ----------------------------------------------------------------------------------------------
def _check_fraction(value: Any, what: str, example: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) < 1.0:
        raise InputError(f"channel pruning {what} must be a number in [0, 1) ({example}), got {value!r}")
    return float(value)


def _check_options(criterion: str, round_to: Any, min_channels: Any, x: Any, model: Any) -> np.ndarray | None:
    if criterion not in CRITERIA:
        raise InputError(f"channel pruning criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    for name, value in (("round_to", round_to), ("min_channels", min_channels)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
            raise InputError(f"channel pruning {name} must be an integer >= 1, got {value!r}")
    if criterion != "activation":
        return None
    if x is None or len(x) == 0:
        raise InputError("channel pruning criterion 'activation' needs calibration samples x (an array of model inputs)")
    x = np.asarray(x, dtype=np.float32)[:ACTIVATION_SAMPLES]
    expected = tuple(_functional(model).inputs[0].shape)
    if len(_functional(model).inputs) != 1 or x.ndim != len(expected) or any(e is not None and e != d for e, d in zip(expected[1:], x.shape[1:])):
        raise InputError(f"channel pruning x has shape {x.shape}; expected (N, {', '.join(str(d) for d in expected[1:])}) for model {model.name!r}")
    return x


def _n_keep(size: int, ratio: float, round_to: int, min_channels: int) -> int:
    rounded = math.ceil((1.0 - ratio) * size / round_to - 1e-9) * round_to
    return max(1, min(size, max(min_channels, rounded)))


def keeps_trunks(graph: _Graph, mode: str) -> bool:
    """Whether a plan leaves the residual trunks whole: ``keep``, ``prune``, or ``auto`` = when the trunks are
    narrower than the other prunable groups on average (inverted residuals: MobileNetV2/V3, EfficientNet,
    whose trunk is the narrow path between wide blocks) and not when they are wider (ResNet's bottlenecks)."""
    if mode not in TRUNK_MODES:
        raise InputError(f"channel pruning trunks must be one of {', '.join(TRUNK_MODES)}, got {mode!r}")
    trunks = graph.trunks()
    if mode != "auto" or not trunks:
        return mode == "keep" and bool(trunks)
    sizes = {root: graph.size[root] for root in graph.labels() if not graph.reasons.get(root) and graph.size[root]}
    inner = [n for root, n in sizes.items() if root not in trunks]
    outer = [n for root, n in sizes.items() if root in trunks]
    return bool(inner and outer) and float(np.mean(outer)) < float(np.mean(inner))


def _trunks_label(graph: _Graph, keep: dict[int, np.ndarray]) -> str:
    """What a plan does to the residual trunks: "pruned" (it cuts one), "kept" (it cuts none), "none" (no trunks)."""
    trunks = graph.trunks()
    return "none" if not trunks else ("pruned" if trunks & set(keep) else "kept")


def resolve_trunks(model: Any, mode: str, *, keep_stem: bool = True) -> str:
    """``auto`` decided once for ``model`` ("keep" or "prune"; see :func:`keeps_trunks`), other modes checked."""
    if mode not in TRUNK_MODES:
        raise InputError(f"channel pruning trunks must be one of {', '.join(TRUNK_MODES)}, got {mode!r}")
    if mode != "auto":
        return mode
    return "keep" if keeps_trunks(_Graph(_graph_model(model), keep_stem=keep_stem), "auto") else "prune"


def _select(graph: _Graph, scores: dict[int, np.ndarray], ratio: float, round_to: int, min_channels: int,
            keep_trunks: bool = False) -> dict[int, np.ndarray]:
    keep: dict[int, np.ndarray] = {}
    trunks = graph.trunks() if keep_trunks else set()
    for root in graph.labels():
        size = graph.size[root]
        if graph.reasons.get(root) or size == 0 or root in trunks:
            continue
        n = _n_keep(size, ratio, round_to, min_channels)
        if n < size:
            order = np.argsort(-scores[root], kind="stable")
            keep[root] = np.sort(order[:n])
    return keep


def _make_plan(graph: _Graph, keep: dict[int, np.ndarray], *, criterion: str, ratio: float, round_to: int,
               min_channels: int, flops_target: float | None = None, shapes: dict[int, tuple] | None = None) -> PrunePlan:
    before = after = None
    if shapes is not None:
        try:
            before, after = _planned_flops(graph, shapes, {}), _planned_flops(graph, shapes, keep)
        except InputError:  # a dynamic shape inside the model: FLOPs need input_size
            before = after = None
    return PrunePlan(
        model_name=graph.model.name, criterion=criterion, ratio=float(ratio), round_to=int(round_to),
        min_channels=int(min_channels), keep_stem=graph.keep_stem, groups=graph.groups(keep),
        frozen_layers=dict(graph.unsupported), flops_target=flops_target, flops_before=before, flops_after=after,
        trunks=_trunks_label(graph, keep), _graph=graph,
    )


def _graph_model(model: Any) -> Any:
    model = load_keras_model(model)
    flavor = model_flavor(model)
    if flavor != "keras":
        raise ConversionError(f"channel pruning: model {getattr(model, 'name', '?')!r} is a {flavor} model; expected a Keras 3 model (.keras)")
    check_graph_model(model, "channel pruning")
    return model


def dependency_groups(model: Any, *, keep_stem: bool = True) -> list[ChannelGroup]:
    """The channel groups of a Keras 3 Functional/Sequential model (all channels kept), frozen ones with reasons."""
    graph = _Graph(_graph_model(model), keep_stem=keep_stem)
    return graph.groups({})


def plan(model: Any, ratio: float, criterion: str = "l1", round_to: int = 8, min_channels: int = 8,
         x: np.ndarray | None = None, *, keep_stem: bool = True, trunks: str = "auto") -> PrunePlan:
    """Choose the channels to keep: every prunable group keeps its best ``max(min_channels, round_up(round_to, (1-ratio)*C))``
    (``trunks``: whether the residual trunks keep all theirs, see :func:`keeps_trunks`)."""
    model = _graph_model(model)
    ratio = _check_fraction(ratio, "ratio", "0.5 removes about half the channels of each group")
    x = _check_options(criterion, round_to, min_channels, x, model)
    graph = _Graph(model, keep_stem=keep_stem)
    keep_trunks = keeps_trunks(graph, trunks)
    keep = _select(graph, _importance(graph, criterion, x), ratio, int(round_to), int(min_channels), keep_trunks)
    return _make_plan(graph, keep, criterion=criterion, ratio=ratio, round_to=round_to, min_channels=min_channels,
                      shapes=_shapes_or_none(graph))


def plan_from_indices(model: Any, keep: dict[str, Sequence[int]], *, keep_stem: bool = True) -> PrunePlan:
    """A plan that keeps exactly the given output channels of the named producer layers (others keep all)."""
    model = _graph_model(model)
    graph = _Graph(model, keep_stem=keep_stem)
    by_producer = {step.op.name: graph.find(step.outs[0].groups[0]) for step in graph.steps if step.role == "producer"}
    chosen: dict[int, np.ndarray] = {}
    for name, indices in keep.items():
        if name not in by_producer:
            raise InputError(
                f"channel pruning: layer {name!r} is not a Conv/Dense layer of model {model.name!r} whose output channels can be removed"
            )
        root = by_producer[name]
        if graph.reasons.get(root):
            raise InputError(f"channel pruning: the channels of layer {name!r} cannot be removed: {'; '.join(graph.reasons[root])}")
        idx = np.unique(np.asarray(list(indices), dtype=np.int64))
        if idx.size == 0 or idx.min() < 0 or idx.max() >= graph.size[root]:
            size = graph.size[root]
            raise InputError(
                f"channel pruning: keep indices for layer {name!r} must be 1..{size} distinct values in [0, {size}), got {list(indices)[:8]}"
            )
        if root in chosen and not np.array_equal(chosen[root], idx):
            raise InputError(f"channel pruning: layer {name!r} shares its channels with another layer given different keep indices")
        chosen[root] = idx
    return _make_plan(graph, chosen, criterion="manual", ratio=0.0, round_to=1, min_channels=1, shapes=_shapes_or_none(graph))


def plan_for_flops(model: Any, flops_ratio: float, criterion: str = "l1", round_to: int = 8, min_channels: int = 8,
                   x: np.ndarray | None = None, input_size: Sequence[int] | int | None = None, *, keep_stem: bool = True,
                   trunks: str = "auto") -> PrunePlan:
    """Find (by bisection on one ratio for every group, or for every group but the residual trunks, see
    :func:`keeps_trunks`) the plan that removes about ``flops_ratio`` of the model's FLOPs.

    Keeping the trunks puts the whole cut on the blocks' inner channels (a MobileNetV2 block's expansion):
    their FLOPs and their memory traffic fall together, so at the same FLOPs the model runs faster than
    with a uniform ratio, whose cut of both sides of a 1x1 convolution removes FLOPs quadratically but
    activation traffic only linearly (MobileNetV2 224, int8 TFLite, half the FLOPs: 1.72x vs 1.59x)."""
    model = _graph_model(model)
    target = _check_fraction(flops_ratio, "FLOPs fraction", "0.5 removes about half the FLOPs")
    x = _check_options(criterion, round_to, min_channels, x, model)
    graph = _Graph(model, keep_stem=keep_stem)
    shapes = _shapes(graph.fn, input_size)
    scores = _importance(graph, criterion, x)
    total = _planned_flops(graph, shapes, {})
    keep_trunks = keeps_trunks(graph, trunks)

    def removed(r: float) -> tuple[float, dict[int, np.ndarray]]:
        keep = _select(graph, scores, r, int(round_to), int(min_channels), keep_trunks)
        return (1.0 - _planned_flops(graph, shapes, keep) / total) if total else 0.0, keep

    lo, hi = 0.0, _MAX_RATIO
    got_lo, keep_lo = removed(lo)
    got_hi, keep_hi = removed(hi)
    if got_hi < target:
        log.warning("channel pruning: at most %.1f%% of the FLOPs of %r can be removed (frozen groups, min_channels); target was %.1f%%",
                    got_hi * 100, model.name, target * 100)
        lo, got_lo, keep_lo = hi, got_hi, keep_hi
    elif got_lo < target:
        for _ in range(_BISECT_STEPS):
            mid = (lo + hi) / 2
            got, keep = removed(mid)
            if got >= target:
                hi, got_hi, keep_hi = mid, got, keep
            else:
                lo, got_lo, keep_lo = mid, got, keep
        if abs(got_hi - target) < abs(target - got_lo):
            lo, got_lo, keep_lo = hi, got_hi, keep_hi
    log.info("channel pruning: ratio %.3f removes %.1f%% of the FLOPs (target %.1f%%)", lo, got_lo * 100, target * 100)
    return _make_plan(graph, keep_lo, criterion=criterion, ratio=lo, round_to=round_to, min_channels=min_channels,
                      flops_target=target, shapes=shapes)


# ---- FLOPs and parameters ------------------------------------------------------------------------------------
def _shapes(fn: Any, input_size: Sequence[int] | int | None) -> dict[int, tuple]:
    """Static shape of every tensor in the graph; ``input_size`` fixes the spatial size of dynamic inputs."""
    from keras import tree

    from keras.src.backend import KerasTensor

    nodes = _topo_nodes(fn)
    if input_size is None:
        shapes = {id(t): tuple(t.shape) for node in nodes for t in (*node.input_tensors, *node.outputs)}
        for t in fn.inputs:
            if any(d is None for d in tuple(t.shape)[1:]):
                raise InputError(f"model {fn.name!r} has a dynamic input size {tuple(t.shape)}; pass input_size=(H, W)")
        return shapes
    size = (int(input_size),) if isinstance(input_size, numbers.Integral) else tuple(int(d) for d in input_size)
    specs: dict[int, Any] = {}
    for t in fn.inputs:
        shape = tuple(t.shape)
        if len(size) != len(shape) - 2 or min(size) < 1:
            raise InputError(f"input_size {size} does not fit input {_input_name(t)!r} of shape {shape}; expected {len(shape) - 2} positive sizes")
        if any(d is not None and d != s for d, s in zip(shape[1:-1], size)):
            raise InputError(f"input_size {size} differs from the static input shape {shape} of model {fn.name!r}")
        specs[id(t)] = KerasTensor((None, *size, shape[-1]), dtype=t.dtype)
    for node in nodes:
        if node.is_input or type(node.operation).__name__ == "InputLayer":
            continue
        args, kwargs = node.arguments.fill_in(specs)
        try:
            out = node.operation.compute_output_spec(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - shape inference raises many types
            raise ConversionError(f"layer {node.operation.name!r} cannot infer its shape at input_size {size}: {_message(e)}") from None
        for t, spec in zip(node.outputs, tree.flatten(out)):
            specs[id(t)] = spec
    return {k: tuple(v.shape) for k, v in specs.items()}


def _shapes_or_none(graph: _Graph) -> dict[int, tuple] | None:
    try:
        return _shapes(graph.fn, None)
    except InputError:
        return None


def _macs_of(op: Any, s_in: tuple, s_out: tuple, cin: int, cout: int, input_size: Any = None) -> int:
    kind = _kind_for(op)
    if kind is not None and kind.macs is not None:
        if any(d is None for d in (*s_in[1:], *s_out[1:])):
            raise InputError(f"layer {op.name!r} has a dynamic shape {s_in} -> {s_out}; pass input_size=(H, W)")
        return int(kind.macs(op, s_in, s_out, cin, cout))
    import keras

    if isinstance(op, keras.Model) and model_flavor(op) == "keras":
        return count_flops(op) // 2 if all(d is not None for d in s_in[1:]) else 0
    return 0


def _planned_flops(graph: _Graph, shapes: dict[int, tuple], keep: dict[int, np.ndarray]) -> int:
    macs = 0
    for step in graph.steps:
        node = step.node
        if not node.input_tensors or not node.outputs:
            continue
        s_in, s_out = shapes[id(node.input_tensors[0])], shapes[id(node.outputs[0])]
        cin = len(graph.positions(step.ins[0], keep)) if step.ins else 0
        cout = len(graph.positions(step.outs[0], keep)) if step.outs else 0
        macs += _macs_of(step.op, s_in, s_out, cin, cout)
    return 2 * macs


def count_flops(model: Any, input_size: Sequence[int] | int | None = None) -> int:
    """FLOPs (2 x multiply-accumulates) of the Conv/Dense/Depthwise/Separable/ConvTranspose layers for one sample.

    The model's static input size is used; ``input_size`` (``(H, W)``) is required for dynamic-size models.
    """
    model = _graph_model(model)
    fn = _functional(model)
    shapes = _shapes(fn, input_size)
    macs = 0
    for node in _topo_nodes(fn):
        op = node.operation
        if type(op).__name__ == "InputLayer" or not node.input_tensors or not node.outputs:
            continue
        s_in, s_out = shapes[id(node.input_tensors[0])], shapes[id(node.outputs[0])]
        macs += _macs_of(op, s_in, s_out, int(s_in[-1] or 0), int(s_out[-1] or 0))
    return 2 * macs


def count_params(model: Any) -> int:
    """Number of weights (trainable and not) of a Keras model."""
    return int(_graph_model(model).count_params())


# ---- surgery ----------------------------------------------------------------------------------------------------
def _graph_for(model: Any, p: PrunePlan) -> tuple[_Graph, dict[int, np.ndarray]]:
    graph = p._graph if p._graph is not None and p._graph.model is model else _Graph(model, keep_stem=p.keep_stem)
    labels = {name: root for root, name in graph.labels().items()}
    keep: dict[int, np.ndarray] = {}
    for g in p.groups:
        root = labels.get(g.name)
        if root is None or graph.size[root] != g.size:
            raise InputError(f"channel plan for {p.model_name!r} does not fit model {model.name!r}: group {g.name!r} is missing or has another width")
        if len(g.keep) < g.size:
            if graph.reasons.get(root):
                why = "; ".join(graph.reasons[root])
                raise InputError(f"channel plan removes channels of group {g.name!r}, which model {model.name!r} cannot prune: {why}")
            keep[root] = np.asarray(sorted(g.keep), dtype=np.int64)
    return graph, keep


def _clone(step: _Step, graph: _Graph, keep: dict[int, np.ndarray]) -> tuple[Any, list[np.ndarray]]:
    """A new operation from the (rewritten) config of ``step.op``, and the weights it must receive."""
    op = step.op
    weights = [np.asarray(w) for w in op.get_weights()] if hasattr(op, "get_weights") else []
    cfg = op.get_config()
    touched = any(graph.find(g) in keep for layout in (*step.ins, *step.outs) for g in layout.groups)
    if touched and step.kind is not None and step.kind.rewrite is not None:
        names = [v.name for v in op.weights]
        named = dict(zip(names, weights))
        ins = [graph.positions(layout, keep) for layout in step.ins]
        outs = [graph.positions(layout, keep) for layout in step.outs]
        widths = [graph.width(layout) * layout.repeat for layout in step.ins]
        step.kind.rewrite(op, cfg, named, ins, outs, widths)
        weights = [named[n] for n in names]
    try:
        return type(op).from_config(cfg), weights
    except Exception as e:  # noqa: BLE001 - from_config raises TypeError/ValueError...
        if weights:
            raise ConversionError(
                f"channel pruning: layer {op.name!r} ({type(op).__name__}) cannot be rebuilt from its config: {_message(e)}"
            ) from None
        log.info("channel pruning: reusing %r (%s) as is: it cannot be rebuilt from its config", op.name, type(op).__name__)
        return op, []


def _set_weights(old: Any, new: Any, weights: list[np.ndarray]) -> None:
    if new is old or not weights:
        return
    expected = [tuple(w.shape) for w in new.get_weights()]
    if expected != [tuple(w.shape) for w in weights]:
        raise ConversionError(f"channel pruning: layer {old.name!r} expects weights {expected} after surgery, computed {[w.shape for w in weights]}")
    new.set_weights(weights)
    if hasattr(new, "finalize_state") and type(new).__name__ == "Normalization":
        new.finalize_state()


def apply(model: Any, plan: PrunePlan) -> Any:
    """Rebuild ``model`` with the channels ``plan`` keeps: same layers, names and wiring, fewer filters/units."""
    import keras
    from keras import tree

    model = _graph_model(model)
    graph, keep = _graph_for(model, plan)
    fn = graph.fn
    clones: dict[int, tuple[Any, list[np.ndarray]]] = {}
    steps = {id(step.node): step for step in graph.steps}
    new_inputs = [keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=_input_name(t)) for t in fn.inputs]
    order: list[Any] = []
    for node in _topo_nodes(fn):
        if type(node.operation).__name__ == "InputLayer":
            continue
        step = steps[id(node)]
        if id(step.op) not in clones:
            clones[id(step.op)] = _clone(step, graph, keep)
            order.append(step.op)
    try:
        if _is_sequential(model):
            rebuilt = keras.Sequential([new_inputs[0], *[clones[id(op)][0] for op in order]], name=model.name)
        else:
            tensors = {id(t): n for t, n in zip(fn.inputs, new_inputs)}
            for node in _topo_nodes(fn):
                if type(node.operation).__name__ == "InputLayer":
                    continue
                args, kwargs = node.arguments.fill_in(tensors)
                try:
                    outs = clones[id(node.operation)][0](*args, **kwargs)
                except Exception as e:  # noqa: BLE001 - Keras wraps shape errors in many types
                    op = node.operation
                    raise ConversionError(f"channel pruning: layer {op.name!r} ({type(op).__name__}) rejects its pruned inputs: {_message(e)}") from None
                for t, n in zip(node.outputs, tree.flatten(outs)):
                    tensors[id(t)] = n
            outputs = [tensors[id(t)] for t in tree.flatten(fn.outputs)]
            rebuilt = keras.Model(
                tree.pack_sequence_as(fn._inputs_struct, new_inputs),  # noqa: SLF001 - keep the input structure
                tree.pack_sequence_as(fn._outputs_struct, outputs),  # noqa: SLF001
                name=model.name,
            )
    except (ConversionError, InputError):
        raise
    except Exception as e:  # noqa: BLE001 - a layer refusing its new input shape
        raise ConversionError(f"channel pruning: rebuilding {model.name!r} failed: {_message(e)}") from None
    for op in order:
        new, weights = clones[id(op)]
        _set_weights(op, new, weights)
    before = [tuple(t.shape) for t in tree.flatten(fn.outputs)]
    after = [tuple(t.shape) for t in tree.flatten(_functional(rebuilt).outputs)]
    if before != after:
        raise ConversionError(f"channel pruning: rebuilt {model.name!r} has output shapes {after}, expected {before}")
    return rebuilt


# ---- one call -----------------------------------------------------------------------------------------------
def _layer_channels(graph: _Graph, keep: dict[int, np.ndarray]) -> dict[str, dict[str, int]]:
    out = {}
    for step in graph.steps:
        if step.role in ("producer", "param") and step.outs and step.outs[0].repeat == 1 and step.kind is not None and step.kind.rewrite:
            before = graph.width(step.outs[0])
            out[step.op.name] = {"before": int(before), "after": int(len(graph.positions(step.outs[0], keep)))}
    return out


def _flops_pair(model: Any, pruned: Any, input_size: Any) -> tuple[int | None, int | None]:
    try:
        return count_flops(model, input_size=input_size), count_flops(pruned, input_size=input_size)
    except InputError as e:
        if input_size is not None:
            raise
        log.warning("channel pruning: FLOPs not counted: %s", e)
        return None, None


def prune_channels(model: Any, *, ratio: float | None = None, flops: float | None = None, criterion: str = "l1",
                   round_to: int = 8, min_channels: int = 8, x: np.ndarray | None = None,
                   input_size: Sequence[int] | int | None = None, keep_stem: bool = True,
                   trunks: str = "auto") -> tuple[Any, ChannelReport]:
    """Remove channels from a Keras 3 model: by a uniform ``ratio`` per group, or to remove a ``flops`` fraction of FLOPs.

    ``trunks``: ``keep`` leaves the residual trunks whole and cuts only the other groups (the blocks' inner
    channels, whose FLOPs and memory traffic fall together: faster at the same FLOPs for inverted residuals),
    ``prune`` cuts them with the rest, ``auto`` keeps them when they are the narrow path (:func:`keeps_trunks`).

    Returns the new model and a :class:`ChannelReport`. Exactly one of ``ratio`` / ``flops`` is given.
    """
    t0 = time.monotonic()
    if (ratio is None) == (flops is None):
        raise InputError(f"channel pruning needs exactly one of ratio= or flops=, got ratio={ratio!r} flops={flops!r}")
    model = _graph_model(model)
    if ratio is not None:
        p = plan(model, ratio=ratio, criterion=criterion, round_to=round_to, min_channels=min_channels, x=x,
                 keep_stem=keep_stem, trunks=trunks)
    else:
        p = plan_for_flops(model, flops, criterion=criterion, round_to=round_to, min_channels=min_channels, x=x,
                           input_size=input_size, keep_stem=keep_stem, trunks=trunks)
    pruned = apply(model, p)
    graph, keep = _graph_for(model, p)
    labels = graph.labels()
    flops = _flops_pair(model, pruned, input_size)
    report = ChannelReport(
        criterion=criterion, ratio=round(p.ratio, 6), flops_target=p.flops_target, layers=_layer_channels(graph, keep),
        params_before=int(model.count_params()), params_after=int(pruned.count_params()),
        flops_before=flops[0], flops_after=flops[1],
        frozen=dict(graph.unsupported), kept_groups={labels[r]: list(graph.reasons[r]) for r in labels if graph.reasons.get(r)},
        groups=len(labels), pruned_groups=len(keep), seconds=round(time.monotonic() - t0, 3), trunks=p.trunks,
    )
    log.info("channel pruning %r: params %d -> %d, FLOPs %s -> %s, %d of %d groups pruned, %d layers frozen",
             model.name, report.params_before, report.params_after, report.flops_before, report.flops_after,
             report.pruned_groups, report.groups, len(report.frozen))
    return pruned, report
