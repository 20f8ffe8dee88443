"""``convert()``: one Keras model -> prune (optional) -> SavedModel -> one artifact per format, each with its manifest.

The sequence per call: validate options, load the model and the calibration set, settle the
InputSpec, prune (optional), export a SavedModel, then for every format: convert, read the
tensors back, write the manifest. Everything is produced in a hidden staging folder inside
``out_dir`` and moved into place only when every artifact succeeded, so a failure leaves
nothing behind.
"""

from __future__ import annotations

import math

import contextlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .. import formats as fmts
from ..errors import ConversionError, InputError
from ..fileio import file_size, gzip_size, owned_temp_prefix, replace_files, sha256_file, sweep_stale, to_jsonable
from ..manifest import Manifest, manifest_path, tool_versions
from ..records import ConversionRecord, GateRecord
from ..runtime.processing import TASKS
from ..spec import InputSpec
from . import keras_io
from .inputs import (collapsing_softmax, finetune_data, infer_task, load_calibration, load_source, resolve_labels,
                     resolve_spec)
from .inputs import output_roles as guess_output_roles
from .builders import builder
from .ladder import PREFER
from .openvino import PRESETS
from .options import ConvertOptions, PruneOptions
from .plan import ArtifactPlan
from .prune import SCHEDULES
from .tflite import IO_TYPES

log = logging.getLogger(__name__)

STAGE_PREFIX = ".edgeship-convert-"


@dataclass
class ConvertResult:
    """One artifact and its manifest (already written next to it as NAME.manifest.json)."""

    path: Path
    manifest: Manifest

    @property
    def manifest_path(self) -> Path:
        return manifest_path(self.path)

    @property
    def format(self) -> str:
        return self.manifest.format

    @property
    def precision(self) -> str:
        return self.manifest.precision


@dataclass
class _Context:
    """Everything the per-artifact steps need (built once per convert() call)."""

    model: Any
    source: dict[str, Any]
    spec: InputSpec
    precision: str
    dataset: Any
    saved_model: Path
    name: str
    plan: ArtifactPlan  # how every artifact is built and gated (typed, carried to the builders and the gate)
    record: dict[str, Any]  # every option under its flat name, as the manifest records it
    labels: list[str] | None
    task: str
    roles: list[str] = field(default_factory=list)
    pruning: Any = None
    channel_pruning: Any = None  # a StructuredReport (convert --prune-channels)
    equalized: Any = None  # (SavedModel of the equalized model, Equalization, the model) when int8 may use it
    equalize: str = "off"  # auto | on | off
    stage: Path | None = None
    drift: Any = None  # the calibration's profile.Reference: what each artifact's drift profile is made from
    _qat: Any = None  # the QATResult, once quantization-aware training ran

    def qat(self) -> Any:
        """Quantization-aware training (``plan.qat`` epochs), run once per call from the equalized model when there
        is one (the same function, a better start for int8)."""
        if self._qat is None:
            from .qat import quantization_aware

            start = self.equalized[2] if self.equalized is not None else self.model
            with _timed(self.timings, "qat_s"):
                self._qat = quantization_aware(start, self.dataset, self.plan.qat, io=self.plan.io,
                                               out_io=self.plan.out_io, roles=self.roles or None, workdir=self.stage)
        return self._qat
    timings: dict[str, float] = field(default_factory=dict)


