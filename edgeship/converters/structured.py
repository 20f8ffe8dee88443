"""Structured pruning as a step: cut channels, distil the accuracy back, measure the speed-up where it runs.

``edgeship prune`` and ``convert --prune-channels`` call :func:`prune_structured`. The target is one of

* ``channels=R``: remove the fraction R of every prunable group's channels (:func:`channels.plan`);
* ``flops=R``: remove about the fraction R of the model's FLOPs (:func:`channels.plan_for_flops`);
* ``speedup=X``: prune in steps (:data:`SPEEDUP_STEPS`, fractions of FLOPs removed), convert each step
  to the format and precision it will be deployed in (int8 by default, through :func:`convert`) and
  time it against the unpruned artifact side by side (:func:`edgeship.runtime.bench.compare_latency`),
  until the measured speed-up reaches X.

Then, with ``distill_epochs`` > 0, the pruned model is trained to reproduce the unpruned one on the
calibration set's images (:mod:`edgeship.converters.distill`; its labels mixed in when it has them).

When one cut costs too much, ``cycles=N`` (channels or FLOPs targets) reaches the target in N equal
cuts (equal fractions of what is left) and distils from the unpruned model after every cut, so each
cut starts from a model that has recovered from the previous one.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


from ..errors import InputError
from . import channels as C
from .keras_io import check_takes, load_keras_model

log = logging.getLogger(__name__)

SPEEDUP_STEPS = (0.25, 0.4, 0.5, 0.6, 0.7, 0.8)  # fractions of the FLOPs removed, tried in turn by speedup=X
MAX_SPEEDUP = 20.0  # the largest --speedup target
MAX_CYCLES = 10
MAX_DISTILL_EPOCHS = 1000  # distillation epochs asked for in one call
LATENCY_ROUNDS = 5
LATENCY_SECONDS = 0.4


@dataclass
class SpeedStep:
    """One step of a speed-up search: what was removed and what it measured."""

    flops_removed: float  # the step's target fraction
    flops: int | None
    params: int
    base_ms: float
    pruned_ms: float

    @property
    def speedup(self) -> float:
        return self.base_ms / self.pruned_ms if self.pruned_ms > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "speedup": round(self.speedup, 3)}


@dataclass
class StructuredReport:
    """What ``edgeship prune`` did: the target, the channels removed, the speed measured, the distillation."""

    target: dict[str, float]
    channels: dict[str, Any]  # a ChannelReport
    latency: dict[str, Any] | None = None  # the step kept: {"format", "precision", "base_ms", "pruned_ms", "speedup"}
    steps: list[dict[str, Any]] = field(default_factory=list)  # speed-up search
    distillation: dict[str, Any] | None = None  # a DistillReport (after the last cut)
    cycles: list[dict[str, Any]] = field(default_factory=list)  # cycles > 1: per cut, params/FLOPs and its distillation
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_target(channels: float | None, flops: float | None, speedup: float | None) -> dict[str, float]:
    """Exactly one of the three targets, in range; returned as {name: value}."""
    given = {k: v for k, v in (("channels", channels), ("flops", flops), ("speedup", speedup)) if v is not None}
    if len(given) != 1:
        raise InputError(f"give exactly one pruning target (--channels R, --flops R or --speedup X), got {sorted(given) or 'none'}")
    (name, value), = given.items()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    if name == "speedup" and not 1.0 < value <= MAX_SPEEDUP:
        raise InputError(f"speedup must be above 1 and at most {MAX_SPEEDUP:g}, got {value:g}")
    if name != "speedup" and not 0.0 < value < 1.0:
        raise InputError(f"{name} must be a fraction between 0 and 1 (exclusive), got {value:g}")
    return {name: float(value)}


def check_cycles(cycles: Any, target: dict[str, float], distill_epochs: int) -> int:
    """Prune-distil cycles: 1 (one cut) up to MAX_CYCLES, for channels/FLOPs targets, with distillation."""
    if isinstance(cycles, bool) or not isinstance(cycles, int) or not 1 <= cycles <= MAX_CYCLES:
        raise InputError(f"cycles must be an integer from 1 to {MAX_CYCLES}, got {cycles!r}")
    if cycles > 1 and "speedup" in target:
        raise InputError("cycles apply to --channels or --flops; --speedup already prunes in measured steps")
    if cycles > 1 and not distill_epochs:
        raise InputError("cycles distil between cuts: add --distill EPOCHS")
    return cycles


def cycle_fractions(total: float, cycles: int) -> list[float]:
    """The cumulative fraction removed after each of ``cycles`` equal cuts (each the same share of what is left)."""
    return [1.0 - (1.0 - total) ** ((c + 1) / cycles) for c in range(cycles)]


def check_epochs(epochs: Any) -> int:
    """Distillation epochs: a non-negative integer (0 = no distillation)."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or not 0 <= epochs <= MAX_DISTILL_EPOCHS:
        raise InputError(f"distillation epochs must be an integer from 0 to {MAX_DISTILL_EPOCHS}, got {epochs!r}")
    return epochs


