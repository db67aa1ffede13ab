"""Every layer and the loss against central finite differences in float64 (< 1e-6 relative),
plus the conventions that decide parity with TensorFlow: SAME padding, pooling ties,
dropout masks, shape and dtype errors."""

import numpy as np
import pytest

from scratchnet import (LSTM, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Reshape, Sequential, ShapeError,
                        Sigmoid, Softmax, Tanh, check_function, check_gradients, l2_penalty, softmax_cross_entropy)
from scratchnet.initializers import Constant
from scratchnet.ops import batchnorm_backward, batchnorm_forward, conv2d_forward, max_pool_backward, max_pool_forward, moments, output_size

RTOL = 1e-6


def away_from_zero(rng, shape, margin=0.05):
    """Standard normal values with |x| >= margin (no ReLU kink within the difference step)."""
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < margin, np.sign(x + 1e-12) * margin, x)


def distinct(rng, shape):
    """A random permutation of well-separated values: no max-pool ties."""
    return rng.permutation(np.arange(np.prod(shape)) * 0.1).reshape(shape) - 0.05 * np.prod(shape)


def built(layer, dtype=np.float64, seed=0):
    """Build ``layer`` and randomise every parameter, biases included (zero biases hide bugs)."""
    rng = np.random.default_rng(seed)
    layer.build(rng, dtype)
    for v in layer.params.values():
        v[...] = rng.standard_normal(v.shape) * 0.5
    return layer


GRID = [
    ("dense", lambda: Dense(5, 3), (4, 5)),
    ("dense batch 1", lambda: Dense(7, 2), (1, 7)),
    ("conv 3x3 s1 SAME", lambda: Conv2D(3, 2, 4), (2, 5, 5, 2)),
    ("conv 5x5 s2 SAME asym", lambda: Conv2D(5, 2, 3, stride=2), (1, 8, 8, 2)),
    ("conv 6x6 s1 SAME asym", lambda: Conv2D(6, 1, 2), (2, 7, 7, 1)),
    ("conv 3x2 s2 SAME odd", lambda: Conv2D((3, 2), 3, 4, stride=2), (2, 7, 6, 3)),
    ("conv 4x4 s2 VALID", lambda: Conv2D(4, 2, 3, stride=2, padding="VALID"), (2, 9, 8, 2)),
    ("conv 1x1 batch 1", lambda: Conv2D(1, 3, 2), (1, 3, 3, 3)),
    ("lstm T=1", lambda: LSTM(3, 4), (2, 1, 3)),
    ("lstm T=5 sequences", lambda: LSTM(3, 4, return_sequences=True), (2, 5, 3)),
    ("lstm T=4 last, batch 1", lambda: LSTM(2, 3, forget_bias=0.5), (1, 4, 2)),
    ("sigmoid", Sigmoid, (3, 4)),
    ("tanh", Tanh, (3, 4)),
    ("softmax", Softmax, (3, 4)),
    ("reshape", lambda: Reshape((2, 6)), (3, 4, 3)),
    ("flatten", Flatten, (2, 3, 3, 2)),
]


@pytest.mark.parametrize("name,make,shape", GRID, ids=[g[0] for g in GRID])
def test_layer_gradients(name, make, shape):
    layer = built(make())
    x = np.random.default_rng(1).standard_normal(shape)
    report = check_gradients(layer, x)
    assert report.ok(RTOL), f"{name}\n{report.table(RTOL)}"


BN = [  # (name, offset, scale, x shape, training)
    ("dense offset+scale", True, True, (6, 4), True),
    ("dense offset only", True, False, (5, 3), True),
    ("dense scale only", False, True, (5, 3), True),
    ("dense neither", False, False, (4, 3), True),
    ("conv NHWC offset+scale", True, True, (2, 3, 3, 4), True),
    ("conv batch 1 offset only", True, False, (1, 3, 3, 2), True),
    ("dense evaluation (moving averages)", True, True, (4, 3), False),
    ("conv evaluation (moving averages)", True, True, (2, 3, 3, 2), False),
]


