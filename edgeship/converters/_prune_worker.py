"""Pruning worker: ``python -m edgeship.converters._prune_worker REQUEST.json``.

Runs in its own process because importing tensorflow-model-optimization switches the whole
process to legacy Keras (TF_USE_LEGACY_KERAS=1). Reads a tf_keras ``.h5`` and the samples in the
request's ``.npz``, wraps every prunable layer with ``prune_low_magnitude``, runs the schedule
(one-shot: a few training-mode calls without an optimizer, BatchNorm frozen, so the kept weights do not change; fine-tune:
Adam on the labelled samples), strips the wrappers, measures the sparsity of every pruned weight
and writes the stripped ``.h5`` and a result JSON (``{"layers": ..., "overall": ...}`` or
``{"error": ...}``). The parent (:mod:`edgeship.converters.prune`) checks the numbers.
"""

from __future__ import annotations

import logging
import math
import sys
from typing import Any

import numpy as np

log = logging.getLogger("edgeship.prune_worker")


def _schedule(tfmot: Any, req: dict[str, Any], total_steps: int) -> tuple[Any, dict[str, Any]]:
    target = float(req["sparsity"])
    freq = int(req.get("frequency") or max(1, min(100, total_steps // 10)))
    if req["schedule"] == "polynomial" and total_steps >= 2:
        end = max(1, ((total_steps - 1) // freq) * freq) if req.get("frequency") is None else max(1, total_steps - 1)
        sched = tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0, final_sparsity=target, begin_step=0, end_step=end, frequency=freq
        )
        return sched, {"kind": "polynomial", "begin_step": 0, "end_step": end, "frequency": freq}
    sched = tfmot.sparsity.keras.ConstantSparsity(target, begin_step=0, frequency=freq)
    return sched, {"kind": "constant", "begin_step": 0, "end_step": -1, "frequency": freq}


def _wrap(tfmot: Any, tf_keras: Any, model: Any, sched: Any) -> tuple[Any, dict[str, list[str]]]:
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    prunable: dict[str, list[str]] = {}

    def clone(layer: Any) -> Any:
        # which weights tfmot prunes per layer class (DepthwiseConv2D: none, by tfmot's choice)
        w = prune_registry.PruneRegistry._LAYERS_WEIGHTS_MAP.get(layer.__class__)  # noqa: SLF001
        if w:
            prunable[layer.name] = list(w)
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=sched)
        return layer

    # clone_function returns the original layer objects (wrapped or not): their weights are kept
    return tf_keras.models.clone_model(model, clone_function=clone), prunable


def measure_sparsity(model: Any, prunable: dict[str, list[str]]) -> dict[str, Any]:
    """Zero fraction of every pruned weight: ``{"layers": {name: {...}}, "overall": f, "weights": n}``."""
    layers: dict[str, Any] = {}
    zeros = total = 0
    for name, attrs in prunable.items():
        layer = model.get_layer(name)
        arrays = [np.asarray(getattr(layer, a).numpy()) for a in attrs]
        z = int(sum(int(np.sum(a == 0)) for a in arrays))
        n = int(sum(a.size for a in arrays))
        layers[name] = {"class": type(layer).__name__, "weights": n, "zeros": z, "sparsity": z / n if n else 0.0}
        zeros += z
        total += n
    return {"layers": layers, "overall": zeros / total if total else 0.0, "weights": total, "zeros": zeros}


def run(req: dict[str, Any]) -> dict[str, Any]:
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    tf_keras.utils.set_random_seed(int(req.get("seed", 0)))
    model = tf_keras.models.load_model(req["model"], compile=False)
    with np.load(req["data"], allow_pickle=False) as d:
        x = d["x"].astype(np.float32)
        y = d["y"] if "y" in d.files else None
    finetune = req["mode"] == "finetune"
    bs = max(1, min(int(req.get("batch_size", 32)), len(x)))
    if finetune:
        total = math.ceil(len(x) / bs) * int(req["epochs"])
    else:
        for layer in model.layers:  # frozen BatchNorm runs in inference mode: statistics unchanged
            if isinstance(layer, tf_keras.layers.BatchNormalization):
                layer.trainable = False
        # a few steps on one small batch: enough for the schedule to set every mask
        bs = min(bs, 8)
        total = int(req.get("oneshot_steps") or (4 if req["schedule"] == "polynomial" else 2))
        x = x[:bs]
    sched, sched_info = _schedule(tfmot, req, total)
    wrapped, prunable = _wrap(tfmot, tf_keras, model, sched)
    if not prunable:
        raise ValueError("the model has no layer tfmot can prune (Conv, DepthwiseConv, Dense...)")
    step_callback = tfmot.sparsity.keras.UpdatePruningStep()
    if finetune:
        opt = tf_keras.optimizers.Adam(float(req.get("learning_rate", 5e-4)))
        loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=bool(req.get("from_logits", False)))
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).batch(bs)
        wrapped.compile(optimizer=opt, loss=loss)
        wrapped.fit(ds, epochs=int(req["epochs"]), verbose=0, callbacks=[step_callback])
    else:
        # eager training-mode calls step the schedule and set the masks; no optimizer touches a weight
        step_callback.set_model(wrapped)
        step_callback.on_train_begin()
        xb = tf.constant(x)
        for _ in range(total):
            wrapped(xb, training=True)
        step_callback.on_epoch_end(0)
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
    for layer in stripped.layers:
        layer.trainable = True
    stripped.save(req["out"], include_optimizer=False)
    result = measure_sparsity(stripped, prunable)
    result.update(schedule=sched_info, steps=total, mode=req["mode"])
    return result


def main(argv: list[str]) -> int:
    from edgeship.converters.workers import worker_main

    return worker_main(run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
