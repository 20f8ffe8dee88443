"""``edgeship convert``: prune and quantize a Keras model to TFLite and/or OpenVINO IR."""

from __future__ import annotations

from typing import Any

import click

from .. import formats
from ..converters.channels import TRUNK_MODES
from ..converters.ladder import PREFER
from ..converters.equalize import EQUALIZE
from ..converters.biascorr import BIAS_CORRECTION
from ..converters.openvino import PRESETS
from ..converters.ranges import RANGES
from ..converters.rounding import WEIGHT_ROUNDING
from ..converters.options import GateOptions, IOOptions, PruneOptions
from ..converters.prune import SCHEDULES
from ..converters.qat import MAX_QAT_EPOCHS
from ..converters.structured import MAX_CYCLES, MAX_DISTILL_EPOCHS
from ..converters.tflite import IO_TYPES
from ..runtime.processing import TASKS
from ._common import FiniteRange, echo_err, emit_json, format_table, human_size, max_drop_option, size_option
from ._spec import spec_options, spec_overrides

PRECISION_CHOICES = formats.all_precisions()


def _prefer(name: str | None, prefer: str | None) -> str:
    """--prefer as given, else "quantized" for a --target of another architecture (this machine's timings say
    little about an arm64 board), else the default (speed)."""
    if prefer is not None:
        return prefer
    if name is not None:
        import platform

        from ..targets import get_target

        if get_target(name).architecture != platform.machine():
            return "quantized"
    return GateOptions.prefer


def _from_target(name: str | None, formats: tuple[str, ...], precision: str | None) -> tuple[list[str], str]:
    """Fill --format / --precision from a device profile when they were not given."""
    if name is not None:
        from ..targets import get_target

        profile = get_target(name)
        formats = formats or (profile.format,)
        for fmt in formats:
            profile.check_format(fmt)
        precision = precision or profile.precision
    if not formats:
        raise click.UsageError("give --format (tflite, openvino) or --target NAME")
    return list(formats), precision or "fp32"


@click.command("convert")
@click.argument("model", type=click.Path(exists=True, path_type=str))
@click.option("-f", "--format", "formats", multiple=True, type=click.Choice(formats.names()),
              help="Artifact format; repeat for several (default: the --target's).")
@click.option("-p", "--precision", type=click.Choice(PRECISION_CHOICES),
              help="fp32, fp16 (weights), dynamic (TFLite dynamic range) or int8 (full integer, needs --calib). Default: the --target's, else fp32.")
@click.option("--calib", type=click.Path(exists=True, dir_okay=False), help="Calibration set from `edgeship calibrate` (calib.npz).")
@click.option("--io", "io", type=click.Choice(IO_TYPES), default=IOOptions.io, show_default=True,
              help="Input/output type of a TFLite int8 model (OpenVINO IR keeps float I/O).")
@click.option("--prune", type=FiniteRange(0.0, 1.0, min_open=True, max_open=True),
              help="Target sparsity of the weights, e.g. 0.5 (tfmot magnitude pruning: zeroed weights, a smaller gzip for storage and OTA updates, no speed-up).")
@click.option("--prune-channels", type=FiniteRange(0.0, 1.0, min_open=True, max_open=True), default=None, metavar="R",
              help="Structured pruning: remove this fraction of the channels (faster on every backend; see `edgeship prune`).")
@click.option("--distill", "distill_epochs", type=click.IntRange(0, MAX_DISTILL_EPOCHS), default=PruneOptions.distill_epochs,
              show_default=True, metavar="EPOCHS",
              help="With --prune-channels: distil the pruned model from the unpruned one on --calib's images (labels optional).")
@click.option("--prune-cycles", type=click.IntRange(1, MAX_CYCLES), default=PruneOptions.cycles, show_default=True, metavar="N",
              help="With --prune-channels and --distill: remove the channels in N equal cuts, distilling after each.")
