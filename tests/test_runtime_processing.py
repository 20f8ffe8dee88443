"""Post-processing on hand-built arrays: top-k, SSD, YOLO (both layouts, both box units), NMS, letterbox mapping."""

import numpy as np
import pytest

from edgeship.errors import InputError, SpecError
from edgeship.runtime.processing import (box_iou, decode_ssd, decode_yolo, detect_format, make_postprocess, nms,
                                         resolve_task, split_ssd_outputs, top_k)
from edgeship.runtime.types import Classification, Detections, Result
from edgeship.spec import InputSpec
from edgeship.preprocess import resize_transform

LABELS = ("cat", "dog", "bird")


# ---- Detections ----------------------------------------------------------------------------------
def test_detections_validates_shapes_and_is_immutable():
    d = Detections([[0, 0, 10, 10], [5, 5, 20, 20]], [0.9, 0.4], [1, 2], LABELS)
    assert len(d) == 2 and d.names == ["dog", "bird"]
    sub = d[d.scores > 0.5]
    assert isinstance(sub, Detections) and len(sub) == 1 and sub.class_ids.tolist() == [1]
    assert d[1].names == ["bird"] and len(d[0:0]) == 0
    with pytest.raises(ValueError):
        d.xyxy[0, 0] = 3.0  # read-only arrays
    with pytest.raises(AttributeError):
        d.scores = np.zeros(2)
    with pytest.raises(InputError, match=r"xyxy must have shape \(N, 4\), got \(2, 3\)"):
        Detections(np.zeros((2, 3)), [1, 1], [0, 0])
    with pytest.raises(InputError, match=r"scores must have shape \(2,\), got \(3,\)"):
        Detections(np.zeros((2, 4)), [1, 1, 1], [0, 0])
    with pytest.raises(InputError, match="class_ids"):
        Detections(np.zeros((2, 4)), [1, 1], [0])
    assert len(Detections.empty()) == 0 and Detections.empty() == Detections(np.zeros((0, 4)), [], [])


def test_result_to_dict_is_json_ready():
    import json

    r = Result(3, 1.0, 1.5, "classify", classification=Classification(((1, "dog", 0.75),)),
               raw=(np.ones((1, 3), np.float32),), latency_ms={"infer": 1.23456})
    d = json.loads(json.dumps(r.to_dict()))
    assert d["classification"] == [{"class_id": 1, "label": "dog", "score": 0.75}]
    assert d["latency_ms"] == {"infer": 1.235} and "raw" not in d
    raw = Result(0, 0.0, 0.0, "raw", raw=(np.arange(4.0),)).to_dict()
    assert raw["raw"][0]["values"] == [0.0, 1.0, 2.0, 3.0]


# ---- classification ------------------------------------------------------------------------------
def test_top_k_orders_labels_and_thresholds():
    c = top_k(np.array([[0.1, 0.6, 0.3]]), 2, labels=LABELS)
    assert [t[:2] for t in c.top] == [(1, "dog"), (2, "bird")] and c.label == "dog"
    assert c.score == pytest.approx(0.6)
    assert len(top_k(np.array([0.1, 0.6, 0.3]), 3, threshold=0.25)) == 2
    assert top_k(np.array([0.5, 0.5]), 5).top[0][0] == 0  # k clipped, stable ties
    # ties in class order, at the cut too: the same top-k on every CPU (numpy partitions ties differently on ARM)
    tied = np.zeros(1000, np.float32)
    tied[[999, 3, 500, 7]] = [0.9, 0.00391, 0.00391, 0.00391]
    assert [t[0] for t in top_k(tied, 3).top] == [999, 3, 7]
    assert [t[0] for t in top_k(tied, 5).top] == [999, 3, 7, 500, 0]
    assert top_k(np.array([0.5]), 1, labels=None).label == "0"  # no label -> id text
    logits = top_k(np.array([2.0, -1.0, 0.0]), 3)  # outside [0, 1] -> softmax
    assert sum(s for _, _, s in logits.top) == pytest.approx(1.0, abs=1e-5) and logits.class_id == 0
    with pytest.raises(SpecError):
        top_k(np.array([]), 1)


