"""Many cameras, one model: one 4-camera `edgeship run` process against 4 one-camera processes.

    python benchmarks/multi_camera.py [--frames 900] [--rounds 3] [--seconds 20] [--skip-faults]

Everything runs through the CLI (`edgeship run --config X --json`), as a user runs it, each run in its
own process whose peak RSS comes from ``wait4``. Cases (the issue's targets in brackets):

1. throughput, every frame of 4 video files (each ``--frames`` frames at 15 fps: 60 s of video):
   - inference-bound: int8 MobileNetV2 224 on 640x480 (LiteRT; OpenVINO, NNCF int8 of the same
     network: one camera runs with the latency hint, a multi-camera process with the throughput hint);
   - decode-bound: the quickstart's int8 shapes detector on 1280x720 (LiteRT; OpenVINO);
   aggregate processed fps of the 4-camera process vs 4 processes started together (frames over
   the longest run's own duration, so model loading is not counted for either) [>= 1.0x LiteRT,
   >= 1.1x OpenVINO]; with LiteRT the default (one interpreter per CPU) against 1; per-camera fps spread
   in the 4-camera run [each within 15% of the mean]; peak RSS of the 4-camera process vs a
   1-camera run and vs the 4 processes [<= 1.5x one camera]. Rounds alternate the order.
2. fairness: one camera unthrottled (a file in every-frame mode: it always has a frame ready), three
   at 5 fps (real-time files capped with max_fps), for ``--seconds``: what share of their frames
   the slow cameras got [>= 90%].
3. fault isolation: 4 RTSP cameras (GStreamer test servers, 640x480 at 30 fps), one killed for 10 s
   and restarted: it reconnects, the other three keep their processed fps during the outage
   [>= 90% of before].
4. batching (``--parts batch``, LiteRT, the inference-bound model alone, no video): frames per second of
   one interpreter at batch 1, two interpreters at batch 1 in two threads (the default on 2 CPUs), and one
   interpreter resized to a batch of 4 (``resize_tensor_input``; 1 and 2 XNNPACK threads): which way of
   serving 4 cameras from one LiteRT model wins. Alternating rounds of ``--seconds`` / 4 each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_models import CACHE, ROOT, machine, mobilenet_int8  # noqa: E402
from runtime_pipeline import make_video  # noqa: E402

sys.path.insert(0, str(ROOT))
EDGESHIP = str(Path(sys.executable).with_name("edgeship"))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "EDGESHIP_PROGRESS": "0"}

_OV_MOBILENET = r'''
import sys, numpy as np, keras
from pathlib import Path
from edgeship.calibration import RepresentativeDataset
from edgeship.converters import convert
from edgeship.spec import InputSpec
out = Path(sys.argv[1])
keras.utils.set_random_seed(0)
m = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classes=1000)
rng = np.random.default_rng(0)
import cv2
x = np.stack([np.clip(cv2.resize(rng.uniform(-1, 1, (14, 14, 3)).astype(np.float32), (224, 224))
                      + rng.normal(0, 0.1, (224, 224, 3)).astype(np.float32), -1, 1) for _ in range(48)])
ds = RepresentativeDataset.from_arrays(x, spec=InputSpec(224, 224, scale=1 / 127.5, mean=(1.0,), std=(1.0,)),
                                       holdout=0.25)
convert(m, formats=["openvino"], precision="int8", calib=ds, out_dir=out.parent, name=out.stem, max_drop=None,
        task="classify", labels=[f"class{i}" for i in range(1000)])
'''

_OV_SHAPES = r'''
import sys
from pathlib import Path
from edgeship.converters import convert
from edgeship.manifest import Manifest
out, keras_path, calib, tfl = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ref = Manifest.load(tfl)
convert(keras_path, formats=["openvino"], precision="int8", calib=calib, out_dir=out.parent, name=out.stem,
        max_drop=None, task=ref.task, labels=list(ref.labels))
'''


def _built(path: Path, script: str, *args: str) -> Path:
    if not path.exists():
        print(f"building {path.name} (once)...", file=sys.stderr)
        subprocess.run([sys.executable, "-c", script, str(path), *args], check=True, cwd=ROOT, env=ENV)
    return path


def prepare(frames: int) -> dict:
    from edgeship.demo.build import build_demo

    demo = build_demo(CACHE / "demo")
    ov_dir = CACHE / "multi"
    ov_dir.mkdir(parents=True, exist_ok=True)
    models = {
        ("inference", "litert"): mobilenet_int8(),
        ("inference", "openvino"): _built(ov_dir / "mobilenetv2_int8.xml", _OV_MOBILENET),
        ("decode", "litert"): Path(demo["shapes_int8"]),
        ("decode", "openvino"): _built(ov_dir / "shapes_int8.xml", _OV_SHAPES, demo["shapes_keras"],
                                       demo["shapes_calib"], demo["shapes_int8"]),
    }
    videos = {
        "inference": make_video(CACHE / f"cam_640x480_{frames}.mp4", frames, 15.0, (640, 480)),
        "decode": make_video(CACHE / f"cam_1280x720_{frames}.mp4", frames, 15.0, (1280, 720)),
        "live": make_video(CACHE / "cam_640x480_30fps.mp4", 300, 30.0, (640, 480)),
    }
    return {"models": models, "videos": videos}


def _spawn(cfg: dict, tmp: Path, name: str) -> subprocess.Popen:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.Popen([EDGESHIP, "run", "--config", str(path), "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV, cwd=tmp)


def _hwm(pid: int) -> int:
    """The process's peak RSS so far (VmHWM, KiB; 0 once it is gone). wait4's ru_maxrss would count the pages a
    child shared with this (large) process before its exec."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _wait(proc: subprocess.Popen) -> tuple[dict, int]:
    """Wait for a run started by :func:`_spawn`; its summary and peak RSS (KiB, VmHWM polled while it runs)."""
    import threading

    peak = [0]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _hwm(proc.pid))
            done.wait(0.1)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    done.set()
    watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"edgeship run failed ({proc.returncode}): {err.decode()[-2000:]}")
    return json.loads(out.decode().strip().splitlines()[-1]), peak[0]


