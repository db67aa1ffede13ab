"""Fast ReLU: one pass, split over the worker threads.

``relu_forward`` returns ``max(x, 0)`` with NumPy's semantics (NaN stays NaN);
``relu_backward`` returns ``dy`` where ``x > 0`` and 0 elsewhere (TensorFlow's rule,
gradient 0 at exactly 0 and at NaN), in one pass instead of the reference's boolean
mask + ``where`` + cast. The other activations are re-exported from ``scratchnet.ops``.
"""

from __future__ import annotations

import numpy as np

from ._runtime import njit, parallel

# A split pays only where one thread's pass takes longer than waking the other. Measured on
# the 2-vCPU EPYC (family 25 model 17; ``relu_grad``, medians of 200 calls 300 µs apart):
# 313,600 floats 46 µs on one thread against 124 µs split, 627,200 90 against 115,
# 1,254,400 206 against 165. So parts of at least 512 K elements: a split from 1 M.
_MIN_PER_THREAD = 1 << 19
# Below this NumPy's own call is the faster one (200 floats: 1.05 µs against 2.3 µs for the
# dispatch through ``parallel`` into Numba), with the same values: np.maximum also maps
# -0.0 to +0.0 and keeps NaN. (A batch-1 forward pass of mlp5-bn has four such ReLUs.)
_SMALL = 1 << 12


# The loops run over slices from index 0: with ``range(a, b)`` Numba cannot prove the
# index is non-negative and keeps NumPy's negative-index wraparound in the loop, which
# LLVM vectorises as gathers/scatters (4x slower than np.maximum). From 0 it is a plain
# compare-and-blend over 16 floats per AVX-512 instruction.

@njit
def _relu(x, y, a, b):
    zero = x.dtype.type(0)
    xs, ys = x[a:b], y[a:b]
    for k in range(xs.size):
        v = xs[k]
        ys[k] = zero if v <= zero else v  # -0.0 -> +0.0 and NaN -> NaN, like np.maximum


@njit
def _relu_in_place(x, a, b):
    """x[a:b] = max(x, 0) in place (as ``_relu_grad_in_place``: 27 against 98 µs for
    313,600 floats through ``_relu(x, x)``)."""
    zero = x.dtype.type(0)
    xs = x[a:b]
    for k in range(xs.size):
        v = xs[k]
        xs[k] = zero if v <= zero else v


@njit
def _relu_grad(dy, x, dx, a, b):
    zero = dy.dtype.type(0)
    ds, xs, os = dy[a:b], x[a:b], dx[a:b]
    for k in range(ds.size):
        os[k] = ds[k] if xs[k] > zero else zero


@njit
def _relu_grad_in_place(d, x, a, b):
    """d[a:b] = d · [x > 0] in place. Not ``_relu_grad(d, x, d)``: with its output aliasing
    an input, that loop fails LLVM's runtime alias check and runs scalar (1.48 ms against
    41 µs for 313,600 floats); this one has a single array to write and vectorises."""
    zero = d.dtype.type(0)
    ds, xs = d[a:b], x[a:b]
    for k in range(ds.size):
        ds[k] = ds[k] if xs[k] > zero else zero


def relu_forward(x):
    """y = max(x, 0); the cache is x."""
    if not x.flags.c_contiguous or x.size < _SMALL:
        return np.maximum(x, 0), x
    y = np.empty_like(x)
    xf, yf = x.reshape(-1), y.reshape(-1)
    parallel(lambda a, b: _relu(xf, yf, a, b), xf.size, _MIN_PER_THREAD)
    return y, x


def relu(x, out=None):
    """y = max(x, 0) alone (inference), into ``out`` if given (may be x itself)."""
    if not x.flags.c_contiguous or (out is not None and not out.flags.c_contiguous) or x.size < _SMALL:
        return np.maximum(x, 0, out=out)
    y = np.empty_like(x) if out is None else out
    xf, yf = x.reshape(-1), y.reshape(-1)
    if out is x:
        parallel(lambda a, b: _relu_in_place(yf, a, b), xf.size, _MIN_PER_THREAD)
    else:
        parallel(lambda a, b: _relu(xf, yf, a, b), xf.size, _MIN_PER_THREAD)
    return y


def relu_backward(dy, x):
    """dx = dy · [x > 0]."""
    return relu_backward_into(dy, x, None)


def relu_mask(dx, gate):
    """dx · [gate > 0] in place (the backward of the ReLU before a layer, on that layer's
    fresh dx), or dx itself if gate is None."""
    return dx if gate is None else relu_backward_into(dx, gate, dx)


def relu_backward_into(dy, x, out):
    """``relu_backward`` into ``out`` if not None (which may be dy itself: one stream fewer)."""
    if not (dy.flags.c_contiguous and x.flags.c_contiguous) or dy.shape != x.shape \
            or (out is not None and not out.flags.c_contiguous):
        dx = np.where(x > 0, dy, 0).astype(dy.dtype, copy=False)
        if out is None:
            return dx
        out[...] = dx
        return out
    dx = np.empty_like(dy) if out is None else out
    d, xf, o = dy.reshape(-1), x.reshape(-1), dx.reshape(-1)
    if out is dy:
        parallel(lambda a, b: _relu_grad_in_place(o, xf, a, b), d.size, _MIN_PER_THREAD)
    else:
        parallel(lambda a, b: _relu_grad(d, xf, o, a, b), d.size, _MIN_PER_THREAD)
    return dx
