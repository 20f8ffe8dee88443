"""Activation range setting for TFLite int8: MSE-optimal clipping per tensor, chosen on the calibration data.

The TFLite converter sets every activation's int8 range to the min and max it saw during
calibration. One outlier in one sample then stretches the step for every other value. This module
takes the converter's calibrated (still float) model, runs it on the calibration samples with every
tensor kept, and for each recorded activation range picks the clipped range [a*min, a*max] (a in
:data:`CLIP_GRID`) with the least mean squared int8 error over the values it produced, the
"MSE" range setting of TensorRT, AIMET and NNCF's histogram estimator. The new ranges are written
back into the calibrated model, which TFLite's MLIR quantizer then quantizes as usual.

Graph inputs and outputs keep their min-max ranges (an input must not clip what the camera sends,
an output carries the scores the app reads), and so do tensors whose range an op fixes
(softmax, logistic, tanh outputs). :func:`choose` quantizes with both range settings and keeps
the one whose outputs are closer to the float model on calibration samples the clipping was not
fitted on: the method is on by default only where it measures better (``ranges="auto"``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

RANGES = ("auto", "mse", "minmax")  # how activation ranges are set; the first is the default
DEFAULT_RANGES = RANGES[0]
# fractions of the observed range tried: 1.00, 0.98 ... 0.30, then coarser down to 0.05 (a lone outlier)
CLIP_GRID = tuple(round(1.0 - 0.02 * i, 2) for i in range(36)) + (0.25, 0.2, 0.15, 0.1, 0.07, 0.05)
MAX_SAMPLES = 64  # calibration samples run to collect activations
MAX_VALUES = 100_000  # values kept per tensor (a uniform subsample)
FIXED_RANGE_OPS = ("SOFTMAX", "LOGISTIC", "TANH", "LOG_SOFTMAX", "HARD_SWISH")


@dataclass(frozen=True)
class RangeChange:
    """One tensor whose range was clipped: name, observed (min, max), chosen (min, max), int8 MSE before/after."""

    tensor: str
    observed: tuple[float, float]
    chosen: tuple[float, float]
    mse_minmax: float
    mse_chosen: float


def int8_mse(values: np.ndarray, lo: float, hi: float) -> float:
    """Mean squared error of quantizing ``values`` to asymmetric int8 over [lo, hi] (zero kept exact, as TFLite
    nudges it)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0:
        return float(np.mean(values.astype(np.float64) ** 2))
    scale = (hi - lo) / 255.0
    zp = np.round(-128 - lo / scale)
    q = np.clip(np.round(values / scale) + zp, -128, 127)
    return float(np.mean(((q - zp) * scale - values) ** 2))


def best_range(values: np.ndarray, lo: float, hi: float, grid: Sequence[float] = CLIP_GRID) -> tuple[float, float, float, float]:
    """(lo, hi, mse at min-max, mse at the chosen range): the clip of [lo, hi] with the least int8 MSE."""
    v = np.asarray(values, dtype=np.float64).ravel()
    base = int8_mse(v, lo, hi)
    best = (lo, hi, base)
    for a in grid:
        m = int8_mse(v, a * lo, a * hi)
        if m < best[2] * (1 - 1e-6):
            best = (a * lo, a * hi, m)
    return best[0], best[1], base, best[2]


def _tensor_name(t: Any) -> str:
    return t.name.decode() if isinstance(t.name, bytes) else str(t.name)


def _op_names(model: Any) -> list[str]:
    from tensorflow.lite.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for code in model.operatorCodes:
        c = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        out.append(names.get(c, "CUSTOM"))
    return out


def _ranged_tensors(model: Any) -> dict[int, tuple[float, float]]:
    """Tensor index -> calibrated (min, max) of the activations worth clipping in the main subgraph."""
    g = model.subgraphs[0]
    skip = {int(i) for i in g.inputs} | {int(i) for i in g.outputs}
    ops = _op_names(model)
    for op in g.operators:
        if ops[op.opcodeIndex] in FIXED_RANGE_OPS:
            skip.update(int(i) for i in op.outputs)
    out = {}
    for i, t in enumerate(g.tensors):
        q = t.quantization
        if i in skip or q is None or q.min is None or q.max is None or len(q.min) != 1:
            continue
        if np.dtype(np.float32) != _float_type(t):
            continue
        out[i] = (float(q.min[0]), float(q.max[0]))
    return out


def _float_type(t: Any) -> Any:
    from tensorflow.lite.python import schema_py_generated as schema

    return np.dtype(np.float32) if t.type == schema.TensorType.FLOAT32 else None


