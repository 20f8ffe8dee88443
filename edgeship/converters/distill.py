"""Distillation: win back what pruning cost, with the unpruned model as the teacher (labels optional).

The teacher's outputs on the training images are the targets, so unlabelled images, video frames or a
calibration set are enough: the factory has hours of unlabelled video and no annotator. Every output is
distilled, with a loss fitting its role (:mod:`edgeship.roles`):

* class scores given as probabilities: cross-entropy against the teacher's probabilities (soft targets);
  with labels, the targets are ``alpha * one_hot(label) + (1 - alpha) * teacher``, which is exactly
  ``alpha * CE(label) + (1 - alpha) * CE(teacher)`` because cross-entropy is linear in its target;
* class scores given as logits: the same, on ``softmax(logits / T)`` with temperature ``T``;
* any other output (boxes, raw maps, embeddings): mean squared error to the teacher's values, weighted by
  the inverse of the teacher output's variance so that no output drowns the others.

The teacher runs once over the data (its outputs are cached), then the student trains with plain
``model.fit``: no custom training loop, and the student stays an ordinary Keras model. Keras 3's
``keras.distillation.Distiller`` recomputes the teacher every step and needs labels for its student
loss; here the teacher's outputs are the labels, which is what it would compute anyway.
"""

from __future__ import annotations

import contextlib

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from .. import roles as R
from ..errors import InputError
from ..runtime.processing.classify import softmax
from . import metrics as M

log = logging.getLogger(__name__)

DEFAULT_EPOCHS = 5
DEFAULT_ALPHA = 0.5  # weight of the labels against the teacher when both are there
DEFAULT_TEMPERATURE = 2.0
DEFAULT_LEARNING_RATE = 1e-3  # the start of a cosine decay over every step
BN_MOMENTUM = 0.9  # BatchNorm moving-statistics momentum while distilling


@dataclass
class DistillReport:
    """What distillation did and what it bought, measured against the teacher on held-out samples."""

    samples: int
    epochs: int
    labelled: bool
    alpha: float | None
    temperature: float
    losses: list[float] = field(default_factory=list)  # training loss per epoch
    before: dict[str, float] = field(default_factory=dict)  # fidelity to the teacher before distilling
    after: dict[str, float] = field(default_factory=dict)  # ... and after
    data: str = ""  # where the images came from (for the manifest)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def output_kinds(teacher_outputs: Sequence[np.ndarray], roles: Sequence[str | None] | None = None) -> list[str]:
    """Per output: "probabilities", "logits" (class scores before a softmax) or "values"."""
    roles = list(roles) if roles is not None and len(roles) == len(teacher_outputs) else R.guess_roles(teacher_outputs)
    kinds = []
    for y, role in zip(teacher_outputs, roles):
        if R.is_probabilities(y):
            kinds.append("probabilities")
        elif role == "class_scores" and np.ndim(y) == 2:
            kinds.append("logits")
        else:
            kinds.append("values")
    return kinds


def targets_and_losses(teacher_outputs: Sequence[np.ndarray], kinds: Sequence[str], *, y: np.ndarray | None = None,
                       alpha: float = DEFAULT_ALPHA, temperature: float = DEFAULT_TEMPERATURE) -> tuple[list[np.ndarray], list[Any], list[float]]:
    """(targets, Keras losses, loss weights) per output (pure, apart from naming Keras's loss classes)."""
    import keras

    targets, losses, weights = [], [], []
    labelled = [k for k in kinds if k != "values"]
    if y is not None and len(labelled) != 1:
        raise InputError(f"labels need exactly one class-score output to apply to; this model has {len(labelled)}")
    for out, kind in zip(teacher_outputs, kinds):
        out = np.asarray(out, np.float32)
        if kind == "values":
            var = float(np.var(out))
            targets.append(out)
            losses.append(keras.losses.MeanSquaredError())
            weights.append(1.0 / var if var > 1e-12 else 1.0)
            continue
        soft = out if kind == "probabilities" else softmax(out / temperature, axis=1)
        if y is not None:
            one_hot = np.eye(soft.shape[1], dtype=np.float32)[np.asarray(y, np.int64)]
            soft = alpha * one_hot + (1.0 - alpha) * soft
        targets.append(soft)
        if kind == "probabilities":
            losses.append(keras.losses.CategoricalCrossentropy())
            weights.append(1.0)
        else:
            losses.append(_TemperedCrossEntropy(temperature))
            weights.append(temperature**2)  # keeps the gradient scale of a T-softened target (Hinton et al.)
    return targets, losses, weights


class _TemperedCrossEntropy:
    """Cross-entropy of ``softmax(student_logits / T)`` against soft targets (a plain callable loss)."""

    def __init__(self, temperature: float) -> None:
        self.temperature = float(temperature)
        self.__name__ = f"tempered_crossentropy_t{self.temperature:g}"

    def __call__(self, y_true: Any, y_pred: Any) -> Any:
        import keras

        return keras.losses.categorical_crossentropy(y_true, y_pred / self.temperature, from_logits=True)


def fidelity(teacher_outputs: Sequence[np.ndarray], student_outputs: Sequence[np.ndarray], kinds: Sequence[str]) -> dict[str, float]:
    """How closely the student reproduces the teacher: top-1 agreement of a class output (0-100) and the mean
    cosine over every output."""
    out = {"cosine": float(np.mean([M.cosine_similarity(t, s) for t, s in zip(teacher_outputs, student_outputs)]))}
    classes = [i for i, k in enumerate(kinds) if k != "values"]
    if len(classes) == 1:
        i = classes[0]
        out["agreement"] = M.agreement(np.argmax(teacher_outputs[i], 1), np.argmax(student_outputs[i], 1))
    return out


