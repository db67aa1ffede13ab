"""Dense (fully connected) layer.

Forward:   y = x @ W + b          x [N, In], W [In, Out], b [Out] -> y [N, Out]
Backward:  dx = dy @ Wᵀ,  dW = xᵀ @ dy,  db = Σ_n dy
"""

from __future__ import annotations

import numpy as np


def dense_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray):
    """Return ``y [N, Out]`` and the cache ``(x, w)``."""
    return x @ w + b, (x, w)


def dense_backward(dy: np.ndarray, cache):
    """Return ``dx [N, In], dw [In, Out], db [Out]``."""
    x, w = cache
    return dy @ w.T, x.T @ dy, dy.sum(axis=0)


def dense_backward_params(dy: np.ndarray, cache):
    """Return ``dw [In, Out], db [Out]`` only: a first layer's input needs no gradient."""
    x, w = cache
    return x.T @ dy, dy.sum(axis=0)