@click.option("--prune-trunks", type=click.Choice(TRUNK_MODES), default=PruneOptions.trunks, show_default=True,
              help="With --prune-channels: keep the residual trunks whole or cut them too (see `edgeship prune --help`).")
@click.option("--prune-schedule", type=click.Choice(SCHEDULES), default=PruneOptions.schedule, show_default=True,
              help="tfmot's pruning schedule for --prune.")
@click.option("--prune-frequency", type=click.IntRange(1), help="Steps between mask updates (default: ~10 updates per run).")
@click.option("--finetune", type=click.Path(exists=True, file_okay=False), help="Labelled image folder (root/<class>/*) to fine-tune on while pruning.")
@click.option("--epochs", type=click.IntRange(1), default=PruneOptions.epochs, show_default=True, help="Fine-tuning epochs.")
@click.option("--input-size", callback=size_option, help="HxW for models with a dynamic input size (without --calib).")
@click.option("--labels", "labels", type=click.Path(exists=True, dir_okay=False), help="Class names: one per line (# comments and blank lines ignored), a JSON list or a JSON {id: name} object (default: the calibration set's).")
@click.option("--task", type=click.Choice(list(TASKS)), help="Override the task written to the manifest.")
@click.option("--name", help="Artifact name (default: MODEL_PRECISION; with several formats NAME_FORMAT).")
@click.option("--preset", type=click.Choice(PRESETS), default=GateOptions.preset, show_default=True,
              help="NNCF preset for OpenVINO int8: performance (symmetric activations), mixed (asymmetric) or "
                   "auto (both measured on calibration samples held out from the statistics; mixed kept only where "
                   "its output is 1 dB closer to the float model).")
@click.option("--dynamic-batch", is_flag=True, help="OpenVINO IR with a dynamic batch (default: fixed batch 1).")
@click.option("--max-drop", default=str(GateOptions.max_drop), show_default=True, callback=max_drop_option, metavar="PP|none",
              help="Accuracy budget in percentage points for the accuracy gate, or 'none'.")
@click.option("--min-sqnr", "min_sqnr", type=FiniteRange(), default=None, metavar="DB",
              help="Also require every output's SQNR against the float model to be at least DB decibels on the holdout "
                   "(e.g. 25). The budget for models without class scores (landmarks, masks, embeddings, regressions); "
                   "with --max-drop none it is the only one. The gate keeps layers in float until it holds.")
@click.option("--prefer", type=click.Choice(PREFER), default=None,
              help="Among the artifacts the accuracy gate's ladder finds within budget (int8, int8 with some layers in "
                   "float, dynamic range, int16x8, fp16, fp32), keep the fastest (each is timed on this machine), the "
                   "smallest, or the first on the ladder (quantized: nothing timed). Default: speed; quantized with a "
                   "--target of another architecture than this machine's.")
@click.option("--tie-margin", type=FiniteRange(0.0, 1.0, max_open=True), default=GateOptions.tie_margin, show_default=True,
              help="Without labels, a top-1 flip between two classes the float model scores within this probability of "
                   "each other is a near-tie: reported, not counted against --max-drop.")
@click.option("--equalize", type=click.Choice(EQUALIZE), default=GateOptions.equalize, show_default=True,
              help="int8: cross-layer equalization of activation channel ranges on the Keras graph (exact: outputs within "
                   "1e-5). auto builds int8 with and without it and keeps the one closer to the float model on the "
                   "calibration samples.")
@click.option("--ranges", type=click.Choice(RANGES), default=GateOptions.ranges, show_default=True,
              help="int8 activation ranges: mse clips each tensor's range to its least int8 error on the calibration "
                   "samples (OpenVINO: NNCF's histogram estimator); minmax keeps the observed range; auto (TFLite) keeps "
                   "mse where the calibration samples' outputs are closer to the float model, (OpenVINO) NNCF's default.")
