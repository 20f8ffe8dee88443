"""Quickstart step 7: the deployment report (report.md, report.html, summary.json) from the units' results.

Everything here reads the results stored in the stamps, so a re-run rebuilds (or reuses) the
report without converting or measuring anything again.
"""

from __future__ import annotations

from typing import Any

from ..report import ArtifactRow, ReportData, RunRow, machine_description, to_dict, write_report
from .plan import ARTIFACTS, MAX_DROP

PRUNE_NOTE = ("unstructured sparsity shrinks the compressed (gzip) size, not latency: dense kernels still "
              "multiply the zeros")


def keras_rows(results: dict[str, Any]) -> list[ArtifactRow]:
    """The float Keras models as reference rows (size and accuracy; no device latency)."""
    rows = []
    for model in ("digits", "shapes"):
        t = results.get(f"train.{model}")
        if not t:
            continue
        ref = next((results[f"verify.{a.name}"].get("reference_accuracy") for a in ARTIFACTS
                    if a.model == model and f"verify.{a.name}" in results), None)
        rows.append(ArtifactRow(model=model, name=f"{model}.keras", format="keras", precision="fp32",
                                size_bytes=int(t["size_bytes"]), gzip_bytes=int(t.get("gzip_bytes") or t["size_bytes"]),
                                accuracy=ref, reference_accuracy=ref, note="float reference model"))
    return rows


def artifact_rows(results: dict[str, Any]) -> list[ArtifactRow]:
    """One row per converted artifact: sizes and sparsity (convert), accuracy (verify), latency (bench)."""
    rows = []
    for a in ARTIFACTS:
        c, v, b = (results.get(f"{s}.{a.name}") or {} for s in ("convert", "verify", "bench"))
        if not c:
            continue
        lat = b.get("latency_ms") or {}
        notes = []
        if c.get("precision") != c.get("planned_precision"):
            notes.append(f"accuracy gate: {c.get('planned_precision')} -> {c.get('precision')}")
        if a.note:
            notes.append(a.note)
        rows.append(ArtifactRow(
            model=a.model, name=a.name, format=c["format"], precision=c["precision"],
            size_bytes=int(c["sizes"].get("raw_bytes", 0)), gzip_bytes=int(c["sizes"].get("gzip_bytes", 0)),
            sparsity=c.get("sparsity"), accuracy=v.get("accuracy"), reference_accuracy=v.get("reference_accuracy"),
            drop=v.get("drop"), agreement=v.get("agreement"), p50_ms=lat.get("p50"), p99_ms=lat.get("p99"),
            fps=b.get("throughput_fps"), float_layers=list(c.get("float_layers") or []),
            latencies_ms=list(b.get("samples_ms") or []), note="; ".join(notes),
        ))
    return rows


def run_rows(results: dict[str, Any]) -> list[RunRow]:
    rows = []
    for uid, r in results.items():
        if not uid.startswith("run."):
            continue
        rows.append(RunRow(name=uid[4:], artifact=r["artifact"], source=r["source"], frames=int(r.get("frames_processed") or 0),
                           fps=r.get("processed_fps"), g2g_p50_ms=r.get("g2g_p50_ms"), g2g_p99_ms=r.get("g2g_p99_ms"),
                           skipped=int(r.get("skipped") or 0), detail=r.get("detail", "")))
    return rows


def notes(results: dict[str, Any]) -> list[str]:
    out = []
    d = results.get("calibrate.digits") or {}
    s = results.get("calibrate.shapes") or {}
    if d:
        out.append(f"Digits accuracy is top-1 on {d['holdout']} held-out handwritten digits (scikit-learn) seen by the "
                   f"belt camera; {d['calib']} other held-out digits calibrated int8. Every int8 artifact went through "
                   f"the accuracy gate with a budget of {MAX_DROP:g} point(s) against the float model it was converted from.")
    if s:
        out.append(f"The shapes detector was calibrated on {s['calib']} samples (demo-video frames after de-duplication "
                   "and generated scenes); its accuracy is detection recall at IoU 0.5, score 0.5, on generated "
                   "scenes with ground truth.")
    for a in ARTIFACTS:
        c = results.get(f"convert.{a.name}") or {}
        if a.prune and c:
            out.append(f"{a.name}: {100 * (c.get('sparsity') or 0):.1f}% of the weights are zero (target "
                       f"{100 * (c.get('sparsity_target') or 0):.0f}%); {PRUNE_NOTE}. Its drop is measured against the "
                       "unpruned float model.")
        if a.prune_channels and c.get("channel_pruning"):
            out.append(channel_pruning_note(a, c["channel_pruning"], results))
        reason = (c.get("gate") or {}).get("reason")
        if reason and c.get("precision") != c.get("planned_precision"):
            out.append(f"{a.name}: {reason}")
        for w in (results.get(f"verify.{a.name}") or {}).get("warnings") or []:
            out.append(f"{a.name}: {w}")
    out.append("Latency: model-call p50/p99 at batch 1 (edgeship bench, comparable to litert-benchmark and "
               "benchmark_app); fps: sequential throughput of that call. Runtime runs: the real pipeline on the demo "
               "videos, every frame processed (glass-to-glass latency from frame capture to result).")
    return out


