"""Quickstart steps 3 and 4: convert every planned artifact (accuracy-gated), verify and benchmark each.

Conversion goes through :func:`edgeship.converters.convert` with ``max_drop=1.0``; verification
through :func:`edgeship.converters.verify.verify_artifact` against the float Keras model on the
labelled holdout (for the detector, which has no class output per sample, also recall at IoU 0.5
on generated scenes with ground truth, Keras and artifact side by side); benchmarking through
:func:`edgeship.runtime.bench.benchmark`. Verification and latency are written into each
artifact's manifest.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from .plan import ARTIFACTS, MAX_DROP, ArtifactPlan, Options
from .stamps import Unit

log = logging.getLogger(__name__)


# ---- step 3: convert -------------------------------------------------------------------------------
def convert_artifact(ctx: Any, a: ArtifactPlan) -> dict[str, Any]:
    from ..converters import convert
    from ..demo.scenes import SHAPE_CLASSES

    extra: dict[str, Any] = {}
    if a.model == "shapes":
        extra.update(task="detect", labels=list(SHAPE_CLASSES))
    if a.prune:
        extra.update(prune=a.prune, finetune=str(ctx.path("digits_train")), epochs=ctx.options.finetune_epochs)
    if a.prune_channels:
        extra.update(prune_channels=a.prune_channels, distill_epochs=ctx.options.distill_epochs)
    results = convert(str(ctx.path(f"{a.model}_keras")), formats=[a.format], precision=a.precision,
                      out_dir=ctx.out / "models", calib=str(ctx.path(f"{a.model}_calib")), name=a.name,
                      max_drop=MAX_DROP, prefer="quantized", **extra)  # a row per precision: int8 stays int8 if it can
    m = results[0].manifest
    gate = m.conversion.accuracy_gate
    return {
        "artifact": f"models/{results[0].path.name}", "model": a.model, "format": m.format, "precision": m.precision,
        "planned_precision": a.precision, "sizes": dict(m.sizes), "sparsity": m.sparsity.get("overall"),
        "sparsity_target": m.sparsity.get("target"), "gate": gate.to_dict(), "float_layers": gate.float_layer_names(),
        "timings": dict(m.conversion.timings), "note": a.note, "channel_pruning": m.conversion.channel_pruning,
    }


# ---- step 4a: verify ------------------------------------------------------------------------------
def verify(ctx: Any, a: ArtifactPlan) -> dict[str, Any]:
    from ..converters.verify import verify_artifact
    from ..manifest import Manifest

    path = ctx.out / a.files()[0]
    report = verify_artifact(path, str(ctx.path(f"{a.model}_keras")), str(ctx.path(f"{a.model}_calib")),
                             split="holdout", max_drop=MAX_DROP)
    result = {
        "samples": report.samples, "executed_precision": report.executed_precision, "agreement": report.agreement,
        "reference_accuracy": report.reference_accuracy, "accuracy": report.accuracy, "drop": report.drop,
        "drop_ci": report.drop_ci, "passed": report.passed, "reason": report.reason, "warnings": report.warnings,
        "outputs": [{"cosine": o.cosine, "sqnr_db": o.sqnr_db, "max_abs_error": o.max_abs_error} for o in report.outputs],
        "metric": "top-1 accuracy on the labelled holdout" if report.accuracy is not None else None,
    }
    if a.model == "shapes":
        result.update(detection_accuracy(ctx, path))
    m = Manifest.load(path)
    record = report.accuracy_record()
    if "detection" in result:
        record.detection = result["detection"]
    if m.accuracy is not None:  # keep what the gate recorded (its budget, its value before any float layer)
        record.budget, record.initial = m.accuracy.budget, m.accuracy.initial
        record.extra = {**m.accuracy.extra, **record.extra}
    m.accuracy = record
    m.save(path)
    return result


def detection_accuracy(ctx: Any, artifact: Path) -> dict[str, Any]:
    """Recall / precision at IoU 0.5 (score 0.5) of the Keras detector and the artifact on generated labelled scenes."""
    from ..converters.keras_io import load_keras_model, predict
    from ..demo.train import detection_metrics, shapes_samples
    from ..runtime.backends import open_backend

    n = ctx.options.shapes_eval
    x, _, truth = shapes_samples(n, seed=ctx.options.seed + 1)  # the scenes train_shapes evaluates on
    ref = detection_metrics(predict(load_keras_model(str(ctx.path("shapes_keras"))), x)[0], truth)
    with open_backend(artifact) as b:
        art = detection_metrics(b.infer(x)[0], truth)
    return {
        "accuracy": 100.0 * art["recall"], "reference_accuracy": 100.0 * ref["recall"],
        "drop": 100.0 * (ref["recall"] - art["recall"]),
        "metric": f"detection recall at IoU 0.5 on {n} generated scenes ({art['objects']} objects)",
        "detection": {"scenes": n, "objects": art["objects"], "recall": art["recall"], "precision": art["precision"],
                      "reference_recall": ref["recall"], "reference_precision": ref["precision"]},
    }


# ---- step 4b: bench ------------------------------------------------------------------------------------
def bench(ctx: Any, a: ArtifactPlan) -> dict[str, Any]:
    from ..runtime.backends import open_backend
    from ..runtime.bench import benchmark, sample_input, save_latency

    path = ctx.out / a.files()[0]
    result = benchmark(path, duration=ctx.options.bench_seconds, warmup=5)
    save_latency(path, result)
    samples = []
    with open_backend(path) as b:  # per-inference samples for the report's histogram
        prepared = b.prepare_inputs(sample_input(b))
        for _ in range(3):
            b.run_prepared(prepared)
        for _ in range(ctx.options.histogram_samples):
            t = time.perf_counter()
            b.run_prepared(prepared)
            samples.append(round((time.perf_counter() - t) * 1e3, 4))
    keep = ("backend", "executed_precision", "load_ms", "first_inference_ms", "latency_ms", "iterations", "e2e_ms",
            "throughput_fps", "peak_rss_mb")
    return {**{k: result[k] for k in keep}, "samples_ms": samples, "hist_p50_ms": float(np.median(samples))}


# ---- units ---------------------------------------------------------------------------------------------------
def units(options: Options, out: Path) -> dict[str, list[Unit]]:
    """The units of the convert, verify and bench steps, by step (one unit per artifact and step)."""
    conv, ver, ben = [], [], []
    for a in ARTIFACTS:
        deps = [f"train.{a.model}", f"calibrate.{a.model}"] + (["calibrate.digits_train"] if a.prune else [])
        recipe = {"format": a.format, "precision": a.precision, "prune": a.prune, "max_drop": MAX_DROP,
                  "finetune_epochs": options.finetune_epochs if a.prune else None, "prune_channels": a.prune_channels,
                  "distill_epochs": options.distill_epochs if a.prune_channels else None}
        conv.append(Unit("convert", a.name, recipe, lambda ctx, a=a: convert_artifact(ctx, a), hashed=a.files(),
                         present=[a.manifest], deps=deps))
        ver.append(Unit("verify", a.name, {"max_drop": MAX_DROP, "eval": options.shapes_eval if a.model == "shapes" else None},
                        lambda ctx, a=a: verify(ctx, a), present=[a.manifest],
                        deps=[f"convert.{a.name}", f"train.{a.model}", f"calibrate.{a.model}"]))
        ben.append(Unit("bench", a.name, {"seconds": options.bench_seconds, "samples": options.histogram_samples},
                        lambda ctx, a=a: bench(ctx, a), present=[a.manifest], deps=[f"convert.{a.name}"]))
    return {"convert": conv, "verify": ver, "bench": ben}
