"""Run metrics: per-stage latency percentiles, frame counters, fps; JSON snapshot and Prometheus text."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 99)
# stages recorded by the pipeline, in display order
STAGES = ("read", "preprocess", "infer", "postprocess", "sinks", "glass_to_glass", "age")


class LatencyStats:
    """Count, mean and max over the whole run; percentiles over the last ``window`` samples (ms)."""

    def __init__(self, window: int = 20000) -> None:
        self.samples: deque[float] = deque(maxlen=window)
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self.min = float("inf")

    def add(self, ms: float) -> None:
        self.samples.append(ms)
        self.count += 1
        self.total += ms
        self.max = max(self.max, ms)
        self.min = min(self.min, ms)

    def summary(self) -> dict[str, float]:
        if not self.count:
            return {"count": 0}
        arr = np.fromiter(self.samples, dtype=np.float64, count=len(self.samples))
        out = {"count": self.count, "mean": self.total / self.count, "min": self.min, "max": self.max}
        for p, v in zip(PERCENTILES, np.percentile(arr, PERCENTILES)):
            out[f"p{p}"] = float(v)
        return {k: round(float(v), 3) if k != "count" else v for k, v in out.items()}


class Metrics:
    """Everything a run measures; shared by the pipeline (writer) and the HTTP sink (reader)."""

    def __init__(self, window: int = 20000) -> None:
        self.stages: dict[str, LatencyStats] = {s: LatencyStats(window) for s in STAGES}
        self.processed = 0
        self.skipped_gate = 0
        self.sink_errors = 0
        self.t_start = time.monotonic()
        self.t_end: float | None = None
        self.last_result_mono: float | None = None
        self._recent: deque[float] = deque(maxlen=120)
        self._lock = threading.Lock()
        self.source: Any = None  # a LatestFrameSource: captured / dropped / reconnects come from it

    def observe_frame(self, latency_ms: dict[str, float]) -> None:
        """Record one processed frame: every stage latency and the result time, under one lock."""
        now = time.monotonic()
        with self._lock:
            for stage, ms in latency_ms.items():
                st = self.stages.get(stage)
                if st is None:
                    st = self.stages[stage] = LatencyStats()
                st.add(ms)
            self.processed += 1
            self.last_result_mono = now
            self._recent.append(now)

    def finish(self) -> None:
        self.t_end = time.monotonic()

    @property
    def elapsed(self) -> float:
        return max((self.t_end or time.monotonic()) - self.t_start, 1e-9)

    def recent_fps(self) -> float:
        """Processed frames per second over the last ~120 results (what a dashboard should show)."""
        with self._lock:
            r = list(self._recent)
        if len(r) < 2:
            return 0.0
        span = max(time.monotonic(), r[-1]) - r[0]
        return (len(r) - 1) / span if span > 0 else 0.0

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready counters, rates and latency percentiles."""
        src = self.source.stats() if self.source is not None else {}
        with self._lock:
            lat = {k: v.summary() for k, v in self.stages.items()}
            processed, gated = self.processed, self.skipped_gate
        dropped = int(src.get("frames_dropped", 0))
        infer_mean = lat.get("infer", {}).get("mean")
        return {
            "duration_s": round(self.elapsed, 3),
            "frames_captured": int(src.get("frames_captured", processed)),
            "frames_processed": processed,
            "frames_dropped": dropped,
            "frames_skipped_gate": gated,
            "skipped": dropped + gated,
            "reconnects": int(src.get("reconnects", 0)),
            "source_connected": bool(src.get("connected", False)),
            "source_fps": round(float(src.get("source_fps", 0.0)), 3),
            "processed_fps": round(processed / self.elapsed, 3),
            "recent_fps": round(self.recent_fps(), 3),
            "inference_fps": round(1000.0 / infer_mean, 3) if infer_mean else None,
            "sink_errors": self.sink_errors,
            "latency_ms": {k: v for k, v in lat.items() if k not in ("glass_to_glass", "age")},
            "glass_to_glass_ms": lat.get("glass_to_glass", {"count": 0}),
            "frame_age_ms": lat.get("age", {"count": 0}),
        }

    def prometheus(self, labels: dict[str, str] | None = None) -> str:
        """The snapshot in the Prometheus text exposition format (version 0.0.4)."""
        s = self.snapshot()
        base = ",".join(f'{k}="{_esc(v)}"' for k, v in (labels or {}).items())

        def lab(extra: str = "") -> str:
            inner = ",".join(x for x in (base, extra) if x)
            return "{" + inner + "}" if inner else ""

        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, rows: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP edgeship_{name} {help_}")
            lines.append(f"# TYPE edgeship_{name} {kind}")
            lines.extend(f"edgeship_{name}{lab(extra)} {_num(v)}" for extra, v in rows)

        metric("frames_captured_total", "counter", "Frames read from the source.", [("", s["frames_captured"])])
        metric("frames_processed_total", "counter", "Frames run through the model.", [("", s["frames_processed"])])
        metric("frames_skipped_total", "counter", "Frames not processed, by reason.",
               [('reason="dropped"', s["frames_dropped"]), ('reason="gate"', s["frames_skipped_gate"])])
        metric("reconnects_total", "counter", "Times the source was reopened after it dropped.", [("", s["reconnects"])])
        metric("sink_errors_total", "counter", "Sink writes that raised.", [("", s["sink_errors"])])
        metric("source_connected", "gauge", "1 while the source is delivering frames.", [("", int(s["source_connected"]))])
        metric("source_fps", "gauge", "Average frames per second read from the source.", [("", s["source_fps"])])
        metric("processed_fps", "gauge", "Frames per second processed over the last ~120 frames.", [("", s["recent_fps"])])
        metric("uptime_seconds", "gauge", "Seconds since the run started.", [("", s["duration_s"])])
        with self._lock:
            stages = {k: v for k, v in self.stages.items() if v.count}
            sums = {k: v.summary() for k, v in stages.items()}
        lines.append("# HELP edgeship_latency_seconds Per-stage latency (glass_to_glass: capture to result; age: capture to inference).")
        lines.append("# TYPE edgeship_latency_seconds summary")
        for stage, sm in sums.items():
            for p in PERCENTILES:
                lines.append(f'edgeship_latency_seconds{lab(f"stage={_q(stage)},quantile={_q(p / 100)}")} {_num(sm[f"p{p}"] / 1e3)}')
            lines.append(f'edgeship_latency_seconds_sum{lab(f"stage={_q(stage)}")} {_num(stages[stage].total / 1e3)}')
            lines.append(f'edgeship_latency_seconds_count{lab(f"stage={_q(stage)}")} {stages[stage].count}')
        return "\n".join(lines) + "\n"


def _q(v: Any) -> str:
    return f'"{_esc(v)}"'


def _esc(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: Any) -> str:
    if v is None:
        return "NaN"
    return repr(float(v)) if isinstance(v, float) else str(v)