# ---- NMS -----------------------------------------------------------------------------------------
def test_box_iou_and_nms():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    assert box_iou(boxes[:1], boxes[1:2])[0, 0] == pytest.approx(81 / 119)
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    # class-wise: the same box in another class survives
    assert nms(boxes, scores, 0.5, class_ids=np.array([0, 0, 0, 1])).tolist() == [0, 2, 3]
    assert nms(boxes, scores, 0.9).tolist() == [0, 1, 2]  # IoU 0.68 < 0.9 keeps both
    assert nms(boxes, scores, 0.5, max_det=1).tolist() == [0]
    assert nms(np.zeros((0, 4)), np.zeros(0)).size == 0


# ---- SSD -----------------------------------------------------------------------------------------
def _ssd_outputs():
    boxes = np.array([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.2, 0.2, 0.3, 0.3]]], np.float32)  # ymin, xmin, ymax, xmax
    classes = np.array([[2, 0, 1]], np.float32)
    scores = np.array([[0.9, 0.6, 0.1]], np.float32)
    count = np.array([3.0], np.float32)
    return boxes, classes, scores, count


def test_decode_ssd_stretch_maps_to_source_pixels():
    spec = InputSpec(300, 300)
    boxes, classes, scores, count = _ssd_outputs()
    b, c, s, n = split_ssd_outputs([boxes, classes, scores, count])
    assert n == 3 and c.tolist() == [2, 0, 1]
    det = decode_ssd(b, c, s, n, input_hw=(300, 300), transform=resize_transform((480, 640), spec), threshold=0.5, labels=LABELS)
    assert len(det) == 2 and det.names == ["bird", "cat"]
    np.testing.assert_allclose(det.xyxy[0], [0.2 * 640, 0.1 * 480, 0.6 * 640, 0.5 * 480], rtol=1e-5)
    np.testing.assert_allclose(det.xyxy[1], [0, 0, 640, 480], rtol=1e-5)
    # count limits the valid rows
    assert len(decode_ssd(b, c, s, 1, input_hw=(300, 300), transform=resize_transform((480, 640), spec), threshold=0.0)) == 1


def test_split_ssd_by_names_and_errors():
    boxes, classes, scores, count = _ssd_outputs()
    # scores listed first, told apart by names
    b, c, s, n = split_ssd_outputs([boxes, scores, classes, count], ["boxes", "detection_scores", "detection_classes", "num"])
    assert c.tolist() == [2, 0, 1] and s.tolist() == pytest.approx([0.9, 0.6, 0.1])
    with pytest.raises(SpecError, match="boxes"):
        split_ssd_outputs([classes, scores, count])
    assert detect_format([boxes.shape, classes.shape, scores.shape, count.shape]) == "ssd"


# ---- YOLO ----------------------------------------------------------------------------------------
def _yolo_raw(normalized: bool, size: int = 640):
    """Three anchors (cx, cy, w, h + 2 class scores): two overlapping 'cat's and one 'dog'."""
    k = 1.0 if normalized else float(size)
    anchors = np.array([
        [0.5 * k, 0.5 * k, 0.2 * k, 0.2 * k, 0.9, 0.05],
        [0.51 * k, 0.5 * k, 0.2 * k, 0.2 * k, 0.8, 0.10],   # overlaps anchor 0, same class -> suppressed
        [0.51 * k, 0.5 * k, 0.2 * k, 0.2 * k, 0.1, 0.70],   # same place, other class -> kept
        [0.1 * k, 0.1 * k, 0.05 * k, 0.05 * k, 0.1, 0.1],   # below threshold
    ], np.float32)
    return anchors  # (A, 4+nc)


@pytest.mark.parametrize("normalized", [True, False])
@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_decode_yolo_layouts_units_and_nms(normalized, layout):
    a = _yolo_raw(normalized)
    out = a.T[None] if layout == "channels_first" else a[None]  # (1, 6, 4) or (1, 4, 6)
    spec = InputSpec(640, 640)
    det = decode_yolo(out, input_hw=(640, 640), transform=resize_transform((640, 640), spec), threshold=0.25,
                      labels=("cat", "dog"))
    assert det.names == ["cat", "dog"]
    np.testing.assert_allclose(det.xyxy[0], [256, 256, 384, 384], atol=1e-3)
    np.testing.assert_allclose(det.scores, [0.9, 0.7], rtol=1e-6)


