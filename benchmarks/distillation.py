"""Does half the FLOPs plus distillation keep a real model's accuracy after int8? Labelled and label-free.

    .venv/bin/python benchmarks/distillation.py [--size 64] [--alpha 0.5] [--epochs 30] [--distill 30] [--out results.json]

Issue 17's accuracy targets on a labelled task that trains here: scikit-learn's handwritten digits
(1797 real 8x8 scans, shipped in the package) upscaled to SIZE x SIZE RGB, where a MobileNet-class
model makes sense. A keras.applications MobileNetV2 (weights=None, ``--alpha`` width) is trained on
60% of the digits and tested on the other 40%. Then, with :func:`edgeship.converters.structured.prune_structured`:

- **labelled**: half the FLOPs removed, then distilled from the unpruned model on frames of the
  training digits as a camera over a line would see them (each shifted by up to 3 pixels, brightness
  and contrast jittered, ``--copies`` per digit) with their labels (label loss + distillation);
- **label-free**: the same cut, distilled on the same frames without their labels (the teacher's
  outputs are the only targets): the factory's hours of unlabelled video;
- **no distillation**: the same cut alone, for reference.

Every model is converted to int8 TFLite by :func:`edgeship.converters.convert` (calibrated on 200
training images) and its top-1 is measured on the test digits through the device runtime
(``open_backend``). Targets: labelled within 1 point of the unpruned int8 model, label-free within 2
points, and prune + distil under 10 minutes on this 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from photos import machine  # noqa: E402

T0 = time.monotonic()


def progress(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


def digits(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits as uint8 BGR frames of size x size (ink dark on white, like a printed label) and labels."""
    import cv2
    from sklearn.datasets import load_digits

    d = load_digits()
    frames = []
    for img in d.images:
        gray = (255 - img * (255.0 / 16.0)).astype(np.uint8)
        big = cv2.resize(gray, (size, size), interpolation=cv2.INTER_CUBIC)
        frames.append(cv2.cvtColor(big, cv2.COLOR_GRAY2BGR))
    return np.stack(frames), d.target.astype(np.int64)


