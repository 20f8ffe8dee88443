"""Accuracy and fidelity metrics for verification: small pure numpy functions.

Accuracies, agreement and drops are in percentage points (0-100). "Drop" is reference minus
artifact, so a positive drop means the artifact is worse. Nothing here imports a framework.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


def class_predictions(output: np.ndarray) -> np.ndarray | None:
    """Top-1 class per sample for a classification output (N, C>=2); None for other outputs."""
    a = np.asarray(output)
    if a.ndim != 2 or a.shape[1] < 2:
        return None
    return np.argmax(a, axis=1)


def agreement(pred_a: np.ndarray, pred_b: np.ndarray) -> float:
    """Percentage of samples on which two top-1 predictions agree."""
    a, b = np.asarray(pred_a).ravel(), np.asarray(pred_b).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"agreement needs two non-empty prediction vectors of equal length, got {a.shape} and {b.shape}")
    return float(np.mean(a == b) * 100.0)


TIE_MARGIN = 0.03  # the float model's top two scores this close (in probability) are a near-tie


def as_probabilities(scores: np.ndarray) -> np.ndarray:
    """(N, C) class scores as probabilities: as given when they already are, else softmax (logits)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size and s.min() >= 0.0 and np.allclose(s.sum(axis=1), 1.0, atol=1e-2):
        return s
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def near_tie_flips(ref_scores: np.ndarray, ref_pred: np.ndarray, art_pred: np.ndarray, margin: float = TIE_MARGIN) -> np.ndarray:
    """Which top-1 flips are near-ties: the float model scored the class the artifact picked within ``margin``
    (probability) of its own top class. Such a flip is rounding between two classes the float model could not
    tell apart, not an error int8 made. (N,) bool, False where the predictions agree."""
    p = as_probabilities(ref_scores)
    rows = np.arange(len(p))
    flipped = np.asarray(ref_pred) != np.asarray(art_pred)
    return flipped & (p[rows, ref_pred] - p[rows, art_pred] <= margin)


def samples_to_resolve(budget_points: float) -> int:
    """How many samples make one flip worth less than ``budget_points`` (so the budget can tell 0 from 1 flip)."""
    return int(math.floor(100.0 / budget_points)) + 1 if budget_points > 0 else 0


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return agreement(pred, labels)


def paired_drop_ci(correct_ref: np.ndarray, correct_art: np.ndarray, *, z: float = Z95) -> tuple[float, float, float]:
    """Accuracy drop (reference - artifact, in points) and its normal-approximation interval.

    The samples are paired (both models see the same images), so the interval comes from the
    per-sample differences ``d_i = ref_correct_i - art_correct_i``: ``mean(d) +- z * sd(d) / sqrt(n)``
    with the sample standard deviation (ddof=1). Returns ``(drop, low, high)`` in points.
    """
    r = np.asarray(correct_ref, dtype=np.float64).ravel()
    a = np.asarray(correct_art, dtype=np.float64).ravel()
    if r.shape != a.shape or r.size == 0:
        raise ValueError(f"paired_drop_ci needs two non-empty vectors of equal length, got {r.shape} and {a.shape}")
    d = (r - a) * 100.0
    mean = float(d.mean())
    if d.size < 2:
        return mean, mean, mean
    half = z * float(d.std(ddof=1)) / math.sqrt(d.size)
    return mean, mean - half, mean + half


def paired_bootstrap_ci(correct_ref: np.ndarray, correct_art: np.ndarray, *, n_boot: int = 2000, confidence: float = 0.95,
                        seed: int = 0) -> tuple[float, float, float]:
    """Accuracy drop and a percentile bootstrap interval over resampled sample indices (paired)."""
    r = np.asarray(correct_ref, dtype=np.float64).ravel()
    a = np.asarray(correct_art, dtype=np.float64).ravel()
    if r.shape != a.shape or r.size == 0:
        raise ValueError(f"paired_bootstrap_ci needs two non-empty vectors of equal length, got {r.shape} and {a.shape}")
    d = (r - a) * 100.0
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    means = d[idx].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(d.mean()), float(lo), float(hi)


