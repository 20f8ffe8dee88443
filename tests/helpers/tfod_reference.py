"""Independent pure-numpy reference for two pieces of the TensorFlow Object Detection API.

Written from a reading of the upstream ``tensorflow/models`` sources (no TensorFlow needed,
no code copied):

* ``research/object_detection/anchor_generators/multiple_grid_anchor_generator.py``
  - ``create_ssd_anchors``: the per-layer (scale, aspect_ratio) box specs -> :func:`ssd_box_specs`.
  - ``MultipleGridAnchorGenerator._generate``: default strides/offsets and the non-square
    ``base_anchor_size`` correction (``im_height``/``im_width``) -> :func:`ssd_anchors`.
* ``research/object_detection/anchor_generators/grid_anchor_generator.py``
  - ``tile_anchors`` (+ ``_center_size_bbox_to_corners_bbox``): the per-layer grid and its
    flattening order -> :func:`_tile_layer`.
* ``research/object_detection/box_coders/faster_rcnn_box_coder.py``
  - ``FasterRcnnBoxCoder._encode`` / ``_decode`` (incl. ``EPSILON = 1e-8``) -> :func:`encode`,
    :func:`decode`.
* ``research/object_detection/core/box_list.py`` ``get_center_coordinates_and_sizes`` (corner ->
  center conversion used by the coder and by ``export_tflite_ssd_graph_lib``
  ``get_const_center_size_encoded_anchors``, which writes the ``anchors`` constant as
  ``[ycenter, xcenter, height, width]``).
* ``research/object_detection/samples/configs/ssd_mobilenet_v{1,2}_coco.config`` for the default
  generator parameters (num_layers 6, min_scale 0.2, max_scale 0.95, aspect_ratios
  1.0, 2.0, 0.5, 3.0, 0.3333; box coder scales 10, 10, 5, 5).

Anchor order (same as upstream): layer by layer (feature maps finest -> coarsest as given);
inside a layer row (y) major, then column (x), then box spec fastest. Note the box-spec order
is the *config* order of ``aspect_ratios`` followed by the interpolated-scale box, except in
the lowest layer with ``reduce_boxes_in_lowest_layer`` which is always
``(0.1, 1.0), (min_scale, 2.0), (min_scale, 0.5)``.

Coordinates are normalised to [0, 1] of the (resized) input image. Upstream does NOT clip the
SSD anchors (``create_ssd_anchors`` passes no ``clip_window``), so anchors may extend outside
[0, 1] despite its docstring.

``dtype=np.float32`` replays the float32 arithmetic of the TF graph (the exported ``anchors``
constant is float32); the default float64 agrees with it to ~1e-7.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EPSILON = 1e-8  # FasterRcnnBoxCoder.EPSILON
DEFAULT_SCALE_FACTORS = (10.0, 10.0, 5.0, 5.0)  # y_scale, x_scale, height_scale, width_scale

# What the sample configs literally say (the proto stores these as float32).
TFOD_CONFIG_ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 0.3333)
# Feature map sizes of ssd_mobilenet_v1/v2 at 300x300 (not stated in the configs; they follow
# from the feature extractors: 19x19, 10x10 and then stride-2 extra layers).
SSD_MOBILENET_300_FEATURE_MAPS = [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]


def ssd_box_specs(
    num_layers: int,
    *,
    min_scale: float = 0.2,
    max_scale: float = 0.95,
    scales: Sequence[float] | None = None,
    aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5, 3.0, 1.0 / 3),
    interpolated_scale_aspect_ratio: float = 1.0,
    reduce_boxes_in_lowest_layer: bool = True,
) -> list[list[tuple[float, float]]]:
    """Per-layer lists of (scale, aspect_ratio) pairs, as ``create_ssd_anchors`` builds them."""
    if scales:
        layer_scales = [float(s) for s in scales]
    elif num_layers == 1:
        layer_scales = [float(min_scale)]  # upstream would divide by zero here
    else:
        step = (max_scale - min_scale) / (num_layers - 1)
        layer_scales = [min_scale + step * i for i in range(num_layers)]
    # An extra 1.0 is appended so the coarsest layer's interpolated box uses sqrt(scale * 1.0).
    nxt = layer_scales[1:] + [1.0]
    specs: list[list[tuple[float, float]]] = []
    for layer in range(num_layers):
        s = layer_scales[layer]
        if layer == 0 and reduce_boxes_in_lowest_layer:
            specs.append([(0.1, 1.0), (s, 2.0), (s, 0.5)])
            continue
        layer_specs = [(s, float(ar)) for ar in aspect_ratios]
        if interpolated_scale_aspect_ratio > 0.0:
            layer_specs.append((float(np.sqrt(s * nxt[layer])), float(interpolated_scale_aspect_ratio)))
        specs.append(layer_specs)
    return specs


def _tile_layer(
    grid_h: int,
    grid_w: int,
    specs: Sequence[tuple[float, float]],
    base_hw: np.ndarray,
    stride_yx: np.ndarray,
    offset_yx: np.ndarray,
    dtype,
) -> np.ndarray:
    """Corners [ymin, xmin, ymax, xmax] of one layer, ordered (row, column, spec)."""
    sc = np.array([s for s, _ in specs], dtype=dtype)
    ar = np.array([a for _, a in specs], dtype=dtype)
    root = np.sqrt(ar)
    heights = sc / root * base_hw[0]
    widths = sc * root * base_hw[1]
    yc = np.arange(grid_h, dtype=dtype) * stride_yx[0] + offset_yx[0]
    xc = np.arange(grid_w, dtype=dtype) * stride_yx[1] + offset_yx[1]
    k = len(specs)
    shape = (grid_h, grid_w, k)
    cy = np.broadcast_to(yc[:, None, None], shape).reshape(-1)
    cx = np.broadcast_to(xc[None, :, None], shape).reshape(-1)
    hh = np.broadcast_to(heights[None, None, :], shape).reshape(-1)
    ww = np.broadcast_to(widths[None, None, :], shape).reshape(-1)
    half = dtype(0.5)
    return np.stack([cy - half * hh, cx - half * ww, cy + half * hh, cx + half * ww], axis=1)


def corners_to_center(boxes_yxyx: np.ndarray) -> np.ndarray:
    """[ymin, xmin, ymax, xmax] -> [ycenter, xcenter, height, width] (box_list's formula)."""
    b = np.asarray(boxes_yxyx)
    h = b[:, 2] - b[:, 0]
    w = b[:, 3] - b[:, 1]
    return np.stack([b[:, 0] + h / 2.0, b[:, 1] + w / 2.0, h, w], axis=1)


def center_to_corners(anchors_cyxhw: np.ndarray) -> np.ndarray:
    """[ycenter, xcenter, height, width] -> [ymin, xmin, ymax, xmax]."""
    a = np.asarray(anchors_cyxhw)
    return np.stack(
        [a[:, 0] - a[:, 2] / 2.0, a[:, 1] - a[:, 3] / 2.0, a[:, 0] + a[:, 2] / 2.0, a[:, 1] + a[:, 3] / 2.0],
        axis=1,
    )


def ssd_anchors(
    feature_maps: Sequence[tuple[int, int]],
    *,
    min_scale: float = 0.2,
    max_scale: float = 0.95,
    aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5, 3.0, 1.0 / 3),
    interpolated_scale_aspect_ratio: float = 1.0,
    reduce_boxes_in_lowest_layer: bool = True,
    base_anchor_size: tuple[float, float] = (1.0, 1.0),
    im_hw: tuple[float, float] = (1, 1),
    scales: Sequence[float] | None = None,
    anchor_strides: Sequence[tuple[float, float]] | None = None,
    anchor_offsets: Sequence[tuple[float, float]] | None = None,
    dtype=np.float64,
) -> np.ndarray:
    """SSD anchors (A, 4) as [ycenter, xcenter, height, width], normalised, in TF OD API order.

    ``feature_maps``: [(grid_h, grid_w), ...] finest first; one layer per entry.
    ``im_hw``: (height, width) of the network input; only its ratio matters for the default
    strides. For non-square inputs ``base_anchor_size`` is scaled by min(h, w)/h and
    min(h, w)/w so that an aspect-ratio-1 anchor is square in pixels.
    ``anchor_strides`` / ``anchor_offsets``: per-layer (y, x) in *pixels* (divided by im_hw);
    default stride = 1/grid size and offset = half a stride (cell centres).
    """
    dtype = np.dtype(dtype).type
    fmaps = [(int(h), int(w)) for h, w in feature_maps]
    specs = ssd_box_specs(
        len(fmaps),
        min_scale=min_scale,
        max_scale=max_scale,
        scales=scales,
        aspect_ratios=aspect_ratios,
        interpolated_scale_aspect_ratio=interpolated_scale_aspect_ratio,
        reduce_boxes_in_lowest_layer=reduce_boxes_in_lowest_layer,
    )
    for name, arg in (("anchor_strides", anchor_strides), ("anchor_offsets", anchor_offsets)):
        if arg and len(arg) != len(fmaps):
            raise ValueError(f"{name} must have one (y, x) pair per feature map")
    im_h, im_w = dtype(im_hw[0]), dtype(im_hw[1])
    if anchor_strides:
        strides = [np.array([dtype(sy) / im_h, dtype(sx) / im_w], dtype=dtype) for sy, sx in anchor_strides]
    else:
        strides = [np.array([dtype(1.0) / dtype(h), dtype(1.0) / dtype(w)], dtype=dtype) for h, w in fmaps]
    if anchor_offsets:
        offsets = [np.array([dtype(oy) / im_h, dtype(ox) / im_w], dtype=dtype) for oy, ox in anchor_offsets]
    else:
        offsets = [dtype(0.5) * s for s in strides]
    m = min(im_h, im_w)
    base = np.array([m / im_h * dtype(base_anchor_size[0]), m / im_w * dtype(base_anchor_size[1])], dtype=dtype)
    layers = [
        _tile_layer(h, w, sp, base, st, off, dtype)
        for (h, w), sp, st, off in zip(fmaps, specs, strides, offsets)
    ]
    corners = np.concatenate(layers, axis=0) if layers else np.zeros((0, 4), dtype=dtype)
    # Upstream stores corners and the exporter converts back to center/size; replay that.
    return corners_to_center(corners).astype(dtype, copy=False)


