"""Does structured channel pruning make int8 models faster? Unpruned vs pruned, timed by the vendors' own tools.

    .venv/bin/python benchmarks/channel_pruning.py --quick        # smoke run: MobileNetV2 96x96, 2 rounds
    .venv/bin/python benchmarks/channel_pruning.py [--models MobileNetV2,ResNet50,EfficientNetB0] [--size 224]
        [--flops 0.5] [--rounds 5] [--runs 100] [--threads 2] [--calib 32] [--out results.json]

For every keras.applications model (``weights=None``: random weights, no download): build it,
remove ``--flops`` of its FLOPs with :func:`edgeship.converters.channels.prune_channels` twice (one
ratio for every group, ``trunks="prune"``, and ``trunks="keep"``: the residual trunks whole, the cut
on the blocks' inner channels; the default, ``auto``, picks one per model), and convert the three models to int8 TFLite and int8 OpenVINO IR with
:func:`edgeship.converters.convert`,
calibrated on random crops of the colour photographs shipped with scikit-image (astronaut, cat,
coffee, rocket, motorcycle, Hubble deep field), preprocessed the way each model expects.
Latency is then measured with ``litert-benchmark`` (ai-edge-litert) and ``benchmark_app``
(OpenVINO, ``-hint none -nstreams 1 -nthreads N -api sync``: one synchronous request on N threads,
as in runtime_bench_vs_vendors.py). The machine's speed drifts, so the measurements alternate:
every round times the three variants back to back with each tool, and the order flips every
round. The table shows the median of the per-round p50s. Random weights do not change the
latency of a dense int8 model; the accuracy lost by pruning is not measured here (fine-tune first).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("EDGESHIP_PROGRESS", "0")

from benchmarks.photos import machine, random_crops  # noqa: E402

VARIANTS = ("unpruned", "uniform", "trunks")  # uniform: prune_channels(trunks="prune"); trunks: trunks="keep"
PRUNED = VARIANTS[1:]
FORMATS = {"tflite": "litert-benchmark", "openvino": "benchmark_app"}  # artifact format -> vendor tool
# keras.applications model -> the InputSpec fields of its preprocessing (pixels -> model input)
MODELS: dict[str, dict[str, Any]] = {
    "MobileNetV2": {"scale": 1 / 127.5, "mean": (1.0,), "std": (1.0,)},  # RGB in [-1, 1]
    "ResNet50": {"color_order": "BGR", "scale": 1.0, "mean": (103.939, 116.779, 123.68), "std": (1.0,)},  # caffe
    "EfficientNetB0": {"scale": 1.0, "mean": (0.0,), "std": (1.0,)},  # RGB 0..255 (the model rescales itself)
}
FULL = {"models": "MobileNetV2,ResNet50,EfficientNetB0", "size": 224, "rounds": 5, "runs": 100, "calib": 32}
QUICK = {"models": "MobileNetV2", "size": 96, "rounds": 2, "runs": 30, "calib": 16}
_T0 = time.monotonic()


def progress(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


def fail(msg: str) -> None:
    sys.exit(f"error: {msg}")


# ---- the vendor tools (runtime_bench_vs_vendors.py's helpers) -----------------------------------
def load_vendor_helpers() -> Any:
    """runtime_bench_vs_vendors.py as a module (importing it only defines functions)."""
    path = HERE / "runtime_bench_vs_vendors.py"
    spec = importlib.util.spec_from_file_location("runtime_bench_vs_vendors", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


VENDORS = load_vendor_helpers()  # litert_p50(model, threads, runs) and median_ms(benchmark_app stdout)


def check_tools() -> None:
    for tool in FORMATS.values():
        path = VENDORS.BIN / tool
        if not os.access(path, os.X_OK):
            fail(f"{tool} not found at {path} (install ai-edge-litert and openvino in this venv)")


def litert_p50(model: Path, threads: int, runs: int) -> float:
    return VENDORS.litert_p50(model, threads, runs)


def benchmark_app_p50(model: Path, threads: int, runs: int, shape: list[int]) -> float:
    cmd = [str(VENDORS.BIN / "benchmark_app"), "-m", str(model), "-d", "CPU", "-hint", "none", "-nstreams", "1",
           "-api", "sync", "-nthreads", str(threads), "-niter", str(runs), "-shape", str(shape).replace(" ", "")]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    ms = VENDORS.median_ms(out.stdout)
    if ms is None:
        raise RuntimeError(f"no 'Median:' latency in benchmark_app's output for {model.name}")
    return ms


def calibration_set(name: str, frames: np.ndarray) -> Any:
    """The frames preprocessed for model ``name`` (no holdout: the accuracy gate is off)."""
    from edgeship.calibration import RepresentativeDataset
    from edgeship.spec import InputSpec

    size = frames.shape[1]
    spec = InputSpec(height=size, width=size, channels=3, **MODELS[name])
    return RepresentativeDataset.from_arrays(frames, spec=spec, holdout=0.0)


# ---- models and artifacts ----------------------------------------------------------------------
@dataclass
class Variant:
    """One model (unpruned or pruned) and its int8 artifacts."""

    artifacts: dict[str, Path]  # format -> artifact path
    shape: list[int]  # the OpenVINO input shape (batch 1)
    sizes_bytes: dict[str, int]
    convert_s: float


@dataclass
class Pruned:
    """What one pruning of the model removed."""

    params_after: int
    flops_after: int | None
    ratio: float
    seconds: float


@dataclass
class Result:
    model: str
    size: int
    params_before: int
    flops_before: int | None
    pruned: dict[str, Pruned] = field(default_factory=dict)  # variant -> its pruning
    variants: dict[str, Variant] = field(default_factory=dict)
    p50_ms: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # format -> variant -> per-round p50s

    def median(self, fmt: str, variant: str) -> float:
        return statistics.median(self.p50_ms[fmt][variant])

    def speedup(self, fmt: str, variant: str) -> float:
        return self.median(fmt, "unpruned") / self.median(fmt, variant)


def build_model(name: str, size: int) -> Any:
    import keras

    keras.utils.set_random_seed(0)
    return getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3))


def convert_int8(model: Any, dataset: Any, out_dir: Path, name: str) -> Variant:
    from edgeship.converters.convert import convert

    t0 = time.monotonic()
    results = convert(model, formats=list(FORMATS), precision="int8", calib=dataset, out_dir=out_dir, name=name,
                      max_drop=None)
    seconds = time.monotonic() - t0
    by_format = {r.format: r for r in results}
    ov_input = by_format["openvino"].manifest.inputs[0].shape
    return Variant(artifacts={f: r.path for f, r in by_format.items()},
                   shape=[1] + [int(d) if d and int(d) > 0 else 1 for d in ov_input[1:]],
                   sizes_bytes={f: int(r.manifest.sizes["raw_bytes"]) for f, r in by_format.items()},
                   convert_s=round(seconds, 1))


def prepare(name: str, size: int, flops: float, frames: np.ndarray, work: Path) -> Result:
    """Build, prune and convert one model: its Result with both variants' artifacts (not yet timed)."""
    import keras

    from edgeship.converters.channels import prune_channels

    progress(f"{name} {size}x{size}: building (weights=None) and pruning {flops:.0%} of the FLOPs, uniform and keeping trunks")
    model = build_model(name, size)
    models = {"unpruned": model}
    res = None
    for variant in PRUNED:
        models[variant], report = prune_channels(model, flops=flops, trunks="keep" if variant == "trunks" else "prune")
        res = res or Result(name, size, report.params_before, report.flops_before)
        res.pruned[variant] = Pruned(report.params_after, report.flops_after, report.ratio, report.seconds)
        progress(f"{name} {variant}: params {report.params_before:,} -> {report.params_after:,}, GFLOPs "
                 f"{gflops(report.flops_before)} -> {gflops(report.flops_after)} (channel ratio {report.ratio:.3f}, "
                 f"{report.seconds:.1f} s)")
    dataset = calibration_set(name, frames)
    for variant, m in models.items():
        progress(f"{name} {variant}: int8 TFLite + OpenVINO ({len(dataset.x_calib)} calibration crops)")
        res.variants[variant] = convert_int8(m, dataset, work / f"{name}_{variant}", f"{name.lower()}_{size}_{variant}")
        progress(f"{name} {variant}: converted in {res.variants[variant].convert_s:.0f} s")
    del model, models
    keras.backend.clear_session()
    gc.collect()
    return res


