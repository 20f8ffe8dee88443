"""The accuracy gate's candidate builders, one per format: each ranks the layers int8 hurts most and builds
a model with some of them kept in float (the ladder's int8-mixed rung). :mod:`edgeship.converters.builders` hands
them out; :mod:`edgeship.converters.gate` searches with them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .. import formats
from ..formats.openvino import import_openvino
from .layers import LayerError


class TFLiteCandidates:
    """Ranks with the QuantizationDebugger; candidates are re-quantized from one calibration. Bias correction and
    weight rounding: as asked when explicit (``full``, ``fast``; ``gptq``: fitted once, written into every candidate's
    int8 layers), none / nearest when ``auto`` (not measured again per candidate)."""

    def __init__(self, saved: Path, ds: Any, io: str, tmp: Path, nodes: Sequence[str] = (), ops: Sequence[str] = (),
                 out_io: str | None = None, ranges: str = "minmax", bias_correction: str = "none",
                 weight_rounding: str = "nearest") -> None:
        from .layers import TFLiteProbe

        self.saved, self.ds, self.io, self.tmp, self.base, self.ops = saved, ds, io, tmp, list(nodes), list(ops)
        self.probe = TFLiteProbe(saved, ds.x_calib, io=io, denylisted_ops=ops, out_io=out_io, ranges=ranges)
        self.bias_correction = "none" if bias_correction == "auto" else bias_correction
        self.weight_rounding = "nearest" if weight_rounding == "auto" else weight_rounding
        self.levels: dict[str, Any] = {}
        if self.weight_rounding == "gptq":
            from .rounding import fit

            self.levels = fit(self.probe.calibrated, self._twin(self.base), ds.x_calib).levels
        self.settings = (f"ranges {ranges}, weight rounding {self.weight_rounding}, "  # what every candidate is made with
                         f"bias correction {self.bias_correction}")

    def _twin(self, nodes: Sequence[str]) -> bytes:
        """The float-I/O quantization with ``nodes`` in float, its weights rounded as the candidates' are."""
        import tensorflow as tf

        from .rounding import apply
        from .tflite import quantize_calibrated

        twin = quantize_calibrated(self.probe.calibrated, tf, io="float", out_io="float", nodes=nodes, ops=self.ops,
                                   disable_per_channel=self.probe.per_tensor)
        return apply(twin, self.levels, strict=False)

    def nodes(self, chosen: Sequence[LayerError]) -> list[str]:
        return list(dict.fromkeys(self.base + [n for e in chosen for n in e.keep_float]))

    def float_nodes(self, chosen: Sequence[LayerError]) -> list[str]:
        """What the manifest records as kept in float (the caller's denylist included)."""
        return self.nodes(chosen)

    def rank(self, chosen: list[LayerError]) -> list[LayerError]:
        return self.probe.rank(self.nodes(chosen))

    def build(self, chosen: list[LayerError]) -> Path:
        # the same MLIR quantizer call as to_tflite(..., denylisted_nodes=...), on the cached calibration
        from .rounding import apply
        from .tflite import corrected_biases

        nodes = self.nodes(chosen)
        path = formats.get("tflite").path(self.tmp, f"candidate_{len(chosen)}_{abs(hash(tuple(nodes)))}")
        data = apply(self.probe.quantize(nodes), self.levels, strict=False)
        twin = self._twin(nodes) if self.bias_correction != "none" else None
        data, _ = corrected_biases(data, self.probe.calibrated, self.ds.x_calib, self.bias_correction,
                                   nodes=nodes, ops=self.ops, twin=twin)
        path.write_bytes(data)
        return path


class OpenVINOCandidates:
    """Ranks the artifact's activation quantizers; candidates are ``nncf.quantize`` runs with an ignored scope."""

    def __init__(self, saved: Path, ds: Any, artifact: Path, quantization: Any, dynamic_batch: bool, tmp: Path,
                 user_scope: Sequence[str] = ()) -> None:
        ov = import_openvino()

        from .layers import OpenVINOProbe, map_node_names
        from .openvino import to_openvino

        self.saved, self.ds, self.quantization, self.dynamic_batch, self.tmp = saved, ds, quantization, dynamic_batch, tmp
        self.user_scope = list(user_scope)  # the caller's own ignored scope, kept in every candidate
        # OpenVINO numbers node names per conversion: every candidate is quantized from this one FP32
        # IR, and the artifact's names are mapped onto it.
        self.fp32 = ov.Core().read_model(str(to_openvino(saved, formats.get("openvino").path(tmp, "fp32"), precision="fp32", dynamic_batch=dynamic_batch)))
        self.first = OpenVINOProbe(artifact, ds.x_calib)
        self.names = map_node_names(self.first.model, self.fp32)
        self.last: Any = None  # the latest candidate's probe (FP32 names)

    def float_nodes(self, chosen: Sequence[LayerError]) -> list[str]:
        return list(dict.fromkeys(n for e in chosen for n in e.keep_float))

    def rank(self, chosen: list[LayerError]) -> list[LayerError]:
        from .layers import OpenVINOProbe, rename

        if self.last is None and self.names is None:  # the graphs do not line up: rank a fresh quantization
            self.last = OpenVINOProbe(self._quantize([]), self.ds.x_calib)
        if self.last is not None:
            return self.last.rank()
        return rename(self.first.rank(), self.names)

    def _quantize(self, scope: list[str]) -> Any:
        from dataclasses import replace

        from .openvino import PRECISIONS

        full = list(dict.fromkeys(self.user_scope + list(scope)))
        return PRECISIONS["int8"](self.fp32.clone(), self.ds, replace(self.plain(), ignored_scope=full), {})[0]

    def plain(self) -> Any:
        """The NNCF settings every candidate is quantized with: those left to measurement (auto) are not measured again
        per candidate, they take the plain value."""
        from dataclasses import replace

        from .openvino import PLAIN_PRESET

        q = self.quantization
        return replace(q, ranges="minmax" if q.ranges == "auto" else q.ranges,
                       bias_correction="fast" if q.bias_correction == "auto" else q.bias_correction,
                       preset=PLAIN_PRESET if q.preset == "auto" else q.preset)

    @property
    def settings(self) -> str:
        q = self.plain()
        return f"preset {q.preset}, ranges {q.ranges}, bias correction {q.bias_correction}"

    def build(self, chosen: list[LayerError]) -> Path:
        from .layers import OpenVINOProbe
        from .openvino import _save_ir

        scope = list(dict.fromkeys(n for e in chosen for n in e.keep_float))
        model = self._quantize(scope)
        self.last = OpenVINOProbe(model, self.ds.x_calib)
        return _save_ir(model, formats.get("openvino").path(self.tmp, f"candidate_{len(chosen)}_{abs(hash(tuple(scope)))}"), False)
