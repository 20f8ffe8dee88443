"""Magnitude pruning with tensorflow-model-optimization, run in a subprocess, checked by measurement.

tfmot only prunes tf_keras models and importing it switches the whole process to legacy Keras,
so the work happens in ``python -m edgeship.converters._prune_worker``. A Keras 3 model is first
bridged into tf_keras (:mod:`edgeship.converters.bridge`) and the bridge is proven exact on the
calibration data. The sparsity reached is measured per layer and overall and must be within
1 point of the target (tfmot's default update frequency of 100 steps silently prunes nothing on
a short run); otherwise :class:`ConversionError`.

Unstructured sparsity makes the weights compress well (gzip, OTA updates, storage); it does not
make dense CPU kernels faster. The report says so.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConversionError, InputError
from ..fileio import file_size, gzip_size
from .keras_io import model_flavor, predict
from .workers import run_worker

log = logging.getLogger(__name__)

SCHEDULES = ("constant", "polynomial")
TOLERANCE = 0.01  # one percentage point
SPEED_NOTE = "unstructured sparsity shrinks the compressed (gzip) size, not latency: dense kernels still multiply the zeros"


@dataclass
class PruneReport:
    """What pruning did: target, measured sparsity, schedule, sizes of the float weights before/after."""

    target: float
    schedule: dict[str, Any]
    mode: str
    overall: float
    layers: dict[str, Any]
    sizes: dict[str, int] = field(default_factory=dict)
    bridge_max_abs_diff: float | None = None
    seconds: float = 0.0
    note: str = SPEED_NOTE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_sparsity(target: float, measured: dict[str, Any], *, tolerance: float = TOLERANCE) -> None:
    """Raise ConversionError when the overall or any layer's sparsity misses ``target`` by more than ``tolerance``.

    A layer with fewer than 1/tolerance weights may miss by one weight (rounding), not more.
    """
    overall = float(measured["overall"])
    misses = []
    if abs(overall - target) > tolerance:
        misses.append(f"overall {overall:.1%}")
    for name, info in measured["layers"].items():
        n = max(1, int(info["weights"]))
        if abs(float(info["sparsity"]) - target) > max(tolerance, 1.0 / n) + 1e-9:
            misses.append(f"{name} {float(info['sparsity']):.1%}")
    if misses:
        shown = ", ".join(misses[:5]) + (f" and {len(misses) - 5} more" if len(misses) > 5 else "")
        raise ConversionError(
            f"prune: target sparsity {target:.1%} missed by more than {tolerance * 100:g} point: {shown}; "
            "the schedule did not update the masks often enough (tfmot's default frequency is 100 steps)"
        )


def prune_model(
    model: Any,
    *,
    sparsity: float,
    calib_x: np.ndarray,
    workdir: str | os.PathLike,
    schedule: str = "constant",
    finetune: tuple[np.ndarray, np.ndarray] | None = None,
    epochs: int = 1,
    frequency: int | None = None,
    from_logits: bool = False,
    batch_size: int = 32,
    learning_rate: float = 5e-4,
) -> tuple[Any, PruneReport]:
    """Prune a Keras 3 or tf_keras model; return the pruned tf_keras model and a :class:`PruneReport`.

    One-shot (``finetune=None``): masks are applied without an optimizer, the kept weights do not
    change. Fine-tune: ``finetune=(x, y)`` trains ``epochs`` epochs while the schedule prunes.
    ``frequency`` overrides the mask-update interval (default: about ten updates per run).
    """
    if not 0.0 < float(sparsity) < 1.0:
        raise InputError(f"prune sparsity must be a fraction between 0 and 1 (0.5 = 50%), got {sparsity}")
    if schedule not in SCHEDULES:
        raise InputError(f"prune schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if finetune is not None and int(epochs) < 1:
        raise InputError(f"fine-tuning needs --epochs >= 1, got {epochs}")
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="prune-", dir=workdir))
    tfk_model, bridge_diff = _as_tf_keras(model, calib_x)
    src_h5 = workdir / "before.h5"
    tfk_model.save(str(src_h5), include_optimizer=False)
    data = workdir / "data.npz"
    if finetune is not None:
        np.savez(data, x=np.asarray(finetune[0], np.float32), y=np.asarray(finetune[1], np.int64))
    else:
        np.savez(data, x=np.asarray(calib_x, np.float32))
    request = {
        "model": str(src_h5), "out": str(workdir / "after.h5"), "data": str(data), "result": str(workdir / "result.json"),
        "sparsity": float(sparsity), "schedule": schedule, "frequency": frequency,
        "mode": "finetune" if finetune is not None else "oneshot", "epochs": int(epochs),
        "batch_size": int(batch_size), "from_logits": bool(from_logits), "learning_rate": float(learning_rate),
    }
    result = run_worker("edgeship.converters._prune_worker", request, workdir, "prune")
    check_sparsity(float(sparsity), result)
    import tf_keras

    pruned = tf_keras.models.load_model(request["out"], compile=False)
    sizes = {
        "before_raw_bytes": file_size(src_h5), "before_gzip_bytes": gzip_size(src_h5),
        "after_raw_bytes": file_size(request["out"]), "after_gzip_bytes": gzip_size(request["out"]),
    }
    report = PruneReport(
        target=float(sparsity), schedule=result["schedule"], mode=result["mode"], overall=float(result["overall"]),
        layers=result["layers"], sizes=sizes, bridge_max_abs_diff=bridge_diff, seconds=round(time.monotonic() - t0, 3),
    )
    log.info("pruned to %.1f%% (%s); %s", report.overall * 100, report.mode, SPEED_NOTE)
    return pruned, report


def _as_tf_keras(model: Any, calib_x: np.ndarray) -> tuple[Any, float | None]:
    flavor = model_flavor(model)
    if flavor == "tf_keras":
        return model, None
    if flavor == "saved_model":
        raise ConversionError(
            f"prune: {model.path} is a plain SavedModel (no Keras layers); pruning needs the Keras model (.keras or .h5)"
        )
    from .bridge import check_bridge, to_tf_keras

    if calib_x is None or len(calib_x) == 0:
        raise InputError("prune: proving the Keras 3 -> tf_keras bridge needs calibration samples (--calib calib.npz)")
    bridged = to_tf_keras(model)
    diff = check_bridge(model, bridged, np.asarray(calib_x[:64], np.float32))
    return bridged, diff


def is_probability_output(model: Any, x: np.ndarray) -> bool:
    """True when the model's single output rows look like probabilities (in [0, 1], summing to 1)."""
    outs = predict(model, x[:16])
    if len(outs) != 1 or outs[0].ndim != 2:
        return False
    y = outs[0]
    return bool(np.all(y >= -1e-6) and np.all(y <= 1 + 1e-6) and np.allclose(y.sum(axis=1), 1.0, atol=1e-3))
