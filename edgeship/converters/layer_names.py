"""Which Keras layer a node of a converted graph came from, so that a per-layer report names the layer in
the user's own code (``conv2``), not the converter's node (``Add_2/fq_output_0``).

- TFLite keeps TensorFlow's op names (``digits_cnn_1/conv2_1/Relu``): the Keras layer is the path
  component that, without the ``_N`` suffix Keras adds per call, is a layer of the model.
- OpenVINO renames most nodes it fuses (``Convolution_2``); the weights stay. A compute node's weight
  constant in the FP32 IR holds the same numbers as the layer's kernel (in another layout), so the
  sorted values are a fingerprint that finds the layer; a tensor's layer is the compute node upstream
  of it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np

KERNELS = ("kernel", "depthwise_kernel", "pointwise_kernel")  # the weights a compute node multiplies by
OV_COMPUTE = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData", "MatMul")
_PASS = ("Convert", "Reshape", "Transpose", "Squeeze", "Unsqueeze")  # between a weight constant and its compute node


def fingerprint(values: Any) -> str:
    """A layout-free digest of a weight tensor: its values, sorted."""
    a = np.sort(np.asarray(values, dtype=np.float32).ravel())
    return hashlib.sha1(a.tobytes()).hexdigest()


def keras_kernels(model: Any) -> dict[str, str]:
    """Fingerprint of every kernel of a Keras model -> the layer's name."""
    out: dict[str, str] = {}
    for layer in getattr(model, "layers", []):
        for w in getattr(layer, "weights", []):
            base = str(getattr(w, "path", None) or w.name).rsplit("/", 1)[-1].split(":")[0]
            if base in KERNELS:
                out[fingerprint(np.asarray(w))] = layer.name
    return out


def tflite_layer(name: str, layers: set[str]) -> str:
    """The Keras layer in a TensorFlow op name (``functional_1/spread_1/BiasAdd`` -> ``spread``), or ""."""
    for part in reversed(name.split("/")):
        for candidate in (part, re.sub(r"_\d+$", "", part)):
            if candidate in layers:
                return candidate
    return ""


def _weight_constant(node: Any) -> Any:
    """The Constant feeding a compute node's weights (input 1), through layout-only ops."""
    src = node.input(1).get_source_output().get_node()
    while src.get_type_name() in _PASS:
        src = src.input(0).get_source_output().get_node()
    return src if src.get_type_name() == "Constant" else None


def ov_compute_layers(fp32_model: Any, keras_model: Any) -> dict[str, str]:
    """OpenVINO compute node name (in the FP32 IR) -> the Keras layer whose kernel it multiplies by."""
    kernels = keras_kernels(keras_model)
    out: dict[str, str] = {}
    for op in fp32_model.get_ordered_ops():
        if op.get_type_name() not in OV_COMPUTE:
            continue
        const = _weight_constant(op)
        if const is None:
            continue
        layer = kernels.get(fingerprint(const.get_data()))
        if layer:
            out[op.get_friendly_name()] = layer
    return out


def ov_upstream_compute(model: Any, node_name: str) -> str:
    """The compute node whose output reaches ``node_name`` through non-compute ops (bias, activation, pooling)."""
    ops = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    node = ops.get(node_name)
    while node is not None and node.get_type_name() not in OV_COMPUTE:
        if node.get_type_name() in ("Parameter", "Constant") or not node.inputs():
            return ""
        node = node.input(0).get_source_output().get_node()
    return node.get_friendly_name() if node is not None else ""
