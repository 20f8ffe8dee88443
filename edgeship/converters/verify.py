"""Verify an artifact against its float Keras model on a RepresentativeDataset split.

The artifact runs through edgeship's own runtime backend, exactly as the device runs it (an FP32
OpenVINO artifact is forced to f32: on AMX / avx512_bf16 CPUs OpenVINO would otherwise execute it
in bf16). The report gives top-1 agreement, both accuracies and the drop in points with a 95%
interval (paired normal approximation), per-class deltas, per-output cosine / SQNR / max error,
the precision the backend executed, optional per-layer quantization errors and warnings for the
classic mistakes.

    from edgeship.converters.verify import verify_artifact
    report = verify_artifact("out/model.tflite", "model.keras", "calib.npz", max_drop=1.0)
    report.passed, report.drop, report.reason
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import formats
from ..errors import EdgeshipError, InputError, ModelError, SpecError
from ..fileio import to_jsonable
from ..manifest import Manifest
from ..records import AccuracyRecord
from .. import roles as R
from . import metrics as M

log = logging.getLogger(__name__)

SPLITS = ("holdout", "all", "calib")
COLLAPSE_PCT = 90.0  # a float model that puts this share of samples in one class is suspect


@dataclass
class OutputReport:
    index: int
    shape: list[int]
    cosine: float
    sqnr_db: float
    max_abs_error: float
    role: str | None = None
    rel_max_error: float | None = None  # max |error| / the float output's range
    row_sum: float | None = None  # median row sum of a class-score output (1 when intact)
    collapsed: str | None = None  # why the output collapsed, when it did


@dataclass
class VerificationReport:
    """What :func:`verify_artifact` measured. Percentages and drops are in points (0-100)."""

    artifact: str
    reference: str
    split: str
    samples: int
    format: str | None = None
    precision: str | None = None  # what the manifest says
    backend: str | None = None
    executed_precision: str | None = None  # what the backend actually ran
    labelled: bool = False
    agreement: float | None = None  # top-1 agreement with the float model, every flip counted
    near_ties: int | None = None  # flips between classes the float model scores within tie_margin of each other
    real_agreement: float | None = None  # agreement with near-tie flips forgiven: what the disagreement budget measures
    tie_margin: float | None = None
    reference_accuracy: float | None = None
    accuracy: float | None = None
    drop: float | None = None  # reference - artifact accuracy
    drop_ci: tuple[float, float] | None = None  # 95% interval of the drop
    per_class: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[OutputReport] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    max_drop: float | None = None
    min_sqnr: float | None = None  # dB every output had to reach (None: no SQNR budget)
    worst_sqnr: float | None = None  # the lowest output SQNR measured, dB
    measured: str | None = None  # "detection" (detectors), "drop" (labels) or "disagreement" (no labels)
    detection: dict[str, Any] | None = None  # detectors: ap50 / recall / precision against the float model's boxes
    class_output: int | None = None  # the output classification metrics were measured on (None: none)
    passed: bool | None = None
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def disagreement(self) -> float | None:
        return None if self.agreement is None else 100.0 - self.agreement

    @property
    def measured_value(self) -> float | None:
        return budget_value(self.measured, self.drop, self.real_agreement, self.detection)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["disagreement"] = self.disagreement
        return finite(to_jsonable(d))

    def accuracy_record(self) -> AccuracyRecord:
        """The subset a manifest keeps under ``accuracy``."""
        keys = ("split", "samples", "executed_precision", "agreement", "near_ties", "real_agreement", "tie_margin",
                "reference_accuracy", "accuracy", "drop", "drop_ci", "detection", "max_drop", "min_sqnr", "worst_sqnr",
                "measured", "passed")
        d = {k: getattr(self, k) for k in keys}
        d["disagreement"] = self.disagreement
        d["outputs"] = [asdict(o) for o in self.outputs]
        return AccuracyRecord.from_dict(finite(to_jsonable(d)))


def finite(obj: Any) -> Any:
    """JSON has no inf/NaN: inf SQNR (identical outputs) -> 999.0, NaN -> None."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return 999.0 if obj > 0 else -999.0
        return obj
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj


# ---- running the two models ---------------------------------------------------------------------
def load_dataset(data: Any):
    """A RepresentativeDataset from a path or passed through."""
    from ..calibration import RepresentativeDataset

    if isinstance(data, RepresentativeDataset):
        return data
    if isinstance(data, (str, os.PathLike)):
        return RepresentativeDataset.load(data)
    raise InputError(f"data must be a calibration .npz path or a RepresentativeDataset, got {type(data).__name__}")


def run_artifact(artifact: str | os.PathLike, x: np.ndarray, *, precision: str | None = None) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Outputs of ``artifact`` on ``x`` through the runtime backend, and what ran them."""
    from ..runtime.backends import open_backend

    path = Path(artifact)
    with open_backend(path, precision=precision, batch=None) as backend:  # the whole set in one call
        outs = backend.infer(np.ascontiguousarray(x, dtype=np.float32))
        info = {"backend": backend.name, "executed_precision": backend.executed_precision}
    return outs, info


def reference_outputs(reference: Any, x: np.ndarray, *, data_name: str = "the data") -> list[np.ndarray]:
    """The float Keras model's outputs on ``x`` (model given as a path or an object)."""
    from .keras_io import check_takes, load_keras_model, predict

    model = load_keras_model(reference)
    name = str(reference) if isinstance(reference, (str, os.PathLike)) else f"the reference model {getattr(model, 'name', '')}"
    check_takes(model, x.shape[1:], model_name=name, data_name=data_name)
    return predict(model, x)