def test_decode_yolo_ultralytics_shape_and_letterbox():
    # Ultralytics (1, 84, 8400)-style: many anchors, 80 classes; one real box
    nc, anchors = 80, 8400
    out = np.zeros((1, 4 + nc, anchors), np.float32)
    out[0, :4, 123] = [320, 320 + 40, 64, 32]  # pixels of the 640x640 letterboxed input
    out[0, 4 + 17, 123] = 0.88
    spec = InputSpec(640, 640, resize="letterbox")
    t = resize_transform((720, 1280), spec)  # 1280x720 frame -> scale 0.5, pad_y 140
    det = decode_yolo(out, input_hw=(640, 640), transform=t, threshold=0.25)
    assert len(det) == 1 and det.class_ids.tolist() == [17]
    x1, y1, x2, y2 = det.xyxy[0]
    assert (x1, x2) == pytest.approx((576, 704)) and (y1, y2) == pytest.approx(((344 - 140) / 0.5, (376 - 140) / 0.5))
    assert detect_format([out.shape]) == "yolo"


def test_postprocess_registry_and_task_resolution():
    spec = InputSpec(640, 640)
    post = make_postprocess("detect", spec=spec, labels=["cat", "dog"], output_shapes=[(1, 6, 4)])
    fields = post([_yolo_raw(True).T[None]], (480, 640))
    assert len(fields["detections"]) == 2
    cls = make_postprocess("classify", labels=list(LABELS), top_k=1)
    assert cls([np.array([[0.2, 0.1, 0.7]])], (10, 10))["classification"].label == "bird"
    assert make_postprocess("raw")([np.zeros(3)], (1, 1)) == {}
    with pytest.raises(InputError, match="task must be one of"):
        make_postprocess("segment")
    assert resolve_task(None, None, [(1, 10)]) == "classify"
    assert resolve_task(None, "detect", [(1, 10)]) == "detect"
    assert resolve_task("raw", "detect", [(1, 10)]) == "raw"
    assert resolve_task(None, None, [(1, 4, 8), (1, 8)]) == "raw"
    with pytest.raises(SpecError, match="detection format"):
        detect_format([(1, 2, 3, 4, 5)])


def test_litert_outputs_follow_the_manifest_order():
    from types import SimpleNamespace

    from edgeship.manifest import TensorInfo
    from edgeship.formats.tflite import order_by_manifest

    details = [{"name": "b", "index": 7}, {"name": "a", "index": 3}]
    m = SimpleNamespace(outputs=[TensorInfo("a", [1, 2], "float32"), TensorInfo("b", [1, 2], "float32")])
    assert [d["index"] for d in order_by_manifest(details, m)] == [3, 7]
    assert [d["index"] for d in order_by_manifest(details, None)] == [7, 3]
    m2 = SimpleNamespace(outputs=[TensorInfo("a", [1], "float32"), TensorInfo("zzz", [1], "float32")])
    assert [d["index"] for d in order_by_manifest(details, m2)] == [7, 3]  # names don't match: file order


# ---- TF Object Detection API SSD heads (anchors + Faster R-CNN box coder) ---------------------------
def _tfod_outputs(anchors_cyxhw, targets, n_classes=3, *, probabilities=True):
    """Raw box_encodings (1, A, 4) and class_predictions (1, A, 1 + C) that put each target box
    (ymin, xmin, ymax, xmax, class index) on the anchors that overlap it most, encoded with the reference coder."""
    from tests.helpers.tfod_reference import center_to_corners, encode

    a = np.asarray(anchors_cyxhw)
    enc = np.zeros((len(a), 4), np.float32)
    cls = np.full((len(a), 1 + n_classes), 0.01 if probabilities else -6.0, np.float32)
    cls[:, 0] = 0.99 if probabilities else 6.0  # background
    corners = center_to_corners(a)
    for *box, c in targets:
        iou = box_iou(np.asarray([box])[:, [1, 0, 3, 2]], corners[:, [1, 0, 3, 2]])[0]
        for i in np.argsort(-iou)[:3]:  # the three best anchors all predict the box
            enc[i] = encode(np.asarray([box]), a[i:i + 1])[0]
            cls[i, 0], cls[i, 1 + c] = (0.01, 0.9) if probabilities else (-6.0, 3.0)
    return [enc[None], cls[None]]


