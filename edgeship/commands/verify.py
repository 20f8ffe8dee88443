"""``edgeship verify``: check an artifact's accuracy against the float Keras model."""

from __future__ import annotations

import click

from ..runtime.processing import TASKS
from ..runtime.processing.anchors import ANCHOR_THRESHOLD
from ..runtime.processing.anchors import PRESETS as ANCHOR_PRESETS
from ..converters.metrics import TIE_MARGIN
from ..runtime.processing.detect import DETECT_THRESHOLD
from ._common import FiniteRange, echo_err, emit_json, format_table, max_drop_option

EXAMPLES = """
\b
Example:
  edgeship verify out/model.tflite --reference model.keras --data calib.npz
  edgeship verify out/model.xml --reference model.keras --data calib.npz --max-drop 0.5 --layers 5
  edgeship verify out/model.tflite --reference model.keras --data calib.npz --split all --json
  edgeship verify out/detector.tflite --reference detector.keras --data video_calib.npz --task detect
\b
Exit codes: 0 within budget, 1 over budget (one-line reason on stderr) or an error.
"""


@click.command(epilog=EXAMPLES)
@click.argument("artifact", type=click.Path(exists=True, dir_okay=False))
@click.option("--reference", required=True, type=click.Path(exists=True), help="The float Keras model (.keras, .h5 or SavedModel folder).")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False), help="Calibration set (.npz from edgeship calibrate).")
@click.option("--split", type=click.Choice(["holdout", "all", "calib"]), default="holdout", show_default=True,
              help="Which samples to verify on (holdout: never seen by calibration).")
@click.option("--max-drop", "max_drop", default="1.0", show_default=True, callback=max_drop_option, metavar="PP|none",
              help="Budget in points: for a detector the AP@0.5 lost against the float model's own detections; else the "
                   "accuracy drop with labels, the top-1 disagreement without. 'none' only reports.")
@click.option("--min-sqnr", "min_sqnr", type=FiniteRange(), default=None, metavar="DB",
              help="Also require every output's SQNR against the float model to be at least DB decibels on the holdout "
                   "(e.g. 25). The budget for models without class scores (landmarks, masks, embeddings, regressions); "
                   "with --max-drop none it is the only one. Exit code 1 when an output falls short.")
@click.option("--task", type=click.Choice(sorted(TASKS)), default=None,
              help="detect: decode both models' boxes (as `edgeship run` does) and score the artifact's against the float "
                   "model's on the same images; no labels needed [the manifest's task].")
@click.option("--threshold", type=FiniteRange(0, 1), default=None,
              help=f"Detection score threshold [the decoder's: {DETECT_THRESHOLD:g}, anchor heads {ANCHOR_THRESHOLD:g}].")
@click.option("--iou", type=FiniteRange(0, 1), default=None, help="Detection NMS IoU threshold [the decoder's].")
@click.option("--anchors", type=click.Choice(sorted(ANCHOR_PRESETS)), default=None,
              help="Anchor layout of an anchor-based SSD head (see `edgeship run --help`).")
@click.option("--tie-margin", type=FiniteRange(0.0, 1.0, max_open=True), default=TIE_MARGIN, show_default=True,
              help="Without labels, a top-1 flip between two classes the float model scores within this probability of "
                   "each other is a near-tie: reported apart, not counted against --max-drop.")
@click.option("--layers", default=0, show_default=True, type=click.IntRange(min=0),
              help="Also list the N layers with the largest quantization error (int8 artifacts).")
@click.option("--precision", type=click.Choice(["f32", "bf16", "f16"]),
              help="OpenVINO inference precision [f32 for FP32 artifacts, the device default otherwise].")
