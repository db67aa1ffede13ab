"""Max-pooling over NHWC windows, as ``tf.nn.max_pool2d``.

    y[n, i, j, c] = max_{p < KH, q < KW} xp[n, s·i + p, s·j + q, c]

``xp`` is x padded by TensorFlow's SAME rule with -inf, so padding never wins.

Ties: the whole gradient goes to the FIRST maximum in row-major window order (p, then q),
TensorFlow's rule. E.g. a window [[0, 0], [0, 0]] routes dy to its top-left element,
[[1, 3], [3, 0]] to the top-right one. The forward pass records that position (``argmax``
in 0 .. KH·KW-1) and the backward pass sends ``dy`` there:

    dxp[n, s·i + p*, s·j + q*, c] += dy[n, i, j, c]     with (p*, q*) = argmax[n, i, j, c]

Overlapping windows (stride < window) add their contributions.
"""

from __future__ import annotations

import numpy as np

from .conv import pad_spatial, spatial_geometry


def max_pool_forward(x, ksize=(2, 2), stride=(2, 2), padding: str = "SAME"):
    """Return ``y [N, Ho, Wo, C]`` and the cache for ``max_pool_backward``."""
    (kh, kw), (sh, sw) = ksize, stride
    (ho, wo), pads = spatial_geometry(x.shape, ksize, stride, padding)
    xp = pad_spatial(x, pads, value=-np.inf)
    y = argmax = None
    for p in range(kh):
        for q in range(kw):
            v = xp[:, p:p + sh * ho:sh, q:q + sw * wo:sw, :]
            if y is None:
                y, argmax = v.copy(), np.zeros(v.shape, np.int32)
            else:
                better = v > y  # strict: an equal later value does not take over
                y[better] = v[better]
                argmax[better] = p * kw + q
    return y, (x.shape, xp.shape, pads, ksize, stride, argmax)


def max_pool(x, ksize=(2, 2), stride=(2, 2), padding: str = "SAME"):
    """y of ``max_pool_forward`` alone (inference: no argmax, no cache)."""
    (kh, kw), (sh, sw) = ksize, stride
    (ho, wo), pads = spatial_geometry(x.shape, ksize, stride, padding)
    xp = pad_spatial(x, pads, value=-np.inf)
    y = xp[:, :sh * ho:sh, :sw * wo:sw, :].copy()
    for p in range(kh):
        for q in range(kw):
            v = xp[:, p:p + sh * ho:sh, q:q + sw * wo:sw, :]
            np.copyto(y, v, where=v > y)  # the forward's comparison
    return y


def max_pool_backward(dy, cache):
    """Return ``dx [N, H, W, C]``."""
    x_shape, xp_shape, pads, (kh, kw), (sh, sw), argmax = cache
    ho, wo = dy.shape[1:3]
    dxp = np.zeros(xp_shape, dy.dtype)
    for p in range(kh):
        for q in range(kw):
            dxp[:, p:p + sh * ho:sh, q:q + sw * wo:sw, :] += np.where(argmax == p * kw + q, dy, 0)
    (top, _), (left, _) = pads
    return dxp[:, top:top + x_shape[1], left:left + x_shape[2], :]

