"""Fast batch normalisation: the reference's passes fused, rows split over the workers.

x is viewed as [M, C] (C = features, contiguous); every kernel walks rows and updates a
per-channel vector, so each sweep reads memory once, in order.

* ``moments``: one sweep for Σx, one for Σ(x − μ)² (the two-pass, cancellation-free
  variance of ``tf.nn.moments``), accumulated in float64 per worker and added up.
* ``batchnorm_forward``: inv and the shift (β − μ·inv) per channel as in the reference,
  then one sweep ``y = x·inv + shift`` (the same two roundings per element).
* ``batchnorm_backward``: one sweep for Σdy and Σdy·x̂, then one writing the compact
  formula dx = (γ·rstd/M)·(M·dy − Σdy − x̂·Σ(dy·x̂)), rearranged per channel into
  dx = a·dy + b·(x − μ) + c.
"""

from __future__ import annotations

import numpy as np

from ._runtime import add_up, njit, parallel

_MIN_ROWS = 2048  # rows per worker below which one thread is faster


@njit
def _sums(x2, shift, power, a, b):
    """Σ_{rows a..b} (x − shift)^power per channel (power 1 or 2), in float64."""
    out = np.zeros(x2.shape[1], np.float64)
    for m in range(a, b):
        row = x2[m]
        for c in range(row.size):
            d = np.float64(row[c]) - shift[c]
            out[c] += d if power == 1 else d * d
    return out


@njit
def _affine(x2, y2, p, q, a, b):
    """y = x·p + q per channel."""
    for m in range(a, b):
        xr, yr = x2[m], y2[m]
        for c in range(xr.size):
            yr[c] = xr[c] * p[c] + q[c]


@njit
def _grad_sums(dy2, x2, mean, rstd, a, b):
    """(Σdy, Σdy·x̂) per channel over rows a..b, in float64."""
    c_ = x2.shape[1]
    s1, s2 = np.zeros(c_, np.float64), np.zeros(c_, np.float64)
    for m in range(a, b):
        dr, xr = dy2[m], x2[m]
        for c in range(c_):
            d = np.float64(dr[c])
            s1[c] += d
            s2[c] += d * (np.float64(xr[c]) - mean[c]) * rstd[c]
    return s1, s2


@njit
def _grad_write(dy2, x2, dx2, mean, ka, kb, kc, a, b):
    """dx = ka·dy + kb·(x − mean) + kc per channel."""
    for m in range(a, b):
        dr, xr, out = dy2[m], x2[m], dx2[m]
        for c in range(out.size):
            out[c] = ka[c] * dr[c] + kb[c] * (xr[c] - mean[c]) + kc[c]


def _rows(a):
    a = np.ascontiguousarray(a)
    return a.reshape(-1, a.shape[-1])


def _channel_sum(x2, shift, power):
    parts = parallel(lambda a, b: _sums(x2, shift, power, a, b), x2.shape[0], _MIN_ROWS)
    return add_up(parts)


def moments(x: np.ndarray):
    """``(mean [C], variance [C])`` over every axis but the last (two passes)."""
    x2 = _rows(x)
    m = x2.shape[0]
    zero = np.zeros(x2.shape[1], np.float64)
    mean = _channel_sum(x2, zero, 1) / m
    var = _channel_sum(x2, mean, 2) / m
    return mean.astype(x.dtype), var.astype(x.dtype)


def batchnorm_forward(x, mean, var, offset, scale, eps: float, batch_statistics: bool = True):
    """y = x·inv + (offset − mean·inv), inv = rsqrt(var + eps)·scale (as the reference)."""
    rstd = 1 / np.sqrt(var + x.dtype.type(eps))
    inv = rstd * scale if scale is not None else rstd
    shift = offset - mean * inv if offset is not None else -mean * inv
    x2 = _rows(x)
    y = np.empty(x.shape, x.dtype)
    y2 = y.reshape(x2.shape)
    parallel(lambda a, b: _affine(x2, y2, inv, shift, a, b), x2.shape[0], _MIN_ROWS)
    return y, (x2, x.shape, mean, rstd, inv, scale, offset is not None, batch_statistics)


def batchnorm_backward(dy, cache):
    """Return ``dx``, ``d offset`` (or None) and ``d scale`` (or None)."""
    x2, shape, mean, rstd, inv, scale, has_offset, batch_statistics = cache
    dy2 = _rows(dy)
    m = x2.shape[0]
    mean64, rstd64 = mean.astype(np.float64), rstd.astype(np.float64)
    parts = parallel(lambda a, b: _grad_sums(dy2, x2, mean64, rstd64, a, b), m, _MIN_ROWS)
    s1 = add_up([p[0] for p in parts])
    s2 = add_up([p[1] for p in parts])
    dtype = dy.dtype
    doffset = s1.astype(dtype) if has_offset else None
    dscale = s2.astype(dtype) if scale is not None else None
    inv64 = inv.astype(np.float64)
    if batch_statistics:  # dx = inv·dy − (inv/M)·rstd·Σ(dy·x̂)·(x − μ) − (inv/M)·Σdy
        kb = -inv64 / m * rstd64 * s2
        kc = -inv64 / m * s1
    else:
        kb = kc = np.zeros_like(inv64)
    dx = np.empty(shape, dtype)
    ka, kb, kc = inv64.astype(dtype), kb.astype(dtype), kc.astype(dtype)
    dx2 = dx.reshape(x2.shape)
    parallel(lambda a, b: _grad_write(dy2, x2, dx2, mean, ka, kb, kc, a, b), m, _MIN_ROWS)
    return dx, doffset, dscale
