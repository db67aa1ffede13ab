"""Batch normalisation, as ``tf.nn.moments`` + ``tf.nn.batch_normalization``.

x has its features on the last axis: [N, F] (dense) or [N, H, W, C] (NHWC); every
statistic is per feature, over the other axes (M = N, or N·H·W, values per feature).

Statistics (``tf.nn.moments``, biased variance):

    μ = (1/M) Σ x                    σ² = (1/M) Σ (x − μ)²

Forward, in TensorFlow's order of operations (``nn_impl.batch_normalization``)::

    inv = rsqrt(σ² + ε)              (· γ if there is a scale)
    y   = x · inv + (β − μ · inv)    (− μ · inv without an offset)

which is γ·x̂ + β with x̂ = (x − μ)/sqrt(σ² + ε). In training μ, σ² are the batch's own
(``moments(x)``); in evaluation, fixed numbers (the moving averages).

Backward through the batch statistics, the computational graph one node at a time
(CS231n's way; Σ is over the M values of a feature, dy arrives at y)::

    1  μ    = (1/M) Σ x                     dβ   = Σ dy
    2  xc   = x − μ                         dγ   = Σ dy · x̂
    3  σ²   = (1/M) Σ xc²                   dx̂   = dy · γ
    4  rstd = (σ² + ε)^(−1/2)               drstd = Σ dx̂ · xc                      (node 5)
    5  x̂    = xc · rstd                     dσ²  = −½ rstd³ · drstd                 (node 4)
    6  y    = γ · x̂ + β                     dxc  = dx̂ · rstd + (2/M) xc · dσ²      (nodes 5, 3)
                                            dμ   = −Σ dxc                           (node 2)
                                            dx   = dxc + dμ / M                     (nodes 2, 1)

Substituting gives the compact form::

    dx = (γ · rstd / M) · (M·dy − Σ dy − x̂ · Σ(dy · x̂))

(the fast kernel evaluates it from two per-channel sums, Σdy and Σx·dy, in one reduction
sweep and one writing sweep, arranged as TensorFlow's gradient graph: ``kernels.batchnorm``).

With fixed statistics (evaluation mode) only node 6 and the scaling remain:
dx = dy · γ · rstd.
"""

from __future__ import annotations

import numpy as np


def moments(x: np.ndarray):
    """``(mean [C], variance [C])`` over every axis but the last (``tf.nn.moments``:
    the mean, then the mean of the squared differences from it)."""
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axis=axes)
    return mean, np.square(x - mean).mean(axis=axes)


def batchnorm_forward(x, mean, var, offset, scale, eps: float, batch_statistics: bool = True):
    """y = x·inv + (offset − mean·inv), inv = rsqrt(var + eps)·scale. ``offset`` and
    ``scale`` [C] may be None. ``batch_statistics``: mean and var are ``moments(x)``,
    and the backward differentiates through them; otherwise they are constants."""
    rstd = 1 / np.sqrt(var + x.dtype.type(eps))
    inv = rstd * scale if scale is not None else rstd
    shift = offset - mean * inv if offset is not None else -mean * inv
    y = x * inv + shift
    return y, (x, mean, rstd, scale, offset is not None, batch_statistics)


def batchnorm(x, mean, var, offset, scale, eps: float, out=None):
    """y of ``batchnorm_forward`` with fixed statistics, alone (inference: no cache), into
    ``out`` if given (may be x itself); the same two roundings per element."""
    rstd = 1 / np.sqrt(var + x.dtype.type(eps))
    inv = rstd * scale if scale is not None else rstd
    shift = offset - mean * inv if offset is not None else -mean * inv
    y = np.multiply(x, inv, out=out)
    return np.add(y, shift, out=y)


def batchnorm_backward(dy, cache):
    """Return ``dx``, ``d offset`` (None without an offset) and ``d scale`` (None without
    a scale), following the graph of the module docstring."""
    x, mean, rstd, scale, has_offset, batch_statistics = cache
    axes = tuple(range(x.ndim - 1))
    m = x.dtype.type(x.size // x.shape[-1])
    xc = x - mean                                           # node 2
    xhat = xc * rstd                                        # node 5
    doffset = dy.sum(axis=axes) if has_offset else None     # node 6
    dscale = (dy * xhat).sum(axis=axes) if scale is not None else None
    dxhat = dy * scale if scale is not None else dy
    if not batch_statistics:
        return dxhat * rstd, doffset, dscale
    drstd = (dxhat * xc).sum(axis=axes)                     # node 5
    dvar = -0.5 * rstd ** 3 * drstd                         # node 4
    dxc = dxhat * rstd + (2 / m) * xc * dvar                # nodes 5 and 3
    dmean = -dxc.sum(axis=axes)                             # node 2
    return dxc + dmean / m, doffset, dscale                 # nodes 2 and 1
