"""One call: trace, plan and apply a channel cut, and report what changed (channels, FLOPs, parameters)."""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import numpy as np

from ...errors import InputError
from .records import ChannelReport
from .trace import _Graph, _graph_model
from .flops import count_flops
from .importance import DEFAULT_CRITERION
from .planning import DEFAULT_TRUNKS, MIN_CHANNELS, ROUND_TO, plan, plan_for_flops
from .surgery import _graph_for, apply

log = logging.getLogger(__name__)


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


def prune_channels(model: Any, *, ratio: float | None = None, flops: float | None = None,
                   criterion: str = DEFAULT_CRITERION, round_to: int = ROUND_TO, min_channels: int = MIN_CHANNELS,
                   x: np.ndarray | None = None,
                   input_size: Sequence[int] | int | None = None, keep_stem: bool = True,
                   trunks: str = DEFAULT_TRUNKS) -> tuple[Any, ChannelReport]:
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