def collect(calibrated: bytes, x: np.ndarray, tensors: Sequence[int], *, max_samples: int = MAX_SAMPLES,
            max_values: int = MAX_VALUES, seed: int = 0) -> dict[int, np.ndarray]:
    """Values each of ``tensors`` takes when the calibrated (float) model runs on up to ``max_samples`` of ``x``."""
    import tensorflow as tf

    interp = tf.lite.Interpreter(model_content=bytes(calibrated), experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    rng = np.random.default_rng(seed)
    samples = x[:max_samples]
    per = max(1, max_values // max(1, len(samples)))
    kept: dict[int, list[np.ndarray]] = {i: [] for i in tensors}
    for s in samples:
        interp.set_tensor(inp["index"], np.ascontiguousarray(s[None], dtype=np.float32))
        interp.invoke()
        for i in tensors:
            v = np.asarray(interp.get_tensor(i), dtype=np.float32).ravel()
            kept[i].append(v if v.size <= per else rng.choice(v, per, replace=False))
    return {i: np.concatenate(v) for i, v in kept.items() if v}


def mse_ranges(calibrated: bytes, x: np.ndarray) -> tuple[bytes, list[RangeChange]]:
    """The calibrated model with every clippable activation range set to its int8-MSE-optimal clip."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    ranged = _ranged_tensors(model)
    values = collect(calibrated, x, list(ranged))
    changes = []
    g = model.subgraphs[0]
    for i, (lo, hi) in ranged.items():
        v = values.get(i)
        if v is None or v.size == 0:
            continue
        new_lo, new_hi, before, after = best_range(v, lo, hi)
        if (new_lo, new_hi) == (lo, hi):
            continue
        q = g.tensors[i].quantization
        q.min, q.max = np.asarray([new_lo], np.float32), np.asarray([new_hi], np.float32)
        changes.append(RangeChange(_tensor_name(g.tensors[i]), (lo, hi), (new_lo, new_hi), before, after))
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), changes


def output_sqnr(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """The worst output's SQNR (dB) of ``outputs`` against ``reference``."""
    worst = np.inf
    for r, o in zip(reference, outputs):
        r64, o64 = np.asarray(r, np.float64), np.asarray(o, np.float64)
        noise = float(np.sum((r64 - o64) ** 2))
        signal = float(np.sum(r64 ** 2))
        worst = min(worst, np.inf if noise == 0 else 10 * np.log10(max(signal, 1e-30) / noise))
    return float(worst)


CHOICE_MARGIN_DB = 1.0  # an alternative replaces the plain int8 only when it is at least this much closer


def sample_sqnr(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray], cap: float = 100.0) -> float:
    """Mean over samples of each sample's SQNR (dB, capped at ``cap``), worst output: what a choice between two int8
    models is judged on. The SQNR of the whole set is ruled by its few worst samples and flips between subsets of
    a few dozen images; the per-sample mean does not."""
    worst = np.inf
    for r, o in zip(reference, outputs):
        r64 = np.asarray(r, np.float64).reshape(len(r), -1)
        o64 = np.asarray(o, np.float64).reshape(len(o), -1)
        noise = np.sum((r64 - o64) ** 2, axis=1)
        signal = np.maximum(np.sum(r64 ** 2, axis=1), 1e-30)
        per = np.where(noise > 0, 10 * np.log10(signal / np.maximum(noise, 1e-30)), cap)
        worst = min(worst, float(np.mean(np.minimum(per, cap))))
    return float(worst)


def choose(calibrated: bytes, x: np.ndarray, method: str, quantize: Callable[[bytes], bytes],
           run: Callable[[bytes, np.ndarray], list[np.ndarray]]) -> tuple[bytes, dict[str, Any]]:
    """The calibrated model to quantize under ``method`` and a record of what was chosen and measured.

    ``quantize(calibrated) -> int8 model`` and ``run(model, x) -> outputs (float)`` are injected. The clipped
    ranges are fitted on the first part of ``x``; for ``"auto"`` both range settings are quantized and judged on
    the rest (samples the clipping never saw: judged on its own samples, MSE clipping always looks better), and
    MSE clipping is kept when its outputs are :data:`CHOICE_MARGIN_DB` closer to the calibrated float model
    (:func:`sample_sqnr`)."""
    if method not in RANGES:
        raise ValueError(f"ranges must be one of {', '.join(RANGES)}, got {method!r}")
    if method == "minmax":
        return calibrated, {"method": "minmax"}
    fit, judge = split_samples(x)
    tuned, changes = mse_ranges(calibrated, fit)
    record: dict[str, Any] = {"method": "mse", "clipped_tensors": len(changes)}
    if method == "mse" or not changes:
        return tuned, record
    if len(judge) == 0:
        record.update(method="minmax", reason="too few calibration samples to judge the clipping on unseen ones")
        return calibrated, record
    ref = run(calibrated, judge)
    keep, measured = judge_alternative(ref, {"minmax": run(quantize(calibrated), judge), "mse": run(quantize(tuned), judge)},
                                       "the clipping")
    record.update(measured)
    if keep:
        return tuned, record
    record["method"] = "minmax"
    return calibrated, record


def judge_alternative(reference: Sequence[np.ndarray], outputs: dict[str, Sequence[np.ndarray]],
                      fitted: str, margin_db: float = CHOICE_MARGIN_DB) -> tuple[bool, dict[str, Any]]:
    """Whether the second of two int8 models (``outputs``: plain name -> its outputs, then the alternative's) replaces
    the first: its :func:`sample_sqnr` against ``reference`` is ``margin_db`` higher (at least as high for 0); and the
    record of that measurement (``fitted``: what was fitted on other samples, for the record's wording)."""
    (plain, a), (alt, b) = outputs.items()
    sq = {plain: sample_sqnr(reference, a), alt: sample_sqnr(reference, b)}
    judged = len(next(iter(reference))) if len(reference) else 0
    rule = f"{margin_db:g} dB better" if margin_db else "not worse"
    record = {"chosen_by": f"mean per-sample output SQNR on {judged} calibration samples {fitted} was not fitted on "
                           f"({alt} kept when {rule})",
              "sqnr_db": {k: round(v, 2) for k, v in sq.items()}}
    return sq[alt] >= sq[plain] + margin_db, record


def split_samples(x: np.ndarray, fit: int = MAX_SAMPLES, judge: int = 2 * MAX_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """(samples the clipping is fitted on, samples it is judged on): at most ``fit`` and ``judge``, half each when
    there are fewer than ``fit + judge``."""
    n = len(x)
    k = min(fit, n // 2) if n < fit + judge else fit
    return x[:k], x[k:k + judge]
