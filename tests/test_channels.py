"""Structured channel pruning: dependency groups traced from real Keras 3 graphs, exact surgery, FLOPs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeship.errors import InputError

keras = pytest.importorskip("keras")
from edgeship.converters import channels as C  # noqa: E402

L = keras.layers


# ---- models ------------------------------------------------------------------------------------------------
def _randomize_bn(model, seed=0):
    """BatchNorm layers start as identities; give them statistics so that slicing them is tested."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.2, c), rng.uniform(0.5, 1.5, c)])
    return model


def seq_cnn():
    keras.utils.set_random_seed(1)
    return _randomize_bn(keras.Sequential([
        keras.Input((16, 16, 3)),
        L.Conv2D(16, 3, padding="same", name="conv1"), L.BatchNormalization(name="bn1"), L.ReLU(name="relu1"),
        L.MaxPooling2D(name="pool"),
        L.Conv2D(16, 3, name="conv2"), L.ReLU(name="relu2"), L.Dropout(0.2, name="drop"),
        L.Flatten(name="flat"), L.Dense(32, activation="relu", name="fc"), L.Dense(10, name="logits"),
    ], name="seq_cnn"))


def residual_cnn():
    keras.utils.set_random_seed(2)
    i = keras.Input((16, 16, 3))
    x = L.ReLU(name="stem_relu")(L.BatchNormalization(name="stem_bn")(L.Conv2D(16, 3, padding="same", name="stem")(i)))
    a = L.ReLU(name="a_relu")(L.BatchNormalization(name="a_bn")(L.Conv2D(24, 3, padding="same", name="a")(x)))
    b = L.BatchNormalization(name="b_bn")(L.Conv2D(24, 3, padding="same", name="b")(a))
    y = L.ReLU(name="res_relu")(L.Add(name="res_add")([a, b]))
    y = L.Conv2D(16, 1, name="mid")(y)
    y = L.GlobalAveragePooling2D(name="gap")(y)
    return _randomize_bn(keras.Model(i, L.Dense(10, name="logits")(y), name="residual_cnn"))


