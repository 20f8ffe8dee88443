"""The public records of channel pruning: a dependency group, a plan, a report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ...errors import InputError


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
