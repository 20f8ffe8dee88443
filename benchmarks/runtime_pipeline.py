"""Pipeline throughput and latency vs a naive loop, on the int8 MobileNetV2 224 and a 640x480 video.

    python benchmarks/runtime_pipeline.py [--threads 1] [--frames 600] [--minutes 1]

1. every-frame mode on a video that decodes faster than the model: processed fps vs the
   backend's pure inference rate (target >= 95%) and vs a naive sequential read -> preprocess ->
   infer loop (target >= 1.5x when decoding and inference cost about the same);
2. glass-to-glass p50 (capture -> result) vs decode + inference (target <= 1.3x);
3. frame age p99 per 10 s window over ``--minutes`` of a real-time source faster than the model
   (one-slot buffer: it must stay flat).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_models import CACHE, ROOT, machine, mobilenet_int8  # noqa: E402

sys.path.insert(0, str(ROOT))
from edgeship.runtime import build_pipeline, open_backend, open_source  # noqa: E402
from edgeship.spec import preprocess  # noqa: E402


def make_video(path: Path, n: int, fps: float) -> Path:
    import cv2

    if path.exists():
        return path
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8), (640, 480), interpolation=cv2.INTER_CUBIC)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 480))
    for i in range(n):
        f = np.roll(base, i * 4, axis=1)
        cv2.circle(f, (320 + int(200 * np.sin(i / 15)), 240), 40, (255, 255, 255), -1)
        vw.write(f)
    vw.release()
    return path


def decode_ms(video: Path) -> float:
    import cv2

    cap = cv2.VideoCapture(str(video))
    n, t = 0, time.perf_counter()
    while cap.read()[0]:
        n += 1
    return (time.perf_counter() - t) * 1e3 / n


def infer_ms(model: Path, threads: int, n: int = 300) -> float:
    with open_backend(model, threads=threads) as b:
        x = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
        for _ in range(20):
            b.infer(x)
        t = time.perf_counter()
        for _ in range(n):
            b.infer(x)
        return (time.perf_counter() - t) * 1e3 / n


def naive_fps(model: Path, video: Path, threads: int) -> float:
    import cv2

    with open_backend(model, threads=threads) as b:
        spec = b.manifest.input_spec
        cap = cv2.VideoCapture(str(video))
        n, t = 0, time.perf_counter()
        while True:
            ok, f = cap.read()
            if not ok:
                break
            b.infer(preprocess(f, spec)[None])
            n += 1
        return n / (time.perf_counter() - t)


class AgeRecorder:
    """A sink that keeps (time, frame age ms) for every result."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float]] = []

    def open(self, info):
        self.t0 = time.monotonic()

    def write(self, frame, result):
        self.rows.append((time.monotonic() - self.t0, result.latency_ms["age"]))

    def close(self):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--minutes", type=float, default=1.0)
    a = ap.parse_args()
    model = mobilenet_int8()
    video = make_video(CACHE / f"bench_640x480_{a.frames}.mp4", a.frames, 30)
    fast = make_video(CACHE / "bench_640x480_fast.mp4", 300, 30)

    d_ms = decode_ms(video)
    i_ms = infer_ms(model, a.threads)
    naive = naive_fps(model, video, a.threads)
    s = build_pipeline(model, str(video), threads=a.threads, handle_signals=False).run()
    fps = s["processed_fps"]
    pure = 1000.0 / i_ms
    g2g = s["glass_to_glass_ms"]["p50"]

    rec = AgeRecorder()
    # a "camera" faster than the model: the file decoded as fast as possible into the one-slot buffer
    live = open_source(str(fast), loop=True, mode="latest")
    rt = build_pipeline(model, str(fast), threads=a.threads, duration=a.minutes * 60, sinks=[rec], handle_signals=False)
    rt.source = live
    rt.metrics.source = live
    rt = rt.run()
    t = np.array([r[0] for r in rec.rows])
    ages = np.array([r[1] for r in rec.rows])
    windows = []
    for w0 in np.arange(0, a.minutes * 60, 10.0):
        sel = ages[(t >= w0) & (t < w0 + 10)]
        if sel.size:
            windows.append((w0, sel.size / 10.0, float(np.percentile(sel, 99))))

    print(f"\nMachine: {machine()}; MobileNetV2 224 int8 (LiteRT, {a.threads} inference thread(s)), 640x480 mp4v video\n")
    print("| measure | value | target | met |")
    print("|---|---|---|---|")
    print(f"| decode per frame (ms) | {d_ms:.2f} | - | - |")
    print(f"| inference per frame (ms, backend.infer) | {i_ms:.2f} | - | - |")
    print(f"| pure inference rate (fps) | {pure:.1f} | - | - |")
    print(f"| naive read->preprocess->infer loop (fps) | {naive:.1f} | - | - |")
    print(f"| edgeship pipeline, every frame (fps) | {fps:.1f} | - | - |")
    print(f"| pipeline / pure inference | {fps / pure * 100:.1f}% | >= 95% | {'yes' if fps >= 0.95 * pure else 'NO'} |")
    print(f"| pipeline / naive loop | {fps / naive:.2f}x | >= 1.5x | {'yes' if fps >= 1.5 * naive else 'NO'} |")
    print(f"| glass-to-glass p50 (ms) | {g2g:.2f} | <= {1.3 * (d_ms + i_ms):.2f} (1.3 x (decode + infer)) | {'yes' if g2g <= 1.3 * (d_ms + i_ms) else 'NO'} |")
    print(f"\nReal-time source faster than the model ({rt['source_fps']:.0f} fps captured, {rt['processed_fps']:.0f} fps processed, "
          f"{rt['frames_dropped']} frames dropped by the one-slot buffer), {a.minutes:g} min:\n")
    print("| window (s) | processed fps | frame age p99 (ms) |")
    print("|---|---|---|")
    for w0, f, p in windows:
        print(f"| {w0:.0f}-{w0 + 10:.0f} | {f:.1f} | {p:.2f} |")
    if windows:
        p99s = [w[2] for w in windows]
        print(f"\nframe age p99: first window {p99s[0]:.2f} ms, last {p99s[-1]:.2f} ms, max {max(p99s):.2f} ms (flat = no build-up)")


if __name__ == "__main__":
    main()
