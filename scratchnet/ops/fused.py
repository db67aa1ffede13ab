"""Ops that span layers: ``Sequential.infer`` hands a convolution or a dense layer the
batch normalisation, ReLU and max-pool that follow it (``Layer.infer_fused``),
``Sequential.forward`` in training a convolution the ReLU after it
(``Layer.forward_fused``), and ``Sequential.backward`` a convolution or a max-pool the
ReLU before it (``Layer.backward_fused``), so that a backend can apply them as it writes the layer's
output (or input gradient) instead of in more passes over it
(``scratchnet.kernels.fused``). Here, the reference: the ops in turn.

``bn`` is ``(mean, variance, offset, scale, eps)`` of a ``batchnorm`` with fixed statistics
(offset or scale may be None), ``pool`` ``(ksize, stride, padding)`` of a ``max_pool``;
each part only if given (``relu`` if true)."""

from __future__ import annotations

import numpy as np

from .activations import relu_backward, relu_forward
from .batchnorm import batchnorm
from .conv import conv2d_backward, conv2d_forward
from .dense import dense_forward
from .pool import max_pool, max_pool_backward


def _pointwise(y, bn, relu):
    if bn is not None:
        batchnorm(y, *bn, out=y)
    return np.maximum(y, 0, out=y) if relu else y


def conv2d_infer(x, w, b, stride: int = 1, padding: str = "SAME", *, bn=None, relu: bool = False, pool=None):
    """maxpool(max(batchnorm(conv(x, w) + b), 0)) [N, Ho', Wo', F]; nothing is kept."""
    y = _pointwise(conv2d_forward(x, w, b, stride, padding)[0], bn, relu)
    return max_pool(y, *pool) if pool is not None else y


def dense_infer(x, w, b, *, bn=None, relu: bool = False):
    """max(batchnorm(x @ w + b), 0) [N, Out]; nothing is kept."""
    return _pointwise(dense_forward(x, w, b)[0], bn, relu)


def conv2d_forward_relu(x, w, b, stride: int = 1, padding: str = "SAME"):
    """``(max(conv(x, w) + b, 0), cache)``: the convolution's cache (for ``conv2d_backward``)
    with the ReLU's output. The ReLU's backward can take that output as its cache: y > 0
    exactly where x > 0."""
    y, cache = conv2d_forward(x, w, b, stride, padding)
    return relu_forward(y)[0], cache


def conv2d_backward_relu(dy, cache, relu_cache):
    """``(dx · [relu_cache > 0], dw, db)``: ``conv2d_backward`` and then the backward of the
    ReLU whose output the convolution read (``relu_cache``: that ReLU's cache, x's shape)."""
    dx, dw, db = conv2d_backward(dy, cache)
    return relu_backward(dx, relu_cache), dw, db


def max_pool_backward_relu(dy, cache, relu_cache):
    """``dx · [relu_cache > 0]``: ``max_pool_backward`` and then the backward of the ReLU
    whose output the pool read (``relu_cache``: that ReLU's cache, x's shape)."""
    return relu_backward(max_pool_backward(dy, cache), relu_cache)
