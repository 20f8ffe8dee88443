"""``edgeship calibrate``: build a representative dataset (.npz) from images, videos and cameras."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import click

from ..spec import DTYPES, LAYOUTS, InputSpec
from ._common import FiniteRange, echo_err, emit_json, format_table, output_file, size_option
from ._spec import spec_options, spec_overrides


def resolve_spec(input_size: tuple[int, int] | None, model: str | None, overrides: dict[str, Any]) -> InputSpec:
    """The InputSpec from --input-size or --model, with the options the user gave on top.

    A manifest next to an artifact wins over the defaults: its whole InputSpec is the start.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if model is None:
        h, w = input_size
        return InputSpec(height=h, width=w, **overrides)
    from .. import formats
    from ..manifest import Manifest

    manifest = Manifest.load_optional(model) if formats.is_artifact(model) else None
    if manifest is None or manifest.input_spec is None:
        from ..converters.inputs import spec_from_model

        return spec_from_model(model, input_size, **overrides)
    spec = replace(manifest.input_spec, **overrides)
    return spec.with_size(*input_size) if input_size else spec


EXAMPLES = """
\b
Example:
  edgeship calibrate images/ --input-size 224x224 --out calib.npz
  edgeship calibrate line3.mp4 rtsp://10.0.0.7/stream --duration 20 --model model.keras --out calib.npz
  edgeship calibrate digits/ --input-size 32x32 --color-order GRAY --count 500 --holdout 0.2 --json --out c.npz
"""


@click.command(epilog=EXAMPLES)
@click.argument("sources", nargs=-1, required=True)
@click.option("--input-size", callback=size_option, metavar="HxW",
              help="Model input size, e.g. 224x224 (with --model: overrides the model's, e.g. for dynamic sizes).")
@click.option("--model", type=click.Path(exists=True, dir_okay=True), help="Keras model, .tflite or .xml to read the input size from.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), callback=output_file,
              help="Output .npz file (written atomically; its folder is made when its parent exists).")
@click.option("--count", default=300, show_default=True, type=click.IntRange(min=1), help="Total samples kept (calib + holdout).")
@click.option("--holdout", default=0.2, show_default=True, type=FiniteRange(0.0, 1.0, max_open=True),
              help="Fraction set aside for accuracy verification (stratified per class).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Random seed: same seed, same dataset.")
@click.option("--dedup/--no-dedup", default=True, show_default=True, help="Drop near-identical frames.")
@click.option("--dedup-threshold", default=None, type=FiniteRange(min=0.0),
              help="Frames whose 16x16 gray thumbnails differ by at most this many gray levels in every cell are duplicates [12].")
@click.option("--duration", default=5.0, show_default=True, type=FiniteRange(min=0.0, min_open=True),
              help="Seconds to capture from each live stream or camera.")
@click.option("--timeout", default=10.0, show_default=True, type=FiniteRange(min=0.0, min_open=True),
              help="Seconds a stream may take to answer before it is an error.")
@spec_options
@click.option("--layout", type=click.Choice(LAYOUTS), help="Sample layout [NHWC, or the model's].")
@click.option("--dtype", type=click.Choice(DTYPES), help="Sample dtype the model takes [float32].")
@click.option("--labels", "labels_file", type=click.Path(exists=True, dir_okay=False),
              help="Class names in the model's output order: one per line (# comments ignored), a JSON list or {id: name} (default: sorted folder names).")
@click.option("--folder-labels/--no-folder-labels", default=True, show_default=True,
              help="Use class sub-folders of image folders as labels.")
@click.option("--array-color", type=click.Choice(["BGR", "RGB"]), default="BGR", show_default=True,
              help="Channel order of uint8 frames in .npz/.npy sources.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (summary, spec, sources) on stdout.")
def calibrate(sources, input_size, model, out, count, holdout, seed, dedup, dedup_threshold, duration, timeout,
              layout, dtype, labels_file, folder_labels, array_color, as_json, **spec_flags) -> None:
    """Build a representative dataset for int8 calibration and accuracy checks.

    SOURCE can be mixed freely: image folders (recursive; class sub-folders become labels;
    corrupt and non-image files are skipped and counted), video files (frames spread evenly over
    the whole file), live streams (rtsp://, http:// MJPEG, a camera index or /dev/videoN,
    captured for --duration seconds) and .npz/.npy arrays (uint8 frames, or float samples
    already preprocessed for the model). Prefix a path with folder:, video:, stream: or array:
    to force its kind.

    --count samples are kept in total, balanced per class when labels exist; --holdout of them
    are set aside with their labels for `edgeship verify`. Near-identical frames are dropped.
    The .npz holds float32 samples preprocessed with the InputSpec (set from --input-size or
    --model plus the preprocessing options) and its metadata as a JSON string (no pickles).
    """
    from ..calibration import build_dataset
    from ..labels import read_labels
    from ..calibration.dedup import DEFAULT_THRESHOLD
    from ..calibration.summary import summary_tables

    if input_size is None and model is None:
        raise click.UsageError("pass --input-size HxW or --model MODEL")
    if not str(out).lower().endswith(".npz"):
        raise click.BadParameter(f"expected a .npz file name, got {out!r}", param_hint="--out")
    spec = resolve_spec(input_size, model, {**spec_overrides(spec_flags), "layout": layout, "dtype": dtype})
    labels = tuple(read_labels(labels_file)) if labels_file else None
    ds = build_dataset(list(sources), spec=spec, count=count, holdout=holdout, seed=seed, dedup=dedup,
                       duration=duration, timeout=timeout, labels=labels,
                       dedup_threshold=DEFAULT_THRESHOLD if dedup_threshold is None else dedup_threshold,
                       folder_labels=folder_labels, array_color=array_color)
    path = ds.save(out)
    result = {"out": os.fspath(path), "sha256": ds.sha256, "spec": spec.to_dict(), "labels": ds.labels,
              **ds.meta["summary"], "sources": ds.meta["sources"], "elapsed_s": ds.meta.get("elapsed_s")}
    if as_json:
        emit_json(result)
        return
    for title, headers, rows in summary_tables(ds.meta):
        click.echo(f"\n{title}")
        click.echo(format_table(headers, rows))
    click.echo(f"\nInputSpec: {spec.to_json()}")
    echo_err(f"wrote {path} ({len(ds.x_calib)} calib + {len(ds.x_holdout)} holdout samples, sha256 {ds.sha256[:12]})")
