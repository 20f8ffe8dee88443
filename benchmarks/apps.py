"""What the use-case apps cost per frame, and what the motion gate saves.

    python benchmarks/apps.py [--frames 2000]

1. per-call cost of the app logic on the camera thread: motion gate (640x480 and 1920x1080),
   zone test + dwell tracking (20 boxes, 4 zones), event enqueue in the webhook's SQLite outbox
   (fsync'd), an industrial counter update;
2. the shapes demo deployment (int8 tiny detector, 320x240 video) with and without the security
   app and its motion gate: processed fps and the share of frames the gate skipped.
Prints markdown tables and the machine they ran on. Builds the demo data in benchmarks/.cache.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache"
sys.path.insert(0, str(ROOT))


def per_call(fn, n: int) -> float:
    """Median microseconds per call over ``n`` calls (after 20 warm-up calls)."""
    for _ in range(20):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e6)


def micro(n: int) -> list[tuple[str, float]]:
    from edgeship.runtime.apps.counters import Counters
    from edgeship.runtime.apps.motion import MotionGate
    from edgeship.runtime.apps.outbox import Outbox
    from edgeship.runtime.apps.zones import Zone, ZoneTracker, zone_hits
    from edgeship.runtime.types import Frame

    rows = []
    rng = np.random.default_rng(0)
    for w, h in ((640, 480), (1920, 1080)):
        gate = MotionGate()
        frames = [Frame(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), i, 0.0, 0.0) for i in range(4)]
        k = iter(range(10**9))
        rows.append((f"motion gate, {w}x{h} frame", per_call(lambda: gate.should_infer(frames[next(k) % 4]), n)))
    zones = [Zone(f"z{i}", [(i * 0.25, 0), (i * 0.25 + 0.25, 0), (i * 0.25 + 0.25, 1), (i * 0.25, 1)], normalized=True,
                  min_dwell_frames=3) for i in range(4)]
    tracker = ZoneTracker(zones)
    xy = rng.uniform(0, 600, (20, 2))
    boxes = np.concatenate([xy, xy + 40], axis=1)
    scores, cls = rng.uniform(0.5, 1, 20), rng.integers(0, 3, 20)
    t = iter(range(10**9))
    rows.append(("zones + dwell, 20 boxes x 4 zones",
                 per_call(lambda: tracker.update(zone_hits(zones, boxes, scores, cls, ("a", "b", "c"), (640, 480)),
                                                 next(t) * 0.03), n)))
    with tempfile.TemporaryDirectory() as tmp:
        box = Outbox(Path(tmp) / "q.sqlite")
        ids = iter(range(10**9))
        rows.append(("webhook outbox enqueue (SQLite, synchronous=FULL)",
                     per_call(lambda: box.put(str(next(ids)), b'{"event": 1}' * 20), max(200, n // 10))))
        box.close()
        c = Counters(Path(tmp) / "c.sqlite")
        rows.append(("inspection counter update (SQLite)", per_call(lambda: c.record("ok", True), max(200, n // 10))))
        c.close()
    return rows


def deployment(demo: Path, frames: int) -> list[tuple[str, float, int, int, float]]:
    from edgeship.runtime import build_pipeline
    from edgeship.runtime.apps.security import SecurityApp
    from edgeship.runtime.apps.zones import Zone

    rows = []
    model, video = demo / "models" / "shapes_int8.tflite", demo / "videos" / "shapes.mp4"
    for name, app, motion in (("detector only", False, False), ("+ security app", True, False),
                              ("+ security app + motion gate", True, True)):
        sinks, gates = [], []
        if app:
            sec = SecurityApp([Zone("yard", [(0.5, 0.5), (1, 0.5), (1, 1), (0.5, 1)], normalized=True)],
                              motion={} if motion else None)
            sinks, gates = [sec], sec.gates
        best = None
        for _ in range(3):  # best of 3: the machine may be shared
            pipe = build_pipeline(str(model), str(video), threshold=0.5, sinks=sinks, gates=gates, loop=True,
                                  max_frames=frames, threads=1, handle_signals=False)
            s = pipe.run()
            taken = s.frames_processed + s.frames_skipped_gate
            row = (name, taken / s.duration_s, s.frames_processed, s.frames_skipped_gate,
                   s.latency_ms["sinks"]["p50"])
            best = row if best is None or row[1] > best[1] else best
        rows.append(best)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=2000)
    args = ap.parse_args()
    from edgeship.demo import build_demo
    from edgeship.runtime.bench import machine_info

    demo = CACHE / "demo"
    build_demo(demo)
    m = machine_info()
    print(f"Machine: {m['cpu']}, {m['cores']} cores, {m['arch']}\n")
    print("| app step (camera thread) | median per call |\n|---|---|")
    for name, us in micro(args.frames):
        print(f"| {name} | {us:.0f} µs |")
    print(f"\n| shapes demo, 320x240, {args.frames} frames, 1 thread, best of 3 | frames/s through the pipeline "
          "| inferred | skipped by the gate | sinks+app stage p50 |")
    print("|---|---|---|---|---|")
    for name, fps, done, skipped, app_ms in deployment(demo, args.frames):
        print(f"| {name} | {fps:.0f} | {done} | {skipped} | {app_ms:.3f} ms |")


if __name__ == "__main__":
    main()
