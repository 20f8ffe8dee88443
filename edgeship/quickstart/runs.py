"""Quickstart steps 5 and 6: run the device runtime on the demo videos, then bundle for a target.

- ``belt``: the digits belt video through ``digits_int8.tflite`` (classify), scored against the
  belt's labels; ``scene``: the shapes video through ``shapes_int8.tflite`` (detect), scored
  against the scene's ground-truth boxes. Both write JSON lines and an annotated video.
- ``security`` / ``industrial``: the use-case apps from deployment configs written next to the
  models (``configs/*.yaml``, the same settings as ``examples/*.yaml``), run through
  :func:`edgeship.runtime.apps.deploy.run_config`.
- ``bundle``: ``digits_int8`` with an industrial deployment config for a camera on
  ``/dev/video0`` and a health endpoint, for the ``generic-x86_64`` target.

Every run uses the real pipeline, bounded by the video's length (``max_frames``). A run's folder
is emptied first, so an interrupted run is redone, never trusted.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_text
from ..records import RunSummary
from .plan import Options, paths
from .stamps import Unit

log = logging.getLogger(__name__)
SCORE = 0.5
IOU = 0.5


class Collector:
    """A pipeline sink keeping what each frame produced (top-1 class, or boxes) for scoring."""

    def __init__(self) -> None:
        self.top1: dict[int, int | None] = {}
        self.boxes: dict[int, list[tuple[int, list[float], float]]] = {}

    def open(self, info: dict) -> None:
        return None

    def write(self, frame: Any, result: Any) -> None:
        if result.classification is not None:
            self.top1[frame.index] = result.classification.class_id
        if result.detections is not None:
            d = result.detections
            self.boxes[frame.index] = [(int(c), [float(v) for v in b], float(s))
                                       for b, s, c in zip(d.xyxy, d.scores, d.class_ids)]

    def close(self) -> None:
        return None


def iou(a: list[float], b: list[float]) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def score_classification(top1: dict[int, int | None], labels: list[int]) -> dict[str, Any]:
    """Accuracy of the frames' top-1 against the parts' labels (frame i shows part i)."""
    seen = [i for i in sorted(top1) if i < len(labels)]
    correct = sum(1 for i in seen if top1[i] == labels[i])
    return {"frames": len(seen), "correct": correct, "accuracy": 100.0 * correct / len(seen) if seen else None}


def score_detections(boxes: dict[int, list], truth: list[list[dict]], classes: list[str]) -> dict[str, Any]:
    """Recall and precision at IoU 0.5 over the processed frames (objects fully inside the frame)."""
    tp = fp = n = 0
    for i, dets in boxes.items():
        objs = truth[i] if i < len(truth) else []
        n += len(objs)
        used: set[int] = set()
        for o in objs:
            cls = classes.index(o["class"])
            hits = [k for k, (c, b, _) in enumerate(dets) if k not in used and c == cls and iou(b, o["box"]) >= IOU]
            if hits:
                used.add(max(hits, key=lambda k: dets[k][2]))
                tp += 1
        fp += len(dets) - len(used)
    return {"frames": len(boxes), "objects": n, "recall": 100.0 * tp / n if n else None,
            "precision": 100.0 * tp / (tp + fp) if tp + fp else None}


def _fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _summary_fields(s: RunSummary) -> dict[str, Any]:
    g2g = s.glass_to_glass_ms
    return {"frames_processed": s.frames_processed, "frames_captured": s.frames_captured, "skipped": s.skipped,
            "processed_fps": s.processed_fps, "inference_fps": s.inference_fps, "g2g_p50_ms": g2g.get("p50"),
            "g2g_p99_ms": g2g.get("p99"), "stopped_by": s.stopped_by, "backend": s.backend,
            "executed_precision": s.executed_precision}


def _check_stop(summary: RunSummary, what: str) -> None:
    if summary.stopped_by == "signal":
        raise KeyboardInterrupt(f"{what} interrupted")


# ---- step 5: runtime runs ------------------------------------------------------------------------
def run_video(ctx: Any, name: str, artifact: str, video_key: str, task: str, frames: int) -> dict[str, Any]:
    from ..runtime.runner import build_pipeline

    folder = _fresh(ctx.out / "runs" / name)
    col = Collector()
    sinks = [col, f"jsonl:{folder / 'results.jsonl'}", f"video:{folder / 'annotated.mp4'}"]
    pipe = build_pipeline(str(ctx.out / artifact), str(ctx.path(video_key)), task=task, sinks=sinks, max_frames=frames,
                          threshold=SCORE if task == "detect" else None, handle_signals=False)
    summary = pipe.run()
    _check_stop(summary, f"run {name}")
    out = {"artifact": artifact, "source": paths(ctx.out)[video_key], **_summary_fields(summary)}
    truth = json.loads(ctx.path("belt_labels" if task == "classify" else "shapes_truth").read_text())
    if task == "classify":
        out["score"] = score_classification(col.top1, truth["labels"])
        out["detail"] = f"part accuracy {out['score']['accuracy']:.1f}% ({out['score']['correct']}/{out['score']['frames']})"
    else:
        out["score"] = score_detections(col.boxes, truth["objects"], truth["classes"])
        sc = out["score"]
        out["detail"] = f"recall {_pct(sc['recall'])}, precision {_pct(sc['precision'])} over {sc['objects']} objects"
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}%"


def security_config(out: Path) -> dict[str, Any]:
    """The examples/security.yaml deployment, pointed at this output folder (paths relative to configs/)."""
    return {
        "artifact": "../models/shapes_int8.tflite", "source": "../videos/shapes.mp4", "task": "detect", "threshold": SCORE,
        "app": {
            "type": "security", "camera": "demo-cam",
            "zones": [
                {"name": "yard", "points": [[0.5, 0.5], [1.0, 0.5], [1.0, 1.0], [0.5, 1.0]], "classes": ["square", "triangle"],
                 "min_score": 0.6, "min_dwell_frames": 3, "cooldown_s": 30, "anchor": "bottom-center"},
                {"name": "fence", "points": [[40, 0], [280, 0], [280, 90], [40, 90]], "classes": ["circle"],
                 "min_score": 0.6, "min_dwell_frames": 3, "anchor": "center"},
            ],
            "motion": {"threshold": 25, "min_area": 0.002},
            "snapshots": {"dir": "../runs/security/snapshots", "quota_mb": 50},
            "events": [{"type": "jsonl", "path": "../runs/security/events.jsonl"}],
        },
        "sinks": ["jsonl:../runs/security/results.jsonl"],
    }


def industrial_config(out: Path, *, device: bool = False) -> dict[str, Any]:
    """The examples/industrial.yaml deployment; ``device=True``: a camera on /dev/video0 with a health server."""
    state = "state" if device else "../runs/industrial"
    cfg: dict[str, Any] = {
        "artifact": "../models/digits_int8.tflite", "source": "/dev/video0" if device else "../videos/belt.mp4",
        "task": "classify",
        "app": {
            "type": "industrial", "counters": f"{state}/counters.sqlite",
            "inspect": {"fail_classes": ["7", "8", "9"], "min_score": 0.6, "uncertain": "fail"},
            "trigger": {"mode": "frame"},
            "outputs": [{"type": "gpio", "pin": 17, "pulse_ms": 80}] if device else [{"type": "none"}],
            "rejects": {"dir": f"{state}/rejects", "quota_mb": 100},
            "events": [{"type": "jsonl", "path": f"{state}/inspections.jsonl"}],
        },
    }
    if device:
        cfg["server"] = {"host": "127.0.0.1", "port": 8080}
    return cfg


def _write_config(path: Path, cfg: dict[str, Any], comment: str) -> Path:
    import yaml

    return atomic_write_text(path, f"# {comment}\n" + yaml.safe_dump(cfg, sort_keys=False))


def run_app(ctx: Any, name: str, frames: int) -> dict[str, Any]:
    from ..runtime.apps.deploy import run_config

    cfg = {"security": security_config, "industrial": industrial_config}[name](ctx.out)
    _fresh(ctx.out / "runs" / name)
    path = _write_config(ctx.out / "configs" / f"{name}.yaml", cfg,
                         f"edgeship quickstart: the {name} demo (same settings as examples/{name}.yaml)")
    summary = run_config(path, max_frames=frames, handle_signals=False)
    _check_stop(summary, f"{name} app")
    app = summary.app or {}
    out = {"artifact": cfg["artifact"].removeprefix("../"), "source": cfg["source"].removeprefix("../"),
           "config": f"configs/{name}.yaml", **_summary_fields(summary), "app": app}
    out["detail"] = _app_detail(name, app)
    return out


def _app_detail(name: str, app: dict[str, Any]) -> str:
    """One line from the app's status: events per zone and skipped still frames, or pass/fail counts."""
    if name == "security":
        zones = app.get("events_per_zone") or {}
        per = f" ({', '.join(f'{k}: {v}' for k, v in zones.items())})" if zones else ""
        return f"{app.get('events', 0)} events{per}, {app.get('frames', 0)} frames inferred"
    c = app.get("counters") or {}
    return f"{c.get('total', 0)} parts inspected, {c.get('fail', 0)} rejected"


