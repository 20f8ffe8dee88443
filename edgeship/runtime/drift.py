"""Drift and saturation watch: is the camera still seeing what the model was calibrated on?

``convert`` writes a reference :class:`DriftProfile` into the manifest, computed from the calibration
set: per-sample statistics of the model's input (brightness, contrast, per-channel means, focus,
how much of the gradient energy lies along the image axes; and the focus of the camera frame each sample
was cut from, when ``edgeship calibrate`` read frames of one size) and of the model's output (top-1
confidence; detections per frame, their mean score and mean box area as a share of the input), each kept
as the edges of its deciles and of its outer tails (0.5%, and at least 2 samples), plus for int8 tensors
the fraction of values on the ends of the quantized range (not for a probability output: its ends are
answers, not clipping).

On the device :class:`DriftWatch` computes the same statistics on inferred frames (at most ``sample_hz`` a
second of stream time, on the model's input tensor as the calibration samples were: subsampled to at most
48 pixels a side, and for focus nine patches at full resolution) and, over a rolling window of ``window_s`` seconds,
compares each statistic's window with its reference by the population stability index over the
reference's bins (its deciles, the two outermost split at the 0.5th and 99.5th percentiles):

    PSI = sum_i (p_i - q_i) * ln(p_i / q_i),   q_i = the reference's share in bin i (~0.005, ~0.095, 0.1, ...),
    p_i = share of the window's frames in bin i (both smoothed by half a frame)

The tail bins tell "beyond nearly everything calibrated on" from "in the lowest tenth": a camera gone dim
puts its frames where the reference has half a percent, not a tenth, and the PSI says so in fewer frames.

PSI below 0.1 is read as "no shift", 0.1-0.25 as "moderate", above 0.25 as "significant" in credit
scoring, where it comes from. Frames of a video are not independent, so a window of a few seconds
is a handful of independent looks at the scene; the default threshold (``psi``) is therefore high
(1.0: the window sits mostly in one or two of the reference's tails) and a drift must last
``hold_s`` before it is reported (the window is scored at every sampled frame, so that is measured to a
fifth of a second at the default ``sample_hz``). An episode starts with one ``drift`` event (what moved, by how
much, since when) and ends with one ``recovered`` event once every statistic is below
``recover_psi`` for ``hold_s``. int8 saturation: the share of input (and output) values at the ends
of the int8 range, against the calibration's share plus ``saturation_margin``.

The per-sample statistics themselves are :mod:`edgeship.runtime.drift_stats`. Pure NumPy: ``import
edgeship.runtime`` never imports TensorFlow.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from typing import Any, Callable, Iterable, Optional

import numpy as np
from pydantic import Field

from .drift_stats import (DETECT_STATS, RETIRED, box_area_scale, frame_focus, frame_size, input_stats, output_stats,
                          probability_range, saturation)
from .schema import Strict

log = logging.getLogger(__name__)
PERCENTILES = np.array([0.5, *np.linspace(10, 90, 9), 99.5])  # the reference's bin edges (deciles and tails)
TAIL_SAMPLES = 2  # a tail bin holds at least this many calibration samples: beyond it is not just beyond the maximum


def _edges(v: np.ndarray) -> np.ndarray:
    """A statistic's bin edges: its :func:`edge_percentiles`, each tail edge moved inward where repeated values
    (a looped scene's identical frames, an int8 output's few levels) leave fewer than TAIL_SAMPLES values strictly
    beyond it, and dropped where that reaches the next decile: "beyond the tail" must never mean "beyond the
    minimum", which a frame passes far more often than the tail's share."""
    e = np.percentile(v, edge_percentiles(v.size))
    s = np.sort(v)
    if s.size <= TAIL_SAMPLES:
        return e[1:-1]
    lo, hi = s[s > s[TAIL_SAMPLES - 1]], s[s < s[-TAIL_SAMPLES]]  # beyond them: at least TAIL_SAMPLES values
    low = e[0] if e[0] > s[TAIL_SAMPLES - 1] else (lo[0] if lo.size else None)  # TAIL_SAMPLES values below it
    high = e[-1] if e[-1] < s[-TAIL_SAMPLES] else (hi[-1] if hi.size else None)
    head = [low] if low is not None and low < e[1] else []
    tail = [high] if high is not None and high > e[-2] else []
    return np.array([*head, *e[1:-1], *tail])


