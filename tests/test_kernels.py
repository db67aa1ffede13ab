"""The fast kernels (``scratchnet.kernels``) agree with the NumPy reference (``scratchnet.ops``).

Every case runs forward AND backward, in float64 and float32, each backend consuming its
own cache. Errors are measured relative to the scale of the reference result:
``max|fast - ref| <= tol · max|ref|``.

* float64: tol = 1e-12. The kernels reorder sums (chunked GEMMs, hoisted products,
  per-thread partial sums), which moves results by a few units in the last place
  (u = 1.1e-16) times the number of terms; 1e-12 leaves a factor > 10 of headroom for
  sums of up to ~1000 terms and still catches any real mistake (a wrong index, a missing
  term, a wrong padding offset all give errors of order 1).
* float32: tol = 2e-5. The same reordering with u = 6e-8: a sum of K terms of mixed signs
  moves by about sqrt(K)·u·(Σ|terms| / |sum|); for K up to 800 (deep-CNN conv2) and a
  cancellation factor of a few, that is ~1e-5. Both backends make errors of this size
  against the exact result; we check that they agree to within it.

Max-pool forward (values and argmax) and ReLU are exact: no arithmetic is reordered.
Batch normalisation is tested at shapes of moderate M (rows per channel): its fast kernel
sums in TensorFlow's order in the input dtype, the reference with NumPy's, and in float32
both drift from the exact sum by ~sqrt(M)·u, so M = 1568 keeps the pair within 2e-5.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import scratchnet.kernels as fast
import scratchnet.ops as ref
from scratchnet import backend
from scratchnet.kernels.activations import relu_backward_into

DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-12, np.float32: 2e-5}


def close(a, b, dtype, what=""):
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
    scale = max(float(np.abs(b).max()), np.finfo(dtype).tiny) if b.size else 1.0
    err = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if b.size else 0.0
    assert err <= TOL[dtype] * scale, f"{what}: max error {err:.3g} > {TOL[dtype]:g} × {scale:.3g}"


def rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# --- the module as a backend -------------------------------------------------------------

def test_same_names_and_signatures():
    names = [n for n, v in vars(ref).items() if callable(v) and not n.startswith("_")
             and not inspect.ismodule(v)]
    assert "conv2d_forward" in names and "lstm_backward" in names
    for n in names:
        assert hasattr(fast, n), f"scratchnet.kernels lacks {n}"
        assert inspect.signature(getattr(fast, n)) == inspect.signature(getattr(ref, n)), n


def test_fast_is_registered_and_default():
    assert backend.BACKENDS["fast"] == "scratchnet.kernels"
    assert backend.DEFAULT == "fast"
    assert backend.op("conv2d_forward", "fast") is fast.conv2d_forward


def test_numba_cache_dir_is_writable(tmp_path):
    import os
    d = fast.CACHE_DIR
    os.makedirs(d, exist_ok=True)
    assert os.access(d, os.W_OK)


# --- convolution ----------------------------------------------------------------------------

CONV_CASES = [  # N, H, W, C, KH, KW, F, stride, padding
    (1, 5, 5, 1, 3, 3, 2, 1, "SAME"),        # batch 1, C = 1 (scatter path for dx)
    (2, 7, 9, 3, 3, 2, 5, 1, "SAME"),        # odd sizes, non-square kernel
    (2, 28, 28, 1, 5, 5, 4, 2, "SAME"),      # stride 2, asymmetric SAME padding (1, 2)
    (3, 14, 14, 6, 6, 6, 5, 1, "SAME"),      # even kernel: padding (2, 3); flipped-filter dx
    (2, 9, 8, 5, 3, 3, 4, 2, "VALID"),
    (2, 8, 8, 6, 4, 4, 3, 1, "VALID"),       # flipped-filter dx with VALID
    (2, 14, 14, 8, 4, 4, 12, 2, "SAME"),     # Görner conv3-like
    (1, 6, 7, 4, 2, 3, 3, 2, "SAME"),        # non-square kernel, stride 2
    (5, 14, 14, 32, 5, 5, 8, 1, "SAME"),     # several chunks per thread, both threads busy
    (3, 11, 10, 1, 4, 3, 6, 1, "VALID"),     # "wide" C = 1 path, VALID leaves rows and columns unread
    (21, 28, 28, 1, 6, 6, 6, 1, "SAME"),     # wide path: several image chunks, a ragged last chunk
    (4, 9, 7, 4, 2, 5, 3, 1, "SAME"),        # wide path, C = 4 (strided gathers)
    (2, 14, 14, 8, 5, 5, 16, 1, "SAME"),     # stride 1 with F >= C: dx by scatter
    (3, 14, 14, 32, 5, 5, 64, 1, "SAME"),    # Winograd F(2x2, 5x5): deep-CNN conv2
    (2, 9, 11, 16, 5, 5, 16, 1, "VALID"),    # Winograd, odd output sizes: half-used edge tiles
    (9, 13, 14, 16, 5, 5, 20, 1, "SAME"),    # Winograd, one image per chunk, several per thread, odd Ho
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c)))
def test_conv2d(case, dtype):
    n, h, w_, c, kh, kw, f, stride, padding = case
    rng = np.random.default_rng(1)
    x, w, b = rand(rng, (n, h, w_, c), dtype), rand(rng, (kh, kw, c, f), dtype), rand(rng, (f,), dtype)
    y0, c0 = ref.conv2d_forward(x, w, b, stride, padding)
    y1, c1 = fast.conv2d_forward(x, w, b, stride, padding)
    close(y1, y0, dtype, "y")
    dy = rand(rng, y0.shape, dtype)
    for name, g1, g0 in zip(("dx", "dw", "db"), fast.conv2d_backward(dy, c1), ref.conv2d_backward(dy, c0)):
        close(g1, g0, dtype, name)


@pytest.mark.parametrize("case", [CONV_CASES[i] for i in (8, 10, 15)], ids=["im2col", "wide", "winograd"])
def test_conv2d_filter_gradient_is_the_same_on_any_number_of_threads(case, monkeypatch):
    """dW is summed in parts fixed by the shape (``parallel_sum``), not one per worker."""
    from threadpoolctl import threadpool_limits

    from scratchnet.kernels import _runtime

    n, h, w_, c, kh, kw, f, stride, padding = case
    rng = np.random.default_rng(2)
    x, w = rand(rng, (n, h, w_, c), np.float64), rand(rng, (kh, kw, c, f), np.float64)
    dy = rand(rng, fast.conv2d_forward(x, w, None, stride, padding)[0].shape, np.float64)

    def dw():
        return fast.conv2d_backward(dy, fast.conv2d_forward(x, w, None, stride, padding)[1])[1]

    with threadpool_limits(1, user_api="blas"):  # OpenBLAS's own threads round differently
        pooled = dw()
        monkeypatch.setattr(_runtime, "NUM_THREADS", 1)
        monkeypatch.setattr(_runtime, "_pool", None)
        assert np.array_equal(dw(), pooled)


# --- max-pooling ----------------------------------------------------------------------------

POOL_CASES = [  # shape, ksize, stride, padding
    ((2, 28, 28, 32), (2, 2), (2, 2), "SAME"),   # pool1
    ((1, 7, 7, 3), (2, 2), (2, 2), "SAME"),      # batch 1, padding (0, 1) with -inf
    ((2, 9, 9, 4), (3, 3), (2, 2), "SAME"),      # overlapping windows
    ((2, 8, 8, 2), (3, 3), (1, 1), "VALID"),     # heavily overlapping
    ((2, 7, 10, 3), (2, 3), (1, 2), "SAME"),     # non-square window and stride
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("values", ["normal", "ties", "negative"])
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: f"{c[0]}k{c[1]}s{c[2]}{c[3]}")
@pytest.mark.parametrize("split", [False, True], ids=["one-worker", "split"])
def test_max_pool(case, values, dtype, split, monkeypatch):
    """Forward, argmax and backward equal to the reference, on one worker (these sizes) and
    split over the workers by images (``_MIN_PER_THREAD`` lowered); the backward with the
    ReLU before it (``max_pool_backward_relu``) equal to the two ops in turn."""
    from scratchnet.kernels import pool
    if split:
        monkeypatch.setattr(pool, "_MIN_PER_THREAD", 1)
    shape, ksize, stride, padding = case
    rng = np.random.default_rng(2)
    if values == "ties":  # small integers and ReLU'd zeros: most windows have tied maxima
        x = np.maximum(rng.integers(-2, 3, shape), 0).astype(dtype)
    elif values == "negative":  # all negative: padding (-inf) must never win
        x = -np.abs(rand(rng, shape, dtype)) - 1
    else:
        x = rand(rng, shape, dtype)
    y0, c0 = ref.max_pool_forward(x, ksize, stride, padding)
    y1, c1 = fast.max_pool_forward(x, ksize, stride, padding)
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(c1[-1], c0[-1])  # argmax: first maximum in row-major order
    dy = rand(rng, y0.shape, dtype)
    dx = fast.max_pool_backward(dy, c1)
    close(dx, ref.max_pool_backward(dy, c0), dtype, "dx")
    # with the ReLU before it (its cache: zeros, negatives, a NaN), bit for bit the two ops in turn
    gate = np.where(x > 0.5, 0, x).astype(dtype)
    gate.reshape(-1)[3] = np.nan
    for module, cache in ((fast, c1), (ref, c0)):
        np.testing.assert_array_equal(module.max_pool_backward_relu(dy, cache, gate),
                                      module.relu_backward(module.max_pool_backward(dy, cache), gate), module.__name__)


def test_max_pool_tie_rule():
    x = np.array([1, 3, 3, 0], np.float32).reshape(1, 2, 2, 1)
    _, cache = fast.max_pool_forward(x)
    dx = fast.max_pool_backward(np.ones((1, 1, 1, 1), np.float32), cache)
    np.testing.assert_array_equal(dx.ravel(), [0, 1, 0, 0])


# --- dropout --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("keep", [0.5, 0.75, 1.0])
def test_dropout(dtype, keep):
    """Both passes bit for bit the reference's, a dropped inf or NaN included (0, as
    ``tf.nn.dropout``'s select gives), and for a transposed (non-contiguous) input."""
    rng = np.random.default_rng(4)
    x = rand(rng, (50, 1024), dtype)
    x[0, :4] = np.inf, -np.inf, np.nan, np.nan
    mask = rng.random(x.shape) >= 1 - keep
    mask[0, :4] = False, True, False, True
    for xs, ms in ((x, mask), (x.T, mask.T)):
        y1, c1 = fast.dropout_forward(xs, ms, keep)
        y0, c0 = ref.dropout_forward(xs, ms, keep)
        assert y1.dtype == dtype
        np.testing.assert_array_equal(y1, y0)
        np.testing.assert_array_equal(fast.dropout_backward(xs, c1), ref.dropout_backward(xs, c0))


