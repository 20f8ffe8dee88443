"""The numbers a calibration run reports: per split and class, per source, image statistics.

:func:`summarize` builds the JSON-able dict stored in the .npz metadata and printed by
``edgeship calibrate --json``; :func:`summary_tables` lays the same numbers out as tables.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np

PERCENTILES = (5, 50, 95)


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p5 / p50 / p95 (and min / max) of a list of numbers, None when empty."""
    v = np.asarray(values, dtype=np.float64)
    keys = ["min"] + [f"p{p}" for p in PERCENTILES] + ["max"]
    if v.size == 0:
        return {k: None for k in keys}
    vals = [v.min(), *np.percentile(v, PERCENTILES), v.max()]
    return {k: round(float(x), 2) for k, x in zip(keys, vals)}


def per_class_counts(labels: Sequence[str] | None, y_calib, y_holdout, n_calib: int, n_holdout: int) -> dict[str, dict[str, int]]:
    """``{class name: {"calib": n, "holdout": m}}``; one row "all" when the data is unlabelled."""
    if labels is None or y_calib is None:
        return {"all": {"calib": int(n_calib), "holdout": int(n_holdout)}}
    c, h = np.bincount(y_calib, minlength=len(labels)), np.bincount(y_holdout, minlength=len(labels))
    return {str(name): {"calib": int(c[i]), "holdout": int(h[i])} for i, name in enumerate(labels)}


def summarize(
    *,
    sources: Sequence[dict[str, Any]],
    labels: Sequence[str] | None,
    n_calib: int,
    n_holdout: int,
    y_calib: np.ndarray | None,
    y_holdout: np.ndarray | None,
    brightness: Sequence[float],
    contrast: Sequence[float],
    sizes: Sequence[str],
) -> dict[str, Any]:
    """Everything the summary table shows, as plain JSON-able values."""
    return {
        "counts": {"calib": int(n_calib), "holdout": int(n_holdout), "total": int(n_calib + n_holdout)},
        "per_class": per_class_counts(labels, y_calib, y_holdout, n_calib, n_holdout),
        "duplicates_dropped": int(sum(s.get("duplicates", 0) for s in sources)),
        "unreadable_skipped": int(sum(s.get("unreadable", 0) for s in sources)),
        "not_images_skipped": int(sum(s.get("not_images", 0) for s in sources)),
        "brightness": percentiles(brightness),
        "contrast": percentiles(contrast),
        "source_sizes": dict(sorted(Counter(sizes).items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def summary_tables(meta: dict[str, Any]) -> list[tuple[str, list[str], list[list[Any]]]]:
    """(title, headers, rows) for each table of a calibration summary."""
    s = meta["summary"]
    tables = []
    rows = [[name, c["calib"], c["holdout"], c["calib"] + c["holdout"]] for name, c in s["per_class"].items()]
    if len(rows) > 1:
        rows.append(["total", s["counts"]["calib"], s["counts"]["holdout"], s["counts"]["total"]])
    tables.append(("Samples kept", ["class", "calib", "holdout", "total"], rows))
    src_rows = [[d["source"], d["kind"], d["read"], d["duplicates"], d["unreadable"], d["not_images"], d["selected"]]
                for d in meta["sources"]]
    tables.append(("Sources", ["source", "kind", "read", "duplicates", "unreadable", "not images", "kept"], src_rows))
    stat_rows = [[name] + [s[name][k] for k in ("min", "p5", "p50", "p95", "max")] for name in ("brightness", "contrast")]
    tables.append(("Image statistics (gray levels 0-255)", ["", "min", "p5", "p50", "p95", "max"], stat_rows))
    size_rows = [[size, n] for size, n in s["source_sizes"].items()]
    tables.append(("Source image sizes", ["size (WxH)", "samples"], size_rows))
    return tables