def prune_structured(model: Any, *, channels: float | None = None, flops: float | None = None, speedup: float | None = None,
                     criterion: str = C.DEFAULT_CRITERION, round_to: int = C.ROUND_TO, min_channels: int = C.MIN_CHANNELS,
                     dataset: Any = None,
                     input_size: tuple[int, int] | None = None, distill_epochs: int = 0, distill_labels: bool = True,
                     fmt: str = "tflite", precision: str = "int8", threads: int | None = None,
                     rounds: int = LATENCY_ROUNDS, seconds: float = LATENCY_SECONDS,
                     roles: list[str] | None = None, cycles: int = 1, trunks: str = C.DEFAULT_TRUNKS) -> tuple[Any, StructuredReport]:
    """Prune ``model`` (Keras 3, path or object) to one target; returns (pruned model, report). See the module doc."""
    t0 = time.perf_counter()
    target = check_target(channels, flops, speedup)
    check_epochs(distill_epochs)
    check_cycles(cycles, target, distill_epochs)
    if trunks not in C.TRUNK_MODES:
        raise InputError(f"trunks must be one of {', '.join(C.TRUNK_MODES)}, got {trunks!r}")
    teacher = load_keras_model(model)
    if dataset is not None:
        check_takes(teacher, dataset.spec.sample_shape, model_name=str(model) if isinstance(model, (str, os.PathLike)) else
                    "the model", data_name="the calibration set")
    trunks = C.resolve_trunks(teacher, trunks)  # decided once, on the unpruned model (cycles and steps agree)
    x = None if dataset is None else dataset.split("calib")[0]
    if (criterion == "activation" or distill_epochs) and dataset is None:
        raise InputError("the activation criterion and distillation need a calibration set (--calib calib.npz)")
    common = dict(criterion=criterion, round_to=round_to, min_channels=min_channels,
                  x=x if criterion == "activation" else None, input_size=input_size, trunks=trunks)
    steps: list[SpeedStep] = []
    latency = None
    if "speedup" in target:
        pruned, report, steps, kept = _search_speedup(teacher, target["speedup"], common, dataset, fmt, precision,
                                                      threads, rounds, seconds)
        best = steps[kept]
        latency = {"format": fmt, "precision": precision, "base_ms": best.base_ms, "pruned_ms": best.pruned_ms,
                   "speedup": round(best.speedup, 3)}
    recover = _distiller(teacher, dataset, distill_epochs, distill_labels, roles) if distill_epochs else None
    history: list[dict[str, Any]] = []
    if cycles > 1:
        pruned, report, history = _prune_in_cycles(teacher, target, cycles, common, recover)
    elif "speedup" not in target:
        pruned, report = C.prune_channels(teacher, ratio=target.get("channels"), flops=target.get("flops"), **common)
    out = StructuredReport(target=target, channels=report.to_dict(), latency=latency, steps=[s.to_dict() for s in steps],
                           cycles=history)
    if recover is not None:
        pruned, out.distillation = recover(pruned)
    out.seconds = time.perf_counter() - t0
    return pruned, out