# --- dense, relu, loss --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape", [(1, 3, 4), (7, 33, 5), (50, 3136, 64), (3, 1100, 1000),  # big-weight dx path
                                   (10, 3136, 1024)])  # deep-CNN fc1 at batch 10: dW by kernels.skinny (AVX-512)
def test_dense(shape, dtype):
    n, i, o = shape
    rng = np.random.default_rng(3)
    x, w, b = rand(rng, (n, i), dtype), rand(rng, (i, o), dtype), rand(rng, (o,), dtype)
    y0, c0 = ref.dense_forward(x, w, b)
    y1, c1 = fast.dense_forward(x, w, b)
    close(y1, y0, dtype, "y")
    dy = rand(rng, y0.shape, dtype)
    for name, g1, g0 in zip(("dx", "dw", "db"), fast.dense_backward(dy, c1), ref.dense_backward(dy, c0)):
        close(g1, g0, dtype, name)


@pytest.mark.parametrize("m", [1, 2, 5, 6, 7, 10, 12])
def test_skinny_products(m, monkeypatch):
    """The register-blocked skinny products (``kernels.skinny``, float32) against float64
    products, the forward product over several strips of w and a ragged last one; and bit
    for bit the same when one thread does all the parts (each output is summed in an order
    fixed by the shape)."""
    from scratchnet.kernels import _runtime, skinny

    monkeypatch.setattr(skinny, "STRIP", 40)  # K = 258: six strips of 40 rows and one of 18
    rng = np.random.default_rng(m)
    x, w, dy = (rand(rng, s, np.float32) for s in ((m, 258), (258, 192), (m, 192)))
    x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
    got = skinny.forward(x, w), skinny.input_grad(dy, w), skinny.weight_grad(x, dy)
    for name, g, want in zip(("y", "dx", "dw"), got, (x64 @ w64, dy64 @ w64.T, x64.T @ dy64)):
        close(g, want.astype(np.float32), np.float32, name)
    one_thread = lambda fn, n, min_per_thread=1: [fn(0, n)]  # noqa: E731
    monkeypatch.setattr(skinny, "parallel", one_thread)
    monkeypatch.setattr(_runtime, "parallel", one_thread)  # parallel_sum's workers
    for name, g, again in zip(("y", "dx", "dw"), got,
                              (skinny.forward(x, w), skinny.input_grad(dy, w), skinny.weight_grad(x, dy))):
        np.testing.assert_array_equal(again, g, err_msg=name)


