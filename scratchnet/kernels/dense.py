"""Dense layer: the reference's three products, with the bias added in place.

``x @ w`` already goes to OpenBLAS sgemm/dgemm, and ``dy @ w.T`` / ``x.T @ dy`` pass
transposed *views*, which BLAS takes as transpose flags (no copy). The only waste in the
reference is ``x @ w + b`` allocating a second [N, Out] array; here the bias is added in
place. (BLAS keeps its own two threads here: one big GEMM, no worker threads.)

A batch of a few rows against a large float32 weight (deep-CNN fc1 at batch 10) goes to
``skinny.py`` instead, whose register-blocked products beat OpenBLAS on those shapes.
"""

from __future__ import annotations

import numpy as np

from . import skinny


def dense_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray):
    """Return ``y [N, Out]`` and the cache ``(x, w)``."""
    y = skinny.forward(x, w) if skinny.applies(len(x), w) else np.matmul(x, w)
    y += b
    return y, (x, w)


BIG_WEIGHT = 1 << 20  # elements; deep-CNN fc1 has 3.2 M


def _input_grad(dy, w):
    """dx = dy @ wᵀ. For a large weight and a small batch (deep-CNN fc1: 50 × 1024 @
    1024 × 3136), OpenBLAS runs the transposed product dxᵀ = w @ dyᵀ 25 % faster (single
    thread 6.5 -> 4.9 ms; the weight streams through once either way, the other
    orientation packs it less well); transposing the small [N, In] result back costs
    ~0.1 ms. Small layers keep the direct product (there the copy would dominate)."""
    if skinny.applies(len(dy), w):
        return skinny.input_grad(dy, w)
    if w.size >= BIG_WEIGHT:
        return np.ascontiguousarray(np.matmul(w, dy.T).T)
    return np.matmul(dy, w.T)


def _weight_grad(x, dy, w):
    """dw = xᵀ @ dy."""
    return skinny.weight_grad(x, dy) if skinny.applies(len(x), w) else np.matmul(x.T, dy)


def dense_backward(dy: np.ndarray, cache):
    """Return ``dx [N, In], dw [In, Out], db [Out]``."""
    x, w = cache
    return _input_grad(dy, w), _weight_grad(x, dy, w), dy.sum(axis=0)


def dense_backward_params(dy: np.ndarray, cache):
    """Return ``dw [In, Out], db [Out]`` only (a first layer: no input gradient)."""
    x, w = cache
    return _weight_grad(x, dy, w), dy.sum(axis=0)
