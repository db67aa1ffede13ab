"""Inverted dropout, as ``tf.nn.dropout``.

Forward:   y = x · (1/keep) where mask else 0      (mask: boolean, same shape as x)
Backward:  dx = dy · (1/keep) where mask else 0

TensorFlow draws ``mask = U[0,1) >= rate`` with ``rate = 1 - keep`` and scales before
masking with ``1/keep`` cast to x's dtype; we do the same, so a shared mask gives
bit-identical results in both engines.
"""

from __future__ import annotations

import numpy as np


def dropout_forward(x, mask, keep_prob: float):
    scale = x.dtype.type(1.0 / keep_prob)
    return np.where(mask, x * scale, 0).astype(x.dtype, copy=False), (mask, scale)


def dropout_backward(dy, cache):
    mask, scale = cache
    return np.where(mask, dy * scale, 0).astype(dy.dtype, copy=False)
