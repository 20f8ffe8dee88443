"""Label-free quantization-aware fine-tuning (``convert --qat EPOCHS``): the ladder's ``int8-qat`` rung.

The float model is fine-tuned with fake int8 on its weights and activations (tfmot's
``quantize_model``, through the tf_keras bridge, in a worker process) to reproduce its own float
outputs on the calibration set's images: the float model is the teacher, so no labels are needed;
labels, when the set has them, are mixed in as ``prune --distill`` mixes them
(:mod:`edgeship.converters.distill`: the same targets and losses per output kind). The result is
a full-int8 model whose ranges and weights were trained for int8:

- TFLite: converted from the QAT model (the learned fake-quant ranges), I/O typed as the plan asks;
- OpenVINO: NNCF 3 has no TensorFlow backend to train with, but OpenVINO's TensorFlow frontend reads
  the QAT SavedModel's FakeQuant ops as FakeQuantize nodes, so the IR it makes is an int8 model with
  the ranges tfmot learned (no ``nncf.quantize`` on top).

The fine-tuning runs once per ``convert()`` call (format independent) and is cached for the gate.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from ..progress import progress

log = logging.getLogger(__name__)

MAX_QAT_EPOCHS = 200
LEARNING_RATE = 1e-4  # fine-tuning a trained model: small steps
MIN_IMAGES = 16


@dataclass
class QATResult:
    """What one quantization-aware fine-tuning made: the TFLite int8 file, the QAT SavedModel, and how it went."""

    tflite: Path
    saved_model: Path
    epochs: int
    samples: int
    labelled: bool
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    separable_split: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "samples": self.samples, "labelled": self.labelled,
                "losses": [round(v, 5) for v in self.losses], "seconds": round(self.seconds, 2),
                "separable_split": self.separable_split}


def check_qat_epochs(epochs: Any) -> int:
    if not isinstance(epochs, int) or isinstance(epochs, bool) or not 0 <= epochs <= MAX_QAT_EPOCHS:
        raise InputError(f"qat must be a number of epochs from 0 (off) to {MAX_QAT_EPOCHS}, got {epochs!r}")
    return epochs


def quantization_aware(model: Any, dataset: Any, epochs: int, *, io: str = "int8", out_io: str | None = None,
                       roles: Sequence[str] | None = None, workdir: str | Path | None = None) -> QATResult:
    """Fine-tune ``model`` (Keras 3 or tf_keras, path or object) with fake int8 on ``dataset``'s calibration images
    for ``epochs``, distilling from its own float outputs (and the set's labels when it has them)."""
    from .distill import output_kinds, targets_and_losses
    from .keras_io import load_keras_model, predict
    from .prune import _as_tf_keras
    from .workers import run_worker

    check_qat_epochs(epochs)
    model = load_keras_model(model)
    x, y = dataset.split("calib")
    if len(x) < MIN_IMAGES:
        raise InputError(f"quantization-aware training needs at least {MIN_IMAGES} calibration images, got {len(x)}")
    t0 = time.monotonic()
    teacher = predict(model, x)
    kinds = output_kinds(teacher, roles)
    labelled = y is not None and len([k for k in kinds if k != "values"]) == 1
    targets, _, weights = targets_and_losses(teacher, kinds, y=y if labelled else None)
    work = Path(tempfile.mkdtemp(prefix="qat-", dir=workdir))
    tfk_model, _ = _as_tf_keras(model, x)
    tfk_model.save(str(work / "float.h5"), include_optimizer=False)
    np.savez(work / "data.npz", x=np.asarray(x, np.float32), **{f"t{i}": np.asarray(t, np.float32) for i, t in enumerate(targets)})
    request = {"model": str(work / "float.h5"), "data": str(work / "data.npz"), "kinds": kinds, "weights": weights,
               "epochs": int(epochs), "learning_rate": LEARNING_RATE, "io": io, "out_io": out_io or io,
               "tflite": str(work / "qat.tflite"), "saved_model": str(work / "qat_saved_model"),
               "result": str(work / "result.json")}
    bar = progress(total=1, desc=f"quantization-aware training ({epochs} epochs)", unit="run")
    try:
        # oneDNN's fused kernels crash (SIGSEGV) training tfmot's fake-quant depthwise convolutions: plain TF kernels
        result = run_worker("edgeship.converters._qat_worker", request, work, "qat", env={"TF_ENABLE_ONEDNN_OPTS": "0"})
    finally:
        bar.update(1)
        bar.close()
    out = QATResult(Path(request["tflite"]), Path(request["saved_model"]), int(epochs), len(x), labelled,
                    result.get("losses", []), time.monotonic() - t0, int(result.get("split", 0)))
    log.info("quantization-aware training: %d images, %d epochs, loss %s, %.1f s", len(x), epochs,
             " -> ".join(f"{v:.4g}" for v in out.losses[:1] + out.losses[-1:]), out.seconds)
    return out
