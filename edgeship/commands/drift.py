"""``edgeship drift``: field frames against an artifact's calibration profile, on the workstation."""

from __future__ import annotations

import click

from ._common import FiniteRange, echo_err, emit_json, format_table

EXAMPLES = """
\b
Example:
  edgeship drift line3_int8.tflite --data field-2026-12-01.mp4
  edgeship drift line3_int8.xml --data frames/ --max-frames 2000 --json
  edgeship calibrate calib-frames/ field-2026-12-01.mp4 --input-size 224x224 --out calib2.npz   # then recalibrate
"""


@click.command(epilog=EXAMPLES)
@click.argument("artifact", type=click.Path(exists=True, dir_okay=False))
@click.option("--data", required=True, type=click.Path(exists=True), metavar="FRAMES_OR_VIDEO",
              help="An image folder or a video recorded in the field.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Read at most N frames.")
@click.option("--psi", type=FiniteRange(min=0, min_open=True), default=None,
              help="PSI at which a statistic has drifted [the watch's default, 1.0].")
@click.option("--window", "window_s", type=FiniteRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Window of the episode search, in stream seconds [the watch's default, 5].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def drift(artifact: str, data: str, max_frames: int | None, psi: float | None, window_s: float | None, as_json: bool) -> None:
    """Compare FRAMES_OR_VIDEO with ARTIFACT's calibration profile, as the device's drift watch does.

    \b
    The artifact runs on every frame (with the runtime, as on the device). Each statistic of the
    model's input (brightness, contrast, per-channel means, focus, axis alignment) and output
    (top-1 confidence) is compared with the calibration set's by the population stability index
    over its deciles and outer tails (PSI; 0.1 small, 0.25 significant, the watch's default threshold
    1.0), over all frames and window by window in stream time (the episodes the device would have reported).
    int8 artifacts also report the share of input values on the ends of the int8 range. A drifted
    recording is a candidate for recalibration: `edgeship calibrate` can add its frames.
    """
    from ..runtime.drift import WatchCfg
    from ..runtime.drift_check import check_drift

    cfg = WatchCfg(**{k: v for k, v in (("psi", psi), ("window_s", window_s)) if v is not None})
    report = check_drift(artifact, data, cfg=cfg, max_frames=max_frames)
    if as_json:
        emit_json(report.to_dict())
        return
    rows = [(r["statistic"], r["calibration_p50"], r["data_p50"], r["psi"], "DRIFT" if r["drifted"] else "ok")
            for r in report.rows]
    click.echo(f"{data}: {report.frames} frames against the calibration profile of {artifact}")
    click.echo(format_table(["statistic", "calibration p50", "data p50", "PSI", "verdict"], rows))
    for e in report.episodes:
        end = "the end" if e["end"] is None else f"{e['end']:.1f} s"
        click.echo(f"episode: {e['start']:.1f} s to {end}: " + ", ".join(f"{k} {v:.2f}" for k, v in e["what"].items()))
    echo_err("verdict: " + ("the data has drifted from the calibration set (PSI >= "
                            f"{report.threshold:g}); consider recalibrating with these frames" if report.drifted
                            else "the data matches the calibration set"))
