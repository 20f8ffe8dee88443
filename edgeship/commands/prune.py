"""``edgeship prune``: remove whole channels from a Keras 3 model so that it runs faster."""

from __future__ import annotations

import click

from .. import formats
from ..converters.channels import CRITERIA, DEFAULT_CRITERION, DEFAULT_TRUNKS, MIN_CHANNELS, ROUND_TO, TRUNK_MODES
from ..converters.structured import MAX_CYCLES, MAX_DISTILL_EPOCHS, MAX_SPEEDUP
from ._common import FiniteRange, emit_json, format_table

EXAMPLES = """
\b
Examples:
  edgeship prune model.keras --flops 0.5 -o pruned.keras
  edgeship prune model.keras --channels 0.3 --calib calib.npz --distill 10 -o pruned.keras
  edgeship prune model.keras --speedup 2 --calib calib.npz -f openvino -o pruned.keras
  edgeship calibrate line3.mp4 --input-size 224x224 --count 2000 --out frames.npz   # unlabelled video frames
  edgeship prune model.keras --flops 0.5 --calib frames.npz --distill 5 -o pruned.keras
  edgeship prune model.keras --flops 0.6 --cycles 3 --calib frames.npz --distill 3 -o pruned.keras
"""


@click.command("prune", epilog=EXAMPLES)
@click.argument("model", type=click.Path(exists=True, path_type=str))
@click.option("--channels", type=FiniteRange(0.0, 1.0, min_open=True, max_open=True), default=None,
              help="Remove this fraction of the channels of every prunable layer group (0.3 = 30%; with --trunks auto "
                   "or keep, the residual trunks of an inverted-residual model are left whole).")
@click.option("--flops", type=FiniteRange(0.0, 1.0, min_open=True, max_open=True), default=None,
              help="Remove about this fraction of the model's FLOPs (0.5 = half).")
@click.option("--speedup", type=FiniteRange(1.0, MAX_SPEEDUP, min_open=True), default=None,
              help="Prune in steps until the deployed artifact (--format, --precision) measures this many times faster.")
@click.option("--criterion", type=click.Choice(CRITERIA), default=DEFAULT_CRITERION, show_default=True,
              help="Channel importance: filter norms (l1, l2), BatchNorm |gamma| (bn), or mean activation on --calib.")
@click.option("--round-to", type=click.IntRange(1, 256), default=ROUND_TO, show_default=True,
              help="Keep channel counts a multiple of this (what XNNPACK's and OpenVINO's kernels like).")
@click.option("--min-channels", type=click.IntRange(1, 4096), default=MIN_CHANNELS, show_default=True,
              help="Never fewer channels in a layer.")
@click.option("--calib", type=click.Path(exists=True, dir_okay=False),
              help="Calibration set (edgeship calibrate): images for --distill, --criterion activation and --speedup's int8 artifacts.")
@click.option("--distill", "distill_epochs", type=click.IntRange(0, MAX_DISTILL_EPOCHS), default=0, show_default=True,
              metavar="EPOCHS",
              help="Train the pruned model for EPOCHS to reproduce the unpruned one on --calib's images (labels optional).")
@click.option("--cycles", type=click.IntRange(1, MAX_CYCLES), default=1, show_default=True,
              help="Reach --channels/--flops in N equal cuts, distilling from the unpruned model after each (needs "
                   "--distill): when one big cut costs too much accuracy.")
@click.option("--trunks", type=click.Choice(TRUNK_MODES), default=DEFAULT_TRUNKS, show_default=True,
              help="The residual trunks (channels an Add joins across blocks): keep = whole, the cut goes to the "
                   "blocks' inner channels, whose FLOPs and memory traffic fall together (MobileNetV2 and EfficientNetB0 "
                   "224 int8 at half the FLOPs: 1.73x instead of 1.53-1.58x); prune = cut with the rest (ResNet50: "
                   "1.80x instead of 1.70x); auto = keep when they are narrower than the blocks' inner channels.")
@click.option("--no-labels", is_flag=True, help="Distil on the teacher's outputs only, even when --calib has labels.")
@click.option("-f", "--format", "fmt", type=click.Choice(formats.names()), default="tflite", show_default=True,
              help="--speedup: the format the speed is measured in.")
@click.option("-p", "--precision", type=click.Choice(["int8", "fp32"]), default="int8", show_default=True,
              help="--speedup: the precision the speed is measured in.")