def encode(
    boxes_yxyx: np.ndarray,
    anchors: np.ndarray,
    scale_factors: Sequence[float] | None = DEFAULT_SCALE_FACTORS,
) -> np.ndarray:
    """FasterRcnnBoxCoder._encode: boxes [ymin,xmin,ymax,xmax] vs anchors [yc,xc,h,w] -> [ty,tx,th,tw].

    EPSILON is added to the anchor and box heights/widths before both the division and the log.
    ``scale_factors`` None/empty means no scaling (as upstream).
    """
    b = corners_to_center(np.asarray(boxes_yxyx, dtype=np.float64))
    a = np.asarray(anchors, dtype=np.float64)
    ya, xa, ha, wa = a[:, 0], a[:, 1], a[:, 2] + EPSILON, a[:, 3] + EPSILON
    y, x, h, w = b[:, 0], b[:, 1], b[:, 2] + EPSILON, b[:, 3] + EPSILON
    t = np.stack([(y - ya) / ha, (x - xa) / wa, np.log(h / ha), np.log(w / wa)], axis=1)
    if scale_factors:
        t = t * np.asarray(scale_factors, dtype=np.float64)[None, :]
    return t


def decode(
    rel_codes: np.ndarray,
    anchors: np.ndarray,
    scale_factors: Sequence[float] | None = DEFAULT_SCALE_FACTORS,
    exp_upper_bound: float | None = None,
) -> np.ndarray:
    """FasterRcnnBoxCoder._decode: codes [ty,tx,th,tw] + anchors [yc,xc,h,w] -> [ymin,xmin,ymax,xmax].

    No EPSILON and no clipping of th/tw on decode (upstream master). ``exp_upper_bound=80``
    reproduces the ``tf.minimum(t, 80)`` guard proposed in tensorflow/models PR #7233.
    """
    t = np.asarray(rel_codes, dtype=np.float64)
    if scale_factors:
        t = t / np.asarray(scale_factors, dtype=np.float64)[None, :]
    a = np.asarray(anchors, dtype=np.float64)
    ya, xa, ha, wa = a[:, 0], a[:, 1], a[:, 2], a[:, 3]
    th, tw = t[:, 2], t[:, 3]
    if exp_upper_bound is not None:
        th, tw = np.minimum(th, exp_upper_bound), np.minimum(tw, exp_upper_bound)
    h = np.exp(th) * ha
    w = np.exp(tw) * wa
    yc = t[:, 0] * ha + ya
    xc = t[:, 1] * wa + xa
    return np.stack([yc - h / 2.0, xc - w / 2.0, yc + h / 2.0, xc + w / 2.0], axis=1)


