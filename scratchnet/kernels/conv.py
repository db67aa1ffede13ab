"""Fast 2-D convolution: chunked NHWC im2col (Numba) + one-thread sgemm per worker.

Same maths and conventions as ``scratchnet.ops.conv`` (read that file first). The
reference builds the whole im2col matrix (for deep-CNN conv2: 9800 × 800 floats = 31 MB,
as large as the L3 cache) and hands it to one big product. Here every worker thread
takes a contiguous range of output pixels and walks it in chunks of ``ROWS`` rows:

    col   = im2col(x, rows s..e)           [r, KH·KW·C]   (Numba; ~1 MB, stays in cache)
    y[s:e] = col @ W2 + b                   W2 = w.reshape(KH·KW·C, F)   (sgemm, 1 thread)

so the column matrix is written and read while it is still in L2/L3, and the two cores
run two independent GEMMs instead of synchronising inside one.

Backward, with dY [N, Ho, Wo, F] seen as a matrix [N·Ho·Wo, F]:

* dW: the same chunks are rebuilt from x (cheaper than keeping 31 MB around) and each
  worker accumulates ``colᵀ @ dY[s:e]`` into its own [K, F] partial sum; the partial sums
  are added at the end (no write races, no atomics).
* dX, stride 1 (and C ≥ 4): the input gradient is itself a convolution, of dY with the
  filter flipped in space and with C and F swapped, padded by (KH-1-top, KW-1-left):

      dx[n, h, v, c] = Σ_{p,q,f} dY[n, h + top - p, v + left - q, f] · w[p, q, c, f]

  so it reuses the forward machinery (im2col of dY + GEMM) and needs no scatter.
* dX otherwise (stride 2, or C < 4 where that GEMM would be a thin matrix-vector
  product): ``dcol = dY[s:e] @ W2ᵀ`` per chunk, then a Numba col2im adds each row's
  KH·KW contiguous C-vectors back into dx. Workers own whole images, so overlapping
  windows never race.
"""

from __future__ import annotations

import numpy as np
from numba import uint64 as U

from ..ops.conv import spatial_geometry
from ._runtime import blas_single, njit, parallel, scratch

ROWS_TARGET_BYTES = 1 << 20  # ~1 MB column chunk: L2-sized (512 KB) to L3-sized
MIN_ROWS, MAX_ROWS = 64, 2048


