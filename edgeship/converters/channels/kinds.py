"""Per layer kind: how its weights are sliced, how its channels are scored by norm, and its MACs."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np



def _take(w: np.ndarray, idx: np.ndarray, axis: int) -> np.ndarray:
    return np.take(w, idx, axis=axis)


def _except(w: np.ndarray, axis: int) -> tuple[int, ...]:
    return tuple(a for a in range(w.ndim) if a != axis % w.ndim)


def _rw_conv(op, cfg, w, ins, outs, widths):
    w["kernel"] = _take(_take(w["kernel"], ins[0], -2), outs[0], -1)
    if "bias" in w:
        w["bias"] = _take(w["bias"], outs[0], 0)
    cfg["filters"] = int(len(outs[0]))


def _rw_conv_transpose(op, cfg, w, ins, outs, widths):
    w["kernel"] = _take(_take(w["kernel"], ins[0], -1), outs[0], -2)
    if "bias" in w:
        w["bias"] = _take(w["bias"], outs[0], 0)
    cfg["filters"] = int(len(outs[0]))


def _rw_dense(op, cfg, w, ins, outs, widths):
    w["kernel"] = _take(_take(w["kernel"], ins[0], 0), outs[0], 1)
    if "bias" in w:
        w["bias"] = _take(w["bias"], outs[0], 0)
    cfg["units"] = int(len(outs[0]))


def _rw_separable(op, cfg, w, ins, outs, widths):
    mult = int(op.depth_multiplier)
    rows = (ins[0][:, None] * mult + np.arange(mult)[None, :]).reshape(-1)  # depthwise output c*mult + m
    w["depthwise_kernel"] = _take(w["depthwise_kernel"], ins[0], -2)
    w["pointwise_kernel"] = _take(_take(w["pointwise_kernel"], rows, -2), outs[0], -1)
    if "bias" in w:
        w["bias"] = _take(w["bias"], outs[0], 0)
    cfg["filters"] = int(len(outs[0]))


def _rw_depthwise(op, cfg, w, ins, outs, widths):
    w["kernel"] = _take(w["kernel"], ins[0], -2)
    if "bias" in w:
        w["bias"] = _take(w["bias"], ins[0], 0)


def _rw_channel_params(op, cfg, w, ins, outs, widths):
    """BN/LayerNorm/PReLU/Normalization: slice every per-channel array (last axis == channel count)."""
    keep, width = ins[0], widths[0]
    if len(keep) == width:
        return
    for name, value in w.items():
        if value.ndim >= 1 and value.shape[-1] == width:
            w[name] = _take(value, keep, -1)
    for key in ("mean", "variance"):  # Normalization(mean=..., variance=...) keeps them in its config
        value = cfg.get(key)
        if value is not None and np.ndim(value) >= 1 and np.shape(value)[-1] == width:
            cfg[key] = _take(np.asarray(value), keep, -1).tolist()


def _rw_reshape(op, cfg, w, ins, outs, widths):
    target = list(cfg.get("target_shape") or [])
    if target and target[-1] not in (-1, None):
        target[-1] = int(len(outs[0]))  # the channel axis stays last: only its size changes
        cfg["target_shape"] = tuple(target)


def _rw_rescaling(op, cfg, w, ins, outs, widths):
    keep, width = ins[0], widths[0]
    for key in ("scale", "offset"):  # per-channel factors live in the config
        value = np.asarray(getattr(op, key), dtype=np.float64)
        if value.ndim >= 1 and value.shape[-1] == width and len(keep) != width:
            cfg[key] = _take(value, keep, -1).tolist()


def _norm_fn(criterion: str) -> Callable[[np.ndarray, tuple[int, ...]], np.ndarray]:
    if criterion == "l2":
        return lambda w, axes: np.sqrt(np.sum(np.square(w, dtype=np.float64), axis=axes))
    return lambda w, axes: np.sum(np.abs(w, dtype=np.float64), axis=axes)


def _out_conv(op, w, norm):
    return norm(w["kernel"], _except(w["kernel"], -1))


def _in_conv(op, w, norm):
    return norm(w["kernel"], _except(w["kernel"], -2))


def _out_conv_t(op, w, norm):
    return norm(w["kernel"], _except(w["kernel"], -2))


def _in_conv_t(op, w, norm):
    return norm(w["kernel"], _except(w["kernel"], -1))


def _out_dense(op, w, norm):
    return norm(w["kernel"], (0,))


def _in_dense(op, w, norm):
    return norm(w["kernel"], (1,))


def _out_separable(op, w, norm):
    return norm(w["pointwise_kernel"], _except(w["pointwise_kernel"], -1))


def _in_separable(op, w, norm):
    return norm(w["depthwise_kernel"], _except(w["depthwise_kernel"], -2))


def _spatial(shape: tuple) -> int:
    return math.prod(int(d) for d in shape[1:-1])


def _macs_conv(op, s_in, s_out, cin, cout):
    return _spatial(s_out) * math.prod(op.kernel_size) * (cin // int(getattr(op, "groups", 1) or 1)) * cout


def _macs_conv_t(op, s_in, s_out, cin, cout):
    return _spatial(s_in) * math.prod(op.kernel_size) * cin * cout


def _macs_dense(op, s_in, s_out, cin, cout):
    return _spatial(s_in) * cin * cout


def _macs_depthwise(op, s_in, s_out, cin, cout):
    return _spatial(s_out) * math.prod(op.kernel_size) * cin * int(op.depth_multiplier)


def _macs_separable(op, s_in, s_out, cin, cout):
    mult, n = int(op.depth_multiplier), _spatial(s_out)
    return n * math.prod(op.kernel_size) * cin * mult + n * cin * mult * cout
