"""Quickstart steps 1 and 2: train the demo models, write the demo videos, build the calibration sets.

- digits: the CNN of :mod:`edgeship.demo.train` on scikit-learn's real handwritten digits as the
  belt camera sees them. Its calibration set comes from held-out digits (never trained on) as
  labelled uint8 camera frames, through :func:`edgeship.calibration.build_dataset`: part of them
  calibrates, the rest is the labelled holdout every artifact is verified on. The training
  samples are also written as a labelled image folder, for pruning's fine-tune.
- shapes: the tiny YOLO-style detector on generated scenes. Its calibration set mixes frames of
  the demo video (near-duplicates removed) and freshly generated scenes.

TensorFlow is imported only when a model is trained.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_path, gzip_size
from .plan import Options, paths
from .stamps import Unit

log = logging.getLogger(__name__)


# ---- step 1: train ----------------------------------------------------------------------------------
def _save_keras(model: Any, path: Path) -> None:
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(str(tmp))


def train_digits(ctx: Any) -> dict[str, Any]:
    from ..demo import train

    o: Options = ctx.options
    demo = train.train_digits(epochs=o.digits_epochs, seed=o.seed)
    _save_keras(demo.model, ctx.path("digits_keras"))
    return {"task": "classify", "accuracy": 100.0 * demo.metrics["accuracy"], "holdout": demo.metrics["holdout"],
            "epochs": o.digits_epochs, "parameters": int(demo.model.count_params()),
            "size_bytes": ctx.path("digits_keras").stat().st_size, "gzip_bytes": gzip_size(ctx.path("digits_keras"))}


def train_shapes(ctx: Any) -> dict[str, Any]:
    from ..demo import train

    o: Options = ctx.options
    demo = train.train_shapes(n_train=o.shapes_train, epochs=o.shapes_epochs, seed=o.seed)
    _save_keras(demo.model, ctx.path("shapes_keras"))
    m = demo.metrics
    return {"task": "detect", "recall": 100.0 * m["recall"], "precision": 100.0 * m["precision"], "objects": m["objects"],
            "train_images": o.shapes_train, "epochs": o.shapes_epochs, "parameters": int(demo.model.count_params()),
            "size_bytes": ctx.path("shapes_keras").stat().st_size, "gzip_bytes": gzip_size(ctx.path("shapes_keras"))}


def write_belt(ctx: Any) -> dict[str, Any]:
    from ..demo import write_belt_video

    write_belt_video(ctx.path("belt_video"), n_parts=ctx.options.belt_frames, seed=7)
    return {"frames": ctx.options.belt_frames, "path": paths(ctx.out)["belt_video"]}


def write_scene(ctx: Any) -> dict[str, Any]:
    from ..demo import write_shapes_video

    write_shapes_video(ctx.path("shapes_video"), n_frames=ctx.options.shapes_frames)
    return {"frames": ctx.options.shapes_frames, "path": paths(ctx.out)["shapes_video"]}


# ---- step 2: calibration sets ---------------------------------------------------------------------------
def _heldout_digit_frames(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Belt-camera frames (uint8 BGR) of the digits the classifier never trained on, as the camera's video
    delivers them (through its codec, like the belt video), and their labels."""
    from ..demo import scenes, train

    _, _, _, _, test_imgs, test_y = train.digits_samples(seed)
    rng = np.random.default_rng([seed, 11])
    frames = scenes.recorded([scenes.belt_frame(img, rng, shift=int(rng.integers(0, 24))) for img in test_imgs])
    return frames, np.asarray(test_y, dtype=np.int64)


def calibrate_digits(ctx: Any) -> dict[str, Any]:
    """Labelled source -> build_dataset -> data/digits_calib.npz (calib + labelled holdout)."""
    from ..calibration import build_dataset
    from ..demo.train import DIGITS_SPEC

    o: Options = ctx.options
    frames, y = _heldout_digit_frames(o.seed)
    names = [str(i) for i in range(10)]
    ctx.path("digits_calib").parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".calib-", dir=ctx.path("digits_calib").parent) as tmp:
        src = Path(tmp) / "digits_frames.npz"
        np.savez(src, x=frames, y=y, label_names=np.array(names))
        ds = build_dataset([str(src)], spec=DIGITS_SPEC, count=len(frames), holdout=o.digits_holdout, seed=o.seed,
                           dedup=False, labels=names)
    ds.save(ctx.path("digits_calib"))
    return _dataset_result(ds)


