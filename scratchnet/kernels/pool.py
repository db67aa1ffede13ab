"""Fast max-pooling: one Numba pass writes the max and the position of the first max.

Same maths, padding (-inf) and tie rule (first maximum in row-major window order) as
``scratchnet.ops.pool``. The reference makes KH·KW passes over strided views of a padded
copy and keeps an int32 argmax; here each worker thread owns whole images and, for every
output pixel, scans its window once, comparing contiguous C-vectors (NHWC puts the
channels innermost, so the comparisons vectorise). Nothing is padded: window cells
outside the image are treated as -inf by bounds checks. The argmax is stored as uint8
(windows up to 16×16), a quarter of the memory traffic of int32.

Backward scatters dy through the argmax into a zeroed dx, again one pass, again by whole
images per thread so that overlapping windows (stride < window) never race.
"""

from __future__ import annotations

import numpy as np

from ..ops.conv import spatial_geometry
from ._runtime import njit, parallel
from .activations import relu_mask

# Input elements a worker must get before the pass is split: waking the second worker costs
# more than a small pool saves (deep-CNN at batch 10, pool2's backward over 125 K elements:
# 0.055 ms on one thread, 0.24-0.38 ms split, in the step right after fc1's products).
_MIN_PER_THREAD = 1 << 19


