"""Benchmark: MobileNetV2 (alpha 1.0, 224x224, weights=None) -> prune 50% + TFLite int8 + OpenVINO INT8.

Prints a markdown table: per artifact the conversion time, size, gzip size and latency (median
of a few single-image runs through ai_edge_litert / OpenVINO on the CPU), then the machine.
The pruned conversion (one convert() call: bridge, prune, export, both formats) is the number
that must stay under 120 s; unpruned int8 rows are added for comparison (``--no-baseline`` skips
them). Unstructured sparsity shrinks the gzip column, not the latency column.

    .venv/bin/python benchmarks/convert_mobilenetv2.py [--calib-count 64] [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("EDGESHIP_PROGRESS", "0")


def synthetic_frames(n: int, size: int = 224, seed: int = 0) -> np.ndarray:
    """Smooth random colour fields with edges: uint8 BGR frames with camera-like statistics."""
    import cv2

    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        low = rng.integers(0, 256, (7, 7, 3), dtype=np.uint8)
        img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
        for _ in range(3):
            x0, y0 = rng.integers(0, size - 40, 2)
            cv2.rectangle(img, (int(x0), int(y0)), (int(x0) + 40, int(y0) + 30), tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
        frames.append(img)
    return np.stack(frames)


def latency_tflite(path: Path, x: np.ndarray, runs: int) -> float:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=os.cpu_count())
    it.allocate_tensors()
    d = it.get_input_details()[0]
    sample = x[:1]
    if np.dtype(d["dtype"]).kind in "iu":
        scale, zero = d["quantization"]
        sample = np.clip(np.round(sample / scale + zero), -128, 127).astype(d["dtype"])
    it.set_tensor(d["index"], sample)
    it.invoke()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def latency_openvino(path: Path, x: np.ndarray, runs: int) -> float:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    req = compiled.create_infer_request()
    req.infer({0: x[:1]})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        req.infer({0: x[:1]})
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


LATENCY = {"tflite": latency_tflite, "openvino": latency_openvino}


def machine() -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from edgeship.report import machine_description

    return machine_description()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib-count", type=int, default=64)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()

    import keras

    from edgeship.calibration import RepresentativeDataset
    from edgeship.converters import convert
    from edgeship.spec import InputSpec

    work = Path(tempfile.mkdtemp(prefix="bench-mnv2-"))
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(alpha=1.0, input_shape=(224, 224, 3), weights=None)
    model_path = work / "mobilenetv2.keras"
    model.save(model_path)
    spec = InputSpec(height=224, width=224, channels=3, scale=1 / 127.5, mean=(1.0,), std=(1.0,))
    ds = RepresentativeDataset.from_arrays(synthetic_frames(args.calib_count), spec=spec, holdout=0.25)
    calib = ds.save(work / "calib.npz")
    x = ds.split("holdout")[0]

    rows = []
    t0 = time.monotonic()
    pruned = convert(model_path, formats=["tflite", "openvino"], precision="int8", calib=calib, prune=0.5,
                     out_dir=work / "pruned", name="mnv2_int8_p50")
    total_pruned = time.monotonic() - t0
    runs = [("pruned 50%", r) for r in pruned]
    if not args.no_baseline:
        runs += [("dense", r) for r in convert(model_path, formats=["tflite", "openvino"], precision="int8",
                                               calib=calib, out_dir=work / "dense", name="mnv2_int8")]
    for kind, r in runs:
        m = r.manifest
        t = m.conversion.timings
        gate = m.conversion.accuracy_gate
        rows.append([m.format, m.precision, kind, f"{t['convert_s']:.1f}",
                     f"{t['gate_s']:.1f} ({gate.status})" if "gate_s" in t else "-", f"{m.sizes['raw_bytes'] / 1e6:.2f}",
                     f"{m.sizes['gzip_bytes'] / 1e6:.2f}",
                     "-" if m.sparsity.get("overall") is None else f"{m.sparsity['overall']:.1%}",
                     f"{LATENCY[m.format](r.path, x, args.runs):.2f}"])
    t = pruned[0].manifest.conversion.timings
    print("| format | precision | weights | convert s | accuracy gate s | size MB | gzip MB | sparsity | latency ms (median) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print(f"Pruned conversion, one convert() call: {total_pruned:.1f} s total "
          f"(load {t.get('load_s', 0):.1f} s, bridge + prune {t.get('prune_s', 0):.1f} s, SavedModel export {t.get('export_s', 0):.1f} s, "
          f"TFLite {pruned[0].manifest.conversion.timings['convert_s']:.1f} s, OpenVINO {pruned[1].manifest.conversion.timings['convert_s']:.1f} s); "
          f"{args.calib_count} calibration samples.")
    print("Unstructured sparsity shrinks the gzip size, not the latency.")
    print(f"Machine: {machine()}")


if __name__ == "__main__":
    main()
