"""TensorInfo: one model input or output as every format reads it (name, shape, dtype, quantization)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass
class TensorInfo:
    """One input or output tensor. ``shape`` uses -1 for a dynamic dimension.

    ``scale`` / ``zero_point`` are set only for a quantized integer tensor (the one rule every
    format's reader applies: a non-zero scale on an integer dtype).
    """

    name: str
    shape: list[int]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None
    role: str | None = None  # outputs: class_scores | boxes | raw (edgeship.roles), recorded by convert

    @property
    def quantized(self) -> bool:
        return self.scale is not None and self.scale != 0.0


def output_sort_key(name: str) -> tuple[int, Any]:
    """The Keras output order of SavedModel signature keys: ``output_2`` before ``output_10``, other names after."""
    m = re.fullmatch(r"output_(\d+)", name)
    return (0, int(m.group(1))) if m else (1, name)
