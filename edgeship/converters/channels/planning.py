"""Planning a cut: which channels each group keeps, for a channel ratio or a FLOPs target; the trunk rule."""

from __future__ import annotations

import logging

import math
import numbers
from typing import Any, Sequence

import numpy as np

from ...errors import InputError
from .records import ChannelGroup, PrunePlan
from .trace import _Graph, _functional, _graph_model
from .importance import ACTIVATION_SAMPLES, CRITERIA, DEFAULT_CRITERION, _importance
from .flops import _planned_flops, _shapes, _shapes_or_none

log = logging.getLogger(__name__)


_BISECT_STEPS = 24


_MAX_RATIO = 0.99


TRUNK_MODES = ("auto", "keep", "prune")  # the first is the default
DEFAULT_TRUNKS = TRUNK_MODES[0]
ROUND_TO = 8  # channels kept per group: a multiple of this (fast SIMD widths)
MIN_CHANNELS = 8  # never fewer channels in a group  # what channel pruning does with residual trunks (see keeps_trunks)


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


def dependency_groups(model: Any, *, keep_stem: bool = True) -> list[ChannelGroup]:
    """The channel groups of a Keras 3 Functional/Sequential model (all channels kept), frozen ones with reasons."""
    graph = _Graph(_graph_model(model), keep_stem=keep_stem)
    return graph.groups({})


def plan(model: Any, ratio: float, criterion: str = DEFAULT_CRITERION, round_to: int = ROUND_TO, min_channels: int = MIN_CHANNELS,
         x: np.ndarray | None = None, *, keep_stem: bool = True, trunks: str = DEFAULT_TRUNKS) -> PrunePlan:
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


def plan_for_flops(model: Any, flops_ratio: float, criterion: str = DEFAULT_CRITERION, round_to: int = ROUND_TO,
                   min_channels: int = MIN_CHANNELS,
                   x: np.ndarray | None = None, input_size: Sequence[int] | int | None = None, *, keep_stem: bool = True,
                   trunks: str = DEFAULT_TRUNKS) -> PrunePlan:
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