def distill(student: Any, teacher: Any, x: np.ndarray, *, y: np.ndarray | None = None, x_val: np.ndarray | None = None,
            epochs: int = DEFAULT_EPOCHS, alpha: float = DEFAULT_ALPHA, temperature: float = DEFAULT_TEMPERATURE,
            learning_rate: float = DEFAULT_LEARNING_RATE, batch_size: int = 32, roles: Sequence[str | None] | None = None,
            data: str = "", seed: int = 0) -> DistillReport:
    """Train ``student`` (in place) to reproduce ``teacher`` on the images ``x`` (preprocessed samples).

    ``y`` (int class ids, optional) mixes the labels in with weight ``alpha``. ``x_val`` (default: the last
    fifth of ``x``, which is then not trained on) measures the fidelity before and after. Both models must
    take the same input and give outputs of the same shapes.
    """
    import keras

    from .keras_io import predict

    if not (isinstance(epochs, int) and epochs >= 1):
        raise InputError(f"epochs must be a positive integer, got {epochs!r}")
    for name, v, lo, hi in (("alpha", alpha, 0.0, 1.0), ("temperature", temperature, 1e-3, 100.0),
                            ("learning_rate", learning_rate, 1e-8, 1.0)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and lo <= v <= hi):
            raise InputError(f"{name} must be a number in [{lo:g}, {hi:g}], got {v!r}")
    x = np.asarray(x, np.float32)
    if len(x) < 2:
        raise InputError(f"distillation needs at least 2 images, got {len(x)}")
    if y is not None and len(y) != len(x):
        raise InputError(f"labels: expected one per image ({len(x)}), got {len(y)}")
    if x_val is None:
        cut = max(1, len(x) // 5)
        x, x_val = x[:-cut], x[-cut:]
        y = None if y is None else np.asarray(y)[:-cut]
    t0 = time.perf_counter()
    teacher_train = predict(teacher, x)
    teacher_val = predict(teacher, x_val)
    student_val = predict(student, x_val)
    if [np.shape(a)[1:] for a in teacher_val] != [np.shape(a)[1:] for a in student_val]:
        raise InputError(f"the student's outputs {[np.shape(a)[1:] for a in student_val]} differ from the teacher's "
                         f"{[np.shape(a)[1:] for a in teacher_val]}")
    kinds = output_kinds(teacher_train, roles)
    classes = [i for i, k in enumerate(kinds) if k != "values"]
    if y is not None and len(classes) != 1:
        log.warning("the labels are not used: they need exactly one class-score output, this model has %d "
                    "(mark it with --output NAME=class_scores); distilling on the teacher's outputs only", len(classes))
        y = None
    if y is not None and len(y) and (int(np.min(y)) < 0 or int(np.max(y)) >= np.shape(teacher_train[classes[0]])[1]):
        raise InputError(f"labels run from {int(np.min(y))} to {int(np.max(y))}, the model has "
                         f"{np.shape(teacher_train[classes[0]])[1]} classes")
    targets, losses, weights = targets_and_losses(teacher_train, kinds, y=y, alpha=alpha, temperature=temperature)
    report = DistillReport(samples=len(x), epochs=epochs, labelled=y is not None, alpha=alpha if y is not None else None,
                           temperature=temperature, data=data, before=fidelity(teacher_val, student_val, kinds))
    keras.utils.set_random_seed(seed)
    single = len(targets) == 1
    steps = epochs * -(-len(x) // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps, alpha=0.05)  # settle at the end
    student.compile(optimizer=keras.optimizers.Adam(schedule), loss=losses[0] if single else losses,
                    loss_weights=None if single else weights)
    with _tracking_batchnorm(student):
        history = student.fit(x, targets[0] if single else targets, epochs=epochs, batch_size=batch_size, shuffle=True,
                              verbose=0, callbacks=[_epoch_log(epochs)])
    report.losses = [float(v) for v in history.history.get("loss", [])]
    report.after = fidelity(teacher_val, predict(student, x_val), kinds)
    report.seconds = time.perf_counter() - t0
    log.info("distillation: %d images, %d epochs, fidelity %s -> %s", len(x), epochs, report.before, report.after)
    return report


@contextlib.contextmanager
def _tracking_batchnorm(model: Any, momentum: float = BN_MOMENTUM):
    """BatchNorm moving statistics that follow the student while it trains: keras.applications' momentum
    (0.99-0.999) would leave them near the pruned model's old statistics after a few epochs on a few
    thousand images. The layers' own momentum is restored afterwards (the saved model is unchanged)."""
    import keras

    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = min(layer.momentum, momentum)
    try:
        yield
    finally:
        for layer, m in zip(layers, saved):
            layer.momentum = m


def _epoch_log(epochs: int):
    """A Keras callback that moves edgeship's progress bar one step per epoch."""
    import keras

    from ..progress import progress

    class EpochLog(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar = progress(total=epochs, desc="distil", unit="epoch")

        def on_epoch_end(self, epoch, logs=None):
            self.bar.update(1)
            if logs and "loss" in logs:
                self.bar.set_postfix_str(f"loss {logs['loss']:.4g}")

        def on_train_end(self, logs=None):
            self.bar.close()

    return EpochLog()