# ---- the public entry point ---------------------------------------------------------------------------
def convert(
    model: Any,
    calib: Any = None,
    *,
    formats: Sequence[str] | str,
    precision: str,
    out_dir: str | os.PathLike,
    name: str | None = None,
    options: ConvertOptions | None = None,
    **flat: Any,
) -> list[ConvertResult]:
    """Convert a Keras model (path or object) to every format in ``formats`` at ``precision``.

    ``calib`` is a RepresentativeDataset or a calib.npz path (required for int8, for distillation, and
    to prove the Keras 3 -> tf_keras bridge when pruning). ``options`` holds the three option groups
    (:mod:`edgeship.converters.options`): ``io`` (InputSpec, labels, task, output roles, tensor types),
    ``prune`` (magnitude pruning for size; channel pruning for speed, with distillation from the unpruned
    model, :mod:`edgeship.converters.structured`) and ``gate`` (the accuracy budget in points, None = off,
    and what stays in float). The same options may be given as flat keywords (``max_drop=0.5``,
    ``prune_channels=0.5``, ``io="float"``; :data:`~edgeship.converters.options.FLAT`), applied on top
    of ``options``. A class-score output that int8 would collapse keeps its softmax in float (TFLite int8:
    int8 in, float scores out). Returns one :class:`ConvertResult` per format; files appear in
    ``out_dir`` only if all succeed.
    """
    opts = (options if options is not None else ConvertOptions()).updated(**flat)
    formats = [formats] if isinstance(formats, str) else list(formats)
    plan, record = _validate(formats, precision, calib, opts)
    io, pr = opts.io, opts.prune
    out_dir = Path(out_dir)
    timings: dict[str, float] = {}
    with _staging(out_dir) as stage:
        with _timed(timings, "load_s"):
            src_model, source = load_source(model)
            dataset = load_calibration(calib)
        spec = resolve_spec(src_model, dataset, io.input_spec, io.input_size, io.spec_overrides)
        label_list = resolve_labels(io.labels, dataset)
        work_model, pruning, structured = src_model, None, None
        if pr.channels:
            from .structured import prune_structured

            with _timed(timings, "prune_channels_s"):
                teacher_roles = guess_output_roles(src_model, dataset, spec, io.output_roles)[0] if pr.distill_epochs else None
                work_model, structured = prune_structured(src_model, channels=float(pr.channels), dataset=dataset,
                                                          input_size=spec.size, distill_epochs=int(pr.distill_epochs),
                                                          roles=teacher_roles, cycles=pr.cycles,
                                                          trunks=pr.trunks)
        if pr.sparsity:
            with _timed(timings, "prune_s"):
                work_model, pruning = _prune(src_model, dataset, spec, pr, label_list, stage)
        with _timed(timings, "export_s"):
            saved = keras_io.export_saved_model(work_model, stage / "saved_model", sample_shape=spec.sample_shape)
        roles, outs = guess_output_roles(work_model, dataset, spec, io.output_roles)
        equalized = None
        if precision == "int8":
            plan = _keep_softmax_float(plan, roles, outs)
            with _timed(timings, "equalize_s"):
                equalized = _equalized(work_model, dataset, spec, opts.gate.equalize, stage)
        ctx = _Context(
            model=work_model, source=source, spec=spec, precision=precision, dataset=dataset, saved_model=saved,
            name=name or _default_name(source, precision, pr.sparsity, pr.channels), plan=plan, record=record,
            labels=label_list,
            task=io.task or infer_task(roles), roles=roles, pruning=pruning, channel_pruning=structured, timings=timings,
            equalized=equalized, equalize=opts.gate.equalize, stage=stage,
        )
        from .profile import reference

        with _timed(timings, "profile_s"):
            ctx.drift = reference(dataset)
        results = [_convert_artifact(ctx, fmt, stage, _artifact_stem(ctx.name, fmt, formats)) for fmt in formats]
        return _publish(results, stage, out_dir)


def _equalized(model: Any, dataset: Any, spec: InputSpec, mode: str, stage: Path) -> tuple[Path, Any, Any] | None:
    """The equalized model's SavedModel, the report (:mod:`edgeship.converters.equalize`) and the model, or None when
    equalization is off, cannot apply to this model, or changes nothing."""
    if mode == "off" or keras_io.model_flavor(model) == "saved_model" or not keras_io.is_graph_model(model):
        return None
    from .equalize import equalize, equalized_pairs

    eq_model, report = equalize(model, dataset.x_calib)
    if not report.applied:
        log.info("equalization: %s", report.reason)
        return None
    log.info("equalization: %d pair(s) rescaled (outputs within %.1e): %s", len(report.pairs),
             report.max_relative_change, "; ".join(equalized_pairs(report)[:4]))
    saved = keras_io.export_saved_model(eq_model, stage / "saved_model_equalized", sample_shape=spec.sample_shape)
    return saved, report, eq_model


