"""Tiny real models trained briefly on the digits data, in Keras 3 and in tf_keras, cached on disk.

Every builder takes a ``root`` folder (use :func:`models_root` with pytest's ``tmp_path_factory``
so all test files of one session share it) and returns the saved model's path; training happens
once per root and the file is written atomically, so later calls are instant.

    from tests.helpers.models import models_root, digits_classifier_keras, digits_split
    path = digits_classifier_keras(models_root(tmp_path_factory))   # .keras, ~97% holdout accuracy
    x_train, y_train, x_test, y_test = digits_split()                # preprocessed float32 (N, 32, 32, 3)

tf_keras is imported directly (``import tf_keras``): it works next to Keras 3 in one process without
TF_USE_LEGACY_KERAS. Only tfmot flips that switch, and edgeship runs tfmot in a subprocess.

Stable API (other test files import it): ``SPEC``, ``digits_spec``, ``digits_xy``, ``digits_split``,
``models_root``, ``digits_classifier_keras`` (.keras, functional: Conv, BatchNorm, DepthwiseConv,
Add, Concatenate, Dense), ``digits_sequential_keras`` (.keras, Sequential), ``digits_two_output_keras``
(.keras, two outputs: 10-way softmax + 1 sigmoid "digit is even"), ``digits_classifier_savedmodel``
(Keras 3 ``model.export`` folder), ``digits_classifier_h5`` (tf_keras .h5),
``digits_classifier_tf_keras_savedmodel`` (tf_keras SavedModel folder), ``load_keras`` /
``load_tf_keras`` (in-memory models), ``digits_calibration`` (calib.npz, RepresentativeDataset),
``digits_labels``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeship.spec import InputSpec

from edgeship.preprocess import preprocess_batch

from .data import digits_bgr

SIZE = 32
SPEC = InputSpec(height=SIZE, width=SIZE, channels=3, color_order="RGB", scale=1.0 / 255.0)
DIGIT_LABELS = [str(i) for i in range(10)]
EPOCHS = 8
SEED = 0

_DATA: dict[str, Any] = {}


# ---- data ----------------------------------------------------------------------------------------
def digits_spec() -> InputSpec:
    """The InputSpec every test model is trained with: 32x32 RGB, pixels / 255."""
    return SPEC


def digits_labels() -> list[str]:
    return list(DIGIT_LABELS)


def digits_xy() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits preprocessed with :data:`SPEC`: float32 (N, 32, 32, 3) and int labels."""
    if "xy" not in _DATA:
        frames, y = digits_bgr(SIZE)
        _DATA["xy"] = (preprocess_batch(list(frames), SPEC).astype(np.float32), y)
    return _DATA["xy"]