def test_tfod_anchors_match_the_reference_generator():
    from edgeship.runtime.processing.anchors import PRESETS, GridAnchorSpec, anchor_spec, grid_anchors
    from tests.helpers import tfod_reference as ref

    ours = grid_anchors(PRESETS["ssd-300"])
    theirs = ref.ssd_anchors(ref.SSD_MOBILENET_300_FEATURE_MAPS, aspect_ratios=ref.TFOD_CONFIG_ASPECT_RATIOS)
    assert ours.shape == (1917, 4) and np.allclose(ours, theirs, atol=1e-7)  # ssd_mobilenet_v1/v2_coco's 1917
    # a non-square input, other scales and ratios, no reduced lowest layer, no interpolated box
    custom = {"type": "tf-od", "input_hw": [240, 320], "feature_maps": [[15, 20], [8, 10], [4, 5]], "min_scale": 0.1,
              "max_scale": 0.8, "aspect_ratios": [1.0, 2.0], "reduce_boxes_in_lowest_layer": False,
              "interpolated_scale_aspect_ratio": 0.0}
    spec = anchor_spec(custom)
    assert isinstance(spec, GridAnchorSpec)
    theirs = ref.ssd_anchors([(15, 20), (8, 10), (4, 5)], min_scale=0.1, max_scale=0.8, aspect_ratios=(1.0, 2.0),
                             reduce_boxes_in_lowest_layer=False, interpolated_scale_aspect_ratio=0.0, im_hw=(240, 320))
    assert spec.count() == (300 + 80 + 20) * 2 and np.allclose(grid_anchors(spec), theirs, atol=1e-7)
    for bad, message in (({**custom, "feature_maps": []}, "feature_maps"), ({**custom, "colour": 1}, "unknown key"),
                         ({**custom, "type": "yolo"}, "anchors type must be one of"),
                         ({**custom, "scores_from": "tanh"}, "scores_from")):
        with pytest.raises(SpecError, match=message):
            anchor_spec(bad)


@pytest.mark.parametrize("probabilities", [True, False], ids=["scores", "logits"])
def test_tfod_head_decodes_to_boxes_in_the_source_frame(probabilities):
    from edgeship.runtime.processing.anchors import PRESETS, grid_anchors

    spec = InputSpec(300, 300)  # stretch: a 640x480 frame maps x by 640/300, y by 480/300
    targets = [(0.2, 0.3, 0.6, 0.5, 1), (0.55, 0.6, 0.95, 0.9, 0)]  # ymin, xmin, ymax, xmax (normalised), class
    outs = _tfod_outputs(grid_anchors(PRESETS["ssd-300"]), targets, probabilities=probabilities)
    post = make_postprocess("detect", spec=spec, labels=["cat", "dog", "bird"], anchors="ssd-300",
                            output_shapes=[o.shape for o in outs])
    det = post(outs, (480, 640))["detections"]
    assert len(det) == 2 and sorted(det.names) == ["cat", "dog"]
    for (y0, x0, y1, x1, c) in targets:
        i = det.names.index(["cat", "dog", "bird"][c])
        assert np.allclose(det.xyxy[i], [x0 * 640, y0 * 480, x1 * 640, y1 * 480], atol=0.05)
        assert det.scores[i] == pytest.approx(0.9 if probabilities else 1 / (1 + np.exp(-3.0)), abs=1e-4)
    # the class output listed first: with 3 classes + background both are 4 wide, so the names decide
    named = make_postprocess("detect", spec=spec, labels=["cat", "dog", "bird"], anchors="ssd-300",
                             output_shapes=[o.shape for o in outs[::-1]],
                             output_names=["raw_outputs/class_predictions", "raw_outputs/box_encodings"])
    assert np.allclose(named(outs[::-1], (480, 640))["detections"].xyxy, det.xyxy)
    wider = _tfod_outputs(grid_anchors(PRESETS["ssd-300"]), targets, n_classes=5)[::-1]  # unnamed: by width
    assert len(make_postprocess("detect", spec=spec, anchors="ssd-300", output_shapes=[o.shape for o in wider])(
        wider, (480, 640))["detections"]) == 2
    with pytest.raises(SpecError, match="gives 1917 anchors"):
        make_postprocess("detect", spec=spec, anchors="ssd-300", output_shapes=[(1, 2034, 4), (1, 2034, 91)])
