"""Applying a plan: rebuild the model from its layer configs with fewer channels and sliced weights."""

from __future__ import annotations

import logging

from typing import Any

import numpy as np

from ...errors import ConversionError, InputError
from .records import PrunePlan
from .trace import _Graph, _Step, _functional, _graph_model, _input_name, _is_sequential, _message, _topo_nodes

log = logging.getLogger(__name__)


def _graph_for(model: Any, p: PrunePlan) -> tuple[_Graph, dict[int, np.ndarray]]:
    graph = p._graph if p._graph is not None and p._graph.model is model else _Graph(model, keep_stem=p.keep_stem)
    labels = {name: root for root, name in graph.labels().items()}
    keep: dict[int, np.ndarray] = {}
    for g in p.groups:
        root = labels.get(g.name)
        if root is None or graph.size[root] != g.size:
            raise InputError(f"channel plan for {p.model_name!r} does not fit model {model.name!r}: group {g.name!r} is missing or has another width")
        if len(g.keep) < g.size:
            if graph.reasons.get(root):
                why = "; ".join(graph.reasons[root])
                raise InputError(f"channel plan removes channels of group {g.name!r}, which model {model.name!r} cannot prune: {why}")
            keep[root] = np.asarray(sorted(g.keep), dtype=np.int64)
    return graph, keep


def _clone(step: _Step, graph: _Graph, keep: dict[int, np.ndarray]) -> tuple[Any, list[np.ndarray]]:
    """A new operation from the (rewritten) config of ``step.op``, and the weights it must receive."""
    op = step.op
    weights = [np.asarray(w) for w in op.get_weights()] if hasattr(op, "get_weights") else []
    cfg = op.get_config()
    touched = any(graph.find(g) in keep for layout in (*step.ins, *step.outs) for g in layout.groups)
    if touched and step.kind is not None and step.kind.rewrite is not None:
        names = [v.name for v in op.weights]
        named = dict(zip(names, weights))
        ins = [graph.positions(layout, keep) for layout in step.ins]
        outs = [graph.positions(layout, keep) for layout in step.outs]
        widths = [graph.width(layout) * layout.repeat for layout in step.ins]
        step.kind.rewrite(op, cfg, named, ins, outs, widths)
        weights = [named[n] for n in names]
    try:
        return type(op).from_config(cfg), weights
    except Exception as e:  # noqa: BLE001 - from_config raises TypeError/ValueError...
        if weights:
            raise ConversionError(
                f"channel pruning: layer {op.name!r} ({type(op).__name__}) cannot be rebuilt from its config: {_message(e)}"
            ) from None
        log.info("channel pruning: reusing %r (%s) as is: it cannot be rebuilt from its config", op.name, type(op).__name__)
        return op, []


def _set_weights(old: Any, new: Any, weights: list[np.ndarray]) -> None:
    if new is old or not weights:
        return
    expected = [tuple(w.shape) for w in new.get_weights()]
    if expected != [tuple(w.shape) for w in weights]:
        raise ConversionError(f"channel pruning: layer {old.name!r} expects weights {expected} after surgery, computed {[w.shape for w in weights]}")
    new.set_weights(weights)
    if hasattr(new, "finalize_state") and type(new).__name__ == "Normalization":
        new.finalize_state()


def apply(model: Any, plan: PrunePlan) -> Any:
    """Rebuild ``model`` with the channels ``plan`` keeps: same layers, names and wiring, fewer filters/units."""
    import keras
    from keras import tree

    model = _graph_model(model)
    graph, keep = _graph_for(model, plan)
    fn = graph.fn
    clones: dict[int, tuple[Any, list[np.ndarray]]] = {}
    steps = {id(step.node): step for step in graph.steps}
    new_inputs = [keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=_input_name(t)) for t in fn.inputs]
    order: list[Any] = []
    for node in _topo_nodes(fn):
        if type(node.operation).__name__ == "InputLayer":
            continue
        step = steps[id(node)]
        if id(step.op) not in clones:
            clones[id(step.op)] = _clone(step, graph, keep)
            order.append(step.op)
    try:
        if _is_sequential(model):
            rebuilt = keras.Sequential([new_inputs[0], *[clones[id(op)][0] for op in order]], name=model.name)
        else:
            tensors = {id(t): n for t, n in zip(fn.inputs, new_inputs)}
            for node in _topo_nodes(fn):
                if type(node.operation).__name__ == "InputLayer":
                    continue
                args, kwargs = node.arguments.fill_in(tensors)
                try:
                    outs = clones[id(node.operation)][0](*args, **kwargs)
                except Exception as e:  # noqa: BLE001 - Keras wraps shape errors in many types
                    op = node.operation
                    raise ConversionError(f"channel pruning: layer {op.name!r} ({type(op).__name__}) rejects its pruned inputs: {_message(e)}") from None
                for t, n in zip(node.outputs, tree.flatten(outs)):
                    tensors[id(t)] = n
            outputs = [tensors[id(t)] for t in tree.flatten(fn.outputs)]
            rebuilt = keras.Model(
                tree.pack_sequence_as(fn._inputs_struct, new_inputs),  # noqa: SLF001 - keep the input structure
                tree.pack_sequence_as(fn._outputs_struct, outputs),  # noqa: SLF001
                name=model.name,
            )
    except (ConversionError, InputError):
        raise
    except Exception as e:  # noqa: BLE001 - a layer refusing its new input shape
        raise ConversionError(f"channel pruning: rebuilding {model.name!r} failed: {_message(e)}") from None
    for op in order:
        new, weights = clones[id(op)]
        _set_weights(op, new, weights)
    before = [tuple(t.shape) for t in tree.flatten(fn.outputs)]
    after = [tuple(t.shape) for t in tree.flatten(_functional(rebuilt).outputs)]
    if before != after:
        raise ConversionError(f"channel pruning: rebuilt {model.name!r} has output shapes {after}, expected {before}")
    return rebuilt
