"""The accuracy gate's ladder: the artifacts an int8 conversion may end as, and how one is kept.

    int8 -> int8-mixed -> int8-qat -> dynamic -> int16x8 -> fp16 -> fp32

- ``int8``: everything quantized (the fastest on most CPUs);
- ``int8-mixed``: the layers int8 hurts most kept in float (built only when full int8 misses the budget);
- ``int8-qat``: full int8 after quantization-aware fine-tuning (only with ``--qat EPOCHS``,
  :mod:`edgeship.converters.qat`);
- ``dynamic``: int8 weights, float activations (TFLite dynamic range, which XNNPACK runs with its
  qd8 kernels; OpenVINO: int8 weight compression, decompressed at load, so smaller, not faster);
- ``int16x8``: 16-bit activations, 8-bit weights (TFLite only; LiteRT runs it with reference
  kernels, often slower than float: it is timed like the others);
- ``fp16``, ``fp32``: float.

``prefer="quantized"`` keeps the first rung that meets the budget, without building the rest or timing
anything: for a device unlike the machine converting (an arm64 board), where int8 is the point and
this machine's timings say little. Otherwise every rung that meets the budget is timed side by side (alternating rounds, as ``edgeship bench``
compares artifacts) and the fastest is kept (``prefer="size"``: the smallest); when none meets it,
the closest to the budget. Timings within :data:`SPEED_TIE` of the fastest (5%, or 0.01 ms for
models that run in microseconds, where the difference is noise at any frame rate) count as a tie,
and a tie goes to the rung earliest on the ladder: the most quantized, what ``-p int8`` asked for.
The manifest records every rung: its figures, latency, size and why it was kept or not. :func:`pick` is the pure rule; :mod:`edgeship.converters.gate` builds and measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

RUNGS = ("int8", "int8-mixed", "int8-qat", "dynamic", "int16x8", "fp16", "fp32")
BUILT_RUNGS = RUNGS[3:]  # made from the SavedModel as precisions of their own
PREFER = ("speed", "size", "quantized")  # what decides between rungs that all meet the budget; the first is the default
SPEED_TIE = (0.05, 0.01)  # (relative, ms): a rung this close to the fastest is as fast


@dataclass
class Rung:
    """One candidate of the ladder and what was measured of it."""

    name: str
    path: Path | None = None
    measured: str | None = None  # what the point budget measured ("drop", "disagreement", "detection")
    value: float | None = None  # in points
    passed: bool | None = None
    excess: float | None = None  # over the budgets (<= 0 meets them)
    record: dict[str, Any] = field(default_factory=dict)  # the accuracy figures
    latency_ms: float | None = None
    size_bytes: int | None = None
    status: str = ""  # kept, over budget, slower, larger, not available, failed
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        worst = min((o.get("sqnr_db") for o in self.record.get("outputs") or [] if o.get("sqnr_db") is not None),
                    default=None)
        return {"rung": self.name, "status": self.status, "reason": self.reason, "passed": self.passed,
                "measured": self.measured, "value": self.value, "excess": self.excess,
                "agreement": self.record.get("agreement"), "near_ties": self.record.get("near_ties"),
                "accuracy": self.record.get("accuracy"), "drop": self.record.get("drop"), "worst_sqnr_db": worst,
                "latency_ms": self.latency_ms, "size_bytes": self.size_bytes}


def pick(rungs: Sequence[Rung], prefer: str = PREFER[0]) -> Rung:
    """The rung to keep: among those that met the budget the fastest (``prefer="speed"``, within :data:`SPEED_TIE`
    the earliest), the smallest (``"size"``; speed breaks a tie) or the earliest on the ladder (``"quantized"``);
    when none met it, the one closest to the budget (least excess)."""
    if prefer not in PREFER:
        raise ValueError(f"prefer must be one of {', '.join(PREFER)}, got {prefer!r}")
    ok = [r for r in rungs if r.passed and r.path is not None]
    if not ok:
        built = [r for r in rungs if r.path is not None]
        return min(built, key=lambda r: (math.inf if r.excess is None or math.isnan(r.excess) else r.excess, RUNGS.index(r.name)))
    inf = math.inf

    def speed(r: Rung) -> float:
        return inf if r.latency_ms is None else r.latency_ms

    def size(r: Rung) -> float:
        return inf if r.size_bytes is None else r.size_bytes

    if prefer == "quantized":
        return min(ok, key=lambda r: RUNGS.index(r.name))
    if prefer == "size":
        return min(ok, key=lambda r: (size(r), speed(r), RUNGS.index(r.name)))
    fastest = min(speed(r) for r in ok)
    tie = fastest + max(fastest * SPEED_TIE[0], SPEED_TIE[1]) if math.isfinite(fastest) else inf
    return min(ok, key=lambda r: (speed(r) > tie, RUNGS.index(r.name)))


def explain(rungs: Sequence[Rung], kept: Rung, prefer: str) -> None:
    """Each rung's status and reason, next to the one kept (in place)."""
    for r in rungs:
        if r.status in ("not available", "failed"):
            continue
        if r is kept:
            r.status = "kept"
            if not r.passed:
                r.reason = r.reason or "no rung met the budget: the closest to it"
            continue
        if not r.passed:
            r.status = "over budget"
        elif prefer == "quantized":
            r.status, r.reason = "later rung", f"{kept.name} comes first on the ladder and meets the budget"
        elif prefer == "size" and (r.size_bytes or 0) > (kept.size_bytes or 0):
            r.status, r.reason = "larger", f"{r.size_bytes} bytes vs {kept.size_bytes}"
        else:
            r.status = "slower"
            if r.latency_ms is not None and kept.latency_ms is not None:
                tie = " (a tie: the earlier rung is kept)" if r.latency_ms < kept.latency_ms else ""
                r.reason = f"{r.latency_ms:.3f} ms vs {kept.latency_ms:.3f} ms ({kept.name}){tie}"
