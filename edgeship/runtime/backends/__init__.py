"""Inference backends, picked from the artifact's manifest format or file suffix through a registry.

    from edgeship.runtime.backends import open_backend
    with open_backend("model.tflite", threads=4) as b:
        probs = b.infer(batch)[0]          # float32 in (InputSpec domain), float32 out

Backend modules are imported only when chosen, so a device with only ai-edge-litert never
imports openvino (and no backend ever imports TensorFlow unless it is the last LiteRT fallback).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from ... import formats
from ...errors import BackendError, ModelError
from ...manifest import Manifest
from .base import Backend, dequantize, quantize

# The registry is the format table (edgeship.formats.FORMATS): each row names its backend "module:Class".
__all__ = ["Backend", "open_backend", "backend_class", "resolve_backend", "quantize", "dequantize"]


def backend_class(name: str) -> type[Backend]:
    """The Backend class registered under ``name`` or one of its aliases (imports its module)."""
    try:
        target = formats.get(name).backend
    except ModelError:
        raise BackendError(f"unknown backend {name!r}; expected one of {', '.join(formats.backend_names())}") from None
    module, attr = target.split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as e:
        raise BackendError(f"backend {name!r} cannot be loaded: {e}") from None


def resolve_backend(path: str | os.PathLike, manifest: Manifest | None, backend: str | None = None) -> str:
    """Which registry entry runs ``path``: the explicit choice, else the manifest format, else the suffix."""
    if backend:
        try:
            return formats.get(backend).name
        except ModelError:
            raise BackendError(f"unknown backend {backend!r}; expected one of {', '.join(formats.backend_names())}") from None
    return formats.resolve(path, manifest).name


def open_backend(
    path: str | os.PathLike,
    *,
    backend: str | None = None,
    threads: int | None = None,
    device: str = "CPU",
    hint: str = "latency",
    precision: str | None = None,
    streams: int | str | None = None,
    batch: int | None = 1,
) -> Backend:
    """Load an artifact with the right backend; the manifest next to it (if any) is attached as ``.manifest``.

    ``path`` may also be the manifest itself (``NAME.manifest.json``). ``device``, ``hint``,
    ``streams``, ``precision`` and ``batch`` apply to OpenVINO; ``threads`` to both. ``batch``
    fixes a dynamic batch dimension (default 1: one frame per call, the camera case and what the
    vendors' benchmarks measure; None keeps it dynamic for large batched calls such as verify).
    """
    path = Path(path)
    manifest = None
    if path.name.endswith(".manifest.json"):
        manifest = Manifest.load(path)
        path = manifest.artifact_path(path)
    elif path.exists():
        manifest = Manifest.load_optional(path)
    if not path.exists():
        raise ModelError(f"model file {path} does not exist")
    cls = backend_class(resolve_backend(path, manifest, backend))
    return cls(path, threads=threads, manifest=manifest, device=device, hint=hint, precision=precision, streams=streams,
               batch=batch)


def __getattr__(name: str) -> Any:  # pragma: no cover - convenience for `from ...backends import LiteRTBackend`
    for f in formats.FORMATS.values():
        if f.backend.endswith(":" + name):
            return backend_class(f.name)
    raise AttributeError(name)
