import json
import subprocess
import sys

import numpy as np
import pytest

from edgeship.errors import SpecError
from edgeship.spec import InputSpec, parse_size, preprocess, preprocess_batch, resize_transform


def frame(h=48, w=64):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_json_round_trip():
    s = InputSpec(96, 128, resize="letterbox", scale=1 / 127.5, mean=1.0, std=1.0, layout="NCHW")
    assert InputSpec.from_json(s.to_json()) == s
    assert InputSpec.from_dict(json.loads(s.to_json())).sample_shape == (3, 96, 128)


def test_stretch_rgb_normalisation_matches_formula():
    f = frame()
    s = InputSpec(24, 32, scale=1 / 255, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    out = preprocess(f, s)
    import cv2

    ref = cv2.resize(f, (32, 24), interpolation=cv2.INTER_AREA)[:, :, ::-1].astype(np.float32) / 255
    ref = (ref - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.25, 0.5])
    assert out.shape == (24, 32, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_bgr_order_and_nchw():
    f = frame()
    rgb = preprocess(f, InputSpec(48, 64))
    bgr = preprocess(f, InputSpec(48, 64, color_order="BGR", layout="NCHW"))
    np.testing.assert_allclose(rgb[:, :, 0], bgr[2])


def test_letterbox_pads_and_transform_maps_back():
    f = np.full((100, 200, 3), 255, dtype=np.uint8)
    s = InputSpec(100, 100, resize="letterbox", scale=1.0, dtype="float32")
    out = preprocess(f, s)
    assert out[0, 0, 0] == 114 and out[50, 50, 0] == 255  # padded top, image in the middle
    t = resize_transform((100, 200), s)
    box_in = np.array([[0, 25, 100, 75]], dtype=np.float32)  # full image area in model pixels
    np.testing.assert_allclose(t.to_source(box_in), [[0, 0, 200, 100]], atol=1)


def test_center_crop_keeps_centre():
    f = np.zeros((100, 300, 3), dtype=np.uint8)
    f[:, 100:200] = 255
    out = preprocess(f, InputSpec(50, 50, resize="center-crop", scale=1.0))
    assert out.min() == 255  # only the white centre is kept


def test_gray_and_uint8():
    s = InputSpec(16, 16, channels=1, dtype="uint8")
    out = preprocess(frame(), s)
    assert out.shape == (16, 16, 1) and out.dtype == np.uint8
    assert s.color_order == "GRAY"


def test_batch_and_value_range():
    s = InputSpec(8, 8, scale=1 / 127.5, mean=1.0)
    b = preprocess_batch([frame(), frame(20, 20)], s)
    assert b.shape == (2, 8, 8, 3)
    assert s.value_range() == pytest.approx((-1.0, 1.0))
    assert b.min() >= -1 and b.max() <= 1


@pytest.mark.parametrize("bad", [dict(height=0, width=4), dict(height=4, width=4, resize="zoom"),
                                 dict(height=4, width=4, mean=(1, 2)), dict(height=4, width=4, std=0)])
def test_invalid_specs_raise(bad):
    with pytest.raises(SpecError):
        InputSpec(**bad)


def test_preprocess_rejects_wrong_dtype():
    with pytest.raises(SpecError, match="uint8"):
        preprocess(np.zeros((4, 4, 3), np.float32), InputSpec(4, 4))


def test_parse_size():
    assert parse_size("224x160") == (224, 160)
    assert parse_size("96") == (96, 96)
    with pytest.raises(SpecError, match="HxW"):
        parse_size("big")


def test_spec_module_is_light():
    code = "import sys, edgeship.spec, edgeship.manifest; bad=[m for m in ('tensorflow','keras','tf_keras','nncf') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("resize", ["stretch", "letterbox", "center-crop"])
def test_gray_model_from_colour_and_gray_frames(resize):
    s = InputSpec(20, 30, channels=1, resize=resize)
    for f in (frame(), frame()[:, :, 0], frame()[:, :, :1]):
        out = preprocess(f, s)
        assert out.shape == (20, 30, 1) and out.dtype == np.float32