# ---- comparing ------------------------------------------------------------------------------------
def align_outputs(ref: Sequence[np.ndarray], art: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The artifact's outputs in the reference's order: by position when the shapes agree, else by shape
    when every shape is unique (a third-party file may list its outputs in another order)."""
    if len(ref) != len(art):
        raise ModelError(f"the artifact has {len(art)} outputs, the reference model {len(ref)}")
    fit = lambda r, a: np.asarray(a).reshape(np.shape(r)) if np.size(a) == np.size(r) else np.asarray(a)  # noqa: E731
    if all(np.shape(fit(r, a)) == np.shape(r) for r, a in zip(ref, art)):
        return [fit(r, a) for r, a in zip(ref, art)]
    shapes = [tuple(np.shape(a)) for a in art]
    if len(set(shapes)) == len(shapes) and sorted(shapes) == sorted(tuple(np.shape(r)) for r in ref):
        return [np.asarray(art[shapes.index(tuple(np.shape(r)))]) for r in ref]
    bad = next(i for i, (r, a) in enumerate(zip(ref, art)) if np.shape(fit(r, a)) != np.shape(r))
    raise ModelError(f"output {bad}: the artifact gives shape {np.shape(art[bad])}, the reference {np.shape(ref[bad])} "
                     "(is --reference the model this artifact was converted from?)")


Detector = Callable[[Sequence[np.ndarray]], list]  # batched outputs -> per image (xyxy, scores, class ids)


def compare(ref: Sequence[np.ndarray], art: Sequence[np.ndarray], *, labels: np.ndarray | None = None,
            class_names: Sequence[str] | None = None, roles: Sequence[str | None] | None = None,
            detector: Detector | None = None, tie_margin: float = M.TIE_MARGIN) -> dict[str, Any]:
    """Every metric of a report from the two models' outputs (pure numpy; the gate calls it per candidate).

    ``roles`` (one per output, see :mod:`edgeship.roles`; guessed from ``ref`` when None) decide which
    output the classification metrics apply to: the one class-score output, or a single 2-D output.
    A model with no such output gets the per-output agreement metrics only. ``detector`` (see
    :func:`detector_for`) decodes both sides' boxes: the artifact's detections are then scored against
    the float model's own (``detection``: AP@0.5, recall, precision), which is what a detector's budget
    measures.
    """
    art = align_outputs(ref, art)
    roles = list(roles) if roles is not None and len(roles) == len(ref) else R.guess_roles(ref)
    outputs = []
    for i, (r, a) in enumerate(zip(ref, art)):
        span = float(np.ptp(np.asarray(r, dtype=np.float64))) if np.size(r) else 0.0
        err = M.max_abs_error(r, a)
        probs = roles[i] == "class_scores" and np.ndim(a) == 2
        outputs.append(OutputReport(i, list(np.shape(r)), M.cosine_similarity(r, a), M.sqnr_db(r, a), err, role=roles[i],
                                    rel_max_error=err / span if span > 0 else None,
                                    row_sum=float(np.median(np.asarray(a, dtype=np.float64).sum(axis=1))) if probs else None,
                                    collapsed=R.collapsed(r, a)))
    cls = R.class_output(roles)
    if cls is None and len(ref) == 1 and M.class_predictions(ref[0]) is not None and roles[0] != "boxes":
        cls = 0  # one 2-D output (logits or scores): a classifier
    out: dict[str, Any] = {"outputs": outputs, "per_class": [], "class_output": cls}
    if detector is not None:
        out["detection"] = M.detection_agreement(detector(ref), detector(art))
    if cls is None:
        return out
    pr, pa = M.class_predictions(ref[cls]), M.class_predictions(art[cls])
    if pr is None:
        return out
    ties = M.near_tie_flips(ref[cls], pr, pa, tie_margin)
    real = (pr != pa) & ~ties
    out.update(ref_pred=pr, art_pred=pa, agreement=M.agreement(pr, pa), near_ties=int(ties.sum()),
               real_agreement=float(100.0 * (1.0 - real.mean())), tie_margin=float(tie_margin), samples=len(pr))
    if labels is None or len(labels) != len(pr):
        return out
    y = np.asarray(labels)
    drop, lo, hi = M.paired_drop_ci(pr == y, pa == y)
    out.update(reference_accuracy=M.accuracy(pr, y), accuracy=M.accuracy(pa, y), drop=drop, drop_ci=(lo, hi))
    n_classes = max(int(np.asarray(ref[cls]).shape[1]), int(y.max()) + 1)
    acc_r, counts = M.per_class_accuracy(pr, y, n_classes)
    acc_a, _ = M.per_class_accuracy(pa, y, n_classes)
    out["per_class"] = [
        {"class": c, "label": class_names[c] if class_names and c < len(class_names) else str(c), "samples": int(counts[c]),
         "reference": float(acc_r[c]), "artifact": float(acc_a[c]), "delta": float(acc_a[c] - acc_r[c])}
        for c in range(n_classes) if counts[c] > 0
    ]
    return out


# what the point budget measures, in order of preference: a detector's boxes, a labelled accuracy drop,
# the top-1 disagreement with the float model
BUDGETS = {
    "detection": "AP@0.5 lost against the float model's own detections",
    "drop": "accuracy drop",
    "disagreement": "top-1 disagreement with the float model",
}


def budget_value(measured: str | None, drop: float | None, agreement: float | None,
                 detection: dict[str, Any] | None) -> float | None:
    """The points a ``measured`` budget counts (see :data:`BUDGETS`)."""
    if measured == "detection" and detection is not None:
        # no box from the float model: nothing to compare (lower --threshold), not a pass
        return 100.0 - float(detection["ap50"]) if detection["reference_boxes"] else None
    if measured == "drop":
        return drop
    if measured == "disagreement" and agreement is not None:
        return 100.0 - agreement
    return None


def budget(cmp: dict[str, Any]) -> tuple[str | None, float | None]:
    """(what the budget measures, its value in points) for a :func:`compare` result."""
    for measured in BUDGETS:
        value = budget_value(measured, cmp.get("drop"), cmp.get("real_agreement"), cmp.get("detection"))
        if value is not None:
            return measured, float(value)
    return None, None


def worst_output(outputs: Sequence[Any]) -> tuple[int, float] | None:
    """(index, SQNR dB) of the output furthest from the float model's (OutputReports or their dicts)."""
    pairs = [(int(_get(o, "index")), float(_get(o, "sqnr_db"))) for o in outputs]
    pairs = [(i, -math.inf if math.isnan(s) else s) for i, s in pairs]  # NaN outputs are the worst, never skipped
    return min(pairs, key=lambda p: p[1]) if pairs else None


def _get(o: Any, key: str) -> Any:
    return o[key] if isinstance(o, dict) else getattr(o, key)


def judge(measured: str | None, value: float | None, max_drop: float | None, *, outputs: Sequence[Any] = (),
          min_sqnr: float | None = None, samples: int | None = None, near_ties: int | None = None,
          tie_margin: float | None = None) -> tuple[bool | None, str | None]:
    """(passed, one-line reason) for a budget of ``max_drop`` points and/or ``min_sqnr`` dB on every output.

    The point budget needs a class-score output or a detector; the SQNR budget applies to every model
    (landmarks, masks, embeddings, regressions). With both, both must hold. Top-1 flips between classes the
    float model scores within ``tie_margin`` of each other (``near_ties``) are not counted and are named; a
    holdout of ``samples`` too small for one flip to fit the budget is said so, with the size that would."""
    checks: list[tuple[bool | None, str]] = []
    note = ""
    if near_ties and measured == "disagreement":
        note += f" ({near_ties} near-tie flip{'s' if near_ties > 1 else ''} not counted: float scores within {tie_margin:g})"
    floor = point_budget(max_drop, measured, samples)
    if max_drop is not None and floor != max_drop:
        note += (f" (one flip is {floor:.2f} points on {samples} samples, more than the {max_drop:g}-point budget can "
                 f"resolve: one flip is tolerated; {M.samples_to_resolve(max_drop)} samples would resolve it)")
    if max_drop is not None:
        if value is None:
            if min_sqnr is None:
                return None, ("no class-score output identified (set one with --output NAME=class_scores, verify a "
                              "detector with --task detect, or budget every output with --min-sqnr): the point budget "
                              "does not apply; see each output's cosine and SQNR")
            note = " (the point budget does not apply: no class-score output identified)"
        else:
            what = BUDGETS[measured]
            ok = value <= floor + 1e-9
            checks.append((ok, f"{what} {value:.2f} points {'is within' if ok else 'exceeds'} the budget of {max_drop:g} points"))
    worst = worst_output(outputs) if min_sqnr is not None else None
    if worst is not None:
        ok = worst[1] >= min_sqnr
        checks.append((ok, f"output {worst[0]} SQNR {worst[1]:.1f} dB is {'at least' if ok else 'below'} the budget of "
                           f"{min_sqnr:g} dB"))
    if not checks:
        return None, None
    failing = [reason for ok, reason in checks if not ok]
    return (False, "; ".join(failing) + note) if failing else (True, "; ".join(reason for _, reason in checks) + note)


def point_budget(max_drop: float | None, measured: str | None, samples: int | None) -> float | None:
    """The point budget a holdout of ``samples`` can apply: ``max_drop``, or one flip's worth of points when one flip
    is more than ``max_drop`` (30 samples cannot tell 1 point from 0; failing on one flip there is noise)."""
    if max_drop is None or not samples or measured not in ("drop", "disagreement"):
        return max_drop
    return max(max_drop, 100.0 / samples)


def excess(value: float | None, max_drop: float | None, outputs: Sequence[Any] = (), min_sqnr: float | None = None,
           *, measured: str | None = None, samples: int | None = None) -> float | None:
    """How far a measurement is over its budgets (<= 0: within them): points above the :func:`point_budget`, dB
    below ``min_sqnr`` (the gate's search only asks "within or not"); None when nothing can be measured."""
    over = []
    if max_drop is not None and value is not None:
        over.append(value - point_budget(max_drop, measured, samples))
    worst = worst_output(outputs) if min_sqnr is not None else None
    if worst is not None:
        over.append(min_sqnr - worst[1])
    return max(over) if over else None


def mistakes(ref_pred: np.ndarray | None, art_pred: np.ndarray | None, labels: np.ndarray | None, x: np.ndarray,
             spec: Any, artifact_spec: Any = None, *, reference_accuracy: float | None = None, n_classes: int | None = None,
             outputs: Sequence[OutputReport] = ()) -> list[str]:
    """The classic mistakes, as warning sentences: a one-class or below-chance float model, a collapsed
    artifact or output, a wrong input range."""
    out = []
    for o in outputs:
        if o.collapsed:
            out.append(f"output {o.index} ({o.role or 'raw'}) collapsed in the artifact: {o.collapsed}")
    if reference_accuracy is not None and n_classes and n_classes >= 2 and reference_accuracy < 100.0 / n_classes:
        out.append(f"the float model scores {reference_accuracy:.1f}% on these labels, below chance ({100.0 / n_classes:.1f}%): "
                   "check the InputSpec (scale, mean/std, colour order) and that the labels are in the model's class order")
    if ref_pred is not None and len(ref_pred):
        cls, pct = M.dominant_class(ref_pred)
        expected = 0.0 if labels is None else float(np.mean(np.asarray(labels) == cls) * 100.0)
        if pct >= COLLAPSE_PCT or (labels is not None and pct - expected > 30.0):
            out.append(f"the float model predicts class {cls} for {pct:.0f}% of the samples"
                       + (f" (the labels have {expected:.0f}%)" if labels is not None else "")
                       + "; check the InputSpec (scale, mean/std, colour order) matches how the model was trained")
        if art_pred is not None:
            acls, apct = M.dominant_class(art_pred)
            share = float(np.mean(ref_pred == acls) * 100.0)
            if apct >= COLLAPSE_PCT and apct - share > 30.0:
                out.append(f"the artifact predicts class {acls} for {apct:.0f}% of the samples (the float model {share:.0f}%): "
                           "quantization collapsed the model")
    if spec is not None:
        why = M.range_mismatch(x, spec.value_range())
        if why:
            out.append(f"calibration data: {why}")
    if artifact_spec is not None and spec is not None and artifact_spec.to_dict() != spec.to_dict():
        out.append(f"the calibration set's InputSpec {spec.to_json()} differs from the artifact's {artifact_spec.to_json()}")
    return out


# ---- the API ----------------------------------------------------------------------------------------
def detector_for(spec: Any, ref: Sequence[np.ndarray], names: Sequence[str] | None = None, **options: Any) -> Detector:
    """Decode batched outputs into per-image detections with the runtime's own post-processing (``options``:
    threshold, iou, anchors, box_format, normalized, as ``edgeship run`` takes them), in model-input pixels."""
    from ..runtime.processing import make_postprocess

    post = make_postprocess("detect", spec=spec, output_shapes=[(1,) + tuple(np.shape(o)[1:]) for o in ref],
                            output_names=list(names) if names else None, **{k: v for k, v in options.items() if v is not None})
    hw = (spec.height, spec.width)

    def decode(outputs: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for i in range(len(outputs[0])):
            det = post([np.asarray(o[i : i + 1]) for o in outputs], hw)["detections"]
            out.append((det.xyxy, det.scores, det.class_ids))
        return out

    return decode


def verify_artifact(artifact: str | os.PathLike, reference: Any, data: Any, *, split: str = "holdout",
                    max_drop: float | None = 1.0, layers: int = 0, precision: str | None = None,
                    task: str | None = None, detect: dict[str, Any] | None = None,
                    min_sqnr: float | None = None, tie_margin: float = M.TIE_MARGIN) -> VerificationReport:
    """Verify ``artifact`` (.tflite / .xml) against ``reference`` (Keras path or model) on ``data``'s ``split``.

    ``max_drop`` is the budget in points: for a detector (``task`` "detect", or the manifest's task) the AP@0.5
    its detections lose against the float model's own on the same images (``detect``: the decoder options
    of ``edgeship run``: threshold, iou, anchors), else the accuracy drop with labels, else the top-1
    disagreement. ``min_sqnr`` (dB) also requires every output's SQNR against the float model to reach it
    (the budget for outputs that are not class scores). Without labels a top-1 flip between two classes the
    float model scores within ``tie_margin`` (probability) of each other is a near-tie: reported, not counted.
    ``layers`` > 0 adds the N layers with the largest quantization error. ``precision``
    overrides the OpenVINO inference precision (default, as on every runtime path: f32 for FP32 artifacts, the device's
    default otherwise).
    """
    t0 = time.perf_counter()
    path = Path(artifact)
    if not path.exists():
        raise ModelError(f"artifact {path} does not exist")
    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if max_drop is not None and (not math.isfinite(max_drop) or max_drop < 0):
        raise InputError(f"max_drop must be a non-negative number of points, got {max_drop}")
    if min_sqnr is not None and not math.isfinite(min_sqnr):
        raise InputError(f"min_sqnr must be a finite number of dB, got {min_sqnr}")
    ds = load_dataset(data)
    x, y = ds.split(split)
    if len(x) == 0:
        raise InputError(f"the {split!r} split of the calibration set is empty; use --split all or a larger --holdout")
    manifest = Manifest.load_optional(path)
    if manifest is not None and manifest.input_spec is not None and tuple(manifest.input_spec.sample_shape) != tuple(ds.spec.sample_shape):
        raise SpecError(f"{path.name} takes samples of shape {manifest.input_spec.sample_shape}, "
                        f"the calibration set has {ds.spec.sample_shape}")
    ref = reference_outputs(reference, x, data_name=str(data) if isinstance(data, (str, os.PathLike)) else "the calibration set")
    art, info = run_artifact(path, x, precision=precision)
    roles = [t.role for t in manifest.outputs] if manifest is not None and manifest.outputs else None
    detector = None
    if (task or (manifest.task if manifest is not None else None)) == "detect":
        names = [t.name for t in manifest.outputs] if manifest is not None and manifest.outputs else None
        try:
            detector = detector_for(manifest.input_spec if manifest is not None and manifest.input_spec else ds.spec, ref,
                                    names, **(detect or {}))
        except EdgeshipError as e:
            if task == "detect":  # asked for on the command line: say why it cannot be done
                raise
            log.warning("%s: the manifest says detect but its boxes cannot be decoded (%s); judging the outputs' agreement",
                        path.name, e)
    cmp = compare(ref, art, labels=y, class_names=ds.labels, roles=roles if roles and any(roles) else None,
                  detector=detector, tie_margin=tie_margin)
    measured, _ = budget(cmp)
    report = VerificationReport(
        artifact=str(path), reference=str(reference) if isinstance(reference, (str, os.PathLike)) else getattr(reference, "name", "model"),
        split=split, samples=len(x), format=manifest.format if manifest else info["backend"],
        precision=manifest.precision if manifest else None, backend=info["backend"],
        executed_precision=info["executed_precision"], labelled=y is not None,
        agreement=cmp.get("agreement"), near_ties=cmp.get("near_ties"), real_agreement=cmp.get("real_agreement"),
        tie_margin=cmp.get("tie_margin"), reference_accuracy=cmp.get("reference_accuracy"), accuracy=cmp.get("accuracy"),
        drop=cmp.get("drop"), drop_ci=cmp.get("drop_ci"), per_class=cmp["per_class"], outputs=cmp["outputs"],
        max_drop=max_drop, measured=measured, class_output=cmp.get("class_output"), detection=cmp.get("detection"),
        min_sqnr=min_sqnr,
    )
    worst = worst_output(cmp["outputs"])
    report.worst_sqnr = worst[1] if worst else None
    report.passed, report.reason = judge(measured, report.measured_value, max_drop, outputs=cmp["outputs"],
                                         min_sqnr=min_sqnr, samples=len(x), near_ties=cmp.get("near_ties"),
                                         tie_margin=cmp.get("tie_margin"))
    cls = cmp.get("class_output")
    report.warnings = mistakes(cmp.get("ref_pred"), cmp.get("art_pred"), y, x, ds.spec,
                               manifest.input_spec if manifest else None, reference_accuracy=cmp.get("reference_accuracy"),
                               n_classes=int(np.shape(ref[cls])[1]) if cls is not None else None, outputs=cmp["outputs"])
    if report.detection is not None and not report.detection["reference_boxes"]:
        report.warnings.append("the float model detects nothing on these images: the detection budget cannot be measured "
                               "(lower --threshold, or verify on images with objects)")
    for w in report.warnings:
        log.warning("%s: %s", path.name, w)
    if layers > 0:
        report.layers = [e.to_dict() for e in layer_errors(path, reference, ds, manifest=manifest)[:layers]]
    report.seconds = time.perf_counter() - t0
    return report


def layer_errors(artifact: Path, reference: Any, ds: Any, *, manifest: Manifest | None = None, limit: int = 100) -> list[Any]:
    """Per-layer quantization errors of an int8 artifact, worst first (empty, with a warning, for float artifacts)."""
    from .builders import builder
    from .keras_io import export_saved_model, load_keras_model

    fs = formats.resolve(artifact, manifest)
    if manifest is not None and not str(manifest.precision).startswith("int8"):
        log.warning("%s is %s: per-layer quantization errors apply to int8 artifacts only", artifact.name, manifest.precision)
        return []
    x = ds.x_calib if len(ds.x_calib) else ds.split("all")[0]
    float_nodes = list(manifest.conversion.accuracy_gate.float_nodes) if manifest else []
    with tempfile.TemporaryDirectory(prefix="edgeship-layers-") as tmp:
        model = load_keras_model(reference)
        saved = export_saved_model(model, Path(tmp) / "saved_model")
        return builder(fs.name).layer_errors(artifact, saved, x, manifest=manifest, float_nodes=float_nodes,
                                             tmp=Path(tmp), limit=limit, model=model)
