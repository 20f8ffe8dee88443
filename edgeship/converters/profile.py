"""The drift reference a conversion writes into the manifest (``manifest.drift``).

For every artifact: the calibration samples' input statistics, the artifact's own output statistics on
those samples (the device runs the artifact, so its watch compares the artifact with itself: an int8
classifier's confidences sit on a few quantized levels that the float model never produces), and for
int8 tensors the share of input and output values on the ends of the quantized range. The statistics and
the watch that reads them are :mod:`edgeship.runtime.drift` (TF-free, on the device)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
MAX_SAMPLES = 512  # enough for stable deciles; the artifact runs on these once
MIN_SAMPLES = 10


@dataclass(frozen=True)
class Reference:
    """What every artifact's profile is made from, computed once per conversion: the calibration samples, each
    one's input statistics (and its camera frame's focus), and the frames' size when they all had one."""

    samples: np.ndarray
    rows: list[dict[str, float]]
    frame_size: str | None = None


def calibration_samples(dataset: Any) -> np.ndarray | None:
    """The samples a profile is made from (None when there are too few)."""
    if dataset is None:
        return None
    x = dataset.split("all")[0][:MAX_SAMPLES]
    if len(x) < MIN_SAMPLES:
        log.info("drift profile skipped: %d calibration samples (%d or more needed)", len(x), MIN_SAMPLES)
        return None
    return x


def reference(dataset: Any) -> Reference | None:
    """The :class:`Reference` of a calibration set (None when it has too few samples). A set that
    ``edgeship calibrate`` built from frames of one size (a video, one camera) also gives each sample's
    ``frame_focus``: the focus of the camera frame it was cut from (``meta.frames``)."""
    from ..runtime.drift_stats import input_stats

    x = calibration_samples(dataset)
    if x is None:
        return None
    rows = [input_stats(s) for s in x]
    frames = (getattr(dataset, "meta", None) or {}).get("frames") or {}
    size, focus = frames.get("size"), frames.get("focus")
    if not size or not focus or len(focus) < len(rows):
        return Reference(x, rows)
    for row, f in zip(rows, focus):
        row["frame_focus"] = float(f)
    return Reference(x, rows, str(size))


def artifact_profile(artifact: Path, ref: Reference | None, *, task: str, roles: list[str],
                     spec: Any = None) -> dict[str, Any] | None:
    """The profile of one artifact: the reference's rows plus its outputs' statistics and int8 saturation on the
    samples (a detector's detections decoded by the runtime's own post-processing with its default options, in
    the pixels of ``spec``, the InputSpec)."""
    from ..preprocess import quantize_values
    from ..runtime.backends import open_backend
    from ..runtime.drift import build_profile
    from ..runtime.drift_stats import (DETECT_STATS, box_area_scale, input_stats, output_stats, probability_range,
                                       saturation)

    if ref is None:
        return None
    x, rows = ref.samples, [dict(r) for r in ref.rows]
    sat: dict[str, list[float]] = {"input": [], "output": []}
    try:
        backend = open_backend(artifact, threads=1)
    except Exception as e:  # noqa: BLE001 - a profile is an extra: the artifact is checked elsewhere
        log.warning("drift profile without output statistics: %s cannot be opened here (%s)", artifact.name, e)
        return build_profile(rows, frame_size=ref.frame_size).to_dict()
    with backend:
        quant = backend.input_quantization
        bounded_output = probability_range(backend.output_quantization)  # softmax / logistic: nothing clips
        scores = roles.index("class_scores") if "class_scores" in roles else 0
        decode = _decoder(backend, spec) if task == "detect" else None
        hw = (spec.height, spec.width) if spec is not None else None
        scale = box_area_scale(hw, spec)
        for row, sample in zip(rows, x):
            raw = backend.run_prepared(backend.prepare_inputs(sample[None]))
            if quant is not None and quant.dtype in ("int8", "uint8"):
                q = quantize_values(sample, quant)
                sat["input"].append(saturation(q))
                row.update(input_stats(q, quant))  # what the device's watch sees: the tensor as quantized
            if raw and np.asarray(raw[0]).dtype in (np.int8, np.uint8) and not bounded_output:
                sat["output"].append(saturation(raw[0]))
            outs = backend.dequantize_outputs(raw)
            if task == "classify" and outs:
                row.update(output_stats([outs[min(scores, len(outs) - 1)][0]], task="classify"))
            elif decode is not None:
                try:
                    det = decode(outs, hw)["detections"]
                except Exception as e:  # noqa: BLE001 - a profile is an extra: no detection statistics then
                    log.warning("drift profile without detection statistics: %s: %s", type(e).__name__, e)
                    decode = None
                    for r in rows:
                        for k in DETECT_STATS:
                            r.pop(k, None)
                    continue
                row.update(output_stats(None, task="detect", detections=det, area_scale=scale))
    shares = {k: round(float(np.mean(v)), 6) for k, v in sat.items() if v}
    threshold = float(decode.threshold) if decode is not None else None
    return build_profile(rows, shares, ref.frame_size, threshold).to_dict()


def _decoder(backend: Any, spec: Any) -> Any:
    """The runtime's detection post-processing for this artifact (None, with a warning, when it cannot decode
    it with its default options: an anchor-based head needs its layout, given only to ``edgeship run``)."""
    from ..errors import EdgeshipError
    from ..runtime.processing import make_postprocess

    if spec is None:
        return None
    try:
        return make_postprocess("detect", spec=spec, output_shapes=[o.shape for o in backend.outputs],
                                output_names=[o.name for o in backend.outputs])
    except EdgeshipError as e:
        log.warning("drift profile without detection statistics: %s", e)
        return None
