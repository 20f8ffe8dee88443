"""The accuracy gate: verify an int8 artifact, keep the most damaged tensors in float until it fits a budget.

1. Verify the int8 artifact on the holdout split (through the runtime backend). Within budget: done.
2. Rank the activation tensors by quantization error (:mod:`edgeship.converters.layers`). Keep
   the worst in float and re-verify. The
   earliest severely damaged tensor goes first (damage upstream makes everything downstream look
   bad), the ranking is refreshed after each step, and the number of tensors added doubles each
   step (1, 2, 4...); a passing multi-tensor step is trimmed by bisection.
   Every candidate is a real artifact, measured through the runtime backend: TFLite re-quantizes
   the cached calibration with ``denylisted_nodes`` (the converter's own MLIR quantizer call);
   OpenVINO runs ``nncf.quantize`` on the FP32 model with a ranked ``nncf.IgnoredScope``.
3. The passing candidate replaces the artifact.
4. Only when no mixed model fits, fall back to fp16, and say so.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import formats
from ..errors import EdgeshipError
from .builders import builder
from .plan import ArtifactPlan
from ..records import AccuracyRecord, GateRecord
from .layers import LayerError, prioritise
from .verify import budget, compare, detector_for, excess, finite, judge, run_artifact

log = logging.getLogger(__name__)

MIN_ERROR = 1e-3  # below this a tensor is not worth keeping in float
MAX_STEPS = 12


@dataclass
class GateResult:
    """Outcome of the gate for one artifact (``precision`` is int8, int8-mixed or fp16)."""

    artifact: Path
    precision: str
    budget: float | None  # points (max_drop)
    measured: str | None
    value: float | None  # final drop (labels) or disagreement (no labels), in points
    passed: bool | None
    initial_value: float | None
    accuracy: dict[str, Any] = field(default_factory=dict)
    float_layers: list[dict[str, Any]] = field(default_factory=list)
    float_nodes: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    fallback: str | None = None
    reason: str | None = None
    seconds: float = 0.0
    min_sqnr: float | None = None  # dB every output must reach

    def conversion_record(self) -> dict[str, Any]:
        """What the manifest keeps under ``conversion.accuracy_gate``."""
        d = asdict(self)
        d.pop("artifact")
        d.pop("accuracy")
        d.pop("min_sqnr")  # recorded as min_sqnr_db
        return d


class _Evaluator:
    """Runs candidates through the runtime backend and measures them against cached reference outputs."""

    def __init__(self, ref: list[np.ndarray], x: np.ndarray, y: np.ndarray | None, labels: Sequence[str] | None,
                 roles: Sequence[str] | None = None, detector: Any = None) -> None:
        self.ref, self.x, self.y, self.labels, self.roles, self.detector = ref, x, y, labels, roles, detector

    def measure(self, artifact: Path) -> tuple[str | None, float | None, dict[str, Any]]:
        outs, info = run_artifact(artifact, self.x)
        cmp = compare(self.ref, outs, labels=self.y, class_names=self.labels, roles=self.roles, detector=self.detector)
        measured, value = budget(cmp)
        record = {k: cmp.get(k) for k in ("agreement", "reference_accuracy", "accuracy", "drop", "drop_ci", "detection")}
        record.update(measured=measured, executed_precision=info["executed_precision"], samples=len(self.x),
                      outputs=[asdict(o) for o in cmp["outputs"]])
        return measured, value, finite(record)  # JSON-clean: an identical output's SQNR is inf


def pick(ranking: Sequence[LayerError], k: int) -> list[LayerError]:
    """The next ``k`` tensors to keep in float: severe ones earliest in the graph first, then by error.

    Only tensors read by a compute layer qualify (keeping a model output in float is not a mixed
    int8 model), and only when their error is worth it (>= MIN_ERROR).
    """
    usable = [e for e in ranking if e.consumers and math.isfinite(e.error) and e.error >= MIN_ERROR]
    return prioritise(usable)[:k]


def search(rank: Callable[[list[LayerError]], list[LayerError]], measure: Callable[[list[LayerError]], float | None],
           budget: float, *, max_steps: int = MAX_STEPS) -> tuple[list[LayerError] | None, list[dict[str, Any]]]:
    """Grow the float set until ``measure`` is within ``budget``; (chosen tensors or None, steps)."""
    chosen: list[LayerError] = []
    steps: list[dict[str, Any]] = []
    chunk = 1
    for _ in range(max_steps):
        picks = pick([e for e in rank(chosen) if e.name not in {c.name for c in chosen}], chunk)
        if not picks:
            return None, steps
        candidate = chosen + picks
        value = measure(candidate)
        steps.append({"float": [e.name for e in candidate], "value": value})
        if value is None or value <= budget:
            return _trim(chosen, picks, measure, budget, steps), steps
        chosen, chunk = candidate, chunk * 2
    return None, steps


def _trim(base: list[LayerError], picks: list[LayerError], measure: Callable[[list[LayerError]], float | None],
          budget: float, steps: list[dict[str, Any]]) -> list[LayerError]:
    """Smallest prefix of ``picks`` (on top of ``base``) that still passes, by bisection."""
    lo, hi = 0, len(picks)  # hi passes
    while hi - lo > 1:
        mid = (lo + hi) // 2
        value = measure(base + picks[:mid])
        steps.append({"float": [e.name for e in base + picks[:mid]], "value": value, "trim": True})
        if value is not None and value <= budget:
            hi = mid
        else:
            lo = mid
    return base + picks[:hi]


def _layers_record(chosen: Sequence[LayerError], budgets: str) -> list[dict[str, Any]]:
    return [{"tensor": e.name, "op": e.op, "consumers": e.consumers, "error": e.to_dict()["error"],
             "reason": f"int8 loses {min(e.error, 1.0) * 100:.0f}% of this tensor's per-channel signal; "
                       f"kept in float to bring the {budgets}"} for e in chosen]


def _budgets_text(max_drop: float | None, min_sqnr: float | None) -> str:
    parts = ([f"drop within {max_drop:g} points"] if max_drop is not None else []) + \
            ([f"outputs' SQNR to {min_sqnr:g} dB"] if min_sqnr is not None else [])
    return " and ".join(parts)


# ---- the API ------------------------------------------------------------------------------------------
def accuracy_gate(artifact: str | Path, *, fmt: str, model: Any, saved_model_dir: str | Path, dataset: Any,
                  plan: ArtifactPlan, roles: Sequence[str] | None = None, task: str | None = None) -> GateResult:
    """Make the int8 ``artifact`` (rewritten in place when needed) fit the plan's ``max_drop`` points and/or
    ``min_sqnr`` dB (every output's SQNR against the float model) on the holdout split.

    ``model`` is the float Keras model (object or path), ``saved_model_dir`` its SavedModel export
    (what the artifact was converted from), ``dataset`` the RepresentativeDataset it was calibrated on.
    A ``task`` "detect" model is budgeted on the AP@0.5 its detections lose against the float model's own.
    What the plan keeps in float (TFLite denylists, an OpenVINO ignored scope) stays in float in every
    candidate. Every candidate is measured through the runtime backend; the one kept is the one measured.
    """
    from .keras_io import load_keras_model, predict

    t0 = time.perf_counter()
    artifact = Path(artifact)
    fs = formats.get(fmt)
    x, y = dataset.split("holdout")
    if len(x) == 0:
        log.warning("the calibration set has no holdout samples; the accuracy gate verifies on the calibration samples")
        x, y = dataset.split("calib")
    ref = predict(load_keras_model(model), x)
    ev = _Evaluator(ref, x, y, dataset.labels, roles, _detector(task, dataset.spec, ref))
    max_drop, min_sqnr = plan.max_drop, plan.min_sqnr

    def verdict(measured: str | None, value: float | None, record: dict[str, Any]) -> tuple[bool | None, str | None]:
        return judge(measured, value, max_drop, outputs=record["outputs"], min_sqnr=min_sqnr)

    def over(m: tuple[str | None, float | None, dict[str, Any]]) -> float | None:
        return excess(m[1], max_drop, m[2]["outputs"], min_sqnr)

    measured, value, record = ev.measure(artifact)
    result = GateResult(artifact, "int8", max_drop, measured, value, None, value, accuracy=record, min_sqnr=min_sqnr)
    result.passed, result.reason = verdict(measured, value, record)
    if result.passed is not False:
        log.info("%s: %s", artifact.name, result.reason)
        return _finish(result, t0)
    log.warning("%s: %s; keeping the most damaged layers in float", artifact.name, result.reason)
    with tempfile.TemporaryDirectory(prefix="edgeship-gate-") as tmpdir:
        tmp = Path(tmpdir)
        impl = builder(fmt).candidates(Path(saved_model_dir), dataset, artifact, tmp, plan)
        built: dict[tuple[str, ...], tuple[Path, tuple[str | None, float | None, dict[str, Any]]]] = {}

        def candidate(chosen: list[LayerError]) -> tuple[Path, tuple[str | None, float | None, dict[str, Any]]]:
            key = tuple(sorted(e.name for e in chosen))
            if key not in built:
                path = impl.build(chosen)
                built[key] = (path, ev.measure(path))
            return built[key]

        chosen, steps = search(impl.rank, lambda c: over(candidate(c)[1]), 0.0)  # within every budget: excess <= 0
        # each step's value is its excess over the budgets (points over max_drop, dB under min_sqnr; <= 0 passes)
        result.steps = finite([{"float": s["float"], "excess": s["value"], **({"trim": True} if s.get("trim") else {})}
                               for s in steps])
        if chosen:
            path, (measured, value, record) = candidate(chosen)
            _replace(fs, path, artifact)
            result.precision, result.accuracy = "int8-mixed", record
            result.float_nodes = impl.float_nodes(chosen)
            result.float_layers = _layers_record(chosen, _budgets_text(max_drop, min_sqnr))
            result.value = value
            result.passed, result.reason = verdict(measured, value, record)
            log.warning("%s: %d tensor(s) kept in float; %s", artifact.name, len(chosen), result.reason)
            return _finish(result, t0)
        path = impl.fp16(tmp / artifact.name)
        measured, value, record = ev.measure(path)
        _replace(fs, path, artifact)
        result.precision, result.fallback, result.accuracy, result.value = "fp16", "fp16", record, value
        result.passed, why = verdict(measured, value, record)
        result.reason = f"no mixed int8/float model brings the {_budgets_text(max_drop, min_sqnr)}; fell back to fp16 ({why})"
        log.warning("%s: %s", artifact.name, result.reason)
        return _finish(result, t0)


def _detector(task: str | None, spec: Any, ref: list[np.ndarray]) -> Any:
    if task != "detect":
        return None
    try:
        return detector_for(spec, ref)
    except EdgeshipError as e:  # e.g. an anchor-based head without its layout: the agreement metrics still gate
        log.warning("the accuracy gate cannot decode this detector's boxes (%s); it gates on output agreement", e)
        return None


def gate_convert_step(ctx: Any, fmt: str, artifact: Path) -> GateResult | None:
    """The gate as a step of :func:`edgeship.converters.convert`: int8 artifacts with a budget only."""
    if not ctx.plan.gated:
        return None
    return accuracy_gate(artifact, fmt=fmt, model=ctx.model, saved_model_dir=ctx.saved_model, dataset=ctx.dataset,
                         plan=ctx.plan, roles=getattr(ctx, "roles", None) or None, task=getattr(ctx, "task", None))


def record_gate(manifest: Any, result: GateResult | None) -> Any:
    """Write the gate's outcome into a manifest: precision, ``accuracy`` and ``conversion.accuracy_gate``."""
    if result is None:
        return manifest
    manifest.precision = result.precision
    manifest.accuracy = AccuracyRecord.from_dict(result.accuracy)
    status = "passed" if result.passed else ("failed" if result.passed is False else "not applicable")
    manifest.conversion.accuracy_gate = GateRecord.from_dict({"max_drop_pp": result.budget, "min_sqnr_db": result.min_sqnr,
                                                              "status": status, **result.conversion_record()})
    manifest.conversion.timings["gate_s"] = round(result.seconds, 3)
    return manifest


def _replace(fs: formats.Format, src: Path, dst: Path) -> None:
    """Move a built artifact (companion files first) over ``dst`` atomically, file by file."""
    import os
    import shutil

    for s, d in reversed(list(zip(fs.files(src), fs.files(dst)))):
        tmp = d.with_name(f".{d.name}.gate.tmp")
        shutil.copyfile(s, tmp)
        os.replace(tmp, d)


def _finish(result: GateResult, t0: float) -> GateResult:
    result.seconds = time.perf_counter() - t0
    from .verify import worst_output

    worst = worst_output(result.accuracy.get("outputs") or [])
    result.accuracy.update(finite({"budget": result.budget, "passed": result.passed, "initial": result.initial_value,
                                   "min_sqnr": result.min_sqnr, "worst_sqnr": worst[1] if worst else None}))
    return result
