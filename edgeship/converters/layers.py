"""Per-layer quantization error: which tensors int8 damages, and what to keep in float to spare them.

Both formats quantize activations per tensor. The error measure is the mean per-channel
noise-to-signal ratio of each quantized activation tensor against its float value
(:func:`edgeship.converters.metrics.channel_noise_ratio`): near 0 for a healthy tensor, near 1 when
a quantizer rounds most channels away (one channel dominating the range). It is local to the
quantizer, so the culprit ranks first rather than everything downstream of it.

* TFLite: ``tf.lite.experimental.QuantizationDebugger`` compares every quantized op's output
  with the float op run on the same (dequantized) inputs. The model is calibrated once; each
  candidate with ``denylisted_nodes`` is re-quantized from that calibration in milliseconds.
* OpenVINO: the INT8 IR's activation ``FakeQuantize`` nodes are probed (their input is the float
  tensor, their output its quantized value). Per compute layer, outputs are also compared with
  the FP32 model.

A tensor stays in float only if its producer and every consumer up to the next compute layer
(conv, dense, matmul) run in float: :attr:`LayerError.keep_float` lists those nodes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..formats.openvino import import_openvino
from .metrics import channel_ratio_from_energy, sqnr_db

log = logging.getLogger(__name__)

TFLITE_COMPUTE = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL", "CONV_3D"}
TFLITE_QDQ = {"QUANTIZE", "DEQUANTIZE"}
OV_COMPUTE = {"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData", "GroupConvolutionBackpropData"}
_SKIP_TYPES = {"FakeQuantize", "Constant", "Convert", "Parameter", "Result"}


@dataclass
class LayerError:
    """Quantization error of one activation tensor."""

    name: str  # TFLite: the tensor (= its producer's output name); OpenVINO: the FakeQuantize node
    op: str  # type of the op producing the tensor
    error: float  # mean per-channel noise/signal of the quantized tensor (0 exact, ~1 lost)
    sqnr_db: float  # tensor-wide SQNR of the quantized tensor against its float value
    consumers: list[str] = field(default_factory=list)  # compute layers reading the tensor
    keep_float: list[str] = field(default_factory=list)  # nodes to keep in float to spare the tensor
    scale: float | None = None
    fp32_sqnr_db: float | None = None  # OpenVINO: first consumer's output vs the FP32 model (cumulative)
    order: int = 0  # position of the producer in the graph (topological)
    producer: str = ""  # node producing the tensor (OpenVINO: the quantizer's input node)
    layer: str = ""  # the Keras layer the tensor comes out of (edgeship.converters.layer_names), "" when unknown

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("error", "sqnr_db", "fp32_sqnr_db"):
            if isinstance(d[k], float) and not math.isfinite(d[k]):
                d[k] = None if math.isnan(d[k]) else (999.0 if d[k] > 0 else -999.0)
        return d


SEVERE = 0.5  # tensors within this factor of the worst error count as severely damaged


def prioritise(errors: Iterable[LayerError]) -> list[LayerError]:
    """Culprits first: severely damaged tensors in graph order, then the rest by error; NaN last.

    Damage upstream makes every tensor downstream look damaged too (their float reference is
    computed from damaged inputs), so among the severe ones the earliest is the likely cause.
    """
    errors = list(errors)
    finite = [e for e in errors if math.isfinite(e.error)]
    if not finite:
        return errors
    top = max(e.error for e in finite)
    severe = sorted((e for e in finite if top > 0 and e.error >= SEVERE * top), key=lambda e: e.order)
    rest = sorted((e for e in finite if e not in severe), key=lambda e: (-e.error, e.sqnr_db))
    return severe + rest + [e for e in errors if not math.isfinite(e.error)]


class _Accumulator:
    """Sums per-channel signal and noise energy of one tensor over samples."""

    def __init__(self) -> None:
        self.signal: np.ndarray | None = None
        self.noise: np.ndarray | None = None
        self.total_signal = 0.0
        self.total_noise = 0.0

    def add(self, ref: np.ndarray, test: np.ndarray, axis: int) -> None:
        r = np.moveaxis(np.asarray(ref, np.float64), axis, -1)
        t = np.moveaxis(np.asarray(test, np.float64), axis, -1)
        c = r.shape[-1] if r.ndim else 1
        r, t = r.reshape(-1, c), t.reshape(-1, c)
        s, n = (r**2).sum(0), ((r - t) ** 2).sum(0)
        self.signal = s if self.signal is None else self.signal + s
        self.noise = n if self.noise is None else self.noise + n
        self.total_signal += float(s.sum())
        self.total_noise += float(n.sum())

    def ratio(self) -> float:
        return math.nan if self.signal is None else channel_ratio_from_energy(self.signal, self.noise)

    def sqnr(self) -> float:
        if self.total_noise == 0.0:
            return math.inf
        return 10.0 * math.log10(self.total_signal / self.total_noise) if self.total_signal > 0 else -math.inf


# ---- TFLite ------------------------------------------------------------------------------------
class TFLiteProbe:
    """Calibrate a SavedModel once; rank its int8 tensors and re-quantize with any denylist.

    ``x`` are calibration samples (N, *sample_shape); ``limit`` of them feed the debugger; ``ranges`` sets the
    activation ranges as :func:`edgeship.converters.tflite.to_tflite` does.
    :meth:`quantize` produces exactly what :func:`edgeship.converters.tflite.to_tflite` writes for
    the same denylist (same calibration, same MLIR quantizer call), without calibrating again.
    """

    def __init__(self, saved_model_dir: str | Path, x: np.ndarray, *, io: str = "int8", limit: int = 100,
                 denylisted_ops: Sequence[str] = (), out_io: str | None = None, ranges: str = "minmax") -> None:
        import tensorflow as tf

        self._tf = tf
        self.io, self.out_io = io, out_io or io
        self.denylisted_ops = list(denylisted_ops)
        samples = np.ascontiguousarray(x, dtype=np.float32)
        self._debug = samples[:limit]

        def calib() -> Iterable[list[np.ndarray]]:
            for s in samples:
                yield [s[None]]

        def debug_data() -> Iterable[list[np.ndarray]]:
            for s in self._debug:
                yield [s[None]]

        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = calib
        self._options = lambda nodes: tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=list(nodes) or None, denylisted_ops=self.denylisted_ops or None,
        )
        self.debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=debug_data, debug_options=self._options(()))
        if ranges != "minmax":  # the artifact's own activation ranges (to_tflite(ranges=...)), not the converter's
            from .tflite import set_ranges

            self.debugger.calibrated_model, _ = set_ranges(self.debugger.calibrated_model, samples, ranges, io=io,
                                                           out_io=self.out_io, ops=self.denylisted_ops)
            self.debugger.options = self._options(())
        self._graph = _tflite_graph(self.quantize(()))

    @property
    def calibrated(self) -> bytes:
        """The calibrated (still float) model every quantization here is made from, its ranges set."""
        return bytes(self.debugger.calibrated_model)

    def quantize(self, denylisted_nodes: Sequence[str]) -> bytes:
        """The int8 model with ``denylisted_nodes`` in float, I/O typed like ``to_tflite(io=...)``."""
        from .tflite import quantize_calibrated

        return quantize_calibrated(
            self.debugger.calibrated_model, self._tf, io=self.io, out_io=self.out_io, nodes=denylisted_nodes,
            ops=self.denylisted_ops, disable_per_channel=self.per_tensor)

    @property
    def per_tensor(self) -> bool:
        """Whether weights are quantized per tensor (the converter's per-channel switch turned off)."""
        return bool(self.debugger.converter._experimental_disable_per_channel)  # noqa: SLF001

    def rank(self, denylisted_nodes: Sequence[str] = ()) -> list[LayerError]:
        """Every quantized tensor of the model (with ``denylisted_nodes`` in float), worst first."""
        self.debugger.options = self._options(denylisted_nodes)
        out = []
        for name, op, acc, scale in _tflite_layer_energy(self.debugger, self._debug):
            consumers, keep = _tflite_float_island(self._graph, name)
            out.append(LayerError(
                name=name, op=op, error=acc.ratio(), sqnr_db=acc.sqnr(), consumers=consumers, keep_float=keep,
                scale=scale, order=self._graph["producer"].get(name, ("", [], 10**6))[2], producer=name,
            ))
        return prioritise(out)


def _tflite_layer_energy(debugger: Any, samples: np.ndarray) -> list[tuple[str, str, _Accumulator, float]]:
    """(tensor, op, signal/noise energy over all samples, scale) of every quantized op of the debug model.

    The debug model runs each quantized op twice: in int8 and in float on the same dequantized inputs
    (a NumericVerify op joins the two), so the error is local to the op. Energies are summed per channel
    over every sample before the ratio is taken: a per-sample ratio would treat each value of a (1, C)
    dense or softmax output as a channel of its own and call a 1e-4 probability rounded to 0 a lost signal.

    TensorFlow's own direct-compare metrics (TF 2.21) run on an interpreter built without
    ``experimental_preserve_all_tensors`` when the debugger calibrates, so every intermediate buffer has
    been reused by later ops when they are read: they blamed healthy layers (MobileNetV3's input
    rescaling at -58 dB, a face detector's first convolution at -104 dB). This interpreter keeps them.
    """
    from tensorflow.lite.python import interpreter as tfl_interpreter

    interp = tfl_interpreter.Interpreter(model_content=debugger.quant_model, experimental_preserve_all_tensors=True)
    ops = interp._get_ops_details()  # noqa: SLF001 - the only per-op listing
    defining = {t: op["index"] for op in ops for t in op["outputs"]}
    pairs = []
    for op in ops:
        if op["op_name"] != "NumericVerify":
            continue
        q_idx, f_idx = op["inputs"][:2]
        qp = interp._get_tensor_details(q_idx, subgraph_index=0)["quantization_parameters"]  # noqa: SLF001
        if not len(qp["scales"]):
            continue
        producer = ops[defining[q_idx]] if q_idx in defining else None
        verify_out = interp._get_tensor_details(op["outputs"][0], subgraph_index=0)["name"]  # noqa: SLF001
        name = debugger._get_operand_name_and_index(verify_out)[0]  # noqa: SLF001 - the quantized graph's tensor name
        pairs.append((name, producer["op_name"] if producer else "?", q_idx, f_idx,
                      float(qp["scales"][0]), int(qp["zero_points"][0])))
    acc = {q_idx: _Accumulator() for _name, _op, q_idx, *_ in pairs}  # by tensor index: names can repeat
    for k, s in enumerate(samples):
        debugger._set_input_tensors(interp, [s[None]], k == 0)  # noqa: SLF001 - quantizes an int8 input its way
        interp.invoke()
        for name, _op, q_idx, f_idx, scale, zp in pairs:
            ref = interp.get_tensor(f_idx)
            test = (interp.get_tensor(q_idx).astype(np.int32) - zp) * scale
            acc[q_idx].add(ref, test, -1)
    return [(name, op, acc[q_idx], scale) for name, op, q_idx, _f, scale, _zp in pairs]


def _tflite_graph(model: bytes) -> dict[str, Any]:
    """{"producer": tensor -> (op type, outputs), "consumers": tensor -> [(op type, outputs)]}."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model)
    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    producer: dict[str, tuple[str, list[str], int]] = {}
    consumers: dict[str, list[tuple[str, list[str]]]] = {}
    for k, op in enumerate(interp._get_ops_details()):  # noqa: SLF001 - LiteRT's only per-op listing
        outs = [names[i] for i in op["outputs"] if i in names]
        for t in outs:
            producer[t] = (op["op_name"], outs, k)
        for i in op["inputs"]:
            if i in names:
                consumers.setdefault(names[i], []).append((op["op_name"], outs))
    return {"producer": producer, "consumers": consumers}


def _tflite_float_island(graph: dict[str, Any], tensor: str) -> tuple[list[str], list[str]]:
    """(compute consumers, nodes to denylist) so that ``tensor`` is never quantized."""
    keep: list[str] = []
    compute: list[str] = []
    producer = graph["producer"].get(tensor)
    if producer is not None and producer[0] not in TFLITE_QDQ:
        keep.append(tensor)
    frontier, seen = [tensor], {tensor}
    while frontier:
        t = frontier.pop()
        for op, outs in graph["consumers"].get(t, []):
            for o in outs:
                if o in seen:
                    continue
                seen.add(o)
                if op not in TFLITE_QDQ:
                    keep.append(o)
                if op in TFLITE_COMPUTE:
                    compute.append(o)
                else:
                    frontier.append(o)
    return compute, keep


# ---- OpenVINO ---------------------------------------------------------------------------------------
def _activation_fqs(model: Any) -> list[Any]:
    """FakeQuantize nodes on activations (their data input is not a constant subgraph)."""
    out = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        src = op.input(0).get_source_output().get_node()
        if src.get_type_name() not in ("Constant", "Convert"):
            out.append(op)
    return out


def _ov_consumers(fq: Any) -> tuple[list[str], list[str]]:
    """(compute consumers, all nodes to ignore) downstream of a quantizer, up to the next compute layers."""
    keep: list[str] = []
    compute: list[str] = []
    frontier, seen = [fq], {fq.get_friendly_name()}
    while frontier:
        node = frontier.pop()
        for port in node.outputs():
            for target in port.get_target_inputs():
                n = target.get_node()
                name = n.get_friendly_name()
                if name in seen or n.get_type_name() in ("Result",):
                    continue
                seen.add(name)
                if n.get_type_name() == "FakeQuantize":
                    frontier.append(n)
                    continue
                keep.append(name)
                if n.get_type_name() in OV_COMPUTE:
                    compute.append(name)
                else:
                    frontier.append(n)
    return compute, keep


def rename(errors: Sequence[LayerError], names: dict[str, str]) -> list[LayerError]:
    """The same errors with node names translated through ``names`` (one conversion's names -> another's)."""
    from dataclasses import replace

    out = []
    for e in errors:
        prod = names.get(e.producer, e.producer)
        label = prod + e.name[len(e.producer):] if e.producer and e.name.startswith(e.producer) else e.name
        out.append(replace(e, name=label, producer=prod, consumers=[names.get(n, n) for n in e.consumers],
                           keep_float=[names.get(n, n) for n in e.keep_float]))
    return out


class OpenVINOProbe:
    """Rank the activation quantizers of an INT8 OpenVINO model (``ov.Model`` or IR path) on samples ``x``."""

    def __init__(self, model: Any, x: np.ndarray, *, limit: int = 100) -> None:
        ov = import_openvino()

        self.model = ov.Core().read_model(str(model)) if isinstance(model, (str, Path)) else model
        self.x = np.ascontiguousarray(x[:limit], dtype=np.float32)

    def rank(self) -> list[LayerError]:
        """Every activation quantizer of the model, worst first."""
        ov = import_openvino()

        model = self.model.clone()  # the probe's extra outputs must not touch the caller's graph
        fqs = _activation_fqs(model)
        if not fqs:
            return []
        ports = []
        for fq in fqs:
            ports += [fq.input(0).get_source_output(), fq.output(0)]
        probe = ov.Model(ports, model.get_parameters(), "edgeship_probe")
        compiled = ov.Core().compile_model(probe, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        acc = [_Accumulator() for _ in fqs]
        batch = _ov_batch(model)
        for i in range(0, len(self.x), batch):
            res = request.infer([self.x[i : i + batch]])
            vals = [res[p] for p in compiled.outputs]
            for k, a in enumerate(acc):
                ref, test = vals[2 * k], vals[2 * k + 1]
                a.add(ref, test, 1 if ref.ndim >= 2 else -1)
        position = {op.get_friendly_name(): k for k, op in enumerate(model.get_ordered_ops())}
        out = []
        for fq, a in zip(fqs, acc):
            compute, keep = _ov_consumers(fq)
            src = fq.input(0).get_source_output().get_node()
            out.append(LayerError(name=fq.get_friendly_name(), op=src.get_type_name(), error=a.ratio(), sqnr_db=a.sqnr(),
                                  producer=src.get_friendly_name(),
                                  consumers=compute, keep_float=keep, order=position[fq.get_friendly_name()]))
        return prioritise(out)


def _ov_batch(model: Any) -> int:
    ps = model.inputs[0].get_partial_shape()
    return 1 if ps[0].is_static and ps[0].get_length() == 1 else 16


def activation_nodes(model: Any) -> list[Any]:
    """Nodes on the data path (reachable from a Parameter), excluding quantizers, in topological order."""
    live: set[str] = set()
    out = []
    for op in model.get_ordered_ops():
        t = op.get_type_name()
        name = op.get_friendly_name()
        if t == "Parameter" or any(i.get_source_output().get_node().get_friendly_name() in live for i in op.inputs()):
            live.add(name)
            if t not in _SKIP_TYPES:
                out.append(op)
    return out


def map_node_names(src_model: Any, dst_model: Any) -> dict[str, str] | None:
    """Map data-path node names of one conversion of a graph onto another conversion of the same graph.

    OpenVINO numbers node names per process, so two conversions of one SavedModel differ in names;
    nodes are matched by type and order on the data path and checked by output shape. None when
    the two graphs do not line up.
    """
    a, b = activation_nodes(src_model), activation_nodes(dst_model)
    if len(a) != len(b):
        return None
    mapping = {}
    for x, y in zip(a, b):
        if x.get_type_name() != y.get_type_name() or [str(p.get_partial_shape()) for p in x.outputs()] != [
                str(p.get_partial_shape()) for p in y.outputs()]:
            return None
        mapping[x.get_friendly_name()] = y.get_friendly_name()
    return mapping


def compare_with_fp32(int8_model: Any, fp32_model: Any, x: np.ndarray, *, limit: int = 100) -> dict[str, float]:
    """SQNR (dB) of every compute layer's output in the INT8 model against the same layer in FP32.

    Errors accumulate along the network, so this shows where the outputs drift, not who caused it
    (that is :meth:`OpenVINOProbe.rank`). Keys are the INT8 model's node names.
    """
    ov = import_openvino()

    mapping = map_node_names(int8_model, fp32_model)
    if mapping is None:
        log.warning("the INT8 and FP32 graphs do not line up node by node; skipping the per-layer FP32 comparison")
        return {}
    names = [op.get_friendly_name() for op in activation_nodes(int8_model) if op.get_type_name() in OV_COMPUTE]
    if not names:
        return {}
    core = ov.Core()

    def run(model: Any, wanted: list[str]) -> list[np.ndarray]:
        ops = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
        probe = ov.Model([ops[n].output(0) for n in wanted], model.get_parameters(), "edgeship_compare")
        compiled = core.compile_model(probe, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        req = compiled.create_infer_request()
        xs = np.ascontiguousarray(x[:limit], dtype=np.float32)
        batch = _ov_batch(model)
        parts = [[np.array(r[p]) for p in compiled.outputs] for r in (req.infer([xs[i : i + batch]]) for i in range(0, len(xs), batch))]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(wanted))]

    q = run(int8_model, names)
    f = run(fp32_model, [mapping[n] for n in names])
    return {n: sqnr_db(fv, qv) for n, qv, fv in zip(names, q, f)}