def concat_cnn():
    keras.utils.set_random_seed(3)
    i = keras.Input((12, 12, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(i)
    p = L.ReLU(name="p_relu")(L.Conv2D(16, 3, padding="same", name="p")(x))
    q = L.ReLU(name="q_relu")(L.Conv2D(24, 1, name="q")(x))
    y = L.Concatenate(name="cat")([p, q])
    y = L.Conv2D(16, 3, name="after_cat")(y)
    y = L.GlobalMaxPooling2D(name="gmp")(y)
    return keras.Model(i, L.Dense(5, name="logits")(y), name="concat_cnn")


def se_cnn():
    keras.utils.set_random_seed(4)
    i = keras.Input((12, 12, 3))
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="stem")(i)
    c = L.ReLU(name="c_relu")(L.Conv2D(32, 3, padding="same", name="c")(x))
    s = L.GlobalAveragePooling2D(name="se_pool")(c)
    s = L.Dense(16, activation="relu", name="se_reduce")(s)
    s = L.Dense(32, activation="sigmoid", name="se_expand")(s)
    s = L.Reshape((1, 1, 32), name="se_reshape")(s)
    y = L.Multiply(name="se_mul")([c, s])
    y = L.Conv2D(16, 1, name="proj")(y)
    y = L.GlobalAveragePooling2D(name="gap")(y)
    return keras.Model(i, L.Dense(4, name="logits")(y), name="se_cnn")


def separable_cnn():
    keras.utils.set_random_seed(5)
    i = keras.Input((12, 12, 3))
    x = L.Conv2D(16, 3, padding="same", name="stem")(i)
    x = L.ReLU(name="dw_relu")(L.BatchNormalization(name="dw_bn")(L.DepthwiseConv2D(3, padding="same", name="dw")(x)))
    x = L.Conv2D(32, 1, name="pw")(x)
    x = L.SeparableConv2D(24, 3, depth_multiplier=2, padding="same", name="sep")(x)
    x = L.PReLU(shared_axes=[1, 2], name="prelu")(x)
    x = L.Conv2DTranspose(16, 3, strides=2, padding="same", name="up")(x)
    x = L.LeakyReLU(name="leaky")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return _randomize_bn(keras.Model(i, L.Dense(3, name="logits")(x), name="separable_cnn"))


def lambda_cnn():
    keras.utils.set_random_seed(6)
    i = keras.Input((12, 12, 3))
    x = L.Conv2D(16, 3, padding="same", name="stem")(i)
    x = L.Conv2D(16, 3, padding="same", name="a")(x)
    x = L.Lambda(lambda t: t * 2.0, name="double")(x)
    x = L.Conv2D(16, 3, padding="same", name="b")(x)
    x = L.ReLU(name="b_relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(i, L.Dense(3, name="logits")(x), name="lambda_cnn")


def zoo_cnn():
    """Many layer kinds at once: per-channel Normalization and Rescaling, LayerNorm, keras.ops nodes, a broadcast gate,
    a shared conv, depthwise_multiplier 2, a concat along height, a nested model, Reshape/Conv1D, Flatten."""
    from keras import ops

    keras.utils.set_random_seed(10)
    i = keras.Input((16, 16, 3), name="image")
    x = L.Conv2D(16, 3, padding="same", name="stem")(i)
    x = L.Conv2D(16, 3, padding="same", name="c1")(x)
    x = L.Normalization(mean=np.linspace(-1, 1, 16).tolist(), variance=np.linspace(1, 2, 16).tolist(), name="norm")(x)
    x = L.Rescaling(np.linspace(0.5, 1.5, 16).tolist(), offset=0.1, name="scale_c1")(x)
    x = L.Cropping2D(1, name="crop")(L.ZeroPadding2D(1, name="pad")(x))
    x = L.SpatialDropout2D(0.1, name="sdrop")(L.ELU(name="elu")(x))
    m = L.Maximum(name="max")([L.Conv2D(24, 3, padding="same", name="a")(x), L.Conv2D(24, 1, name="b")(x)])
    m = L.LayerNormalization(name="ln")(L.Average(name="avg")([m, L.Conv2D(24, 1, name="c")(x)]))
    m = ops.relu(m) * 0.5 + 1.0
    m = L.Multiply(name="gate_mul")([m, L.Conv2D(1, 1, activation="sigmoid", name="spatial_gate")(m)])
    m = L.MaxPooling2D(name="maxpool")(L.AveragePooling2D(2, name="avgpool")(L.UpSampling2D(name="up")(m)))
    m = L.Rescaling(0.5, name="rescale")(L.Conv2D(16, 3, padding="same", name="d")(m))
    shared = L.Conv2D(16, 1, name="shared")
    m = L.Add(name="add_shared")([shared(m), shared(L.ReLU(name="r2")(m))])
    m = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw2")(L.Conv2D(16, 1, name="e")(m))
    m = L.BatchNormalization(name="f_bn")(L.Conv2D(32, 1, name="f")(m))
    m = ops.multiply(m, ops.sigmoid(m))
    cat = L.Concatenate(axis=1, name="vcat")([m, L.Conv2D(32, 1, name="g")(m)])
    inner = keras.Sequential([keras.Input((16, 8, 32)), L.Conv2D(16, 1, name="inner_conv")], name="inner")
    n = L.Conv2D(24, 1, name="h")(inner(cat))
    r = L.GlobalAveragePooling1D(name="gap1d")(L.Conv1D(16, 3, padding="same", name="c1d")(L.Reshape((128, 24), name="seq")(n)))
    w = L.Flatten(name="flat")(L.GlobalMaxPooling2D(keepdims=True, name="gmp")(L.Conv2D(16, 1, name="k")(n)))
    out = L.Dense(16, name="fc")(L.Concatenate(name="cat_out")([r, w]))
    return keras.Model(i, L.Softmax(name="probs")(L.Dense(5, name="logits")(out)), name="zoo_cnn")


SMALL = [seq_cnn, residual_cnn, concat_cnn, se_cnn, separable_cnn, zoo_cnn]


def _x(model, n=4, seed=0, scale=1.0):
    shape = tuple(model.inputs[0].shape[1:])
    return (np.random.default_rng(seed).uniform(-1, 1, (n, *shape)) * scale).astype(np.float32)


def _out(model, x):
    return np.asarray(model(x, training=False), dtype=np.float64)


@pytest.fixture(scope="module")
def mobilenet_v2():
    keras.utils.set_random_seed(7)
    return keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None)


@pytest.fixture(scope="module")
def mobilenet_v3():
    keras.utils.set_random_seed(8)
    return keras.applications.MobileNetV3Small(input_shape=(96, 96, 3), weights=None)


# ---- exactness -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("maker", SMALL, ids=lambda m: m.__name__)
def test_ratio_zero_rebuilds_the_same_function(maker):
    model = maker()
    pruned, report = C.prune_channels(model, ratio=0.0)
    assert pruned is not model and type(pruned).__name__ == type(model).__name__
    assert [layer.name for layer in pruned.layers] == [layer.name for layer in model.layers]
    x = _x(model)
    assert np.max(np.abs(_out(model, x) - _out(pruned, x))) < 1e-6
    assert report.params_after == report.params_before and report.flops_after == report.flops_before
    assert report.pruned_groups == 0 and (report.frozen == {} or maker is zoo_cnn)


def test_the_zoo_freezes_only_what_it_does_not_understand(tmp_path):
    model = zoo_cnn()
    pruned, report = C.prune_channels(model, ratio=0.5)
    assert set(report.frozen) == {"shared", "dw2", "inner", "probs"}
    assert "shared layer" in report.frozen["shared"] and "depth_multiplier=2" in report.frozen["dw2"]
    assert "nested model" in report.frozen["inner"] and "channel axis" in report.frozen["probs"]
    after = {name: ch["after"] for name, ch in report.layers.items()}
    assert after["c1"] == after["norm"] == 8 and after["a"] == after["b"] == after["c"] == after["ln"] == 16
    assert after["d"] == after["e"] == 16 and after["f"] == after["g"] == 32  # touched by frozen layers
    assert after["h"] == 16 and after["k"] == after["c1d"] == after["fc"] == 8 and after["spatial_gate"] == 1
    keep = C.plan(model, 0.5).group("c1").keep  # per-channel config values follow the kept channels
    np.testing.assert_allclose(pruned.get_layer("scale_c1").scale, np.linspace(0.5, 1.5, 16)[keep], rtol=1e-6)
    np.testing.assert_allclose(np.ravel(pruned.get_layer("norm").mean), np.linspace(-1, 1, 16)[keep], rtol=1e-6)
    x = _x(model)
    pruned.save(tmp_path / "zoo.keras")
    loaded = keras.saving.load_model(tmp_path / "zoo.keras")
    assert np.max(np.abs(_out(pruned, x) - _out(loaded, x))) < 1e-6


def test_a_plan_applies_to_a_saved_copy_and_serializes(tmp_path):
    import json

    model = residual_cnn()
    model.save(tmp_path / "res.keras")
    p = C.plan(model, ratio=0.5)
    copy = keras.saving.load_model(tmp_path / "res.keras")
    x = _x(model)
    np.testing.assert_allclose(_out(C.apply(model, p), x), _out(C.apply(copy, p), x), atol=1e-6)
    pruned, report = C.prune_channels(str(tmp_path / "res.keras"), ratio=0.5)
    np.testing.assert_allclose(_out(pruned, x), _out(C.apply(model, p), x), atol=1e-6)
    data = json.loads(json.dumps(p.to_dict()))
    assert {g["name"]: g["removed"] for g in data["groups"]}["a"] == 8 and data["flops_after"] < data["flops_before"]
    assert "_graph" not in data and json.dumps(report.to_dict())


def test_groups_follow_residuals_concats_se_and_depthwise():
    groups = {g.name: g for g in C.dependency_groups(residual_cnn())}
    assert groups["a"].producers == ["a", "b"]  # Add ties both convs' outputs
    assert set(groups["a"].consumers) == {"b", "mid"}
    assert "stem" in groups["stem"].frozen[0]  # keep_stem: the first conv keeps its width
    assert any("model output" in r for r in groups["logits"].frozen)

    groups = {g.name: g for g in C.dependency_groups(se_cnn())}
    assert groups["c"].producers == ["c", "se_expand"] and groups["c"].size == 32  # SE gate joins the trunk
    assert groups["se_reduce"].consumers == ["se_expand"] and not groups["se_reduce"].frozen

    groups = {g.name: g for g in C.dependency_groups(separable_cnn(), keep_stem=False)}
    assert set(groups["stem"].consumers) == {"pw"}  # through the depthwise conv, BN and ReLU
    assert groups["pw"].consumers == ["sep"] and groups["sep"].consumers == ["up"]

    groups = {g.name: g for g in C.dependency_groups(concat_cnn())}
    assert groups["p"].consumers == ["after_cat"] and groups["q"].consumers == ["after_cat"]


@pytest.mark.parametrize("name", ["v2", "v3"])
def test_mobilenets_rebuild_exactly_and_prune(name, mobilenet_v2, mobilenet_v3, tmp_path):
    model = mobilenet_v2 if name == "v2" else mobilenet_v3
    x = _x(model, n=2, scale=127.5) + 127.5 if name == "v3" else _x(model, n=2)
    same, report0 = C.prune_channels(model, ratio=0.0)
    assert np.max(np.abs(_out(model, x) - _out(same, x))) < 1e-6
    pruned, report = C.prune_channels(model, ratio=0.5)
    assert report.params_after < 0.7 * report.params_before and report.flops_after < 0.7 * report.flops_before
    assert report.flops_before == report0.flops_before == C.count_flops(model)
    assert report.pruned_groups > 10 and pruned.output_shape == model.output_shape
    if name == "v3":  # keras.ops nodes (x + 3, x * 1/6 of hard-sigmoid) pass through; the channel softmax is named
        assert set(report.frozen) == {"predictions"}
    path = tmp_path / f"{name}.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    assert np.max(np.abs(_out(pruned, x) - _out(loaded, x))) < 1e-6


# ---- zeroed channels: pruning exactly the channels that contribute nothing ---------------------------------
def _zero(model, convs, bns, idx):
    for name in convs:  # output channels idx of these layers become exactly 0
        layer = model.get_layer(name)
        w = layer.get_weights()
        for k, v in enumerate(layer.weights):
            if v.name in ("kernel", "pointwise_kernel"):
                w[k][..., idx] = 0.0
            elif v.name == "bias":
                w[k][idx] = 0.0
        layer.set_weights(w)
    for name in bns:
        w = model.get_layer(name).get_weights()
        w[0][idx] = 0.0  # gamma and beta 0: the normalized channel is exactly 0
        w[1][idx] = 0.0
        model.get_layer(name).set_weights(w)


@pytest.mark.parametrize("maker, convs, bns, size", [
    (seq_cnn, ["conv2"], [], 16),  # Flatten -> Dense: rows (h*W + w)*C + c must go
    (seq_cnn, ["conv1"], ["bn1"], 16),
    (residual_cnn, ["a", "b"], ["a_bn", "b_bn"], 24),  # residual trunk
    (concat_cnn, ["q"], [], 24),  # second concat input: rows at offset 16
    (se_cnn, ["c"], [], 32),  # trunk multiplied by the SE gate
    (separable_cnn, ["pw"], [], 32),  # separable conv: depthwise channels and pointwise rows
    (separable_cnn, ["sep"], [], 24),  # PReLU alpha and Conv2DTranspose input rows
    (separable_cnn, ["stem"], ["dw_bn"], 16),  # through a depthwise conv and its BatchNorm
])
def test_pruning_zeroed_channels_keeps_the_outputs(maker, convs, bns, size):
    model = maker()
    removed = np.arange(1, size, 2)[: size // 2]
    _zero(model, convs, bns, removed)
    keep = sorted(set(range(size)) - set(removed.tolist()))
    x = _x(model)
    p = C.plan_from_indices(model, {convs[0]: keep}, keep_stem=False)  # conv1 is the stem
    pruned = C.apply(model, p)
    assert pruned.get_layer(convs[0]).output.shape[-1] == len(keep)
    assert np.max(np.abs(_out(model, x) - _out(pruned, x))) < 1e-5
    assert pruned.count_params() < model.count_params()


def test_bn_criterion_finds_the_zeroed_channels():
    model = residual_cnn()
    removed = np.array([0, 3, 5, 6, 11, 13, 17, 23])
    _zero(model, ["a", "b"], ["a_bn", "b_bn"], removed)
    # 24 * 0.5 = 12, rounded up to 16: the 8 zeroed channels go; min_channels=16 leaves the 16-wide 'mid' alone
    p = C.plan(model, ratio=0.5, criterion="bn", min_channels=16)
    assert len(p.group("mid").keep) == 16
    assert p.group("a").keep == sorted(set(range(24)) - set(removed.tolist()))
    x = _x(model)
    assert np.max(np.abs(_out(model, x) - _out(C.apply(model, p), x))) < 1e-5


# ---- ratio 0.5: smaller, rounded, saved and loaded --------------------------------------------------------
@pytest.mark.parametrize("maker", SMALL, ids=lambda m: m.__name__)
def test_half_ratio_shrinks_rounds_and_round_trips(maker, tmp_path):
    model = maker()
    x = _x(model)
    y = _out(model, x)
    pruned, report = C.prune_channels(model, ratio=0.5)
    np.testing.assert_array_equal(_out(model, x), y)  # the original model is left as it was
    assert report.params_after < report.params_before and report.flops_after < report.flops_before
    assert report.flops_after == C.count_flops(pruned) and report.params_after == C.count_params(pruned)
    for name, ch in report.layers.items():
        assert ch["after"] == ch["before"] or ch["after"] % 8 == 0, (name, ch)
        assert pruned.get_layer(name).output.shape[-1] == ch["after"]
    assert any(ch["after"] < ch["before"] for ch in report.layers.values())
    assert pruned.output_shape == model.output_shape
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    assert np.max(np.abs(_out(pruned, x) - _out(loaded, x))) < 1e-6
    assert report.to_dict()["params_after"] == report.params_after


def test_channel_counts_follow_round_to_and_min_channels():
    assert C._n_keep(64, 0.5, 8, 8) == 32 and C._n_keep(24, 0.3, 8, 8) == 24 and C._n_keep(24, 0.5, 8, 8) == 16
    assert C._n_keep(16, 0.9, 8, 8) == 8 and C._n_keep(6, 0.9, 8, 8) == 6 and C._n_keep(4, 0.9, 1, 1) == 1
    p = C.plan(residual_cnn(), ratio=0.9, round_to=4, min_channels=4)
    assert {g.name: len(g.keep) for g in p.groups if not g.frozen} == {"a": 4, "mid": 4}


# ---- frozen groups, outputs, errors ------------------------------------------------------------------------
def test_a_lambda_freezes_what_it_touches_and_is_reported():
    model = lambda_cnn()
    pruned, report = C.prune_channels(model, ratio=0.5)
    assert "double" in report.frozen and "Lambda" in report.frozen["double"]
    assert any("'double'" in r for r in report.kept_groups["a"])
    assert report.layers["a"] == {"before": 16, "after": 16} and report.layers["b"] == {"before": 16, "after": 8}
    x = _x(model)
    assert _out(pruned, x).shape == (4, 3) and np.all(np.isfinite(_out(pruned, x)))


def test_outputs_keep_their_width():
    keras.utils.set_random_seed(9)
    i = keras.Input((10, 10, 3))
    x = L.Conv2D(16, 3, name="stem")(i)
    feat = L.Conv2D(24, 3, name="features")(x)  # a feature-map output
    y = L.Dense(12, name="head")(L.GlobalAveragePooling2D()(L.Conv2D(32, 1, name="mid")(feat)))
    model = keras.Model(i, [feat, y])
    pruned, report = C.prune_channels(model, ratio=0.5, keep_stem=False)
    assert pruned.output_shape == model.output_shape == [(None, 6, 6, 24), (None, 12)]
    assert any("model output" in r for r in report.kept_groups["features"])
    assert report.layers["mid"]["after"] == 16 and report.layers["stem"]["after"] == 8


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan"), "0.5", True])
def test_bad_ratio_is_an_input_error(bad):
    with pytest.raises(InputError, match="ratio must be a number in \\[0, 1\\)"):
        C.prune_channels(seq_cnn(), ratio=bad)


def test_bad_options_are_input_errors():
    model = seq_cnn()
    with pytest.raises(InputError, match="exactly one of ratio= or flops="):
        C.prune_channels(model, ratio=0.5, flops=0.5)
    with pytest.raises(InputError, match="exactly one"):
        C.prune_channels(model)
    with pytest.raises(InputError, match="criterion must be one of"):
        C.plan(model, ratio=0.5, criterion="random")
    with pytest.raises(InputError, match="needs calibration samples"):
        C.plan(model, ratio=0.5, criterion="activation")
    with pytest.raises(InputError, match="x has shape"):
        C.plan(model, ratio=0.5, criterion="activation", x=np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(InputError, match="FLOPs fraction"):
        C.prune_channels(model, flops=1.5)
    with pytest.raises(InputError, match="'relu1' is not a Conv/Dense"):
        C.plan_from_indices(model, {"relu1": [0]})
    with pytest.raises(InputError, match="'logits' cannot be removed"):
        C.plan_from_indices(model, {"logits": [0]})


# ---- criteria and FLOPs --------------------------------------------------------------------------------------
def test_activation_criterion_and_flops_target():
    model = residual_cnn()
    x = _x(model, n=8)
    p = C.plan(model, ratio=0.5, criterion="activation", x=x)
    assert len(p.group("a").keep) == 16 and len(p.group("mid").keep) == 8
    for criterion in ("l1", "l2", "bn"):
        assert len(C.plan(model, ratio=0.5, criterion=criterion).group("b").keep) == 16
    pruned, report = C.prune_channels(model, flops=0.4)
    removed = 1 - report.flops_after / report.flops_before
    assert report.flops_target == 0.4 and abs(removed - 0.4) < 0.15
    assert report.flops_after == C.count_flops(pruned)


def test_count_flops_by_hand_and_dynamic_input_size():
    i = keras.Input((8, 8, 3))
    y = L.Dense(10)(L.Flatten()(L.Conv2D(4, 3, padding="same")(i)))
    assert C.count_flops(keras.Model(i, y)) == 2 * (8 * 8 * 9 * 3 * 4 + 8 * 8 * 4 * 10)
    i = keras.Input((None, None, 3))
    y = L.GlobalAveragePooling2D()(L.DepthwiseConv2D(3, padding="same", name="dw")(L.Conv2D(8, 1, name="pw")(i)))
    model = keras.Model(i, L.Dense(2)(y))
    with pytest.raises(InputError, match="dynamic input size"):
        C.count_flops(model)
    assert C.count_flops(model, input_size=(32, 32)) == 2 * (32 * 32 * 3 * 8 + 32 * 32 * 9 * 8 + 8 * 2)
    pruned, report = C.prune_channels(model, flops=0.3, input_size=(32, 32), keep_stem=False, min_channels=1, round_to=1)
    assert report.flops_after < report.flops_before and math.isclose(report.flops_target, 0.3)
    with pytest.raises(InputError, match="pass input_size"):
        C.prune_channels(model, flops=0.3)
    pruned, report = C.prune_channels(model, ratio=0.5, keep_stem=False, round_to=4, min_channels=4)
    assert report.flops_before is None and report.flops_after is None  # by ratio: FLOPs are just not counted
    assert report.layers["pw"] == report.layers["dw"] == {"before": 8, "after": 4}
    assert pruned(np.zeros((1, 20, 24, 3), np.float32)).shape == (1, 2)


def test_keep_trunks_cuts_only_the_inner_channels(mobilenet_v2):
    """trunks="keep": the groups a residual Add joins keep every channel; squeeze-and-excite's Multiply is no trunk;
    "auto" keeps them when they are the narrow path (inverted residuals), not when they are the wide one."""
    res = residual_cnn()
    p = C.plan(res, ratio=0.5, trunks="keep")
    assert len(p.group("a").keep) == 24 and len(p.group("mid").keep) == 8 and p.trunks == "kept"  # a + b meet in res_add
    auto = C.plan(res, ratio=0.5)  # its trunk (24) is wider than the rest (16): a bottleneck, cut with the rest
    assert auto.trunks == "pruned" and len(auto.group("a").keep) == 16
    assert C.plan_from_indices(res, {"mid": range(8)}).trunks == "kept"  # says what the plan cuts, not a mode
    se = se_cnn()
    assert len(C.plan(se, ratio=0.5, trunks="keep").group("c").keep) == 16  # gated by se_mul, still cut
    assert C.plan(se, ratio=0.5).trunks == "none"
    with pytest.raises(InputError, match="trunks must be one of auto, keep, prune"):
        C.plan(se, ratio=0.5, trunks="sometimes")
    # MobileNetV2: the same FLOPs cut, taken from the expansions only; still an exact, loadable model
    x = _x(mobilenet_v2, n=2)
    uniform, ru = C.prune_channels(mobilenet_v2, flops=0.4, trunks="prune")
    inner, ri = C.prune_channels(mobilenet_v2, flops=0.4)  # auto: MobileNetV2's trunks are the narrow path
    assert ri.trunks == "kept" and ru.trunks == "pruned" and abs(ri.flops_after / ri.flops_before - 0.6) < 0.1
    # every projection feeds a residual Add except the last block's (no skip): only that one is cut
    cut_projects = sorted(n for n, c in ri.layers.items() if n.endswith("_project") and c["after"] < c["before"])
    assert cut_projects == ["block_16_project"]
    assert any(c["after"] < c["before"] for n, c in ri.layers.items() if n.endswith("_expand"))
    assert ri.pruned_groups < ru.pruned_groups and inner.output_shape == mobilenet_v2.output_shape
    same, _ = C.prune_channels(mobilenet_v2, ratio=0.0, trunks="keep")
    assert np.max(np.abs(_out(mobilenet_v2, x) - _out(same, x))) < 1e-6