@click.option("--bias-correction", type=click.Choice(BIAS_CORRECTION), default=GateOptions.bias_correction,
              show_default=True, help="int8: fold each layer's mean int8 output error back into its bias. full: "
                   "layer by layer, each measured after the ones before it were corrected (OpenVINO: NNCF's "
                   "BiasCorrection); fast: every layer from one measurement (NNCF's FastBiasCorrection); none. auto "
                   "(TFLite) fits full on calibration samples and keeps it only where it is 1 dB closer to the float "
                   "model on samples it was not fitted on, (OpenVINO) does the same for NNCF's full against its fast "
                   "one.")
@click.option("--weight-rounding", type=click.Choice(WEIGHT_ROUNDING), default=GateOptions.weight_rounding,
              show_default=True, help="TFLite int8, int16x8 and dynamic range: how each layer's float weights become "
                   "int8. gptq rounds a layer's weights together so that their errors cancel in its output on the "
                   "calibration samples (GPTQ: error fed forward through the inputs' second moments), on the same "
                   "per-channel steps; nearest rounds each weight on its own (the converter's). auto measures both on "
                   "calibration samples gptq was not fitted on and keeps gptq in int8 where it is 1 dB closer to the "
                   "float model, in int16x8 and dynamic range (where the weights dominate the error) unless it is "
                   "worse. Needs --calib. OpenVINO: NNCF rounds to nearest.")
@click.option("--qat", "qat", type=click.IntRange(0, MAX_QAT_EPOCHS), default=GateOptions.qat, metavar="EPOCHS",
              help="int8: fine-tune EPOCHS with fake int8 (tfmot), distilling from the float model on the calibration "
                   "images (their labels mixed in when the set has them), then convert to full int8. With a budget it "
                   "is a rung of the gate's ladder (int8-qat), kept if it meets the budget and is the fastest; with "
                   "--max-drop none it makes the artifact. TFLite, and OpenVINO from the QAT model's FakeQuant ops.")
@click.option("--target", "target", help="Device profile (see `edgeship targets list`) that picks --format/--precision.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--output", "output_roles", multiple=True, metavar="NAME=ROLE",
              help="An output's role where the guess is wrong: NAME or INDEX = class_scores | boxes | raw (repeatable). "
                   "Classification metrics apply to the class_scores output only.")