def test_skinny_products_take_2_to_12_rows_of_float32():
    from scratchnet.kernels import skinny
    assert skinny.fits(10, 3136, 1024, np.float32) and skinny.fits(2, 8, 64, np.float32)
    assert skinny.fits(12, 2, 64, "float32")
    assert not skinny.fits(1, 3136, 1024, np.float32) and not skinny.fits(13, 3136, 1024, np.float32)
    assert not skinny.fits(10, 3136, 1024, np.float64) and not skinny.fits(10, 3136, 1000, np.float32)
    assert skinny.fits(10, 3136, 1056, np.float32)  # columns in blocks of 32
    assert not skinny.fits(10, 3135, 1024, np.float32)  # dx takes the rows of w two at a time


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape", [(3, 5), (50, 28, 28, 32)])
def test_relu_exact(shape, dtype):
    rng = np.random.default_rng(4)
    x = rand(rng, shape, dtype)
    flat = x.reshape(-1)
    flat[:4] = [0.0, -0.0, np.nan, -np.inf]
    y0, c0 = ref.relu_forward(x)
    y1, c1 = fast.relu_forward(x)
    np.testing.assert_array_equal(y1, y0)
    assert np.array_equal(np.signbit(y1), np.signbit(y0))
    dy = rand(rng, shape, dtype)
    np.testing.assert_array_equal(fast.relu_backward(dy, c1), ref.relu_backward(dy, c0))
    in_place = dy.copy()  # the fused backwards' form (its own loop: see _relu_grad_in_place)
    assert relu_backward_into(in_place, c1, in_place) is in_place
    np.testing.assert_array_equal(in_place, ref.relu_backward(dy, c0))
    y2 = x.copy()  # inference's in-place ReLU
    assert fast.relu(y2, out=y2) is y2
    np.testing.assert_array_equal(y2, y0)
    assert np.array_equal(np.signbit(y2), np.signbit(y0))
    xt = x.T  # a non-contiguous input takes the NumPy path
    np.testing.assert_array_equal(fast.relu_forward(xt)[0], ref.relu_forward(xt)[0])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("labels", ["ids", "onehot", "soft"])