# ---- timing --------------------------------------------------------------------------------------
def timers(res: Result, threads: int, runs: int) -> dict[str, Callable[[str], float]]:
    """format -> (variant -> one p50 in ms from that format's vendor tool)."""
    return {
        "tflite": lambda v: litert_p50(res.variants[v].artifacts["tflite"], threads, runs),
        "openvino": lambda v: benchmark_app_p50(res.variants[v].artifacts["openvino"], threads, runs, res.variants[v].shape),
    }


def measure(res: Result, rounds: int, threads: int, runs: int) -> None:
    """``rounds`` rounds; each times unpruned and pruned back to back with both tools, the order flipping every round."""
    res.p50_ms = {f: {v: [] for v in VARIANTS} for f in FORMATS}
    timer = timers(res, threads, runs)
    for r in range(rounds):
        order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
        tools = list(FORMATS) if r % 2 == 0 else list(FORMATS)[::-1]
        for fmt in tools:
            for variant in order:
                res.p50_ms[fmt][variant].append(timer[fmt](variant))
        progress(f"{res.model} round {r + 1}/{rounds}: " + "; ".join(
            f"{FORMATS[f]} " + " / ".join(f"{res.p50_ms[f][v][-1]:.2f}" for v in VARIANTS) + " ms" for f in FORMATS))


# ---- report --------------------------------------------------------------------------------------
def gflops(flops: int | None) -> str:
    return "-" if flops is None else f"{flops / 1e9:.2f}"


LABELS = {"uniform": "uniform", "trunks": "keep trunks"}