def _split(fn, x_shape):
    """``parallel(fn, N)`` over the images of an input of ``x_shape``, whole images per worker,
    each worker given at least ``_MIN_PER_THREAD`` input elements."""
    per_image = int(np.prod(x_shape[1:]))
    parallel(fn, x_shape[0], -(-_MIN_PER_THREAD // max(1, per_image)))


@njit
def _pool_forward(x, y, arg, n0, n1, kh, kw, sh, sw, pt, pl, record=True):
    """y = the window maxima; with ``record``, arg = the position of the first maximum
    (``record=False``, inference: arg is not touched)."""
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    ho, wo = y.shape[1], y.shape[2]
    ninf = x.dtype.type(-np.inf)
    for n in range(n0, n1):
        for i in range(ho):
            for j in range(wo):
                yv = y[n, i, j]
                av = arg[n, i, j] if record else arg[0, 0, 0]
                # window position (0, 0) initialises, exactly like the reference
                ih, iw = i * sh - pt, j * sw - pl
                if 0 <= ih < h and 0 <= iw < w:
                    for ch in range(c):
                        yv[ch] = x[n, ih, iw, ch]
                else:
                    for ch in range(c):
                        yv[ch] = ninf
                if record:
                    for ch in range(c):
                        av[ch] = 0
                for p in range(kh):
                    ih = i * sh + p - pt
                    if ih < 0 or ih >= h:
                        continue
                    for q in range(kw):
                        if p == 0 and q == 0:
                            continue
                        iw = j * sw + q - pl
                        if iw < 0 or iw >= w:
                            continue
                        k = p * kw + q
                        xv = x[n, ih, iw]
                        for ch in range(c):
                            if xv[ch] > yv[ch]:  # strict: a later equal value does not win
                                yv[ch] = xv[ch]
                                if record:
                                    av[ch] = k


@njit
def _pool_backward(dy, arg, dx, n0, n1, kw, sh, sw, pt, pl):
    h, w, c = dx.shape[1], dx.shape[2], dx.shape[3]
    ho, wo = dy.shape[1], dy.shape[2]
    for n in range(n0, n1):
        for i in range(ho):
            for j in range(wo):
                for ch in range(c):
                    k = arg[n, i, j, ch]
                    p = k // kw
                    q = k - p * kw
                    ih = i * sh + p - pt
                    iw = j * sw + q - pl
                    if 0 <= ih < h and 0 <= iw < w:  # (an all-padding max sends nothing back)
                        dx[n, ih, iw, ch] += dy[n, i, j, ch]


@njit
def _pool_backward_tiled(dy, arg, dx, gate, n0, n1, kh, kw):
    """Non-overlapping windows that tile x exactly (stride = window, no padding): every
    dx element belongs to exactly one window, so dx is WRITTEN once (dy where the argmax
    points, else 0), with no zero-fill pass and no read-modify-write; the channel loop
    is a compare-and-select over contiguous vectors. ``gate`` (x's shape, or None): the
    cache of a ReLU before the pool, whose backward is applied in the same select,
    dx · [gate > 0]."""
    ho, wo, c = dy.shape[1], dy.shape[2], dy.shape[3]
    zero = dy.dtype.type(0)
    for n in range(n0, n1):
        for i in range(ho):
            for p in range(kh):
                for j in range(wo):
                    g = dy[n, i, j]
                    a = arg[n, i, j]
                    for q in range(kw):
                        d = dx[n, i * kh + p, j * kw + q]
                        k = p * kw + q
                        if gate is None:
                            for ch in range(c):
                                d[ch] = g[ch] if a[ch] == k else zero
                        else:
                            e = gate[n, i * kh + p, j * kw + q]
                            for ch in range(c):
                                d[ch] = g[ch] if a[ch] == k and e[ch] > zero else zero


def _pool(x, ksize, stride, padding, record):
    (kh, kw), (sh, sw) = tuple(ksize), tuple(stride)
    (ho, wo), pads = spatial_geometry(x.shape, (kh, kw), (sh, sw), padding)
    x = np.ascontiguousarray(x)
    n, c = x.shape[0], x.shape[3]
    y = np.empty((n, ho, wo, c), x.dtype)
    shape = (n, ho, wo, c) if record else (1, 1, 1, 1)
    arg = np.empty(shape, np.uint8 if kh * kw <= 256 else np.int32)
    pt, pl = pads[0][0], pads[1][0]
    _split(lambda a, b: _pool_forward(x, y, arg, a, b, kh, kw, sh, sw, pt, pl, record), x.shape)
    return y, (x.shape, (kh, kw), (sh, sw), (pt, pl), arg)


def max_pool_forward(x, ksize=(2, 2), stride=(2, 2), padding: str = "SAME"):
    """Return ``y [N, Ho, Wo, C]`` and the cache for ``max_pool_backward`` (this module's)."""
    return _pool(x, ksize, stride, padding, record=True)


def max_pool(x, ksize=(2, 2), stride=(2, 2), padding: str = "SAME"):
    """y alone (inference: no argmax written)."""
    return _pool(x, ksize, stride, padding, record=False)[0]


def max_pool_backward(dy, cache):
    """Return ``dx [N, H, W, C]``."""
    return max_pool_backward_relu(dy, cache, None)


def max_pool_backward_relu(dy, cache, relu_cache):
    """``ops.fused.max_pool_backward_relu``: dx · [relu_cache > 0] (relu_cache None: dx),
    the ReLU's mask applied in the tiled pass's select, else in place on dx after. For
    deep-CNN's pools, whose dx is a ReLU's dy (6.4 and 3.2 MB at batch 50), one pass and one
    array fewer than the two layers' ops."""
    x_shape, (kh, kw), (sh, sw), (pt, pl), arg = cache
    dy = np.ascontiguousarray(dy)
    if (sh, sw) == (kh, kw) and (pt, pl) == (0, 0) and dy.shape[1] * kh == x_shape[1] \
            and dy.shape[2] * kw == x_shape[2]:
        gate = relu_cache if relu_cache is None or relu_cache.flags.c_contiguous else np.ascontiguousarray(relu_cache)
        dx = np.empty(x_shape, dy.dtype)
        _split(lambda a, b: _pool_backward_tiled(dy, arg, dx, gate, a, b, kh, kw), x_shape)
        return dx
    dx = np.zeros(x_shape, dy.dtype)
    _split(lambda a, b: _pool_backward(dy, arg, dx, a, b, kw, sh, sw, pt, pl), x_shape)
    return relu_mask(dx, relu_cache)