def _chunk_rows(k: int, itemsize: int) -> int:
    return int(min(MAX_ROWS, max(MIN_ROWS, ROWS_TARGET_BYTES // max(1, k * itemsize))))


@njit
def _pixel(r, ho, wo):
    """Output pixel r = (n·Ho + i)·Wo + j  ->  (n, i, j)."""
    n = r // (ho * wo)
    rem = r - n * ho * wo
    i = rem // wo
    return n, i, rem - i * wo


@njit
def _im2col(x, col, r0, r1, kh, kw, stride, pt, pl, ho, wo):
    """col[r - r0, (p·KW + q)·C + c] = x[n, i·s + p - pt, j·s + q - pl, c] (0 outside x)
    for output pixels r = (n·Ho + i)·Wo + j in [r0, r1).

    In NHWC one window row (fixed p) is ONE contiguous run of KW·C floats in x, and it
    lands in one contiguous run of col: each (row, p) is a clipped memcpy plus zero fill
    for the padding. Indices are unsigned (``U``) so that Numba emits no negative-index
    wraparound checks, which would otherwise turn the copy into gathers/scatters."""
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    xf = x.reshape(-1)
    zero = x.dtype.type(0)
    run = kw * c
    for r in range(r0, r1):
        n, i, j = _pixel(r, ho, wo)
        dst = col[r - r0]
        iw0 = j * stride - pl
        q0 = max(0, -iw0)
        q1 = min(kw, w - iw0)
        for p in range(kh):
            ih = i * stride + p - pt
            d0 = p * run
            if ih < 0 or ih >= h or q1 <= q0:
                for t in range(run):
                    dst[U(d0 + t)] = zero
                continue
            for t in range(q0 * c):
                dst[U(d0 + t)] = zero
            s0 = ((n * h + ih) * w + iw0 + q0) * c
            a = d0 + q0 * c
            for t in range((q1 - q0) * c):
                dst[U(a + t)] = xf[U(s0 + t)]
            for t in range(q1 * c, run):
                dst[U(d0 + t)] = zero


@njit
def _col2im_add(dcol, dx, r0, r1, kh, kw, stride, pt, pl, ho, wo):
    """The adjoint of ``_im2col``: dx[n, i·s + p - pt, j·s + q - pl, :] += dcol[r - r0, (p, q), :]
    (again one contiguous run per (row, p))."""
    h, w, c = dx.shape[1], dx.shape[2], dx.shape[3]
    dxf = dx.reshape(-1)
    run = kw * c
    for r in range(r0, r1):
        n, i, j = _pixel(r, ho, wo)
        src = dcol[r - r0]
        iw0 = j * stride - pl
        q0 = max(0, -iw0)
        q1 = min(kw, w - iw0)
        if q1 <= q0:
            continue
        for p in range(kh):
            ih = i * stride + p - pt
            if ih < 0 or ih >= h:
                continue
            d0 = ((n * h + ih) * w + iw0 + q0) * c
            a = p * run + q0 * c
            for t in range((q1 - q0) * c):
                dxf[U(d0 + t)] += src[U(a + t)]


@njit
def _im2col_t(x, colt, r0, r1, kh, kw, stride, pt, pl, ho, wo):
    """The transposed column matrix: colt[(p·KW + q)·C + c, r - r0] = x[n, i·s + p - pt,
    j·s + q - pl, c] (0 outside x), for output pixels r in [r0, r1).

    Walked one output-row segment (n, i, j0..j1) at a time: for each tap (p, q, c) the
    segment is one contiguous run of colt, read from x with stride s·C (for C = 1,
    s = 1 a contiguous copy), with the out-of-image ends zero-filled."""
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    xf = x.reshape(-1)
    zero = x.dtype.type(0)
    r = r0
    while r < r1:
        n, i, j0 = _pixel(r, ho, wo)
        j1 = min(wo, j0 + (r1 - r))  # this segment: pixels (n, i, j0..j1)
        t0 = r - r0
        seg = j1 - j0
        for p in range(kh):
            ih = i * stride + p - pt
            inside = 0 <= ih < h
            for q in range(kw):
                # columns j with 0 <= j·s + q - pl < w
                ja = max(j0, (pl - q + stride - 1) // stride if pl - q > 0 else 0)
                jb = min(j1, (w - 1 - q + pl) // stride + 1)
                if not inside or jb <= ja:
                    ja = jb = j0
                for ch in range(c):
                    dst = colt[(p * kw + q) * c + ch]
                    for t in range(ja - j0):
                        dst[U(t0 + t)] = zero
                    src = ((n * h + ih) * w + ja * stride + q - pl) * c + ch
                    d = t0 + ja - j0
                    step = stride * c
                    for t in range(jb - ja):
                        dst[U(d + t)] = xf[U(src + t * step)]
                    for t in range(jb - j0, seg):
                        dst[U(t0 + t)] = zero
        r += seg


# --- "wide" stride-1 path for thin inputs (first layers: C = 1) ------------------------------
#
# Pad x once into xp [N, Hp + 1, Wp, C]. For stride 1 the tap (p, q, c) of output pixel
# (n, i, j) is xp[n, i + p, j + q, c]; computing the outputs on a "wide" grid of Ho × Wp
# columns (j in 0..Wp-1, the last Wp - Wo per row are garbage and dropped) makes that
#
#     flat index  (n·(Hp+1)·Wp + (i + p)·Wp + j + q)·C + c  =  start(n, p, q, c) + C·(i·Wp + j)
#
# one arithmetic sequence per (n, p, q, c): the transposed column matrix of a whole image
# is KH·KW·C long copies (contiguous when C = 1) instead of one short run per output row,
# which is what made im2col cost more than the GEMM for C = 1. The price is Wp/Wo extra
# columns (14-18 % for 5×5 and 6×6 on 28×28). The extra row of xp keeps the garbage
# columns' reads inside the array.

WIDE_MAX_C = 4  # beyond this, the normal im2col's runs are long enough


@njit
def _wide_cols(xp, colt, n0, n1, kh, kw, ho):
    """colt[(p·KW + q)·C + c, (n - n0)·L + i·Wp + j] = xp[n, i + p, j + q, c], L = Ho·Wp."""
    hp1, wp, c = xp.shape[1], xp.shape[2], xp.shape[3]
    xf = xp.reshape(-1)
    length = ho * wp
    for n in range(n0, n1):
        d0 = (n - n0) * length
        for p in range(kh):
            for q in range(kw):
                for ch in range(c):
                    dst = colt[(p * kw + q) * c + ch]
                    s0 = ((n * hp1 + p) * wp + q) * c + ch
                    for t in range(length):
                        dst[U(d0 + t)] = xf[U(s0 + t * c)]


@njit
def _unwide(yw, y, n0, n1, wp, bias, has_bias):
    """y[n, i, j, f] = yw[(n - n0)·Ho·Wp + i·Wp + j, f] (+ bias[f]) for j < Wo."""
    ho, wo, f = y.shape[1], y.shape[2], y.shape[3]
    for n in range(n0, n1):
        for i in range(ho):
            src = yw[U(((n - n0) * ho + i) * wp):]
            dst = y[n, i]
            for j in range(wo):
                sj, dj = src[j], dst[j]
                if has_bias:
                    for k in range(f):
                        dj[k] = sj[k] + bias[k]
                else:
                    for k in range(f):
                        dj[k] = sj[k]


@njit
def _widen(dy, dyw, n0, n1, wp):
    """dyw[(n - n0)·Ho·Wp + i·Wp + j, f] = dy[n, i, j, f] for j < Wo, 0 in the garbage columns."""
    ho, wo, f = dy.shape[1], dy.shape[2], dy.shape[3]
    zero = dy.dtype.type(0)
    for n in range(n0, n1):
        for i in range(ho):
            base = ((n - n0) * ho + i) * wp
            for j in range(wp):
                dst = dyw[U(base + j)]
                if j < wo:
                    src = dy[n, i, j]
                    for k in range(f):
                        dst[k] = src[k]
                else:
                    for k in range(f):
                        dst[k] = zero


def _use_wide(c, stride):
    return stride == 1 and c <= WIDE_MAX_C


def _pad_wide(x, kh, kw, pt, pl, out_hw):
    """xp [N, Ho + KH, Wo + KW - 1, C]: x at (pt, pl), zeros around (one spare row)."""
    n, h, w, c = x.shape
    ho, wo = out_hw
    xp = np.zeros((n, ho + kh, wo + kw - 1, c), x.dtype)
    rows, cols = min(h, ho + kh - 1 - pt), min(w, wo + kw - 1 - pl)  # VALID may not read it all
    xp[:, pt:pt + rows, pl:pl + cols] = x[:, :rows, :cols]
    return xp


def _images_per_chunk(k, length, itemsize):
    return max(1, WIDE_TARGET_BYTES // (k * length * itemsize))


WIDE_TARGET_BYTES = 1 << 19


def _correlate_wide(x, w2, kh, kw, pt, pl, out_hw, bias):
    n = x.shape[0]
    ho, wo = out_hw
    k, f = w2.shape
    xp = _pad_wide(x, kh, kw, pt, pl, out_hw)
    wp = xp.shape[2]
    length = ho * wp
    y = np.empty((n, ho, wo, f), x.dtype)
    per = _images_per_chunk(k, length, x.itemsize)
    has_bias = bias is not None
    b = np.ascontiguousarray(bias, x.dtype) if has_bias else np.zeros(f, x.dtype)

    def work(a, e):
        colt = scratch("colt", (k, per * length), x.dtype)
        yw = scratch("yw", (per * length, f), x.dtype)
        for s in range(a, e, per):
            t = min(s + per, e)
            m = (t - s) * length
            ct = colt[:, :m] if t - s == per else np.ascontiguousarray(colt.reshape(-1)[:k * m].reshape(k, m))
            _wide_cols(xp, ct, s, t, kh, kw, ho)
            np.matmul(ct.T, w2, out=yw[:m])
            _unwide(yw, y, s, t, wp, b, has_bias)

    with blas_single():
        parallel(work, n)
    return y


def _filter_grad_wide(x, dy, kh, kw, pt, pl, out_hw):
    n = x.shape[0]
    ho, wo = out_hw
    f = dy.shape[3]
    xp = _pad_wide(x, kh, kw, pt, pl, out_hw)
    wp = xp.shape[2]
    k = kh * kw * xp.shape[3]
    length = ho * wp
    per = _images_per_chunk(k, length, x.itemsize)

    def work(a, e):
        colt = scratch("colt", (k, per * length), x.dtype)
        dyw = scratch("yw", (per * length, f), x.dtype)
        part = scratch("dw_part", (k, f), x.dtype)
        acc = np.zeros((k, f), x.dtype)
        for s in range(a, e, per):
            t = min(s + per, e)
            m = (t - s) * length
            ct = colt[:, :m] if t - s == per else np.ascontiguousarray(colt.reshape(-1)[:k * m].reshape(k, m))
            _wide_cols(xp, ct, s, t, kh, kw, ho)
            _widen(dy, dyw, s, t, wp)
            np.matmul(ct, dyw[:m], out=part)
            acc += part
        return acc

    with blas_single():
        parts = parallel(work, n)
    dw = parts[0]
    for p in parts[1:]:
        dw += p
    return dw


def _correlate(src, w2, kh, kw, stride, pt, pl, out_hw, bias=None):
    """y [N, Ho, Wo, F] = im2col(src) @ w2 (+ bias), chunked over the worker threads."""
    n = src.shape[0]
    ho, wo = out_hw
    k, f = w2.shape
    m = n * ho * wo
    y = np.empty((n, ho, wo, f), src.dtype)
    y2 = y.reshape(m, f)
    rows = _chunk_rows(k, src.itemsize)

    def work(a, b):
        col = scratch("col", (rows, k), src.dtype)
        for s in range(a, b, rows):
            e = min(s + rows, b)
            _im2col(src, col, s, e, kh, kw, stride, pt, pl, ho, wo)
            out = y2[s:e]
            np.matmul(col[:e - s], w2, out=out)
            if bias is not None:
                out += bias

    with blas_single():
        parallel(work, m, min_per_thread=rows)
    return y


def conv2d_forward(x, w, b, stride: int = 1, padding: str = "SAME"):
    """Return ``y [N, Ho, Wo, F]`` and the cache for ``conv2d_backward`` (this module's)."""
    kh, kw, c, f = w.shape
    out_hw, pads = spatial_geometry(x.shape, (kh, kw), (stride, stride), padding)
    x = np.ascontiguousarray(x)
    w2 = np.ascontiguousarray(w).reshape(kh * kw * c, f)
    if _use_wide(c, stride):
        y = _correlate_wide(x, w2, kh, kw, pads[0][0], pads[1][0], out_hw, b)
    else:
        y = _correlate(x, w2, kh, kw, stride, pads[0][0], pads[1][0], out_hw, bias=b)
    return y, (x, w, stride, out_hw, pads)


def _filter_grad(x, dy2, kh, kw, stride, pt, pl, out_hw):
    n, c = x.shape[0], x.shape[3]
    ho, wo = out_hw
    m, f = dy2.shape
    k = kh * kw * c
    rows = _chunk_rows(k, x.itemsize)

    def work(a, b):
        col = scratch("col", (rows, k), x.dtype)
        part = scratch("dw_part", (k, f), x.dtype)
        acc = np.zeros((k, f), x.dtype)
        for s in range(a, b, rows):
            e = min(s + rows, b)
            _im2col(x, col, s, e, kh, kw, stride, pt, pl, ho, wo)
            np.matmul(col[:e - s].T, dy2[s:e], out=part)
            acc += part
        return acc

    with blas_single():
        parts = parallel(work, m, min_per_thread=rows)
    dw = parts[0]
    for p in parts[1:]:
        dw += p
    return dw


def _input_grad_scatter(dy2, w2, x_shape, kh, kw, stride, pt, pl, out_hw):
    n = x_shape[0]
    ho, wo = out_hw
    k, f = w2.shape
    dx = np.zeros(x_shape, dy2.dtype)
    rows = _chunk_rows(k, dy2.itemsize)
    w2t = w2.T
    per_image = ho * wo

    def work(n0, n1):  # whole images: no two workers touch the same dx pixel
        dcol = scratch("col", (rows, k), dy2.dtype)
        a, b = n0 * per_image, n1 * per_image
        for s in range(a, b, rows):
            e = min(s + rows, b)
            np.matmul(dy2[s:e], w2t, out=dcol[:e - s])
            _col2im_add(dcol, dx, s, e, kh, kw, stride, pt, pl, ho, wo)

    with blas_single():
        parallel(work, n)
    return dx


def conv2d_backward_filter(dy, cache):
    """``dw [KH, KW, C, F]`` alone (for benchmarks; ``conv2d_backward`` is what layers call)."""
    x, w, stride, out_hw, pads = cache
    kh, kw, c, f = w.shape
    dy = np.ascontiguousarray(dy)
    if _use_wide(c, stride):
        return _filter_grad_wide(x, dy, kh, kw, pads[0][0], pads[1][0], out_hw).reshape(w.shape)
    dy2 = dy.reshape(-1, f)
    return _filter_grad(x, dy2, kh, kw, stride, pads[0][0], pads[1][0], out_hw).reshape(w.shape)


def conv2d_backward_input(dy, cache):
    """``dx [N, H, W, C]`` alone (for benchmarks; ``conv2d_backward`` is what layers call)."""
    x, w, stride, out_hw, pads = cache
    kh, kw, c, f = w.shape
    (pt, _), (pl, _) = pads
    dy = np.ascontiguousarray(dy)
    if stride == 1 and c >= 4:
        # flip in space, swap C and F: wt[p', q', f, c] = w[KH-1-p', KW-1-q', c, f]
        wt = np.ascontiguousarray(w[::-1, ::-1].transpose(0, 1, 3, 2)).reshape(kh * kw * f, c)
        return _correlate(dy, wt, kh, kw, 1, kh - 1 - pt, kw - 1 - pl, x.shape[1:3])
    w2 = np.ascontiguousarray(w).reshape(kh * kw * c, f)
    return _input_grad_scatter(dy.reshape(-1, f), w2, x.shape, kh, kw, stride, pt, pl, out_hw)


def conv2d_backward_params(dy, cache):
    """Return ``dw [KH, KW, C, F], db [F]`` only (a first layer: no input gradient)."""
    dy = np.ascontiguousarray(dy)
    return conv2d_backward_filter(dy, cache), dy.reshape(-1, dy.shape[-1]).sum(axis=0)


def conv2d_backward(dy, cache):
    """Return ``dx [N, H, W, C], dw [KH, KW, C, F], db [F]``."""
    dy = np.ascontiguousarray(dy)
    db = dy.reshape(-1, dy.shape[-1]).sum(axis=0)
    return conv2d_backward_input(dy, cache), conv2d_backward_filter(dy, cache), db
