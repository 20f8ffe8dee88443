"""The artifact plan: every option that shapes how one ``convert()`` call builds its artifacts, typed and
frozen, carried unchanged from :func:`~edgeship.converters.convert.convert` down to each format's builder
(:mod:`edgeship.converters.builders`) and the accuracy gate; flattened only when the manifest is written.

A misspelt option is an AttributeError here, never a silent default (which is what a dict read with
``.get(key, default)`` gave). Each default is the one of :mod:`edgeship.converters.options`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .options import GateOptions, IOOptions


@dataclass(frozen=True)
class ArtifactPlan:
    """How every artifact of one call is built and gated."""

    precision: str
    io: str = IOOptions.io  # int8 artifacts' input (and output) tensor type; "float" for float artifacts
    out_io: str | None = None  # the output's type when it differs (float behind a float softmax)
    denylisted_nodes: tuple[str, ...] = ()  # TFLite: kept in float
    denylisted_ops: tuple[str, ...] = ()  # TFLite: op types kept in float
    ignored_scope: Any = None  # OpenVINO: node names, or an nncf.IgnoredScope, kept in float
    preset: str = GateOptions.preset  # NNCF preset
    dynamic_batch: bool = IOOptions.dynamic_batch  # OpenVINO: a dynamic batch dimension
    max_drop: float | None = GateOptions.max_drop  # the accuracy gate's point budget (None: none)
    min_sqnr: float | None = GateOptions.min_sqnr  # the accuracy gate's per-output SQNR budget in dB (None: none)
    prefer: str = GateOptions.prefer  # the ladder: keep the fastest ("speed") or the smallest ("size") rung in budget
    tie_margin: float = GateOptions.tie_margin  # near-tie flips (float scores this close) are not counted
    ranges: str = GateOptions.ranges  # int8 activation range setting (converters.ranges)
    bias_correction: str = GateOptions.bias_correction  # int8: bias correction (converters.biascorr)
    weight_rounding: str = GateOptions.weight_rounding  # int8 weights: GPTQ or nearest (converters.rounding)
    qat: int = GateOptions.qat  # quantization-aware fine-tuning epochs (0: off)

    @property
    def gated(self) -> bool:
        """Whether the accuracy gate runs (int8 with a budget)."""
        return self.precision == "int8" and (self.max_drop is not None or self.min_sqnr is not None)

    def but(self, **changes: Any) -> "ArtifactPlan":
        """A copy with some fields changed (the plan itself never changes)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (an ignored scope by its node names): what the manifest records."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        d = {**d, "denylisted_nodes": list(self.denylisted_nodes), "denylisted_ops": list(self.denylisted_ops),
             "ignored_scope": None if self.ignored_scope is None else list(scope_names(self.ignored_scope))}
        return d


def scope_names(scope: Any) -> tuple[str, ...]:
    """Node names of an ignored scope given as names or as an ``nncf.IgnoredScope`` (names only)."""
    if scope is None:
        return ()
    names = getattr(scope, "names", scope)
    return tuple(str(n) for n in names)
