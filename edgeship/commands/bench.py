"""``edgeship bench``: load time, first inference, latency percentiles, throughput, peak RSS."""

from __future__ import annotations

from typing import Any

import click

from .. import formats
from ..limits import MAX_BENCH_SECONDS, MAX_THREADS, MAX_WARMUP
from ._common import FiniteRange, emit_json, format_table


@click.command("bench")
@click.argument("artifact", type=click.Path(dir_okay=False))
@click.option("--threads", type=click.IntRange(1, MAX_THREADS), default=None, help="Inference threads (default: the runtime's choice).")
@click.option("--hint", type=click.Choice(("latency", "throughput")), default="latency", show_default=True, help="OpenVINO performance hint; throughput also measures async parallel requests.")
@click.option("--duration", type=FiniteRange(0, MAX_BENCH_SECONDS, min_open=True), default=10.0, show_default=True, help="Seconds of timed inference.")
@click.option("--warmup", type=click.IntRange(0, MAX_WARMUP), default=10, show_default=True, help="Untimed inferences first.")
@click.option("--backend", type=click.Choice(formats.backend_names()), default=None, help="Override the backend chosen from the manifest / suffix.")
@click.option("--device", default="CPU", show_default=True, help="OpenVINO device: CPU, GPU, NPU, AUTO.")
@click.option("--precision", type=click.Choice(("f32", "f16", "bf16")), default=None, help="OpenVINO inference precision.")
@click.option("--save", is_flag=True, help="Write the measured latency into the artifact's manifest.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def bench(artifact: str, as_json: bool, save: bool, **options: Any) -> None:
    """Benchmark ARTIFACT (.tflite or OpenVINO .xml) on this machine.

    Times the model call on a random input in the manifest's value range, as litert-benchmark and
    benchmark_app do (OpenVINO: its own per-request latency, like benchmark_app; the Python wall
    clock around the call and edgeship's full infer with int8 conversion are shown too), and reports load time, first inference, latency min/p50/p90/p99/max,
    throughput, peak RSS and the precision the runtime actually executes (an FP32 IR may run in
    bf16 on AMX CPUs unless --precision f32).

    \b
    Example:
      edgeship bench model_int8.tflite --threads 4 --duration 20
      edgeship bench model.xml --hint throughput --json
      edgeship bench model_int8.tflite --save
    """
    from ..runtime.bench import benchmark, save_latency

    result = benchmark(artifact, **options)
    if save:
        result["saved_to"] = str(save_latency(artifact, result))
    if as_json:
        emit_json(result)
        return
    lat = result["latency_ms"]
    click.echo(f"{result['model']} on {result['backend']} {result['device']} ({result['executed_precision']}), "
               f"{result['machine']['cpu']}, {result['machine']['cores']} cores")
    click.echo(format_table(["metric", "value"], [
        ["load (ms)", result["load_ms"]], ["first inference (ms)", result["first_inference_ms"]],
        ["latency min (ms)", lat["min"]], ["latency p50 (ms)", lat["p50"]], ["latency p90 (ms)", lat["p90"]],
        ["latency p99 (ms)", lat["p99"]], ["latency max (ms)", lat["max"]], ["latency timed by", result["latency_source"]],
        ["python call p50 (ms)", result["call_ms"]["p50"]], ["edgeship infer p50 (ms)", result["e2e_ms"]["p50"]],
        [f"throughput ({result['throughput_mode']}, fps)", result["throughput_fps"]], ["peak RSS (MB)", result["peak_rss_mb"]],
        ["iterations", result["iterations"]],
    ]))
    if save:
        click.echo(f"latency saved to {result['saved_to']}")
