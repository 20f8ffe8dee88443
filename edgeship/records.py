"""Typed records: the manifest's measured sections (conversion, its accuracy gate, accuracy, latency) and
the run summary.

Converters, verify, the gate and bench hand these between modules (instead of dicts whose keys
each side spells on its own); the manifest stores them as JSON objects of the same names. A key a
record does not know (written by a newer edgeship, or by hand) is kept in ``extra`` and written
back, so loading and saving a manifest never loses information.

Data only: no heavy imports (the device's runtime reads manifests).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .fileio import to_jsonable

R = TypeVar("R", bound="Record")

GATE_STATUSES = ("passed", "failed", "not applicable", "not run")


@dataclass
class Record:
    """Base: ``from_dict`` / ``to_dict`` with unknown keys kept in ``extra``."""

    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)

    @classmethod
    def from_dict(cls: type[R], d: dict[str, Any] | None) -> R:
        if d is not None and not isinstance(d, dict):
            raise TypeError(f"{cls.__name__} must be a JSON object, got {type(d).__name__}")
        d = dict(d or {})
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        extra = {k: d.pop(k) for k in list(d) if k not in known}  # a key named "extra" is an unknown key too
        kwargs = {}
        for k, v in d.items():
            f = known[k]
            if v is None and f.default_factory is not dataclasses.MISSING:  # null where a list/dict belongs
                v = f.default_factory()
            kwargs[k] = cls._field_from_json(k, v)
        return cls(**kwargs, extra=extra)

    @classmethod
    def _field_from_json(cls, name: str, value: Any) -> Any:
        return value

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        d = {k: (v.to_dict() if isinstance(v, Record) else v) for k, v in d.items()}
        return to_jsonable({**self.extra, **d})


@dataclass
class GateRecord(Record):
    """What the accuracy gate did (the manifest's ``conversion.accuracy_gate``)."""

    max_drop_pp: float | None = None  # the point budget asked for (None: none)
    min_sqnr_db: float | None = None  # the SQNR budget asked for (None: none); neither: the gate was off
    status: str = "not run"  # one of GATE_STATUSES
    precision: str | None = None  # the rung it kept: int8, int8-mixed, dynamic, int16x8, fp16 or fp32
    budget: float | None = None
    measured: str | None = None  # "drop", "disagreement" or "detection"
    value: float | None = None  # the final measured value, in points
    passed: bool | None = None
    initial_value: float | None = None  # before any layer went back to float
    float_layers: list[dict[str, Any]] = field(default_factory=list)  # name and why, per layer kept in float
    float_nodes: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    fallback: str | None = None
    reason: str | None = None
    seconds: float = 0.0
    ladder: list[dict[str, Any]] = field(default_factory=list)  # every rung tried: figures, latency, size, kept or why not
    prefer: str | None = None  # "speed" or "size": what chose between rungs in budget

    def float_layer_names(self) -> list[str]:
        """Names of the layers/tensors kept in float (empty when none or the gate did not run)."""
        names = [str(item.get("name", item)) if isinstance(item, dict) else str(item) for item in self.float_layers]
        return names or [str(n) for n in self.float_nodes]


@dataclass
class ConversionRecord(Record):
    """How an artifact was made (the manifest's ``conversion``)."""

    source: dict[str, Any] = field(default_factory=dict)  # path, name, flavor of the Keras model
    options: dict[str, Any] = field(default_factory=dict)  # the convert() options as given
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step (convert_s, gate_s, ...)
    accuracy_gate: GateRecord = field(default_factory=GateRecord)
    channel_pruning: dict[str, Any] | None = None  # a StructuredReport's dict (convert --prune-channels)
    # int8: equalization, activation ranges, weight rounding, bias correction (and NNCF's preset, QAT) as applied
    quantization: dict[str, Any] | None = None

    @classmethod
    def _field_from_json(cls, name: str, value: Any) -> Any:
        return GateRecord.from_dict(value) if name == "accuracy_gate" and not isinstance(value, GateRecord) else value

    def option(self, name: str, default: Any = None) -> Any:
        return self.options.get(name, default)

    def recipe(self) -> str | None:
        """What the quantization kept, on one line (``equalization not kept, ranges minmax, weights gptq, bias
        correction none``), or None when nothing was recorded (a float artifact) or the accuracy gate kept another
        rung than the full int8 these notes describe (the ladder's row says how that one was made)."""
        if self.accuracy_gate.precision not in (None, "int8"):
            return None
        q = self.quantization or {}
        bits = []
        if isinstance(q.get("equalization"), dict):
            bits.append("equalized" if q["equalization"].get("kept") else "equalization not kept")
        for key, label in QUANTIZATION_STEPS:
            step = q.get(key)
            if isinstance(step, dict) and step.get("method"):
                bits.append(f"{label} {step['method']}")
        if isinstance(q.get("qat"), dict):
            bits.append(f"QAT {q['qat'].get('epochs')} epochs")
        return ", ".join(bits) or None


# the quantization notes that record a chosen method, in the order they run, and how a line names each
QUANTIZATION_STEPS = (("preset", "preset"), ("ranges", "ranges"), ("weight_rounding", "weights"),
                      ("bias_correction", "bias correction"))


@dataclass
class AccuracyRecord(Record):
    """The artifact measured against its float model (the manifest's ``accuracy``; by verify or the gate)."""

    split: str | None = None
    samples: int | None = None
    executed_precision: str | None = None
    measured: str | None = None  # "drop", "disagreement" or "detection"
    agreement: float | None = None  # top-1 agreement with the float model, in %
    disagreement: float | None = None
    near_ties: int | None = None  # flips between classes the float model scored within tie_margin: not counted
    real_agreement: float | None = None  # agreement with near-tie flips forgiven (what the disagreement budget uses)
    tie_margin: float | None = None
    reference_accuracy: float | None = None
    accuracy: float | None = None
    drop: float | None = None
    drop_ci: list[float] | None = None
    detection: dict[str, Any] | None = None  # ap50 / recall / precision against the float model's boxes
    max_drop: float | None = None
    min_sqnr: float | None = None  # dB every output had to reach
    worst_sqnr: float | None = None  # the lowest output SQNR measured, dB
    budget: float | None = None
    passed: bool | None = None
    initial: float | None = None  # the gate's value before it kept layers in float
    outputs: list[dict[str, Any]] = field(default_factory=list)  # per output: cosine, SQNR, max error...


@dataclass
class LatencyRecord(Record):
    """What ``edgeship bench --save`` measured (the manifest's ``latency``)."""

    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    throughput_fps: float | None = None
    threads: int | None = None
    hint: str | None = None
    device: str | None = None
    executed_precision: str | None = None
    machine: dict[str, Any] = field(default_factory=dict)
    measured: str | None = None  # ISO time


RUN_SUMMARY_VERSION = 1  # a summary whose major version is newer is refused by from_dict; older ones load


@dataclass
class RunSummary(Record):
    """What a pipeline run returns (``Pipeline.run``, ``build_pipeline(...).run()``, ``run_config``) and
    ``edgeship run --json`` prints: counters, rates and per-stage latency percentiles (ms: count, mean,
    min, max, p50, p90, p99)."""

    schema_version: int = RUN_SUMMARY_VERSION
    source: str | None = None
    model: str | None = None
    backend: str | None = None
    executed_precision: str | None = None
    task: str | None = None
    stopped_by: str | None = None  # max_frames, duration, end, signal, stop, source_error
    error: str | None = None  # the source error that ended the run
    cpus: dict[str, Any] | None = None  # the CPU pinning plan, when pinned
    allocator: dict[str, Any] | None = None  # the malloc settings in effect (None: the C library's defaults)
    duration_s: float = 0.0
    frames_captured: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    frames_skipped_gate: int = 0
    skipped: int = 0
    reconnects: int = 0
    source_connected: bool = False
    source_fps: float = 0.0
    processed_fps: float = 0.0
    inference_fps: float | None = None
    sink_errors: int = 0
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # per stage: read, preprocess, infer...
    glass_to_glass_ms: dict[str, float] = field(default_factory=dict)  # capture to result
    frame_age_ms: dict[str, float] = field(default_factory=dict)  # capture to inference
    app: dict[str, Any] | None = None  # the app's final status (a deployment config with an app)
    url: str | None = None  # the HTTP server's address, when one ran
    camera: str | None = None  # this camera's name, in a multi-camera run
    cameras: dict[str, Any] | None = None  # a multi-camera run: each camera's own summary (the counters above add up)
    drift: dict[str, Any] | None = None  # the drift watch: state, last scores, episodes (runtime.drift)

    @classmethod
    def _field_from_json(cls, name: str, value: Any) -> Any:
        if name == "schema_version":
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"run summary schema_version must be a positive integer, got {value!r}")
            if value > RUN_SUMMARY_VERSION:
                raise ValueError(f"run summary schema_version {value} is newer than this edgeship reads "
                                 f"({RUN_SUMMARY_VERSION}): upgrade edgeship")
        return value