def _keep_softmax_float(plan: ArtifactPlan, roles: list[str], outs: list[np.ndarray]) -> ArtifactPlan:
    """A class-score output that int8 would collapse keeps its softmax in float (and a float output)."""
    from .. import roles as R

    hit = collapsing_softmax(roles, outs)
    if not hit:
        return plan
    for i in hit:
        log.warning("output %d (%d class scores) would lose %.0f%% of its probability mass to int8 rounding: in TFLite "
                    "its softmax stays in float (int8 in, float32 scores out); OpenVINO keeps softmax in float "
                    "anyway", i, outs[i].shape[1], 100 * R.int8_lost_mass(outs[i], True))
    return plan.but(denylisted_ops=tuple(dict.fromkeys([*plan.denylisted_ops, "SOFTMAX"])), out_io="float")


# ---- validation ------------------------------------------------------------------------------------------
def _validate(formats: list[str], precision: str, calib: Any, opts: ConvertOptions) -> tuple[ArtifactPlan, dict[str, Any]]:
    """Check every option before any work; return the artifact plan (what the builders and the gate read) and every
    option under its flat name (what the manifest records)."""
    io, pr, gate = opts.io, opts.prune, opts.gate
    fmts.validate_formats(formats, precision)
    if io.io not in IO_TYPES:
        raise InputError(f"io must be one of {', '.join(IO_TYPES)}, got {io.io!r}")
    if gate.preset not in PRESETS:
        raise InputError(f"preset must be one of {', '.join(PRESETS)}, got {gate.preset!r}")
    if gate.prefer not in PREFER:
        raise InputError(f"prefer must be one of {', '.join(PREFER)}, got {gate.prefer!r}")
    if not (isinstance(gate.tie_margin, (int, float)) and 0.0 <= float(gate.tie_margin) < 1.0):
        raise InputError(f"tie_margin must be a probability margin from 0 to 1, got {gate.tie_margin!r}")
    from .equalize import EQUALIZE
    from .biascorr import BIAS_CORRECTION
    from .qat import check_qat_epochs
    from .ranges import RANGES
    from .rounding import WEIGHT_ROUNDING

    for name, value, allowed in (("equalize", gate.equalize, EQUALIZE), ("ranges", gate.ranges, RANGES),
                                 ("bias_correction", gate.bias_correction, BIAS_CORRECTION),
                                 ("weight_rounding", gate.weight_rounding, WEIGHT_ROUNDING)):
        if value not in allowed:
            raise InputError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    from .tflite import check_weight_rounding

    check_weight_rounding(gate.weight_rounding, precision, calib is not None)
    if gate.weight_rounding == "gptq":
        for f in (f for f in formats if not builder(f).rounds_weights):
            log.warning("--weight-rounding gptq does not apply to %s: its int8 weights are rounded to nearest", f)
    if gate.qat and precision != "int8":
        raise InputError(f"--qat trains for int8; the precision is {precision}")
    if precision == "int8" and calib is None:
        raise InputError("int8 needs a calibration set: pass --calib calib.npz (made by `edgeship calibrate`)")
    if pr.sparsity is not None and not 0.0 < float(pr.sparsity) < 1.0:
        raise InputError(f"--prune must be a sparsity between 0 and 1 (0.5 = 50%), got {pr.sparsity}")
    if pr.schedule not in SCHEDULES:
        raise InputError(f"prune schedule must be one of {', '.join(SCHEDULES)}, got {pr.schedule!r}")
    if pr.finetune is not None and not pr.sparsity:
        raise InputError("--finetune only applies when pruning: add --prune SPARSITY")
    if pr.channels is not None or pr.distill_epochs:
        from .structured import check_cycles, check_epochs, check_target  # the prune step's own rules, before any work

        if pr.channels is not None:
            check_cycles(pr.cycles, check_target(pr.channels, None, None), pr.distill_epochs)
        check_epochs(pr.distill_epochs)
    if pr.channels and pr.sparsity:
        raise InputError("--prune-channels and --prune both prune: run `edgeship prune` first, then convert with --prune")
    if pr.cycles != 1 and not pr.channels:
        raise InputError("--prune-cycles only applies with --prune-channels")
    if pr.distill_epochs and not pr.channels:
        raise InputError("--distill only applies with --prune-channels (or use `edgeship prune --distill`)")
    from .channels import TRUNK_MODES

    if pr.trunks not in TRUNK_MODES:
        raise InputError(f"prune trunks must be one of {', '.join(TRUNK_MODES)}, got {pr.trunks!r}")
    if pr.trunks != "auto" and not pr.channels:
        raise InputError("--prune-trunks only applies with --prune-channels")
    if pr.distill_epochs and calib is None:
        raise InputError("--distill trains on the calibration set's images: pass --calib calib.npz")
    if io.task is not None and io.task not in TASKS:
        raise InputError(f"task must be one of {', '.join(TASKS)}, got {io.task!r}")
    if gate.max_drop is not None and not float(gate.max_drop) >= 0:
        raise InputError(f"max_drop must be >= 0 percentage points or None, got {gate.max_drop}")
    if gate.min_sqnr is not None and not math.isfinite(float(gate.min_sqnr)):
        raise InputError(f"min_sqnr must be a finite number of dB or None, got {gate.min_sqnr}")
    if (gate.denylisted_nodes or gate.denylisted_ops) and precision != "int8":
        raise InputError(f"nodes kept in float only apply to int8, not {precision}")
    plan = ArtifactPlan(precision=precision, io=io.io if precision == "int8" else "float",
                        denylisted_nodes=tuple(gate.denylisted_nodes), denylisted_ops=tuple(gate.denylisted_ops),
                        ignored_scope=gate.ignored_scope, preset=gate.preset, dynamic_batch=bool(io.dynamic_batch),
                        max_drop=None if gate.max_drop is None else float(gate.max_drop),
                        min_sqnr=None if gate.min_sqnr is None else float(gate.min_sqnr), prefer=gate.prefer,
                        tie_margin=float(gate.tie_margin), ranges=gate.ranges, bias_correction=gate.bias_correction,
                        weight_rounding=gate.weight_rounding, qat=check_qat_epochs(gate.qat))
    record = {k: v for k, v in opts.flat().items()
              if k not in ("input_spec", "input_size", "spec_overrides", "labels", "task")}  # recorded elsewhere
    record.update(formats=formats, finetune=None if pr.finetune is None else str(pr.finetune), epochs=int(pr.epochs),
                  output_roles=list(io.output_roles))
    return plan, record