def base_cfg(model: Path, backend: str) -> dict:
    # each side as a user gets it: one camera with the latency hint, several with the throughput hint (OpenVINO)
    return {"artifact": str(model), "backend": {"name": backend}}


def one_process(model: Path, backend: str, video: Path, n_cams: int, tmp: Path, workers: int | None = None):
    cfg = base_cfg(model, backend)
    cfg["cameras"] = [{"name": f"cam{i}", "source": str(video)} for i in range(n_cams)]
    if workers:
        cfg["backend"]["workers"] = workers
    summary, rss = _wait(_spawn(cfg, tmp, f"site{n_cams}"))
    per = summary["cameras"]
    fps = [float(c["frames_processed"]) / max(float(c["duration_s"]), 1e-9) for c in per.values()]
    duration = max(float(c["duration_s"]) for c in per.values())
    return {"fps": summary["frames_processed"] / duration, "rss": rss, "camera_fps": fps}


def four_processes(model: Path, backend: str, video: Path, tmp: Path):
    procs = []
    for i in range(4):
        cfg = base_cfg(model, backend)
        cfg["source"] = str(video)
        procs.append(_spawn(cfg, tmp, f"proc{i}"))
    results = [_wait(p) for p in procs]
    frames = sum(s["frames_processed"] for s, _ in results)
    duration = max(float(s["duration_s"]) for s, _ in results)
    return {"fps": frames / duration, "rss": sum(r for _, r in results)}


def spread(fps: list[float]) -> float:
    """Largest distance of one camera's fps from the mean, as a fraction of the mean."""
    mean = statistics.fmean(fps)
    return max(abs(f - mean) for f in fps) / mean if mean else 0.0


def throughput(prep: dict, rounds: int, tmp: Path) -> list[dict]:
    rows = []
    for case in ("inference", "decode"):
        video = prep["videos"][case]
        for backend in ("litert", "openvino"):
            model = prep["models"][(case, backend)]
            single = one_process(model, backend, video, 1, tmp)
            variants = {"4 processes": lambda: four_processes(model, backend, video, tmp),
                        "1 process, 4 cameras": lambda: one_process(model, backend, video, 4, tmp)}
            if backend == "litert":  # the default is one interpreter per CPU: against one
                variants["1 process, 4 cameras, 1 worker"] = lambda: one_process(model, backend, video, 4, tmp, 1)
            got: dict[str, list[dict]] = {k: [] for k in variants}
            for r in range(rounds):
                order = list(variants)
                order = order[r % len(order):] + order[:r % len(order)]
                for k in order:
                    got[k].append(variants[k]())
                    print(f"  {case}/{backend} round {r + 1} {k}: {got[k][-1]['fps']:.1f} fps", file=sys.stderr)
            med = {k: statistics.median(x["fps"] for x in v) for k, v in got.items()}
            ratios = [a["fps"] / b["fps"] for a, b in zip(got["1 process, 4 cameras"], got["4 processes"])]
            row = {"case": case, "backend": backend, "fps": med,
                   "ratio": statistics.median(ratios), "ratios": ratios,
                   "spread": max(spread(x["camera_fps"]) for x in got["1 process, 4 cameras"]),
                   "rss_1cam": single["rss"], "rss_4cam": max(x["rss"] for x in got["1 process, 4 cameras"]),
                   "rss_4proc": max(x["rss"] for x in got["4 processes"])}
            if backend == "litert":
                row["workers_ratio"] = statistics.median(
                    a["fps"] / b["fps"] for a, b in zip(got["1 process, 4 cameras"], got["1 process, 4 cameras, 1 worker"]))
            rows.append(row)
    return rows


