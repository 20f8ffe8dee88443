import json
import subprocess
import sys

import numpy as np
import pytest

from edgeship.errors import SpecError
from edgeship.spec import InputSpec, parse_size
from edgeship.preprocess import preprocess, preprocess_batch, resize_transform


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


def test_spec_is_data_only():
    """InputSpec imports nothing of edgeship's but its errors (no cycle with the manifest, no converters)."""
    code = "import sys, edgeship.spec; print(sorted(m for m in sys.modules if m.startswith('edgeship.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['edgeship.errors', 'edgeship.spec']"


@pytest.mark.parametrize("resize", ["stretch", "letterbox", "center-crop"])
def test_gray_model_from_colour_and_gray_frames(resize):
    s = InputSpec(20, 30, channels=1, resize=resize)
    for f in (frame(), frame()[:, :, 0], frame()[:, :, :1]):
        out = preprocess(f, s)
        assert out.shape == (20, 30, 1) and out.dtype == np.float32


# ---- interpolation and the quantized look-up-table path -------------------------------------------
def natural_frame(h=480, w=640, seed=0):
    """Smooth structure plus fine noise: the case where interpolations differ."""
    import cv2

    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    return cv2.add(base, rng.integers(0, 40, (h, w, 3), dtype=np.uint8))


def test_interpolation_area_is_opencv_area_and_pyramid_stays_close_to_it():
    import cv2

    from edgeship.spec import INTERPOLATIONS

    f = natural_frame()
    assert InputSpec(8, 8).interpolation == "pyramid" and set(INTERPOLATIONS) == {"pyramid", "area", "linear"}
    area = preprocess(f, InputSpec(224, 224, scale=1.0, color_order="BGR", interpolation="area"))
    np.testing.assert_array_equal(area, cv2.resize(f, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32))
    pyr = preprocess(f, InputSpec(224, 224, scale=1.0, color_order="BGR", interpolation="pyramid"))
    lin = preprocess(f, InputSpec(224, 224, scale=1.0, color_order="BGR", interpolation="linear"))
    np.testing.assert_array_equal(lin, cv2.resize(f, (224, 224), interpolation=cv2.INTER_LINEAR_EXACT).astype(np.float32))
    # pyramid anti-aliases like area; plain bilinear aliases the fine noise
    assert np.abs(pyr - area).mean() < 3.0 < np.abs(lin - area).mean()
    # one axis shrinking, the other growing: area keeps INTER_AREA (the rule older specs were calibrated with)
    np.testing.assert_array_equal(preprocess(f, InputSpec(100, 900, scale=1.0, color_order="BGR", interpolation="area")),
                                  cv2.resize(f, (900, 100), interpolation=cv2.INTER_AREA).astype(np.float32))
    # growing only is always bilinear, whatever the interpolation
    small = f[:20, :30]
    for interp in INTERPOLATIONS:
        np.testing.assert_array_equal(preprocess(small, InputSpec(40, 60, scale=1.0, color_order="BGR", interpolation=interp)),
                                      cv2.resize(small, (60, 40), interpolation=cv2.INTER_LINEAR_EXACT).astype(np.float32))


def test_specs_saved_before_interpolation_existed_read_back_as_area():
    d = InputSpec(32, 32).to_dict()
    assert d["interpolation"] == "pyramid" and InputSpec.from_dict(d).interpolation == "pyramid"
    d.pop("interpolation")
    assert InputSpec.from_dict(d).interpolation == "area"  # how those artifacts were calibrated
    with pytest.raises(SpecError, match="interpolation must be one of pyramid, area, linear, got 'cubic'"):
        InputSpec(32, 32, interpolation="cubic")


@pytest.mark.parametrize("spec", [
    InputSpec(224, 224, scale=1 / 127.5, mean=(1.0,), std=(1.0,)),
    InputSpec(64, 80, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), resize="letterbox"),
    InputSpec(32, 32, channels=1, interpolation="area"),
    InputSpec(48, 48, color_order="BGR", layout="NCHW", resize="center-crop", interpolation="linear"),
], ids=["mobilenet", "imagenet-letterbox", "gray-area", "bgr-nchw-crop"])
@pytest.mark.parametrize("quant", [("int8", 1 / 128, 0), ("int8", 0.0041, -128), ("uint8", 0.02, 3), ("int8", 0.003921568859368563, -128),
                                   ("uint8", 0.003921568859368563, 0)], ids=["i8", "i8zp", "u8", "i8-255", "u8-255"])
def test_quantized_preprocess_is_bit_identical_to_quantizing_the_float_sample(spec, quant):
    from edgeship.preprocess import Quantization, quantize_values

    q = Quantization(quant[1], quant[2], quant[0])
    f = natural_frame(120, 160, seed=3)
    direct = preprocess(f, spec, q)
    ref = quantize_values(preprocess(f, spec), q)
    assert direct.dtype == np.dtype(quant[0]) and direct.shape == spec.sample_shape and direct.flags.c_contiguous
    np.testing.assert_array_equal(direct, ref)


def test_byte_shift_takes_the_place_of_the_table_only_where_it_is_bit_identical():
    import cv2

    from edgeship.preprocess import Quantization, apply_value_table, byte_shift, value_table

    rgb255 = InputSpec(32, 32, scale=1 / 255)
    int8_255 = Quantization(0.003921568859368563, -128, "int8")  # a [0, 1] input quantized as TFLite does
    cases = {  # (spec, quantization): expected (low, high, offset, dtype) or None
        (rgb255, int8_255): (0, 255, -128, np.dtype(np.int8)),
        (rgb255, Quantization(0.003921568859368563, 0, "uint8")): (0, 255, 0, np.dtype(np.uint8)),
        (rgb255, Quantization(0.003921568859368563, -100, "int8")): (0, 227, -100, np.dtype(np.int8)),  # clips high
        (InputSpec(32, 32, scale=1 / 255, mean=(0.2,), std=(1.0,)), Quantization(0.003921568859368563, 0, "uint8")):
            (51, 255, -51, np.dtype(np.uint8)),  # clips low
        (rgb255, Quantization(0.0041, -128, "int8")): None,  # not one step per byte
        (InputSpec(32, 32, scale=1 / 127.5, mean=(1.0,), std=(1.0,)), Quantization(0.007843137718737125, -1, "int8")): None,
        (InputSpec(32, 32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)), int8_255): None,  # per channel
        (rgb255, None): None,  # float32 values
    }
    img = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    for (spec, q), want in cases.items():
        assert byte_shift(spec, q) == want, (spec, q)
        np.testing.assert_array_equal(apply_value_table(img, spec, q), cv2.LUT(img, value_table(spec, q)))
