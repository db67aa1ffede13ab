"""Optimizers: hand-worked steps, then 100 updates against TensorFlow's own optimizers."""

import numpy as np
import pytest

from scratchnet.optim import (
    AdaGrad,
    Adam,
    GradientDescent,
    KerasAdagrad,
    KerasAdam,
    KerasRMSprop,
    KerasSGD,
    Momentum,
    RMSProp,
    make_optimizer,
)
from scratchnet.optim.schedules import ExponentialDecay

# Sizes 72, 4 and 91: whole SIMD packets and ragged tails in TF's kernels.
SHAPES = {"conv1/w": (3, 3, 2, 4), "conv1/b": (4,), "dense/w": (13, 7)}
STEPS = 100


def two_steps(opt, dtype=np.float64):
    """Two updates of w = [1, -2] with gradients [0.5, 1] then [-1, 2]."""
    params = {"w": np.array([1.0, -2.0], dtype)}
    for g in ([0.5, 1.0], [-1.0, 2.0]):
        opt.apply(params, {"w": np.array(g, dtype)})
    return params["w"]


def test_gradient_descent_by_hand():
    # w -= 0.1·g, twice.
    np.testing.assert_allclose(two_steps(GradientDescent(0.1)), [1.0 - 0.05 + 0.1, -2.0 - 0.1 - 0.2], rtol=1e-15)


def test_momentum_by_hand():
    # a1 = g1 = [0.5, 1]; w1 = [0.95, -2.1].  a2 = 0.9·a1 + g2 = [-0.55, 2.9]; w2 = w1 - 0.1·a2.
    np.testing.assert_allclose(two_steps(Momentum(0.1, 0.9)), [1.005, -2.39], rtol=1e-15)
    # Nesterov: w -= 0.1·(g + 0.9·a): w1 = [0.905, -2.19]; w2 = w1 - 0.1·([-1, 2] + 0.9·[-0.55, 2.9]).
    np.testing.assert_allclose(two_steps(Momentum(0.1, 0.9, use_nesterov=True)), [1.0545, -2.651], rtol=1e-15)


def test_momentum_tf1_and_keras_differ_only_when_the_rate_changes():
    # Constant rate: Keras' m = -lr·a, so the weights agree (up to Keras' float32 lr and μ).
    np.testing.assert_allclose(two_steps(KerasSGD(0.1, momentum=0.9)), [1.005, -2.39], rtol=1e-8)
    # Rate 0.1 then 0.2. TF1: a2 = [-0.55, 2.9], w2 = [0.95, -2.1] - 0.2·a2 = [1.06, -2.68].
    # Keras: m2 = 0.9·[-0.05, -0.1] - 0.2·[-1, 2] = [0.155, -0.49], w2 = [1.105, -2.59].
    rate = [0.1, 0.2].__getitem__
    np.testing.assert_allclose(two_steps(Momentum(rate, 0.9), np.float64), [1.06, -2.68], rtol=1e-7)
    np.testing.assert_allclose(two_steps(KerasSGD(rate, momentum=0.9), np.float64), [1.105, -2.59], rtol=1e-7)


def test_adagrad_by_hand():
    # acc starts at 0.1: acc1 = [0.35, 1.1], acc2 = [1.35, 5.1]; w -= 0.1·g/sqrt(acc).
    expected = [1.0 - 0.05 / np.sqrt(0.35) + 0.1 / np.sqrt(1.35), -2.0 - 0.1 / np.sqrt(1.1) - 0.2 / np.sqrt(5.1)]
    np.testing.assert_allclose(two_steps(AdaGrad(0.1)), expected, rtol=1e-15)


def test_rmsprop_by_hand():
    # ms starts at 1: ms1 = 1 + (g1² - 1)·0.1 = [0.925, 1.0]; ms2 = ms1 + (g2² - ms1)·0.1 = [0.9325, 1.3].
    e = 1e-10
    expected = [1.0 - 0.005 / np.sqrt(0.925 + e) + 0.01 / np.sqrt(0.9325 + e),
                -2.0 - 0.01 / np.sqrt(1.0 + e) - 0.02 / np.sqrt(1.3 + e)]
    np.testing.assert_allclose(two_steps(RMSProp(0.01)), expected, rtol=1e-15)
    # Keras: v starts at 0: v1 = 0.1·g1² = [0.025, 0.1]; v2 = 0.9·v1 + 0.1·g2² = [0.1225, 0.49].
    expected = [1.0 - 0.005 / np.sqrt(0.025) + 0.01 / np.sqrt(0.1225), -2.0 - 0.01 / np.sqrt(0.1) - 0.02 / np.sqrt(0.49)]
    np.testing.assert_allclose(two_steps(KerasRMSprop(0.01)), expected, rtol=1e-6)  # ε = 1e-7 inside the sqrt