def write_finetune_folder(ctx: Any) -> dict[str, Any]:
    """The classifier's training samples as a labelled image folder (data/digits_train/<class>/*.png)."""
    import cv2

    from ..demo import train

    x_tr, y_tr, *_ = train.digits_samples(ctx.options.seed)
    final = ctx.path("digits_train")
    with atomic_path(final) as tmp:
        for c in range(10):
            (tmp / str(c)).mkdir(parents=True)
        for i, (x, c) in enumerate(zip(x_tr, y_tr)):
            img = np.clip(np.round(x[..., 0] * 255.0), 0, 255).astype(np.uint8)
            cv2.imwrite(str(tmp / str(int(c)) / f"{i:05d}.png"), img)
    return {"images": int(len(x_tr)), "classes": 10}


def calibrate_shapes(ctx: Any) -> dict[str, Any]:
    """Demo video frames (deduplicated) + generated scenes -> build_dataset -> data/shapes_calib.npz."""
    from ..calibration import build_dataset
    from ..demo import scenes
    from ..demo.train import SHAPES_SPEC

    o: Options = ctx.options
    rng = np.random.default_rng([o.seed, 23])
    generated = np.stack([scenes.random_scene(rng)[0] for _ in range(o.shapes_calib)])
    ctx.path("shapes_calib").parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".calib-", dir=ctx.path("shapes_calib").parent) as tmp:
        src = Path(tmp) / "shapes_scenes.npz"
        np.savez(src, x=generated)
        ds = build_dataset([str(ctx.path("shapes_video")), str(src)], spec=SHAPES_SPEC, count=o.shapes_calib,
                           holdout=0.25, seed=o.seed, dedup=True)
    ds.save(ctx.path("shapes_calib"))
    return _dataset_result(ds)


def _dataset_result(ds: Any) -> dict[str, Any]:
    sources = [{k: s.get(k) for k in ("source", "kind", "selected", "duplicates", "read") if k in s}
               for s in ds.meta.get("sources", [])]
    for s in sources:
        s["source"] = Path(str(s.get("source", ""))).name
    return {"calib": int(len(ds.x_calib)), "holdout": int(len(ds.x_holdout)), "labelled": ds.y_calib is not None,
            "labels": ds.labels, "sha256": ds.sha256, "sources": sources}


# ---- units ------------------------------------------------------------------------------------------------
def units(options: Options, out: Path) -> dict[str, list[Unit]]:
    """The units of the train and calibrate steps, by step."""
    p = paths(out)
    r = options.to_dict()
    train_units = [
        Unit("train", "digits", {"epochs": r["digits_epochs"], "seed": r["seed"]}, train_digits, hashed=[p["digits_keras"]]),
        Unit("train", "shapes", {"n": r["shapes_train"], "epochs": r["shapes_epochs"], "seed": r["seed"]}, train_shapes,
             hashed=[p["shapes_keras"]]),
        Unit("train", "belt_video", {"frames": r["belt_frames"]}, write_belt, hashed=[p["belt_video"], p["belt_labels"]]),
        Unit("train", "shapes_video", {"frames": r["shapes_frames"]}, write_scene,
             hashed=[p["shapes_video"], p["shapes_truth"]]),
    ]
    calib_units = [
        Unit("calibrate", "digits", {"holdout": r["digits_holdout"], "seed": r["seed"], "frames": "recorded"},
             calibrate_digits,
             hashed=[p["digits_calib"]]),
        Unit("calibrate", "digits_train", {"seed": r["seed"]}, write_finetune_folder, hashed=[p["digits_train"]]),
        Unit("calibrate", "shapes", {"count": r["shapes_calib"], "seed": r["seed"]}, calibrate_shapes,
             hashed=[p["shapes_calib"]], deps=["train.shapes_video"]),
    ]
    return {"train": train_units, "calibrate": calib_units}