def camera_frames(frames: np.ndarray, copies: int, seed: int = 0) -> np.ndarray:
    """Each image shifted by up to 3 px, brightness and contrast jittered, ``copies`` times (in that order)."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(copies):
        for f in frames:
            dx, dy = rng.integers(-3, 4, size=2)
            m = np.float32([[1, 0, dx], [0, 1, dy]])
            moved = cv2.warpAffine(f, m, (f.shape[1], f.shape[0]), borderMode=cv2.BORDER_REPLICATE)
            gain, bias = rng.uniform(0.85, 1.15), rng.uniform(-20, 20)
            out.append(np.clip(moved.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8))
    return np.stack(out)


def train_teacher(x: np.ndarray, y: np.ndarray, size: int, alpha: float, epochs: int) -> Any:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=alpha, weights=None, classes=10)
    for layer in model.layers:  # keras.applications' BatchNorm momentum (0.999) needs far more steps than 1078 digits give
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def int8_top1(model: Any, calib: Any, x_test: np.ndarray, y_test: np.ndarray, out: Path, name: str) -> float:
    """Top-1 (%) of ``model`` converted to int8 TFLite, run through the device runtime on the test samples."""
    from edgeship.converters.convert import convert
    from edgeship.runtime.backends import open_backend

    [r] = convert(model, formats=["tflite"], precision="int8", calib=calib, out_dir=out, name=name, max_drop=None)
    with open_backend(r.path) as b:
        scores = np.concatenate([b.infer(x_test[i:i + 1])[0] for i in range(len(x_test))])
    return float(np.mean(scores.argmax(axis=1) == y_test) * 100.0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64, help="input height = width (default 64)")
    ap.add_argument("--alpha", type=float, default=0.5, help="MobileNetV2 width multiplier (default 0.5)")
    ap.add_argument("--epochs", type=int, default=30, help="teacher training epochs (default 30)")
    ap.add_argument("--distill", type=int, default=30, help="distillation epochs (default 30)")
    ap.add_argument("--flops", type=float, default=0.5, help="fraction of the FLOPs removed (default 0.5)")
    ap.add_argument("--copies", type=int, default=2, help="camera frames per training digit (default 2)")
    ap.add_argument("--out", type=Path, help="also write the results as JSON")
    args = ap.parse_args(argv)

    from edgeship.calibration import RepresentativeDataset
    from edgeship.converters.structured import prune_structured
    from edgeship.spec import InputSpec

    host = machine()
    frames, y = digits(args.size)
    order = np.random.default_rng(0).permutation(len(y))
    n_train = int(0.6 * len(y))
    tr, te = order[:n_train], order[n_train:]
    spec = InputSpec(height=args.size, width=args.size, channels=3)  # RGB, pixels / 255
    seen = camera_frames(frames[tr], args.copies)  # what the line camera gives
    labelled = RepresentativeDataset.from_arrays(seen, np.tile(y[tr], args.copies), spec=spec,
                                                 labels=[str(i) for i in range(10)], holdout=0.15)
    unlabelled = RepresentativeDataset.from_arrays(seen, spec=spec, holdout=0.15)
    test = RepresentativeDataset.from_arrays(frames[te], y[te], spec=spec, holdout=0.0)
    x_test, y_test = test.split("calib")
    train = RepresentativeDataset.from_arrays(frames[tr], y[tr], spec=spec, holdout=0.0)
    x_train, y_train = train.split("all")
    calib = RepresentativeDataset.from_arrays(x_train[:200], spec=spec, holdout=0.0)

    progress(f"teacher: MobileNetV2 alpha {args.alpha} at {args.size}x{args.size}, {len(x_train)} training digits, "
             f"{args.epochs} epochs")
    t = time.monotonic()
    teacher = train_teacher(x_train, y_train, args.size, args.alpha, args.epochs)
    train_s = time.monotonic() - t
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="edgeship-distillation-") as work:
        work_dir = Path(work)
        rows["unpruned"] = {"top1": int8_top1(teacher, calib, x_test, y_test, work_dir, "unpruned"), "seconds": None,
                            "flops": None}
        progress(f"unpruned int8 top-1 {rows['unpruned']['top1']:.2f}% (trained in {train_s:.0f} s)")
        for name, data, epochs, use_labels in (("no distillation", None, 0, False), ("labelled", labelled, args.distill, True),
                                               ("label-free", unlabelled, args.distill, False)):
            progress(f"{name}: removing {args.flops:.0%} of the FLOPs" + (f", {epochs} distillation epochs" if epochs else ""))
            t = time.monotonic()
            pruned, report = prune_structured(teacher, flops=args.flops, dataset=data, distill_epochs=epochs,
                                              distill_labels=use_labels)
            seconds = time.monotonic() - t
            c = report.channels
            rows[name] = {"top1": int8_top1(pruned, calib, x_test, y_test, work_dir, name.replace(" ", "_")),
                          "seconds": round(seconds, 1), "flops": (c["flops_before"], c["flops_after"]),
                          "trunks": c.get("trunks"), "distillation": report.distillation}
            progress(f"{name}: int8 top-1 {rows[name]['top1']:.2f}% (prune + distil {seconds:.0f} s)")
    base = rows["unpruned"]["top1"]
    print("| model | FLOPs | int8 top-1 (test) | vs unpruned | prune + distil |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        flops = "-" if r["flops"] is None else f"{r['flops'][0] / 1e6:.1f} M -> {r['flops'][1] / 1e6:.1f} M"
        delta = "" if name == "unpruned" else f"{r['top1'] - base:+.2f} points"
        secs = "-" if r["seconds"] is None else f"{r['seconds']:.0f} s"
        print(f"| {name} | {flops} | {r['top1']:.2f}% | {delta} | {secs} |")
    print(f"\nMachine: {host['cpu']}, {host['cores']} cores; {host['date']}. MobileNetV2 alpha {args.alpha} at "
          f"{args.size}x{args.size} trained {args.epochs} epochs on {len(x_train)} digits ({train_s:.0f} s), tested on "
          f"{len(x_test)}; {args.distill} distillation epochs on {len(labelled.split('calib')[0])} camera-like frames of the "
          f"training digits (with and without labels; {len(labelled.split('holdout')[0])} more measure the fidelity); "
          f"int8 TFLite through the runtime.")
    if args.out:
        args.out.write_text(json.dumps({"machine": host, "settings": vars(args) | {"out": str(args.out)}, "results": rows},
                                       indent=2, default=str))


if __name__ == "__main__":
    main()
