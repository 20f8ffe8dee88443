"""Load Keras models from any of their file forms, run them, and export them as SavedModel.

Three flavors of model reach the converters:

* ``"keras"``: a Keras 3 model (``.keras`` file or in-memory object),
* ``"tf_keras"``: a Keras 2 model from tf_keras (legacy ``.h5``, a tf_keras SavedModel, or in memory),
* ``"saved_model"``: a plain SavedModel folder (e.g. from Keras 3 ``model.export``), wrapped in
  :class:`SavedModelGraph` so that it has an ``input_shape`` and can be run like a model.

tf_keras is imported directly (``import tf_keras``), which does not flip TF_USE_LEGACY_KERAS.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConversionError, ModelError, SpecError
from ..formats.tensors import output_sort_key

log = logging.getLogger(__name__)

FLAVORS = ("keras", "tf_keras", "saved_model")
_KERAS_SUFFIXES = (".keras",)
_H5_SUFFIXES = (".h5", ".hdf5")


class SavedModelGraph:
    """A SavedModel folder's ``serving_default`` signature, usable like a single-input model."""

    def __init__(self, path: str | os.PathLike):
        import tensorflow as tf

        self.path = Path(path)
        try:
            self._loaded = tf.saved_model.load(str(self.path))
        except Exception as e:  # noqa: BLE001 - TF raises many unrelated types for a bad folder
            raise ModelError(f"cannot load SavedModel {self.path}: {_first_line(e)}") from None
        sig = self._loaded.signatures.get("serving_default")
        if sig is None:
            raise ModelError(f"SavedModel {self.path} has no 'serving_default' signature; found {list(self._loaded.signatures)}")
        self._fn = sig
        specs = sig.structured_input_signature[1]
        if len(specs) != 1:
            raise ModelError(f"SavedModel {self.path} has {len(specs)} inputs ({sorted(specs)}); edgeship converts single-image-input models")
        self.input_name, spec = next(iter(specs.items()))
        self.input_shape = tuple(None if d is None else int(d) for d in spec.shape.as_list())
        self.output_keys = sorted(sig.structured_outputs, key=output_sort_key)
        self.output_shape = [tuple(sig.structured_outputs[k].shape.as_list()) for k in self.output_keys]
        self.name = self.path.name
        self.layers: list[Any] = []

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        import tensorflow as tf

        out = self._fn(**{self.input_name: tf.constant(x, dtype=tf.float32)})
        return [np.asarray(out[k]) for k in self.output_keys]


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


# ---- loading ---------------------------------------------------------------------------------------
def load_keras_model(path_or_model: Any) -> Any:
    """Return a model object for a path (``.keras``, ``.h5``, SavedModel folder) or pass a model through."""
    if not isinstance(path_or_model, (str, os.PathLike)):
        model_flavor(path_or_model)  # raises for objects that are not models
        return path_or_model
    path = Path(path_or_model)
    if not path.exists():
        raise ModelError(f"model {path} does not exist")
    if path.is_dir():
        return _load_saved_model_dir(path)
    suffix = path.suffix.lower()
    if suffix in _KERAS_SUFFIXES:
        return _load_with(path, ("keras", "tf_keras"))
    if suffix in _H5_SUFFIXES:
        return _load_with(path, ("tf_keras", "keras"))
    raise ModelError(f"model {path}: expected a Keras 3 .keras file, a tf_keras .h5 or a SavedModel folder, found suffix {suffix or '(none)'!r}")


def _load_with(path: Path, order: Sequence[str]) -> Any:
    errors = []
    for flavor in order:
        try:
            module = _keras_module(flavor)
            return module.models.load_model(str(path), compile=False)
        except Exception as e:  # noqa: BLE001 - Keras raises ValueError/OSError/KeyError/TypeError...
            errors.append(f"{flavor}: {_first_line(e)}")
    raise ModelError(
        f"cannot load model {path}: expected a Keras 3 .keras file or a tf_keras .h5 ({'; '.join(errors)})"
    )


def _load_saved_model_dir(path: Path) -> Any:
    if not (path / "saved_model.pb").exists():
        raise ModelError(f"model folder {path} is not a SavedModel: expected {path / 'saved_model.pb'}")
    if (path / "keras_metadata.pb").exists():
        try:
            return _keras_module("tf_keras").models.load_model(str(path), compile=False)
        except Exception as e:  # noqa: BLE001
            log.info("tf_keras could not rebuild %s (%s); using its serving signature", path, _first_line(e))
    return SavedModelGraph(path)


def _keras_module(flavor: str):
    if flavor == "keras":
        import keras

        return keras
    import tf_keras

    return tf_keras


def model_flavor(model: Any) -> str:
    """``"keras"`` (Keras 3), ``"tf_keras"`` (Keras 2) or ``"saved_model"`` for a :class:`SavedModelGraph`."""
    if isinstance(model, SavedModelGraph):
        return "saved_model"
    for cls in type(model).__mro__:
        root = cls.__module__.split(".")[0]
        if cls.__name__ in ("Model", "Functional", "Sequential") and root in ("keras", "tf_keras"):
            return "keras" if root == "keras" else "tf_keras"
    raise ModelError(f"expected a Keras model (Keras 3 or tf_keras), got {type(model).__module__}.{type(model).__name__}")


def is_graph_model(model: Any) -> bool:
    """True for Functional and Sequential models (whose layer graph can be read and rebuilt)."""
    return bool({"Functional", "Sequential"} & {c.__name__ for c in type(model).__mro__})