@pytest.mark.parametrize("name,offset,scale,shape,training", BN, ids=[b[0] for b in BN])
def test_batchnorm_gradients(name, offset, scale, shape, training):
    """Through the batch statistics in training (every forward of the finite differences
    recomputes them); through fixed moving averages in evaluation."""
    layer = built(BatchNorm(shape[-1], offset_init=Constant(0.1) if offset else None,
                            scale_init=Constant(1.0) if scale else None))
    rng = np.random.default_rng(5)
    layer.moving_mean[...] = rng.standard_normal(shape[-1])
    layer.moving_variance[...] = rng.uniform(0.5, 2.0, shape[-1])
    report = check_gradients(layer, rng.standard_normal(shape) * 2 + 1, training=training)
    assert [t.name for t in report.tensors] == ["input"] + [k for k, on in (("offset", offset), ("scale", scale)) if on]
    assert report.ok(RTOL), f"{name}\n{report.table(RTOL)}"


def test_batchnorm_in_a_model_every_parameter():
    """conv (no bias) → BN → ReLU → flatten → dense (no bias) → BN (scale) → dense: the
    weights before a BN get their gradient through the batch statistics."""
    model = Sequential([Conv2D(3, 1, 4, stride=2, b_init=None), BatchNorm(4, offset_init=Constant(0.1)), ReLU(),
                        Flatten(), Dense(36, 5, b_init=None), BatchNorm(5, scale_init=Constant(1.0)), Dense(5, 3)],
                       seed=0, dtype=np.float64)
    rng = np.random.default_rng(7)
    report = check_gradients(model, away_from_zero(rng, (4, 6, 6, 1)), training=True)
    assert "conv2d_1/b" not in model.params and "dense_1/b" not in model.params
    assert report.ok(RTOL), report.table(RTOL)


