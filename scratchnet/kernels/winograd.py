"""Winograd convolution F(2×2, 5×5) for stride-1 layers with many channels (deep-CNN conv2).

im2col + GEMM spends KH·KW multiplications per input channel on every output pixel (25
for a 5×5 filter). Winograd's minimal filtering computes a 2×2 block of outputs from an
α×α input tile (α = r + 1) with α² multiplications per channel instead of 4·r²: 36
instead of 100 for r = 5, 2.8× fewer. In 1-D, for outputs y_i = Σ_k g_k·d_{i+k}
(i < 2, k < r) and a tile d of α inputs:

    y = Aᵀ [(G g) ⊙ (Bᵀ d)]          Aᵀ [2, α], G [α, r], Bᵀ [α, α]

and in 2-D the same on both axes: Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A. Summed over the input
channels, the element-wise product becomes α² independent matrix products
(Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015):

    U[ξ] = (G w Gᵀ)[ξ]                    [C, F]      filter, transformed once per call
    V[ξ] = (Bᵀ d B)[ξ] for every tile     [T, C]      input tiles
    M[ξ] = V[ξ] @ U[ξ]                    [T, F]      α² GEMMs (one batched np.matmul)
    y(tile) = Aᵀ M A                      [2, 2, F]   (+ bias)

Backward, with dM = A dY Aᵀ per tile (the adjoint of the output transform):

    dU[ξ] = V[ξ]ᵀ @ dM[ξ]   then  dW = Gᵀ dU G                       (filter gradient)
    dV[ξ] = dM[ξ] @ U[ξ]ᵀ   then  dx(tile) += B dV Bᵀ  (overlapping tiles add up)

The matrices come from the interpolation points 0, 1, -1, ½, -2 and ∞ (Toom-Cook): Aᵀ
evaluates at the points, G interpolates the filter there, and Bᵀ is the unique matrix for
which the 1-D identity holds for every g and d (``_transforms`` solves for it). Of the
point sets tried, this one gave the smallest float32 error: about 1.5e-6 of the output
scale for a 5×5×32 sum, against 1.6e-7 for the direct sum (measured in float64 against
exact; ``tests/test_kernels.py`` holds float32 to 2e-5 of the scale and float64 to 1e-12).

Work is split by whole images over the worker threads (so dx's overlapping tiles never
race); each thread walks its images a few at a time, so that V and M (~100 tiles) stay
in cache. The transforms are serial Numba loops over long contiguous runs (see the
comment above ``_comb6``).
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np

from ._runtime import blas_single, chosen_chunk, njit, parallel, parallel_sum, scratch

R = 5  # filter size
M_OUT = 2  # outputs per tile side
ALPHA = R + M_OUT - 1  # input tile side: 6
POINTS = (0, 1, -1, Fraction(1, 2), -2)  # the R finite interpolation points (∞ is the last)
# Tiles per GEMM batch (whole images: 2 of deep-CNN conv2's 49-tile images). Measured
# on deep-CNN conv2, 2 threads, fwd/bwd ms: 1 image 4.45/9.64, 2 images 4.28/8.57,
# 3 images 4.26/8.63, 5 images 4.30/9.21 (V and M of ~100 tiles, ~1.2 MB, stay in L2).
TILES_PER_CHUNK = 128


@lru_cache(maxsize=None)
def _transforms():
    """``(Aᵀ [2, α], G [α, r], Bᵀ [α, α])`` in float64 for F(2, 5), α = 6.

    Aᵀ[i, j] = p_j^i (and row i = 1 picks the ∞ point), G[j, k] = p_j^k / Π_{l≠j}(p_j - p_l)
    (and G[∞] = [0, …, 0, 1]). Bᵀ then solves Σ_ξ Aᵀ[i, ξ]·G[ξ, k]·Bᵀ[ξ, j] = [j = i + k]
    for all i, k, j: 2·r·α equations, α² unknowns, one exact solution (rational, small
    denominators; rounded to them)."""
    pts, r, alpha = POINTS, R, ALPHA
    at = np.zeros((M_OUT, alpha))
    g = np.zeros((alpha, r))
    for j, p in enumerate(pts):
        denom = np.prod([p - q for q in pts if q != p])
        at[:, j] = [float(p) ** i for i in range(M_OUT)]
        g[j] = [float(Fraction(p) ** k / denom) for k in range(r)]
    at[M_OUT - 1, alpha - 1] = 1
    g[alpha - 1, r - 1] = 1
    system = np.zeros((M_OUT * r * alpha, alpha * alpha))
    rhs = np.zeros(M_OUT * r * alpha)
    row = 0
    for i in range(M_OUT):
        for k in range(r):
            for j in range(alpha):
                system[row].reshape(alpha, alpha)[:, j] = at[i] * g[:, k]
                rhs[row] = float(j == i + k)
                row += 1
    bt = np.linalg.lstsq(system, rhs, rcond=None)[0].reshape(alpha, alpha)
    bt = np.vectorize(lambda v: float(Fraction(v).limit_denominator(64)))(bt)
    assert np.abs(system @ bt.reshape(-1) - rhs).max() < 1e-12, "Winograd transform solve failed"
    return at, g, bt


def use_winograd(kh: int, kw: int, c: int, f: int, stride: int) -> bool:
    """The built-in rule: square 5×5 filters, stride 1, at least 16 channels in and out.
    Measured for deep-CNN conv2 (5×5, 32 -> 64); thinner layers keep im2col, whose GEMM is
    already short there. (``kernels.tuning`` times it on every layer ``winograd_applies`` to.)"""
    return stride == 1 and kh == kw == R and c >= 16 and f >= 16


def winograd_applies(kh: int, kw: int, c: int, f: int, stride: int) -> bool:
    """Where this F(2×2, 5×5) kernel is correct and may pay: 5×5 stride 1, ≥ 8 channels in and out."""
    return stride == 1 and kh == kw == R and c >= 8 and f >= 8


# The transforms are separable (rows, then columns), and each pass is a few long loops
# over contiguous memory, each writing one run as a 6-term combination of 6 runs
# (``_comb6``), which LLVM vectorises. (One loop per tile and channel vector does the same
# arithmetic in runs of C = 32 floats and was 10x slower: loop overhead, not arithmetic.)
# For that, the padded input is stored with its columns split by parity,
# xq[n, row, col % 2, col // 2, :]: the tiles of one tile row start at columns 2·tj, so
# tap j of all of them, columns 2·tj + j, is ONE contiguous run
# xq[n, row, j % 2, j // 2 : j // 2 + tw, :].


@njit
def _comb6(dst, d0, src, offs, coefs, n, accumulate):
    """dst[d0 + k] (+)= Σ_j coefs[j] · src[offs[j] + k] for k < n (6 terms; zero
    coefficients just contribute 0)."""
    o0, o1, o2, o3, o4, o5 = offs
    c0, c1, c2, c3, c4, c5 = coefs
    ds = dst[d0:d0 + n]
    s0, s1, s2 = src[o0:o0 + n], src[o1:o1 + n], src[o2:o2 + n]
    s3, s4, s5 = src[o3:o3 + n], src[o4:o4 + n], src[o5:o5 + n]
    if accumulate:
        for k in range(n):
            ds[k] += c0 * s0[k] + c1 * s1[k] + c2 * s2[k] + c3 * s3[k] + c4 * s4[k] + c5 * s5[k]
    else:
        for k in range(n):
            ds[k] = c0 * s0[k] + c1 * s1[k] + c2 * s2[k] + c3 * s3[k] + c4 * s4[k] + c5 * s5[k]


@njit
def _strided6(base, step):
    """(base, base + step, …, base + 5·step): the offsets of six equally spaced runs."""
    return (base, base + step, base + 2 * step, base + 3 * step, base + 4 * step, base + 5 * step)


@njit
def _row(mat, i):
    """Row i of a [·, 6] matrix as a 6-tuple (the coefficients of one output)."""
    return mat[i, 0], mat[i, 1], mat[i, 2], mat[i, 3], mat[i, 4], mat[i, 5]


@njit
def _col(mat, j):
    return mat[0, j], mat[1, j], mat[2, j], mat[3, j], mat[4, j], mat[5, j]


@njit
def _axpy(dst, d0, src, s0, n, coef):
    """dst[d0 : d0 + n] += coef · src[s0 : s0 + n]"""
    ds, ss = dst[d0:d0 + n], src[s0:s0 + n]
    for k in range(n):
        ds[k] += coef * ss[k]


@njit
def _pad_phases(x, xq, n0, n1, pt, pl):
    """xq[n - n0, u, s, v, :] = x[n, u - pt, 2·v + s - pl, :], 0 outside x."""
    h, w = x.shape[1], x.shape[2]
    xq[:n1 - n0] = 0
    for n in range(n0, n1):
        for ih in range(h):
            for iw in range(w):
                col = iw + pl
                xq[n - n0, ih + pt, col % 2, col // 2] = x[n, ih, iw]


@njit
def _unpad_phases(dxq, dx, n0, n1, pt, pl):
    """dx[n, ih, iw, :] = dxq[n - n0, ih + pt, (iw + pl) % 2, (iw + pl) // 2, :] (the adjoint of padding)."""
    h, w = dx.shape[1], dx.shape[2]
    for n in range(n0, n1):
        for ih in range(h):
            for iw in range(w):
                col = iw + pl
                dx[n, ih, iw] = dxq[n - n0, ih + pt, col % 2, col // 2]


@njit
def _tap_offsets(wq, c):
    """Offsets, in a phase-split row [2, wq, c], of the runs of taps j = 0..5: (j % 2)·wq·c + (j // 2)·c."""
    return 0, wq * c, c, wq * c + c, 2 * c, wq * c + 2 * c


@njit
def _input_tiles(xq, v, images, th, tw, bt):
    """v[a·6 + b, t, :] = (Bᵀ d B)[a, b, :] for the tiles t = (n·th + ti)·tw + tj of the
    first ``images`` padded images in xq; d = rows 2·ti.., columns 2·tj.. of the padding."""
    wq, c = xq.shape[3], xq.shape[4]
    row = 2 * wq * c
    run = tw * c
    tmp = np.empty(ALPHA * row, xq.dtype)
    taps = _tap_offsets(wq, c)
    for n in range(images):
        rows = xq[n].reshape(-1)
        for ti in range(th):
            t0 = (n * th + ti) * tw
            r0 = 2 * ti * row
            offs = _strided6(r0, row)
            for a in range(ALPHA):  # rows: tmp[a] = Σ_k Bᵀ[a, k] · xq[2·ti + k]
                _comb6(tmp, a * row, rows, offs, _row(bt, a), row, False)
            for a in range(ALPHA):  # columns: v[a, b] = Σ_j Bᵀ[b, j] · tmp[a][columns 2·tj + j]
                ta = (taps[0] + a * row, taps[1] + a * row, taps[2] + a * row,
                      taps[3] + a * row, taps[4] + a * row, taps[5] + a * row)
                for b in range(ALPHA):
                    _comb6(v[a * ALPHA + b].reshape(-1), t0 * c, tmp, ta, _row(bt, b), run, False)


@njit
def _input_tiles_adjoint(dv, dxq, images, th, tw, bt):
    """dxq[n, 2·ti + k, columns 2·tj + j] += (B dV Bᵀ)[k, j, :]: the adjoint of
    ``_input_tiles`` (overlapping tiles add up). dxq must start at zero."""
    wq, c = dxq.shape[3], dxq.shape[4]
    row = 2 * wq * c
    run = tw * c
    tiles = dv.shape[1]
    tmp = np.empty(ALPHA * row, dxq.dtype)
    taps = _tap_offsets(wq, c)
    src = dv.reshape(-1)
    for n in range(images):
        rows = dxq[n].reshape(-1)
        for ti in range(th):
            t0 = (n * th + ti) * tw
            tmp[:] = 0
            for a in range(ALPHA):  # columns: tmp[a][2·tj + j] += Σ_b Bᵀ[b, j] · dV[a, b]
                base = (a * ALPHA * tiles + t0) * c
                offs = _strided6(base, tiles * c)
                for j in range(ALPHA):
                    _comb6(tmp, a * row + taps[j], src, offs, _col(bt, j), run, True)
            r0 = 2 * ti * row
            offs = _strided6(0, row)
            for k in range(ALPHA):  # rows: dxq[2·ti + k] += Σ_a Bᵀ[a, k] · tmp[a]
                _comb6(rows, r0 + k * row, tmp, offs, _col(bt, k), row, True)


@njit
def _output_tiles(m, y, n0, n1, th, tw, at, bias, relu, pool):
    """y[n, 2·ti + i, 2·tj + j, :] = (Aᵀ M A)[i, j, :] + bias, inside y; then max(·, 0) if
    ``relu``. With ``pool`` (inference, Ho and Wo even): each 2 × 2 output tile is one
    window of a 2 × 2 max-pool of stride 2, and only its maximum is written, y[n, ti, tj, :]
    (y [N, Ho/2, Wo/2, F]), taken in the pool's window order with its strict >."""
    f = y.shape[3]
    ho, wo = (2 * y.shape[1], 2 * y.shape[2]) if pool else (y.shape[1], y.shape[2])
    tiles = m.shape[1]
    run = tw * f
    tmp = np.empty(M_OUT * ALPHA * run, y.dtype)
    quad = np.empty(M_OUT * M_OUT * f, y.dtype)
    src = m.reshape(-1)
    zero = y.dtype.type(0)
    for n in range(n0, n1):
        for ti in range(th):
            t0 = ((n - n0) * th + ti) * tw
            for b in range(ALPHA):  # rows: tmp[i, b] = Σ_a Aᵀ[i, a] · M[a, b]
                base = (b * tiles + t0) * f
                step = ALPHA * tiles * f
                offs = _strided6(base, step)
                for i in range(M_OUT):
                    _comb6(tmp, (i * ALPHA + b) * run, src, offs, _row(at, i), run, False)
            if pool:  # the tile's four outputs into quad, their maximum into y
                dst = y[n, ti].reshape(-1)
                for tj in range(tw):
                    for i in range(M_OUT):
                        base = i * ALPHA * run + tj * f
                        offs = _strided6(base, run)
                        for j in range(M_OUT):
                            d0 = (i * M_OUT + j) * f
                            quad[d0:d0 + f] = bias
                            _comb6(quad, d0, tmp, offs, _row(at, j), f, True)
                    for ch in range(f):
                        v = quad[ch]
                        for k in range(1, M_OUT * M_OUT):
                            if quad[k * f + ch] > v:
                                v = quad[k * f + ch]
                        dst[tj * f + ch] = (zero if v <= zero else v) if relu else v
                continue
            for i in range(min(M_OUT, ho - 2 * ti)):  # columns, into y
                dst = y[n, 2 * ti + i].reshape(-1)
                for tj in range(tw):
                    base = i * ALPHA * run + tj * f
                    offs = _strided6(base, run)
                    for j in range(min(M_OUT, wo - 2 * tj)):
                        d0 = (2 * tj + j) * f
                        dst[d0:d0 + f] = bias
                        _comb6(dst, d0, tmp, offs, _row(at, j), f, True)
                if relu:
                    for k in range(dst.size):
                        v = dst[k]
                        dst[k] = zero if v <= zero else v


@njit
def _output_tiles_adjoint(dy, dm, n0, n1, th, tw, at):
    """dM[a·6 + b, t, :] = Σ_{i,j} Aᵀ[i, a]·dy[n, 2·ti + i, 2·tj + j, :]·Aᵀ[j, b] (dy = 0
    outside): the adjoint of ``_output_tiles``."""
    ho, wo, f = dy.shape[1], dy.shape[2], dy.shape[3]
    run = tw * f
    tmp = np.empty((M_OUT, ALPHA, run), dy.dtype)
    zero = dy.dtype.type(0)
    for n in range(n0, n1):
        for ti in range(th):
            t0 = ((n - n0) * th + ti) * tw
            tmp[:] = 0
            for i in range(min(M_OUT, ho - 2 * ti)):  # columns: tmp[i, b] = Σ_j Aᵀ[j, b] · dy[i, j]
                src = dy[n, 2 * ti + i].reshape(-1)
                for b in range(ALPHA):
                    for tj in range(tw):
                        for j in range(min(M_OUT, wo - 2 * tj)):
                            if at[j, b] != zero:
                                _axpy(tmp[i, b], tj * f, src, (2 * tj + j) * f, f, at[j, b])
            for a in range(ALPHA):  # rows: dM[a, b] = Σ_i Aᵀ[i, a] · tmp[i, b]
                for b in range(ALPHA):
                    dst = dm[a * ALPHA + b, t0:t0 + tw].reshape(-1)
                    dst[:] = 0
                    for i in range(M_OUT):
                        if at[i, a] != zero:
                            _axpy(dst, 0, tmp[i, b], 0, run, at[i, a])


def _geometry(x_shape, out_hw, pads, dtype):
    """Tile counts, images per GEMM batch, the padded phase-split image shape and the
    transforms in ``dtype``."""
    n, h, w, c = x_shape
    alpha = ALPHA
    th, tw = -(-out_hw[0] // M_OUT), -(-out_hw[1] // M_OUT)
    per = chosen_chunk() or max(1, TILES_PER_CHUNK // (th * tw))  # images per GEMM batch
    hp = max(2 * th + alpha - 2, h + pads[0][0])
    wq = max(tw + (alpha - 1) // 2, (w + pads[1][0] + 1) // 2)
    at, g, bt = (a.astype(dtype) for a in _transforms())
    return n, th, tw, per, (hp, 2, wq, c), at, g, bt


def _filter_transform(w, g):
    """U [α², C, F] with U[a·α + b] = Σ_{p,q} G[a, p]·w[p, q]·G[b, q]."""
    u = np.tensordot(g, np.tensordot(g, w, axes=(1, 0)), axes=(1, 1))  # [b, a, C, F]
    return np.ascontiguousarray(u.transpose(1, 0, 2, 3)).reshape(ALPHA * ALPHA, w.shape[2], w.shape[3])


def _filter_transform_adjoint(du, g):
    """dW [r, r, C, F] from dU [α², C, F]: dW[p, q] = Σ_{a,b} G[a, p]·dU[a·α + b]·G[b, q]."""
    du = du.reshape(ALPHA, ALPHA, *du.shape[1:])
    dw = np.tensordot(g, np.tensordot(g, du, axes=(0, 0)), axes=(0, 1))  # [q, p, C, F]
    return np.ascontiguousarray(dw.transpose(1, 0, 2, 3))


def winograd_forward(x, w, bias, pads, out_hw, *, relu=False, pool=False):
    """y [N, Ho, Wo, F] of the stride-1 convolution of x [N, H, W, C] with w [r, r, C, F].
    Inference can take the layers after it into the output transform: ``relu`` max(y, 0),
    ``pool`` a 2 × 2 max-pool of stride 2 for even Ho, Wo (each output tile is one of its
    windows; y is then [N, Ho/2, Wo/2, F])."""
    c, f = w.shape[2], w.shape[3]
    n, th, tw, per, qshape, at, g, bt = _geometry(x.shape, out_hw, pads, x.dtype)
    pt, pl = pads[0][0], pads[1][0]
    u = _filter_transform(w, g)
    y = np.empty((n, out_hw[0] // 2, out_hw[1] // 2, f) if pool else (n, *out_hw, f), x.dtype)
    b = np.ascontiguousarray(bias, x.dtype) if bias is not None else np.zeros(f, x.dtype)
    xi2, tiles = u.shape[0], per * th * tw

    def work(a, e):
        xq = scratch("wino_xq", (per, *qshape), x.dtype)
        v = scratch("wino_v", (xi2, tiles, c), x.dtype)
        m = scratch("wino_m", (xi2, tiles, f), x.dtype)
        for s in range(a, e, per):
            t1 = min(s + per, e)
            k = (t1 - s) * th * tw
            _pad_phases(x, xq, s, t1, pt, pl)
            _input_tiles(xq, v, t1 - s, th, tw, bt)
            np.matmul(v[:, :k], u, out=m[:, :k])
            _output_tiles(m, y, s, t1, th, tw, at, b, relu, pool)

    with blas_single():
        parallel(work, n)
    return y


def winograd_backward(x, w, dy, pads, out_hw, *, need_dx: bool = True, need_dw: bool = True):
    """``(dx or None, dw or None)`` of ``winograd_forward``; dy [N, Ho, Wo, F]."""
    c, f = w.shape[2], w.shape[3]
    n, th, tw, per, qshape, at, g, bt = _geometry(x.shape, out_hw, pads, x.dtype)
    pt, pl = pads[0][0], pads[1][0]
    xi2, tiles = ALPHA * ALPHA, per * th * tw
    ut = np.ascontiguousarray(_filter_transform(w, g).transpose(0, 2, 1)) if need_dx else None  # [α², F, C]
    dx = np.empty(x.shape, x.dtype) if need_dx else None

    def work(a, e):
        xq = scratch("wino_xq", (per, *qshape), x.dtype)
        v = scratch("wino_v", (xi2, tiles, c), x.dtype)
        dm = scratch("wino_m", (xi2, tiles, f), x.dtype)
        du_part = scratch("wino_du", (xi2, c, f), x.dtype)
        du = np.zeros((xi2, c, f), x.dtype) if need_dw else None
        for s in range(a, e, per):
            t1 = min(s + per, e)
            k = (t1 - s) * th * tw
            _output_tiles_adjoint(dy, dm, s, t1, th, tw, at)
            if need_dw:
                _pad_phases(x, xq, s, t1, pt, pl)
                _input_tiles(xq, v, t1 - s, th, tw, bt)
                np.matmul(v[:, :k].transpose(0, 2, 1), dm[:, :k], out=du_part)
                du += du_part
            if need_dx:
                np.matmul(dm[:, :k], ut, out=v[:, :k])  # dV, in V's buffer
                xq[:t1 - s] = 0
                _input_tiles_adjoint(v, xq, t1 - s, th, tw, bt)
                _unpad_phases(xq, dx, s, t1, pt, pl)
        return du

    with blas_single():
        if not need_dw:
            parallel(work, n)
            return dx, None
        du = parallel_sum(work, n, per)
    return dx, _filter_transform_adjoint(du, g)
