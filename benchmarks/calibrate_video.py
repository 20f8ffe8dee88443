"""Benchmark: calibrating 300 samples from a 640x480, 30 s (900 frames) video.

Target: under 10 s on the 2-core build machine. Writes the video (real digits moving on a belt,
with a static stretch), times ``build_dataset`` (best and median of --repeat runs, cold first run
included in the table) and prints a markdown table with the machine.

    python benchmarks/calibrate_video.py [--repeat 3] [--input-size 224x224]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeship.calibration import build_dataset  # noqa: E402
from edgeship.spec import InputSpec, parse_size  # noqa: E402
from tests.helpers.data import moving_digit_frames, write_video  # noqa: E402


def machine() -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from edgeship.report import machine_description

    return machine_description()


def make_video(path: Path, seconds: int = 30, fps: int = 30) -> Path:
    n = seconds * fps
    moving, _ = moving_digit_frames(n - 150, size=(480, 640), digit_px=160)
    still = moving[len(moving) // 2]
    frames = moving[: len(moving) // 2] + [still] * 150 + moving[len(moving) // 2:]
    return write_video(path, frames, fps=fps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--input-size", default="224x224")
    ap.add_argument("--count", type=int, default=300)
    args = ap.parse_args()
    os.environ.setdefault("EDGESHIP_PROGRESS", "0")
    h, w = parse_size(args.input_size)
    spec = InputSpec(h, w)
    with tempfile.TemporaryDirectory() as tmp:
        video = make_video(Path(tmp) / "belt_640x480_30s.mp4")
        times, ds = [], None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            ds = build_dataset([str(video)], spec=spec, count=args.count, seed=0)
            times.append(time.perf_counter() - t0)
        src = ds.meta["sources"][0]
    print(f"Machine: {machine()}\n")
    print("| task | video | input | kept (calib+holdout) | frames decoded | duplicates dropped | first run s | median s | best s | target |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| calibrate {args.count} samples | 640x480, 30 s, {src['details']['frames']} frames, mp4v | {h}x{w} float32 "
          f"| {len(ds)} ({len(ds.x_calib)}+{len(ds.x_holdout)}) | {src['read']} | {src['duplicates']} "
          f"| {times[0]:.2f} | {statistics.median(times):.2f} | {min(times):.2f} | < 10 s: {'PASS' if max(times) < 10 else 'FAIL'} |")


if __name__ == "__main__":
    main()