def test_adam_by_hand():
    # Step 1: m1 = 0.1·g1, v1 = 0.001·g1², lr_1 = lr·sqrt(1 - β2)/(1 - β1): a step of about lr·sign(g1).
    # Step 2: m2 = 0.9·m1 + 0.1·g2, v2 = 0.999·v1 + 0.001·g2², lr_2 = lr·sqrt(1 - β2²)/(1 - β1²).
    m1, v1 = np.array([0.05, 0.1]), np.array([0.00025, 0.001])
    m2, v2 = np.array([-0.055, 0.29]), np.array([0.00124975, 0.004999])

    def expected(eps, lr=0.1, b1=0.9, b2=0.999):
        lr1, lr2 = lr * np.sqrt(1 - b2) / (1 - b1), lr * np.sqrt(1 - b2**2) / (1 - b1**2)
        return np.array([1.0, -2.0]) - lr1 * m1 / (np.sqrt(v1) + eps) - lr2 * m2 / (np.sqrt(v2) + eps)

    np.testing.assert_allclose(two_steps(Adam(0.1)), expected(1e-8), rtol=1e-14)
    # Keras rounds lr, and the β of the bias correction, through float32.
    np.testing.assert_allclose(two_steps(KerasAdam(0.1)), expected(1e-7, *np.float32([0.1, 0.9, 0.999]).tolist()),
                               rtol=1e-14)


def test_schedule_is_called_with_the_pre_increment_step():
    seen = []
    opt = GradientDescent(lambda step: seen.append(step) or 0.1)
    for _ in range(3):
        opt.apply({"w": np.zeros(2)}, {"w": np.ones(2)})
    assert seen == [0, 1, 2] and opt.iterations == 3


OPTIMIZERS = [
    lambda: GradientDescent(0.1), lambda: Momentum(0.05, 0.9, use_nesterov=True),
    lambda: AdaGrad(0.1), lambda: RMSProp(0.01, momentum=0.5, centered=True), lambda: Adam(0.01),
    lambda: KerasSGD(0.05, momentum=0.9), lambda: KerasAdagrad(0.1),
    lambda: KerasRMSprop(0.01, momentum=0.5, centered=True), lambda: KerasAdam(0.01),
]


@pytest.mark.parametrize("make", OPTIMIZERS)
def test_state_round_trip_resumes_bit_for_bit(make):
    params, stream = initial_params(np.float32), gradient_stream(np.float32, 6)
    opt = make()
    for grads in stream[:3]:
        opt.apply(params, grads)
    resumed, resumed_params = make(), {k: v.copy() for k, v in params.items()}
    resumed.load_state({**opt.state(), **resumed_params})  # foreign keys are ignored
    for grads in stream[3:]:
        opt.apply(params, grads)
        resumed.apply(resumed_params, grads)
    assert resumed.iterations == 6
    for key in SHAPES:
        np.testing.assert_array_equal(resumed_params[key], params[key])


def test_state_keys():
    opt = Adam()
    opt.apply(initial_params(np.float32), gradient_stream(np.float32, 1)[0])
    state = opt.state()
    assert state["iterations"] == 1
    assert {"adam/m/conv1/w", "adam/v/dense/w", "adam/beta1_power", "adam/beta2_power"} <= state.keys()
    assert state["adam/beta2_power"] == np.float32(0.999) * np.float32(0.999)


def test_make_optimizer():
    assert isinstance(make_optimizer("adam", 1e-4), Adam)
    opt = make_optimizer("momentum", 0.1, momentum=0.9, use_nesterov=True)
    assert isinstance(opt, Momentum) and opt.use_nesterov
    assert isinstance(make_optimizer("rmsprop", 0.1, flavor="keras", rho=0.8), KerasRMSprop)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("lbfgs", 0.1)


# --- Against TensorFlow -------------------------------------------------------------------

def initial_params(dtype):
    rng = np.random.default_rng(1)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}


def gradient_stream(dtype, steps=STEPS):
    rng = np.random.default_rng(0)
    return [{k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()} for _ in range(steps)]


def run_ours(opt, dtype):
    params = initial_params(dtype)
    for grads in gradient_stream(dtype):
        opt.apply(params, grads)
    return params


def run_tf(opt, dtype, variable, **apply_kwargs):
    tf = pytest.importorskip("tensorflow")
    variables = {k: variable(v) for k, v in initial_params(dtype).items()}
    for grads in gradient_stream(dtype):
        opt.apply_gradients([(tf.constant(grads[k]), variables[k]) for k in SHAPES], **apply_kwargs)
    return {k: np.asarray(v.numpy()) for k, v in variables.items()}


def max_relative_error(ours, theirs):
    """Largest |ours - theirs| over each tensor, relative to the tensor's largest entry."""
    return max(np.max(np.abs(ours[k] - theirs[k])) / np.max(np.abs(theirs[k])) for k in SHAPES)


