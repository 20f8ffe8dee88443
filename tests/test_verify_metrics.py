"""edgeship.converters.metrics on hand-built arrays with exact expected values."""

import math

import numpy as np
import pytest

from edgeship.converters import metrics as m


def test_class_predictions_only_for_class_outputs():
    assert m.class_predictions(np.array([[0.1, 0.9], [0.8, 0.2]])).tolist() == [1, 0]
    assert m.class_predictions(np.zeros((3, 1))) is None
    assert m.class_predictions(np.zeros((3, 4, 4))) is None


def test_agreement_and_accuracy_in_points():
    assert m.agreement([0, 1, 2, 3], [0, 1, 0, 0]) == 50.0
    assert m.accuracy(np.array([1, 1, 1, 1, 1]), np.array([1, 1, 1, 1, 0])) == 80.0
    with pytest.raises(ValueError):
        m.agreement([0, 1], [0])


def test_paired_drop_normal_interval_exact():
    ref = np.array([1, 1, 1, 1])
    art = np.array([1, 1, 0, 0])
    drop, lo, hi = m.paired_drop_ci(ref, art)
    # differences in points: 0, 0, 100, 100 -> mean 50, sd (ddof=1) = sqrt(10000/3)
    half = m.Z95 * math.sqrt(10000.0 / 3.0) / 2.0
    assert drop == 50.0
    assert lo == pytest.approx(50.0 - half, abs=1e-9) and hi == pytest.approx(50.0 + half, abs=1e-9)


def test_paired_drop_is_zero_width_when_models_agree_everywhere():
    ref = np.array([1, 0, 1, 0, 1])
    assert m.paired_drop_ci(ref, ref) == (0.0, 0.0, 0.0)
    assert m.paired_bootstrap_ci(ref, ref) == (0.0, 0.0, 0.0)


def test_bootstrap_interval_brackets_the_drop_and_is_paired():
    rng = np.random.default_rng(1)
    ref = rng.random(400) < 0.9
    art = ref.copy()
    art[:20] = False  # the artifact loses exactly the samples 0..19 the reference got right (or kept wrong)
    drop, lo, hi = m.paired_bootstrap_ci(ref, art, seed=0)
    assert drop == pytest.approx(np.sum(ref[:20]) / 400 * 100)
    assert lo <= drop <= hi and lo >= 0.0
    nd, nlo, nhi = m.paired_drop_ci(ref, art)
    assert abs(lo - nlo) < 1.0 and abs(hi - nhi) < 1.0


def test_per_class_accuracy_with_absent_class():
    pred = np.array([0, 0, 1, 2, 2, 2])
    y = np.array([0, 1, 1, 2, 2, 0])
    acc, n = m.per_class_accuracy(pred, y, 4)
    assert n.tolist() == [2, 2, 2, 0]
    assert acc[:3].tolist() == [50.0, 50.0, 100.0] and math.isnan(acc[3])


def test_cosine_similarity_exact():
    ref = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0], [1.0, 1.0]])
    test = np.array([[2.0, 0.0], [0.0, -1.0], [0.0, 0.0], [1.0, 0.0]])
    # per sample: 1, -1, 1 (both zero), 1/sqrt(2)
    assert m.cosine_similarity(ref, test) == pytest.approx((1 - 1 + 1 + 1 / math.sqrt(2)) / 4)
    assert m.cosine_similarity(np.array([[0.0, 0.0]]), np.array([[1.0, 0.0]])) == 0.0


def test_sqnr_db_exact():
    ref = np.array([3.0, 4.0])  # signal energy 25
    test = np.array([3.0, 3.5])  # noise energy 0.25
    assert m.sqnr_db(ref, test) == pytest.approx(20.0)
    assert m.sqnr_db(ref, ref) == math.inf
    assert m.sqnr_db(np.zeros(2), np.ones(2)) == -math.inf


def test_max_abs_error():
    assert m.max_abs_error(np.array([[1.0, -2.0]]), np.array([[1.5, 1.0]])) == 3.0


def test_channel_noise_ratio_sees_a_dominated_channel():
    ref = np.array([[1000.0, 1.0, 2.0], [500.0, 3.0, 0.0]])
    wiped = np.array([[1000.0, 0.0, 0.0], [500.0, 0.0, 0.0]])
    # channel 0 exact (0), channels 1 and 2 fully lost (1 each) -> mean 2/3
    assert m.channel_noise_ratio(ref, wiped) == pytest.approx(2.0 / 3.0)
    # a tensor-wide ratio would call this tiny: 14 / 1250014
    assert m.sqnr_db(ref, wiped) > 40
    # all-zero channels are skipped; channel axis can be moved (NCHW)
    nchw = np.zeros((1, 2, 2, 2))
    nchw[0, 0] = 1.0
    noisy = nchw.copy()
    noisy[0, 0, 0, 0] = 0.0
    assert m.channel_noise_ratio(nchw, noisy, axis=1) == pytest.approx(0.25)
    assert math.isnan(m.channel_noise_ratio(np.zeros((2, 2)), np.ones((2, 2))))


def test_dominant_class():
    assert m.dominant_class(np.array([3, 3, 3, 1])) == (3, 75.0)


def test_range_mismatch():
    rng = np.random.default_rng(0)
    good = rng.random((10, 8, 8, 1))
    assert m.range_mismatch(good, (0.0, 1.0)) is None
    twice = good / 255.0
    assert "normalised twice" in m.range_mismatch(twice, (0.0, 1.0))
    raw = good * 255.0
    assert "outside" in m.range_mismatch(raw, (0.0, 1.0))


def test_channel_ratio_caps_and_skips_silent_channels():
    # channel 2 is numerically silent next to the median: skipped; channel 1's noise exceeds its signal: capped at 1
    signal = np.array([4.0, 1.0, 1e-12])
    noise = np.array([1.0, 9.0, 5.0])
    assert m.channel_ratio_from_energy(signal, noise) == pytest.approx((0.25 + 1.0) / 2)
