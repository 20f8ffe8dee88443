"""Write the demo data set: two trained models (Keras + int8 TFLite with manifests) and two videos.

    from edgeship.demo import build_demo
    paths = build_demo("quickstart-out")      # reuses whatever is already there

Layout (what ``examples/*.yaml`` and ``edgeship quickstart`` expect)::

    OUT/models/digits.keras            digits CNN (classify, 32x32 gray)
    OUT/models/digits_int8.tflite      + digits_int8.manifest.json
    OUT/models/shapes.keras            shapes detector (detect, YOLO-style output)
    OUT/models/shapes_int8.tflite      + shapes_int8.manifest.json
    OUT/data/digits_calib.npz          calibration / holdout samples (float, preprocessed)
    OUT/data/shapes_calib.npz
    OUT/videos/belt.mp4                one frame per part, real handwritten digits (labels in belt.json)
    OUT/videos/shapes.mp4              shapes crossing a scene (ground truth in shapes.json)

TensorFlow is imported only when a model has to be trained or converted.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_write_json, sha256_file
from ..progress import progress
from . import scenes

log = logging.getLogger(__name__)

MODELS = ("digits", "shapes")
VIDEOS = ("belt", "shapes")


def demo_paths(out: str | os.PathLike) -> dict[str, Path]:
    """Every file :func:`build_demo` writes, by key."""
    out = Path(out)
    m, v, d = out / "models", out / "videos", out / "data"
    return {
        "digits_keras": m / "digits.keras", "digits_int8": m / "digits_int8.tflite",
        "shapes_keras": m / "shapes.keras", "shapes_int8": m / "shapes_int8.tflite",
        "digits_calib": d / "digits_calib.npz", "shapes_calib": d / "shapes_calib.npz",
        "belt_video": v / "belt.mp4", "belt_labels": v / "belt.json",
        "shapes_video": v / "shapes.mp4", "shapes_truth": v / "shapes.json",
    }


def write_belt_video(path: str | os.PathLike, *, n_parts: int = 120, seed: int = 7, fps: float = scenes.BELT_FPS) -> Path:
    """The inspection video: ``n_parts`` held-out real digits, one frame per part; labels in ``.json``."""
    from .train import digits_samples

    _, _, _, _, test_imgs, test_y = digits_samples(0)  # the classifier's holdout digits only
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(test_imgs), size=min(n_parts, len(test_imgs)), replace=False)
    frames, labels = scenes.belt_frames(test_imgs[idx], test_y[idx], seed=seed)
    path = scenes.write_video(path, frames, fps=fps)
    atomic_write_json(Path(path).with_suffix(".json"), {"fps": fps, "labels": labels})
    return Path(path)


def write_shapes_video(path: str | os.PathLike, *, n_frames: int = 240, fps: float = 30.0) -> Path:
    """The security video (see :func:`scenes.default_tracks`); per-frame ground truth in ``.json``."""
    frames, truth = scenes.scene_frames(n_frames)
    path = scenes.write_video(path, frames, fps=fps)
    atomic_write_json(Path(path).with_suffix(".json"), {
        "fps": fps, "classes": list(scenes.SHAPE_CLASSES), "size": list(scenes.SCENE_HW[::-1]),
        "objects": [[{"class": scenes.SHAPE_CLASSES[o.cls], "box": [round(v, 1) for v in o.box]} for o in objs]
                    for objs in truth],
    })
    return Path(path)


def export_int8(demo: Any, out_path: str | os.PathLike) -> Path:
    """Convert a trained :class:`~edgeship.demo.train.DemoModel` to int8 TFLite and write its manifest."""
    from ..calibration import RepresentativeDataset
    from ..converters.keras_io import export_saved_model
    from .. import formats
    from ..converters.tflite import to_tflite
    from ..manifest import Manifest, tool_versions
    from ..records import AccuracyRecord, ConversionRecord

    out_path = Path(out_path)
    ds = RepresentativeDataset.from_arrays(demo.x_calib, spec=demo.spec, labels=demo.labels, holdout=0.0)
    with tempfile.TemporaryDirectory(prefix="edgeship-demo-") as tmp:
        saved = export_saved_model(demo.model, Path(tmp) / "saved_model", sample_shape=demo.spec.sample_shape)
        to_tflite(saved, out_path, precision="int8", dataset=ds, io="int8")
    inputs, outputs = formats.get("tflite").read_tensors(out_path)
    Manifest(
        name=out_path.stem, format="tflite", precision="int8", artifact=out_path.name, input_spec=demo.spec,
        labels=list(demo.labels), task=demo.task, hashes={"artifact": sha256_file(out_path)},
        inputs=inputs, outputs=outputs, io_dtype={"input": "int8", "output": "int8"},
        sizes={"raw_bytes": out_path.stat().st_size}, versions=tool_versions(),
        accuracy=AccuracyRecord.from_dict({"keras_" + k: v for k, v in demo.metrics.items()}),
        conversion=ConversionRecord.from_dict({"demo": True}),
    ).save(out_path)
    return out_path


def _save_samples(path: Path, demo: Any) -> None:
    """The model's calibration and holdout samples as an edgeship calibration set (what verify and convert read).

    Unlabelled: a calibration set has labels for both splits or neither, and the demo keeps none for its
    calibration samples (the quickstart builds its own labelled sets with ``edgeship calibrate``)."""
    from ..calibration import RepresentativeDataset

    RepresentativeDataset(demo.spec, demo.x_calib, demo.x_holdout, labels=demo.labels,
                          meta={"task": demo.task, "demo": True}).save(path)


def build_demo(out: str | os.PathLike = "quickstart-out", *, force: bool = False, models: bool = True,
               videos: bool = True, seed: int = 0) -> dict[str, Any]:
    """Train, convert and write everything in :func:`demo_paths` that is missing (all with ``force``).

    Returns the paths plus ``trained`` (names trained in this call) and ``metrics`` (holdout
    accuracy / recall of the models trained now).
    """
    paths = demo_paths(out)
    done: dict[str, Any] = {"trained": [], "metrics": {}}
    steps = []
    if videos:
        if force or not paths["belt_video"].exists() or not paths["belt_labels"].exists():
            steps.append(("belt video", lambda: write_belt_video(paths["belt_video"])))
        if force or not paths["shapes_video"].exists() or not paths["shapes_truth"].exists():
            steps.append(("shapes video", lambda: write_shapes_video(paths["shapes_video"])))
    if models:
        for name in MODELS:
            need = [paths[f"{name}_keras"], paths[f"{name}_int8"], paths[f"{name}_int8"].with_name(f"{name}_int8.manifest.json")]
            if force or not all(p.exists() for p in need):
                steps.append((f"{name} model", lambda name=name: _train_and_export(name, paths, done, seed)))
    for desc, step in progress(steps, desc="demo data", unit="step"):
        log.info("demo: %s", desc)
        step()
    done.update({k: str(v) for k, v in paths.items()})
    return done


def _train_and_export(name: str, paths: dict[str, Path], done: dict[str, Any], seed: int) -> None:
    from . import train
    from ..fileio import atomic_path

    demo = {"digits": train.train_digits, "shapes": train.train_shapes}[name](seed=seed)
    with atomic_path(paths[f"{name}_keras"], suffix=".keras") as tmp:
        demo.model.save(str(tmp))
    _save_samples(paths[f"{name}_calib"], demo)
    export_int8(demo, paths[f"{name}_int8"])
    done["trained"].append(name)
    done["metrics"][name] = demo.metrics