@click.option("--save", is_flag=True, help="Record the result in the artifact's manifest (accuracy).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.pass_context
def verify(ctx: click.Context, artifact: str, reference: str, data: str, split: str, max_drop: float | None,
           min_sqnr: float | None, layers: int,
           precision: str | None, save: bool, as_json: bool, task: str | None, threshold: float | None, iou: float | None,
           anchors: str | None, tie_margin: float) -> None:
    """Check ARTIFACT (.tflite or .xml) against the float Keras model it came from.

    Runs both on the calibration set's holdout split (the artifact through edgeship's runtime,
    exactly as the device runs it) and reports top-1 agreement, both accuracies and the drop in
    points with a 95% interval, per-class deltas, cosine similarity, SQNR and max error per
    output, and the precision the backend executed. A detector (--task detect, or a manifest that
    says so) is scored on its boxes: AP@0.5, recall and precision of the artifact's detections
    against the float model's own on the same images. Warns about the classic mistakes: a float
    model that predicts one class, or calibration data in the wrong value range.
    """
    from ..converters.verify import verify_artifact

    detect = {"threshold": threshold, "iou": iou, "anchors": anchors}
    report = verify_artifact(artifact, reference, data, split=split, max_drop=max_drop, layers=layers, precision=precision,
                             task=task, detect=detect, min_sqnr=min_sqnr, tie_margin=tie_margin)
    if save:
        from ..manifest import Manifest

        manifest = Manifest.load_optional(artifact)
        if manifest is None:
            echo_err(f"warning: {artifact} has no manifest; nothing saved")
        else:
            manifest.accuracy = report.accuracy_record()
            manifest.save(artifact)
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(render(report))
    if report.passed is False:
        echo_err(f"error: {report.reason}")
        ctx.exit(1)


def render(report) -> str:
    """The human-readable report."""
    lines = [f"{report.artifact}  ({report.format}, {report.precision or '?'}; ran {report.executed_precision} on {report.backend})",
             f"{report.samples} samples from the {report.split} split"]
    rows = []
    if report.agreement is not None:
        ties = (f" ({report.near_ties} near-tie flip{'s' if report.near_ties != 1 else ''}: float scores within "
                f"{report.tie_margin:g}; {report.real_agreement:.2f}% without them)") if report.near_ties else ""
        rows.append(("top-1 agreement", f"{report.agreement:.2f}%{ties}"))
    if report.drop is not None:
        lo, hi = report.drop_ci
        rows += [("float accuracy", f"{report.reference_accuracy:.2f}%"), ("artifact accuracy", f"{report.accuracy:.2f}%"),
                 ("drop", f"{report.drop:+.2f} points (95% CI {lo:+.2f} .. {hi:+.2f})")]
    if report.detection is not None:
        d = report.detection
        rows.append(("detections vs float", f"AP@0.5 {d['ap50']:.2f}%  recall {d['recall']:.2f}%  precision {d['precision']:.2f}%  "
                     f"({d['artifact_boxes']} boxes; the float model {d['reference_boxes']})"))
    for o in report.outputs:
        rel = f" ({o.rel_max_error:.2%} of its range)" if o.rel_max_error is not None else ""
        total = f"  rows sum to {o.row_sum:.3f}" if o.row_sum is not None else ""
        rows.append((f"output {o.index} ({o.role or 'raw'})",
                     f"cosine {o.cosine:.5f}  SQNR {o.sqnr_db:.1f} dB  max|err| {o.max_abs_error:.4g}{rel}{total}"))
    if report.class_output is not None and len(report.outputs) > 1:
        rows.append(("class scores", f"output {report.class_output} (top-1 metrics above)"))
    lines.append(format_table(["metric", "value"], rows))
    worst = sorted((c for c in report.per_class if c["delta"] < 0), key=lambda c: c["delta"])[:5]
    if worst:
        lines.append("classes that lost accuracy:")
        lines.append(format_table(["class", "samples", "float %", "artifact %", "delta"],
                                  [(c["label"], c["samples"], c["reference"], c["artifact"], c["delta"]) for c in worst]))
    if report.layers:
        lines.append("layers with the largest quantization error (channel noise/signal, 1 = signal lost):")
        lines.append(format_table(["layer", "tensor (node)", "op", "error", "SQNR dB", "consumers"],
                                  [(e.get("layer") or ("(input)" if e["op"] == "Parameter" else "-"), _short(e["name"]),
                                    e["op"], e["error"], e["sqnr_db"], ", ".join(_short(c) for c in e["consumers"]))
                                   for e in report.layers]))
    for w in report.warnings:
        lines.append(f"warning: {w}")
    if report.reason:
        lines.append(("PASS: " if report.passed else ("FAIL: " if report.passed is False else "")) + report.reason)
    return "\n".join(lines)


def _short(name: str, width: int = 48) -> str:
    first = str(name).split(";")[0]
    return first if len(first) <= width else "..." + first[-(width - 3):]