def test_batchnorm_forward_and_compact_backward_formula():
    """y = γ(x − μ)/sqrt(σ² + ε) + β with the biased variance; the staged backward equals
    dx = (γ·rstd/M)(M·dy − Σdy − x̂·Σ(dy·x̂)); batch 1 has variance 0 and dx = 0."""
    rng = np.random.default_rng(6)
    x, dy = rng.standard_normal((2, 3, 3, 4)) * 3 + 2, rng.standard_normal((2, 3, 3, 4))
    beta, gamma = rng.standard_normal(4), rng.standard_normal(4)
    mean, var = moments(x)
    np.testing.assert_allclose(var, x.reshape(-1, 4).var(axis=0), rtol=1e-13)
    y, cache = batchnorm_forward(x, mean, var, beta, gamma, 1e-5)
    rstd = 1 / np.sqrt(var + 1e-5)
    xhat = (x - mean) * rstd
    np.testing.assert_allclose(y, gamma * xhat + beta, rtol=1e-12, atol=1e-12)
    dx, dbeta, dgamma = batchnorm_backward(dy, cache)
    m = x.size // 4
    compact = gamma * rstd / m * (m * dy - dy.sum((0, 1, 2)) - xhat * (dy * xhat).sum((0, 1, 2)))
    np.testing.assert_allclose(dx, compact, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dbeta, dy.sum((0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(dgamma, (dy * xhat).sum((0, 1, 2)), rtol=1e-12)
    one = BatchNorm(4, scale_init=Constant(2.0)).build(dtype=np.float64)
    out = one.forward(x[:1, 0, 0], training=True)
    assert (one.batch_variance == 0).all() and (out == one.params["offset"]).all()
    assert (one.backward(dy[:1, 0, 0]) == 0).all()


POOLS = [
    ("2x2 s2 SAME", (2, 2), (2, 2), "SAME", (2, 4, 4, 3)),
    ("2x2 s2 SAME 7x7 (pads bottom/right)", (2, 2), (2, 2), "SAME", (1, 7, 7, 2)),
    ("3x3 s1 SAME overlapping", (3, 3), (1, 1), "SAME", (2, 5, 5, 2)),
    ("3x3 s2 VALID overlapping", (3, 3), (2, 2), "VALID", (1, 7, 7, 2)),
    ("3x2 s(1,2) VALID", (3, 2), (1, 2), "VALID", (2, 6, 5, 1)),
]


@pytest.mark.parametrize("name,ksize,stride,padding,shape", POOLS, ids=[p[0] for p in POOLS])
def test_max_pool_gradients(name, ksize, stride, padding, shape):
    x = distinct(np.random.default_rng(2), shape)
    report = check_gradients(MaxPool2D(ksize, stride, padding).build(), x)
    assert report.ok(RTOL), report.table(RTOL)


def test_relu_and_dropout_gradients():
    rng = np.random.default_rng(3)
    x = away_from_zero(rng, (4, 6))
    assert check_gradients(ReLU().build(), x).ok(RTOL)
    drop = Dropout(0.7).build()
    mask = rng.random(x.shape) >= 0.3
    drop.mask_source = lambda shape: mask
    assert check_gradients(drop, x, training=True).ok(RTOL)


def test_model_gradients_every_parameter():
    """A small CNN end to end: conv (stride 2, SAME asym) → relu → pool → flatten → dense."""
    model = Sequential([Conv2D(3, 1, 2, stride=2), ReLU(), MaxPool2D(2), Flatten(), Dense(8, 3)],
                       seed=0, dtype=np.float64)
    rng = np.random.default_rng(4)
    for v in model.params.values():
        v[...] = rng.standard_normal(v.shape) * 0.5
    report = check_gradients(model, rng.standard_normal((2, 7, 7, 1)))
    assert [t.name for t in report.tensors] == ["input", "conv2d_1/w", "conv2d_1/b", "dense_1/w", "dense_1/b"]
    assert report.ok(RTOL), report.table(RTOL)


@pytest.mark.parametrize("labels", ["ids", "one-hot"])
def test_cross_entropy_gradient(labels):
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 5, 6)
    y = ids if labels == "ids" else np.eye(5)[ids]
    f = lambda logits: (lambda loss, g: (loss, {"logits": g}))(*softmax_cross_entropy(logits, y))  # noqa: E731
    assert check_function(f, {"logits": rng.standard_normal((6, 5)) * 3}).ok(RTOL)


def test_l2_penalty_gradient_and_tf_definition():
    rng = np.random.default_rng(6)
    params = {"a/w": rng.standard_normal((3, 2)), "a/b": rng.standard_normal(2)}
    loss, grads = l2_penalty(params, ["a/w"], 1e-4)
    assert loss == pytest.approx(1e-4 * (params["a/w"] ** 2).sum() / 2)
    assert set(grads) == {"a/w"}
    f = lambda w: (lambda l, g: (l, {"w": g["a/w"]}))(*l2_penalty({"a/w": w}, ["a/w"], 0.3))  # noqa: E731
    assert check_function(f, {"w": params["a/w"]}).ok(RTOL)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_stable_for_extreme_logits(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], dtype)
    loss, grad = softmax_cross_entropy(logits, np.array([1, 2]))
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert loss == pytest.approx(1e4, rel=1e-6)  # (2e4 + 0) / 2
    assert grad.dtype == dtype
    np.testing.assert_allclose(grad, [[0.5, -0.5, 0], [0, 0, 0]], atol=1e-7)


def test_same_padding_is_tensorflows_asymmetric_rule():
    assert output_size(28, 5, 2, "SAME") == (14, 1, 2)
    assert output_size(28, 6, 1, "SAME") == (28, 2, 3)
    assert output_size(7, 2, 2, "SAME") == (4, 0, 1)
    assert output_size(14, 4, 2, "SAME") == (7, 1, 1)
    rng = np.random.default_rng(7)
    x, w, b = rng.standard_normal((1, 28, 28, 1)), rng.standard_normal((5, 5, 1, 2)), rng.standard_normal(2)
    same, _ = conv2d_forward(x, w, b, 2, "SAME")
    explicit, _ = conv2d_forward(np.pad(x, ((0, 0), (1, 2), (1, 2), (0, 0))), w, b, 2, "VALID")
    np.testing.assert_array_equal(same, explicit)


def test_max_pool_ties_route_to_first_maximum_and_pads_with_minus_inf():
    windows = np.array([[[0, 0], [0, 0]], [[1, 3], [3, 0]]], np.float64)  # two 2x2 windows side by side
    x = np.concatenate([windows[0], windows[1]], axis=1).reshape(1, 2, 4, 1)
    y, cache = max_pool_forward(x, (2, 2), (2, 2), "VALID")
    np.testing.assert_array_equal(y.ravel(), [0, 3])
    dx = max_pool_backward(np.ones_like(y), cache)
    np.testing.assert_array_equal(dx[0, :, :, 0], [[1, 0, 0, 1], [0, 0, 0, 0]])
    neg = -np.ones((1, 7, 7, 1))
    y, _ = max_pool_forward(neg, (2, 2), (2, 2), "SAME")
    assert y.shape == (1, 4, 4, 1) and np.all(y == -1)


def test_dropout_scaling_mask_and_evaluation_identity():
    drop = Dropout(0.75).build(np.random.default_rng(0))
    x = np.ones((1000, 10), np.float32)
    y = drop.forward(x, training=True)
    kept = y != 0
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y[kept], np.float32(1 / 0.75))
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_array_equal(drop.backward(x) != 0, kept)
    np.testing.assert_array_equal(drop.forward(x, training=False), x)
    mask = np.zeros(x.shape, bool)
    mask[:, 0] = True
    drop.mask_source = lambda shape: mask
    assert np.count_nonzero(drop.forward(x, training=True)) == 1000


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layers_keep_their_dtype(dtype):
    model = Sequential([Conv2D(3, 1, 2), ReLU(), MaxPool2D(2), Flatten(), Dense(2 * 2 * 2, 5), Sigmoid()],
                       dtype=dtype)
    x = np.random.default_rng(0).standard_normal((2, 4, 4, 1)).astype(dtype)
    y = model.forward(x, training=True)
    assert y.dtype == dtype
    assert model.backward(np.ones_like(y)).dtype == dtype
    assert all(g.dtype == dtype for g in model.grads.values())
    lstm = Sequential([LSTM(3, 4)], dtype=dtype)
    h = lstm.forward(np.ones((2, 5, 3), dtype))
    assert h.dtype == dtype and lstm.backward(np.ones_like(h)).dtype == dtype