def faults(prep: dict, tmp: Path) -> dict:
    from tests.helpers.rtsp import RtspServer, rtsp_unavailable

    why = rtsp_unavailable()
    if why:
        return {"skipped": why}
    servers = [RtspServer(fps=30, width=640, height=480).start() for _ in range(4)]
    try:
        cfg = base_cfg(prep["models"][("inference", "litert")], "litert")
        cfg["cameras"] = [{"name": f"cam{i}", "source": {"uri": s.url, "timeout_s": 10}} for i, s in enumerate(servers)]
        cfg["sinks"] = ["jsonl:results_{camera}.jsonl"]
        path = tmp / "faults.yaml"
        path.write_text(yaml.safe_dump(cfg))
        proc = subprocess.Popen([EDGESHIP, "run", "--config", str(path), "--json", "--duration", "42"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=tmp)
        time.sleep(14.0)
        t_kill = time.time()  # results carry wall-clock times
        servers[0].kill()
        time.sleep(10.0)
        t_back = time.time()
        servers[0] = RtspServer(port=servers[0].port, fps=30, width=640, height=480).start()
        summary, _ = _wait(proc)
    finally:
        for s in servers:
            s.kill()
    rows = {i: [json.loads(line)["t_done"] for line in (tmp / f"results_cam{i}.jsonl").read_text().splitlines()]
            for i in range(4)}

    def rate(ts: list[float], a: float, b: float) -> float:
        return sum(a <= t < b for t in ts) / (b - a)

    before = {i: rate(rows[i], t_kill - 8.0, t_kill) for i in range(4)}
    during = {i: rate(rows[i], t_kill + 1.0, t_back) for i in range(4)}
    after0 = [t for t in rows[0] if t >= t_back]
    return {"before": before, "during": during, "reconnects": summary["cameras"]["cam0"].get("reconnects"),
            "back_after_s": (after0[0] - t_back) if after0 else None}


def batching(model: Path, rounds: int, seconds: float) -> dict[str, list[float]]:
    """Frames per second of the ways one LiteRT model can serve 4 cameras (see the module doc, case 4)."""
    import threading

    import numpy as np

    from edgeship.formats.tflite import load_interpreter

    def interp(batch: int, threads: int) -> tuple[object, int, int, np.ndarray]:
        it = load_interpreter(model, threads)
        d = it.get_input_details()[0]
        if batch != 1:
            it.resize_tensor_input(d["index"], [batch, *d["shape"][1:]])
            it.allocate_tensors()
            d = it.get_input_details()[0]
        x = np.random.default_rng(0).integers(-128, 127, d["shape"], dtype=np.int64).astype(d["dtype"])
        return it, d["index"], batch, x

    def spin(parts: list[tuple], t: float) -> float:
        count = [0] * len(parts)

        def loop(k: int) -> None:
            it, idx, batch, x = parts[k]
            end = time.perf_counter() + t
            while time.perf_counter() < end:
                it.set_tensor(idx, x)
                it.invoke()
                count[k] += batch

        threads = [threading.Thread(target=loop, args=(k,)) for k in range(len(parts))]
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return sum(count) / (time.perf_counter() - t0)

    ways = {"1 interpreter, batch 1": lambda: [interp(1, 1)],
            "2 interpreters, batch 1 (default)": lambda: [interp(1, 1), interp(1, 1)],
            "1 interpreter, batch 4, 1 thread": lambda: [interp(4, 1)],
            "1 interpreter, batch 4, 2 threads": lambda: [interp(4, 2)]}
    built = {k: make() for k, make in ways.items()}
    out: dict[str, list[float]] = {k: [] for k in ways}
    for r in range(rounds):
        order = list(built) if r % 2 == 0 else list(reversed(built))
        for k in order:
            spin(built[k], 0.5)  # warm-up
            out[k].append(spin(built[k], seconds / 4))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=900)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--skip-faults", action="store_true")
    ap.add_argument("--parts", default="throughput,fairness,faults,rss",
                    help="what to measure: throughput (with RSS), fairness, faults, rss (one run of each size only), "
                         "batch (LiteRT batch of 4 vs interpreters; not in the default)")
    args = ap.parse_args()
    prep = prepare(args.frames)
    with tempfile.TemporaryDirectory(prefix="edgeship-multi-") as tmp_s:
        tmp = Path(tmp_s)
        parts = set(args.parts.split(","))
        rows = throughput(prep, args.rounds, tmp) if "throughput" in parts else []
        mem = rss(prep, tmp) if "rss" in parts and "throughput" not in parts else []
        fair = fairness(prep, args.seconds, tmp) if "fairness" in parts else None
        fault = None if args.skip_faults or "faults" not in parts else faults(prep, tmp)
        batch = batching(prep["models"][("inference", "litert")], args.rounds, args.seconds) if "batch" in parts else None
    print(f"\nMachine: {machine()}; {args.frames} frames per camera, {args.rounds} alternating rounds, medians.\n")
    print("| case | backend | 4 processes fps | 1 process, 4 cameras fps | ratio (per round) | default workers vs 1 | "
          "camera fps spread | peak RSS: 1 camera / 4 cameras / 4 processes (MiB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        w2 = f"{r['workers_ratio']:.2f}x" if "workers_ratio" in r else "-"
        rounds = ", ".join(f"{x:.2f}" for x in r["ratios"])
        print(f"| {r['case']}-bound | {r['backend']} | {r['fps']['4 processes']:.1f} | "
              f"{r['fps']['1 process, 4 cameras']:.1f} | **{r['ratio']:.2f}x** ({rounds}) | {w2} | "
              f"{100 * r['spread']:.1f}% | {r['rss_1cam'] / 1024:.0f} / {r['rss_4cam'] / 1024:.0f} "
              f"({r['rss_4cam'] / r['rss_1cam']:.2f}x) / {r['rss_4proc'] / 1024:.0f} |")
    for m in mem:
        print(f"\nPeak RSS, {m['case']}-bound, {m['backend']}: 1 camera {m['one'] / 1024:.0f} MiB, 4 cameras in one process "
              f"{m['four'] / 1024:.0f} MiB ({m['four'] / m['one']:.2f}x), 4 processes {m['procs'] / 1024:.0f} MiB "
              f"({m['procs'] / m['one']:.2f}x)")
    if batch is not None:
        base = statistics.median(batch["1 interpreter, batch 1"])
        print("\n| LiteRT, int8 MobileNetV2 224, inference only | frames/s (median) | vs 1 interpreter |")
        print("|---|---|---|")
        for k, v in batch.items():
            print(f"| {k} | {statistics.median(v):.1f} | {statistics.median(v) / base:.2f}x |")
    if fair is not None:
        share = ", ".join(f"{k} {100 * v:.0f}%" for k, v in fair["slow_share"].items())
        print(f"\nFairness ({fair['seconds']:.0f} s): the unthrottled camera ran at {fair['fast_fps']:.1f} fps; "
              f"the three 5 fps cameras got {share} of their frames.")
    if fault is not None:
        if "skipped" in fault:
            print(f"\nFault isolation: skipped ({fault['skipped']})")
        else:
            keep = ", ".join(f"cam{i} {fault['during'][i] / fault['before'][i] * 100:.0f}%" for i in (1, 2, 3)
                             if fault["before"][i])
            before = ", ".join(f"{fault['before'][i]:.1f}" for i in (1, 2, 3))
            back = "never" if fault["back_after_s"] is None else f"{fault['back_after_s']:.1f} s after its server"
            print(f"\nFault isolation: cam0's RTSP server killed for 10 s; the others kept {keep} of their fps "
                  f"(before: {before} fps); cam0 came back "
                  f"{back} (reconnects: {fault['reconnects']}).")


def rss(prep: dict, tmp: Path) -> list[dict]:
    """Peak RSS only: one run each of 1 camera, 4 cameras in one process and 4 processes."""
    out = []
    for case in ("inference", "decode"):
        for backend in ("litert", "openvino"):
            model, video = prep["models"][(case, backend)], prep["videos"][case]
            out.append({"case": case, "backend": backend, "one": one_process(model, backend, video, 1, tmp)["rss"],
                        "four": one_process(model, backend, video, 4, tmp)["rss"],
                        "procs": four_processes(model, backend, video, tmp)["rss"]})
    return out


def fairness(prep: dict, seconds: float, tmp: Path) -> dict:
    cfg = base_cfg(prep["models"][("inference", "litert")], "litert")
    live = str(prep["videos"]["live"])
    cfg["cameras"] = [{"name": "fast", "source": {"uri": str(prep["videos"]["inference"]), "loop": True}}] + [
        {"name": f"slow{i}", "source": {"uri": live, "realtime": True, "loop": True, "max_fps": 5}} for i in range(3)]
    path = tmp / "fair.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([EDGESHIP, "run", "--config", str(path), "--json", "--duration", str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=tmp)
    summary, _ = _wait(proc)
    cams = summary["cameras"]
    slow = {k: v["frames_processed"] / (5.0 * float(v["duration_s"])) for k, v in cams.items() if k != "fast"}
    return {"fast_fps": float(cams["fast"]["processed_fps"]), "slow_share": slow, "seconds": seconds}


if __name__ == "__main__":
    main()