# ---- pruning --------------------------------------------------------------------------------------------
def _prune(model: Any, dataset: Any, spec: InputSpec, pr: PruneOptions, labels: list[str] | None,
           stage: Path) -> tuple[Any, Any]:
    from .prune import is_probability_output, prune_model

    finetune = pr.finetune
    calib_x = dataset.split("calib")[0] if dataset is not None else None
    data = None
    from_logits = False
    if finetune is not None:
        data = finetune_data(Path(finetune), spec, labels)
        if calib_x is None:
            calib_x = data[0][:64]
        outs = keras_io.predict(model, calib_x[:4])
        if len(outs) != 1 or outs[0].ndim != 2:
            raise ConversionError("fine-tuning needs a single-output classifier (one (N, classes) output)")
        if int(data[1].max()) >= outs[0].shape[1]:
            raise InputError(f"{finetune} has {int(data[1].max()) + 1} classes, the model outputs {outs[0].shape[1]}")
        from_logits = not is_probability_output(model, calib_x)
    if calib_x is None and keras_io.model_flavor(model) == "keras":
        raise InputError("pruning a Keras 3 model needs --calib (to prove the tf_keras bridge exact) or --finetune DIR")
    if calib_x is None:
        lo, hi = spec.value_range()
        calib_x = np.random.default_rng(0).uniform(lo, hi, (32, *spec.sample_shape)).astype(np.float32)
    return prune_model(model, sparsity=float(pr.sparsity), calib_x=calib_x, workdir=stage,
                       schedule=pr.schedule, finetune=data, epochs=int(pr.epochs),
                       frequency=pr.frequency, from_logits=from_logits)


# ---- per artifact ------------------------------------------------------------------------------------------
def _artifact_stem(name: str, fmt: str, formats: Sequence[str]) -> str:
    """NAME for one format; NAME_FORMAT when several formats share one call (their manifests would collide)."""
    return name if len(formats) == 1 else f"{name}_{fmt}"


