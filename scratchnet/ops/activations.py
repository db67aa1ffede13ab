"""Pointwise activations and softmax. Each backward takes the upstream gradient ``dy``
and the forward's cache, and returns ``dx`` of the same shape."""

from __future__ import annotations

import numpy as np


def relu_forward(x):
    """y = max(x, 0)."""
    return np.maximum(x, 0), x


def relu(x, out=None):
    """y = max(x, 0) alone (inference: no cache), into ``out`` if given (may be x itself)."""
    return np.maximum(x, 0, out=out)


def relu_backward(dy, x):
    """dx = dy · [x > 0]   (TensorFlow's convention: the gradient at exactly 0 is 0)."""
    return np.where(x > 0, dy, 0).astype(dy.dtype, copy=False)


def sigmoid(x):
    """σ(x) = 1 / (1 + e^-x), written so that e^-x never overflows."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def sigmoid_forward(x):
    y = sigmoid(x)
    return y, y


def sigmoid_backward(dy, y):
    """dσ/dx = σ(x)·(1 - σ(x))."""
    return dy * y * (1 - y)


def tanh_forward(x):
    y = np.tanh(x)
    return y, y


def tanh_backward(dy, y):
    """d tanh(x)/dx = 1 - tanh(x)²."""
    return dy * (1 - y * y)


def softmax(x, axis=-1):
    """p_k = e^(x_k - max x) / Σ_j e^(x_j - max x)."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_forward(x):
    """Softmax over the last axis."""
    p = softmax(x)
    return p, p


def softmax_backward(dy, p):
    """dx_k = p_k · (dy_k - Σ_j dy_j p_j)   (the Jacobian-vector product of softmax)."""
    return p * (dy - (dy * p).sum(axis=-1, keepdims=True))
