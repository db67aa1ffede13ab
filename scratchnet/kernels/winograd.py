"""Winograd convolution F(m×m, r×r), m = 2 or 4, for 5×5 stride-1 layers with many
channels (deep-CNN conv2, r = 5), and for 4×4 and 5×5 stride-2 layers as a stride-1
convolution of their space-to-depth input (conv-BN's conv3 and conv2, r = 2 and 3; the
comment above ``_space_to_depth_filter``).

im2col + GEMM spends KH·KW multiplications per input channel on every output pixel (25
for a 5×5 filter). Winograd's minimal filtering computes an m×m block of outputs from an
α×α input tile (α = m + r - 1) with α² multiplications per channel instead of m²·r²:
F(2×2, 5×5) takes 36 instead of 100 (9 per output, 2.8× fewer), F(4×4, 5×5) 64 instead
of 400 (4 per output, 6.25× fewer). In 1-D, for outputs y_i = Σ_k g_k·d_{i+k} (i < m,
k < r) and a tile d of α inputs:

    y = Aᵀ [(G g) ⊙ (Bᵀ d)]          Aᵀ [m, α], G [α, r], Bᵀ [α, α]

and in 2-D the same on both axes: Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A. Summed over the input
channels, the element-wise product becomes α² independent matrix products
(Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015):

    U[ξ] = (G w Gᵀ)[ξ]                    [C, F]      filter, transformed once per call
    V[ξ] = (Bᵀ d B)[ξ] for every tile     [T, C]      input tiles
    M[ξ] = V[ξ] @ U[ξ]                    [T, F]      α² GEMMs (one batched np.matmul)
    y(tile) = Aᵀ M A                      [m, m, F]   (+ bias)

Backward, with dM = A dY Aᵀ per tile (the adjoint of the output transform):

    dU[ξ] = V[ξ]ᵀ @ dM[ξ]   then  dW = Gᵀ dU G                       (filter gradient)
    dV[ξ] = dM[ξ] @ U[ξ]ᵀ   then  dx(tile) += B dV Bᵀ  (overlapping tiles add up)

The matrices come from interpolation points (Toom-Cook): 0, 1, -1, ½, -2 and ∞ for
F(2×2); 0, ±1, ±2, ±½ and ∞ for F(4×4). Aᵀ evaluates at the points, G interpolates the
filter there, and Bᵀ is the unique matrix for which the 1-D identity holds for every g
and d (``_transforms`` solves for it). Larger points amplify rounding, so the bigger tile
pays in accuracy: for deep-CNN conv2 in float32 the error is about 1.5e-6 of the output
scale with F(2×2), 4–8e-6 with F(4×4), against 1.6e-7 for the direct sum (float64
against exact). ``tests/test_tuning.py`` holds every candidate to 2e-5 of the scale in
float32 and 1e-12 in float64. The built-in rule runs F(2×2); F(4×4) ("winograd4") is a
candidate of ``kernels.tuning`` only, picked where it measures faster.

The stride-2 layers: 36 products per tile of F(4×4, 3×3) over 4·C channels are 9·C per
output, against 25·C for the direct 5×5 sum; F(4×4, 2×2), 6.25·C against 16·C (before
what the tiles waste past a 14 × 14 or 7 × 7 output). Their float32 error stays under 5e-6 of
the output scale (conv-BN's layers; 1.2e-6 with F(2×2)). They are tuning candidates only:
on the AMD EPYC they win the batch-1,000 forward (conv-BN conv2 63.3 → 56.7 ms, conv3
27.6 → 23.0 ms), and in the training step they do not (the same step time either way).

Work is split by whole images over the worker threads (so dx's overlapping tiles never
race); each thread walks its images a few at a time, so that V and M (~100 tiles) stay
in cache. The transforms are serial Numba loops over long contiguous runs (see the
comment above ``_comb``).
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np
from numba.extending import overload

from ._runtime import blas_single, chosen_chunk, njit, parallel, parallel_sum, scratch

R = 5  # the filter size of the stride-1 layers
# The output tile side m of each algorithm, F(m×m, r×r), and per input tile side
# α = m + r - 1 the α - 1 finite interpolation points of its transforms (∞ is the last
# point): F(2×2, 5×5) has α = 6, F(4×4, 5×5) 8; a stride-2 layer's F(m×m, 3×3) (a 5×5
# filter) 4 and 6, F(m×m, 2×2) (4×4) 3 and 5.
TILE = {"winograd": 2, "winograd4": 4}
POINTS = {3: (0, 1), 4: (0, 1, -1), 5: (0, 1, -1, Fraction(1, 2)), 6: (0, 1, -1, Fraction(1, 2), -2),
          8: (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2))}
# Tiles per GEMM batch (whole images: 2 of deep-CNN conv2's 49-tile images in F(2×2)).
# Measured on deep-CNN conv2, 2 threads, fwd/bwd ms: 1 image 4.45/9.64, 2 images 4.28/8.57,
# 3 images 4.26/8.63, 5 images 4.30/9.21 (V and M of ~100 tiles, ~1.2 MB, stay in L2).
# F(4×4)'s tiles are 64 products each: 4 of its 16-tile images are the same 1.5 MB.
TILES_PER_CHUNK = {2: 128, 4: 64}


@lru_cache(maxsize=None)
def _zeros(m: int, alpha: int):
    """Tuples of α and of m zeros: passed to the kernels, they make α and m compile-time
    lengths for the tuples of offsets and coefficients below."""
    return (0,) * alpha, (0,) * m


def _taps(k: int, stride: int) -> int:
    """r, the filter side of the stride-1 convolution a layer runs as: k, or ⌈k/2⌉ for a
    stride-2 layer over its space-to-depth input (see ``_space_to_depth_filter``)."""
    return -(-k // stride)


@lru_cache(maxsize=None)
def _transforms(m: int, r: int):
    """``(Aᵀ [m, α], G [α, r], Bᵀ [α, α])`` in float64 for F(m, r), α = m + r - 1.

    Aᵀ[i, j] = p_j^i (and row m - 1 picks the ∞ point), G[j, k] = p_j^k / Π_{l≠j}(p_j - p_l)
    (and G[∞] = [0, …, 0, 1]). Bᵀ then solves Σ_ξ Aᵀ[i, ξ]·G[ξ, k]·Bᵀ[ξ, j] = [j = i + k]
    for all i, k, j: m·r·α equations, α² unknowns, one exact solution (rational, small
    denominators; rounded to them)."""
    alpha = m + r - 1
    pts = POINTS[alpha]
    at = np.zeros((m, alpha))
    g = np.zeros((alpha, r))
    for j, p in enumerate(pts):
        denom = np.prod([p - q for q in pts if q != p])
        at[:, j] = [float(p) ** i for i in range(m)]
        g[j] = [float(Fraction(p) ** k / denom) for k in range(r)]
    at[m - 1, alpha - 1] = 1
    g[alpha - 1, r - 1] = 1
    system = np.zeros((m * r * alpha, alpha * alpha))
    rhs = np.zeros(m * r * alpha)
    row = 0
    for i in range(m):
        for k in range(r):
            for j in range(alpha):
                system[row].reshape(alpha, alpha)[:, j] = at[i] * g[:, k]
                rhs[row] = float(j == i + k)
                row += 1
    bt = np.linalg.lstsq(system, rhs, rcond=None)[0].reshape(alpha, alpha)
    bt = np.vectorize(lambda v: float(Fraction(v).limit_denominator(256)))(bt)
    assert np.abs(system @ bt.reshape(-1) - rhs).max() < 1e-12, "Winograd transform solve failed"
    return at, g, bt


def use_winograd(kh: int, kw: int, c: int, f: int, stride: int) -> bool:
    """The built-in rule (F(2×2, 5×5)): square 5×5 filters, stride 1, at least 16 channels
    in and out. Measured for deep-CNN conv2 (5×5, 32 -> 64); thinner layers keep im2col,
    whose GEMM is already short there. (``kernels.tuning`` times both tile sizes on every
    layer ``winograd_applies`` to.)"""
    return stride == 1 and kh == kw == R and c >= 16 and f >= 16


def winograd_applies(kh: int, kw: int, c: int, f: int, stride: int) -> bool:
    """Where these kernels are correct and may pay: 5×5 stride 1, and 4×4 or 5×5 stride 2
    (conv-BN's conv2 and conv3), ≥ 8 channels in and out."""
    return kh == kw and (kh == R if stride == 1 else stride == 2 and kh in (4, 5)) and c >= 8 and f >= 8


# The transforms are separable (rows, then columns), and each pass is a few long loops
# over contiguous memory, each writing one run as an α-term combination of α runs
# (``_comb``), which LLVM vectorises. (One loop per tile and channel vector does the same
# arithmetic in runs of C = 32 floats and was 10x slower: loop overhead, not arithmetic.)
# For that, the padded input is stored with its columns split by phase modulo m,
# xq[n, row, col % m, col // m, :]: the tiles of one tile row start at columns m·tj, so
# tap j of all of them, columns m·tj + j, is ONE contiguous run
# xq[n, row, j % m, j // m : j // m + tw, :].
#
# The offsets and coefficients of one combination are tuples, so that each run gets its
# own slice (a slice from index 0 vectorises; ``src[off + k]`` with a runtime offset keeps
# Numba's negative-index check, see docs/performance.md, rule 3). Their length, α for the
# tile transforms and m for the output adjoint's, is a compile-time constant: it comes from
# the type of ``z``, a tuple of that many zeros (``_ZEROS``), and each length compiles its
# own unrolled loop body, generated from one template below.

def _comb(dst, d0, src, offs, coefs, n, accumulate):
    """dst[d0 + k] (+)= Σ_j coefs[j] · src[offs[j] + k] for k < n, over len(offs) runs
    (zero coefficients just contribute 0), summed left to right."""


def _row(mat, i, z):
    """Row i of a matrix, its first len(z) entries, as a tuple (the coefficients of one output)."""


def _col(mat, j, z):
    """Column j of a matrix, its first len(z) entries, as a tuple."""


def _strided(base, step, z):
    """(base, base + step, …, base + (len(z) - 1)·step): the offsets of equally spaced runs."""


_TEMPLATES = {
    _comb: """
def impl(dst, d0, src, offs, coefs, n, accumulate):
    ds = dst[d0:d0 + n]
    {slices}
    if accumulate:
        for k in range(n):
            ds[k] += {terms}
    else:
        for k in range(n):
            ds[k] = {terms}
""",
    _row: "def impl(mat, i, z):\n    return ({row},)",
    _col: "def impl(mat, j, z):\n    return ({col},)",
    _strided: "def impl(base, step, z):\n    return ({strided},)",
}


def _generated(fn, count: int):
    """The implementation of ``fn`` for tuples of ``count`` entries, from its template."""
    parts = {"slices": "; ".join(f"s{j} = src[offs[{j}]:offs[{j}] + n]" for j in range(count)),
             "terms": " + ".join(f"coefs[{j}] * s{j}[k]" for j in range(count)),
             "row": ", ".join(f"mat[i, {j}]" for j in range(count)),
             "col": ", ".join(f"mat[{j}, j]" for j in range(count)),
             "strided": ", ".join(f"base + {j} * step" for j in range(count))}
    namespace: dict = {}
    exec(_TEMPLATES[fn].format(**parts), namespace)  # noqa: S102 (our own fixed template)
    return namespace["impl"]


@overload(_comb)
def _comb_typed(dst, d0, src, offs, coefs, n, accumulate):
    return _generated(_comb, offs.count)


@overload(_row)
def _row_typed(mat, i, z):
    return _generated(_row, z.count)


@overload(_col)
def _col_typed(mat, j, z):
    return _generated(_col, z.count)


@overload(_strided)
def _strided_typed(base, step, z):
    return _generated(_strided, z.count)


def _tap_offsets(m: int, alpha: int, wq: int, c: int, row: int) -> np.ndarray:
    """[α, α] int64: entry [a, j] is the offset of tap j's run, (j % m)·wq·c + (j // m)·c, in
    row a of a stack of phase-split rows [m, wq, c] of ``row`` floats each."""
    j = np.arange(alpha)
    return np.arange(alpha)[:, None] * row + (j % m) * wq * c + (j // m) * c


# A stride-s layer (s = 2) runs as the stride-1 convolution of its space-to-depth input:
# with the padded input cut into s × s blocks, pixel (u, v) of the new input holds the
# s²·C values of block (u, v), channel (a·s + b)·C + c being xpad[s·u + a, s·v + b, c];
# then y[i, j] = Σ_{p', q'} x'[i + p', j + q'] · w'[p', q'] over r = ⌈k/s⌉ taps, with
# w'[p', q', (a·s + b)·C + c] = w[s·p' + a, s·q' + b, c] (zero past the filter). Winograd's
# multiplications per output fall by the same ratio as for stride 1: F(4×4, 3×3) spends
# 36/16 per channel of the s²C, 9·C, where the 5×5 stride-2 sum spends 25·C.

def _space_to_depth_filter(w, s: int):
    """w' [r, r, s²·C, F] of w [k, k, C, F] (above); w itself for s = 1."""
    if s == 1:
        return w
    k, _, c, f = w.shape
    r = _taps(k, s)
    wp = np.zeros((s * r, s * r, c, f), w.dtype)
    wp[:k, :k] = w
    return wp.reshape(r, s, r, s, c, f).transpose(0, 2, 1, 3, 4, 5).reshape(r, r, s * s * c, f)


def _depth_to_space_filter(dw, s: int, k: int):
    """dw [k, k, C, F] from the gradient of w' (the adjoint of ``_space_to_depth_filter``)."""
    if s == 1:
        return dw
    r, _, cs, f = dw.shape
    c = cs // (s * s)
    return np.ascontiguousarray(dw.reshape(r, r, s, s, c, f).transpose(0, 2, 1, 3, 4, 5).reshape(s * r, s * r, c, f)[:k, :k])


# The padded, phase-split copy of x: xq[n - n0, u, v % m, v // m, (a·s + b)·C:+C] holds
# x[n, s·u + a - pt, s·v + b - pl] (m = xq.shape[2]), space-to-depth for s > 1. Both
# directions use flat offsets, hoisted per row, and a loop over each pixel's C floats: a
# 5-D slice assignment per pixel cost 2-2.5x as much, an offset helper called per pixel 1.2-1.4x.
# (Two functions, not one with a direction flag: x is read-only in one, dx written in the
# other, and Numba types both branches.)

@njit
def _pad_phases(x, xq, n0, n1, pt, pl, s):
    """xq = images n0..n1 of x, padded (0 outside x) and phase-split (above)."""
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    hp, m, wq, cs = xq.shape[1], xq.shape[2], xq.shape[3], xq.shape[4]
    xq[:n1 - n0] = 0
    xf, qf = x.reshape(-1), xq.reshape(-1)
    for n in range(n0, n1):
        for ih in range(h):
            u, a = divmod(ih + pt, s)
            src, dst = (n * h + ih) * w * c, ((n - n0) * hp + u) * m
            for iw in range(w):
                v, b = divmod(iw + pl, s)
                d0, s0 = ((dst + v % m) * wq + v // m) * cs + (a * s + b) * c, src + iw * c
                ds, sv = qf[d0:d0 + c], xf[s0:s0 + c]
                for ch in range(c):
                    ds[ch] = sv[ch]


@njit
def _unpad_phases(dxq, dx, n0, n1, pt, pl, s):
    """dx[n0:n1] = the entries of dxq that ``_pad_phases`` copied x's to (its adjoint)."""
    h, w, c = dx.shape[1], dx.shape[2], dx.shape[3]
    hp, m, wq, cs = dxq.shape[1], dxq.shape[2], dxq.shape[3], dxq.shape[4]
    df, qf = dx.reshape(-1), dxq.reshape(-1)
    for n in range(n0, n1):
        for ih in range(h):
            u, a = divmod(ih + pt, s)
            src, dst = (n * h + ih) * w * c, ((n - n0) * hp + u) * m
            for iw in range(w):
                v, b = divmod(iw + pl, s)
                d0, s0 = ((dst + v % m) * wq + v // m) * cs + (a * s + b) * c, src + iw * c
                qs, dd = qf[d0:d0 + c], df[s0:s0 + c]
                for ch in range(c):
                    dd[ch] = qs[ch]


@njit
def _input_tiles(xq, v, images, th, tw, bt, taps, z):
    """v[a·α + b, t, :] = (Bᵀ d B)[a, b, :] for the tiles t = (n·th + ti)·tw + tj of the
    first ``images`` padded images in xq; d = rows m·ti.., columns m·tj.. of the padding."""
    m, wq, c = xq.shape[2], xq.shape[3], xq.shape[4]
    alpha = bt.shape[0]
    row = m * wq * c
    run = tw * c
    tmp = np.empty(alpha * row, xq.dtype)
    for n in range(images):
        rows = xq[n].reshape(-1)
        for ti in range(th):
            t0 = (n * th + ti) * tw
            offs = _strided(m * ti * row, row, z)
            for a in range(alpha):  # rows: tmp[a] = Σ_k Bᵀ[a, k] · xq[m·ti + k]
                _comb(tmp, a * row, rows, offs, _row(bt, a, z), row, False)
            for a in range(alpha):  # columns: v[a, b] = Σ_j Bᵀ[b, j] · tmp[a][columns m·tj + j]
                ta = _row(taps, a, z)
                for b in range(alpha):
                    _comb(v[a * alpha + b].reshape(-1), t0 * c, tmp, ta, _row(bt, b, z), run, False)


@njit
def _input_tiles_adjoint(dv, dxq, images, th, tw, bt, taps, z):
    """dxq[n, m·ti + k, columns m·tj + j] += (B dV Bᵀ)[k, j, :]: the adjoint of
    ``_input_tiles`` (overlapping tiles add up). dxq must start at zero."""
    m, wq, c = dxq.shape[2], dxq.shape[3], dxq.shape[4]
    alpha = bt.shape[0]
    row = m * wq * c
    run = tw * c
    tiles = dv.shape[1]
    tmp = np.empty(alpha * row, dxq.dtype)
    src = dv.reshape(-1)
    for n in range(images):
        rows = dxq[n].reshape(-1)
        for ti in range(th):
            t0 = (n * th + ti) * tw
            tmp[:] = 0
            for a in range(alpha):  # columns: tmp[a][m·tj + j] += Σ_b Bᵀ[b, j] · dV[a, b]
                offs = _strided((a * alpha * tiles + t0) * c, tiles * c, z)
                for j in range(alpha):
                    _comb(tmp, taps[a, j], src, offs, _col(bt, j, z), run, True)
            offs = _strided(0, row, z)
            for k in range(alpha):  # rows: dxq[m·ti + k] += Σ_a Bᵀ[a, k] · tmp[a]
                _comb(rows, (m * ti + k) * row, tmp, offs, _col(bt, k, z), row, True)


@njit
def _output_tiles(mm, y, n0, n1, th, tw, at, bias, mul, add, affine, relu, pool, z):
    """y[n, m·ti + i, m·tj + j, :] = (Aᵀ M A)[i, j, :] + bias, inside y; then, if ``affine``,
    ·mul + add per channel (a batch normalisation with fixed statistics, as
    ``batchnorm._affine`` rounds it); then max(·, 0) if ``relu``. With ``pool``
    (inference, Ho and Wo even, no ``affine``): the m × m output tile holds
    (m/2)² windows of a 2 × 2 max-pool of stride 2, and only their maxima are written,
    y[n, (m/2)·ti + wi, (m/2)·tj + wj, :] (y [N, Ho/2, Wo/2, F]), each taken in the pool's
    window order with its strict >."""
    m, alpha = at.shape[0], at.shape[1]
    f = y.shape[3]
    ho, wo = (2 * y.shape[1], 2 * y.shape[2]) if pool else (y.shape[1], y.shape[2])
    tiles = mm.shape[1]
    run = tw * f
    tmp = np.empty(m * alpha * run, y.dtype)
    band = np.empty(m * m * run, y.dtype)
    src = mm.reshape(-1)
    zero = y.dtype.type(0)
    half = m // 2
    for n in range(n0, n1):
        for ti in range(th):
            t0 = ((n - n0) * th + ti) * tw
            for b in range(alpha):  # rows: tmp[i, b] = Σ_a Aᵀ[i, a] · M[a, b]
                offs = _strided((b * tiles + t0) * f, alpha * tiles * f, z)
                for i in range(m):
                    _comb(tmp, (i * alpha + b) * run, src, offs, _row(at, i, z), run, False)
            for i in range(m):  # columns: band[i, j] = Σ_b Aᵀ[j, b] · tmp[i, b], every tile of the row
                offs = _strided(i * alpha * run, run, z)
                for j in range(m):
                    _comb(band, (i * m + j) * run, tmp, offs, _row(at, j, z), run, False)
            if pool:  # each window's four outputs (+ bias), their maximum into y
                for wi in range(min(half, ho // 2 - half * ti)):
                    dst = y[n, half * ti + wi].reshape(-1)
                    for tj in range(tw):
                        for wj in range(min(half, wo // 2 - half * tj)):
                            b0 = ((2 * wi) * m + 2 * wj) * run + tj * f
                            q0, q1 = band[b0:b0 + f], band[b0 + run:b0 + run + f]
                            q2, q3 = band[b0 + m * run:b0 + m * run + f], band[b0 + (m + 1) * run:b0 + (m + 1) * run + f]
                            ds = dst[(half * tj + wj) * f:(half * tj + wj + 1) * f]
                            for ch in range(f):
                                v = bias[ch] + q0[ch]
                                for u in (bias[ch] + q1[ch], bias[ch] + q2[ch], bias[ch] + q3[ch]):
                                    if u > v:
                                        v = u
                                ds[ch] = (zero if v <= zero else v) if relu else v
                continue
            for i in range(min(m, ho - m * ti)):  # + bias, into y
                dst = y[n, m * ti + i].reshape(-1)
                for tj in range(tw):
                    for j in range(min(m, wo - m * tj)):
                        b0 = (i * m + j) * run + tj * f
                        bs, ds = band[b0:b0 + f], dst[(m * tj + j) * f:(m * tj + j + 1) * f]
                        for ch in range(f):
                            v = bias[ch] + bs[ch]
                            if affine:
                                v = v * mul[ch] + add[ch]
                            ds[ch] = (zero if v <= zero else v) if relu else v


@njit
def _output_tiles_adjoint(dy, dm, n0, n1, th, tw, at, zm):
    """dM[a·α + b, t, :] = Σ_{i,j} Aᵀ[i, a]·dy[n, m·ti + i, m·tj + j, :]·Aᵀ[j, b] (dy = 0
    outside): the adjoint of ``_output_tiles``. Each dy row is first gathered by column
    phase, dyq[j, tj] = dy[·, m·tj + j], so that both passes are m-term combinations of
    whole runs (``zm``: m zeros)."""
    m, alpha = at.shape[0], at.shape[1]
    ho, wo, f = dy.shape[1], dy.shape[2], dy.shape[3]
    run = tw * f
    tmp = np.empty(m * alpha * run, dy.dtype)
    dyq = np.empty(m * run, dy.dtype)
    phases = _strided(0, run, zm)
    for n in range(n0, n1):
        for ti in range(th):
            t0 = ((n - n0) * th + ti) * tw
            for i in range(m):  # columns: tmp[i, b] = Σ_j Aᵀ[j, b] · dy[m·ti + i, m·tj + j]
                dyq[:] = 0
                if m * ti + i < ho:
                    src = dy[n, m * ti + i]
                    for tj in range(tw):
                        for j in range(min(m, wo - m * tj)):
                            dyq[j * run + tj * f:j * run + (tj + 1) * f] = src[m * tj + j]
                for b in range(alpha):
                    _comb(tmp, (i * alpha + b) * run, dyq, phases, _col(at, b, zm), run, False)
            for a in range(alpha):  # rows: dM[a, b] = Σ_i Aᵀ[i, a] · tmp[i, b]
                for b in range(alpha):
                    _comb(dm[a * alpha + b, t0:t0 + tw].reshape(-1), 0, tmp, _strided(b * run, alpha * run, zm),
                          _col(at, a, zm), run, False)


def _geometry(x_shape, k, stride, out_hw, pads, dtype, m):
    """Tile counts, images per GEMM batch, the padded phase-split image shape (space-to-depth
    for stride 2), the tap offsets, the transforms in ``dtype`` and the zero tuples, for
    output tiles of side m and a k × k filter."""
    n, h, w, c = x_shape
    r = _taps(k, stride)
    alpha = m + r - 1
    th, tw = -(-out_hw[0] // m), -(-out_hw[1] // m)
    per = chosen_chunk() or max(1, TILES_PER_CHUNK[m] // (th * tw))  # images per GEMM batch
    hp = max(m * th + alpha - m, -(-(h + pads[0][0]) // stride))
    wq = max(tw + (alpha - 1) // m, -(-(w + pads[1][0]) // (stride * m)))
    cs = stride * stride * c
    at, g, bt = (a.astype(dtype) for a in _transforms(m, r))
    taps = _tap_offsets(m, alpha, wq, cs, m * wq * cs)
    return n, th, tw, per, (hp, m, wq, cs), taps, at, g, bt, _zeros(m, alpha)


def _filter_transform(w, g):
    """U [α², C, F] with U[a·α + b] = Σ_{p,q} G[a, p]·w[p, q]·G[b, q]."""
    alpha = g.shape[0]
    u = np.tensordot(g, np.tensordot(g, w, axes=(1, 0)), axes=(1, 1))  # [b, a, C, F]
    return np.ascontiguousarray(u.transpose(1, 0, 2, 3)).reshape(alpha * alpha, w.shape[2], w.shape[3])


def _filter_transform_adjoint(du, g):
    """dW [r, r, C, F] from dU [α², C, F]: dW[p, q] = Σ_{a,b} G[a, p]·dU[a·α + b]·G[b, q]."""
    alpha = g.shape[0]
    du = du.reshape(alpha, alpha, *du.shape[1:])
    dw = np.tensordot(g, np.tensordot(g, du, axes=(0, 0)), axes=(0, 1))  # [q, p, C, F]
    return np.ascontiguousarray(dw.transpose(1, 0, 2, 3))


def winograd_forward(x, w, bias, pads, out_hw, *, stride: int = 1, affine=None, relu=False, pool=False,
                     tile: int = 2):
    """y [N, Ho, Wo, F] of the convolution of x [N, H, W, C] with w [k, k, C, F], by
    F(tile × tile, r × r): r = k for stride 1, ⌈k/2⌉ over the space-to-depth input for
    stride 2. Inference can take the layers after it into the output transform: ``affine``
    (mul, add) [F] y·mul + add (a batch normalisation), ``relu`` max(y, 0), ``pool`` (not
    with ``affine``) a 2 × 2 max-pool of stride 2 for even Ho, Wo (y is then
    [N, Ho/2, Wo/2, F])."""
    f = w.shape[3]
    n, th, tw, per, qshape, taps, at, g, bt, (z, _) = _geometry(x.shape, w.shape[0], stride, out_hw, pads, x.dtype, tile)
    pt, pl = pads[0][0], pads[1][0]
    u = _filter_transform(_space_to_depth_filter(w, stride), g)
    y = np.empty((n, out_hw[0] // 2, out_hw[1] // 2, f) if pool else (n, *out_hw, f), x.dtype)
    b = np.ascontiguousarray(bias, x.dtype) if bias is not None else np.zeros(f, x.dtype)
    xi2, tiles, cs = u.shape[0], per * th * tw, qshape[-1]
    mul, add = affine if affine is not None else (b, b)

    def work(a, e):
        xq = scratch("wino_xq", (per, *qshape), x.dtype)
        v = scratch("wino_v", (xi2, tiles, cs), x.dtype)
        m = scratch("wino_m", (xi2, tiles, f), x.dtype)
        for s in range(a, e, per):
            t1 = min(s + per, e)
            k = (t1 - s) * th * tw
            _pad_phases(x, xq, s, t1, pt, pl, stride)
            _input_tiles(xq, v, t1 - s, th, tw, bt, taps, z)
            np.matmul(v[:, :k], u, out=m[:, :k])
            _output_tiles(m, y, s, t1, th, tw, at, b, mul, add, affine is not None, relu, pool, z)

    with blas_single():
        parallel(work, n)
    return y


def winograd_backward(x, w, dy, pads, out_hw, *, stride: int = 1, need_dx: bool = True, need_dw: bool = True,
                      tile: int = 2):
    """``(dx or None, dw or None)`` of ``winograd_forward``; dy [N, Ho, Wo, F]."""
    f = w.shape[3]
    n, th, tw, per, qshape, taps, at, g, bt, (z, zm) = _geometry(x.shape, w.shape[0], stride, out_hw, pads, x.dtype, tile)
    pt, pl = pads[0][0], pads[1][0]
    xi2, tiles, cs = g.shape[0] ** 2, per * th * tw, qshape[-1]
    ut = (np.ascontiguousarray(_filter_transform(_space_to_depth_filter(w, stride), g).transpose(0, 2, 1))
          if need_dx else None)  # [α², F, s²C]
    dx = np.empty(x.shape, x.dtype) if need_dx else None

    def work(a, e):
        xq = scratch("wino_xq", (per, *qshape), x.dtype)
        v = scratch("wino_v", (xi2, tiles, cs), x.dtype)
        dm = scratch("wino_m", (xi2, tiles, f), x.dtype)
        du_part = scratch("wino_du", (xi2, cs, f), x.dtype)
        du = np.zeros((xi2, cs, f), x.dtype) if need_dw else None
        for s in range(a, e, per):
            t1 = min(s + per, e)
            k = (t1 - s) * th * tw
            _output_tiles_adjoint(dy, dm, s, t1, th, tw, at, zm)
            if need_dw:
                _pad_phases(x, xq, s, t1, pt, pl, stride)
                _input_tiles(xq, v, t1 - s, th, tw, bt, taps, z)
                np.matmul(v[:, :k].transpose(0, 2, 1), dm[:, :k], out=du_part)
                du += du_part
            if need_dx:
                np.matmul(dm[:, :k], ut, out=v[:, :k])  # dV, in V's buffer
                xq[:t1 - s] = 0
                _input_tiles_adjoint(v, xq, t1 - s, th, tw, bt, taps, z)
                _unpad_phases(xq, dx, s, t1, pt, pl, stride)
        return du

    with blas_single():
        if not need_dw:
            parallel(work, n)
            return dx, None
        du = parallel_sum(work, n, per)
    return dx, _depth_to_space_filter(_filter_transform_adjoint(du, g), stride, w.shape[0])
