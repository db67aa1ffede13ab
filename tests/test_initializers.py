"""Initializers: TensorFlow's definitions, reproducible from a seed."""

import numpy as np
import pytest

from scratchnet.initializers import Constant, GlorotUniform, RandomNormal, TruncatedNormal, Zeros


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_truncated_normal_redraws_beyond_two_stddev(dtype):
    w = TruncatedNormal(0.1)(np.random.default_rng(0), (200, 500), dtype)
    assert w.dtype == dtype
    assert np.abs(w).max() <= 0.2
    # the truncated law's standard deviation is 0.8796·stddev (TF documents the same)
    assert w.std() == pytest.approx(0.08796, rel=0.01)
    assert abs(w.mean()) < 1e-3


def test_glorot_uniform_limits_match_keras_fans():
    rng = np.random.default_rng(1)
    dense = GlorotUniform()(rng, (156, 512))
    assert np.abs(dense).max() <= np.sqrt(6 / (156 + 512))
    assert np.abs(dense).max() > 0.99 * np.sqrt(6 / (156 + 512))
    conv = GlorotUniform()(rng, (5, 5, 32, 64))
    limit = np.sqrt(6 / (25 * 32 + 25 * 64))
    assert limit * 0.99 < np.abs(conv).max() <= limit


def test_random_normal_constant_zeros():
    rng = np.random.default_rng(2)
    w = RandomNormal(1.0)(rng, (100_000,))
    assert w.std() == pytest.approx(1.0, rel=0.02)
    assert np.all(Constant(0.1)(rng, (3,), np.float64) == 0.1)
    assert np.all(Zeros()(rng, (2, 2)) == 0)


def test_same_seed_same_weights_bit_for_bit():
    a = TruncatedNormal(0.1)(np.random.default_rng(7), (50, 50))
    b = TruncatedNormal(0.1)(np.random.default_rng(7), (50, 50))
    np.testing.assert_array_equal(a, b)
