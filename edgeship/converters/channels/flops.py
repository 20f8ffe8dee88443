"""Counting MACs (FLOPs) and parameters, before and after a plan."""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import numpy as np

from ...errors import ConversionError, InputError
from ..keras_io import model_flavor
from .trace import _Graph, _functional, _graph_model, _input_name, _kind_for, _message, _topo_nodes


def _shapes(fn: Any, input_size: Sequence[int] | int | None) -> dict[int, tuple]:
    """Static shape of every tensor in the graph; ``input_size`` fixes the spatial size of dynamic inputs."""
    from keras import tree

    from keras.src.backend import KerasTensor

    nodes = _topo_nodes(fn)
    if input_size is None:
        shapes = {id(t): tuple(t.shape) for node in nodes for t in (*node.input_tensors, *node.outputs)}
        for t in fn.inputs:
            if any(d is None for d in tuple(t.shape)[1:]):
                raise InputError(f"model {fn.name!r} has a dynamic input size {tuple(t.shape)}; pass input_size=(H, W)")
        return shapes
    size = (int(input_size),) if isinstance(input_size, numbers.Integral) else tuple(int(d) for d in input_size)
    specs: dict[int, Any] = {}
    for t in fn.inputs:
        shape = tuple(t.shape)
        if len(size) != len(shape) - 2 or min(size) < 1:
            raise InputError(f"input_size {size} does not fit input {_input_name(t)!r} of shape {shape}; expected {len(shape) - 2} positive sizes")
        if any(d is not None and d != s for d, s in zip(shape[1:-1], size)):
            raise InputError(f"input_size {size} differs from the static input shape {shape} of model {fn.name!r}")
        specs[id(t)] = KerasTensor((None, *size, shape[-1]), dtype=t.dtype)
    for node in nodes:
        if node.is_input or type(node.operation).__name__ == "InputLayer":
            continue
        args, kwargs = node.arguments.fill_in(specs)
        try:
            out = node.operation.compute_output_spec(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - shape inference raises many types
            raise ConversionError(f"layer {node.operation.name!r} cannot infer its shape at input_size {size}: {_message(e)}") from None
        for t, spec in zip(node.outputs, tree.flatten(out)):
            specs[id(t)] = spec
    return {k: tuple(v.shape) for k, v in specs.items()}


def _shapes_or_none(graph: _Graph) -> dict[int, tuple] | None:
    try:
        return _shapes(graph.fn, None)
    except InputError:
        return None


def _macs_of(op: Any, s_in: tuple, s_out: tuple, cin: int, cout: int, input_size: Any = None) -> int:
    kind = _kind_for(op)
    if kind is not None and kind.macs is not None:
        if any(d is None for d in (*s_in[1:], *s_out[1:])):
            raise InputError(f"layer {op.name!r} has a dynamic shape {s_in} -> {s_out}; pass input_size=(H, W)")
        return int(kind.macs(op, s_in, s_out, cin, cout))
    import keras

    if isinstance(op, keras.Model) and model_flavor(op) == "keras":
        return count_flops(op) // 2 if all(d is not None for d in s_in[1:]) else 0
    return 0


def _planned_flops(graph: _Graph, shapes: dict[int, tuple], keep: dict[int, np.ndarray]) -> int:
    macs = 0
    for step in graph.steps:
        node = step.node
        if not node.input_tensors or not node.outputs:
            continue
        s_in, s_out = shapes[id(node.input_tensors[0])], shapes[id(node.outputs[0])]
        cin = len(graph.positions(step.ins[0], keep)) if step.ins else 0
        cout = len(graph.positions(step.outs[0], keep)) if step.outs else 0
        macs += _macs_of(step.op, s_in, s_out, cin, cout)
    return 2 * macs


def count_flops(model: Any, input_size: Sequence[int] | int | None = None) -> int:
    """FLOPs (2 x multiply-accumulates) of the Conv/Dense/Depthwise/Separable/ConvTranspose layers for one sample.

    The model's static input size is used; ``input_size`` (``(H, W)``) is required for dynamic-size models.
    """
    model = _graph_model(model)
    fn = _functional(model)
    shapes = _shapes(fn, input_size)
    macs = 0
    for node in _topo_nodes(fn):
        op = node.operation
        if type(op).__name__ == "InputLayer" or not node.input_tensors or not node.outputs:
            continue
        s_in, s_out = shapes[id(node.input_tensors[0])], shapes[id(node.outputs[0])]
        macs += _macs_of(op, s_in, s_out, int(s_in[-1] or 0), int(s_out[-1] or 0))
    return 2 * macs


def count_params(model: Any) -> int:
    """Number of weights (trainable and not) of a Keras model."""
    return int(_graph_model(model).count_params())
