"""``edgeship quickstart``: the whole workflow end to end on built-in demo data."""

from __future__ import annotations

import click

from ._common import echo_err, emit_json, format_table


@click.command("quickstart")
@click.option("--out", "out", type=click.Path(file_okay=False), default="quickstart-out", show_default=True,
              help="Output folder (models, videos, calibration sets, artifacts, runs, bundle, report).")
@click.option("--force", is_flag=True, help="Redo every step, even those whose outputs are up to date.")
@click.option("--small", is_flag=True,
              help="Fewer epochs, samples and frames (for CI); every step still runs for real.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed for the demo data and training.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the summary on stdout.")
def quickstart(out: str, force: bool, small: bool, seed: int, as_json: bool) -> None:
    """Run the whole pipeline end to end on built-in demo data, offline.

    \b
    1. trains a small CNN on scikit-learn's handwritten digits and a tiny
       detector on synthetic shapes; writes demo videos (a belt, a scene)
    2. builds calibration sets with holdout splits
    3. converts: 50% pruning, TFLite int8 and fp16, OpenVINO INT8, each
       accuracy-gated (at most 1 point of accuracy lost)
    4. verifies and benchmarks every artifact
    5. runs the runtime on the demo videos (plus the security and
       industrial apps from deployment configs)
    6. bundles for the generic-x86_64 target
    7. writes report.html (with plots) and report.md

    A second run reuses every step whose inputs and outputs are unchanged
    and takes seconds; --force redoes everything. The files under OUT are
    what examples/*.yaml use (run from the repository root).

    \b
    Example:
      edgeship quickstart
      edgeship quickstart --out /tmp/qs --json
      edgeship run --config examples/security.yaml
    """
    from ..quickstart import run_quickstart
    from ..quickstart.summary import table

    summary = run_quickstart(out, force=force, small=small, seed=seed, status=echo_err)
    if as_json:
        emit_json(summary)
        return
    click.echo(format_table(*table(summary["artifacts"])))
    for name, r in summary["runs"].items():
        click.echo(f"run {name}: {r['frames_processed']} frames at {r['processed_fps']:.0f} fps; {r['detail']}")
    for b in summary["bundles"]:
        click.echo(f"bundle: {summary['out']}/{b['path']} ({b['target']}, {b['size_bytes'] / 1024:.0f} KiB)")
    reused = " (everything reused)" if summary["reused_everything"] else ""
    click.echo(f"report: {summary['report_html']}  (and report.md); {summary['seconds']:.1f} s{reused}")
