"""Small digit classifiers for the accuracy gate: one int8 handles well, one it cannot.

The quantization-sensitive model is a real classifier trained on scikit-learn's digits. After
training, one output channel of ``conv2`` is multiplied by a large factor ``K`` and the weights that
read it in ``conv3`` are divided by ``K``. ReLU and max-pooling commute with a positive scale, so the
float model computes the same function, but that one channel now dominates the activation range of
the tensor between ``conv2`` and ``conv3``. Per-tensor int8 activation quantization (TFLite and
NNCF both quantize activations per tensor) then gives the tensor a step of roughly ``K`` times the
other channels' values, rounding every other channel to zero: plain int8 collapses. Keeping that
one tensor in float (TFLite: ``conv2`` and ``conv3`` run in float; OpenVINO: ``conv3``'s input is
not quantized) restores the accuracy while ``conv1``, ``conv4``, ``conv5`` and the head stay int8. This is the failure cross-layer equalisation exists for, made exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SIZE = 16


def digits_float(size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Digits as (N, size, size, 1) float32 in [0, 1] (what InputSpec(scale=1/255) produces) and labels."""
    from .data import digits_arrays

    imgs, y = digits_arrays(size)
    return (imgs.astype(np.float32) / 255.0)[..., None], y


def _split(n: int, seed: int = 0, holdout: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    idx = rng.permutation(n)
    k = int(round(n * holdout))
    return idx[k:], idx[:k]


def build_classifier(name: str = "digits_cnn", size: int = SIZE):
    """Five convolutions and a dense head (Keras 3, untrained)::

        conv1(16) -> pool -> conv2(32) -> conv3(32) -> pool -> conv4(32) -> conv5(32) -> GAP -> dense(10)
    """
    import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((size, size, 1), name="image")
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inp)
    x = L.MaxPooling2D(2, name="pool1")(x)
    x = L.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = L.Conv2D(32, 3, padding="same", activation="relu", name="conv3")(x)
    x = L.MaxPooling2D(2, name="pool2")(x)
    x = L.Conv2D(32, 3, padding="same", activation="relu", name="conv4")(x)
    x = L.Conv2D(32, 3, padding="same", activation="relu", name="conv5")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name=name)


CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")


def train_classifier(epochs: int = 15, size: int = SIZE, seed: int = 0) -> tuple[Any, dict[str, np.ndarray]]:
    """Train :func:`build_classifier` on digits; returns (model, data) with train/holdout arrays."""
    import keras

    x, y = digits_float(size)
    tr, ho = _split(len(x), seed)
    model = build_classifier(size=size)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[tr], y[tr], epochs=epochs, batch_size=32, verbose=0)
    return model, {"x_train": x[tr], "y_train": y[tr], "x_holdout": x[ho], "y_holdout": y[ho], "x": x, "y": y}


def make_sensitive(model: Any, x_probe: np.ndarray, *, factor: float = 1000.0, layer: str = "conv2", consumer: str = "conv3"):
    """Return a copy of ``model`` whose ``layer`` output range is dominated by one channel.

    The most active channel of ``layer`` (on ``x_probe``) is scaled by ``factor``; ``consumer``'s
    weights on that input channel are divided by ``factor``. The float function is unchanged.
    """
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    probe = keras.Model(clone.inputs, clone.get_layer(layer).output)
    act = np.asarray(probe.predict(x_probe, verbose=0))
    ch = int(np.argmax(act.reshape(-1, act.shape[-1]).mean(axis=0)))
    k, b = clone.get_layer(layer).get_weights()
    k[..., ch] *= factor
    b[ch] *= factor
    clone.get_layer(layer).set_weights([k, b])
    k2, b2 = clone.get_layer(consumer).get_weights()
    k2[:, :, ch, :] /= factor
    clone.get_layer(consumer).set_weights([k2, b2])
    return clone


def logit_dominated(model: Any, *, offset: float = -1e4):
    """``model``'s classifier with an 11th, never-winning logit at ``offset`` next to the 10 real logits.

    The model output is a concatenation no compute layer reads, so when its int8 range (dominated
    by the extra logit) wipes out the real logits there is no tensor a mixed model could keep in
    float to fix it: the accuracy gate has to fall back to fp16.
    """
    import keras

    feats = model.get_layer("gap").output
    w, b = model.get_layer("probs").get_weights()
    logits = keras.layers.Dense(10, name="logits")(feats)
    extra = keras.layers.Dense(1, name="reject")(feats)
    out = keras.layers.Concatenate(name="scores")([logits, extra])
    clone = keras.Model(model.inputs, out, name="logit_dominated")
    clone.get_layer("logits").set_weights([w, b])
    clone.get_layer("reject").set_weights([np.zeros((w.shape[0], 1), np.float32), np.array([offset], np.float32)])
    return clone


_CACHE: dict[str, Any] = {}


def workspace() -> dict[str, Any]:
    """Trained models, a calibration set and plain/gated conversions, built once per test process.

    Keys: root, good / sensitive (``.keras`` paths), calib (``.npz`` path), dataset, data.
    """
    if "root" in _CACHE:
        return _CACHE
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    from edgeship.calibration import RepresentativeDataset
    from edgeship.spec import InputSpec

    root = Path(tempfile.mkdtemp(prefix="edgeship-sensitive-"))
    atexit.register(shutil.rmtree, root, True)
    model, d = train_classifier()
    sens = make_sensitive(model, d["x_train"][:200])
    model.save(root / "good.keras")
    sens.save(root / "sensitive.keras")
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(d["x"]))[:750]
    ds = RepresentativeDataset.from_arrays(d["x"][idx], d["y"][idx], spec=InputSpec(SIZE, SIZE, channels=1),
                                           labels=[str(i) for i in range(10)], holdout=0.6, seed=0)
    ds.save(root / "calib.npz")
    _CACHE.update(root=root, good=root / "good.keras", sensitive=root / "sensitive.keras", calib=root / "calib.npz",
                  dataset=ds, data=d, good_model=model)
    return _CACHE


def converted(kind: str, max_drop: float | None) -> dict[str, Any]:
    """int8 TFLite + OpenVINO conversions of the "good" or "sensitive" model (cached): {format: ConvertResult}.
    Equalization is off: it alone fixes the sensitive model (tests/test_equalize.py), these test what the gate does."""
    key = f"{kind}:{max_drop}"
    if key not in _CACHE:
        from edgeship.converters import convert

        ws = workspace()
        out = ws["root"] / f"{kind}_{max_drop}"
        results = convert(ws[kind], formats=["tflite", "openvino"], precision="int8", calib=ws["calib"], out_dir=out,
                          name=kind, max_drop=max_drop, prefer="quantized", equalize="off")
        _CACHE[key] = {r.format: r for r in results}
    return _CACHE[key]