def _convert_artifact(ctx: _Context, fmt: str, stage: Path, stem: str) -> ConvertResult:
    fs = fmts.get(fmt)
    artifact = fs.path(stage, stem)
    t0 = time.monotonic()
    notes: dict[str, Any] = {}
    try:
        builder(fmt).build(ctx.saved_model, artifact, ctx.plan, ctx.dataset, notes)
        saved, notes = _with_equalization(ctx, fmt, artifact, stage, notes)
    except ConversionError as e:
        raise _blame(ctx.model, fmt, e) from None
    seconds = time.monotonic() - t0
    from .gate import gate_convert_step, record_gate  # the accuracy gate (max_drop), before the manifest is written

    if ctx.plan.qat and not ctx.plan.gated:  # no budget to choose with: --qat makes the artifact
        builder(fmt).qat(ctx.qat(), artifact, ctx.plan)
    gate = gate_convert_step(ctx, fmt, artifact, saved)
    if ctx._qat is not None:
        notes["qat"] = ctx._qat.to_dict()
    manifest = build_manifest(ctx, fmt, artifact, seconds)
    manifest.conversion.quantization = to_jsonable(notes) if notes else None
    manifest = record_gate(manifest, gate)
    manifest.save(artifact)
    log.info("wrote %s (%s %s, %.1f s)", artifact.name, fmt, ctx.precision, seconds)
    return ConvertResult(artifact, manifest)


