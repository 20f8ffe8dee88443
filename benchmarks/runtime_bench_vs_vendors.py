"""`edgeship bench` p50 vs the vendors' own tools on the same int8 MobileNetV2 224 artifact.

    python benchmarks/runtime_bench_vs_vendors.py [--threads 1] [--rounds 3] [--runs 600]

LiteRT: `edgeship bench` vs `litert-benchmark` (ai-edge-litert). OpenVINO (which reads the same
.tflite directly): `edgeship bench --backend openvino --threads N` vs `benchmark_app -hint none
-nstreams 1 -nthreads N -api sync` (its UI takes -nthreads only without a hint). Both end up with
the same compiled configuration, which benchmark_app prints: PERFORMANCE_HINT LATENCY, NUM_STREAMS
1, INFERENCE_NUM_THREADS N, ENABLE_CPU_PINNING on. Both time the synchronous model call on an
input that is already in the model's dtype, on a static batch of 1 (benchmark_app's ``-shape``;
edgeship fixes the .tflite's dynamic batch to 1 at load), and both report OpenVINO's own per-request latency
(benchmark_app's Python code reads ``request.latency``); edgeship's Python wall clock around the
same call is printed too.
Tools run interleaved (alternating which goes first) for ``--rounds`` rounds and the median p50 of each is compared (the machine
is shared, so single runs are noisy). Target: edgeship within 5% of the vendor tool.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_models import ROOT, machine, mobilenet_int8  # noqa: E402

BIN = Path(sys.executable).parent


CALL_P50: dict[str, list[float]] = {}


def edgeship_p50(model: Path, threads: int, runs: int, backend: str) -> float:
    dur = max(2.0, runs * 0.004)
    out = subprocess.run([str(BIN / "edgeship"), "bench", str(model), "--threads", str(threads), "--duration", f"{dur:.1f}",
                          "--warmup", "20", "--backend", backend, "--json"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    res = json.loads(out.stdout)
    CALL_P50.setdefault(backend, []).append(float(res["call_ms"]["p50"]))
    return float(res["latency_ms"]["p50"])


def litert_p50(model: Path, threads: int, runs: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        res = Path(d) / "r.json"
        subprocess.run([str(BIN / "litert-benchmark"), "--model", str(model), "--num_runs", str(runs), "--warmup_runs", "20",
                        "--num_threads", str(threads), "--result_json", str(res)], capture_output=True, text=True, check=True)
        return float(json.loads(res.read_text())["latency"]["median_ms"])


def benchmark_app_p50(model: Path, threads: int, runs: int) -> float:
    out = subprocess.run([str(BIN / "benchmark_app"), "-m", str(model), "-d", "CPU", "-hint", "none", "-nstreams", "1", "-api", "sync",
                          "-nthreads", str(threads), "-niter", str(runs), "-shape", "[1,224,224,3]"], capture_output=True, text=True, check=True)
    ms = median_ms(out.stdout)
    if ms is None:
        raise SystemExit(f"could not find the median latency in benchmark_app's output:\n{out.stdout[-2000:]}")
    return ms


UNITS_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "μs": 1e-3, "ms": 1.0, "s": 1e3, "sec": 1e3}


def median_ms(text: str) -> float | None:
    """benchmark_app's ``Median: 0.84 ms`` (or ``Median: 843.21 us``, ``ns``, ``s``) in milliseconds, else None."""
    m = re.search(r"Median:\s+([\d.]+(?:[eE][-+]?\d+)?)\s*(ns|us|µs|μs|ms|sec|s)\b", text)
    return float(m.group(1)) * UNITS_MS[m.group(2)] if m else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=600)
    a = ap.parse_args()
    model = mobilenet_int8()
    pairs = {
        "LiteRT": (lambda: edgeship_p50(model, a.threads, a.runs, "tflite"), lambda: litert_p50(model, a.threads, a.runs), "litert-benchmark"),
        "OpenVINO": (lambda: edgeship_p50(model, a.threads, a.runs, "openvino"), lambda: benchmark_app_p50(model, a.threads, a.runs), "benchmark_app"),
    }
    rows = []
    for name, (ours, theirs, tool) in pairs.items():
        e, v = [], []
        for r in range(a.rounds):  # alternate who goes first: the machine drifts within a round
            if r % 2:
                v.append(theirs())
                e.append(ours())
            else:
                e.append(ours())
                v.append(theirs())
        pe, pv = statistics.median(e), statistics.median(v)
        rows.append((name, tool, pe, pv, (pe - pv) / pv * 100, e, v))
    print(f"\nMachine: {machine()}; model: MobileNetV2 224 int8 (int8 I/O), {a.threads} thread(s), "
          f"median of {a.rounds} rounds x {a.runs} runs\n")
    print("| backend | vendor tool | edgeship bench p50 (ms) | vendor p50 (ms) | difference | within 5% |")
    print("|---|---|---|---|---|---|")
    for name, tool, pe, pv, d, e, v in rows:
        print(f"| {name} | {tool} | {pe:.3f} | {pv:.3f} | {d:+.1f}% | {'yes' if abs(d) <= 5 else 'NO'} |")
    print("\nper-round p50s (edgeship / vendor):")
    for name, tool, *_, e, v in rows:
        print(f"  {name}: {[round(x, 3) for x in e]} / {[round(x, 3) for x in v]}")
    print("\nedgeship's Python wall clock around the same call, median p50 (ms): "
          + ", ".join(f"{k}: {statistics.median(v):.3f}" for k, v in CALL_P50.items()))


if __name__ == "__main__":
    main()
