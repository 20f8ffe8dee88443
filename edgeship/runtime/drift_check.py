"""``edgeship drift``: field frames against an artifact's calibration profile, on the workstation, with the
device's own watch (:mod:`edgeship.runtime.drift`) and runtime."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .drift import WatchCfg, psi


@dataclass
class DriftReport:
    """``edgeship drift``: field data against an artifact's profile, over all of it and window by window."""

    artifact: str
    data: str
    frames: int
    rows: list[dict[str, Any]]  # per statistic: calibration and data medians, PSI over all frames, drifted
    episodes: list[dict[str, Any]]
    threshold: float

    @property
    def drifted(self) -> bool:
        return any(r["drifted"] for r in self.rows) or bool(self.episodes)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drifted": self.drifted}


def check_drift(artifact: str, data: str, *, cfg: WatchCfg | None = None, max_frames: int | None = None) -> DriftReport:
    """Run ``artifact`` on every frame of ``data`` (an image folder or a video) and compare the frames with the
    artifact's calibration profile: PSI of each statistic over all frames, and the episodes the device's watch
    would have raised (windows in stream time: a video's own, 30 frames a second for an image folder)."""
    from ..errors import InputError
    from ..manifest import Manifest
    from .runner import build_pipeline, make_watch

    manifest = Manifest.load_optional(artifact)  # before the pipeline: one error line, not its warnings first
    if manifest is None or not manifest.drift:
        raise InputError(f"{artifact} has no drift profile in its manifest: convert it with --calib "
                         "(edgeship convert writes the calibration set's statistics)")
    cfg = (cfg or WatchCfg()).model_copy(update={"enabled": True})
    pipe = build_pipeline(artifact, data, max_frames=max_frames, handle_signals=False, watch=False)
    try:  # the device's own watch, made as the runtime makes it
        watch = make_watch(pipe.backend, cfg, task=pipe.task, spec=pipe.spec, post=pipe.postprocess, keep_rows=True)
        pipe.watch = watch
        pipe.run()
    finally:
        pipe.backend.close()
    profile = watch.profile
    rows = []
    for name in watch.names:
        vals = np.asarray([r[name] for r in watch.all_rows or [] if name in r])
        score = psi(vals, profile.edges[name], profile.shares.get(name)) if vals.size else 0.0
        rows.append({"statistic": name, "calibration_p50": round(profile.medians.get(name, float("nan")), 4),
                     "data_p50": round(float(np.median(vals)), 4) if vals.size else None, "psi": round(score, 3),
                     "drifted": bool(score >= cfg.psi)})
    if profile.saturation.get("input") is not None:
        share = watch.scores.get("saturation_input")
        rows.append({"statistic": "saturation_input", "calibration_p50": profile.saturation["input"],
                     "data_p50": None if share is None else round(share, 4), "psi": None,
                     "drifted": bool(share is not None and share > profile.saturation["input"] + cfg.saturation_margin)})
    t0 = watch.t_first or 0.0
    episodes = [{"start": round(e.start - t0, 3), "end": None if e.end is None else round(e.end - t0, 3),
                 "what": {k: round(v, 3) for k, v in e.what.items()}} for e in watch.episodes]
    return DriftReport(str(artifact), str(data), watch.seen, rows, episodes, cfg.psi)

