"""InputSpec: the one statement of how a frame becomes the model's input (data only).

Decided at calibrate/convert time, stored in every manifest and every calibration set, read back
by the runtime. The functions that apply it live in :mod:`edgeship.preprocess`; the float value
fed to the model is ``(pixel * scale - mean) / std`` per channel, after the frame is resized
(stretch, letterbox or center-crop, with ``interpolation``) and put in the model's colour order.
``dtype`` is the dtype of the float-domain sample; a quantized input tensor's own scale and zero
point are applied on top (:func:`edgeship.preprocess.quantize_values`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

import numpy as np

from .errors import SpecError

RESIZE_MODES = ("stretch", "letterbox", "center-crop")
COLOR_ORDERS = ("RGB", "BGR", "GRAY")
LAYOUTS = ("NHWC", "NCHW")
DTYPES = ("float32", "uint8")
# how frames are shrunk to the model's size (a frame no larger than the target is resized bilinearly):
#   pyramid - halve with a 2x2 box filter while the frame is >= 2x the target, then bilinear: anti-aliased
#             like "area" at close to the cost of "linear" (0.17 vs 0.9 ms for 640x480 -> 224x224)
#   area    - OpenCV INTER_AREA: exact box filter, slowest (5 ms for 1920x1080 -> 224x224 on a desktop core)
#   linear  - bilinear (OpenCV INTER_LINEAR_EXACT: the same bytes on x86 and ARM), i.e. Keras /
#             tf.image.resize "bilinear": fastest, aliases on big shrinks
INTERPOLATIONS = ("pyramid", "area", "linear")
MAX_SIDE = 16384  # the largest model input side edgeship accepts (pixels)
# specs saved before ``interpolation`` existed were calibrated with INTER_AREA
LEGACY_INTERPOLATION = "area"



def implied_channels(overrides: dict) -> dict:
    """InputSpec keyword overrides with what they imply: ``color_order`` GRAY means one channel."""
    out = dict(overrides)
    if str(out.get("color_order", "")).upper() == "GRAY":
        out["channels"] = 1
    return out

@dataclass(frozen=True)
class InputSpec:
    height: int
    width: int
    channels: int = 3
    color_order: str = "RGB"
    resize: str = "stretch"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    dtype: str = "float32"
    layout: str = "NHWC"
    pad_value: int = 114
    interpolation: str = "pyramid"

    def __post_init__(self) -> None:
        if not (0 < int(self.height) <= MAX_SIDE and 0 < int(self.width) <= MAX_SIDE):
            raise SpecError(f"input size must be 1-{MAX_SIDE} pixels a side, got {self.height}x{self.width}")
        if self.channels not in (1, 3):
            raise SpecError(f"channels must be 1 or 3, got {self.channels}")
        if self.resize not in RESIZE_MODES:
            raise SpecError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        if self.color_order not in COLOR_ORDERS:
            raise SpecError(f"color_order must be one of {', '.join(COLOR_ORDERS)}, got {self.color_order!r}")
        if self.channels == 1 and self.color_order != "GRAY":
            object.__setattr__(self, "color_order", "GRAY")
        if self.channels == 3 and self.color_order == "GRAY":
            raise SpecError("color_order GRAY needs channels=1, got channels=3")
        if self.interpolation not in INTERPOLATIONS:
            raise SpecError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.layout not in LAYOUTS:
            raise SpecError(f"layout must be NHWC or NCHW, got {self.layout!r}")
        if self.dtype not in DTYPES:
            raise SpecError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        mean = _per_channel(self.mean, self.channels, "mean")
        std = _per_channel(self.std, self.channels, "std")
        if any(s == 0 for s in std):
            raise SpecError(f"std must be non-zero, got {std}")
        for name, values in (("scale", (float(self.scale),)), ("mean", mean), ("std", std)):
            if not all(np.isfinite(values)):
                raise SpecError(f"{name} must be a finite number, got {', '.join(f'{v:g}' for v in values)}")
        if float(self.scale) == 0:
            raise SpecError("scale must be non-zero (pixels * scale): got 0")
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "scale", float(self.scale))

    # ---- shape -------------------------------------------------------------------------
    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """Shape of one preprocessed sample (no batch dimension)."""
        if self.layout == "NCHW":
            return (self.channels, self.height, self.width)
        return (self.height, self.width, self.channels)

    def value_range(self) -> tuple[float, float]:
        """The float range a uint8 frame maps to: what calibration data should span."""
        lo = min((0.0 * self.scale - m) / s for m, s in zip(self.mean, self.std))
        hi = max((255.0 * self.scale - m) / s for m, s in zip(self.mean, self.std))
        return (float(min(lo, hi)), float(max(lo, hi)))

    def with_size(self, height: int, width: int) -> "InputSpec":
        return replace(self, height=height, width=width)

    # ---- JSON ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSpec":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise SpecError(f"unknown InputSpec keys {sorted(unknown)}; expected some of {sorted(known)}")
        kw = dict(d)
        kw.setdefault("interpolation", LEGACY_INTERPOLATION)
        for k in ("mean", "std"):
            if k in kw and not isinstance(kw[k], (int, float)):
                kw[k] = tuple(kw[k])
        try:
            return cls(**kw)
        except TypeError as e:
            raise SpecError(f"invalid InputSpec {d}: {e}") from e

    @classmethod
    def from_json(cls, text: str) -> "InputSpec":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise SpecError(f"InputSpec is not valid JSON: {e}") from e


def _per_channel(v: Any, channels: int, name: str) -> tuple[float, ...]:
    if isinstance(v, (int, float, np.floating, np.integer)):
        return tuple([float(v)] * channels)
    v = tuple(float(x) for x in v)
    if len(v) == 1:
        return v * channels
    if len(v) != channels:
        raise SpecError(f"{name} needs {'one value' if channels == 1 else f'1 or {channels} values'} (the model takes {channels} "
                        f"channel{'s' if channels != 1 else ''}), got {len(v)}: {list(v)}")
    return v


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``HxW`` (or a single number for a square) into (height, width)."""
    t = str(text).lower().replace(" ", "")
    parts = t.split("x") if "x" in t else [t, t]
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise SpecError(f"input size must look like 224x224 (HxW), got {text!r}") from None
    if h <= 0 or w <= 0 or len(parts) != 2:
        raise SpecError(f"input size must look like 224x224 (HxW), got {text!r}")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise SpecError(f"input size must be at most {MAX_SIDE}x{MAX_SIDE}, got {text!r}")
    return h, w


# ---- model input shape ----------------------------------------------------
def shape_to_hwc(shape: Sequence[Any], where: str, size: tuple[int, int] | None = None) -> tuple[int, int, int, str]:
    """(height, width, channels, layout) of an image input shape; ``size`` (H, W) fills or replaces its spatial dims."""
    dims = [None if d is None or (isinstance(d, (int, np.integer)) and d < 0) else int(d) for d in shape]
    if len(dims) == 4:
        dims = dims[1:]
    if len(dims) != 3:
        raise SpecError(f"{where}: expected an image input (N, H, W, C) or (N, C, H, W), got shape {list(shape)}")
    if dims[2] in (1, 3):
        h, w, c, layout = dims[0], dims[1], dims[2], "NHWC"
    elif dims[0] in (1, 3):
        c, h, w, layout = dims[0], dims[1], dims[2], "NCHW"
    else:
        raise SpecError(f"{where}: cannot tell the channel axis of input shape {list(shape)}; expected 1 or 3 channels")
    if size is not None:
        h, w = size
    if h is None or w is None:
        raise SpecError(f"{where}: input size is dynamic ({list(shape)}); pass --input-size HxW")
    return h, w, c, layout
