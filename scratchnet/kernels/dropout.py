"""Fast inverted dropout: ``ops.dropout``'s two lines, each one Numba pass.

``np.where(mask, x · scale, 0)`` makes the scaled copy, then a second array through
``where``, whose select is not vectorised: 57 µs forward and as much backward for
deep-CNN's [50, 1024] (AMD EPYC Zen 4); one pass here. The same values bit for bit: the
product rounds once in x's dtype, and a dropped element is 0 whatever x holds (inf, NaN).
The mask itself is drawn by the layer (``layers.Dropout``), the same in both backends.
"""

from __future__ import annotations

import numpy as np

from ._runtime import njit


@njit
def _masked_scale(x, mask, scale, y):
    zero = x.dtype.type(0)
    for k in range(x.size):
        y[k] = x[k] * scale if mask[k] else zero


def _apply(x, mask, scale):
    if not (x.flags.c_contiguous and mask.flags.c_contiguous) or mask.shape != x.shape:
        return np.where(mask, x * scale, 0).astype(x.dtype, copy=False)
    y = np.empty_like(x)
    _masked_scale(x.reshape(-1), mask.reshape(-1), scale, y.reshape(-1))
    return y


def dropout_forward(x, mask, keep_prob: float):
    """y = x · (1/keep) where mask else 0; the cache is (mask, scale)."""
    scale = x.dtype.type(1.0 / keep_prob)
    return _apply(x, mask, scale), (mask, scale)


def dropout_backward(dy, cache):
    """dx = dy · (1/keep) where mask else 0."""
    mask, scale = cache
    return _apply(dy, mask, scale)
