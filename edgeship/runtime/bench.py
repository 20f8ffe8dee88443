"""Benchmark an artifact the way the vendors' tools do: load time, first inference, latency
percentiles of the model call, throughput and peak RSS.

Latency is the backend's model call on already-quantized inputs, timed the way the vendors' tools
time it: OpenVINO's own per-request latency (measured in C++ around the call, what
``benchmark_app`` reports), and for LiteRT the wall clock around ``invoke`` (what
``litert-benchmark`` measures; the Python call adds ~1%). ``call_ms`` is always the Python wall
clock around the call and ``e2e_ms`` adds edgeship's float <-> int8 conversion, so the cost of the
Python side is visible too.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ModelError
from ..manifest import Manifest
from ..records import LatencyRecord
from .backends import open_backend
from .metrics import LatencyStats


def machine_info() -> dict[str, Any]:
    """CPU model, core count and architecture (for benchmark tables)."""
    model = platform.processor() or platform.machine()
    try:
        fields = dict(ln.split(":", 1) for ln in Path("/proc/cpuinfo").read_text().splitlines() if ":" in ln)
    except OSError:  # not Linux: platform.processor() already answered
        fields = {}
    fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
    model = fields.get("model name") or fields.get("hardware") or fields.get("model") or model
    return {"cpu": model, "cores": os.cpu_count(), "arch": platform.machine(), "python": platform.python_version()}


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(r / (1024 * 1024) if platform.system() == "Darwin" else r / 1024, 1)


def sample_input(backend: Any, batch: int = 1, seed: int = 0) -> np.ndarray:
    """A float batch in the model's input domain (the manifest's value range, else [0, 1])."""
    spec = backend.manifest.input_spec if backend.manifest is not None else None
    lo, hi = spec.value_range() if spec is not None else (0.0, 1.0)
    shape = [batch] + [d if d and d > 0 else 1 for d in backend.inputs[0].shape[1:]]
    return np.random.default_rng(seed).uniform(lo, hi, size=shape).astype(np.float32)


def timed_call(backend: Any, prepared: Any) -> tuple[float, float]:
    """Run the model once: (its latency in ms as the vendor's tool times it, the Python wall clock in ms).

    The first is the backend's own request latency where it has one (OpenVINO), else the wall clock."""
    t = time.perf_counter()
    backend.run_prepared(prepared)
    wall = (time.perf_counter() - t) * 1e3
    own = backend.last_call_ms()
    return (wall if own is None else own), wall


def benchmark(
    path: str | os.PathLike,
    *,
    threads: int | None = None,
    hint: str = "latency",
    duration: float = 10.0,
    warmup: int = 10,
    device: str = "CPU",
    precision: str | None = None,
    backend: str | None = None,
    min_iterations: int = 10,
) -> dict[str, Any]:
    """Measure ``path``; returns a JSON-ready dict (see the module docstring)."""
    if duration <= 0:
        raise InputError(f"duration must be positive, got {duration}")
    t0 = time.perf_counter()
    b = open_backend(path, backend=backend, threads=threads, device=device, hint=hint, precision=precision)
    load_ms = (time.perf_counter() - t0) * 1e3
    with b:
        x = sample_input(b)
        prepared = b.prepare_inputs(x)
        t = time.perf_counter()
        b.run_prepared(prepared)
        first_ms = (time.perf_counter() - t) * 1e3
        for _ in range(max(0, warmup)):
            b.run_prepared(prepared)
        stats, wall = LatencyStats(window=1_000_000), LatencyStats(window=1_000_000)
        t_start = time.perf_counter()
        while True:
            ms, wall_ms = timed_call(b, prepared)
            wall.add(wall_ms)
            stats.add(ms)
            if time.perf_counter() - t_start >= duration and stats.count >= min_iterations:
                break
        elapsed = time.perf_counter() - t_start
        e2e = LatencyStats()
        for _ in range(max(min_iterations, min(200, stats.count // 10))):
            t = time.perf_counter()
            b.infer(x)
            e2e.add((time.perf_counter() - t) * 1e3)
        throughput = {"fps": stats.count / elapsed, "mode": "sync", "requests": 1}
        if hint == "throughput" and hasattr(b, "throughput"):
            throughput = {**b.throughput(x, duration=max(1.0, duration / 2)), "mode": "async"}
        lat = stats.summary()
        return {
            "model": str(b.path), "backend": b.name, "device": getattr(b, "device", "CPU"), "hint": hint,
            "threads": threads, "executed_precision": b.executed_precision,
            "load_ms": round(load_ms, 2), "first_inference_ms": round(first_ms, 3),
            "latency_ms": {k: lat[k] for k in ("min", "p50", "p90", "p99", "max", "mean")}, "iterations": stats.count,
            "latency_source": "wall clock" if b.last_call_ms() is None else f"{b.name} request latency",
            "call_ms": {k: v for k, v in wall.summary().items() if k in ("p50", "p90", "p99", "mean")},
            "e2e_ms": {k: v for k, v in e2e.summary().items() if k in ("p50", "p90", "mean")},
            "throughput_fps": round(throughput["fps"], 2), "throughput_mode": throughput["mode"],
            "requests": throughput.get("requests", 1), "peak_rss_mb": peak_rss_mb(), "machine": machine_info(),
        }


def save_latency(path: str | os.PathLike, result: dict[str, Any]) -> Path:
    """Write the benchmark's latency into the artifact's manifest (``latency`` field), atomically."""
    try:
        m = Manifest.load(path)
    except ModelError as e:
        raise ModelError(f"cannot save the latency: {e}") from None
    m.latency = LatencyRecord(
        p50_ms=result["latency_ms"]["p50"], p90_ms=result["latency_ms"]["p90"], p99_ms=result["latency_ms"]["p99"],
        throughput_fps=result["throughput_fps"], threads=result["threads"], hint=result["hint"],
        device=result["device"], executed_precision=result["executed_precision"], machine=result["machine"],
        measured=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    return m.save(path)


def compare_latency(paths: list[str | os.PathLike], *, rounds: int = 5, seconds: float = 0.5, threads: int | None = None,
                    warmup: int = 5) -> list[float]:
    """Median model-call latency (ms) of each artifact, measured side by side in alternating rounds.

    A machine's speed drifts (thermal state, other load): timing one model after the other would put the
    drift into the comparison. Every round runs each model for ``seconds`` in turn (the order reversed on
    every other round); a model's result is the median of its per-round medians.
    """
    if rounds < 1 or seconds <= 0:
        raise InputError(f"rounds must be >= 1 and seconds > 0, got {rounds} and {seconds}")
    backends: list[Any] = []
    try:
        for p in paths:
            backends.append(open_backend(p, threads=threads))
        prepared = [b.prepare_inputs(sample_input(b)) for b in backends]
        for b, x in zip(backends, prepared):
            for _ in range(max(0, warmup)):
                b.run_prepared(x)
        medians: list[list[float]] = [[] for _ in backends]
        for r in range(rounds):
            order = range(len(backends)) if r % 2 == 0 else reversed(range(len(backends)))
            for i in order:
                b, x, times = backends[i], prepared[i], []
                end = time.perf_counter() + seconds
                while time.perf_counter() < end or len(times) < 3:
                    times.append(timed_call(b, x)[0])
                medians[i].append(float(np.median(times)))
        return [float(np.median(m)) for m in medians]
    finally:
        for b in backends:
            b.close()