def _distiller(teacher: Any, dataset: Any, epochs: int, use_labels: bool, roles: list[str] | None) -> Any:
    """``recover(model) -> (distilled model, DistillReport dict)``: distil from the unpruned ``teacher`` on the calibration set."""
    from .distill import distill

    x_calib, y_calib = dataset.split("calib")
    x_val, _ = dataset.split("holdout")
    use_y = y_calib if use_labels and y_calib is not None else None

    def recover(student: Any) -> tuple[Any, dict[str, Any]]:
        report = distill(student, teacher, x_calib, y=use_y, x_val=x_val if len(x_val) else None, epochs=epochs,
                         roles=roles, data="calibration set").to_dict()
        return uncompiled(student), report

    return recover


def _prune_in_cycles(teacher: Any, target: dict[str, float], cycles: int, common: dict[str, Any],
                     recover: Any) -> tuple[Any, Any, list[dict[str, Any]]]:
    """Reach ``target`` in ``cycles`` cuts, distilling after each but the last (the caller distils that one).

    Returns the model, one ChannelReport spanning every cut (channels before the first, after the last),
    and per cut: params, FLOPs and the distillation that followed it."""
    import dataclasses

    (kind, total), = target.items()
    if kind == "channels":
        # uniform ratios per cut would each round kept channels up to a multiple of 8 and fall short of the
        # target (a 32-wide group would never shrink): steer the cuts by the FLOPs a single cut would remove
        _, one_cut = C.prune_channels(teacher, ratio=total, **common)
        if one_cut.flops_before and one_cut.flops_after is not None:
            kind, total = "flops", 1.0 - one_cut.flops_after / one_cut.flops_before
    fractions = cycle_fractions(total, cycles)
    model, reports, history = teacher, [], []
    for c, cumulative in enumerate(fractions):
        before = fractions[c - 1] if c else 0.0
        if kind == "flops":  # of the current model's FLOPs: what is still to go to reach the cumulative share
            first = reports[0].flops_before if reports else None
            current = reports[-1].flops_after if reports else None
            step = 1.0 - (1.0 - cumulative) * first / current if first and current else (cumulative - before) / (1 - before)
            model, rep = C.prune_channels(model, flops=min(max(step, 1e-3), 0.95), **common)
        else:  # a uniform share of every group's remaining channels
            model, rep = C.prune_channels(model, ratio=1.0 - (1.0 - cumulative) / (1.0 - before), **common)
        reports.append(rep)
        entry: dict[str, Any] = {"cycle": c + 1, "target_removed": round(cumulative, 4), "params": rep.params_after,
                                 "flops": rep.flops_after, "distillation": None}
        if c < cycles - 1:
            model, entry["distillation"] = recover(model)
        history.append(entry)
        log.info("cycle %d/%d: %s parameters%s", c + 1, cycles, f"{rep.params_after:,}",
                 f", fidelity after distillation {entry['distillation']['after']}" if entry["distillation"] else "")
    first, last = reports[0], reports[-1]
    layers = {name: {"before": first.layers.get(name, v)["before"], "after": v["after"]} for name, v in last.layers.items()}
    before, after = sum(v["before"] for v in layers.values()), sum(v["after"] for v in layers.values())
    combined = dataclasses.replace(
        last, ratio=round(1.0 - after / before, 4) if before else 0.0,  # channels removed over every cut
        flops_target=target.get("flops"), layers=layers, params_before=first.params_before,
        flops_before=first.flops_before, seconds=sum(r.seconds for r in reports),
        pruned_groups=max(r.pruned_groups for r in reports),
        frozen={k: v for r in reports for k, v in r.frozen.items()},
        kept_groups={k: v for r in reports for k, v in r.kept_groups.items()})
    return model, combined, history


