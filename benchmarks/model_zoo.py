"""Model zoo: keras.applications models through fp32 and int8, TFLite and OpenVINO, measured on the device's path.

    .venv/bin/python benchmarks/model_zoo.py                      # all six models at 224x224 (slow: the int8 gate may search)
    .venv/bin/python benchmarks/model_zoo.py --models MobileNetV3Small,MobileNetV2 --size 96     # smoke run
        [--formats tflite,openvino] [--precisions fp32,int8] [--max-drop none] [--images 128] [--eval 32]
        [--bn-batch 16] [--out benchmarks/.cache/zoo]

Issue 15. Every model (MobileNetV2, MobileNetV3Small, EfficientNetB0, ResNet50, DenseNet121,
ConvNeXtTiny) is built with ``weights=None`` (nothing is downloaded) and goes through edgeship's
own Python API, exactly as a user would drive it:

1. Images: random square crops (50-100% of the short side, random place, random mirror; seeded) of
   the photographs shipped inside scikit-image (astronaut, chelsea, coffee, rocket, camera,
   immunohistochemistry, retina, coins), written as PNG files to a temporary folder.
2. Calibration: ``edgeship.build_dataset([folder], spec=InputSpec(...), count=--images)`` with each
   model's own preprocessing as an InputSpec (see MODELS: MobileNetV2 [-1, 1]; ResNet50 caffe BGR
   mean subtraction; DenseNet121 torch mean/std; MobileNetV3, EfficientNet and ConvNeXt take 0..255
   and normalise inside the model). 20% of it is the holdout split the accuracy gate verifies on.
3. Non-trivial outputs: random BatchNorm statistics (mean 0, variance 1) give near-constant
   outputs, so the BatchNorm statistics are re-estimated on the calibration samples ("precise BN"):
   the model runs in training mode over batches of --bn-batch samples, dropout off, with each BN
   layer's momentum set to k/(k+1) on batch k, so its moving statistics end up as the average of
   the per-batch statistics. (Averaging per-batch variances leaves out the small between-batch
   variance of the means.) Only BN statistics change; ConvNeXt has LayerNorm, no BN, and is used
   as built. The reference line per model shows how varied the resulting Keras outputs are.
4. Conversion: one ``edgeship.convert(model, formats=[fmt], precision=p, calib=dataset)`` call per
   artifact (with convert's defaults: int8 runs the accuracy gate, max_drop 1 point; ``--max-drop none``
   turns the gate off, ``--max-drop P`` sets its budget), so one failed conversion is recorded in the
   table and the others go on. With weights=None the class scores are nearly flat (top-1 probability
   a few times 1/1000), so the gate's measure, top-1 disagreement with Keras, flips on near-ties and
   the gate often falls back to fp16: the ``manifest`` column shows what was actually shipped.
5. Measurement, on --eval other crops (another seed, never calibrated on): the artifact is opened
   with ``edgeship.open_backend(path)`` as the device opens it (default precision: an FP32 OpenVINO
   IR runs in f32 because its manifest says fp32; anything else runs the CPU's default), the frames
   are preprocessed with the artifact's manifest InputSpec (``edgeship.preprocess.preprocess_batch``)
   and the same arrays go to Keras (``verify.reference_outputs``). Cosine and max error come from
   ``edgeship.converters.verify.compare``.

Columns: ``manifest`` = the precision the manifest records (the gate may change int8 to int8-mixed or
fp16); ``runs`` = backend and the precision it executed; ``cosine`` = mean per-sample cosine of the
artifact's output against Keras'; ``rel max err`` = max |artifact - Keras| / (max - min of the Keras
output); ``mean sum`` = mean over samples of the per-sample output sum (softmax: ~1); ``worst |sum-1|``
= its largest deviation from 1; ``gate`` = ``conversion.accuracy_gate`` of the manifest (status, the
precision it settled on, tensors kept in float, what it measured in points against its budget);
``fp32 <= 1e-4`` = PASS when rel max err <= 1e-4 (fp32 artifacts); ``int8 sum +-0.02`` = PASS when
every sample's output sums to 1 within 0.02 (int8 artifacts of softmax models; "(fp16)" when the
gate replaced the int8 artifact, so the check did not test int8); ``convert s`` = the
wall time of the convert() call (gate included); ``note`` = the one-line error of a failed step.
The results are also written to OUT/results.json; the artifacts stay in OUT/<model>/.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("EDGESHIP_PROGRESS", "0")

from benchmarks.photos import machine, random_crops  # noqa: E402

# keras.applications model -> the InputSpec fields of its preprocessing (pixels -> model input),
# from keras.applications.<module>.preprocess_input (Keras 3)
MODELS: dict[str, dict[str, Any]] = {
    "MobileNetV2": {"scale": 1 / 127.5, "mean": (1.0,), "std": (1.0,)},  # mode "tf": RGB in [-1, 1]
    "MobileNetV3Small": {"scale": 1.0, "mean": (0.0,), "std": (1.0,)},  # RGB 0..255 (Rescaling inside)
    "EfficientNetB0": {"scale": 1.0, "mean": (0.0,), "std": (1.0,)},  # RGB 0..255 (Rescaling + Normalization inside)
    "ResNet50": {"color_order": "BGR", "scale": 1.0, "mean": (103.939, 116.779, 123.68), "std": (1.0,)},  # "caffe"
    "DenseNet121": {"scale": 1 / 255, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},  # "torch"
    "ConvNeXtTiny": {"scale": 1.0, "mean": (0.0,), "std": (1.0,)},  # RGB 0..255 (PreStem Normalization inside)
}
FORMATS = ("tflite", "openvino")
PRECISIONS = ("fp32", "int8")
ALL_PRECISIONS = ("fp32", "fp16", "dynamic", "int8")
FP32_REL_TARGET = 1e-4  # max |error| / range of the Keras output
SUM_TARGET = 0.02  # |sum of a softmax row - 1|
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry", "retina", "coins")
_T0 = time.monotonic()


def progress(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:160]




def write_pngs(frames: list[np.ndarray], folder: Path) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        if not cv2.imwrite(str(folder / f"crop_{i:04d}.png"), f):
            raise OSError(f"cannot write {folder / f'crop_{i:04d}.png'}")
    return folder


# ---- models ---------------------------------------------------------------------------------------
def build_model(name: str, size: int) -> Any:
    import keras

    keras.utils.set_random_seed(0)
    return getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3))


def _walk(layer: Any):
    for sub in getattr(layer, "layers", None) or []:
        yield sub
        yield from _walk(sub)


def reestimate_batchnorm(model: Any, x: np.ndarray, batch: int) -> tuple[int, int]:
    """Set every BatchNormalization layer's moving statistics to the average of its per-batch statistics
    on ``x`` (training-mode passes, dropout off, momentum k/(k+1) on batch k). (BN layers, batches)."""
    import keras

    layers = list(_walk(model))
    bns = [la for la in layers if isinstance(la, keras.layers.BatchNormalization)]
    drops = [la for la in layers if isinstance(la, keras.layers.Dropout)]
    if not bns:
        return 0, 0
    batch = max(1, min(int(batch), len(x)))
    n_batches = len(x) // batch  # full batches only: a tiny last batch would give noisy variances
    momenta, rates = [b.momentum for b in bns], [d.rate for d in drops]
    try:
        for d in drops:
            d.rate = 0.0
        for k in range(n_batches):
            for b in bns:
                b.momentum = k / (k + 1)
            model(np.ascontiguousarray(x[k * batch:(k + 1) * batch], dtype=np.float32), training=True)
    finally:
        for b, m in zip(bns, momenta):
            b.momentum = m
        for d, r in zip(drops, rates):
            d.rate = r
    return len(bns), n_batches


# ---- one artifact ---------------------------------------------------------------------------------
@dataclass
class Row:
    model: str
    size: int
    format: str
    precision: str
    path: str | None = None
    manifest_precision: str | None = None
    backend: str | None = None
    executed: str | None = None
    softmax: bool | None = None
    cosine: float | None = None
    rel_max_error: float | None = None
    mean_sum: float | None = None
    worst_sum_dev: float | None = None
    gate: str | None = None
    gate_record: dict[str, Any] | None = None
    convert_s: float | None = None
    error: str | None = None

    @property
    def fp32_target(self) -> str:
        if self.precision != "fp32":
            return "-"
        ok = self.rel_max_error is not None and self.rel_max_error <= FP32_REL_TARGET
        return "PASS" if ok else "FAIL"

    @property
    def int8_target(self) -> str:
        if self.precision != "int8" or self.softmax is False:
            return "-"
        ok = self.worst_sum_dev is not None and self.worst_sum_dev <= SUM_TARGET
        shipped = self.manifest_precision
        return ("PASS" if ok else "FAIL") + (f" ({shipped})" if shipped and not shipped.startswith("int8") else "")


def gate_text(conversion: Any) -> tuple[str, dict[str, Any] | None]:
    """A short cell for what the manifest records under ``conversion.accuracy_gate``, and the record itself."""
    g = conversion.accuracy_gate.to_dict()
    status = g.get("status") or "not run"
    if status == "not run":
        return "not run", g or None
    text = f"{status}: {g.get('precision', '?')}"
    if g.get("float_nodes"):
        text += f" (+{len(g['float_nodes'])} float)"
    if g.get("fallback"):
        text += f", fell back to {g['fallback']}"
    value, first, measured = g.get("value"), g.get("initial_value"), g.get("measured") or "?"
    if value is not None:
        shown = f"{first:.1f} -> {value:.1f}" if first is not None and abs(first - value) > 1e-9 else f"{value:.1f}"
        text += f", {measured} {shown} pts (budget {g.get('max_drop_pp', g.get('budget'))})"
    g.pop("steps", None)  # the search's every candidate: long, and kept in the manifest anyway
    return text, g


def convert_one(model: Any, dataset: Any, fmt: str, precision: str, out_dir: Path, name: str, max_drop: Any) -> Any:
    import edgeship

    gate = {} if max_drop == "default" else {"max_drop": max_drop}  # "default": convert's own default budget
    (result,) = edgeship.convert(model, formats=[fmt], precision=precision, calib=dataset, out_dir=out_dir, name=name,
                                 **gate)
    return result


def measure(row: Row, model: Any, frames: list[np.ndarray], refs: dict[str, list[np.ndarray]]) -> None:
    """Fill ``row`` from the artifact on the default runtime path against Keras on the same inputs."""
    import edgeship
    from edgeship import roles as R
    from edgeship.converters.verify import align_outputs, compare, reference_outputs
    from edgeship.preprocess import preprocess_batch

    with edgeship.open_backend(row.path) as backend:  # as the device opens it: no forced precision
        manifest = backend.manifest
        spec = manifest.input_spec
        x = preprocess_batch(frames, spec).astype(np.float32)
        outs = backend.infer(x)
        row.backend, row.executed = backend.name, backend.executed_precision
    key = spec.to_json()
    if key not in refs:
        refs[key] = reference_outputs(model, x)
    ref = refs[key]
    roles = [t.role for t in manifest.outputs] if manifest.outputs and any(t.role for t in manifest.outputs) else None
    art = align_outputs(ref, outs)
    cmp = compare(ref, art, roles=roles)
    roles = roles or R.guess_roles(ref)
    k = R.class_output(roles)
    k = 0 if k is None else k
    o = cmp["outputs"][k]
    row.cosine, row.rel_max_error = o.cosine, o.rel_max_error
    row.softmax = roles[k] == "class_scores"
    if np.ndim(art[k]) == 2:
        sums = np.asarray(art[k], dtype=np.float64).sum(axis=1)
        row.mean_sum, row.worst_sum_dev = float(sums.mean()), float(np.max(np.abs(sums - 1.0)))


# ---- one model --------------------------------------------------------------------------------------
def run_model(name: str, args: argparse.Namespace, images: Path, eval_frames: list[np.ndarray]) -> tuple[list[Row], str]:
    import keras

    import edgeship
    from edgeship.converters.verify import reference_outputs
    from edgeship.preprocess import preprocess_batch

    rows = [Row(name, args.size, f, p) for p in args.precisions for f in args.formats]
    model = None
    try:
        spec = edgeship.InputSpec(height=args.size, width=args.size, channels=3, **MODELS[name])
        progress(f"{name} {args.size}x{args.size}: calibration set of {args.images} crops")
        dataset = edgeship.build_dataset([str(images)], spec=spec, count=args.images, holdout=0.2, seed=0)
        progress(f"{name}: building (weights=None), re-estimating BatchNorm statistics on {len(dataset)} samples")
        model = build_model(name, args.size)
        n_bn, n_batches = reestimate_batchnorm(model, dataset.split("all")[0], args.bn_batch)
        ref = reference_outputs(model, preprocess_batch(eval_frames, spec).astype(np.float32))[0]
        top1 = np.argmax(ref, axis=1)
        summary = (f"{name}: {n_bn} BN layers re-estimated over {n_batches} batches of {args.bn_batch}; Keras output on "
                   f"{len(ref)} eval crops: range [{ref.min():.3g}, {ref.max():.3g}], mean top-1 probability "
                   f"{ref.max(axis=1).mean():.3g}, {len(set(top1.tolist()))} distinct top-1 classes; "
                   f"calibration {len(dataset.x_calib)} + holdout {len(dataset.x_holdout)}")
        progress(summary)
    except Exception as e:  # noqa: BLE001 - a benchmark records the failure and goes on
        for r in rows:
            r.error = f"model: {one_line(e)}"
        progress(f"{name}: FAILED before conversion: {one_line(e)}")
        return rows, f"{name}: {one_line(e)}"
    out_dir = args.out / name
    refs: dict[str, list[np.ndarray]] = {}
    for r in rows:
        stem = f"{name.lower()}_{args.size}_{r.precision}_{r.format}"
        progress(f"{name}: {r.precision} {r.format}: converting")
        t0 = time.monotonic()
        try:
            result = convert_one(model, dataset, r.format, r.precision, out_dir, stem, args.max_drop)
        except Exception as e:  # noqa: BLE001
            r.convert_s, r.error = round(time.monotonic() - t0, 1), f"convert: {one_line(e)}"
            progress(f"{name}: {r.precision} {r.format}: FAILED: {r.error}")
            continue
        r.convert_s = round(time.monotonic() - t0, 1)
        r.path, r.manifest_precision = str(result.path), result.manifest.precision
        r.gate, r.gate_record = gate_text(result.manifest.conversion)
        try:
            measure(r, model, eval_frames, refs)
        except Exception as e:  # noqa: BLE001
            r.error = f"measure: {one_line(e)}"
        progress(f"{name}: {r.precision} {r.format}: {r.convert_s:.0f} s; cosine {fmt_num(r.cosine, '.6f')}, rel max err "
                 f"{fmt_num(r.rel_max_error, '.2e')}, mean sum {fmt_num(r.mean_sum, '.4f')}; gate {r.gate}"
                 + (f"; {r.error}" if r.error else ""))
    del model
    keras.backend.clear_session()
    gc.collect()
    return rows, summary


# ---- report -----------------------------------------------------------------------------------------
def fmt_num(v: float | None, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def cell(text: Any) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def table(rows: list[Row]) -> str:
    head = ["model", "size", "format", "precision", "manifest", "runs", "cosine", "rel max err", "mean sum",
            "worst \\|sum-1\\|", "gate", f"fp32 <= {FP32_REL_TARGET:g}", f"int8 sum +-{SUM_TARGET:g}", "convert s", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        runs = f"{r.backend} {r.executed}" if r.backend else "-"
        cells = [r.model, f"{r.size}x{r.size}", r.format, r.precision, r.manifest_precision or "-", runs,
                 fmt_num(r.cosine, ".6f"), fmt_num(r.rel_max_error, ".2e"), fmt_num(r.mean_sum, ".4f"),
                 fmt_num(r.worst_sum_dev, ".4f"), r.gate or "-", r.fp32_target, r.int8_target,
                 fmt_num(r.convert_s, ".0f"), r.error or ""]
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return "\n".join(lines)


def report(rows: list[Row], summaries: list[str], args: argparse.Namespace, host: dict[str, Any]) -> None:
    print(table(rows))
    versions = ", ".join(f"{k} {v}" for k, v in host["versions"].items() if v)
    print(f"\nMachine: {host['cpu']}, {host['cores']} cores ({host['arch']}), Python {host['python']}; {host['date']}. "
          f"{versions}.")
    budget = ("convert's default" if args.max_drop == "default"
              else "off" if args.max_drop is None else f"{args.max_drop:g} points")
    print(f"int8 accuracy gate budget: {budget}. Measured on {args.eval} held-apart crops through "
          f"edgeship.open_backend(path) (default precision) against "
          f"Keras on the same preprocessed inputs; calibration: {args.images} crops via build_dataset (20% holdout for "
          f"the gate); weights=None with BatchNorm statistics re-estimated on the calibration crops.")
    for s in summaries:
        print(f"- {s}")
    for target, col in ((f"fp32 rel max err <= {FP32_REL_TARGET:g}", "fp32_target"),
                        (f"int8 softmax rows sum to 1 +-{SUM_TARGET:g}", "int8_target")):
        judged = [getattr(r, col) for r in rows if getattr(r, col) != "-"]
        if judged:
            other = sum(1 for j in judged if "(" in j)
            print(f"Target {target}: {sum(j.startswith('PASS') for j in judged)}/{len(judged)} PASS"
                  + (f" ({other} of them judged on a gate fallback, not an int8 artifact)" if other else ""))


def to_json(rows: list[Row], summaries: list[str], args: argparse.Namespace, host: dict[str, Any]) -> dict[str, Any]:
    settings = {k: getattr(args, k) for k in ("models", "size", "formats", "precisions", "max_drop", "images", "eval",
                                              "bn_batch")}
    return {"machine": host, "settings": settings, "models": summaries,
            "results": [{**asdict(r), "fp32_target": r.fp32_target, "int8_target": r.int8_target} for r in rows]}


# ---- command line -------------------------------------------------------------------------------
def _pick(text: str, allowed: tuple[str, ...] | list[str], what: str, ap: argparse.ArgumentParser) -> list[str]:
    names = {a.lower(): a for a in allowed}
    picked = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if item.lower() not in names:
            ap.error(f"unknown {what} {item!r}; expected some of {', '.join(allowed)}")
        if names[item.lower()] not in picked:
            picked.append(names[item.lower()])
    if not picked:
        ap.error(f"need at least one {what}")
    return picked


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)} (default: all)")
    ap.add_argument("--size", type=int, default=224, help="input height = width in pixels (default 224)")
    ap.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated, of {', '.join(FORMATS)} (default: both)")
    ap.add_argument("--precisions", default=",".join(PRECISIONS),
                    help=f"comma-separated, of {', '.join(ALL_PRECISIONS)} (default: {','.join(PRECISIONS)})")
    ap.add_argument("--max-drop", default="default",
                    help="int8 accuracy gate budget in points, or none to turn the gate off (default: convert's default)")
    ap.add_argument("--images", type=int, default=128, help="calibration crops (with 20%% holdout; default 128)")
    ap.add_argument("--eval", type=int, default=32, help="other crops the artifacts are measured on (default 32)")
    ap.add_argument("--bn-batch", type=int, default=16, help="batch size of the BatchNorm re-estimation (default 16)")
    ap.add_argument("--out", type=Path, default=HERE / ".cache" / "zoo",
                    help="artifacts folder (default benchmarks/.cache/zoo)")
    args = ap.parse_args(argv)
    args.models = _pick(args.models, list(MODELS), "model", ap)
    args.formats = _pick(args.formats, FORMATS, "format", ap)
    args.precisions = _pick(args.precisions, ALL_PRECISIONS, "precision", ap)
    if args.max_drop.lower() in ("none", "off"):
        args.max_drop = None
    elif args.max_drop != "default":
        try:
            args.max_drop = float(args.max_drop)
        except ValueError:
            ap.error(f"--max-drop takes a number of points or none, got {args.max_drop!r}")
    if args.size < 32 or min(args.images, args.eval, args.bn_batch) < 1:
        ap.error("need --size >= 32 and positive --images / --eval / --bn-batch")
    if args.images < 10:
        ap.error("--images must be at least 10 (the accuracy gate verifies on its 20% holdout)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="  %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("nncf", "tensorflow", "absl", "openvino"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if "openvino" in args.formats and importlib.util.find_spec("nncf") is not None:
        import nncf  # its import sets its logger to INFO, printing on stdout (where the table goes)

        nncf.set_log_level(logging.ERROR)
    host = machine(versions=True)
    side = max(256, args.size)  # larger than the model input: edgeship's preprocessing does the resize
    eval_frames = random_crops(args.eval, side, seed=1, names=PHOTOS)
    rows: list[Row] = []
    summaries: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgeship-zoo-") as tmp:
        images = write_pngs(random_crops(args.images, side, seed=0, names=PHOTOS), Path(tmp) / "images")
        for name in args.models:
            model_rows, summary = run_model(name, args, images, eval_frames)
            rows += model_rows
            summaries.append(summary)
    report(rows, summaries, args, host)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "results.json"
    out.write_text(json.dumps(to_json(rows, summaries, args, host), indent=2, default=str) + "\n")
    progress(f"wrote {out}")


if __name__ == "__main__":
    main()
