"""The device runtime: backends, sources, post-processing, pipeline, sinks, bench.

Never imports TensorFlow, Keras or NNCF: a device needs numpy, opencv-python-headless and
ai-edge-litert (and openvino for IR artifacts). Submodules are imported on first use.

    from edgeship.runtime import build_pipeline, open_backend, RunOptions, PostOptions
    summary = build_pipeline("model.tflite", "rtsp://cam/stream", sinks=["http:8080"],
                             options=RunOptions(post=PostOptions(threshold=0.4))).run()  # a RunSummary
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it (imported lazily, so `import edgeship.runtime` stays light)
_EXPORTS = {
    "open_backend": "edgeship.runtime.backends",
    "Backend": "edgeship.runtime.backends",
    "open_source": "edgeship.runtime.sources",
    "LatestFrameSource": "edgeship.runtime.sources",
    "make_sink": "edgeship.runtime.sinks",
    "HttpServer": "edgeship.runtime.sinks",
    "Pipeline": "edgeship.runtime.pipeline",
    "build_pipeline": "edgeship.runtime.runner",
    "run": "edgeship.runtime.runner",
    "RunOptions": "edgeship.runtime.options",
    "SourceOptions": "edgeship.runtime.options",
    "BackendOptions": "edgeship.runtime.options",
    "PostOptions": "edgeship.runtime.options",
    "InputSpecOptions": "edgeship.runtime.options",
    "RunSummary": "edgeship.records",
    "read_labels": "edgeship.labels",
    "make_postprocess": "edgeship.runtime.processing",
    "benchmark": "edgeship.runtime.bench",
    "Frame": "edgeship.runtime.types",
    "Result": "edgeship.runtime.types",
    "Detections": "edgeship.runtime.types",
    "Classification": "edgeship.runtime.types",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'edgeship.runtime' has no attribute {name!r}")