def table(results: list[Result]) -> str:
    head = ["model", "pruning", "params", "GFLOPs", "TFLite int8 ms", "speed-up", "OpenVINO int8 ms", "speed-up"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        for v in PRUNED:
            p = r.pruned[v]
            cells = [f"{r.model} ({r.size})", LABELS[v], f"{r.params_before / 1e6:.2f} M -> {p.params_after / 1e6:.2f} M",
                     f"{gflops(r.flops_before)} -> {gflops(p.flops_after)}"]
            for fmt in FORMATS:
                cells += [f"{r.median(fmt, 'unpruned'):.2f} -> {r.median(fmt, v):.2f}", f"{r.speedup(fmt, v):.2f}x"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(results: list[Result], args: argparse.Namespace, host: dict[str, Any]) -> None:
    print(table(results))
    print(f"\nMachine: {host['cpu']}, {host['cores']} cores ({host['arch']}); {host['date']}. "
          f"int8 weights and activations, {args.threads} thread(s); p50 = median of {args.rounds} per-round medians "
          f"of {args.runs} runs (litert-benchmark; benchmark_app -hint none -nstreams 1 -api sync). "
          f"Pruned: prune_channels(flops={args.flops}) with one ratio for every group (uniform) and with "
          f"trunks='keep'; FLOPs = 2 x MACs of conv/dense layers.")
    print(f"\nPer-round p50s (ms), {' / '.join(VARIANTS)}:")
    for r in results:
        for fmt in FORMATS:
            print(f"  {r.model} {FORMATS[fmt]}: " + " / ".join(str([round(x, 3) for x in r.p50_ms[fmt][v]]) for v in VARIANTS))


def to_json(results: list[Result], args: argparse.Namespace, host: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for r in results:
        row = {k: v for k, v in asdict(r).items() if k not in ("variants", "p50_ms")}
        row["variants"] = {v: {"sizes_bytes": x.sizes_bytes, "convert_s": x.convert_s} for v, x in r.variants.items()}
        row["latency"] = {fmt: {"tool": FORMATS[fmt], "p50_ms": {v: round(r.median(fmt, v), 4) for v in VARIANTS},
                                "per_round_p50_ms": r.p50_ms[fmt],
                                "speedup": {v: round(r.speedup(fmt, v), 4) for v in PRUNED}} for fmt in FORMATS}
        rows.append(row)
    settings = {k: getattr(args, k) for k in ("models", "size", "flops", "rounds", "runs", "threads", "calib", "quick")}
    return {"machine": host, "settings": settings, "results": rows}


# ---- command line -------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--models", help=f"comma-separated keras.applications models, of {', '.join(MODELS)} "
                                     f"(default: all; --quick: {QUICK['models']})")
    ap.add_argument("--size", type=int, help=f"input height = width in pixels (default {FULL['size']}; --quick {QUICK['size']})")
    ap.add_argument("--flops", type=float, default=0.5, help="fraction of the FLOPs pruning removes (default 0.5)")
    ap.add_argument("--rounds", type=int, help=f"alternating timing rounds (default {FULL['rounds']}; --quick {QUICK['rounds']})")
    ap.add_argument("--runs", type=int, help=f"inferences per tool call (default {FULL['runs']}; --quick {QUICK['runs']})")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="inference threads (default: all cores)")
    ap.add_argument("--calib", type=int, help=f"calibration crops (default {FULL['calib']}; --quick {QUICK['calib']})")
    ap.add_argument("--out", type=Path, help="also write the results as JSON to this file")
    ap.add_argument("--quick", action="store_true", help="smoke run: MobileNetV2 at 96x96, 2 rounds of 30 runs")
    args = ap.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.models = [_model_name(m) for m in args.models.split(",") if m.strip()]
    if not args.models or args.size < 32 or not 0 < args.flops < 1 or min(args.rounds, args.runs, args.threads, args.calib) < 1:
        ap.error("need at least one model, --size >= 32, 0 < --flops < 1 and positive --rounds/--runs/--threads/--calib")
    return args


def _model_name(name: str) -> str:
    names = {m.lower(): m for m in MODELS}
    if name.strip().lower() not in names:
        fail(f"unknown model {name.strip()!r}; expected some of {', '.join(MODELS)}")
    return names[name.strip().lower()]


def main(argv: list[str] | None = None) -> None:
    from edgeship.errors import EdgeshipError

    args = parse_args(argv)
    check_tools()
    host = machine()
    frames = np.stack(random_crops(args.calib, args.size))
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="edgeship-channel-pruning-") as work:
            for name in args.models:
                res = prepare(name, args.size, args.flops, frames, Path(work))
                measure(res, args.rounds, args.threads, args.runs)
                results.append(res)
    except subprocess.CalledProcessError as e:
        last = (e.stderr or e.stdout or "").strip().splitlines()[-1:] or ["no output"]
        fail(f"{Path(e.cmd[0]).name} failed (exit {e.returncode}): {last[0]}")
    except (EdgeshipError, RuntimeError) as e:
        fail(f"{type(e).__name__}: {e}".splitlines()[0])
    report(results, args, host)
    if args.out:
        args.out.write_text(json.dumps(to_json(results, args, host), indent=2, default=str) + "\n")
        progress(f"wrote {args.out}")


if __name__ == "__main__":
    main()