def channel_pruning_note(a: Any, cp: dict[str, Any], results: dict[str, Any]) -> str:
    """What structured pruning bought: parameters, FLOPs, and the latency against the unpruned artifact."""
    ch = cp["channels"]
    text = (f"{a.name}: {100 * a.prune_channels:.0f}% of the channels removed: parameters {ch['params_before']:,} -> "
            f"{ch['params_after']:,}")
    if ch.get("flops_before"):
        text += f", MFLOPs {ch['flops_before'] / 1e6:.3g} -> {ch['flops_after'] / 1e6:.3g}"
    unpruned = next((b for b in ARTIFACTS if b.model == a.model and b.format == a.format and b.precision == a.precision
                     and not b.prune and not b.prune_channels), None)
    base = ((results.get(f"bench.{unpruned.name}") or {}).get("latency_ms") or {}).get("p50") if unpruned else None
    mine = ((results.get(f"bench.{a.name}") or {}).get("latency_ms") or {}).get("p50")
    if base and mine:
        text += f"; p50 {base:.4g} -> {mine:.4g} ms against {unpruned.name} ({base / mine:.2f}x)"
    d = cp.get("distillation") or {}
    if d:
        text += f"; distilled {d['epochs']} epochs on {d['samples']} calibration images"
    return text + ". Its drop is measured against the unpruned float model."


def build(results: dict[str, Any], seconds: dict[str, float], title: str = "edgeship quickstart") -> ReportData:
    bundles = []
    for uid, r in results.items():
        if uid.startswith("bundle."):
            bundles.append({"path": r["path"], "target": r["target"], "size_bytes": r["size_bytes"], "sha256": r["sha256"],
                            "version": r.get("version")})
    return ReportData(title=title, machine=machine_description(),
                      artifacts=keras_rows(results) + artifact_rows(results), runs=run_rows(results),
                      bundles=bundles, timings={k: round(v, 1) for k, v in seconds.items()}, notes=notes(results))


def write(ctx: Any) -> dict[str, Any]:
    """The report unit: write report.md, report.html and summary.json into the output folder."""
    from ..fileio import atomic_write_json

    data = build(ctx.results, ctx.step_seconds())
    md, html = write_report(data, ctx.out)
    atomic_write_json(ctx.out / "summary.json", {"report": to_dict(data), "models": {
        k[6:]: v for k, v in ctx.results.items() if k.startswith("train.") and "video" not in k}})
    return {"report_md": md.name, "report_html": html.name, "artifacts": len(data.artifacts), "runs": len(data.runs)}


def table(artifacts: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """The short summary the CLI prints, from :func:`artifacts_json` rows: one line per artifact."""
    headers = ["artifact", "format", "precision", "size KiB", "gzip KiB", "sparsity", "accuracy %", "drop pp", "p50 ms", "fps"]
    body = []
    for a in artifacts:
        body.append([a["name"], a["format"], a["precision"], round(a["size_bytes"] / 1024, 1), round(a["gzip_bytes"] / 1024, 1),
                     "-" if a["sparsity"] is None else f"{100 * a['sparsity']:.0f}%", _round(a["accuracy"], 1),
                     _round(a["drop"], 2), _round(a["p50_ms"], 3), _round(a["fps"], 0)])
    return headers, body


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(float(v), digits)


def artifacts_json(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in artifact_rows(results):
        c = results[f"convert.{r.name}"]
        v = results.get(f"verify.{r.name}") or {}
        out.append({"name": r.name, "model": r.model, "path": c["artifact"], "format": r.format, "precision": r.precision,
                    "size_bytes": r.size_bytes, "gzip_bytes": r.gzip_bytes, "sparsity": r.sparsity, "accuracy": r.accuracy,
                    "reference_accuracy": r.reference_accuracy, "drop": r.drop, "agreement": r.agreement,
                    "metric": v.get("metric"), "passed": v.get("passed"), "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
                    "fps": r.fps, "float_layers": r.float_layers})
    return out
