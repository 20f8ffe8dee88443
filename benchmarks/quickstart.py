"""Benchmark: ``edgeship quickstart`` wall time, first run (everything built) and second run (everything reused).

Target: first run under 4 minutes on the 2-core build machine, second run in seconds. Runs the
installed CLI in a fresh folder exactly as a newcomer would, then prints a markdown table with the
time per step (from the run's JSON summary) and the machine.

    python benchmarks/quickstart.py [--small] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def machine() -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from edgeship.report import machine_description

    return machine_description() + f"; load average before the run {os.getloadavg()[0]:.1f}"


def run(out: Path, small: bool) -> tuple[float, dict]:
    argv = [sys.executable, "-m", "edgeship.cli", "quickstart", "--out", str(out), "--json"] + (["--small"] if small else [])
    t = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, EDGESHIP_PROGRESS="0"))
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"quickstart failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="the CI-sized run (quickstart --small)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: a fresh temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgeship-qs-bench-") as tmp:
        out = args.out or Path(tmp) / "qs"
        first, s1 = run(out, args.small)
        second, s2 = run(out, args.small)
    print(f"Machine: {machine()}\n")
    print("| run | wall time (s) | steps rebuilt |")
    print("|---|---|---|")
    print(f"| first (fresh folder) | {first:.1f} | {sum(1 for s in s1['steps'].values() if s['ran'])} of {len(s1['steps'])} |")
    print(f"| second (same folder) | {second:.1f} | {sum(1 for s in s2['steps'].values() if s['ran'])} of {len(s2['steps'])} |")
    print("\n| step (first run) | seconds |")
    print("|---|---|")
    for step, st in s1["steps"].items():
        print(f"| {step} | {st['seconds']:.1f} |")


if __name__ == "__main__":
    main()
