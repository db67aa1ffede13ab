"""2-D convolution (cross-correlation, as ``tf.nn.conv2d``), NHWC input and HWIO filter.

    x [N, H, W, C],  w [KH, KW, C, F],  b [F]  ->  y [N, Ho, Wo, F]

    y[n, i, j, f] = b[f] + Σ_{p, q, c} xp[n, s·i + p, s·j + q, c] · w[p, q, c, f]

where ``xp`` is x zero-padded by TensorFlow's rule (``ops.padding``). Written as
im2col + one matrix product: ``windows[n, i, j, p, q, c] = xp[n, s·i+p, s·j+q, c]`` is a
strided *view* of xp (no copy until the product), and the forward pass is
``windows · w`` contracted over (p, q, c).

Backward, with dy [N, Ho, Wo, F]:
    dw[p, q, c, f] = Σ_{n, i, j} windows[n, i, j, p, q, c] · dy[n, i, j, f]
    db[f]          = Σ_{n, i, j} dy[n, i, j, f]
    dxp[n, s·i+p, s·j+q, c] += Σ_f dy[n, i, j, f] · w[p, q, c, f]    (col2im: scatter back)
and dx is dxp with the padding cut off.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .padding import output_size


def pad_spatial(x, pads, value=0.0):
    """Pad H and W of an NHWC array by ``pads = ((top, bottom), (left, right))``."""
    if not any(sum(p) for p in pads):
        return x
    return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=value)


def spatial_geometry(x_shape, ksize, strides, padding):
    """Output size and padding for an NHWC input and a (KH, KW) window moved by
    (SH, SW): ``((Ho, Wo), ((top, bottom), (left, right)))``."""
    ho, top, bottom = output_size(x_shape[1], ksize[0], strides[0], padding)
    wo, left, right = output_size(x_shape[2], ksize[1], strides[1], padding)
    return (ho, wo), ((top, bottom), (left, right))


def windows_view(xp, kh, kw, stride, out_hw):
    """The im2col view ``[N, Ho, Wo, KH, KW, C]`` of a padded NHWC array (no copy)."""
    sn, sh, sw, sc = xp.strides
    n, c = xp.shape[0], xp.shape[3]
    shape = (n, out_hw[0], out_hw[1], kh, kw, c)
    return as_strided(xp, shape, (sn, stride * sh, stride * sw, sh, sw, sc), writeable=False)


def conv2d_forward(x, w, b, stride: int = 1, padding: str = "SAME"):
    """Return ``y [N, Ho, Wo, F]`` and the cache for ``conv2d_backward``."""
    kh, kw = w.shape[:2]
    out_hw, pads = spatial_geometry(x.shape, (kh, kw), (stride, stride), padding)
    xp = pad_spatial(x, pads)
    windows = windows_view(xp, kh, kw, stride, out_hw)
    y = np.tensordot(windows, w, axes=([3, 4, 5], [0, 1, 2])) + b
    return y, (x.shape, xp, w, stride, out_hw, pads)


def conv2d_backward_params(dy, cache):
    """Return ``dw [KH, KW, C, F], db [F]`` only: a first layer's input needs no gradient."""
    x_shape, xp, w, stride, out_hw, pads = cache
    windows = windows_view(xp, w.shape[0], w.shape[1], stride, out_hw)
    return np.tensordot(windows, dy, axes=([0, 1, 2], [0, 1, 2])), dy.sum(axis=(0, 1, 2))


def conv2d_backward(dy, cache):
    """Return ``dx [N, H, W, C], dw [KH, KW, C, F], db [F]``."""
    x_shape, xp, w, stride, out_hw, pads = cache
    kh, kw = w.shape[:2]
    windows = windows_view(xp, kh, kw, stride, out_hw)
    dw = np.tensordot(windows, dy, axes=([0, 1, 2], [0, 1, 2]))
    db = dy.sum(axis=(0, 1, 2))
    dwindows = np.tensordot(dy, w, axes=([3], [3]))  # [N, Ho, Wo, KH, KW, C]
    dxp = np.zeros_like(xp)
    ho, wo = out_hw
    for p in range(kh):
        for q in range(kw):
            dxp[:, p:p + stride * ho:stride, q:q + stride * wo:stride, :] += dwindows[:, :, :, p, q, :]
    (top, _), (left, _) = pads
    dx = dxp[:, top:top + x_shape[1], left:left + x_shape[2], :]
    return dx, dw, db
