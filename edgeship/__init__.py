"""edgeship: take a trained Keras vision model to cameras at the edge.

    from edgeship import InputSpec, build_dataset, convert, ConvertOptions, verify, open_backend, run, RunOptions

Every name is imported on first use, so ``import edgeship`` (and the device runtime) stays light:
only ``convert`` and ``verify`` bring in TensorFlow, and only when called.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> "module:attribute"
_EXPORTS = {
    "InputSpec": "edgeship.spec:InputSpec",
    "build_dataset": "edgeship.calibration:build_dataset",
    "RepresentativeDataset": "edgeship.calibration:RepresentativeDataset",
    "convert": "edgeship.converters.convert:convert",
    "ConvertOptions": "edgeship.converters.options:ConvertOptions",
    "verify": "edgeship.converters.verify:verify_artifact",
    "open_backend": "edgeship.runtime.backends:open_backend",
    "build_pipeline": "edgeship.runtime.runner:build_pipeline",
    "run": "edgeship.runtime.runner:run",
    "run_config": "edgeship.runtime.apps.deploy:run_config",
    "RunOptions": "edgeship.runtime.options:RunOptions",
    "RunSummary": "edgeship.records:RunSummary",
    "Manifest": "edgeship.manifest:Manifest",
    "read_labels": "edgeship.labels:read_labels",
    "formats": "edgeship.formats",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'edgeship' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = importlib.import_module(module)
    return getattr(value, attr) if attr else value