def edge_percentiles(n: int) -> np.ndarray:
    """:data:`PERCENTILES` for a statistic of ``n`` calibration samples: the tails widen until each holds
    TAIL_SAMPLES (a small set's 0.5th percentile would be its minimum, and a new frame passes a set's maximum
    far more often than 0.5% of the time: 1 in n + 1)."""
    tail = min(10.0, max(float(PERCENTILES[0]), 100.0 * TAIL_SAMPLES / max(n, 1)))
    return np.array([tail, *PERCENTILES[1:-1], 100.0 - tail])


# ---- the reference ---------------------------------------------------------------------------------------
@dataclass
class DriftProfile:
    """The calibration set's statistics, as the manifest keeps them (``manifest.drift``)."""

    samples: int
    edges: dict[str, list[float]]  # statistic -> the calibration samples' PERCENTILES (9 deciles in older profiles)
    medians: dict[str, float]
    saturation: dict[str, float] = field(default_factory=dict)  # "input" / "output" -> share at the int8 ends
    # statistic -> the calibration samples' share in each bin the edges make (0.005 in each tail, 0.095 beside
    # it, 0.1 in the other deciles, unless values repeat: a classifier's confidence is often exactly 1.0, an int8
    # output takes few values; see _bin_index)
    shares: dict[str, list[float]] = field(default_factory=dict)
    frame_size: Optional[str] = None  # "WxH" of the calibration's camera frames, when they all had one size
    detect_threshold: Optional[float] = None  # the score threshold the detection statistics were decoded with

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DriftProfile":
        return cls(int(d["samples"]), {k: [float(x) for x in v] for k, v in d["edges"].items()},
                   {k: float(v) for k, v in d.get("medians", {}).items()}, dict(d.get("saturation") or {}),
                   {k: [float(x) for x in v] for k, v in (d.get("shares") or {}).items()}, d.get("frame_size"),
                   None if d.get("detect_threshold") is None else float(d["detect_threshold"]))


def build_profile(rows: list[dict[str, float]], saturation_shares: dict[str, float] | None = None,
                  frame_size: str | None = None, detect_threshold: float | None = None) -> DriftProfile:
    """A profile from per-sample statistics (:func:`input_stats` merged with :func:`output_stats`)."""
    if not rows:
        raise ValueError("a drift profile needs at least one calibration sample")
    keys = sorted(set().union(*rows))
    edges, medians, shares = {}, {}, {}
    for k in keys:
        v = np.asarray([r[k] for r in rows if k in r], dtype=np.float64)
        edges[k] = [float(e) for e in _edges(v)]
        medians[k] = float(np.median(v))
        shares[k] = [round(float(x), 6) for x in bin_shares(v, edges[k])]
    return DriftProfile(len(rows), edges, medians, dict(saturation_shares or {}), shares,
                        frame_size if any("frame_focus" in r for r in rows) else None,
                        detect_threshold if "detections" in edges else None)


def _bin_index(values: np.ndarray, edges: list[float]) -> tuple[np.ndarray, int]:
    """Each value's bin among the edges' distinct values: below the first, equal to it, between it and the next,
    equal to that one ... above the last (so repeated values, a confidence of exactly 1.0, keep a bin of their
    own and a constant reference still tells a shift in either direction); and the number of bins."""
    u = edges if isinstance(edges, np.ndarray) and edges.dtype == np.float64 else np.unique(np.asarray(edges, dtype=np.float64))
    left = np.searchsorted(u, values, side="left")
    equal = u[np.minimum(left, u.size - 1)] == values  # exact: repeated values are repeated exactly
    return 2 * left + equal, 2 * u.size + 1


