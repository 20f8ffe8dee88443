"""The two demo models, trained in seconds on generated data (TensorFlow imported lazily).

- :func:`train_digits`: a small CNN on scikit-learn's real handwritten digits as a line camera
  sees them on the belt (:func:`edgeship.demo.scenes.belt_frame`), 32x32 grayscale, 10 classes.
- :func:`train_shapes`: a tiny one-stage detector on synthetic shapes whose output is
  YOLO-style ``(1, 4 + nc, A)`` like Ultralytics' TFLite exports: per anchor cell ``cx, cy, w, h``
  normalised to 0..1 followed by per-class sigmoid scores (no objectness). It is built from
  standard Keras layers only (the grid offsets are a frozen Dense layer), so it saves, loads and
  converts like any other Keras model.

Both return a :class:`DemoModel` holding the Keras model, its InputSpec, labels, task and
preprocessed calibration / holdout samples.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..spec import InputSpec

from ..preprocess import preprocess
from . import scenes

log = logging.getLogger(__name__)

DIGITS_SPEC = InputSpec(height=32, width=32, channels=1, color_order="GRAY", resize="stretch")
SHAPES_SPEC = InputSpec(height=96, width=96, channels=3, color_order="RGB", resize="stretch")
SHAPES_GRID = 12


@dataclass
class DemoModel:
    name: str
    model: Any  # keras.Model
    spec: InputSpec
    labels: list[str]
    task: str
    x_calib: np.ndarray
    x_holdout: np.ndarray
    y_holdout: Any
    metrics: dict


def _keras(seed: int):
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    # same seed, same model: deterministic kernels (reductions in a fixed order whatever the thread timing)
    tf.config.experimental.enable_op_determinism()
    return keras


# ---- digits ---------------------------------------------------------------------------------
def digits_samples(seed: int = 0, holdout: float = 0.25):
    """(x_train, y_train, x_test, y_test, test_images, test_labels): belt frames preprocessed with DIGITS_SPEC."""
    imgs, y = scenes.digits_images(64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(imgs))
    n_test = int(len(imgs) * holdout)
    test, train = order[:n_test], order[n_test:]
    frames = [scenes.belt_frame(imgs[i], rng, shift=int(rng.integers(0, 24))) for i in order]
    x = np.stack([preprocess(f, DIGITS_SPEC) for f in frames])
    return x[n_test:], y[train], x[:n_test], y[test], imgs[test], y[test]


def train_digits(*, epochs: int = 10, seed: int = 0) -> DemoModel:
    """Train the digits CNN (a few seconds on 2 cores); holdout accuracy in ``metrics``."""
    keras = _keras(seed)
    x_tr, y_tr, x_te, y_te, _, _ = digits_samples(seed)
    m = keras.Sequential([
        keras.Input(DIGITS_SPEC.sample_shape),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ], name="digits_cnn")
    m.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(x_tr, y_tr, epochs=epochs, batch_size=64, verbose=0)
    acc = float(np.mean(np.argmax(m.predict(x_te, verbose=0), axis=1) == y_te))
    log.info("digits CNN: holdout accuracy %.3f", acc)
    return DemoModel("digits", m, DIGITS_SPEC, [str(i) for i in range(10)], "classify",
                     x_tr[:200], x_te, y_te, {"accuracy": acc, "holdout": int(len(y_te))})


# ---- shapes detector ----------------------------------------------------------------------------
def shapes_targets(objs_list, hw=scenes.SCENE_HW, grid: int = SHAPES_GRID, nc: int = len(scenes.SHAPE_CLASSES)) -> np.ndarray:
    """Training targets (N, 5 + nc, grid*grid): normalised cx, cy, w, h, one-hot classes, positive mask.

    Each object is assigned to the grid cell that holds its centre (row-major anchors).
    """
    h, w = hw
    out = np.zeros((len(objs_list), 5 + nc, grid * grid), np.float32)
    for i, objs in enumerate(objs_list):
        for o in objs:
            cx, cy = o.cx / w, o.cy / h
            gx, gy = min(grid - 1, int(cx * grid)), min(grid - 1, int(cy * grid))
            a = gy * grid + gx
            out[i, 0:4, a] = (cx, cy, 2 * o.r / w, 2 * o.r / h)
            out[i, 4 + o.cls, a] = 1.0
            out[i, 4 + nc, a] = 1.0
    return out


def shapes_samples(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x, objs_list = [], []
    for _ in range(n):
        img, objs = scenes.random_scene(rng)
        x.append(preprocess(img, SHAPES_SPEC))
        objs_list.append(objs)
    return np.stack(x), shapes_targets(objs_list), objs_list


def build_shapes_model(nc: int = len(scenes.SHAPE_CLASSES), grid: int = SHAPES_GRID):
    """The detector graph; output (1, 4 + nc, grid*grid) with boxes as normalised cx, cy, w, h."""
    import keras
    from keras import layers

    a = grid * grid
    inp = keras.Input(SHAPES_SPEC.sample_shape, name="image")
    x = inp
    for filters, stride in ((16, 2), (32, 2), (48, 2), (64, 1)):
        x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    raw = layers.Conv2D(4 + nc, 1, name="head")(x)
    t = layers.Permute((2, 1))(layers.Reshape((a, 4 + nc))(raw))  # (4 + nc, A)
    sig = lambda lo, hi: layers.Activation("sigmoid")(layers.Cropping1D((lo, 4 + nc - hi))(t))  # noqa: E731
    gx = np.tile(np.arange(grid), grid).astype(np.float32)
    gy = np.repeat(np.arange(grid), grid).astype(np.float32)
    offset_x = layers.Dense(a, trainable=False, name="grid_x")
    offset_y = layers.Dense(a, trainable=False, name="grid_y")
    cx, cy = offset_x(sig(0, 1)), offset_y(sig(1, 2))
    eye = np.eye(a, dtype=np.float32) / grid
    offset_x.set_weights([eye, gx / grid])
    offset_y.set_weights([eye, gy / grid])
    out = layers.Concatenate(axis=1, name="yolo")([cx, cy, sig(2, 4), sig(4, 4 + nc)])
    return keras.Model(inp, out, name="shapes_detector")


def detection_loss(nc: int = len(scenes.SHAPE_CLASSES), neg_weight: float = 2.0, box_weight: float = 10.0):
    """Class BCE averaged separately over positive and negative cells, plus L1 on positive boxes."""
    import keras.ops as K

    def loss(y_true, y_pred):
        mask = y_true[:, 4 + nc, :]
        cls_t, cls_p = y_true[:, 4:4 + nc, :], K.clip(y_pred[:, 4:4 + nc, :], 1e-6, 1 - 1e-6)
        bce = -K.sum(cls_t * K.log(cls_p) + (1 - cls_t) * K.log(1 - cls_p), axis=1)  # (N, A)
        box = K.sum(K.abs(y_true[:, 0:4, :] - y_pred[:, 0:4, :]), axis=1)
        n_pos = K.maximum(K.sum(mask), 1.0)
        n_neg = K.maximum(K.sum(1.0 - mask), 1.0)
        return (K.sum(bce * mask) / n_pos + neg_weight * K.sum(bce * (1.0 - mask)) / n_neg
                + box_weight * K.sum(box * mask) / n_pos)

    return loss


def train_shapes(*, n_train: int = 1600, epochs: int = 10, seed: int = 0) -> DemoModel:
    """Train the tiny shapes detector (seconds on 2 cores); recall/precision at 0.5 in ``metrics``."""
    keras = _keras(seed)
    x, y, _ = shapes_samples(n_train, seed)
    x_te, _, objs_te = shapes_samples(200, seed + 1)
    m = build_shapes_model()
    m.compile(optimizer=keras.optimizers.Adam(4e-3), loss=detection_loss())
    m.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    metrics = detection_metrics(m.predict(x_te, verbose=0), objs_te)
    log.info("shapes detector: %s", metrics)
    return DemoModel("shapes", m, SHAPES_SPEC, list(scenes.SHAPE_CLASSES), "detect", x[:200], x_te, objs_te, metrics)


def detection_metrics(pred: np.ndarray, objs_list, hw=scenes.SCENE_HW, conf: float = 0.5, iou: float = 0.5) -> dict:
    """Greedy matching of the best cell per object: recall, precision and class accuracy at ``conf``."""
    h, w = hw
    nc = pred.shape[1] - 4
    tp = fp = n_obj = 0
    for p, objs in zip(pred, objs_list):
        scores = p[4:].max(axis=0)
        cls = p[4:].argmax(axis=0)
        keep = np.flatnonzero(scores >= conf)
        boxes = np.stack([(p[0] - p[2] / 2) * w, (p[1] - p[3] / 2) * h, (p[0] + p[2] / 2) * w, (p[1] + p[3] / 2) * h], 1)
        used = set()
        n_obj += len(objs)
        for o in objs:
            best = None
            for k in keep:
                if k in used or cls[k] != o.cls:
                    continue
                if _iou(boxes[k], o.box) >= iou and (best is None or scores[k] > scores[best]):
                    best = k
            if best is not None:
                used.add(best)
                tp += 1
        fp += len([k for k in keep if k not in used])
    return {"recall": round(tp / max(1, n_obj), 4), "precision": round(tp / max(1, tp + fp), 4), "objects": n_obj,
            "classes": nc}


def _iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
