"""Choosing which samples to keep and which to hold out: pure functions on indices."""

from __future__ import annotations

import math
from typing import Hashable, Sequence

import numpy as np

from .sources import evenly_spaced, natural_key


def fair_quota(available: Sequence[int | None], total: int) -> list[int]:
    """Share ``total`` among groups as evenly as their sizes allow (water-filling).

    ``None`` means unlimited. Groups that have fewer than their share give the rest to the
    others; leftovers after an even split go to the first groups. The sum is
    ``min(total, sum(available))``.
    """
    n = len(available)
    cap = [math.inf if a is None else max(0, int(a)) for a in available]
    quota = [0] * n
    left = int(total)
    open_groups = [i for i in range(n) if cap[i] > 0]
    while left > 0 and open_groups:
        share = left // len(open_groups)
        if share == 0:
            for i in open_groups[:left]:
                quota[i] += 1
            break
        for i in list(open_groups):
            take = int(min(share, cap[i] - quota[i]))
            quota[i] += take
            left -= take
        open_groups = [i for i in open_groups if quota[i] < cap[i]]
    return quota


def select_balanced(groups: Sequence[Hashable], total: int) -> np.ndarray:
    """Indices (sorted) of up to ``total`` items, shared fairly between groups.

    Within a group the chosen items are spread evenly over the group's order (its time order
    for a video, its shuffled order for a folder).
    """
    groups = list(groups)
    keys = sorted(set(groups), key=natural_key)
    members = {k: [i for i, g in enumerate(groups) if g == k] for k in keys}
    quota = fair_quota([len(members[k]) for k in keys], total)
    chosen: list[int] = []
    for k, q in zip(keys, quota):
        idx = members[k]
        chosen.extend(idx[j] for j in evenly_spaced(len(idx), q))
    return np.asarray(sorted(chosen), dtype=np.int64)


def split_holdout(labels: Sequence[Hashable] | None, n: int, holdout: float, rng: np.random.Generator):
    """Split ``range(n)`` into (calib, holdout) index arrays, each shuffled.

    The holdout gets ``round(holdout * n)`` items, stratified per class when labels are given
    (largest remainders decide the classes that get one more).
    """
    n_hold = int(round(holdout * n))
    if labels is None:
        perm = rng.permutation(n)
        return perm[n_hold:], perm[:n_hold]
    labels = list(labels)
    keys = sorted(set(labels), key=natural_key)
    members = {k: np.flatnonzero(np.asarray([lab == k for lab in labels])) for k in keys}
    exact = np.asarray([holdout * members[k].size for k in keys])
    take = np.floor(exact).astype(int)
    extra = n_hold - int(take.sum())
    if extra > 0:
        order = np.argsort(-(exact - take), kind="stable")
        take[order[:extra]] += 1
    calib, hold = [], []
    for k, t in zip(keys, take):
        idx = members[k][rng.permutation(members[k].size)]
        hold.extend(idx[:t].tolist())
        calib.extend(idx[t:].tolist())
    calib_arr, hold_arr = np.asarray(calib, dtype=np.int64), np.asarray(hold, dtype=np.int64)
    return calib_arr[rng.permutation(calib_arr.size)], hold_arr[rng.permutation(hold_arr.size)]
