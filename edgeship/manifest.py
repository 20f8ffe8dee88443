"""The JSON manifest written next to every artifact (``NAME.manifest.json``).

Converters write it; verify and bench add their measurements; the runtime reads the InputSpec,
labels, task and tensor quantization from it; bundle and flash carry it to the device.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import EdgeshipError, ModelError
from .fileio import atomic_write_json, to_jsonable
from .formats.tensors import TensorInfo
from .records import AccuracyRecord, ConversionRecord, LatencyRecord
from .spec import InputSpec

__all__ = ["Manifest", "TensorInfo", "manifest_path", "tool_versions", "SCHEMA_VERSION"]

# the measured sections: JSON key -> record type ({} in JSON: not measured yet)
_RECORDS = {"accuracy": AccuracyRecord, "latency": LatencyRecord, "conversion": ConversionRecord}

SCHEMA_VERSION = 1  # a manifest whose major version is newer is refused; older ones load


def manifest_path(artifact: str | os.PathLike) -> Path:
    """``model.tflite`` -> ``model.manifest.json`` (same folder)."""
    p = Path(artifact)
    if p.name.endswith(".manifest.json"):
        return p
    return p.with_name(p.stem + ".manifest.json")


@dataclass
class Manifest:
    name: str
    format: str  # a name in edgeship.formats.FORMATS
    precision: str  # "fp32" | "fp16" | "dynamic" | "int8" (or "int8-mixed" after a gated conversion)
    artifact: str  # file name, relative to the manifest's folder
    input_spec: InputSpec | None = None
    labels: list[str] | None = None
    task: str | None = None  # "classify" | "detect" | "raw"
    hashes: dict[str, str | None] = field(default_factory=dict)  # source_model, artifact, calibration
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    io_dtype: dict[str, str] = field(default_factory=dict)  # {"input": "int8", "output": "int8"}
    sparsity: dict[str, Any] = field(default_factory=dict)  # {"overall": 0.5, "layers": {...}}
    sizes: dict[str, int] = field(default_factory=dict)  # raw_bytes, gzip_bytes
    versions: dict[str, str | None] = field(default_factory=dict)
    accuracy: AccuracyRecord | None = None  # filled by verify / the accuracy gate
    latency: LatencyRecord | None = None  # filled by bench --save
    conversion: ConversionRecord = field(default_factory=ConversionRecord)  # options, the gate, timings
    drift: dict[str, Any] | None = None  # the calibration set's statistics (edgeship.runtime.drift.DriftProfile)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = SCHEMA_VERSION

    # ---- paths ----------------------------------------------------------------------------
    def artifact_path(self, manifest_file: str | os.PathLike) -> Path:
        return Path(manifest_file).parent / self.artifact

    # ---- JSON -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_spec"] = self.input_spec.to_dict() if self.input_spec else None
        for key in _RECORDS:
            record = getattr(self, key)
            d[key] = record.to_dict() if record is not None else {}
        return to_jsonable(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        d = dict(d)
        known = {f.name for f in fields(cls)}
        extra = {k: d.pop(k) for k in list(d) if k not in known}
        if extra:
            conversion = dict(d.get("conversion") or {})
            d["conversion"] = {**conversion, "unknown_keys": {**dict(conversion.get("unknown_keys") or {}), **extra}}
        version = d.get("schema_version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ModelError(f"manifest schema_version must be a positive integer, got {version!r}")
        if version > SCHEMA_VERSION:
            raise ModelError(f"manifest schema_version {version} is newer than this edgeship reads ({SCHEMA_VERSION}): "
                             "upgrade edgeship (pip install -U edgeship)")
        missing = [k for k in ("name", "format", "precision", "artifact") if k not in d]
        if missing:
            raise ModelError(f"manifest is missing required keys {missing}")
        if d.get("input_spec"):
            try:
                d["input_spec"] = InputSpec.from_dict(d["input_spec"])
            except (EdgeshipError, TypeError, ValueError) as e:
                raise ModelError(f"input_spec: {e}") from None
        d["inputs"] = [TensorInfo(**t) for t in d.get("inputs") or []]
        d["outputs"] = [TensorInfo(**t) for t in d.get("outputs") or []]
        for key, record in _RECORDS.items():
            if key in d:
                d[key] = record.from_dict(d[key]) if d[key] or key == "conversion" else None
        return cls(**d)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Manifest":
        """Load a manifest from its own path or from the artifact it describes."""
        mp = manifest_path(path)
        if not mp.exists():
            raise ModelError(f"no manifest for {path}: expected {mp}")
        try:
            return cls.from_dict(json.loads(mp.read_text()))
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError, AttributeError) as e:
            raise ModelError(f"manifest {mp} is not valid: {e}") from None
        except ModelError as e:
            raise ModelError(f"{mp}: {e}") from None
        except OSError as e:
            raise ModelError(f"cannot read manifest {mp}: {e.strerror or e}") from None

    @classmethod
    def load_optional(cls, artifact: str | os.PathLike) -> "Manifest | None":
        return cls.load(artifact) if manifest_path(artifact).exists() else None

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically to ``path`` (a manifest path or the artifact path)."""
        return atomic_write_json(manifest_path(path), self.to_dict())


def tool_versions() -> dict[str, str | None]:
    """Versions of the tools that shaped an artifact, read from package metadata (no heavy imports)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for key, dist in (
        ("edgeship", "edgeship"),
        ("tensorflow", "tensorflow"),
        ("tf_keras", "tf-keras"),
        ("keras", "keras"),
        ("tfmot", "tensorflow-model-optimization"),
        ("openvino", "openvino"),
        ("nncf", "nncf"),
        ("ai_edge_litert", "ai-edge-litert"),
        ("numpy", "numpy"),
    ):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    return out
