"""Keras 3 -> tf_keras (Keras 2): rebuild the layer graph, copy the weights, prove it exact.

tfmot prunes only tf_keras models and tf_keras cannot read a Keras 3 file, so a Keras 3 model
is rebuilt layer by layer: each layer's config is translated (Keras 3 dtype policies become dtype
names; Keras-3-only options must be at their defaults) and the layer is re-created from the
tf_keras registry; the functional graph is replayed node by node; weights are copied in order.
:func:`check_bridge` then runs both models on the calibration data and requires every output to
agree within ``atol`` (1e-5): pruning starts from a provably identical model or not at all.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import numpy as np

from ..errors import ConversionError
from .keras_io import is_graph_model, model_flavor, predict

log = logging.getLogger(__name__)

BRIDGE_ATOL = 1e-5
# Keras 3 config keys that have no tf_keras equivalent, with the value that means "unused".
_KERAS3_ONLY_DEFAULTS: dict[str, Any] = {
    "lora_rank": None,
    "lora_alpha": None,
    "quantization_config": None,
    "synchronized": False,
    "optional": False,
}
# kwargs every tf_keras Layer accepts besides its own __init__ arguments
_BASE_KWARGS = {"name", "trainable", "dtype", "dynamic", "input_dim", "input_shape", "batch_input_shape", "batch_size", "weights", "activity_regularizer", "autocast", "implementation"}


def to_tf_keras(model: Any) -> Any:
    """Return a tf_keras copy of a Keras 3 Functional or Sequential model (weights included)."""
    if model_flavor(model) != "keras":
        raise ConversionError(f"bridge: expected a Keras 3 model, got a {model_flavor(model)} model")
    if not is_graph_model(model):
        raise ConversionError(
            f"prune: model {model.name!r} is a subclassed {type(model).__name__}; expected a Functional or Sequential model"
        )
    import tf_keras

    if type(model).__name__ == "Sequential" or "Sequential" in {c.__name__ for c in type(model).__mro__}:
        clone = _rebuild_sequential(model, tf_keras)
    else:
        clone = _rebuild_functional(model, tf_keras)
    _copy_weights(model, clone)
    return clone


def check_bridge(original: Any, bridged: Any, x: np.ndarray, *, atol: float = BRIDGE_ATOL) -> float:
    """Max abs difference of all outputs on ``x``; ConversionError when above ``atol``."""
    a = predict(original, x)
    b = predict(bridged, x)
    if len(a) != len(b):
        raise ConversionError(f"bridge: the tf_keras copy has {len(b)} outputs, the Keras 3 model {len(a)}")
    diff = max(float(np.max(np.abs(p - q))) if p.size else 0.0 for p, q in zip(a, b))
    if not diff <= atol:
        raise ConversionError(
            f"bridge: the tf_keras copy of {original.name!r} differs from the Keras 3 model by {diff:.3g} "
            f"(allowed {atol:g}) on {len(x)} calibration samples; refusing to prune a different model"
        )
    log.info("bridge exact: max abs diff %.3g on %d samples", diff, len(x))
    return diff


# ---- layers ------------------------------------------------------------------------------------------------
def _layer_config(layer: Any, tf_cls: Any) -> dict[str, Any]:
    cfg = dict(layer.get_config())
    dtype = cfg.get("dtype")
    if isinstance(dtype, dict):
        inner = dtype.get("config", {})
        cfg["dtype"] = inner.get("name", "float32")
        if cfg["dtype"] not in ("float32", None):
            raise ConversionError(f"prune: layer {layer.name!r} ({type(layer).__name__}) uses dtype policy {cfg['dtype']}; expected float32")
    allowed = set(_BASE_KWARGS)
    for cls in tf_cls.__mro__:  # subclasses forward **kwargs to their bases (BatchNormalization)
        if "__init__" in vars(cls):
            allowed |= set(inspect.signature(cls.__init__).parameters)
    for key in [k for k in cfg if k not in allowed]:
        value = cfg.pop(key)
        if _KERAS3_ONLY_DEFAULTS.get(key, None) == value or value is None or value is False:
            continue  # a Keras-3-only option left at its "off" value
        raise ConversionError(
            f"prune: layer {layer.name!r} ({type(layer).__name__}) sets the Keras 3 option {key}={value!r}, "
            "which tf_keras (needed by tfmot) does not have"
        )
    for key in [k for k in cfg if k.endswith("_initializer")]:
        cfg.pop(key)  # weights are copied; initializers are never used and differ between versions
    return cfg


def _convert_layer(layer: Any, tf_keras: Any) -> Any:
    cls_name = type(layer).__name__
    tf_cls = getattr(tf_keras.layers, cls_name, None)
    if tf_cls is None or type(layer).__module__.split(".")[0] != "keras":
        raise ConversionError(
            f"prune: layer {layer.name!r} ({type(layer).__module__}.{cls_name}) has no tf_keras equivalent; "
            "tfmot needs every layer to exist in tf_keras"
        )
    try:
        return tf_cls.from_config(_layer_config(layer, tf_cls))
    except ConversionError:
        raise
    except Exception as e:  # noqa: BLE001 - from_config raises TypeError/ValueError
        raise ConversionError(f"prune: layer {layer.name!r} ({cls_name}) cannot be rebuilt in tf_keras: {e}") from None


def _rebuild_sequential(model: Any, tf_keras: Any) -> Any:
    shape = tuple(model.input_shape[1:])
    layers = [tf_keras.layers.Input(shape, name=getattr(model.inputs[0], "name", None) if model.inputs else None)]
    layers += [_convert_layer(layer, tf_keras) for layer in model.layers if type(layer).__name__ != "InputLayer"]
    return tf_keras.Sequential(layers, name=model.name)


def _rebuild_functional(model: Any, tf_keras: Any) -> Any:
    from keras import tree

    tensors: dict[int, Any] = {}
    inputs = []
    for t in model.inputs:
        tf_in = tf_keras.Input(shape=tuple(t.shape[1:]), name=t.name, dtype=t.dtype)
        tensors[id(t)] = tf_in
        inputs.append(tf_in)
    converted: dict[int, Any] = {}
    depths = sorted(model._nodes_by_depth, reverse=True)  # noqa: SLF001 - the functional graph, deepest first
    for depth in depths:
        for node in model._nodes_by_depth[depth]:  # noqa: SLF001
            op = node.operation
            if type(op).__name__ == "InputLayer":
                continue
            if id(op) not in converted:
                converted[id(op)] = _convert_layer(op, tf_keras)

            def lookup(x: Any) -> Any:
                if hasattr(x, "_keras_history"):
                    if id(x) not in tensors:
                        raise ConversionError(f"prune: layer {op.name!r} reads a tensor outside the model graph")
                    return tensors[id(x)]
                return x

            args = tree.map_structure(lookup, list(node.arguments.args))
            kwargs = tree.map_structure(lookup, dict(node.arguments.kwargs))
            outs = converted[id(op)](*args, **kwargs)
            for k_out, tf_out in zip(tree.flatten(node.outputs), tree.flatten(outs)):
                tensors[id(k_out)] = tf_out
    outputs = [tensors[id(t)] for t in tree.flatten(model.outputs)]
    return tf_keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs[0] if len(outputs) == 1 else outputs, name=model.name)


def _copy_weights(src: Any, dst: Any) -> None:
    by_name = {layer.name: layer for layer in dst.layers}
    for layer in src.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        target = by_name.get(layer.name)
        if target is None:
            raise ConversionError(f"prune: layer {layer.name!r} is missing from the tf_keras copy")
        shapes = [w.shape for w in target.get_weights()]
        if shapes != [w.shape for w in weights]:
            raise ConversionError(
                f"prune: layer {layer.name!r} weight shapes differ between Keras 3 {[w.shape for w in weights]} and tf_keras {shapes}"
            )
        target.set_weights(weights)
