"""Softmax cross-entropy in one pass per row (Numba), same result as
``scratchnet.ops.losses.softmax_cross_entropy``: no one-hot matrix is built for class-id
labels, and log-softmax, loss and gradient come out of the same loop."""

from __future__ import annotations

import math

import numpy as np

from ..ops.losses import l2_loss, l2_penalty, log_softmax  # noqa: F401  (re-exported)
from ._runtime import njit


@njit
def _shift(z, r):
    """Row r's max m and log Σ_k e^(z_k - m): log softmax(z)_k = z_k - m - log_s."""
    m = z[r, 0]
    for k in range(1, z.shape[1]):
        if z[r, k] > m:
            m = z[r, k]
    s = z.dtype.type(0)
    for k in range(z.shape[1]):
        s += math.exp(z[r, k] - m)
    return m, math.log(s)


@njit
def _xent(z, ids, y, grad):
    """Loss and gradient; targets are ``ids`` (class per row) when given, else ``y`` [N, C]."""
    n, c = z.shape
    one = z.dtype.type(1)
    inv_n = one / z.dtype.type(n)
    loss = z.dtype.type(0)
    for r in range(n):
        m, log_s = _shift(z, r)
        for k in range(c):
            logp = z[r, k] - m - log_s
            target = (one if k == ids[r] else z.dtype.type(0)) if ids.size else y[r, k]
            loss -= target * logp
            grad[r, k] = (math.exp(logp) - target) * inv_n
    return loss * inv_n


def softmax_cross_entropy(logits, labels):
    """Mean softmax cross-entropy and its gradient with respect to the logits
    (labels: class ids [N] or a distribution [N, C])."""
    n, c = logits.shape
    z = np.ascontiguousarray(logits)
    grad = np.empty_like(z)
    if labels.ndim == 1:
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"class-id labels must be integers, got {labels.dtype}")
        if labels.size and (labels.min() < -c or labels.max() >= c):
            raise IndexError(f"class ids must be in [0, {c}), got {labels.min()}..{labels.max()}")
        ids = labels.astype(np.int64) % c  # negative ids wrap, as NumPy indexing does in the reference
        loss = _xent(z, ids, np.empty((0, 0), z.dtype), grad)
    else:
        if labels.shape != logits.shape:
            raise ValueError(f"labels shape {labels.shape} does not match logits shape {logits.shape}")
        loss = _xent(z, np.empty(0, np.int64), np.ascontiguousarray(labels, dtype=z.dtype), grad)
    return logits.dtype.type(loss), grad
