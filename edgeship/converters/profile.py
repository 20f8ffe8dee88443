"""The drift reference a conversion writes into the manifest (``manifest.drift``).

For every artifact: the calibration samples' input statistics, the artifact's own output statistics on
those samples (the device runs the artifact, so its watch compares the artifact with itself: an int8
classifier's confidences sit on a few quantized levels that the float model never produces), and for
int8 tensors the share of input and output values on the ends of the quantized range. The statistics and
the watch that reads them are :mod:`edgeship.runtime.drift` (TF-free, on the device)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
MAX_SAMPLES = 512  # enough for stable deciles; the artifact runs on these once
MIN_SAMPLES = 10


def calibration_samples(dataset: Any) -> np.ndarray | None:
    """The samples a profile is made from (None when there are too few)."""
    if dataset is None:
        return None
    x = dataset.split("all")[0][:MAX_SAMPLES]
    if len(x) < MIN_SAMPLES:
        log.info("drift profile skipped: %d calibration samples (%d or more needed)", len(x), MIN_SAMPLES)
        return None
    return x


def input_rows(x: np.ndarray | None) -> list[dict[str, float]] | None:
    """Each calibration sample's input statistics (computed once per conversion)."""
    from ..runtime.drift import input_stats

    return None if x is None else [input_stats(s) for s in x]


def artifact_profile(artifact: Path, x: np.ndarray | None, rows: list[dict[str, float]] | None, *, task: str,
                     roles: list[str]) -> dict[str, Any] | None:
    """The profile of one artifact: ``rows`` plus its outputs' statistics and int8 saturation on the samples."""
    from ..preprocess import quantize_values
    from ..runtime.backends import open_backend
    from ..runtime.drift import build_profile, output_stats, saturation

    if x is None or rows is None:
        return None
    rows = [dict(r) for r in rows]
    sat: dict[str, list[float]] = {"input": [], "output": []}
    try:
        backend = open_backend(artifact, threads=1)
    except Exception as e:  # noqa: BLE001 - a profile is an extra: the artifact is checked elsewhere
        log.warning("drift profile without output statistics: %s cannot be opened here (%s)", artifact.name, e)
        return build_profile(rows).to_dict()
    with backend:
        quant = backend.input_quantization
        scores = roles.index("class_scores") if "class_scores" in roles else 0
        for row, sample in zip(rows, x):
            raw = backend.run_prepared(backend.prepare_inputs(sample[None]))
            if quant is not None and quant.dtype in ("int8", "uint8"):
                sat["input"].append(saturation(quantize_values(sample, quant)))
            if raw and np.asarray(raw[0]).dtype in (np.int8, np.uint8):
                sat["output"].append(saturation(raw[0]))
            outs = backend.dequantize_outputs(raw)
            if task == "classify" and outs:
                row.update(output_stats([outs[min(scores, len(outs) - 1)][0]], task="classify"))
    shares = {k: round(float(np.mean(v)), 6) for k, v in sat.items() if v}
    return build_profile(rows, shares).to_dict()