def check_graph_model(model: Any, fmt: str) -> None:
    """Raise a one-line ConversionError for a subclassed model (no layer graph to convert)."""
    if model_flavor(model) != "saved_model" and not is_graph_model(model):
        raise ConversionError(
            f"{fmt}: model {getattr(model, 'name', '?')!r} is a subclassed {type(model).__name__}; "
            "expected a Functional or Sequential Keras model (rebuild it with the functional API)"
        )


# ---- shapes and inference ------------------------------------------------------------------------------
def input_shape(model: Any) -> tuple[int | None, ...]:
    """The single image input shape, batch included, e.g. ``(None, 224, 224, 3)``."""
    shape = model.input_shape
    if isinstance(shape, list):
        if len(shape) != 1:
            raise ConversionError(f"model {getattr(model, 'name', '?')!r} has {len(shape)} inputs; edgeship converts single-image-input models")
        shape = shape[0]
    return tuple(None if d is None else int(d) for d in shape)


def check_takes(model: Any, sample_shape: Sequence[int], *, model_name: str, data_name: str) -> None:
    """Refuse samples the model cannot take (another model's calibration set or reference), in one line."""
    want = input_shape(model)[1:]
    got = tuple(int(d) for d in sample_shape)
    if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want, got)):
        shown = "(" + ", ".join("?" if w is None else str(w) for w in want) + ")"
        raise SpecError(f"{model_name} takes inputs of shape {shown} but {data_name} holds samples of shape {got}: "
                        "they belong to different models")


def predict(model: Any, x: np.ndarray, *, batch_size: int = 64) -> list[np.ndarray]:
    """Run the model in inference mode; always a list of float32 outputs (model order)."""
    outs: list[list[np.ndarray]] = []
    for i in range(0, len(x), batch_size):
        xb = np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32)
        y = model(xb) if isinstance(model, SavedModelGraph) else model(xb, training=False)
        y = list(y.values()) if isinstance(y, dict) else (list(y) if isinstance(y, (list, tuple)) else [y])
        outs.append([np.asarray(t, dtype=np.float32) for t in y])
    if not outs:
        raise ConversionError("predict needs at least one sample")
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


def blame_layer(model: Any, message: str) -> tuple[str, str] | None:
    """Find the layer a converter error message is about: ``(name, class)`` or None."""
    best = None
    for layer in getattr(model, "layers", []):
        pattern = rf"(^|[/;\s'\"(]){re.escape(layer.name)}(_\d+)?(/|\b)"
        if re.search(pattern, message):
            if best is None or len(layer.name) > len(best[0]):
                best = (layer.name, type(layer).__name__)
    return best


# ---- export ----------------------------------------------------------------------------------------------
def export_saved_model(model: Any, out_dir: str | os.PathLike, *, sample_shape: Sequence[int] | None = None) -> Path:
    """Export a model as a SavedModel with one ``serving_default`` signature.

    The input has a dynamic batch and the spatial shape ``sample_shape`` (default: the model's);
    outputs are named ``output_0``, ``output_1``... in the model's output order. A
    :class:`SavedModelGraph` is already a SavedModel and its folder is returned as is.
    """
    out_dir = Path(out_dir)
    flavor = model_flavor(model)
    shape = tuple(sample_shape) if sample_shape is not None else input_shape(model)[1:]
    if any(d is None for d in shape):
        raise ConversionError(f"model {getattr(model, 'name', '?')!r} has a dynamic input size {shape}; pass --input-size HxW")
    if flavor == "saved_model":
        if tuple(model.input_shape[1:]) != tuple(shape) and any(d is not None for d in model.input_shape[1:]):
            raise ConversionError(f"SavedModel {model.path} has input shape {model.input_shape}, expected (None, {', '.join(map(str, shape))})")
        return model.path
    check_graph_model(model, "SavedModel")
    try:
        (_export_keras3 if flavor == "keras" else _export_tf_keras)(model, out_dir, shape)
    except ConversionError:
        raise
    except Exception as e:  # noqa: BLE001 - tracing errors come as many types
        blamed = blame_layer(model, str(e))
        where = f"layer {blamed[0]!r} ({blamed[1]})" if blamed else f"model {getattr(model, 'name', '?')!r}"
        raise ConversionError(f"SavedModel export: {where} cannot be traced: {_first_line(e)}") from None
    return out_dir


def _input_name(model: Any) -> str:
    name = getattr(model.inputs[0], "name", "input") if getattr(model, "inputs", None) else "input"
    name = re.sub(r"[^A-Za-z0-9_]", "_", name.split(":")[0]) or "input"
    return name if name[0].isalpha() else f"input_{name}"


def _serving_fn(model: Any, shape: Sequence[int]):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((None, *shape), tf.float32, name=_input_name(model))])
    def serve(x):
        y = model(x, training=False)
        y = list(y.values()) if isinstance(y, dict) else (list(y) if isinstance(y, (list, tuple)) else [y])
        return {f"output_{i}": t for i, t in enumerate(y)}

    return serve


def _export_keras3(model: Any, out_dir: Path, shape: Sequence[int]) -> None:
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    serve = _serving_fn(model, shape)
    archive.add_endpoint("serve", serve, input_signature=serve.input_signature)
    archive.write_out(str(out_dir), verbose=False)


def _export_tf_keras(model: Any, out_dir: Path, shape: Sequence[int]) -> None:
    import tensorflow as tf

    # a plain tf.Module holding the variables: saving the tf_keras model itself would trace every layer
    module = tf.Module()
    module.variables_ = list(model.variables)
    module.serve = _serving_fn(model, shape)
    tf.saved_model.save(module, str(out_dir), signatures={"serving_default": module.serve.get_concrete_function()})