# ---- step 6: bundle ------------------------------------------------------------------------------
def bundle(ctx: Any) -> dict[str, Any]:
    from ..targets.bundle import build_bundle

    target = ctx.options.target
    cfg = _write_config(ctx.out / "configs" / "device-industrial.yaml", industrial_config(ctx.out, device=True),
                        f"edgeship quickstart: an inspection camera on /dev/video0, bundled for {target}")
    res = build_bundle(ctx.out / "models" / "digits_int8.tflite", target, ctx.out / "bundles" / f"digits_int8-{target}.tar.gz",
                       config=cfg)
    d = res.to_dict()
    d["path"] = str(Path(d["path"]).relative_to(ctx.out))
    d["size_bytes"] = d.pop("size")
    return d


# ---- units -------------------------------------------------------------------------------------------
def units(options: Options, out: Path) -> dict[str, list[Unit]]:
    """The units of the run and bundle steps, by step."""
    belt = ["train.belt_video", "convert.digits_int8"]
    scene = ["train.shapes_video", "convert.shapes_int8"]
    runs = [
        Unit("run", "belt", {"frames": options.belt_frames}, lambda ctx: run_video(
            ctx, "belt", "models/digits_int8.tflite", "belt_video", "classify", options.belt_frames),
            hashed=["runs/belt/results.jsonl"], present=["runs/belt/annotated.mp4"], deps=belt),
        Unit("run", "scene", {"frames": options.shapes_frames, "score": SCORE}, lambda ctx: run_video(
            ctx, "scene", "models/shapes_int8.tflite", "shapes_video", "detect", options.shapes_frames),
            hashed=["runs/scene/results.jsonl"], present=["runs/scene/annotated.mp4"], deps=scene),
    ]
    if app_support():
        runs += [
            Unit("run", "security", {"frames": options.shapes_frames, "cfg": security_config(out)},
                 lambda ctx: run_app(ctx, "security", options.shapes_frames), hashed=["configs/security.yaml"],
                 present=["runs/security/results.jsonl"], deps=scene),
            Unit("run", "industrial", {"frames": options.belt_frames, "cfg": industrial_config(out)},
                 lambda ctx: run_app(ctx, "industrial", options.belt_frames), hashed=["configs/industrial.yaml"],
                 present=["runs/industrial/counters.sqlite"], deps=belt),
        ]
    bundles = [Unit("bundle", options.target, {"target": options.target, "cfg": industrial_config(out, device=True)}, bundle,
                    hashed=[f"bundles/digits_int8-{options.target}.tar.gz", "configs/device-industrial.yaml"],
                    inputs=["models/digits_int8.manifest.json"], deps=["convert.digits_int8"])]
    return {"run": runs, "bundle": bundles}


def app_support() -> bool:
    """Whether the deployment-config runner (edgeship.runtime.apps.deploy) is installed."""
    import importlib.util

    try:
        return importlib.util.find_spec("edgeship.runtime.apps.deploy") is not None
    except ImportError:
        return False