@spec_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with every artifact's manifest.")
def convert(model: str, formats: tuple[str, ...], precision: str | None, calib: str | None, io: str, prune: float | None,
            prune_schedule: str, prune_frequency: int | None, finetune: str | None, epochs: int, input_size,
            labels: str | None, task: str | None, name: str | None, preset: str, dynamic_batch: bool,
            max_drop: float | None, min_sqnr: float | None, prefer: str | None, tie_margin: float, equalize: str, ranges: str,
            bias_correction: str, weight_rounding: str, qat: int, target: str | None, out_dir: str,
            as_json: bool, output_roles: tuple[str, ...],
            prune_channels: float | None, distill_epochs: int, prune_cycles: int, prune_trunks: str,
            **spec_flags: Any) -> None:
    """Prune and quantize a Keras model (.keras, .h5 or SavedModel folder) to TFLite and/or OpenVINO IR.

    Every artifact NAME.tflite / NAME.xml gets NAME.manifest.json (InputSpec, labels, tensors with
    quantization parameters, hashes, sizes, sparsity, tool versions). Nothing is left in --out
    when any step fails. Pruning reports raw and gzip sizes: unstructured sparsity shrinks the
    compressed size, not the latency.

    \b
    Example:
      edgeship convert model.keras -f tflite -f openvino -p int8 --calib calib.npz -o out/
      edgeship convert model.keras -f tflite -p int8 --calib calib.npz --prune 0.5 -o out/
      edgeship convert model.keras -f tflite -p int8 --calib calib.npz --prune-channels 0.3 --distill 5 -o out/
      edgeship convert model.keras -p int8 --calib calib.npz --target rpi5 -o out/
      edgeship convert model.h5 -f tflite -p int8 --calib calib.npz --qat 10 -o out/
      edgeship convert model.h5 -f openvino -p fp16 --dynamic-batch -o out/
    """
    import time

    from ..converters import convert as run_convert
    from ..converters.options import ConvertOptions

    t0 = time.monotonic()
    fmts, prec = _from_target(target, formats, precision)
    options = ConvertOptions(
        io=IOOptions(io=io, input_size=input_size, spec_overrides=spec_overrides(spec_flags), labels=labels, task=task,
                     output_roles=tuple(output_roles), dynamic_batch=dynamic_batch),
        prune=PruneOptions(sparsity=prune, schedule=prune_schedule, frequency=prune_frequency, finetune=finetune,
                           epochs=epochs, channels=prune_channels, distill_epochs=distill_epochs, cycles=prune_cycles,
                           trunks=prune_trunks),
        gate=GateOptions(max_drop=max_drop, min_sqnr=min_sqnr, preset=preset, prefer=_prefer(target, prefer),
                         tie_margin=tie_margin, equalize=equalize, ranges=ranges, bias_correction=bias_correction,
                         weight_rounding=weight_rounding, qat=qat),
    )
    results = run_convert(model, calib, formats=fmts, precision=prec, out_dir=out_dir, name=name, options=options)
    if as_json:
        emit_json({"artifacts": [_summary(r) | {"manifest": r.manifest.to_dict()} for r in results]})
        return
    rows = [_row(r) for r in results]
    click.echo(format_table(["artifact", "format", "precision", "io", "size", "gzip", "sparsity", "convert s"], rows))
    sp = results[0].manifest.sparsity if results else {}
    if sp.get("target") is not None:
        s = sp["float_model_sizes"]
        echo_err(f"pruned to {sp['overall']:.1%} ({sp['mode']}); float weights {human_size(s['before_gzip_bytes'])} -> "
                 f"{human_size(s['after_gzip_bytes'])} gzipped. {sp['note']}.")
    for r in results:
        recipe = r.manifest.conversion.recipe()
        if recipe:
            echo_err(f"int8 {r.path.name}: {recipe} (each auto choice measured: conversion.quantization in the "
                     "manifest)")
    cp = results[0].manifest.conversion.channel_pruning if results else None
    if cp:
        echo_err(channel_pruning_line(cp))
    echo_err(f"{len(results)} artifact(s) in {time.monotonic() - t0:.1f} s (loading, export and the accuracy gate "
             "included; 'convert s' is the converter alone)")


def channel_pruning_line(cp: dict[str, Any]) -> str:
    """One line on what --prune-channels removed and what distillation won back."""
    c = cp["channels"]
    line = f"channels pruned: parameters {c['params_before']:,} -> {c['params_after']:,}"
    if c.get("flops_before"):
        line += f", GFLOPs {c['flops_before'] / 1e9:.4g} -> {c['flops_after'] / 1e9:.4g}"
    from .prune import describe_distillation

    return f"{line}; {describe_distillation(cp.get('distillation'))}. The accuracy gate compares the artifact with the pruned float model."


def _summary(r: Any) -> dict[str, Any]:
    m = r.manifest
    return {"path": str(r.path), "manifest_path": str(r.manifest_path), "format": m.format, "precision": m.precision,
            "io": m.io_dtype, "sizes": m.sizes, "sparsity": m.sparsity.get("overall")}


def _row(r: Any) -> list[Any]:
    m = r.manifest
    sp = m.sparsity.get("overall")
    return [str(r.path), m.format, m.precision, f"{m.io_dtype.get('input')}/{m.io_dtype.get('output')}",
            human_size(m.sizes["raw_bytes"]), human_size(m.sizes["gzip_bytes"]), "-" if sp is None else f"{sp:.1%}",
            m.conversion.timings.get("convert_s")]
