"""The accuracy gate: verify an int8 artifact against the float model; keep the fastest rung within a budget.

1. Verify the int8 artifact on the holdout split (through the runtime backend).
2. When it misses the budget, rank the activation tensors by quantization error
   (:mod:`edgeship.converters.layers`) and keep the worst in float, re-verifying (the ``int8-mixed``
   rung). The earliest severely damaged tensor goes first (damage upstream makes everything
   downstream look bad), the ranking is refreshed after each step, and the number of tensors added
   doubles each step (1, 2, 4...); a passing multi-tensor step is trimmed by bisection. Every
   candidate is a real artifact: TFLite re-quantizes the cached calibration with
   ``denylisted_nodes``; OpenVINO runs ``nncf.quantize`` with a ranked ``nncf.IgnoredScope``.
3. Build the rest of the ladder (:mod:`edgeship.converters.ladder`: dynamic range, int16x8, fp16,
   fp32) and verify each the same way.
4. Time every rung that meets the budget side by side and keep the fastest (or the smallest); the
   manifest records every rung, kept or not, and why.
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
from ..fileio import replace_files
from ..errors import EdgeshipError
from .builders import builder
from .ladder import BUILT_RUNGS, Rung, explain
from .ladder import pick as pick_rung
from .plan import ArtifactPlan
from ..records import AccuracyRecord, GateRecord
from .layers import LayerError, prioritise
from .metrics import TIE_MARGIN
from .verify import budget, compare, detector_for, excess, finite, judge, run_artifact

log = logging.getLogger(__name__)

MIN_ERROR = 1e-3  # below this a tensor is not worth keeping in float
MAX_STEPS = 12
GATE_ROUNDS, GATE_SECONDS = 3, 0.3  # the ladder's timing: alternating rounds of this many seconds per rung


@dataclass
class GateResult:
    """Outcome of the gate for one artifact (``precision``: the rung kept, see :mod:`.ladder`)."""

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
    ladder: list[dict[str, Any]] = field(default_factory=list)  # every rung tried: figures, latency, size, status
    prefer: str = "speed"

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
                 roles: Sequence[str] | None = None, detector: Any = None, tie_margin: float = TIE_MARGIN) -> None:
        self.ref, self.x, self.y, self.labels, self.roles, self.detector = ref, x, y, labels, roles, detector
        self.tie_margin = tie_margin

    def measure(self, artifact: Path) -> tuple[str | None, float | None, dict[str, Any]]:
        outs, info = run_artifact(artifact, self.x)
        cmp = compare(self.ref, outs, labels=self.y, class_names=self.labels, roles=self.roles, detector=self.detector,
                      tie_margin=self.tie_margin)
        measured, value = budget(cmp)
        record = {k: cmp.get(k) for k in ("agreement", "near_ties", "real_agreement", "tie_margin", "reference_accuracy",
                                          "accuracy", "drop", "drop_ci", "detection")}
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
                  plan: ArtifactPlan, roles: Sequence[str] | None = None, task: str | None = None,
                  qat: Callable[[], Any] | None = None, float_saved_model: str | Path | None = None) -> GateResult:
    """Make the int8 ``artifact`` (rewritten in place when needed) fit the plan's ``max_drop`` points and/or
    ``min_sqnr`` dB (every output's SQNR against the float model) on the holdout split.

    ``model`` is the float Keras model (object or path), ``saved_model_dir`` its SavedModel export
    (what the artifact was converted from), ``dataset`` the RepresentativeDataset it was calibrated on.
    A ``task`` "detect" model is budgeted on the AP@0.5 its detections lose against the float model's own.
    ``qat()`` runs quantization-aware training (once, cached) for the int8-qat rung when the plan asks for it.
    ``float_saved_model`` (default ``saved_model_dir``) is what the rungs with float activations are built from:
    the model as given, not its equalized twin (equalization helps int8 activations, and only costs int8 weights).
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
    ev = _Evaluator(ref, x, y, dataset.labels, roles, _detector(task, dataset.spec, ref), plan.tie_margin)
    max_drop, min_sqnr = plan.max_drop, plan.min_sqnr

    def verdict(measured: str | None, value: float | None, record: dict[str, Any]) -> tuple[bool | None, str | None]:
        return judge(measured, value, max_drop, outputs=record["outputs"], min_sqnr=min_sqnr, samples=record.get("samples"),
                     near_ties=record.get("near_ties"), tie_margin=record.get("tie_margin"))

    def over(m: tuple[str | None, float | None, dict[str, Any]]) -> float | None:
        return excess(m[1], max_drop, m[2]["outputs"], min_sqnr, measured=m[0], samples=m[2].get("samples"))

    measured, value, record = ev.measure(artifact)
    result = GateResult(artifact, "int8", max_drop, measured, value, None, value, accuracy=record, min_sqnr=min_sqnr,
                        prefer=plan.prefer)
    result.passed, result.reason = verdict(measured, value, record)
    if result.passed is None:  # no budget applies to this model's outputs
        log.info("%s: %s", artifact.name, result.reason)
        return _finish(result, t0)
    rungs = [Rung("int8", artifact, measured, value, result.passed, over((measured, value, record)), record,
                  reason="" if result.passed else result.reason)]
    with tempfile.TemporaryDirectory(prefix="edgeship-gate-") as tmpdir:
        tmp = Path(tmpdir)
        later: list[Callable[[], Rung]] = []
        if not result.passed:
            log.warning("%s: %s; keeping the most damaged layers in float", artifact.name, result.reason)
            later.append(lambda: _mixed(result, fmt, saved_model_dir, dataset, artifact, tmp, plan, ev, verdict, over))
        later.append(lambda: _qat_rung(fs, qat, tmp, plan, ev, verdict, over))
        plain = float_saved_model or saved_model_dir
        later += [lambda name=name: _rung(name, fs, plain, dataset, tmp, plan, ev, verdict, over) for name in BUILT_RUNGS]
        for make in later:
            if plan.prefer == "quantized" and any(r.passed for r in rungs):
                break  # the first rung that meets the budget is the one kept
            rungs.append(make())
        _time(rungs, fs, timed=plan.prefer != "quantized")
        kept = pick_rung(rungs, plan.prefer)
        explain(rungs, kept, plan.prefer)
        if kept.path != artifact:
            replace_files(zip(fs.files(kept.path), fs.files(artifact)))
    result.ladder = finite([r.to_dict() for r in rungs])
    result.precision, result.accuracy, result.value = kept.name, kept.record, kept.value
    result.passed, why = verdict(kept.measured, kept.value, kept.record)
    if kept.name not in ("int8", "int8-mixed", "int8-qat"):
        result.fallback = kept.name
    if kept.name == "int8":
        result.reason = why
    elif kept.name == "int8-qat":
        result.reason = f"full int8 after {plan.qat} epochs of quantization-aware training: {why}"
    elif kept.name == "int8-mixed":
        result.reason = why
        log.warning("%s: %d tensor(s) kept in float; %s", artifact.name, len(result.float_nodes), why)
    else:
        faster = {"size": "smallest", "quantized": "first"}.get(plan.prefer, "fastest")
        head = (f"the {faster} artifact that meets the {_budgets_text(max_drop, min_sqnr)} is {kept.name}"
                if result.passed else f"no rung meets the {_budgets_text(max_drop, min_sqnr)}; kept {kept.name}, the closest")
        result.reason = f"{head} ({why})"
        log.warning("%s: %s", artifact.name, result.reason)
    if kept.name != "int8-mixed":
        result.float_nodes, result.float_layers = [], []
    return _finish(result, t0)


def _mixed(result: GateResult, fmt: str, saved_model_dir: Any, dataset: Any, artifact: Path, tmp: Path, plan: ArtifactPlan,
           ev: "_Evaluator", verdict: Callable, over: Callable) -> Rung:
    """The int8-mixed rung: grow the set of tensors kept in float until the budgets hold (or give up)."""
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
    if not chosen:
        return Rung("int8-mixed", status="over budget",
                    reason=f"no set of float layers brings the {_budgets_text(plan.max_drop, plan.min_sqnr)}")
    path, (measured, value, record) = candidate(chosen)
    result.float_nodes = impl.float_nodes(chosen)
    result.float_layers = _layers_record(chosen, _budgets_text(plan.max_drop, plan.min_sqnr))
    passed, why = verdict(measured, value, record)
    return Rung("int8-mixed", path, measured, value, passed, over((measured, value, record)), record,
                reason=f"{len(chosen)} tensor(s) in float ({impl.settings})" + ("" if passed else f"; {why}"))


def _qat_rung(fs: Any, qat: Callable[[], Any] | None, tmp: Path, plan: ArtifactPlan, ev: "_Evaluator",
              verdict: Callable, over: Callable) -> Rung:
    """The int8-qat rung: full int8 after quantization-aware fine-tuning (``qat()`` runs it once, cached)."""
    if not plan.qat or qat is None:
        return Rung("int8-qat", status="not asked", reason="quantization-aware training runs with --qat EPOCHS")
    path = fs.path(tmp / "int8-qat", fs.path(tmp, "x").stem)
    try:
        builder(fs.name).qat(qat(), path, plan)
    except (EdgeshipError, RuntimeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        log.warning("gate: the int8-qat rung could not be built: %s", first)
        return Rung("int8-qat", status="failed", reason=first)
    measured, value, record = ev.measure(path)
    passed, why = verdict(measured, value, record)
    return Rung("int8-qat", path, measured, value, passed, over((measured, value, record)), record,
                reason=f"{plan.qat} epochs" + ("" if passed else f"; {why}"))


def _rung(name: str, fs: Any, saved_model_dir: Any, dataset: Any, tmp: Path, plan: ArtifactPlan, ev: "_Evaluator",
          verdict: Callable, over: Callable) -> Rung:
    """A rung built from the SavedModel at its own precision, and measured."""
    if name not in fs.precisions:
        return Rung(name, status="not available", reason=f"{fs.title} has no {name} artifacts")
    if (plan.denylisted_nodes or plan.denylisted_ops) and name in ("dynamic", "int16x8"):
        return Rung(name, status="not available", reason="the nodes denylisted for int8 would be quantized in this rung")
    path = fs.path(tmp / name, fs.path(tmp, "x").stem)
    # float I/O; an OpenVINO ignored scope carries over (weight compression skips it too)
    float_io = plan.but(precision=name, io="float", out_io=None, denylisted_nodes=(), denylisted_ops=())
    try:
        builder(fs.name).build(Path(saved_model_dir), path, float_io, dataset)
    except (EdgeshipError, RuntimeError, ValueError) as e:  # a rung a model cannot take (an op without int16x8 kernels)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        log.info("gate: %s rung could not be built: %s", name, first)
        return Rung(name, status="failed", reason=first)
    measured, value, record = ev.measure(path)
    passed, why = verdict(measured, value, record)
    return Rung(name, path, measured, value, passed, over((measured, value, record)), record, reason="" if passed else why)


def _time(rungs: list[Rung], fs: Any, *, timed: bool = True) -> None:
    """Size of every rung built, and latency (alternating rounds, as ``edgeship bench`` compares) of every rung
    that met the budget (when ``timed``)."""
    from ..fileio import file_size
    from ..runtime.bench import compare_latency

    ok = [r for r in rungs if r.passed and r.path is not None]
    for r in rungs:
        if r.path is not None:
            r.size_bytes = sum(file_size(f) for f in fs.files(r.path))
    if len(ok) < 2 or not timed:
        return
    for r, ms in zip(ok, compare_latency([r.path for r in ok], rounds=GATE_ROUNDS, seconds=GATE_SECONDS)):
        r.latency_ms = round(ms, 4)


def _detector(task: str | None, spec: Any, ref: list[np.ndarray]) -> Any:
    if task != "detect":
        return None
    try:
        return detector_for(spec, ref)
    except EdgeshipError as e:  # e.g. an anchor-based head without its layout: the agreement metrics still gate
        log.warning("the accuracy gate cannot decode this detector's boxes (%s); it gates on output agreement", e)
        return None


def gate_convert_step(ctx: Any, fmt: str, artifact: Path, saved_model: Path | None = None) -> GateResult | None:
    """The gate as a step of :func:`edgeship.converters.convert`: int8 artifacts with a budget only (``saved_model``:
    the one the artifact was built from, the equalized model's when that was kept)."""
    if not ctx.plan.gated:
        return None
    return accuracy_gate(artifact, fmt=fmt, model=ctx.model, saved_model_dir=saved_model or ctx.saved_model, dataset=ctx.dataset,
                         plan=ctx.plan, roles=getattr(ctx, "roles", None) or None, task=getattr(ctx, "task", None),
                         qat=getattr(ctx, "qat", None), float_saved_model=ctx.saved_model)


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


def _finish(result: GateResult, t0: float) -> GateResult:
    result.seconds = time.perf_counter() - t0
    from .verify import worst_output

    worst = worst_output(result.accuracy.get("outputs") or [])
    result.accuracy.update(finite({"budget": result.budget, "passed": result.passed, "initial": result.initial_value,
                                   "min_sqnr": result.min_sqnr, "worst_sqnr": worst[1] if worst else None}))
    return result