def digits_split(holdout: float = 0.2, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A fixed shuffled train / holdout split: (x_train, y_train, x_test, y_test)."""
    x, y = digits_xy()
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * holdout))
    te, tr = order[:n_test], order[n_test:]
    return x[tr], y[tr], x[te], y[te]


def models_root(tmp_path_factory) -> Path:
    """One folder per pytest session shared by every test file: ``<basetemp>/edgeship-models``."""
    root = Path(tmp_path_factory.getbasetemp()) / "edgeship-models"
    root.mkdir(parents=True, exist_ok=True)
    return root


# ---- architectures (same code for keras and tf_keras: ``k`` is the module) ------------------------
def build_classifier(k) -> Any:
    """Functional: Conv-BN-ReLU, DepthwiseConv-BN-ReLU + residual Add, Concatenate, GAP, Dense softmax."""
    L = k.layers
    inp = L.Input((SIZE, SIZE, 3), name="image")
    x = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inp)
    x = L.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    d = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw_conv")(x)
    d = L.BatchNormalization(momentum=0.9, name="dw_bn")(d)
    d = L.ReLU(name="dw_relu")(d)
    d = L.Conv2D(16, 1, name="pw_conv")(d)
    x = L.Add(name="residual_add")([x, d])
    b = L.Conv2D(8, 3, padding="same", activation="relu", name="branch_conv")(x)
    x = L.Concatenate(name="concat")([x, b])
    x = L.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="head_conv")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(32, activation="relu", name="fc")(x)
    out = L.Dense(10, activation="softmax", name="probs")(x)
    return k.Model(inp, out, name="digits_classifier")


def build_sequential(k) -> Any:
    """Sequential: Conv, MaxPool, Conv, Flatten, Dense, Dense softmax."""
    L = k.layers
    return k.Sequential(
        [
            L.Input((SIZE, SIZE, 3)),
            L.Conv2D(8, 3, strides=2, activation="relu", name="conv1"),
            L.MaxPooling2D(2, name="pool1"),
            L.Conv2D(16, 3, activation="relu", name="conv2"),
            L.Flatten(name="flatten"),
            L.Dense(32, activation="relu", name="fc"),
            L.Dense(10, activation="softmax", name="probs"),
        ],
        name="digits_sequential",
    )


def build_two_output(k) -> Any:
    """Two outputs: 10-way softmax ``digit`` and a sigmoid ``even`` (is the digit even?)."""
    L = k.layers
    inp = L.Input((SIZE, SIZE, 3), name="image")
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv1")(inp)
    x = L.BatchNormalization(momentum=0.9, name="bn1")(x)
    x = L.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    digit = L.Dense(10, activation="softmax", name="digit")(x)
    even = L.Dense(1, activation="sigmoid", name="even")(x)
    return k.Model(inp, [digit, even], name="digits_two_output")


# ---- training --------------------------------------------------------------------------------------
def _train(model, k, two_outputs: bool = False, epochs: int = EPOCHS):
    x_tr, y_tr, _, _ = digits_split()
    if two_outputs:
        model.compile(
            optimizer=k.optimizers.Adam(1e-2),
            loss=["sparse_categorical_crossentropy", "binary_crossentropy"],
        )
        targets = (y_tr, (y_tr % 2 == 0).astype(np.float32)[:, None])
    else:
        model.compile(optimizer=k.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        targets = y_tr
    model.fit(x_tr, targets, epochs=epochs, batch_size=32, verbose=0, shuffle=True)
    return model


def _keras3():
    import keras

    keras.utils.set_random_seed(SEED)
    return keras


def _tf_keras():
    import tf_keras

    tf_keras.utils.set_random_seed(SEED)
    return tf_keras


def _cached(path: Path, write: Callable[[Path], None]) -> Path:
    """Build ``path`` with ``write(tmp)`` once (atomic rename), then return it."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=path.parent))
    try:
        target = tmp / path.name
        write(target)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _trained_keras(builder: Callable, two_outputs: bool = False):
    key = f"k3:{builder.__name__}"
    if key not in _DATA:
        k = _keras3()
        _DATA[key] = _train(builder(k), k, two_outputs)
    return _DATA[key]


def _trained_tf_keras(builder: Callable):
    key = f"tfk:{builder.__name__}"
    if key not in _DATA:
        k = _tf_keras()
        _DATA[key] = _train(builder(k), k)
    return _DATA[key]


# ---- saved models -----------------------------------------------------------------------------------
def digits_classifier_keras(root: Path) -> Path:
    """Keras 3 functional classifier saved as ``.keras``."""
    return _cached(Path(root) / "digits_classifier.keras", lambda p: _trained_keras(build_classifier).save(p))


def digits_sequential_keras(root: Path) -> Path:
    """Keras 3 Sequential classifier saved as ``.keras``."""
    return _cached(Path(root) / "digits_sequential.keras", lambda p: _trained_keras(build_sequential).save(p))


def digits_two_output_keras(root: Path) -> Path:
    """Keras 3 two-output model (softmax digit, sigmoid even) saved as ``.keras``."""
    return _cached(
        Path(root) / "digits_two_output.keras", lambda p: _trained_keras(build_two_output, two_outputs=True).save(p)
    )


def digits_classifier_savedmodel(root: Path) -> Path:
    """The Keras 3 functional classifier exported as a SavedModel folder (``model.export``)."""
    return _cached(
        Path(root) / "digits_classifier_savedmodel",
        lambda p: load_keras(digits_classifier_keras(root)).export(str(p), verbose=False),
    )


def digits_classifier_h5(root: Path) -> Path:
    """tf_keras (Keras 2) functional classifier saved as legacy ``.h5``."""
    return _cached(Path(root) / "digits_classifier_tfk.h5", lambda p: _trained_tf_keras(build_classifier).save(str(p)))


def digits_classifier_tf_keras_savedmodel(root: Path) -> Path:
    """tf_keras functional classifier saved as a SavedModel folder (``save_format='tf'``)."""
    return _cached(
        Path(root) / "digits_classifier_tfk_savedmodel",
        lambda p: _trained_tf_keras(build_classifier).save(str(p), save_format="tf"),
    )


def load_keras(path: Path):
    """Load a ``.keras`` file with Keras 3 (memoised per path)."""
    key = f"load:{path}"
    if key not in _DATA:
        import keras

        _DATA[key] = keras.models.load_model(str(path))
    return _DATA[key]


def load_tf_keras(path: Path):
    """Load a tf_keras ``.h5`` / SavedModel (memoised per path)."""
    key = f"loadtfk:{path}"
    if key not in _DATA:
        import tf_keras

        _DATA[key] = tf_keras.models.load_model(str(path))
    return _DATA[key]


def digits_calibration(root: Path, count: int = 300) -> Path:
    """A calib.npz (RepresentativeDataset) of ``count`` digits with labels, 20% holdout, :data:`SPEC`."""
    from edgeship.calibration import RepresentativeDataset

    def write(p: Path) -> None:
        x, y = digits_xy()
        idx = np.random.default_rng(SEED + 1).permutation(len(x))[:count]
        ds = RepresentativeDataset.from_arrays(x[idx], y[idx], spec=SPEC, labels=digits_labels(), holdout=0.2, seed=SEED)
        ds.save(p)

    return _cached(Path(root) / f"digits_calib_{count}.npz", write)
