"""Scoring channels: filter norms (l1, l2), BatchNorm gammas, or mean activations on calibration samples."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .kinds import _norm_fn
from .trace import _Graph, _last_dim, _rank


CRITERIA = ("l1", "l2", "bn", "activation")  # the first is the default
DEFAULT_CRITERION = CRITERIA[0]


ACTIVATION_SAMPLES = 64  # calibration samples used by the "activation" criterion


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