def _search_speedup(teacher: Any, want: float, common: dict[str, Any], dataset: Any, fmt: str, precision: str,
                    threads: int | None, rounds: int, seconds: float) -> tuple[Any, Any, list[SpeedStep], int]:
    """Prune by growing fractions of the FLOPs until the deployed artifact is ``want`` times faster.

    Returns the model and report of the step kept (the first to reach ``want``, else the fastest measured),
    every step measured, and the index of the one kept."""
    from ..progress import progress
    from ..runtime.bench import compare_latency

    if precision == "int8" and dataset is None:
        raise InputError("--speedup measures the int8 artifact: give the calibration set it is quantized with (--calib)")
    steps: list[SpeedStep] = []
    models: list[tuple[Any, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgeship-speedup-") as tmp:
        base = _artifact(teacher, Path(tmp) / "base", dataset, fmt, precision, common["input_size"])
        for frac in progress(SPEEDUP_STEPS, desc=f"speed-up {want:g}x", unit="step"):
            pruned, report = C.prune_channels(teacher, flops=frac, **common)
            if steps and report.flops_after == steps[-1].flops:
                continue  # channel counts move in steps of round_to: nothing new to measure
            art = _artifact(pruned, Path(tmp) / f"step{len(steps)}", dataset, fmt, precision, common["input_size"])
            base_ms, pruned_ms = compare_latency([base, art], rounds=rounds, seconds=seconds, threads=threads)
            steps.append(SpeedStep(frac, report.flops_after, report.params_after, base_ms, pruned_ms))
            models.append((pruned, report))
            log.info("speed-up step: %.0f%% of the FLOPs removed -> %.2fx (%.3f -> %.3f ms)", 100 * frac,
                     steps[-1].speedup, base_ms, pruned_ms)
            if steps[-1].speedup >= want:
                return pruned, report, steps, len(steps) - 1
    kept = max(range(len(steps)), key=lambda i: steps[i].speedup)
    log.warning("no step reached %.2gx; keeping the fastest measured: %.0f%% of the FLOPs removed, %.2fx",
                want, 100 * steps[kept].flops_removed, steps[kept].speedup)
    return models[kept][0], models[kept][1], steps, kept


def _artifact(model: Any, out: Path, dataset: Any, fmt: str, precision: str, input_size: tuple[int, int] | None) -> Path:
    """``model`` as the artifact it will be deployed as (format, precision; no gate, no manifest: it is only timed),
    built by the format's own builder (:mod:`edgeship.converters.builders`)."""
    from .. import formats
    from .builders import builder
    from .keras_io import export_saved_model, input_shape
    from .plan import ArtifactPlan

    if dataset is not None:
        shape = tuple(dataset.spec.sample_shape)
    else:
        shape = tuple(input_shape(model)[1:])
        if input_size is not None and len(shape) == 3:
            shape = (shape[0] or input_size[0], shape[1] or input_size[1], shape[2])
    out.mkdir(parents=True, exist_ok=True)
    saved = export_saved_model(model, out / "saved_model", sample_shape=shape)
    plan = ArtifactPlan(precision=precision, io=ArtifactPlan.io if precision == "int8" else "float")
    return builder(fmt).build(saved, formats.get(fmt).path(out, "model"), plan, dataset)


def uncompiled(model: Any) -> Any:
    """The same model and weights without the training state distillation compiled into it, so that the saved file
    loads with plain ``keras.saving.load_model`` (no custom loss, no optimizer slots).

    Rebuilt from its config (``clone_model`` would compile the clone again); a Normalization layer's statistics
    are finalised after its weights are set, as Keras does when it loads a file.
    """
    fresh = type(model).from_config(model.get_config())
    fresh.set_weights(model.get_weights())
    for layer in fresh.layers:
        if type(layer).__name__ == "Normalization" and hasattr(layer, "finalize_state"):
            layer.finalize_state()
    return fresh
