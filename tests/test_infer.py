"""The inference path (``Sequential.infer`` / ``Layer.infer``): the same values as
``forward(x, training=False)``, bit for bit, with nothing kept for backward and the
caller's input never written; and each inference op of the fast backend against the
reference."""

from __future__ import annotations

import numpy as np
import pytest

from scratchnet import BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sequential, backend
from scratchnet import kernels as fast
from scratchnet import ops as ref
from scratchnet.data import load_mnist
from scratchnet.recipes import RECIPES
from scratchnet.train import Trainer

DTYPES = (np.float32, np.float64)


@pytest.fixture(scope="module")
def images():
    return np.ascontiguousarray(load_mnist().test.images[:8])


@pytest.mark.parametrize("engine", sorted(backend.BACKENDS))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_infer_equals_the_evaluation_forward_and_keeps_nothing(images, name, dtype, engine):
    backend.set_backend(engine)
    try:
        trainer = Trainer(RECIPES[name], seed=1, dtype=dtype)
        rng = np.random.default_rng(0)
        for layer in trainer.batchnorms:  # moving statistics that change the output
            layer.moving_mean[:] = rng.normal(0, 0.1, layer.features)
            layer.moving_variance[:] = rng.uniform(0.5, 2, layer.features)
        x = images.astype(dtype)
        kept = x.copy()
        expected = trainer.model.forward(x)
        got = trainer.model.infer(x)
    finally:
        backend.set_backend(backend.DEFAULT)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(x, kept)
    assert all(layer._cache is None for layer in trainer.model.layers)
    with pytest.raises(RuntimeError, match="infer"):
        trainer.model.backward(np.ones_like(got))


@pytest.mark.parametrize("engine", sorted(backend.BACKENDS))
def test_infer_never_writes_the_callers_array(engine):
    """A model whose first layers are pointwise (which overwrite their input when it is
    the model's own scratch) leaves the input alone, also behind an identity dropout."""
    model = Sequential([Dropout(0.5), ReLU(), BatchNorm(6, scale_init=None), ReLU()], seed=0)
    model.layers[2].moving_variance[:] = 2.0
    model.layers[2].backend = model.layers[1].backend = model.layers[3].backend = engine
    x = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
    kept = x.copy()
    y = model.infer(x)
    np.testing.assert_array_equal(x, kept)
    np.testing.assert_array_equal(y, model.forward(x))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_relu_and_batchnorm_inference_ops_in_place(dtype):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 5, 5, 7)).astype(dtype)
    mean, var = rng.normal(size=7).astype(dtype), rng.uniform(0.5, 2, 7).astype(dtype)
    offset, scale = rng.normal(size=7).astype(dtype), rng.normal(size=7).astype(dtype)
    for op in (ref, fast):
        np.testing.assert_array_equal(op.relu(x), ref.relu_forward(x)[0])
        for sc in (scale, None):
            want = ref.batchnorm_forward(x, mean, var, offset, sc, 1e-5, False)[0]
            np.testing.assert_array_equal(op.batchnorm(x, mean, var, offset, sc, 1e-5), want)
            buf = x.copy()
            assert op.batchnorm(buf, mean, var, offset, sc, 1e-5, out=buf) is buf
            np.testing.assert_array_equal(buf, want)
        buf = x.copy()
        assert op.relu(buf, out=buf) is buf
        np.testing.assert_array_equal(buf, np.maximum(x, 0))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("ksize, stride, padding, shape", [
    ((2, 2), (2, 2), "SAME", (2, 8, 8, 3)), ((3, 3), (2, 2), "SAME", (2, 7, 9, 4)),
    ((3, 3), (1, 1), "VALID", (1, 6, 6, 2)), ((2, 3), (2, 1), "SAME", (2, 5, 5, 5))])
def test_max_pool_inference_op(dtype, ksize, stride, padding, shape):
    x = np.random.default_rng(3).integers(-3, 3, size=shape).astype(dtype)  # many ties
    want = ref.max_pool_forward(x, ksize, stride, padding)[0]
    for op in (ref, fast):
        np.testing.assert_array_equal(op.max_pool(x, ksize, stride, padding), want)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("n", [1, 5, 300])  # 300: more than one row block per worker
