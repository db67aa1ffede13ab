"""Skinny products: a dense layer's three GEMMs when the batch is a handful of rows and the
weight is large (deep-CNN fc1 at batch 10: x [10, 3136] @ w [3136, 1024]), float32, in
explicit 16-lane vector registers (``Vec16`` of ``blocked.py``).

Why. OpenBLAS runs these shapes far below its peak: at M = 10 the forward product reaches
45 GFLOPS on two threads (1.4 ms, against 0.15 ms for M = 1, where it only streams the
12.8 MB weight once), because its kernels are built for tall panels of x. Here every
product keeps all 12 rows of the small side in registers and streams the big weight
through them once, front to back:

    forward   y  [M, N] = x @ w:    12 rows × 32 columns of y (24 registers) per block, over
              a strip of ``STRIP`` rows of w, strip after strip; the strips are cut into
              ``parallel_sum``'s fixed parts of K, each part's partial y added in part order.
              (It replaced a forward that copied panels of the worker's columns of w into a
              buffer first: in the training step, where w comes from memory, the copy was
              one more pass; deep-CNN -5k steps 1-2 % faster, in-process A/B, 2026-12-07);
    dx        dx [M, K] = dy @ wᵀ:  dx[r, i] = Σ_j w[i, j] · dy[r, j] for two rows i of w
              and all 12 rows r at once (24 registers of lane-wise partial sums, then a
              fixed tree over the 16 lanes, ``vsum``): w is read row by row, contiguous;
    dw        dw [K, N] = xᵀ @ dy:  12 rows × 32 columns of dy held in 24 registers while
              k runs down all K rows, each dw[k, j:j+32] = Σ_r x[r, k] · dy[r, j:j+32]
              written once.

Rows past M are zero padding (x and dy copied into 12-row buffers). Each output element is
summed in an order fixed by the shape alone (k ascending within a part, the parts in
order; r ascending; the lanes by the same tree), so the result does not depend on the
thread count. Which product runs is chosen per shape (``dense.py``, ``kernels.tuning``);
on the AMD EPYC (Zen 4, two threads, M = 10, medians of 60) dw took 1.00 ms against
OpenBLAS's 1.37-1.58, and dx tied with it.
"""

from __future__ import annotations

import numpy as np

from ..cpu import cpuinfo
from ._runtime import njit, parallel, parallel_sum
from .blocked import vfma, vfmav, vload, vstore, vsum, vzero

ROWS = 12          # the most rows (M) these kernels take
MIN_ROWS = 2       # one row is a matrix-vector product: OpenBLAS streams w at memory speed
STRIP = 16         # rows of w per sweep of the forward product (16 × 4 KB rows for fc1)
# 24 accumulators of 16 lanes fill 24 of AVX-512's 32 registers; with 16 AVX2 registers
# they would spill to memory on every multiply-add (``dense.builtin`` asks for AVX-512).
AVX512 = "avx512f" in cpuinfo().get("flags", "").split()


def fits(m: int, k: int, n: int, dtype) -> bool:
    """Whether these kernels take M = ``m`` rows against a weight [``k``, ``n``] of ``dtype``."""
    return np.dtype(dtype) == np.float32 and MIN_ROWS <= m <= ROWS and n % 32 == 0 and k % 2 == 0


# --- forward: y = x @ w ---------------------------------------------------------------------

