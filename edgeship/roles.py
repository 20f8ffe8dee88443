"""What each model output is (its role), and whether int8 would collapse it: pure numpy, shared by
convert, verify, the gate and the runtime.

    class_scores   (N, C>=2) probabilities (non-negative rows that sum to 1): top-1 accuracy applies
    boxes          (N, 4) or (N, K, 4) box coordinates / regressions
    raw            anything else (landmarks, masks, heatmaps, logits, anchors' scores...)

A role is guessed from the float model's outputs when that is unambiguous; a user sets it with
``--output NAME_OR_INDEX=ROLE``. Classification metrics apply to the one class-score output only;
a model with none (or several) is compared with the per-output agreement metrics.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

ROLES = ("class_scores", "boxes", "raw")
SOFTMAX_INT8_SCALE = 1.0 / 256.0  # TFLite quantizes a softmax output with this fixed scale
LOST_MASS_LIMIT = 0.05  # an output losing more than this share of its magnitude to int8 rounding has collapsed


def is_probabilities(y: np.ndarray, atol: float = 1e-3) -> bool:
    a = np.asarray(y, dtype=np.float64)
    return (a.ndim == 2 and a.shape[1] >= 2 and a.size > 0 and bool(np.all(a >= -1e-6)) and bool(np.all(a <= 1 + 1e-6))
            and bool(np.allclose(a.sum(axis=1), 1.0, atol=atol)))


def guess_role(y: np.ndarray) -> str:
    """The role of one output from the float model's values on a few samples (batch first)."""
    a = np.asarray(y)
    if is_probabilities(a):
        return "class_scores"
    if a.ndim >= 2 and a.shape[-1] == 4:
        return "boxes"
    return "raw"


def guess_roles(outputs: Sequence[np.ndarray]) -> list[str]:
    return [guess_role(o) for o in outputs]


def class_output(roles: Sequence[str | None]) -> int | None:
    """The index of the one class-score output, or None when there is none or several."""
    found = [i for i, r in enumerate(roles) if r == "class_scores"]
    return found[0] if len(found) == 1 else None


def parse_role_overrides(items: Sequence[str], names: Sequence[str]) -> dict[int, str]:
    """``["probs=class_scores", "0=boxes"]`` -> {output index: role}; names are the model's output names."""
    from .errors import InputError

    out: dict[int, str] = {}
    for item in items:
        key, sep, role = str(item).partition("=")
        if not sep or role not in ROLES:
            raise InputError(f"--output takes NAME=ROLE or INDEX=ROLE with ROLE one of {', '.join(ROLES)}, got {item!r}")
        if key.isdigit() and int(key) < len(names):
            out[int(key)] = role
        elif key in names:
            out[list(names).index(key)] = role
        else:
            raise InputError(f"--output {item!r}: the model has no output {key!r}; its outputs are "
                             f"{', '.join(f'{i}={n}' for i, n in enumerate(names))}")
    return out


def int8_lost_mass(y: np.ndarray, probabilities: bool | None = None) -> float:
    """Share of an output's total magnitude that int8 rounding would turn into zeros.

    A softmax output uses TFLite's fixed scale 1/256; any other output its own range / 255. Over
    1000 classes most probabilities are under 1/512 and round to 0: the row no longer sums to 1.
    """
    a = np.abs(np.asarray(y, dtype=np.float64))
    total = float(a.sum())
    if total == 0.0 or a.size == 0:
        return 0.0
    probs = is_probabilities(y) if probabilities is None else probabilities
    scale = SOFTMAX_INT8_SCALE if probs else float(np.ptp(np.asarray(y, dtype=np.float64))) / 255.0
    if scale == 0.0:
        return 0.0
    return float(a[a < scale / 2].sum() / total)


def collapsed(ref: np.ndarray, art: np.ndarray) -> str | None:
    """A sentence when an artifact's output collapsed against the float model's, else None."""
    r, a = np.asarray(ref, dtype=np.float64), np.asarray(art, dtype=np.float64)
    if r.shape != a.shape or r.size == 0:
        return None
    if is_probabilities(r):  # tiny probabilities rounding to 0 is harmless; the mass going is not
        sums = a.sum(axis=1)
        if not np.allclose(sums, 1.0, atol=0.02):
            return (f"its rows sum to {float(np.median(sums)):.3g} (median) instead of 1: most probabilities were rounded "
                    "to 0 (keep the softmax in float)")
        return None
    significant = np.abs(r) > 0.01 * float(np.ptp(r))  # values that matter: over 1% of the output's range
    if significant.any():
        zeroed = float(np.mean(a[significant] == 0.0))
        if zeroed > 0.5:
            return f"{zeroed:.0%} of its significant values (over 1% of its range) became exactly 0"
    return None