def test_lstm_inference_op(dtype, n):
    rng = np.random.default_rng(4)
    d, hidden, t_len = 6, 8, 7
    x = rng.normal(size=(n, t_len, d)).astype(dtype)
    kernel = rng.normal(0, 0.5, (d + hidden, 4 * hidden)).astype(dtype)
    bias = rng.normal(0, 0.1, 4 * hidden).astype(dtype)
    want = fast.lstm_forward(x, kernel, bias, 1.0)[0]
    # The same arithmetic, but a GEMM of other row blocks: OpenBLAS's AVX2 sgemm rounds some
    # rows differently by their place in the block (Zen 3: 1.8e-7 at n = 300); AVX-512's do not.
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-14}
    np.testing.assert_allclose(fast.lstm_infer(x, kernel, bias, 1.0), want, **tol)
    np.testing.assert_allclose(fast.lstm_infer(x, kernel, bias, 1.0, all_steps=False), want[:, -1], **tol)
    reference = ref.lstm_infer(x, kernel, bias, 1.0)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(fast.lstm_infer(x, kernel, bias, 1.0), reference, rtol=tol, atol=tol)
    np.testing.assert_array_equal(ref.lstm_infer(x, kernel, bias, 1.0, all_steps=False), reference[:, -1])


def test_a_layer_takes_the_batchnorm_relu_and_max_pool_after_it_into_its_op(monkeypatch):
    """``Sequential.infer`` hands Conv2D → BatchNorm → ReLU → MaxPool2D (each after the
    first optional, in that order) and Dense → BatchNorm → ReLU to one ``conv2d_infer`` /
    ``dense_infer`` call when they share a backend, runs them one by one otherwise, gives
    ``forward``'s values and drops every cache."""
    calls = []
    for name in ("conv2d_infer", "dense_infer"):
        monkeypatch.setattr(fast, name, lambda *a, _op=getattr(fast, name), _name=name, **k: calls.append(
            (_name, k["bn"] is not None, k["relu"], k.get("pool"))) or _op(*a, **k))
    model = Sequential([Conv2D(3, 1, 4), ReLU(), MaxPool2D(2), Conv2D(3, 4, 4), ReLU(backend="reference"),
                        Conv2D(3, 4, 6), BatchNorm(6), MaxPool2D(3, 2, "VALID"), Flatten(), Dense(24, 5),
                        BatchNorm(5), ReLU(), Dense(5, 3)], seed=0)
    for layer in (model.layers[6], model.layers[10]):
        layer.moving_variance[:] = np.linspace(0.5, 2, layer.features)
    x = np.random.default_rng(3).normal(size=(2, 12, 12, 1)).astype(np.float32)
    expected = model.forward(x)
    np.testing.assert_array_equal(model.infer(x), expected)
    assert calls == [("conv2d_infer", False, True, ((2, 2), (2, 2), "SAME")),
                     ("conv2d_infer", True, False, ((3, 3), (2, 2), "VALID")),
                     ("dense_infer", True, True, None)]
    assert all(layer._cache is None for layer in model.layers)


@pytest.mark.parametrize("engine", sorted(backend.BACKENDS))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_the_training_forward_takes_each_relu_into_its_convolution(images, engine, dtype):
    """``Sequential.forward`` runs a convolution and the ReLU after it as one op
    (``conv2d_forward_relu``), and ``Sequential.backward`` a convolution and the ReLU before
    it (``conv2d_backward_relu``: c3 and r2), or a max-pool (p1 and r1): the same output
    and the same gradients, bit for bit, as the layers one by one, with the ReLU's output
    as its cache."""
    def model():
        net = Sequential([Conv2D(5, 1, 8, name="c1"), ReLU(name="r1"), MaxPool2D(name="p1"),
                          Conv2D(3, 8, 16, stride=2, name="c2"), ReLU(name="r2"), Conv2D(3, 16, 4, name="c3"),
                          Flatten(name="flat"), Dense(7 * 7 * 4, 10, name="out")], seed=3, dtype=dtype)
        for layer in net.layers:
            layer.backend = engine
        return net

    x = images.astype(dtype)
    fused, alone = model(), model()
    y = fused.forward(x, training=True)
    h = x
    for layer in alone.layers:
        h = layer.forward(h, training=True)
    np.testing.assert_array_equal(y, h)
    for name in ("r1", "r2"):  # the output, where the ReLU alone keeps its input
        np.testing.assert_array_equal(fused.layer(name)._cache, np.maximum(alone.layer(name)._cache, 0))
    dy = np.random.default_rng(2).normal(size=y.shape).astype(dtype)
    dx = dy
    for layer in reversed(alone.layers):
        dx = layer.backward(dx)
    for name in ("r1", "r2"):
        fused.layer(name).backward = lambda *args, **kwargs: pytest.fail("a ReLU's backward ran on its own")
    np.testing.assert_array_equal(fused.backward(dy), dx)
    for key, g in alone.grads.items():
        np.testing.assert_array_equal(fused.grads[key], g, err_msg=key)
