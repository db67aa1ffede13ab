"""Fused, in-place optimizer and moving-average updates (one pass over memory each).

NumPy evaluates Adam's three lines ::

    m += (g - m)·(1 - β1);  v += (g² - v)·(1 - β2);  w -= m·α / (sqrt(v) + ε)

as about ten separate whole-array passes, each reading one or two arrays and writing a
temporary: for deep-CNN's fc1 weight (3.2 M floats, 12.8 MB per array) that is well over
200 MB of memory traffic and ~8 ms per step. Here one Numba loop reads g, m, v, w once
and writes m, v, w once (7 × 12.8 MB), keeping every intermediate in registers.

Bit-for-bit equal to the NumPy expressions: every operation is the same IEEE operation
in the same order and in the same dtype (the scalars arrive already converted to the
parameter dtype, so nothing is promoted), and without ``fastmath`` LLVM neither
reassociates nor contracts ``a·b + c`` into an FMA. ``tests/test_optim.py`` (against
TensorFlow) runs through these kernels, and ``tests/test_kernels.py`` compares them with
the NumPy lines bit for bit.

Large arrays are split over the worker threads (memory-bound: the second core adds
bandwidth); each loop runs from index 0 over a slice so that no negative-index
wraparound check blocks vectorisation.
"""

from __future__ import annotations

import numpy as np

from ._runtime import njit, parallel

_MIN_PER_THREAD = 1 << 17


@njit
def _adam(p, g, m, v, alpha, c1, c2, eps, a, b):
    ps, gs, ms, vs = p[a:b], g[a:b], m[a:b], v[a:b]
    for k in range(ps.size):
        gk = gs[k]
        mk = ms[k] + (gk - ms[k]) * c1
        vk = vs[k] + (gk * gk - vs[k]) * c2
        ms[k] = mk
        vs[k] = vk
        ps[k] = ps[k] - mk * alpha / (np.sqrt(vk) + eps)


@njit
def _ema(s, w, c, a, b):
    ss, ws = s[a:b], w[a:b]
    for k in range(ss.size):
        ss[k] = ss[k] - (ss[k] - ws[k]) * c


@njit
def _sgd(p, g, lr, a, b):
    ps, gs = p[a:b], g[a:b]
    for k in range(ps.size):
        ps[k] = ps[k] - gs[k] * lr


def _flat(*arrays):
    """1-D views of same-dtype C-contiguous float arrays, or None when the fused kernel
    does not apply (then the caller uses its NumPy lines)."""
    dtype = arrays[0].dtype
    if dtype not in (np.float32, np.float64):
        return None
    for x in arrays:
        if x.dtype != dtype or not x.flags.c_contiguous or x.shape != arrays[0].shape:
            return None
    return [x.reshape(-1) for x in arrays]


def adam_update(p, g, m, v, alpha, c1, c2, eps) -> bool:
    """In place: ``m += (g - m)·c1; v += (g² - v)·c2; p -= m·alpha / (sqrt(v) + eps)``.
    Scalars must already be of p's dtype. Returns False (and does nothing) if it cannot."""
    flat = _flat(p, g, m, v)
    if flat is None or not flat[2].flags.writeable:
        return False
    pf, gf, mf, vf = flat
    parallel(lambda a, b: _adam(pf, gf, mf, vf, alpha, c1, c2, eps, a, b), pf.size, _MIN_PER_THREAD)
    return True


def ema_update(shadow, w, c) -> bool:
    """In place: ``shadow -= (shadow - w)·c`` (c of w's dtype)."""
    flat = _flat(shadow, w)
    if flat is None:
        return False
    sf, wf = flat
    parallel(lambda a, b: _ema(sf, wf, c, a, b), sf.size, _MIN_PER_THREAD)
    return True


def sgd_update(p, g, lr) -> bool:
    """In place: ``p -= g·lr`` (lr of p's dtype)."""
    flat = _flat(p, g)
    if flat is None:
        return False
    pf, gf = flat
    parallel(lambda a, b: _sgd(pf, gf, lr, a, b), pf.size, _MIN_PER_THREAD)
    return True