def per_class_accuracy(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class accuracy in percent (NaN for a class with no samples) and the per-class counts."""
    p, y = np.asarray(pred).ravel(), np.asarray(labels).ravel()
    counts = np.bincount(y, minlength=n_classes)[:n_classes]
    hits = np.bincount(y[p == y], minlength=n_classes)[:n_classes]
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(counts > 0, hits / np.maximum(counts, 1) * 100.0, np.nan)
    return acc, counts


def cosine_similarity(ref: np.ndarray, test: np.ndarray) -> float:
    """Mean over samples of the cosine between the flattened per-sample outputs.

    Two all-zero samples count as identical (1.0); one all-zero sample against a non-zero one as 0.
    """
    r = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
    t = np.asarray(test, dtype=np.float64).reshape(len(test), -1)
    if r.shape != t.shape or r.shape[0] == 0:
        raise ValueError(f"cosine_similarity needs two non-empty outputs of equal shape, got {r.shape} and {t.shape}")
    nr, nt = np.linalg.norm(r, axis=1), np.linalg.norm(t, axis=1)
    both_zero = (nr == 0) & (nt == 0)
    denom = np.where(nr * nt > 0, nr * nt, 1.0)
    cos = np.where(nr * nt > 0, (r * t).sum(axis=1) / denom, 0.0)
    cos = np.where(both_zero, 1.0, cos)
    return float(np.clip(cos, -1.0, 1.0).mean())


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB: ``10 log10(sum(ref^2) / sum((ref - test)^2))``.

    ``inf`` when the outputs are identical; ``-inf`` when the reference is all zero but the test is not.
    """
    r = np.asarray(ref, dtype=np.float64)
    t = np.asarray(test, dtype=np.float64)
    if r.shape != t.shape:
        raise ValueError(f"sqnr_db needs outputs of equal shape, got {r.shape} and {t.shape}")
    noise = float(np.sum((r - t) ** 2))
    signal = float(np.sum(r**2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def max_abs_error(ref: np.ndarray, test: np.ndarray) -> float:
    r = np.asarray(ref, dtype=np.float64)
    t = np.asarray(test, dtype=np.float64)
    if r.shape != t.shape:
        raise ValueError(f"max_abs_error needs outputs of equal shape, got {r.shape} and {t.shape}")
    return float(np.max(np.abs(r - t))) if r.size else 0.0


def channel_noise_ratio(ref: np.ndarray, test: np.ndarray, *, axis: int = -1) -> float:
    """Mean over channels of ``sum((ref - test)^2) / sum(ref^2)``, each channel's ratio capped at 1.

    The error measure the accuracy gate ranks layers by: a per-tensor quantizer whose range one
    channel dominates rounds the other channels to zero, a ratio of 1 for each of them, even
    though the tensor-wide error relative to its scale looks small. Channels with (next to) no
    signal are skipped (see :func:`channel_ratio_from_energy`). NaN when every channel is zero.
    """
    r = np.moveaxis(np.asarray(ref, dtype=np.float64), axis, -1)
    t = np.moveaxis(np.asarray(test, dtype=np.float64), axis, -1)
    if r.shape != t.shape:
        raise ValueError(f"channel_noise_ratio needs tensors of equal shape, got {r.shape} and {t.shape}")
    c = r.shape[-1] if r.ndim else 1
    r, t = r.reshape(-1, c), t.reshape(-1, c)
    return channel_ratio_from_energy((r**2).sum(axis=0), ((r - t) ** 2).sum(axis=0))


def channel_ratio_from_energy(signal: np.ndarray, noise: np.ndarray, *, floor: float = 1e-3) -> float:
    """Mean of ``min(noise_c / signal_c, 1)`` over channels whose signal is at least ``floor`` x the median.

    The floor is relative to the median channel (not the largest), so the weak channels of a
    tensor dominated by one channel still count, while channels that are all but silent (a
    numerically-zero logit) do not blow the mean up.
    """
    signal = np.asarray(signal, dtype=np.float64).ravel()
    noise = np.asarray(noise, dtype=np.float64).ravel()
    live = signal > 0
    if not live.any():
        return math.nan
    live &= signal >= floor * float(np.median(signal[live]))
    return float(np.mean(np.minimum(noise[live] / signal[live], 1.0)))


def dominant_class(pred: np.ndarray) -> tuple[int, float]:
    """The most frequent predicted class and the percentage of samples it takes."""
    p = np.asarray(pred).ravel()
    if p.size == 0:
        raise ValueError("dominant_class needs at least one prediction")
    counts = np.bincount(p)
    top = int(np.argmax(counts))
    return top, float(counts[top] / p.size * 100.0)


def range_mismatch(x: np.ndarray, expected: Sequence[float], *, min_span: float = 0.25, slack: float = 0.05) -> str | None:
    """Why the samples ``x`` do not look like they came from ``expected`` = (lo, hi), or None.

    Flags data that covers less than ``min_span`` of the expected span (e.g. already in [0, 1]
    and divided by 255 again) or that goes beyond the range by more than ``slack`` of the span.
    """
    lo, hi = float(expected[0]), float(expected[1])
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0 or hi <= lo:
        return None
    xmin, xmax = float(a.min()), float(a.max())
    span = hi - lo
    if xmin < lo - slack * span or xmax > hi + slack * span:
        return f"samples span [{xmin:.4g}, {xmax:.4g}], outside the InputSpec range [{lo:.4g}, {hi:.4g}]"
    if (xmax - xmin) < min_span * span:
        return (f"samples span only [{xmin:.4g}, {xmax:.4g}] of the InputSpec range [{lo:.4g}, {hi:.4g}] "
                f"({(xmax - xmin) / span * 100:.1f}%); were they normalised twice?")
    return None


# ---- detection: the artifact's boxes against the float model's own ----------------------------------
DETECTION_IOU = 0.5


def match_detections(ref: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                     art: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                     iou: float = DETECTION_IOU) -> tuple[np.ndarray, np.ndarray, int]:
    """Greedy matching per image, highest artifact score first: (scores, true-positive flags, reference boxes).

    Each item is one image's (xyxy (N, 4), scores (N,), class ids (N,)). A detection of the artifact is a
    true positive when it overlaps an unmatched reference box of the same class by at least ``iou``.
    """
    if len(ref) != len(art):
        raise ValueError(f"match_detections needs one entry per image on both sides, got {len(ref)} and {len(art)}")
    from ..runtime.processing.detect import box_iou  # the IoU the runtime's NMS uses (numpy only)

    scores, hits, total = [], [], 0
    for (rb, _rs, rc), (ab, as_, ac) in zip(ref, art):
        rb, rc, ab, as_, ac = (np.asarray(v) for v in (rb, rc, ab, as_, ac))
        total += len(rb)
        order = np.argsort(-as_, kind="stable")
        taken = np.zeros(len(rb), bool)
        overlap = box_iou(ab, rb) if len(ab) and len(rb) else np.zeros((len(ab), len(rb)))
        for i in order:
            cand = np.where(~taken & (rc == ac[i]) & (overlap[i] >= iou))[0] if len(rb) else np.zeros(0, int)
            hit = bool(len(cand))
            if hit:
                taken[cand[np.argmax(overlap[i, cand])]] = True
            scores.append(float(as_[i]))
            hits.append(hit)
    return np.asarray(scores, np.float64), np.asarray(hits, bool), total


def average_precision(scores: np.ndarray, hits: np.ndarray, total: int) -> float:
    """All-point interpolated AP (0-100) of ranked detections against ``total`` ground-truth boxes."""
    if total == 0:
        return 100.0 if len(scores) == 0 else 0.0
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores), kind="stable")
    tp = np.cumsum(np.asarray(hits)[order])
    recall = tp / total
    precision = tp / np.arange(1, len(tp) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(steps * envelope) * 100.0)


def detection_agreement(ref: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                        art: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                        iou: float = DETECTION_IOU) -> dict[str, float | int]:
    """How well the artifact's detections reproduce the float model's on the same images (no labels needed).

    The float model's detections are the ground truth: ``ap50`` is the artifact's AP at IoU ``iou`` over
    all classes (100 when it finds exactly the same boxes), ``recall`` and ``precision`` are at the
    decoder's score threshold. Percentages 0-100.
    """
    scores, hits, total = match_detections(ref, art, iou)
    tp = int(hits.sum())
    return {"ap50": average_precision(scores, hits, total), "recall": 100.0 * tp / total if total else 100.0,
            "precision": 100.0 * tp / len(hits) if len(hits) else (100.0 if total == 0 else 0.0),
            "reference_boxes": int(total), "artifact_boxes": int(len(hits)), "iou": float(iou)}