def test_wrong_shape_names_the_layer_and_both_shapes():
    model = Sequential([Flatten(name="flatten"), Dense(784, 10, name="fc1")])
    with pytest.raises(ShapeError, match=r"fc1.*expected input of shape \(N, 784\), received \(2, 729\)"):
        model.forward(np.zeros((2, 27, 27, 1), np.float32))
    conv = Sequential([Conv2D(5, 1, 32, name="conv1")])
    with pytest.raises(ShapeError, match=r"conv1.*\(N, H, W, 1\).*\(2, 28, 28, 3\)"):
        conv.forward(np.zeros((2, 28, 28, 3), np.float32))
    with pytest.raises(ShapeError, match=r"lstm.*\(N, T, 28\).*\(4, 28\)"):
        Sequential([LSTM(28, 8, name="lstm")]).forward(np.zeros((4, 28), np.float32))
    with pytest.raises(ShapeError, match=r"bn1.*\(N, 24\) or \(N, H, W, 24\).*\(2, 28, 28, 12\)"):
        Sequential([BatchNorm(24, name="bn1")]).forward(np.zeros((2, 28, 28, 12), np.float32))
    with pytest.raises(TypeError, match=r"fc1.*float32.*float64"):
        model.forward(np.zeros((2, 28, 28, 1), np.float64))


def test_sequential_names_and_parameter_listing():
    model = Sequential([Dense(4, 3), ReLU(), Dense(3, 2), ReLU()], seed=3)
    assert [l.name for l in model.layers] == ["dense_1", "relu_1", "dense_2", "relu_2"]
    assert list(model.params) == ["dense_1/w", "dense_1/b", "dense_2/w", "dense_2/b"]
    again = Sequential([Dense(4, 3), ReLU(), Dense(3, 2), ReLU()], seed=3)
    for k in model.params:
        np.testing.assert_array_equal(model.params[k], again.params[k])
    with pytest.raises(ValueError, match="unique"):
        Sequential([Dense(4, 3, name="a"), Dense(3, 2, name="a")])
