"""Gated int8 conversion of a quantization-sensitive model vs a plain int8 conversion (target: <= 3x).

The model is the digits CNN of tests/helpers/sensitive.py: trained on scikit-learn's digits, then
made quantization-sensitive by one channel dominating the range of one activation tensor (plain
int8 collapses to chance). Each run is a full ``edgeship.converters.convert`` (load, SavedModel
export, conversion, manifest); the gated run adds verification, layer ranking and the search.
Runs alternate plain / gated; the median of ``--repeat`` runs is reported.

    .venv/bin/python benchmarks/gated_conversion.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("EDGESHIP_PROGRESS", "0")


def machine() -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from edgeship.report import machine_description

    return machine_description()


def run(model: Path, calib: Path, fmt: str, max_drop: float | None, out: Path) -> tuple[float, object]:
    from edgeship.converters import convert

    t0 = time.perf_counter()
    (result,) = convert(model, formats=[fmt], precision="int8", calib=calib, out_dir=out, name=f"{fmt}_{max_drop}", max_drop=max_drop)
    return time.perf_counter() - t0, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    for noisy in ("nncf", "tensorflow", "absl"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from edgeship.converters.verify import verify_artifact
    from tests.helpers.sensitive import workspace

    ws = workspace()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeship-bench-gate-") as tmp:
        for fmt in ("tflite", "openvino"):
            run(ws["sensitive"], ws["calib"], fmt, None, Path(tmp) / "warmup")  # imports, first-call compilation
            plain_t, gated_t = [], []
            for i in range(args.repeat):
                t, plain = run(ws["sensitive"], ws["calib"], fmt, None, Path(tmp) / f"plain{i}")
                plain_t.append(t)
                t, gated = run(ws["sensitive"], ws["calib"], fmt, 1.0, Path(tmp) / f"gated{i}")
                gated_t.append(t)
            drop_plain = verify_artifact(plain.path, ws["sensitive"], ws["calib"], max_drop=None).drop
            gate = gated.manifest.conversion.accuracy_gate
            p, g = statistics.median(plain_t), statistics.median(gated_t)
            rows.append((fmt, p, g, g / p, drop_plain, gate.value, gated.manifest.precision, len(gate.float_layers),
                         len(gate.steps)))
    print(f"Machine: {machine()}  (median of {args.repeat} runs, full convert() each)\n")
    print("| format | plain int8 (s) | gated int8 (s) | ratio | drop plain (pts) | drop gated (pts) | result | tensors kept float | search steps |")
    print("|---|---|---|---|---|---|---|---|---|")
    for fmt, p, g, ratio, dp, dg, prec, nf, steps in rows:
        print(f"| {fmt} | {p:.2f} | {g:.2f} | {ratio:.2f}x | {dp:.1f} | {dg:.2f} | {prec} | {nf} | {steps} |")
    worst = max(r[3] for r in rows)
    print(f"\nTarget <= 3.00x: {'met' if worst <= 3.0 else 'MISSED'} (worst {worst:.2f}x)")


if __name__ == "__main__":
    main()
