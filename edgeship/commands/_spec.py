"""The InputSpec flags, one set for every command that takes them (calibrate, convert, run, bench).

``--resize --interpolation --color-order --scale --mean --std`` describe how a frame becomes the
model's input. ``calibrate`` stores them in the calibration set, ``convert`` in the manifest (with
or without a calibration set), and ``run`` / ``bench`` apply them to a model that has no manifest
(a third-party .tflite or .xml) or override its manifest.
"""

from __future__ import annotations

from typing import Any, Callable

import click

from ..spec import COLOR_ORDERS, INTERPOLATIONS, RESIZE_MODES, implied_channels
from ._common import FiniteRange

SPEC_KEYS = ("resize", "interpolation", "color_order", "scale", "mean", "std")


def floats_option(ctx: click.Context, param: click.Parameter, value: str | None):
    """click callback: "0.485,0.456,0.406" -> (0.485, 0.456, 0.406) (finite numbers only)."""
    import math

    if value is None:
        return None
    try:
        values = tuple(float(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise click.BadParameter(f"expected comma-separated finite numbers, got {value!r}")
    return values


def spec_options(f: Callable) -> Callable:
    """Add the InputSpec flags to a command."""
    options = [
        click.option("--resize", type=click.Choice(RESIZE_MODES), help="Resize mode [stretch]."),
        click.option("--interpolation", type=click.Choice(INTERPOLATIONS),
                     help="How frames are shrunk [pyramid]: pyramid = 2x box halvings then bilinear (anti-aliased, fast); "
                          "area = OpenCV INTER_AREA (exact box filter, 5-7x slower); linear = bilinear like Keras / "
                          "tf.image.resize (fastest, aliases on big shrinks)."),
        click.option("--color-order", type=click.Choice(COLOR_ORDERS, case_sensitive=False), metavar="[RGB|BGR|GRAY]",
                     help="Model colour order [RGB]."),
        click.option("--scale", type=FiniteRange(), help="Pixel multiplier before mean/std [1/255]; 1/127.5 with "
                     "--mean 1 gives [-1, 1] (MobileNet, MediaPipe)."),
        click.option("--mean", callback=floats_option, help="Per-channel mean subtracted after scaling, e.g. 0.485,0.456,0.406 [0]."),
        click.option("--std", callback=floats_option, help="Per-channel std divided by, e.g. 0.229,0.224,0.225 [1]."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def spec_overrides(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop the InputSpec flags out of a command's keyword arguments: the ones given, ready for InputSpec."""
    given = {k: kwargs.pop(k, None) for k in SPEC_KEYS}
    out = {k: v for k, v in given.items() if v is not None}
    if "color_order" in out:
        out["color_order"] = str(out["color_order"]).upper()
    return implied_channels(out)
