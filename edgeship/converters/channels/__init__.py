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

The package's files follow those steps: :mod:`.trace` (layouts, dependency groups, handlers per
layer kind), :mod:`.kinds` (weight slicing, norms and MACs per layer kind), :mod:`.importance`
(channel scores), :mod:`.planning` (what each group keeps), :mod:`.flops` (MACs and parameters),
:mod:`.surgery` (the rebuilt model) and :mod:`.prune` (the one call); :mod:`.records` holds the
public records.
"""

from __future__ import annotations

from .flops import count_flops, count_params
from .importance import ACTIVATION_SAMPLES, CRITERIA, DEFAULT_CRITERION
from .planning import (DEFAULT_TRUNKS, MIN_CHANNELS, ROUND_TO, TRUNK_MODES, _n_keep, dependency_groups, keeps_trunks, plan, plan_for_flops, plan_from_indices,
                       resolve_trunks)
from .prune import prune_channels
from .records import ChannelGroup, ChannelReport, PrunePlan
from .surgery import apply

__all__ = [
    "CRITERIA", "ChannelGroup", "ChannelReport", "PrunePlan", "apply", "count_flops", "count_params",
    "dependency_groups", "plan", "plan_for_flops", "plan_from_indices", "prune_channels", "resolve_trunks", "TRUNK_MODES",
    "ACTIVATION_SAMPLES", "keeps_trunks", "DEFAULT_CRITERION", "DEFAULT_TRUNKS", "MIN_CHANNELS", "ROUND_TO",
]