def _with_equalization(ctx: _Context, fmt: str, artifact: Path, stage: Path,
                       notes: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Build ``artifact`` from the equalized model too (int8) and keep it when it is closer to the float model on
    the calibration samples (``equalize="auto"``: by :data:`~.ranges.CHOICE_MARGIN_DB` of mean per-sample SQNR) or
    always (``"on"``); returns the SavedModel the artifact was built from and its notes."""
    if ctx.equalized is None:
        return ctx.saved_model, notes
    from .equalize import MAX_SAMPLES
    from .ranges import CHOICE_MARGIN_DB, sample_sqnr
    from .verify import run_artifact

    eq_saved, report, _ = ctx.equalized
    fs = fmts.get(fmt)
    other = fs.path(stage / f".equalized-{fmt}", artifact.stem)
    other.parent.mkdir(parents=True, exist_ok=True)
    eq_notes: dict[str, Any] = {}
    builder(fmt).build(eq_saved, other, ctx.plan, ctx.dataset, eq_notes)
    x = ctx.dataset.x_calib[-2 * MAX_SAMPLES:]  # the end of the calibration set: what the range clipping was not fitted on
    ref = keras_io.predict(ctx.model, x)
    sqnr = {name: sample_sqnr(ref, run_artifact(path, x)[0]) for name, path in (("plain", artifact), ("equalized", other))}
    keep = ctx.equalize == "on" or sqnr["equalized"] >= sqnr["plain"] + CHOICE_MARGIN_DB
    record = {"mode": ctx.equalize, "kept": keep, "pairs": len(report.pairs),
              "max_relative_change": report.max_relative_change,
              "calibration_sqnr_db": {k: round(v, 2) if math.isfinite(v) else None for k, v in sqnr.items()}}
    log.info("%s: equalization %s (calibration samples' output SQNR %.2f dB plain, %.2f dB equalized)", artifact.name,
             "kept" if keep else "not kept", sqnr["plain"], sqnr["equalized"])
    if keep:
        replace_files(zip(fs.files(other), fs.files(artifact)))
        notes = eq_notes
    for f in fs.files(other):
        f.unlink(missing_ok=True)
    return (eq_saved if keep else ctx.saved_model), {**notes, "equalization": record}


def _blame(model: Any, fmt: str, err: ConversionError) -> ConversionError:
    """Name the layer a converter error is about, when the message lets us find it."""
    hit = keras_io.blame_layer(model, str(err))
    if hit is None:
        return err
    return ConversionError(f"{fmt}: layer {hit[0]!r} ({hit[1]}) cannot be converted: {err}")


def build_manifest(ctx: _Context, fmt: str, artifact: Path, seconds: float) -> Manifest:
    fs = fmts.get(fmt)
    files = fs.files(artifact)
    inputs, outputs = fs.read_tensors(artifact)
    if len(outputs) == len(ctx.roles):  # outputs are in the Keras model's order (signature output_0, output_1...)
        for t, role in zip(outputs, ctx.roles):
            t.role = role
    hashes: dict[str, str | None] = {"source_model": ctx.source["sha256"], "artifact": sha256_file(artifact)}
    for extra in files[1:]:
        hashes[f"artifact{extra.suffix}"] = sha256_file(extra)
    hashes["calibration"] = ctx.dataset.sha256 if ctx.dataset is not None else None
    options = {**ctx.record, **ctx.plan.to_dict()}  # the plan as built (a float softmax added, say)
    conversion = ConversionRecord(
        source={k: ctx.source[k] for k in ("path", "name", "flavor")}, options=to_jsonable(options),
        timings={**{k: round(v, 3) for k, v in ctx.timings.items()}, "convert_s": round(seconds, 3)},
        accuracy_gate=GateRecord(max_drop_pp=ctx.plan.max_drop, min_sqnr_db=ctx.plan.min_sqnr),
        channel_pruning=ctx.channel_pruning.to_dict() if ctx.channel_pruning is not None else None)
    from .profile import artifact_profile

    t0 = time.monotonic()
    drift = artifact_profile(artifact, ctx.drift, task=ctx.task, roles=ctx.roles, spec=ctx.spec)
    ctx.timings["profile_s"] = ctx.timings.get("profile_s", 0.0) + time.monotonic() - t0
    return Manifest(
        drift=drift,
        name=artifact.stem, format=fmt, precision=ctx.precision, artifact=artifact.name, input_spec=ctx.spec,
        labels=ctx.labels, task=ctx.task, hashes=hashes, inputs=inputs, outputs=outputs,
        io_dtype={"input": inputs[0].dtype if inputs else None, "output": outputs[0].dtype if outputs else None},
        sparsity=_sparsity_section(ctx.pruning),
        sizes={"raw_bytes": sum(file_size(f) for f in files), "gzip_bytes": sum(gzip_size(f) for f in files)},
        versions=tool_versions(), conversion=conversion,
    )


def _sparsity_section(report: Any) -> dict[str, Any]:
    if report is None:
        return {"target": None, "overall": None, "layers": {}}
    return {
        "target": report.target, "overall": report.overall, "mode": report.mode, "schedule": report.schedule,
        "layers": {k: v["sparsity"] for k, v in report.layers.items()},
        "weights_pruned": int(sum(v["weights"] for v in report.layers.values())),
        "float_model_sizes": report.sizes, "bridge_max_abs_diff": report.bridge_max_abs_diff, "note": report.note,
    }


def _default_name(source: dict[str, Any], precision: str, prune: float | None, channels: float | None = None) -> str:
    base = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(source["name"])) or "model"
    return (f"{base}_{precision}" + (f"_p{round(float(prune) * 100)}" if prune else "")
            + (f"_c{round(float(channels) * 100)}" if channels else ""))


# ---- staging ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    """A hidden folder inside ``out_dir``, removed whatever happens (``out_dir`` too if we created it and it stays empty)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} is a file; expected a folder for the artifacts")
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    sweep_stale(out_dir, STAGE_PREFIX)  # what a killed earlier convert left
    stage = Path(tempfile.mkdtemp(prefix=owned_temp_prefix(STAGE_PREFIX), dir=out_dir))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()


def _publish(results: list[ConvertResult], stage: Path, out_dir: Path) -> list[ConvertResult]:
    """Move every artifact (data files first, manifest last) from the staging folder into ``out_dir``."""
    published = []
    for r in results:
        fs = fmts.get(r.manifest.format)
        for f in reversed(fs.files(r.path)):  # .bin before .xml
            os.replace(f, out_dir / f.name)
        os.replace(manifest_path(r.path), manifest_path(out_dir / r.path.name))
        published.append(ConvertResult(out_dir / r.path.name, r.manifest))
    return published


@contextlib.contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    t0 = time.monotonic()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.monotonic() - t0