if __name__ == "__main__":
    np.set_printoptions(precision=6, suppress=True)
    fm = SSD_MOBILENET_300_FEATURE_MAPS
    anc = ssd_anchors(fm)
    per_layer = [h * w * len(s) for (h, w), s in zip(fm, ssd_box_specs(len(fm)))]
    print("anchors:", anc.shape, "per layer:", per_layer)
    assert anc.shape == (1917, 4), anc.shape
    assert sum(per_layer) == 1917

    print("box specs (scale, aspect):")
    for i, sp in enumerate(ssd_box_specs(len(fm))):
        print(f"  layer {i}:", [(round(s, 6), round(a, 6)) for s, a in sp])

    print("first 6 anchors [yc, xc, h, w]:")
    print(anc[:6])
    print("anchors 1083..1088 (first cell of layer 1):")
    print(anc[1083:1089])
    print("last anchor:", anc[-1])

    cfg = ssd_anchors(fm, aspect_ratios=TFOD_CONFIG_ASPECT_RATIOS)
    print("max |diff| using literal config 0.3333 vs 1/3:", float(np.abs(cfg - anc).max()))
    f32 = ssd_anchors(fm, dtype=np.float32)
    print("max |diff| float32 replay vs float64:", float(np.abs(f32 - anc).max()))

    # Non-square input: an aspect-1 anchor stays square in pixels.
    ns = ssd_anchors([(4, 8)], reduce_boxes_in_lowest_layer=False, aspect_ratios=(1.0,),
                     interpolated_scale_aspect_ratio=0.0, im_hw=(300, 600))
    assert np.allclose(ns[0, 2] * 300, ns[0, 3] * 600), ns[0]

    rng = np.random.default_rng(0)
    yx = rng.uniform(0.0, 0.8, size=(anc.shape[0], 2))
    hw = rng.uniform(0.01, 0.2, size=(anc.shape[0], 2))
    boxes = np.concatenate([yx, yx + hw], axis=1)
    codes = encode(boxes, anc)
    back = decode(codes, anc)
    err = float(np.abs(back - boxes).max())
    print("decode(encode(b)) max |err|:", err)
    # EPSILON is added on encode only, so the round trip is exact to ~1e-7 relative, not bitwise.
    assert np.allclose(back, boxes, atol=1e-6), err
    # Anchors encode to zero against themselves (up to EPSILON effects).
    assert np.abs(encode(center_to_corners(anc), anc)).max() < 1e-5
    print("self-check OK")
