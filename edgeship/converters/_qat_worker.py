"""Quantization-aware fine-tuning worker: ``python -m edgeship.converters._qat_worker REQUEST.json``.

Runs in its own process because importing tensorflow-model-optimization switches the whole process
to legacy Keras. Reads a tf_keras ``.h5`` (the float model) and an ``.npz`` of training images and
the teacher's targets (one array per output, made by :mod:`edgeship.converters.qat`), splits every
SeparableConv2D into its depthwise and pointwise halves (tfmot's own separable transform miswires
residual graphs: "Inputs have incompatible shapes"; the split is exact and is what TFLite runs
anyway), wraps the model with ``tfmot.quantization.keras.quantize_model`` (fake int8 on weights and
activations), fine-tunes it to reproduce the teacher, and writes:

- ``tflite``: the full-int8 TFLite model (the fake-quant ranges learned, I/O typed as asked);
- ``saved_model``: the fine-tuned model with its FakeQuant ops (OpenVINO reads them as FakeQuantize:
  an int8 IR);
- ``result``: ``{"losses": [...], "seconds": s, "split": n}`` or ``{"error": "..."}``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("edgeship.qat_worker")


def split_separable(model: Any, tf_keras: Any) -> tuple[Any, int]:
    """A copy of a functional tf_keras model with every SeparableConv2D replaced by DepthwiseConv2D + 1x1 Conv2D
    (same weights, same function); (model, number split)."""
    seps = [layer for layer in model.layers if type(layer).__name__ == "SeparableConv2D"]
    if not seps:
        return model, 0
    L = tf_keras.layers
    tensors: dict[int, Any] = {}
    inputs = []
    for t in model.inputs:
        new = tf_keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype, name=t.name.split(":")[0])
        tensors[id(t)] = new
        inputs.append(new)
    made: dict[int, Any] = {}
    for depth in sorted(model._nodes_by_depth, reverse=True):  # noqa: SLF001 - deepest (inputs) first
        for node in model._nodes_by_depth[depth]:  # noqa: SLF001
            layer = node.layer
            if type(layer).__name__ == "InputLayer":
                continue
            ins = node.keras_inputs
            args = [tensors[id(t)] for t in ins]
            arg = args[0] if len(args) == 1 else args
            if type(layer).__name__ == "SeparableConv2D":
                if id(layer) not in made:
                    cfg = layer.get_config()
                    dw = L.DepthwiseConv2D(cfg["kernel_size"], strides=cfg["strides"], padding=cfg["padding"],
                                           depth_multiplier=cfg["depth_multiplier"], dilation_rate=cfg["dilation_rate"],
                                           use_bias=False, name=f"{layer.name}_dw")
                    pw = L.Conv2D(cfg["filters"], 1, use_bias=cfg["use_bias"], activation=cfg["activation"],
                                  name=f"{layer.name}_pw")
                    made[id(layer)] = (dw, pw)
                dw, pw = made[id(layer)]
                out = pw(dw(arg))
            else:
                if id(layer) not in made:
                    made[id(layer)] = type(layer).from_config(layer.get_config())
                out = made[id(layer)](arg)
            outs = node.outputs if isinstance(node.outputs, (list, tuple)) else [node.outputs]
            new_outs = out if isinstance(out, (list, tuple)) else [out]
            for a, b in zip(outs, new_outs):
                tensors[id(a)] = b
    outputs = [tensors[id(t)] for t in model.outputs]
    clone = tf_keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs[0] if len(outputs) == 1 else outputs,
                           name=model.name)
    for layer in model.layers:
        w = layer.get_weights()
        if not w:
            continue
        if type(layer).__name__ == "SeparableConv2D":
            clone.get_layer(f"{layer.name}_dw").set_weights([w[0]])
            clone.get_layer(f"{layer.name}_pw").set_weights(w[1:])
        else:
            clone.get_layer(layer.name).set_weights(w)
    return clone, len(seps)


class _Tempered:
    def __init__(self, t: float) -> None:
        self.t = float(t)
        self.__name__ = "tempered_crossentropy"

    def __call__(self, y_true: Any, y_pred: Any) -> Any:
        import tf_keras

        return tf_keras.losses.categorical_crossentropy(y_true, y_pred / self.t, from_logits=True)


def _losses(tf_keras: Any, kinds: list[str], temperature: float) -> list[Any]:
    table = {"probabilities": lambda: tf_keras.losses.CategoricalCrossentropy(),
             "logits": lambda: _Tempered(temperature), "values": lambda: tf_keras.losses.MeanSquaredError()}
    return [table[k]() for k in kinds]


EMA = {"decay": 0.999}  # read by the patched MovingAvgQuantize when a graph is traced


def _patch_range_ema(tfmot_quantizers: Any) -> None:
    """tfmot's activation ranges start at [-6, 6] and follow the batches with a moving average of decay 0.999:
    on a few hundred images (tens of steps) they never leave their start, and the int8 model quantizes every
    activation over [-6, 6]. The decay becomes ours to set: ranges are first set from the calibration images
    (:func:`_warm_ranges`), then follow training with a decay that a short run can move."""
    qo = tfmot_quantizers.quant_ops
    if getattr(qo.MovingAvgQuantize, "_edgeship", False):
        return
    original = qo.MovingAvgQuantize

    def moving_avg_quantize(*args: Any, ema_decay: float = 0.999, **kwargs: Any) -> Any:
        return original(*args, ema_decay=EMA["decay"], **kwargs)

    moving_avg_quantize._edgeship = True  # type: ignore[attr-defined]
    qo.MovingAvgQuantize = moving_avg_quantize


def _warm_ranges(q: Any, x: np.ndarray, batch: int) -> None:
    """Set every activation range from the calibration images: training-mode calls (BatchNorm frozen, no optimizer)
    with a fast-moving average, twice over the images."""
    EMA["decay"] = 0.5
    for _ in range(2):
        for i in range(0, len(x), batch):
            q(x[i:i + batch], training=True)
    EMA["decay"] = 0.9


def run(req: dict[str, Any]) -> dict[str, Any]:
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    t0 = time.monotonic()
    tf_keras.utils.set_random_seed(int(req.get("seed", 0)))
    model = tf_keras.models.load_model(req["model"], compile=False)
    model, split = split_separable(model, tf_keras)
    for layer in model.layers:  # BatchNorm in inference mode: a few hundred images must not re-estimate its statistics
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            layer.trainable = False
    with np.load(req["data"], allow_pickle=False) as d:
        x = d["x"].astype(np.float32)
        targets = [d[f"t{i}"].astype(np.float32) for i in range(len(req["kinds"]))]
    from tensorflow_model_optimization.python.core.quantization.keras import quantizers

    _patch_range_ema(quantizers)
    q = tfmot.quantization.keras.quantize_model(model)
    _warm_ranges(q, x, int(req.get("batch_size", 32)))
    losses = _losses(tf_keras, req["kinds"], float(req.get("temperature", 2.0)))
    single = len(losses) == 1
    bs = max(1, min(int(req.get("batch_size", 32)), len(x)))
    steps = int(req["epochs"]) * -(-len(x) // bs)
    lr = tf_keras.optimizers.schedules.CosineDecay(float(req.get("learning_rate", 1e-4)), steps, alpha=0.05)
    q.compile(optimizer=tf_keras.optimizers.Adam(lr), loss=losses[0] if single else losses,
              loss_weights=None if single else [float(w) for w in req["weights"]])
    history = q.fit(x, targets[0] if single else targets, epochs=int(req["epochs"]), batch_size=bs, shuffle=True,
                    verbose=0)
    q.save(req["saved_model"], include_optimizer=False)
    converter = tf.lite.TFLiteConverter.from_keras_model(q)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]

    def representative() -> Any:
        for s in x[:200]:
            yield [s[None]]

    converter.representative_dataset = representative
    types = {"int8": tf.int8, "uint8": tf.uint8, "float": tf.float32}
    converter.inference_input_type = types[req.get("io", "int8")]
    converter.inference_output_type = types[req.get("out_io") or req.get("io", "int8")]
    data = converter.convert()
    tmp = Path(req["tflite"] + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, req["tflite"])
    return {"losses": [float(v) for v in history.history.get("loss", [])], "seconds": round(time.monotonic() - t0, 2),
            "split": split, "steps": steps}


def main(argv: list[str]) -> int:
    from edgeship.converters.workers import worker_main

    return worker_main(run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