# (scratchnet optimizer from Python floats, TF1 optimizer from a hyperparameter converter c)
TF1_CASES = {
    "sgd": (lambda: GradientDescent(0.1), lambda t, c: t.GradientDescentOptimizer(c(0.1))),
    "momentum": (lambda: Momentum(0.05, 0.9), lambda t, c: t.MomentumOptimizer(c(0.05), c(0.9))),
    "nesterov": (lambda: Momentum(0.05, 0.9, use_nesterov=True),
                 lambda t, c: t.MomentumOptimizer(c(0.05), c(0.9), use_nesterov=True)),
    "adagrad": (lambda: AdaGrad(0.1), lambda t, c: t.AdagradOptimizer(c(0.1))),
    "rmsprop": (lambda: RMSProp(0.01),
                lambda t, c: t.RMSPropOptimizer(c(0.01), c(0.9), c(0.0), c(1e-10))),
    "rmsprop-centered-momentum": (
        lambda: RMSProp(0.01, momentum=0.5, centered=True),
        lambda t, c: t.RMSPropOptimizer(c(0.01), c(0.9), c(0.5), c(1e-10), centered=True)),
    "adam": (lambda: Adam(0.01), lambda t, c: t.AdamOptimizer(c(0.01), c(0.9), c(0.999), c(1e-8))),
}


@pytest.mark.parametrize("case", TF1_CASES)
def test_tf1_float64(case):
    """Hyperparameters reach TF as float64 tensors, so both sides use the exact values."""
    tf = pytest.importorskip("tensorflow")
    ours, theirs = TF1_CASES[case]
    expected = run_tf(theirs(tf.compat.v1.train, lambda x: tf.constant(x, tf.float64)), np.float64, tf.Variable)
    assert max_relative_error(run_ours(ours(), np.float64), expected) <= 1e-12


# Measured over 100 updates: 0 (bit-identical) for every case: the same IEEE operations in the
# same order. But AdaGrad, 9e-8: TF's float32 rsqrt is a fast approximation up to 2 ulp
# (2.4e-7 relative) from 1/sqrt on each step, and the drift stays far below 1e-6.
TF1_FLOAT32_RTOL = {"adagrad": 1e-6}


@pytest.mark.parametrize("case", TF1_CASES)
def test_tf1_float32_defaults(case):
    """TF1 as the tutorials use it: Python-float hyperparameters, float32 variables."""
    tf = pytest.importorskip("tensorflow")
    ours, theirs = TF1_CASES[case]
    expected = run_tf(theirs(tf.compat.v1.train, lambda x: x), np.float32, tf.Variable)
    assert max_relative_error(run_ours(ours(), np.float32), expected) <= TF1_FLOAT32_RTOL.get(case, 0.0)


def test_tf1_float64_with_python_floats_needs_float32_hyperparameters():
    """TF1 rounds Python floats through float32; np.float32 hyperparameters reproduce that."""
    tf = pytest.importorskip("tensorflow")
    expected = run_tf(tf.compat.v1.train.AdamOptimizer(0.01), np.float64, tf.Variable)
    f = np.float32
    assert max_relative_error(run_ours(Adam(f(0.01), f(0.9), f(0.999), f(1e-8)), np.float64), expected) <= 1e-12
    assert max_relative_error(run_ours(Adam(0.01), np.float64), expected) > 1e-9


def test_tf1_float32_schedule():
    """TF1 exponential_decay on the global step that apply_gradients increments afterwards."""
    tf = pytest.importorskip("tensorflow")
    step = tf.Variable(0, dtype=tf.int64)
    lr = tf.compat.v1.train.exponential_decay(0.5, step, 7, 0.5, staircase=True)
    expected = run_tf(tf.compat.v1.train.GradientDescentOptimizer(lr), np.float32, tf.Variable, global_step=step)
    ours = run_ours(GradientDescent(ExponentialDecay(0.5, 7, 0.5, staircase=True, dtype="float32")), np.float32)
    assert int(step.numpy()) == STEPS
    assert max_relative_error(ours, expected) == 0.0


KERAS_CASES = {
    "sgd": (lambda: KerasSGD(0.1), lambda k: k.SGD(0.1)),
    "sgd-momentum": (lambda: KerasSGD(0.05, momentum=0.9), lambda k: k.SGD(0.05, momentum=0.9)),
    "sgd-nesterov": (lambda: KerasSGD(0.05, momentum=0.9, nesterov=True),
                     lambda k: k.SGD(0.05, momentum=0.9, nesterov=True)),
    "adagrad": (lambda: KerasAdagrad(0.1), lambda k: k.Adagrad(0.1)),
    "rmsprop": (lambda: KerasRMSprop(0.01), lambda k: k.RMSprop(0.01)),
    "rmsprop-centered-momentum": (lambda: KerasRMSprop(0.01, momentum=0.5, centered=True),
                                  lambda k: k.RMSprop(0.01, momentum=0.5, centered=True)),
    "adam": (lambda: KerasAdam(0.01), lambda k: k.Adam(0.01)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", KERAS_CASES)
def test_keras(case, dtype):
    """Keras 3 optimizers on keras.Variables, with Keras' float32 learning rate and casts."""
    keras = pytest.importorskip("keras")
    ours, theirs = KERAS_CASES[case]
    expected = run_tf(theirs(keras.optimizers), dtype, lambda v: keras.Variable(v, dtype=v.dtype.name))
    assert max_relative_error(run_ours(ours(), dtype), expected) <= (0.0 if dtype == np.float32 else 1e-12)