@click.option("--input-size", default=None, help="HxW for models with a dynamic input size (FLOPs need a size).")
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False), help="The pruned model (.keras).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object on stdout.")
def prune(model: str, channels: float | None, flops: float | None, speedup: float | None, criterion: str, round_to: int,
          min_channels: int, calib: str | None, distill_epochs: int, cycles: int, trunks: str, no_labels: bool, fmt: str,
          precision: str, input_size: str | None, out: str, as_json: bool) -> None:
    """Remove whole channels (filters) from a Keras 3 MODEL: fewer FLOPs, and a faster model on every backend.

    Channels that must shrink together (a convolution and its BatchNorm, every layer on a residual
    trunk, the rows of the Dense after a Flatten) are traced from the model's graph and removed
    together; the model's inputs, outputs and first convolution keep their widths. A layer that
    cannot be traced (Lambda, custom layers) keeps its channels and is named in the report. The
    pruned model is an ordinary .keras file: convert it like any other. Pruning costs accuracy:
    --distill wins it back from the unpruned model, with or without labels. --prune in `convert` is
    a different thing (zeroed weights: a smaller gzip, no speed-up).
    """
    from pathlib import Path

    from ..converters.structured import prune_structured
    from ..errors import InputError
    from ..fileio import atomic_path, atomic_write_json

    if Path(out).suffix.lower() != ".keras":
        raise InputError(f"--out {out}: expected a .keras file name")
    size = None
    if input_size:
        from ..spec import parse_size

        size = parse_size(input_size)
    dataset = None
    if calib:
        from ..converters.inputs import load_calibration

        dataset = load_calibration(calib)
    pruned, report = prune_structured(model, channels=channels, flops=flops, speedup=speedup, criterion=criterion,
                                      round_to=round_to, min_channels=min_channels, dataset=dataset, input_size=size,
                                      trunks=trunks,
                                      distill_epochs=distill_epochs, distill_labels=not no_labels, fmt=fmt,
                                      precision=precision, cycles=cycles)
    with atomic_path(out, suffix=".keras") as tmp:
        pruned.save(str(tmp))
    report_path = Path(out).with_suffix(".prune.json")
    atomic_write_json(report_path, {"model": str(model), "pruned": str(out), **report.to_dict()})
    if as_json:
        emit_json({"model": str(model), "pruned": str(out), "report": str(report_path), **report.to_dict()})
        return
    click.echo(render(report, out, report_path))


def render(report, out: str, report_path) -> str:
    """The human-readable report: totals, the layers that changed most, speed and distillation."""
    c = report.channels
    lines = []
    rows = [("parameters", f"{c['params_before']:,}", f"{c['params_after']:,}", _pct(c["params_after"], c["params_before"]))]
    if c.get("flops_before"):
        rows.append(("GFLOPs", f"{c['flops_before'] / 1e9:.4g}", f"{c['flops_after'] / 1e9:.4g}", _pct(c["flops_after"], c["flops_before"])))
    if report.latency:
        lat = report.latency
        rows.append((f"latency ms ({lat['format']} {lat['precision']})", f"{lat['base_ms']:.3f}", f"{lat['pruned_ms']:.3f}",
                     f"{lat['speedup']:.2f}x faster"))
    lines.append(format_table(["", "before", "after", "change"], rows))
    changed = sorted(((n, v) for n, v in c["layers"].items() if v["after"] != v["before"]),
                     key=lambda kv: kv[1]["after"] / max(kv[1]["before"], 1))
    if changed:
        lines.append(f"channels per layer ({len(changed)} of {len(c['layers'])} layers pruned):")
        shown = changed[:15]
        lines.append(format_table(["layer", "before", "after"], [(n, v["before"], v["after"]) for n, v in shown]))
        if len(changed) > len(shown):
            lines.append(f"... and {len(changed) - len(shown)} more (all in {report_path})")
    if report.steps:
        lines.append("speed-up search (FLOPs removed -> measured):")
        lines.append(format_table(["FLOPs removed", "GFLOPs", "base ms", "pruned ms", "speed-up"],
                                  [(f"{s['flops_removed']:.0%}", f"{(s['flops'] or 0) / 1e9:.4g}", f"{s['base_ms']:.3f}",
                                    f"{s['pruned_ms']:.3f}", f"{s['speedup']:.2f}x") for s in report.steps]))
    if report.cycles:
        lines.append(f"prune-distil cycles ({len(report.cycles)} cuts, distilled from the unpruned model after each):")
        lines.append(format_table(["cycle", "removed (target)", "parameters", "GFLOPs", "after distillation"],
                                  [(e["cycle"], f"{e['target_removed']:.0%}", f"{e['params']:,}",
                                    f"{(e['flops'] or 0) / 1e9:.4g}", _fidelity(e["distillation"]) or "(final: below)")
                                   for e in report.cycles]))
    for name, why in list(c["frozen"].items())[:10]:
        lines.append(f"kept (not understood): {name}: {why}")
    lines.append(describe_distillation(report.distillation))
    lines.append(f"pruned model: {out}   report: {report_path}   ({report.seconds:.1f} s)")
    return "\n".join(lines)


def describe_distillation(d: dict | None) -> str:
    """One sentence on a DistillReport (or its absence), for prune's and convert's output."""
    if not d:
        return ("no distillation: the pruned model has not been trained since its channels were cut "
                "(--distill EPOCHS with --calib wins accuracy back)")
    key = "agreement" if "agreement" in d["after"] else "cosine"
    what, unit = ("top-1 agreement", "%") if key == "agreement" else ("cosine", "")
    return (f"distillation: {d['epochs']} epochs on {d['samples']} images "
            f"({'labels + teacher' if d['labelled'] else 'teacher only, no labels'}); {what} with the unpruned model "
            f"{d['before'][key]:.4g}{unit} -> {d['after'][key]:.4g}{unit}")


def _fidelity(d: dict | None) -> str | None:
    """A DistillReport's fidelity to the unpruned model after distilling, in a few characters."""
    if not d:
        return None
    key = "agreement" if "agreement" in d["after"] else "cosine"
    return f"{key} {d['after'][key]:.4g}{'%' if key == 'agreement' else ''}"


def _pct(after: float, before: float) -> str:
    return f"{100.0 * (after - before) / before:+.1f}%" if before else "-"
