"""Classification post-processing: top-k with labels and a score threshold (pure numpy)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ...errors import SpecError
from ..types import Classification, label_for


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def looks_like_logits(scores: np.ndarray) -> bool:
    """True when scores cannot be probabilities (a value below 0 or above 1)."""
    return bool(scores.size) and (float(scores.min()) < 0.0 or float(scores.max()) > 1.0)


def top_k(
    scores: np.ndarray,
    k: int = 5,
    *,
    labels: Sequence[str] | None = None,
    threshold: float = 0.0,
    softmax_logits: bool | None = None,
) -> Classification:
    """The ``k`` best classes of one sample's scores (any shape with C elements), best first; equal
    scores in class order (the same answer on every CPU: numpy's own partition and sort order ties
    differently on x86 and ARM).

    Classes scoring below ``threshold`` are left out. ``softmax_logits``: apply softmax first
    (None = only when the scores look like logits, i.e. fall outside [0, 1]).
    """
    s = np.asarray(scores, dtype=np.float32).reshape(-1)
    if s.size == 0:
        raise SpecError("top_k: got an empty score vector")
    if softmax_logits or (softmax_logits is None and looks_like_logits(s)):
        s = softmax(s)
    k = max(1, min(int(k), s.size))
    if k < s.size:  # the k best and every class tied with the k-th, then a stable sort in class order
        cut = -np.partition(-s, k - 1)[k - 1]
        idx = np.flatnonzero(s >= cut)
    else:
        idx = np.arange(s.size)
    idx = idx[np.argsort(-s[idx], kind="stable")][:k]
    idx = idx[s[idx] >= threshold]
    return Classification(tuple((int(i), label_for(labels, int(i)), float(s[i])) for i in idx))


def classify_outputs(outputs: Sequence[np.ndarray], *, k: int = 5, labels: Sequence[str] | None = None,
                     threshold: float = 0.0) -> Classification:
    """Top-k of a classifier's first output for batch item 0 (shape (1, C) or (C,))."""
    if not outputs:
        raise SpecError("classification needs at least one model output, got none")
    out = np.asarray(outputs[0])
    if out.ndim >= 2:
        out = out[0]
    return top_k(out, k, labels=labels, threshold=threshold)
