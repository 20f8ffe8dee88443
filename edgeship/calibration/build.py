"""build_dataset: sources -> deduplicated, balanced, split RepresentativeDataset.

1. Share ``count`` fairly between the sources; ask each for about twice its share (so dedup has
   something to drop), spread over the whole source.
2. Drop near-identical frames (per class) as they arrive; resize the survivors to the model's
   input size (uint8, so the pool stays small).
3. Keep ``count`` of them, fairly shared between classes (labelled) or sources (unlabelled) and
   spread evenly within each; hold out a stratified ``holdout`` fraction; normalise with the
   InputSpec through the one :func:`edgeship.preprocess.preprocess`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from .. import __version__
from ..errors import CalibrationError, InputError
from ..spec import InputSpec
from ..preprocess import preprocess
from .dataset import FORMAT, FORMAT_VERSION, RepresentativeDataset, _check_fraction
from .dedup import DEFAULT_THRESHOLD, Deduper, FrameFeatures, frame_features, sample_to_frame
from .select import fair_quota, select_balanced, split_holdout
from .sources import Candidate, Source, SourceOptions, natural_key, open_sources
from .summary import summarize

log = logging.getLogger(__name__)

MIN_RECOMMENDED = 100
ARRAY_COLORS = ("BGR", "RGB")


@dataclass
class _Kept:
    image: np.ndarray  # uint8 at model size (intermediate spec), or a float sample
    preprocessed: bool
    label: str | None
    source: int
    features: FrameFeatures
    origin: str


def intermediate_spec(spec: InputSpec) -> InputSpec:
    """Resize-only version of ``spec``: uint8, NHWC, BGR (or gray). ``preprocess`` of its output
    with ``spec`` equals ``preprocess`` of the original frame (channel swaps commute with resizing)."""
    return replace(spec, dtype="uint8", layout="NHWC", color_order="GRAY" if spec.channels == 1 else "BGR",
                   mean=(0.0,), std=(1.0,), scale=1.0)


def _features(c: Candidate, spec: InputSpec) -> FrameFeatures:
    if c.preprocessed:
        return frame_features(sample_to_frame(c.image, spec), size="preprocessed")
    return frame_features(c.image)


def _collect(srcs: Sequence[Source], count: int, oversample: float, seed: int, deduper: Deduper,
             spec: InputSpec) -> list[_Kept]:
    mid = intermediate_spec(spec)
    quotas = fair_quota([s.available() for s in srcs], count)
    pool: list[_Kept] = []
    for si, (src, quota) in enumerate(zip(srcs, quotas)):
        avail = src.available()
        want = int(math.ceil(quota * oversample))
        want = want if avail is None else min(avail, want)
        rng = np.random.default_rng([seed, si])
        for cand in src.candidates(want, rng):
            feats = _features(cand, spec)
            if not deduper.offer(feats.thumb, cand.label):
                src.stats.duplicates += 1
                continue
            src.stats.kept += 1
            img = cand.image if cand.preprocessed else preprocess(cand.image, mid)
            pool.append(_Kept(img, cand.preprocessed, cand.label, si, feats, cand.origin))
        log.info("%s: read %d, %d duplicates, %d unreadable", src.name, src.stats.read, src.stats.duplicates,
                 src.stats.unreadable)
    return pool


def _class_list(pool: list[_Kept], srcs: Sequence[Source], label_names: Sequence[str] | None) -> list[str] | None:
    """Class names when every kept sample is labelled (else None, with a warning naming the sources)."""
    names = {k.label for k in pool}
    if not pool or names == {None}:
        return None
    if None in names:
        unlabelled = sorted({srcs[k.source].name for k in pool if k.label is None})
        log.warning("labels dropped: %s give unlabelled samples while other sources are labelled", ", ".join(unlabelled))
        return None
    if label_names:
        unknown = sorted(names - set(label_names), key=natural_key)
        if unknown:
            raise CalibrationError(f"classes {unknown} found in the sources are not in the labels list {list(label_names)}")
        return list(label_names)
    return sorted(names, key=natural_key)


def _frames(chosen: list[_Kept], calib: Sequence[int], hold: Sequence[int]) -> dict[str, Any]:
    """The source frames' size ("WxH" when every sample came from a frame of that one size, else None) and each
    sample's frame focus, calib then holdout: what the drift profile compares a camera's own frames with (not
    rounded: frames that repeat exactly, a static synthetic scene, must give the profile's value exactly)."""
    sizes = {chosen[i].features.size for i in [*calib, *hold]}
    size = next(iter(sizes)) if len(sizes) == 1 and "x" in next(iter(sizes)) else None
    return {"size": size, "focus": [float(chosen[i].features.focus) for i in [*calib, *hold]] if size else None}


def build_dataset(
    sources: Sequence[str] | str,
    *,
    spec: InputSpec,
    count: int = 300,
    holdout: float = 0.2,
    seed: int = 0,
    dedup: bool = True,
    duration: float = 5.0,
    timeout: float = 10.0,
    labels: Sequence[str] | None = None,
    dedup_threshold: float = DEFAULT_THRESHOLD,
    folder_labels: bool = True,
    array_color: str = "BGR",
    oversample: float = 2.0,
) -> RepresentativeDataset:
    """Build a representative dataset from image folders, videos, streams and arrays.

    ``sources`` are paths/URLs (see :mod:`edgeship.calibration.sources`); ``count`` samples are
    kept in total, ``holdout`` of them set aside (stratified per class when labelled).
    ``labels`` fixes the class names and their order (default: sorted folder names).
    ``dedup_threshold``: two frames whose 16x16 gray thumbnails differ by at most this many gray
    levels in every cell count as the same frame. Deterministic for a given ``seed`` (live streams aside).
    """
    t0 = time.monotonic()
    if isinstance(sources, str):
        sources = [sources]
    if int(count) <= 0:
        raise InputError(f"count must be a positive number of samples, got {count}")
    _check_fraction(holdout)
    if array_color not in ARRAY_COLORS:
        raise InputError(f"array_color must be BGR or RGB, got {array_color!r}")
    if oversample < 1:
        raise InputError(f"oversample must be >= 1, got {oversample}")
    options = SourceOptions(spec=spec, duration=float(duration), timeout=float(timeout), folder_labels=folder_labels,
                            array_color=array_color, label_names=tuple(labels) if labels else None)
    srcs = open_sources(sources, options)
    deduper = Deduper(dedup_threshold, enabled=dedup)
    pool = _collect(srcs, int(count), oversample if dedup else 1.0, int(seed), deduper, spec)
    if not pool:
        raise CalibrationError(f"no usable samples in {', '.join(s.name for s in srcs)} "
                               f"({sum(s.stats.unreadable for s in srcs)} unreadable)")
    classes = _class_list(pool, srcs, labels)
    groups = [k.label for k in pool] if classes else [k.source for k in pool]
    chosen = [pool[i] for i in select_balanced(groups, int(count))]
    for k in chosen:
        srcs[k.source].stats.selected += 1
    if len(chosen) < MIN_RECOMMENDED:
        log.warning("only %d calibration samples (fewer than %d): int8 ranges may be poorly estimated",
                    len(chosen), MIN_RECOMMENDED)
    x = np.stack([k.image if k.preprocessed else preprocess(k.image, spec) for k in chosen]).astype(np.float32)
    y = np.asarray([classes.index(k.label) for k in chosen], dtype=np.int64) if classes else None
    calib, hold = split_holdout(None if y is None else y.tolist(), len(x), holdout, np.random.default_rng([seed, 1 << 20]))
    y_calib, y_hold = (None, None) if y is None else (y[calib], y[hold])
    source_dicts = [s.stats.to_dict() for s in srcs]
    meta: dict[str, Any] = {
        "format": FORMAT, "version": FORMAT_VERSION, "edgeship_version": __version__,
        "sources": source_dicts,
        "options": {"count": int(count), "holdout": float(holdout), "seed": int(seed), "dedup": bool(dedup),
                    "dedup_threshold": float(dedup_threshold), "duration": float(duration), "timeout": float(timeout),
                    "folder_labels": folder_labels, "array_color": array_color},
        "summary": summarize(sources=source_dicts, labels=classes, n_calib=len(calib), n_holdout=len(hold),
                             y_calib=y_calib, y_holdout=y_hold,
                             brightness=[k.features.brightness for k in chosen],
                             contrast=[k.features.contrast for k in chosen],
                             sizes=[k.features.size for k in chosen]),
        "samples": {"calib": [chosen[i].origin for i in calib], "holdout": [chosen[i].origin for i in hold]},
        "frames": _frames(chosen, calib, hold),
    }
    meta["elapsed_s"] = round(time.monotonic() - t0, 3)
    # the class names: the labelled samples' classes, else the labels file given (unlabelled frames of a classifier)
    names = classes if classes else (list(labels) if labels else None)
    return RepresentativeDataset(spec, x[calib], x[hold], y_calib=y_calib, y_holdout=y_hold, labels=names, meta=meta)
