"""The options of :func:`~edgeship.converters.convert.convert`, in three groups.

    from edgeship import convert
    from edgeship.converters.options import ConvertOptions, GateOptions, IOOptions, PruneOptions

    opts = ConvertOptions(io=IOOptions(task="classify", labels="labels.txt"),
                          prune=PruneOptions(channels=0.5, distill_epochs=5),
                          gate=GateOptions(max_drop=0.5))
    convert("model.keras", "calib.npz", formats=["tflite"], precision="int8", out_dir="out", options=opts)

The flat keywords of the command line (``max_drop=0.5``, ``prune_channels=0.5``, ``io="float"``...)
are accepted too: :data:`FLAT` maps each to its group and field, and it is the one place that
spelling lives (the manifest's ``conversion.options`` records the same names).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Sequence

from ..errors import InputError
from ..spec import InputSpec
from .channels import DEFAULT_TRUNKS
from .equalize import EQUALIZE
from .ladder import PREFER
from .metrics import TIE_MARGIN
from .biascorr import BIAS_CORRECTION
from .openvino import DEFAULT_PRESET
from .ranges import DEFAULT_RANGES
from .rounding import DEFAULT_WEIGHT_ROUNDING
from .prune import SCHEDULES
from .tflite import DEFAULT_IO


@dataclass(frozen=True)
class IOOptions:
    """What goes in and comes out: the InputSpec, labels, task, output roles and tensor types."""

    io: str = DEFAULT_IO  # int8 artifacts' input/output tensors: one of converters.tflite.IO_TYPES
    input_spec: InputSpec | None = None  # default: the calibration set's
    input_size: tuple[int, int] | None = None  # (height, width) for a model with a free input size
    spec_overrides: dict[str, Any] | None = None  # InputSpec fields on top (scale, mean, std, color_order...)
    labels: Sequence[str] | str | os.PathLike | None = None  # a list or a labels file
    task: str | None = None  # classify | detect | raw (default: from the output roles)
    output_roles: tuple[str, ...] = ()  # NAME=ROLE / INDEX=ROLE where the guess is wrong
    dynamic_batch: bool = False  # OpenVINO: a dynamic batch dimension


@dataclass(frozen=True)
class PruneOptions:
    """Pruning before conversion: magnitude (``sparsity``: a smaller gzip) or channels (faster)."""

    sparsity: float | None = None  # magnitude pruning target, 0..1
    schedule: str = SCHEDULES[0]  # one of SCHEDULES
    frequency: int | None = None  # pruning steps between mask updates
    finetune: str | os.PathLike | None = None  # labelled image folder trained on while pruning
    epochs: int = 1
    channels: float | None = None  # fraction of the channels removed (structured pruning)
    distill_epochs: int = 0  # distillation from the unpruned model after removing channels
    cycles: int = 1  # channels removed in this many cuts, distilled after each
    trunks: str = DEFAULT_TRUNKS  # channels: keep | prune the residual trunks; auto keeps them when they are the narrow path


@dataclass(frozen=True)
class GateOptions:
    """Quantization and its accuracy gate."""

    max_drop: float | None = 1.0  # accuracy budget in points (None: no point budget)
    min_sqnr: float | None = None  # every output's SQNR against the float model, in dB (None: no SQNR budget)
    denylisted_nodes: tuple[str, ...] = ()  # kept in float from the start
    denylisted_ops: tuple[str, ...] = ()
    ignored_scope: Any = None  # OpenVINO: an nncf.IgnoredScope or a list of node names
    preset: str = DEFAULT_PRESET  # NNCF preset: one of converters.openvino.PRESETS
    prefer: str = PREFER[0]  # between ladder rungs within budget: fastest (speed), smallest (size), first (quantized)
    tie_margin: float = TIE_MARGIN  # a top-1 flip between classes the float model scores this close is a near-tie
    equalize: str = EQUALIZE[0]  # cross-layer equalization before int8: auto (kept where it measures better) | on | off
    ranges: str = DEFAULT_RANGES  # activation ranges: auto | mse | minmax (converters.ranges.RANGES)
    bias_correction: str = BIAS_CORRECTION[0]  # int8: bias correction (converters.biascorr: auto/full/fast/none)
    weight_rounding: str = DEFAULT_WEIGHT_ROUNDING  # int8 weights: auto | gptq | nearest (converters.rounding)
    qat: int = 0  # epochs of quantization-aware fine-tuning (0: off): the ladder's int8-qat rung


@dataclass(frozen=True)
class ConvertOptions:
    io: IOOptions = field(default_factory=IOOptions)
    prune: PruneOptions = field(default_factory=PruneOptions)
    gate: GateOptions = field(default_factory=GateOptions)

    def updated(self, **flat: Any) -> "ConvertOptions":
        """A copy with flat keywords (names of :data:`FLAT`) applied to their groups."""
        unknown = sorted(k for k in flat if k not in FLAT)
        if unknown:
            raise InputError(f"convert() got unknown option(s) {', '.join(unknown)}; expected one of {', '.join(FLAT)}")
        changes: dict[str, dict[str, Any]] = {}
        for key, value in flat.items():
            group, name = FLAT[key]
            if name in ("output_roles", "denylisted_nodes", "denylisted_ops"):
                value = tuple(value or ())
            changes.setdefault(group, {})[name] = value
        return replace(self, **{g: replace(getattr(self, g), **c) for g, c in changes.items()})

    def flat(self) -> dict[str, Any]:
        """Every option under its flat name (what ``conversion.options`` in the manifest records)."""
        return {key: getattr(getattr(self, group), name) for key, (group, name) in FLAT.items()}


def _flat_names() -> dict[str, tuple[str, str]]:
    renamed = {("prune", "sparsity"): "prune", ("prune", "schedule"): "prune_schedule",
               ("prune", "frequency"): "prune_frequency", ("prune", "channels"): "prune_channels",
               ("prune", "cycles"): "prune_cycles", ("prune", "trunks"): "prune_trunks"}
    out = {}
    for group, cls in (("io", IOOptions), ("prune", PruneOptions), ("gate", GateOptions)):
        for f in fields(cls):
            out[renamed.get((group, f.name), f.name)] = (group, f.name)
    return out


# flat keyword (CLI flag, manifest key) -> (group, field)
FLAT: dict[str, tuple[str, str]] = _flat_names()