@njit
def _forward_rows(xt, wf, n, y, k0, k1, strip):
    """y[r, :] += Σ_{k0 ≤ k < k1} xt[k, r] · w[k, :] for all 12 r (w = wf [K, n]): ``strip``
    rows of w at a time, each strip swept in blocks of 32 columns with 12 × 32 of y held in
    24 registers, so w is read once, front to back, and nothing is copied."""
    y0, y1, y2, y3, y4, y5 = y[0], y[1], y[2], y[3], y[4], y[5]
    y6, y7, y8, y9, y10, y11 = y[6], y[7], y[8], y[9], y[10], y[11]
    for ka in range(k0, k1, strip):
        kz = min(ka + strip, k1)
        for j in range(0, n, 32):
            a0 = vload(y0, j); b0 = vload(y0, j + 16); a1 = vload(y1, j); b1 = vload(y1, j + 16)  # noqa: E702
            a2 = vload(y2, j); b2 = vload(y2, j + 16); a3 = vload(y3, j); b3 = vload(y3, j + 16)  # noqa: E702
            a4 = vload(y4, j); b4 = vload(y4, j + 16); a5 = vload(y5, j); b5 = vload(y5, j + 16)  # noqa: E702
            a6 = vload(y6, j); b6 = vload(y6, j + 16); a7 = vload(y7, j); b7 = vload(y7, j + 16)  # noqa: E702
            a8 = vload(y8, j); b8 = vload(y8, j + 16); a9 = vload(y9, j); b9 = vload(y9, j + 16)  # noqa: E702
            a10 = vload(y10, j); b10 = vload(y10, j + 16); a11 = vload(y11, j); b11 = vload(y11, j + 16)  # noqa: E702
            for k in range(ka, kz):
                o = k * n + j
                p = vload(wf, o); q = vload(wf, o + 16)  # noqa: E702
                xk = xt[k]
                s = xk[0]; a0 = vfma(p, s, a0); b0 = vfma(q, s, b0)  # noqa: E702
                s = xk[1]; a1 = vfma(p, s, a1); b1 = vfma(q, s, b1)  # noqa: E702
                s = xk[2]; a2 = vfma(p, s, a2); b2 = vfma(q, s, b2)  # noqa: E702
                s = xk[3]; a3 = vfma(p, s, a3); b3 = vfma(q, s, b3)  # noqa: E702
                s = xk[4]; a4 = vfma(p, s, a4); b4 = vfma(q, s, b4)  # noqa: E702
                s = xk[5]; a5 = vfma(p, s, a5); b5 = vfma(q, s, b5)  # noqa: E702
                s = xk[6]; a6 = vfma(p, s, a6); b6 = vfma(q, s, b6)  # noqa: E702
                s = xk[7]; a7 = vfma(p, s, a7); b7 = vfma(q, s, b7)  # noqa: E702
                s = xk[8]; a8 = vfma(p, s, a8); b8 = vfma(q, s, b8)  # noqa: E702
                s = xk[9]; a9 = vfma(p, s, a9); b9 = vfma(q, s, b9)  # noqa: E702
                s = xk[10]; a10 = vfma(p, s, a10); b10 = vfma(q, s, b10)  # noqa: E702
                s = xk[11]; a11 = vfma(p, s, a11); b11 = vfma(q, s, b11)  # noqa: E702
            vstore(y0, j, a0); vstore(y0, j + 16, b0); vstore(y1, j, a1); vstore(y1, j + 16, b1)  # noqa: E702
            vstore(y2, j, a2); vstore(y2, j + 16, b2); vstore(y3, j, a3); vstore(y3, j + 16, b3)  # noqa: E702
            vstore(y4, j, a4); vstore(y4, j + 16, b4); vstore(y5, j, a5); vstore(y5, j + 16, b5)  # noqa: E702
            vstore(y6, j, a6); vstore(y6, j + 16, b6); vstore(y7, j, a7); vstore(y7, j + 16, b7)  # noqa: E702
            vstore(y8, j, a8); vstore(y8, j + 16, b8); vstore(y9, j, a9); vstore(y9, j + 16, b9)  # noqa: E702
            vstore(y10, j, a10); vstore(y10, j + 16, b10); vstore(y11, j, a11); vstore(y11, j + 16, b11)  # noqa: E702


def _transposed(x: np.ndarray, rows: int) -> np.ndarray:
    """xᵀ [K, rows] float32, C-contiguous, for x [M, K]: columns past M are zero."""
    xt = np.zeros((x.shape[1], rows), np.float32)
    xt[:, :x.shape[0]] = x.T
    return xt


