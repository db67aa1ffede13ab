"""Learning-rate schedules and the moving average, by hand and against TensorFlow."""

import json
import math

import numpy as np
import pytest

from scratchnet.optim import ExponentialMovingAverage
from scratchnet.optim.schedules import Constant, ExponentialDecay, Gorner, from_config


def test_exponential_decay_by_hand():
    smooth = ExponentialDecay(0.8, 550, 0.99)
    stairs = ExponentialDecay(0.8, 550, 0.99, staircase=True)
    assert smooth(0) == stairs(0) == 0.8
    assert smooth(275) == 0.8 * 0.99**0.5
    # TF1's global step is the pre-increment count: steps 0..549 use 0.8, 550..1099 use 0.8·0.99.
    assert stairs(549) == 0.8 and stairs(550) == stairs(1099) == 0.8 * 0.99


def test_gorner_is_his_tf_expression():
    """0.0001 + exponential_decay(0.003, step, 2000, 1/e): 0.0031 at step 0, then → 0.0001."""
    g = Gorner()
    assert g(0) == 0.0031
    for step in (1, 500, 2000, 10000):
        assert g(step) == pytest.approx(1e-4 + 3e-3 * math.exp(-step / 2000), rel=1e-15)


@pytest.mark.parametrize("schedule", [Constant(0.5), ExponentialDecay(0.8, 550, 0.99, True, "float32"), Gorner()])
def test_config_round_trip(schedule):
    config = json.loads(json.dumps(schedule.to_config()))
    assert from_config(config) == schedule
    assert repr(schedule).startswith(type(schedule).__name__ + "(")


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="dtype"):
        ExponentialDecay(0.1, 10, 0.5, dtype="float16")


def tf_scalar_schedule(make_lr):
    """TF's value at each step, one scalar call per step as in training (TF's vectorised pow
    differs from its scalar pow by an ulp on about a fifth of the steps)."""
    tf = pytest.importorskip("tensorflow")
    step = tf.Variable(0, dtype=tf.int64)
    lr = make_lr(tf, step)

    def value(s):
        step.assign(s)
        return lr().numpy()
    return value


# Every 7th step up to 20,000, and both sides of each staircase edge.
STEPS = sorted(set(range(0, 20001, 7)) | {k * 550 + d for k in range(1, 37) for d in (-1, 0)})


@pytest.mark.parametrize("staircase", [True, False])
def test_exponential_decay_float32_matches_tf(staircase):
    tf_lr = tf_scalar_schedule(lambda tf, s: tf.compat.v1.train.exponential_decay(0.8, s, 550, 0.99, staircase))
    ours = ExponentialDecay(0.8, 550, 0.99, staircase, dtype="float32")
    for s in STEPS:
        assert ours(s) == tf_lr(s) and ours(s).dtype == np.float32, s


def test_exponential_decay_float64_matches_tf_with_float64_constants():
    """TF casts a Python-float decay_rate through float32 even here, so it gets a tensor too."""
    tf_lr = tf_scalar_schedule(lambda tf, s: tf.compat.v1.train.exponential_decay(
        tf.constant(0.8, tf.float64), s, 550, tf.constant(0.99, tf.float64)))
    ours = ExponentialDecay(0.8, 550, 0.99)
    for s in range(0, 20001, 101):
        assert ours(s) == tf_lr(s), s


def test_gorner_float32_matches_tf():
    tf_lr = tf_scalar_schedule(lambda tf, s: lambda: 0.0001 + tf.compat.v1.train.exponential_decay(
        0.003, s, 2000, 1 / math.e)())
    ours = Gorner(dtype="float32")
    for s in range(0, 10001, 50):
        assert ours(s) == tf_lr(s), s


# --- Moving average -----------------------------------------------------------------------

def test_ema_by_hand():
    ema = ExponentialMovingAverage(0.99)
    w = {"w": np.array([1.0, 2.0])}
    ema.apply(w, num_updates=0)  # the shadow starts at the weights; the update is a no-op
    np.testing.assert_array_equal(ema.averages["w"], [1.0, 2.0])
    w["w"][...] = [3.0, 0.0]
    ema.apply(w, num_updates=1)  # d = min(0.99, 2/11): shadow = d·[1, 2] + (1 - d)·[3, 0]
    np.testing.assert_allclose(ema.averages["w"], [2 / 11 + 9 / 11 * 3, 4 / 11], rtol=1e-15)
    assert ema.effective_decay(10**6) == 0.99
    assert ExponentialMovingAverage(0.5, num_updates=False).effective_decay() == 0.5
    with pytest.raises(ValueError, match="num_updates"):
        ema.apply(w)


def test_averaged_swaps_in_and_restores_bit_for_bit():
    ema = ExponentialMovingAverage(0.9, num_updates=False)
    params = {"w": np.array([1.0, 2.0], np.float32)}
    ema.apply(params)
    params["w"] += np.float32(0.1)
    ema.apply(params)
    trained, averaged = params["w"].copy(), ema.averages["w"].copy()
    with pytest.raises(RuntimeError), ema.averaged(params):
        np.testing.assert_array_equal(params["w"], averaged)
        raise RuntimeError("evaluation failed")
    np.testing.assert_array_equal(params["w"], trained)


def test_ema_state_round_trip():
    ema = ExponentialMovingAverage(0.99)
    ema.apply({"a/w": np.arange(3.0)}, num_updates=0)
    restored = ExponentialMovingAverage(0.99)
    restored.load_state({**ema.state(), "a/w": np.zeros(3)})
    assert list(ema.state()) == ["ema/a/w"]
    np.testing.assert_array_equal(restored.averages["a/w"], ema.averages["a/w"])


def run_ema_against_tf(dtype, decay_dtype):
    """The MLP recipe: one apply before training, then SGD step, step += 1, apply(num_updates=step)."""
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((5, 3)).astype(dtype), "b": rng.standard_normal(3).astype(dtype)}
    tf_vars = [tf.Variable(params["w"]), tf.Variable(params["b"])]
    step = tf.Variable(0, dtype=tf.int64)
    tf_ema = tf.compat.v1.train.ExponentialMovingAverage(0.99, num_updates=step)
    ema = ExponentialMovingAverage(0.99, decay_dtype=decay_dtype)
    tf_ema.apply(tf_vars)
    ema.apply(params, num_updates=0)
    for n in range(1, 51):
        for v, key in zip(tf_vars, ("w", "b")):
            delta = rng.standard_normal(params[key].shape).astype(dtype)
            params[key] -= delta
            v.assign_sub(delta)
        step.assign(n)
        tf_ema.apply(tf_vars)
        ema.apply(params, num_updates=n)
    return [(ema.averages[key], tf_ema.average(v).numpy()) for v, key in zip(tf_vars, ("w", "b"))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ema_float32_decay_matches_tf_bit_for_bit(dtype):
    for ours, theirs in run_ema_against_tf(dtype, "float32"):
        np.testing.assert_array_equal(ours, theirs)


def test_ema_float64_decay_is_within_float32_rounding_of_tf():
    for ours, theirs in run_ema_against_tf(np.float64, "float64"):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
        assert not np.array_equal(ours, theirs)