def bin_shares(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Share of ``values`` in each bin of :func:`_bin_index`."""
    v = np.asarray(values, dtype=np.float64)
    idx, k = _bin_index(v, edges)
    return np.bincount(idx, minlength=k) / max(v.size, 1)


def chi2_quantile(dof: int, p: float) -> float:
    """The ``p`` quantile of a chi-square distribution with ``dof`` degrees of freedom (Wilson-Hilferty; within a
    few percent for dof >= 3, no SciPy on the device)."""
    z = _normal_quantile(p)
    k = max(1, dof)
    return float(k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3)


def _normal_quantile(p: float) -> float:
    """The standard normal's ``p`` quantile (Acklam's rational approximation, |error| < 1.2e-9)."""
    a = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
         -3.066479806614716e+01, 2.506628277459239e+00)
    b = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
         -1.328068155288572e+01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
         4.374664141464968e+00, 2.938163982698783e+00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00)
    if p < 0.02425:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    if p > 1 - 0.02425:
        return -_normal_quantile(1 - p)
    q = p - 0.5
    r = q * q
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)


@functools.lru_cache(maxsize=4096)
def chance_psi(bins: int, n: int, false_alarm: float) -> float:
    """The PSI that ``n`` independent frames of an unchanged stream exceed with probability ``false_alarm``:
    n * PSI is about chi-square with bins - 1 degrees of freedom when nothing changed."""
    return chi2_quantile(bins - 1, 1 - false_alarm) / max(n, 1)


def psi(values: np.ndarray, edges: list[float], expected: list[float] | None = None) -> float:
    """Population stability index of ``values`` against the reference's bins (see the module docstring and
    :func:`_bin_index`); ``expected``: the reference's share in each bin (the profile's ``shares``; without it the
    values are taken as continuous, an equal share between each pair of edges, as an older profile's deciles
    had, and nothing exactly on an edge)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return 0.0
    counts = bin_shares(v, edges) * v.size
    k = counts.size
    if expected is not None and len(expected) == k:
        q = np.asarray(expected, dtype=np.float64)
    else:
        q = np.zeros(k)
        q[0::2] = 1.0 / ((k + 1) // 2)
    q = (q * 200 + 0.5) / (200 + 0.5 * k)  # the reference as ~200 samples, smoothed: an empty bin is not a certainty
    p = (counts + 0.5) / (v.size + 0.5 * k)
    return float(np.sum((p - q) * np.log(p / q)))


# ---- the watch -------------------------------------------------------------------------------------------
class WatchCfg(Strict):
    """``watch:``: drift and saturation watch against the manifest's calibration profile."""

    enabled: bool = Field(True, description="on by default when the manifest has a profile; false (or run --no-watch) turns it off")
    window_s: float = Field(10.0, gt=0, le=3600, description="seconds of stream time compared with the profile (longer than the scene's own cycle)")
    sample_hz: float = Field(5.0, gt=0, le=1000, description="statistics are taken of at most this many frames per second of stream time")
    max_cost: float = Field(0.01, gt=0, le=1, description="share of the wall time the watch may take (its statistics; its call and bookkeeping on every frame come on top): beyond it frames are not sampled (binds only when frames come much faster than a camera's, e.g. a file processed flat out)")
    min_frames: int = Field(15, ge=2, le=100_000, description="sampled frames a window needs before it is judged")
    psi: float = Field(1.0, gt=0, le=100, description="population stability index at which a statistic has drifted (at least; see false_alarm)")
    false_alarm: float = Field(1e-6, gt=0, lt=0.5, description="a statistic has drifted only when an unchanged stream of as many independent frames would reach its PSI less often than this (chi-square approximation), per statistic and window")
    recover_psi: float = Field(0.5, gt=0, le=100, description="every statistic below this (and below what an unchanged stream reaches 99% of the time) for hold_s: recovered")
    hold_s: float = Field(2.0, ge=0, le=3600, description="a drift (or a recovery) must last this long before its event")
    saturation_margin: float = Field(0.05, gt=0, le=1, description="int8 saturation above the calibration's share plus this is drift")
    stats: list[str] = Field([], description="statistics to watch (empty: every one the profile has)")


@dataclass
class Episode:
    """One drift episode: from its drift event to its recovered event (``end`` None while it lasts)."""

    start: float
    what: dict[str, float]
    end: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        return {"start": round(self.start, 3), "end": None if self.end is None else round(self.end, 3),
                "what": {k: round(v, 3) for k, v in self.what.items()}}


class DriftWatch:
    """Rolling statistics of inferred frames against a :class:`DriftProfile` (thread-safe reads).

    ``observe`` is called by the pipeline's output thread with the model's input tensor (as it went in),
    its input quantization, the raw and dequantized outputs and the post-processed fields; ``emit`` gets
    the drift and recovered events (the app's event sinks)."""

    def __init__(self, profile: DriftProfile, cfg: WatchCfg | None = None, *, task: str = "raw",
                 input_quant: Any = None, output_quant: Any = None, camera: str | None = None, spec: Any = None,
                 post: Any = None,
                 emit: Callable[[dict[str, Any]], None] | None = None, clock: Callable[[], float] = time.time,
                 keep_rows: bool = False) -> None:
        self.profile, self.cfg, self.task = profile, cfg or WatchCfg(), task
        self.input_quant, self.camera, self.emit, self.clock = input_quant, camera, emit, clock
        # a probability output's ends are answers, not clipping (an older profile may still hold their share)
        self._saturation = {k: v for k, v in profile.saturation.items()
                            if not (k == "output" and probability_range(output_quant))}
        self.spec = spec  # the model's InputSpec: detections' boxes are measured in its pixels
        self._area: tuple[Any, float | None] = (None, None)  # (frame_hw, box_area_scale) of the last frame size seen
        names = list(self.cfg.stats) or sorted(profile.edges)
        unknown = [n for n in names if n not in profile.edges]
        if unknown:
            raise ValueError(f"watch.stats: {unknown[0]!r} is not in the profile (it has {', '.join(sorted(profile.edges))})")
        self._redecode = self._decoder_at_profile_threshold(post) if task == "detect" else None
        skip = {n: why for n in names if (why := self._cannot_watch(n, post))}
        for n, why in skip.items():
            log.warning("drift watch%s leaves out %s: %s", f" on {camera}" if camera else "", n, why)
        self.names = [n for n in names if n not in skip]
        self._edges = {n: np.unique(np.asarray(profile.edges[n], dtype=np.float64)) for n in names}  # sorted, distinct
        self.rows: deque[tuple[float, dict[str, float]]] = deque()
        self.sat: deque[tuple[float, float, float]] = deque()
        self.lock = threading.Lock()
        self.state, self.since, self.pending_since = "ok", None, None
        self.scores: dict[str, float] = {}
        self.limits: dict[str, float] = {}
        self.episodes: list[Episode] = []
        self.closest: dict[str, Any] | None = None  # the judged window nearest to its limit outside drift episodes
        self._near: dict[str, Any] | None = None  # the highest of a crossing still waiting for hold_s
        self.seen = 0
        self.cost_s = 0.0
        self.all_rows: list[dict[str, float]] | None = [] if keep_rows else None  # every frame's statistics (drift check)
        self.t_first: float | None = None
        self.last_sample: float | None = None
        self.wall_start: float | None = None
        self.sampled = 0

    def _decoder_at_profile_threshold(self, post: Any) -> Any:
        """The run's detection decoder (a frozen dataclass with a ``threshold``) set to the score the profile
        counted detections from, when the run keeps only surer ones (None: the run's own detections will do).
        Used on sampled frames only, so a run at 0.5 still compares counts with a profile decoded at 0.25."""
        run, ref = getattr(post, "threshold", None), self.profile.detect_threshold
        if run is None or ref is None or run <= ref + 1e-9 or not is_dataclass(post):
            return None
        return replace(post, threshold=ref)

    def _cannot_watch(self, name: str, post: Any) -> str | None:
        """Why a statistic of the profile cannot be compared here (None: it can)."""
        if name in RETIRED:
            return f"a profile statistic this runtime no longer computes ({RETIRED[name]}); convert again to watch it"
        run = getattr(post, "threshold", None) if self.task == "detect" else None
        if name in DETECT_STATS and self._redecode is None and run is not None and \
                self.profile.detect_threshold is not None and run > self.profile.detect_threshold + 1e-9:
            return (f"the profile counted detections from score {self.profile.detect_threshold:g} and this run keeps "
                    f"only those from {run:g}")
        return None

    # the pipeline's side
    def observe(self, model_input: np.ndarray | None, raw: list[np.ndarray], outputs: list[np.ndarray] | None,
                detections: Any = None, t: float | None = None, frame: np.ndarray | None = None) -> None:
        self.seen += 1
        now = self.clock() if t is None else t
        t0 = time.perf_counter()
        if self.wall_start is None:
            self.wall_start = t0
        if self.all_rows is None and self.last_sample is not None and (
                0 <= now - self.last_sample < 1.0 / self.cfg.sample_hz
                or self.cost_s > self.cfg.max_cost * (t0 - self.wall_start)):
            self.cost_s += time.perf_counter() - t0  # a skipped frame's look counts against the budget too
            return
        self.last_sample = now
        self.sampled += 1
        self.t_first = now if self.t_first is None else self.t_first
        row: dict[str, float] = {}
        sat_in = sat_out = 0.0
        if model_input is not None:
            x = np.asarray(model_input)
            if x.ndim == 4:
                x = x[0]
            if x.dtype in (np.int8, np.uint8):
                sat_in = saturation(x)
            row.update(input_stats(x, self.input_quant or (1.0, 0)))
        if frame is not None and self.profile.frame_size is not None and frame_size(frame) == self.profile.frame_size:
            row["frame_focus"] = frame_focus(frame)
        frame_hw = None if frame is None else tuple(frame.shape[:2])  # boxes are in this frame's pixels
        if frame_hw is not None and self._area[0] != frame_hw:
            self._area = (frame_hw, box_area_scale(frame_hw, self.spec))
        if self._redecode is not None:  # the run's detections are only its surer ones: decode at the profile's
            detections = self._redecode(outputs, frame_hw)["detections"] if outputs is not None and frame_hw else None
        row.update(output_stats(outputs, task=self.task, detections=detections, area_scale=self._area[1],
                                min_score=self.profile.detect_threshold))
        if raw:
            sat_out = saturation(raw[0])
        with self.lock:
            if self.all_rows is not None:
                self.all_rows.append(row)
            self.rows.append((now, row))
            self.sat.append((now, sat_in, sat_out))
            while self.rows and self.rows[0][0] < now - self.cfg.window_s:
                self.rows.popleft()
            while self.sat and self.sat[0][0] < now - self.cfg.window_s:
                self.sat.popleft()
            event = self._judge(now)
        if event is not None:  # sent outside the lock: a sink may take its time, /health must not wait for it
            self._send(*event)
        self.cost_s += time.perf_counter() - t0

    def _judge(self, now: float) -> tuple[str, float, dict[str, Any]] | None:
        """Score the window at every sampled frame (so ``hold_s`` is measured at the sampling's resolution, not rounded
        up to a coarser scoring step; the cost counts against ``max_cost``), move the state; the event to send, if any."""
        if len(self.rows) < self.cfg.min_frames:
            return None
        scores, limits = {}, {}
        for name in self.names:
            vals = np.asarray([r[name] for _, r in self.rows if name in r])
            if vals.size >= self.cfg.min_frames:
                scores[name] = psi(vals, self._edges[name], self.profile.shares.get(name))
                shares = self.profile.shares.get(name)  # bins the reference fills: a continuous statistic's 10
                bins = max(2, sum(1 for x in shares if x > 0)) if shares else len(self.profile.edges[name]) + 1
                limits[name] = (max(self.cfg.psi, chance_psi(bins, vals.size, self.cfg.false_alarm)),
                                max(self.cfg.recover_psi, chance_psi(bins, vals.size, 0.01)))
        for key, idx in (("input", 1), ("output", 2)):
            ref = self._saturation.get(key)
            if ref is not None:
                share = float(np.mean([s[idx] for s in self.sat]))
                scores[f"saturation_{key}"] = share
        self.scores = scores
        self.limits = {k: round(v[0], 3) for k, v in limits.items()}
        trigger = {k: limits[k][0] if k in limits else self._saturation[k.split("_", 1)[1]] + self.cfg.saturation_margin
                   for k in scores}
        moved = {k: v for k, v in scores.items() if (v >= trigger[k] if k in limits else v > trigger[k])}
        if self.state == "ok" and scores:  # the closest an unchanged stream came to an event: how much room is left
            # of the way from the calibration to the trigger: PSI from 0; a saturation share from the calibration's
            way = {k: v / trigger[k] if k in limits else (v - self._saturation[k.split("_", 1)[1]]) / self.cfg.saturation_margin
                   for k, v in scores.items()}
            k = max(way, key=way.__getitem__)
            window = {"statistic": k, "score": round(scores[k], 3), "limit": round(trigger[k], 3),
                      "of_limit": round(way[k], 3), "time": round(now, 3)}
            if moved:  # a crossing counts once it ended without an episode (a near miss), not if it became one
                self._near = window if self._near is None or window["of_limit"] > self._near["of_limit"] else self._near
            else:
                for w in (window, self._near):
                    if w is not None and (self.closest is None or w["of_limit"] > self.closest["of_limit"]):
                        self.closest = w
                self._near = None
        calm = all(v < limits[k][1] for k, v in scores.items() if not k.startswith("saturation_")) and not any(
            k.startswith("saturation_") for k in moved)
        if (self.state == "ok" and moved) or (self.state == "drift" and calm):
            self.pending_since = self.pending_since if self.pending_since is not None else now
            if now - self.pending_since >= self.cfg.hold_s:
                return self._start(now, moved) if self.state == "ok" else self._recover(now)
        else:
            self.pending_since = None
        return None

    def _start(self, now: float, moved: dict[str, float]) -> tuple[str, float, dict[str, Any]]:
        self.state, self.since, self.pending_since, self._near = "drift", self.pending_since, None, None
        ep = Episode(self.since, dict(moved))
        self.episodes.append(ep)
        what = ", ".join(f"{k} {self._describe(k, v)}" for k, v in sorted(moved.items(), key=lambda kv: -kv[1]))
        log.warning("drift%s: %s (since %.1f s ago)", f" on {self.camera}" if self.camera else "", what, now - self.since)
        return ("drift", now, {"what": {k: round(v, 3) for k, v in moved.items()}, "since": round(self.since, 3),
                               "details": self._details(moved)})

    def _recover(self, now: float) -> tuple[str, float, dict[str, Any]]:
        ep = self.episodes[-1]
        ep.end = now
        log.warning("recovered from drift%s after %.1f s", f" on {self.camera}" if self.camera else "", now - ep.start)
        self.state, self.since, self.pending_since = "ok", None, None
        return ("recovered", now, {"since": round(ep.start, 3), "lasted_s": round(now - ep.start, 3)})

    def _describe(self, name: str, value: float) -> str:
        if name.startswith("saturation_"):
            return f"{100 * value:.1f}% of values at the int8 ends"
        return f"PSI {value:.2f}"

    def _details(self, moved: dict[str, float]) -> dict[str, Any]:
        """For each statistic that moved: its median since the drift began and over the whole window (which still holds
        frames from before it) against the calibration's."""
        median = lambda vals: round(float(np.median(vals)), 4) if vals else None  # noqa: E731
        out = {}
        for name in moved:
            if name.startswith("saturation_"):
                out[name] = {"window": round(moved[name], 4), "calibration": self.profile.saturation.get(name.split("_", 1)[1])}
                continue
            rows = [(t, r[name]) for t, r in self.rows if name in r]
            out[name] = {"since_median": median([v for t, v in rows if self.since is None or t >= self.since]),
                         "window_median": median([v for _, v in rows]),
                         "calibration_median": round(self.profile.medians.get(name, float("nan")), 4)}
        return out

    def _send(self, kind: str, now: float, body: dict[str, Any]) -> None:
        if self.emit is None:
            return
        event = {"type": kind, "time": now, **({"camera": self.camera} if self.camera else {}), **body}
        try:
            self.emit(event)
        except Exception as e:  # noqa: BLE001 - a sink that fails must not stop the camera
            log.error("drift event could not be sent: %s: %s", type(e).__name__, e)

    # the readers' side
    def status(self) -> dict[str, Any]:
        with self.lock:
            return {"state": self.state, "since": None if self.since is None else round(self.since, 3),
                    "scores": {k: round(v, 3) for k, v in self.scores.items()}, "limits": dict(self.limits),
                    "frames": self.seen,
                    "episodes": [e.to_dict() for e in self.episodes], "closest": self.closest,
                    "sampled": self.sampled, "ms_per_frame": round(1e3 * self.cost_s / max(1, self.seen), 4)}


def profile_from_samples(samples: Iterable[np.ndarray], outputs: Iterable[Any] | None = None, *, task: str = "raw",
                         saturation_shares: dict[str, float] | None = None, spec: Any = None) -> DriftProfile:
    """A profile from the calibration samples (float, preprocessed) and, optionally, the model's output for
    each (a list of arrays per sample; for detection, the post-processed detections in input pixels of
    ``spec``, the model's InputSpec)."""
    rows = []
    outs = list(outputs) if outputs is not None else None
    scale = box_area_scale((spec.height, spec.width), spec) if spec is not None else None
    for i, s in enumerate(samples):
        row = input_stats(s)
        if outs is not None:
            o = outs[i]
            row.update(output_stats(None, task=task, detections=o, area_scale=scale) if task == "detect"
                       else output_stats(o, task=task))
        rows.append(row)
    return build_profile(rows, saturation_shares)