def forward(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """y [M, N] = x [M, K] @ w [K, N] (``fits``; w C-contiguous): the partial products of
    ``parallel_sum``'s fixed parts of K (whole strips), added in part order."""
    k, n = w.shape
    xt, wf = _transposed(x, ROWS), w.reshape(-1)

    def part(a, b):  # strips a..b-1
        y = np.zeros((ROWS, n), np.float32)
        _forward_rows(xt, wf, n, y, a * STRIP, min(b * STRIP, k), STRIP)
        return y

    return parallel_sum(part, -(-k // STRIP))[:x.shape[0]]


# --- the input gradient: dx = dy @ wᵀ -------------------------------------------------------

@njit
def _input_grad(dyf, wf, n, dxt, i0, i1):
    """dxt[i, r] = Σ_j w[i, j] · dy[r, j] (dy = dyf [12, n], w = wf [K, n]) for
    i0 ≤ i < i1, two rows of w at a time, all 12 r: 24 registers of partial sums, one per
    lane, added by ``vsum``'s fixed tree at the end."""
    for i in range(i0, i1, 2):
        a0 = vzero(); a1 = vzero(); a2 = vzero(); a3 = vzero(); a4 = vzero(); a5 = vzero()  # noqa: E702
        a6 = vzero(); a7 = vzero(); a8 = vzero(); a9 = vzero(); a10 = vzero(); a11 = vzero()  # noqa: E702
        b0 = vzero(); b1 = vzero(); b2 = vzero(); b3 = vzero(); b4 = vzero(); b5 = vzero()  # noqa: E702
        b6 = vzero(); b7 = vzero(); b8 = vzero(); b9 = vzero(); b10 = vzero(); b11 = vzero()  # noqa: E702
        ow, ou = i * n, (i + 1) * n
        for j in range(0, n, 16):
            v = vload(wf, ow + j); u = vload(wf, ou + j)  # noqa: E702
            d = vload(dyf, j); a0 = vfmav(v, d, a0); b0 = vfmav(u, d, b0)  # noqa: E702
            d = vload(dyf, n + j); a1 = vfmav(v, d, a1); b1 = vfmav(u, d, b1)  # noqa: E702
            d = vload(dyf, 2 * n + j); a2 = vfmav(v, d, a2); b2 = vfmav(u, d, b2)  # noqa: E702
            d = vload(dyf, 3 * n + j); a3 = vfmav(v, d, a3); b3 = vfmav(u, d, b3)  # noqa: E702
            d = vload(dyf, 4 * n + j); a4 = vfmav(v, d, a4); b4 = vfmav(u, d, b4)  # noqa: E702
            d = vload(dyf, 5 * n + j); a5 = vfmav(v, d, a5); b5 = vfmav(u, d, b5)  # noqa: E702
            d = vload(dyf, 6 * n + j); a6 = vfmav(v, d, a6); b6 = vfmav(u, d, b6)  # noqa: E702
            d = vload(dyf, 7 * n + j); a7 = vfmav(v, d, a7); b7 = vfmav(u, d, b7)  # noqa: E702
            d = vload(dyf, 8 * n + j); a8 = vfmav(v, d, a8); b8 = vfmav(u, d, b8)  # noqa: E702
            d = vload(dyf, 9 * n + j); a9 = vfmav(v, d, a9); b9 = vfmav(u, d, b9)  # noqa: E702
            d = vload(dyf, 10 * n + j); a10 = vfmav(v, d, a10); b10 = vfmav(u, d, b10)  # noqa: E702
            d = vload(dyf, 11 * n + j); a11 = vfmav(v, d, a11); b11 = vfmav(u, d, b11)  # noqa: E702
        r = dxt[i]
        r[0] = vsum(a0); r[1] = vsum(a1); r[2] = vsum(a2); r[3] = vsum(a3)  # noqa: E702
        r[4] = vsum(a4); r[5] = vsum(a5); r[6] = vsum(a6); r[7] = vsum(a7)  # noqa: E702
        r[8] = vsum(a8); r[9] = vsum(a9); r[10] = vsum(a10); r[11] = vsum(a11)  # noqa: E702
        r = dxt[i + 1]
        r[0] = vsum(b0); r[1] = vsum(b1); r[2] = vsum(b2); r[3] = vsum(b3)  # noqa: E702
        r[4] = vsum(b4); r[5] = vsum(b5); r[6] = vsum(b6); r[7] = vsum(b7)  # noqa: E702
        r[8] = vsum(b8); r[9] = vsum(b9); r[10] = vsum(b10); r[11] = vsum(b11)  # noqa: E702


def _rows12(a: np.ndarray) -> np.ndarray:
    """a [M, N] as the first M rows of a zeroed [12, N] float32 array."""
    out = np.zeros((ROWS, a.shape[1]), np.float32)
    out[:a.shape[0]] = a
    return out


def input_grad(dy: np.ndarray, w: np.ndarray) -> np.ndarray:
    """dx [M, K] = dy [M, N] @ w [K, N]ᵀ (``fits``; w C-contiguous)."""
    m, (k, n) = dy.shape[0], w.shape
    dyf, wf = _rows12(dy).reshape(-1), w.reshape(-1)
    dxt = np.empty((k, ROWS), np.float32)
    parallel(lambda a, b: _input_grad(dyf, wf, n, dxt, 2 * a, 2 * b), k // 2)
    return np.ascontiguousarray(dxt[:, :m].T)


# --- the weight gradient: dw = xᵀ @ dy ------------------------------------------------------

@njit
def _weight_grad(xt, dyf, n, dwf, j0, j1):
    """dw[k, j] = Σ_r xt[k, r] · dy[r, j] (dy = dyf [12, n], dw = dwf [K, n]) for
    j0 ≤ j < j1: 12 rows × 32 columns of dy stay in 24 registers while k runs down dw."""
    kdim = xt.shape[0]
    for j in range(j0, j1, 32):
        d0 = vload(dyf, j); e0 = vload(dyf, j + 16)  # noqa: E702
        d1 = vload(dyf, n + j); e1 = vload(dyf, n + j + 16)  # noqa: E702
        d2 = vload(dyf, 2 * n + j); e2 = vload(dyf, 2 * n + j + 16)  # noqa: E702
        d3 = vload(dyf, 3 * n + j); e3 = vload(dyf, 3 * n + j + 16)  # noqa: E702
        d4 = vload(dyf, 4 * n + j); e4 = vload(dyf, 4 * n + j + 16)  # noqa: E702
        d5 = vload(dyf, 5 * n + j); e5 = vload(dyf, 5 * n + j + 16)  # noqa: E702
        d6 = vload(dyf, 6 * n + j); e6 = vload(dyf, 6 * n + j + 16)  # noqa: E702
        d7 = vload(dyf, 7 * n + j); e7 = vload(dyf, 7 * n + j + 16)  # noqa: E702
        d8 = vload(dyf, 8 * n + j); e8 = vload(dyf, 8 * n + j + 16)  # noqa: E702
        d9 = vload(dyf, 9 * n + j); e9 = vload(dyf, 9 * n + j + 16)  # noqa: E702
        d10 = vload(dyf, 10 * n + j); e10 = vload(dyf, 10 * n + j + 16)  # noqa: E702
        d11 = vload(dyf, 11 * n + j); e11 = vload(dyf, 11 * n + j + 16)  # noqa: E702
        for k in range(kdim):
            xk = xt[k]
            s = xk[0]; a = vfma(d0, s, vzero()); b = vfma(e0, s, vzero())  # noqa: E702
            s = xk[1]; a = vfma(d1, s, a); b = vfma(e1, s, b)  # noqa: E702
            s = xk[2]; a = vfma(d2, s, a); b = vfma(e2, s, b)  # noqa: E702
            s = xk[3]; a = vfma(d3, s, a); b = vfma(e3, s, b)  # noqa: E702
            s = xk[4]; a = vfma(d4, s, a); b = vfma(e4, s, b)  # noqa: E702
            s = xk[5]; a = vfma(d5, s, a); b = vfma(e5, s, b)  # noqa: E702
            s = xk[6]; a = vfma(d6, s, a); b = vfma(e6, s, b)  # noqa: E702
            s = xk[7]; a = vfma(d7, s, a); b = vfma(e7, s, b)  # noqa: E702
            s = xk[8]; a = vfma(d8, s, a); b = vfma(e8, s, b)  # noqa: E702
            s = xk[9]; a = vfma(d9, s, a); b = vfma(e9, s, b)  # noqa: E702
            s = xk[10]; a = vfma(d10, s, a); b = vfma(e10, s, b)  # noqa: E702
            s = xk[11]; a = vfma(d11, s, a); b = vfma(e11, s, b)  # noqa: E702
            o = k * n + j
            vstore(dwf, o, a); vstore(dwf, o + 16, b)  # noqa: E702


def weight_grad(x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """dw [K, N] = x [M, K]ᵀ @ dy [M, N] (``fits``)."""
    k, n = x.shape[1], dy.shape[1]
    xt = _transposed(x, ROWS)
    dyf = _rows12(dy).reshape(-1)
    dw = np.empty((k, n), np.float32)
    dwf = dw.reshape(-1)
    parallel(lambda a, b: _weight_grad(xt, dyf, n, dwf, 32 * a, 32 * b), n // 32)
    return dw