def test_softmax_cross_entropy(labels, dtype):
    rng = np.random.default_rng(5)
    z = rand(rng, (50, 10), dtype) * 5
    z[0, 3], z[1] = 1e4, -1e4  # stable for huge logits
    ids = rng.integers(0, 10, 50)
    y = {"ids": ids, "onehot": np.eye(10, dtype=dtype)[ids],
         "soft": rng.dirichlet(np.ones(10), 50).astype(dtype)}[labels]
    l0, g0 = ref.softmax_cross_entropy(z, y)
    l1, g1 = fast.softmax_cross_entropy(z, y)
    assert type(l1) is type(l0) and np.isfinite(l1)
    assert abs(float(l1) - float(l0)) <= TOL[dtype] * abs(float(l0))
    close(g1, g0, dtype, "dlogits")


def test_softmax_cross_entropy_errors():
    z = np.zeros((2, 3), np.float32)
    with pytest.raises(TypeError):
        fast.softmax_cross_entropy(z, np.array([0.0, 1.0]))
    with pytest.raises(ValueError):
        fast.softmax_cross_entropy(z, np.zeros((2, 4), np.float32))


# --- LSTM ---------------------------------------------------------------------------------------

LSTM_CASES = [  # N, T, D, H, forget_bias
    (1, 1, 3, 4, 1.0),     # T = 1, batch 1
    (3, 5, 4, 6, 1.0),
    (4, 28, 28, 8, 0.0),   # the recipe's sequence length, no forget bias
    (2, 3, 5, 16, 1.0),
    (37, 4, 6, 8, 1.0),    # enough rows for the worker threads to split the batch (18 + 19)
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", LSTM_CASES, ids=lambda c: "x".join(map(str, c)))
def test_lstm(case, dtype):
    n, t, d, h, fb = case
    rng = np.random.default_rng(6)
    x = rand(rng, (n, t, d), dtype)
    kernel = (rand(rng, (d + h, 4 * h), dtype) * 0.5).astype(dtype)
    bias = rand(rng, (4 * h,), dtype)
    h0, c0 = ref.lstm_forward(x, kernel, bias, fb)
    h1, c1 = fast.lstm_forward(x, kernel, bias, fb)
    close(h1, h0, dtype, "h")
    dh = rand(rng, h0.shape, dtype)
    for name, g1, g0 in zip(("dx", "dkernel", "dbias"), fast.lstm_backward(dh, c1), ref.lstm_backward(dh, c0)):
        close(g1, g0, dtype, name)


def test_lstm_saturated_gates():
    """Pre-activations of ±200: exp overflows to inf inside the sigmoid, which must give
    exactly 0 or 1 (and no warning leaks out)."""
    rng = np.random.default_rng(7)
    x = rand(rng, (2, 3, 4), np.float32) * 100
    kernel, bias = rand(rng, (4 + 5, 20), np.float32), np.zeros(20, np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        h1, _ = fast.lstm_forward(x, kernel, bias, 1.0)
    h0, _ = ref.lstm_forward(x, kernel, bias, 1.0)
    close(h1, h0, np.float32, "h")


# --- layers through the backend switch --------------------------------------------------------------

BATCHNORMS = [((8, 14, 14, 24), True, False), ((16, 200), True, True), ((5, 30), False, True),
              ((1, 12), True, True), ((3, 4, 4, 6), False, False)]


@pytest.mark.parametrize("shape,offset,scale", BATCHNORMS, ids=[str(b) for b in BATCHNORMS])
@pytest.mark.parametrize("batch_statistics", [True, False], ids=["training", "evaluation"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm(shape, offset, scale, batch_statistics, dtype):
    rng = np.random.default_rng(9)
    x, dy = rand(rng, shape, dtype) * dtype(2) + dtype(1), rand(rng, shape, dtype)
    beta = rand(rng, shape[-1:], dtype) if offset else None
    gamma = rand(rng, shape[-1:], dtype) if scale else None
    moving = rand(rng, shape[-1:], dtype), np.abs(rand(rng, shape[-1:], dtype))
    stats = {}
    for name, mod in (("ref", ref), ("fast", fast)):
        mean, var = mod.moments(x) if batch_statistics else moving
        y, cache = mod.batchnorm_forward(x, mean, var, beta, gamma, 1e-5, batch_statistics)
        stats[name] = (mean, var, y, *mod.batchnorm_backward(dy, cache))
    for what, a, b in zip(["mean", "variance", "y", "dx", "d offset", "d scale"], stats["fast"], stats["ref"]):
        assert (a is None) == (b is None), what
        if a is not None:
            close(a, b, dtype, what)
    fixed = (*moving, beta, gamma, 1e-5)  # inference, in place as the layer runs it
    in_place = x.copy()
    assert fast.batchnorm(in_place, *fixed, out=in_place) is in_place
    np.testing.assert_array_equal(in_place, fast.batchnorm(x, *fixed))
    close(in_place, ref.batchnorm(x, *fixed), dtype, "in place")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_model_through_backend(dtype):
    """A small CNN, built twice with the same weights, one per backend."""
    from scratchnet.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
    from scratchnet.model import Sequential

    def make(name):
        return Sequential([Conv2D(3, 1, 4, backend=name), ReLU(backend=name), MaxPool2D(2, backend=name),
                           Conv2D(3, 4, 6, stride=2, backend=name), ReLU(backend=name), Flatten(),
                           Dense(4 * 4 * 6, 5, backend=name)], seed=0, dtype=dtype)
    m_ref, m_fast = make("reference"), make("fast")
    x = np.random.default_rng(8).standard_normal((3, 14, 14, 1)).astype(dtype)
    y0, y1 = m_ref.forward(x, training=True), m_fast.forward(x, training=True)
    close(y1, y0, dtype, "logits")
    dy = np.ones_like(y0)
    close(m_fast.backward(dy), m_ref.backward(dy), dtype, "dx")
    for k in m_ref.grads:
        close(m_fast.grads[k], m_ref.grads[k], dtype, k)


# --- fused optimizer updates ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("size", [1, 17, 300_001])  # ragged tails; large enough to split over threads
def test_fused_updates_are_bit_exact(size, dtype):
    """The fused Adam / EMA / SGD kernels give exactly the NumPy lines' bits."""
    from scratchnet.kernels import optim as fused
    t = np.dtype(dtype).type
    rng = np.random.default_rng(9)
    p, g = rand(rng, (size,), dtype), rand(rng, (size,), dtype)
    m, v = rand(rng, (size,), dtype) * t(0.1), np.abs(rand(rng, (size,), dtype)) * t(0.01)
    g[0] = 0  # sqrt(v) + eps with v small
    alpha, c1, c2, eps = t(1e-3) * np.sqrt(t(1) - t(0.999) ** 3) / (t(1) - t(0.9) ** 3), t(1) - t(0.9), \
        t(1) - t(0.999), t(1e-8)
    p0, m0, v0 = p.copy(), m.copy(), v.copy()
    m0 += (g - m0) * c1
    v0 += (g * g - v0) * c2
    p0 -= m0 * alpha / (np.sqrt(v0) + eps)
    assert fused.adam_update(p, g, m, v, alpha, c1, c2, eps)
    for a, b in ((p, p0), (m, m0), (v, v0)):
        np.testing.assert_array_equal(a, b)
    s, s0, c = m.copy(), m.copy(), t(1) - t(0.99)
    s0 -= (s0 - p) * c
    assert fused.ema_update(s, p, c)
    np.testing.assert_array_equal(s, s0)
    p1 = p.copy()
    p1 -= g * t(0.8)
    assert fused.sgd_update(p, g, t(0.8))
    np.testing.assert_array_equal(p, p1)
    if size > 1:  # not contiguous: refused, the caller runs its NumPy line
        assert not fused.sgd_update(p[::2], g[::2], t(0.8))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_param_grads_without_input_grad(dtype):
    """conv2d/dense_backward_params equal the full backward's dw, db in both backends, and
    Sequential.backward(input_grad=False) leaves every parameter gradient unchanged."""
    from scratchnet.layers import Conv2D, Dense, Flatten, ReLU
    from scratchnet.model import Sequential
    rng = np.random.default_rng(10)
    x, w, b = rand(rng, (3, 9, 9, 2), dtype), rand(rng, (3, 3, 2, 4), dtype), rand(rng, (4,), dtype)
    for m in (ref, fast):
        y, cache = m.conv2d_forward(x, w, b, 2, "SAME")
        dy = rand(rng, y.shape, dtype)
        _, dw, db = m.conv2d_backward(dy, cache)
        dw1, db1 = m.conv2d_backward_params(dy, cache)
        close(dw1, dw, dtype, "dw")
        close(db1, db, dtype, "db")
        xd, wd, bd = rand(rng, (4, 7), dtype), rand(rng, (7, 3), dtype), rand(rng, (3,), dtype)
        y, cache = m.dense_forward(xd, wd, bd)
        dy = rand(rng, y.shape, dtype)
        _, dw, db = m.dense_backward(dy, cache)
        dw1, db1 = m.dense_backward_params(dy, cache)
        close(dw1, dw, dtype, "dense dw")
        close(db1, db, dtype, "dense db")
    model = Sequential([Flatten(), Dense(9 * 9 * 2, 5), ReLU(), Dense(5, 3)], seed=0, dtype=dtype)
    conv = Sequential([Conv2D(3, 2, 4), ReLU(), Flatten(), Dense(9 * 9 * 4, 3)], seed=0, dtype=dtype)
    for net in (model, conv):
        dy = rand(rng, net.forward(x, training=True).shape, dtype)
        dx = net.backward(dy)
        assert dx.shape == x.shape
        full = {k: g.copy() for k, g in net.grads.items()}
        assert net.backward(dy, input_grad=False) is None
        for k, g in net.grads.items():
            close(g, full[k], dtype, k)


# --- OpenBLAS's idle spin (``_runtime.shorten_blas_spin``) -------------------------------------

_SPIN_PROBE = """
import ctypes, numpy as np
from scratchnet.kernels import _runtime
a = np.random.default_rng(0).random((600, 600))
assert np.allclose(a @ a, np.einsum("ij,jk->ik", a, a))  # the restarted threads compute
lib = ctypes.CDLL(_runtime._find_blas().filepath)
print(_runtime.BLAS_SPIN_SHORTENED, lib.openblas_thread_timeout(), _runtime._find_blas().get_num_threads())
"""


@pytest.mark.parametrize("user_setting", [None, "28"])
def test_openblas_spin_is_shortened_unless_the_user_set_it(user_setting):
    import os
    import subprocess
    import sys

    from scratchnet.kernels import _runtime

    blas = _runtime._find_blas()
    if _runtime.NUM_THREADS == 1 or blas is None or blas.internal_api != "openblas":
        pytest.skip("one core, or NumPy's BLAS is not OpenBLAS")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "GOTO_THREAD_TIMEOUT")}
    if user_setting:
        env["OPENBLAS_THREAD_TIMEOUT"] = user_setting
    out = subprocess.run([sys.executable, "-c", _SPIN_PROBE], env=env, capture_output=True, text=True, check=True)
    shortened, timeout, threads = out.stdout.split()
    if user_setting:
        assert (shortened, timeout) == ("False", user_setting)
    else:
        assert (shortened, timeout) == ("True", str(_runtime.BLAS_SPIN_LOG2_CYCLES))
    assert int(threads) == blas.get_num_threads()


# --- glibc's allocator keeps large freed arrays (``_runtime.keep_freed_memory``) ---------------

_FAULTS_PROBE = """
import resource, numpy as np
from scratchnet.kernels import _runtime
def faults_of_a_fresh_array():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.empty(64 << 20, np.uint8)  # 64 MB: above glibc's largest dynamic mmap threshold
    a[::4096] = 1
    del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_a_fresh_array()
print(_runtime.FREED_MEMORY_KEPT, faults_of_a_fresh_array())
"""


@pytest.mark.parametrize("user_setting", [None, "33554432"])
def test_large_freed_arrays_are_reused_unless_the_user_set_glibc_thresholds(user_setting):
    """The second 64 MB array reuses the first one's memory (no page faults) once the
    thresholds are raised; a MALLOC_MMAP_THRESHOLD_ of the user's wins (a fresh mmap, 16 K
    faults of 4 KB pages, or fewer huge ones)."""
    import os
    import platform
    import subprocess
    import sys

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    if user_setting:
        env["MALLOC_MMAP_THRESHOLD_"] = user_setting
    out = subprocess.run([sys.executable, "-c", _FAULTS_PROBE], env=env, capture_output=True, text=True, check=True)
    kept, faults = out.stdout.split()
    if user_setting:
        assert kept == "False" and int(faults) >= 32, out.stdout
    else:
        assert kept == "True" and int(faults) < 32, out.stdout
