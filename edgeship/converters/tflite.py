"""SavedModel -> TFLite (LiteRT) flatbuffer: fp32, fp16 weights, dynamic range, full-integer int8.

int8 is calibrated on a RepresentativeDataset and has int8 input and output by default
(``io="float"|"int8"|"uint8"``). ``denylisted_nodes`` / ``denylisted_ops`` keep the named nodes
(output tensor names of the float model, as the QuantizationDebugger reports them) or op types
(e.g. ``"SOFTMAX"``) in float: the model is calibrated once and then quantized with TFLite's
MLIR quantizer told to skip them (what ``QuantizationDebugger.get_nondebug_quantized_model()``
does with ``QuantizationDebugOptions(denylisted_nodes=...)``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ConversionError, InputError
from ..fileio import atomic_write_bytes

log = logging.getLogger(__name__)

IO_TYPES = ("int8", "uint8", "float")  # an int8 artifact's input/output tensor type
DEFAULT_IO = IO_TYPES[0]


def _configure_fp32(converter: Any, tf: Any, dataset: Any, io: str) -> None:
    return None


def _configure_fp16(converter: Any, tf: Any, dataset: Any, io: str) -> None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]


def _configure_dynamic(converter: Any, tf: Any, dataset: Any, io: str) -> None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]


def _configure_int16x8(converter: Any, tf: Any, dataset: Any, io: str) -> None:
    """16-bit activations, 8-bit weights (float I/O): finer activations than int8, slower kernels."""
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = dataset.to_tflite()
    converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]


def _configure_int8(converter: Any, tf: Any, dataset: Any, io: str) -> None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = dataset.to_tflite()
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = _tf_io_type(tf, io)
    converter.inference_output_type = _tf_io_type(tf, io)


# precision -> converter configuration (the registry `to_tflite` dispatches on)
PRECISIONS: dict[str, Callable[[Any, Any, Any, str], None]] = {
    "fp32": _configure_fp32,
    "fp16": _configure_fp16,
    "dynamic": _configure_dynamic,
    "int16x8": _configure_int16x8,
    "int8": _configure_int8,
}


ROUNDED_PRECISIONS = ("int8", "int16x8", "dynamic")  # int8 weights: --weight-rounding applies


def check_weight_rounding(method: str, precision: str, calibrated: bool) -> None:
    """An explicit ``gptq`` needs calibration samples (it measures each layer's inputs): an InputError without."""
    if method == "gptq" and precision in ROUNDED_PRECISIONS and not calibrated:
        raise InputError(f"--weight-rounding gptq measures the layers' inputs: {precision} needs a calibration set "
                         "(--calib calib.npz)")


def _tf_io_type(tf: Any, io: str):
    return {"float": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[io]


def to_tflite(
    saved_model_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    precision: str,
    dataset: Any = None,
    io: str = DEFAULT_IO,
    denylisted_nodes: Sequence[str] = (),
    denylisted_ops: Sequence[str] = (),
    out_io: str | None = None,
    ranges: str = "auto",
    bias_correction: str = "auto",
    weight_rounding: str = "auto",
    notes: dict[str, Any] | None = None,
) -> Path:
    """Convert a SavedModel to ``out_path`` (written atomically) and return the path.

    ``dataset`` (a RepresentativeDataset) is required for int8; ``io`` sets the int8 model's input
    and output type (``out_io`` the output's when it differs, e.g. float behind a float softmax); the
    denylists keep nodes/op types in float (int8 only). ``ranges`` sets int8 activation ranges
    (:mod:`edgeship.converters.ranges`: auto keeps MSE-clipped ranges where they measure better than min-max) and
    ``bias_correction`` corrects the int8 biases (:mod:`edgeship.converters.biascorr`: auto keeps the correction
    where it measures better) and ``weight_rounding`` rounds the int8 weights of int8, int16x8 and dynamic range
    artifacts (:mod:`edgeship.converters.rounding`: auto keeps GPTQ where it measures better; it needs calibration
    samples); what was chosen goes into ``notes["ranges"]``, ``notes["bias_correction"]`` and
    ``notes["weight_rounding"]`` when a dict is given.
    """
    out_io = out_io or io
    if precision not in PRECISIONS:
        raise InputError(f"tflite precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if io not in IO_TYPES or out_io not in IO_TYPES:
        raise InputError(f"tflite io must be one of {', '.join(IO_TYPES)}, got {io!r} / {out_io!r}")
    if precision in ("int8", "int16x8") and dataset is None:
        raise InputError(f"tflite {precision} needs a calibration set (--calib calib.npz)")
    if (denylisted_nodes or denylisted_ops) and precision != "int8":
        raise InputError(f"denylisted nodes/ops only apply to int8, not {precision}")
    from .biascorr import BIAS_CORRECTION
    from .ranges import RANGES
    from .rounding import WEIGHT_ROUNDING

    if ranges not in RANGES:
        raise InputError(f"ranges must be one of {', '.join(RANGES)}, got {ranges!r}")
    if bias_correction not in BIAS_CORRECTION:
        raise InputError(f"bias correction must be one of {', '.join(BIAS_CORRECTION)}, got {bias_correction!r}")
    if weight_rounding not in WEIGHT_ROUNDING:
        raise InputError(f"weight rounding must be one of {', '.join(WEIGHT_ROUNDING)}, got {weight_rounding!r}")
    check_weight_rounding(weight_rounding, precision, dataset is not None)
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    PRECISIONS[precision](converter, tf, dataset, io)
    try:
        if precision == "int8":
            data = _quantize_int8(converter, tf, io, list(denylisted_nodes), list(denylisted_ops), out_io, dataset, ranges,
                                  bias_correction, weight_rounding, notes)
        else:
            data = converter.convert()
            if precision in ROUNDED_PRECISIONS:
                data = _round_weights(data, saved_model_dir, dataset, weight_rounding, notes)
    except ConversionError:
        raise
    except Exception as e:  # noqa: BLE001 - ConverterError, ValueError, RuntimeError...
        raise ConversionError(f"tflite {precision}: {converter_error_summary(e)}") from None
    return atomic_write_bytes(out_path, outputs_in_signature_order(bytes(data)))


def outputs_in_signature_order(data: bytes) -> bytes:
    """Reorder the graph outputs as the signature's ``output_0``, ``output_1``... (the Keras order).

    The converter lists a multi-output model's outputs in its own order (a two-output model can
    come out reversed), and runtimes read ``get_output_details()`` in that order. Single-output
    models are returned unchanged.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    from ..formats.tensors import output_sort_key

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    if not model.signatureDefs or len(model.subgraphs[0].outputs) < 2:
        return data
    sig = model.signatureDefs[0]
    names = lambda t: t.name.decode() if isinstance(t.name, bytes) else t.name  # noqa: E731
    wanted = [t.tensorIndex for t in sorted(sig.outputs, key=lambda t: output_sort_key(names(t)))]
    graph = model.subgraphs[sig.subgraphIndex or 0]
    if sorted(wanted) != sorted(int(i) for i in graph.outputs) or list(graph.outputs) == wanted:
        return data
    graph.outputs = np.asarray(wanted, dtype=np.int32)
    return flatbuffer_utils.convert_object_to_bytearray(model)


def calibrate(converter: Any, tf: Any) -> bytes:
    """The converter's calibrated (still float) model: every activation's min and max recorded, nothing quantized
    yet (the QuantizationDebugger's own path)."""
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.inference_input_type = tf.float32
    converter.inference_output_type = tf.float32
    converter._experimental_calibrate_only = True  # noqa: SLF001
    return converter.convert()


def set_ranges(calibrated: bytes, x: Any, method: str, *, io: str, out_io: str, nodes: Sequence[str] = (),
               ops: Sequence[str] = ()) -> tuple[bytes, dict[str, Any]]:
    """The calibrated model with its activation ranges set by ``method`` (:func:`edgeship.converters.ranges.choose`),
    quantized the way it will be, and a record of the choice."""
    import tensorflow as tf

    from .ranges import choose

    return choose(calibrated, np.asarray(x, dtype=np.float32), method,
                  quantize=lambda c: quantize_calibrated(c, tf, io="float", out_io="float", nodes=nodes, ops=ops),
                  run=run_model_bytes)


def run_model_bytes(model: bytes, x: np.ndarray) -> list[np.ndarray]:
    """Float outputs of a float-I/O .tflite held in memory, on ``x`` one sample at a time."""
    from ..formats.tflite import interpreter_class

    cls, _ = interpreter_class()
    it = cls(model_content=bytes(model))
    it.allocate_tensors()
    inp, outs = it.get_input_details()[0], it.get_output_details()
    got: list[list[np.ndarray]] = [[] for _ in outs]
    for s in x:
        it.set_tensor(inp["index"], np.ascontiguousarray(s[None], dtype=np.float32))
        it.invoke()
        for k, o in enumerate(outs):
            got[k].append(np.array(it.get_tensor(o["index"]), dtype=np.float32)[0])
    return [np.asarray(g) for g in got]


def _quantize_int8(converter: Any, tf: Any, io: str, nodes: list[str], ops: list[str], out_io: str, dataset: Any,
                   ranges: str, bias_correction: str, weight_rounding: str, notes: dict[str, Any] | None) -> bytes:
    from .rounding import apply, choose

    calibrated = calibrate(converter, tf)
    calibrated, record = set_ranges(calibrated, dataset.x_calib, ranges, io=io, out_io=out_io, nodes=nodes, ops=ops)
    log.info("int8 activation ranges: %s", record)
    per_tensor = converter._experimental_disable_per_channel  # noqa: SLF001
    data = quantize_calibrated(calibrated, tf, io=io, out_io=out_io, nodes=nodes, ops=ops, disable_per_channel=per_tensor)
    twin = None  # the float-I/O quantization each choice is measured on
    if weight_rounding != "nearest" or bias_correction != "none":
        twin = quantize_calibrated(calibrated, tf, io="float", out_io="float", nodes=nodes, ops=ops,
                                   disable_per_channel=per_tensor)
    levels, rounding = ({}, {"method": "nearest"}) if twin is None else choose(
        calibrated, twin, np.asarray(dataset.x_calib, dtype=np.float32), weight_rounding, run=run_model_bytes)
    try:
        data, twin = apply(data, levels), (None if twin is None else apply(twin, levels))
    except ConversionError as e:  # the int8-I/O artifact's layers do not line up with its float-I/O twin's
        log.warning("int8 weight rounding left out: %s", e)
        rounding = {"method": "nearest", "reason": str(e)}
    log.info("int8 weight rounding: %s", rounding)
    data, corrected = corrected_biases(data, calibrated, dataset.x_calib, bias_correction, nodes=nodes, ops=ops,
                                       disable_per_channel=per_tensor, twin=twin)
    log.info("int8 bias correction: %s", corrected)
    if notes is not None:
        notes.update(ranges=record, weight_rounding=rounding, bias_correction=corrected)
    return data


def _round_weights(data: bytes, saved_model_dir: str | os.PathLike, dataset: Any, method: str,
                   notes: dict[str, Any] | None) -> bytes:
    """An int16x8 or dynamic range artifact (float I/O) with its int8 weights rounded by ``method``
    (:func:`edgeship.converters.rounding.choose`), measured against the fp32 conversion of the same SavedModel."""
    from .rounding import WEIGHTS_ONLY_MARGIN_DB, apply, choose

    if method == "nearest" or dataset is None:
        record = {"method": "nearest"} if method == "nearest" else {"method": "nearest", "reason": "no calibration samples"}
    else:
        import tensorflow as tf

        fp32 = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir)).convert()
        levels, record = choose(fp32, data, np.asarray(dataset.x_calib, dtype=np.float32), method, run=run_model_bytes,
                                margin_db=WEIGHTS_ONLY_MARGIN_DB)
        data = apply(data, levels)
    log.info("weight rounding: %s", record)
    if notes is not None:
        notes["weight_rounding"] = record
    return data


def corrected_biases(artifact: bytes, calibrated: bytes, x: Any, method: str, *, nodes: Sequence[str] = (),
                     ops: Sequence[str] = (), disable_per_channel: bool = False,
                     twin: bytes | None = None) -> tuple[bytes, dict[str, Any]]:
    """``artifact`` (an int8 quantization of ``calibrated``, any I/O types) with bias correction (``method``,
    :func:`edgeship.converters.biascorr.choose`) measured on its float-I/O twin (``twin``, quantized here when not
    given) and applied by bias name, and a record of the choice. A twin whose biases do not line up with the
    artifact's leaves it uncorrected, with a warning."""
    import tensorflow as tf

    from .biascorr import apply, choose

    if method == "none":
        return artifact, {"method": "none"}
    if twin is None:
        twin = quantize_calibrated(calibrated, tf, io="float", out_io="float", nodes=nodes, ops=ops,
                                   disable_per_channel=disable_per_channel)
    deltas, record = choose(calibrated, twin, np.asarray(x, dtype=np.float32), method, run=run_model_bytes)
    try:
        return apply(artifact, deltas), record
    except ConversionError as e:
        log.warning("int8 bias correction left out: %s", e)
        return artifact, {"method": "none", "reason": str(e)}


def quantize_calibrated(calibrated: bytes, tf: Any, *, io: str, out_io: str, nodes: Sequence[str] = (),
                        ops: Sequence[str] = (), disable_per_channel: bool = False) -> bytes:
    """The MLIR quantizer on a calibrated model: ``nodes`` / ``ops`` stay in float; input typed ``io``,
    output typed ``out_io``. A float output behind an int8 input (a softmax kept in float) is made by
    quantizing with float I/O and then retyping the input only: asked directly, the quantizer would put
    a QUANTIZE after the float softmax and collapse it again."""
    from tensorflow.lite.python import convert as lite_convert

    if out_io == io and io != "uint8":
        io_type = _tf_io_type(tf, io)
        return bytes(lite_convert.mlir_quantize(
            calibrated, disable_per_channel=disable_per_channel, fully_quantize=io != "float",
            input_data_type=io_type, output_data_type=io_type,
            denylisted_ops=list(ops) or None, denylisted_nodes=list(nodes) or None))
    from tensorflow.lite.python import util as lite_util

    q = lite_convert.mlir_quantize(  # float I/O, then retyped (how the converter itself makes uint8 I/O)
        calibrated, disable_per_channel=disable_per_channel, fully_quantize=False,
        input_data_type=tf.float32, output_data_type=tf.float32,
        denylisted_ops=list(ops) or None, denylisted_nodes=list(nodes) or None)
    return bytes(lite_util.modify_model_io_type(q, _tf_io_type(tf, io), _tf_io_type(tf, out_io)))


def converter_error_summary(e: BaseException) -> str:
    """The informative part of a TFLite converter error (the first ``error:`` line), on one line."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    picked = [ln for ln in lines if "error:" in ln]
    text = picked[0] if picked else (lines[0] if lines else type(e).__name__)
    return " ".join(text.split())[:400]


# ---- reading back ---------------------------------------------------------------------------------
def tflite_ops(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every op of a .tflite with its output tensor names and dtypes (what ran in float, what in int8)."""
    from ..formats.tflite import load_interpreter

    interp = load_interpreter(Path(path))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    return [
        {
            "op": op["op_name"],
            "outputs": [tensors[i]["name"] for i in op["outputs"] if i in tensors],
            "dtypes": [np.dtype(tensors[i]["dtype"]).name for i in op["outputs"] if i in tensors],
        }
        for op in interp._get_ops_details()  # noqa: SLF001 - the only per-op listing LiteRT offers
    ]
