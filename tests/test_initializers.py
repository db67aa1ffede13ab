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


def test_glorot_limits_equal_tensorflow_for_every_shape_of_the_glorot_recipes():
    """``tf.get_variable``'s default initializer on each weight and bias of the second
    deep-MNIST write-up: TF's own fans (``_compute_fans``) and limit sqrt(3·scale / fan_avg)."""
    pytest.importorskip("tensorflow")
    import tensorflow as tf
    from tensorflow.python.ops.init_ops import _compute_fans

    from scratchnet.model import Sequential
    from scratchnet.recipes import RECIPES

    shapes = {v.shape for name, r in RECIPES.items() if name.startswith("deep-cnn-glorot")
              for v in Sequential(r.layers()).params.values()}
    assert {(5, 5, 1, 32), (32,), (3136, 1024), (10,)} <= shapes
    init = tf.compat.v1.glorot_uniform_initializer(seed=3)
    for shape in shapes:
        fan_in, fan_out = _compute_fans(shape)
        tf_limit = np.sqrt(3.0 / max(1.0, (fan_in + fan_out) / 2.0))
        assert GlorotUniform.limit(shape) == pytest.approx(tf_limit, rel=1e-12), shape
        drawn = np.abs(init(shape).numpy()).max()
        assert drawn <= tf_limit * (1 + 1e-6), shape
