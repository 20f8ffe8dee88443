"""Peak RSS of a real `edgeship run` process with the int8 MobileNetV2 224 (target: under 200 MB).

    python benchmarks/runtime_memory.py [--frames 300]

Runs ``edgeship run MODEL --source VIDEO --max-frames N --sink jsonl:FILE --json`` as a child
process and reads its peak resident set size with ``resource.getrusage(RUSAGE_CHILDREN)``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_models import CACHE, ROOT, machine, mobilenet_int8  # noqa: E402
from runtime_pipeline import make_video  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    a = ap.parse_args()
    model = mobilenet_int8()
    video = make_video(CACHE / "bench_640x480_600.mp4", 600, 30)
    rows = []
    for label, extra in (("jsonl sink", []), ("jsonl + http sinks", ["--sink", "http:0"])):
        with tempfile.TemporaryDirectory() as d:
            cmd = [str(Path(sys.executable).parent / "edgeship"), "run", str(model), "--source", str(video), "--max-frames",
                   str(a.frames), "--sink", f"jsonl:{d}/r.jsonl", *extra, "--json"]
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            if peak <= before:
                print(f"note: an earlier child had a higher peak ({before} KiB); figure is an upper bound", file=sys.stderr)
            s = json.loads(out.stdout)
            rows.append((label, s["frames_processed"], s["processed_fps"], peak / 1024))
    print(f"\nMachine: {machine()}; `edgeship run` with MobileNetV2 224 int8 on a 640x480 video\n")
    print("| run | frames | fps | peak RSS (MB) | under 200 MB |")
    print("|---|---|---|---|---|")
    for label, n, fps, mb in rows:
        print(f"| {label} | {n} | {fps:.1f} | {mb:.1f} | {'yes' if mb < 200 else 'NO'} |")


if __name__ == "__main__":
    main()
