"""Fast 2-D convolution: chunked NHWC im2col (Numba) + one-thread sgemm per worker, and a
"wide" path for thin first layers. ``docs/performance.md`` has the measurements.

Same maths and conventions as ``scratchnet.ops.conv`` (read that file first). The
reference builds the whole im2col matrix (for deep-CNN conv2: 9800 × 800 floats = 31 MB,
as large as the L3 cache) and hands it to one big product. Here every worker thread
takes a contiguous range of output pixels and walks it in chunks of ``rows`` rows
(~256 KB of columns):

    col   = im2col(x, rows s..e)           [r, KH·KW·C]   (Numba; stays in L2)
    y[s:e] = col @ W2 + b                   W2 = w.reshape(KH·KW·C, F)   (sgemm, 1 thread)

so the column matrix is written and read while it is still in cache, and the two cores
run two independent GEMMs instead of synchronising inside one. im2col copies one
contiguous run of KW·C floats per (pixel, window row): in NHWC a window row is
contiguous in x and in col.

Thin inputs with stride 1 (C ≤ 4: every recipe's first layer) take the "wide" path
instead (see the section below): whole-image column copies from channel-planar, padded
phase planes, and the GEMM oriented as yᵀ = W2ᵀ @ colᵀ. 5×5 stride-1 layers with ≥ 16
channels (deep-CNN conv2) use Winograd F(2×2, 5×5) (``winograd.py``; F(4×4, 5×5) where the
tuner measured it faster; the stride-2 4×4 and 5×5 layers by Winograd over their
space-to-depth input, only where it measured faster) unless the algorithm is set to
"direct" (``conv_algorithm``, ``SCRATCHNET_CONV_ALGORITHM``).

Backward, with dY [N, Ho, Wo, F] seen as a matrix [N·Ho·Wo, F]:

* dW: the same chunks are rebuilt from x (cheaper than keeping 31 MB around) and
  ``dYᵀ[s:e] @ col`` is accumulated into one [F, K] partial sum per part of the rows; the
  parts are added at the end (no write races, no atomics). The parts are fixed by the
  shape, not by the thread count (``parallel_sum``), so dW rounds the same on any number
  of threads. The wide path does the same with its transposed columns.
* db: a sum over [M/g, g·F] rows (long vectorised rows even when F = 6).
* dX, stride 1, C ≥ 4 and F < C: the input gradient is itself a convolution, of dY with the
  filter flipped in space and with C and F swapped, padded by (KH-1-top, KW-1-left):

      dx[n, h, v, c] = Σ_{p,q,f} dY[n, h + top - p, v + left - q, f] · w[p, q, c, f]

  so it reuses the forward machinery (im2col of dY + GEMM) and needs no scatter.
* dX otherwise (stride 2; C < 4, where that GEMM would be a thin matrix-vector
  product; F ≥ C, where this GEMM has the better shape): ``dcol = dY[s:e] @ W2ᵀ`` per chunk, then a Numba col2im adds each row's
  KH·KW contiguous C-vectors back into dx. Workers own whole images, so overlapping
  windows never race.
* A network's first layer needs no dX at all: ``conv2d_backward_params`` (used by the
  training step through ``Sequential.backward(..., input_grad=False)``).

Which of these runs (and with which chunk size) is decided per layer shape by ``choose``:
by measurement on this machine where ``kernels.tuning`` has a cached result (``scratchnet
tune``, or ``SCRATCHNET_TUNE=1`` at first use), else by the built-in rules above
(``_builtin``). Two families of candidates are never built-in rules: ``blocked`` and
``blocked16`` (``blocked.py``), a direct convolution (forward, filter and input gradient) in
explicit 16-lane float32 vector registers, in register blocks for 32 or for 16 vector
registers, which wins on the narrow layers where it is measured, and
``lanes`` (``lanes.py``), direct convolutions (forward, input and filter gradients) with
the output channels in the vector lanes.
Every candidate computes the same convolution (``tests/test_tuning.py``), rounded its own
way: a measured chunk size also cuts dW's sum into other parts. Where results must round
the same on every machine, "untuned" keeps the built-in choices.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager

import numpy as np
from numba import uint64 as U

from ..ops.conv import spatial_geometry
from . import tuning
from ._runtime import blas_single, chosen_chunk, chunk_size, njit, parallel, parallel_sum, scratch
from .activations import _relu_grad_in_place, relu_mask
from .blocked import VARIANTS as BLOCKED, blocked_filter_grad, blocked_forward, blocked_input_grad
from .lanes import lanes_filter_grad, lanes_forward, lanes_input_grad
from .tuning import Choice, conv_key
from .winograd import TILE, use_winograd, winograd_backward, winograd_forward

# --- which algorithm: "auto", "direct" (never Winograd) or "untuned" ---------------------------
#
# "auto": the fastest candidate measured on this machine (``kernels.tuning``) where there is
# a measurement for the layer's shape, else the built-in rules. "direct": the same without
# Winograd. "untuned": the built-in rules, measurements ignored (what every machine ran
# before tuning; for A/B comparisons).
#
# Winograd rounds each output of a 2x2 tile differently, so two outputs whose receptive
# fields are identical (MNIST's blank background) are no longer bit-identical. A max-pool
# over them then sends the gradient of that tie to a different (equally valid) position
# than the direct algorithm, and TensorFlow, do; every parameter gradient is unchanged.
# The parity harness's layer-by-layer walk, which compares input gradients position by
# position, therefore pins "direct" (docs/parity.md).

CONV_ALGORITHMS = ("auto", "direct", "untuned")
_algorithm = os.environ.get("SCRATCHNET_CONV_ALGORITHM", "auto")
if _algorithm not in CONV_ALGORITHMS:
    raise ValueError(f"SCRATCHNET_CONV_ALGORITHM={_algorithm!r}; choose one of {CONV_ALGORITHMS}")


@contextmanager
def conv_algorithm(name: str):
    """Inside: convolutions use ``name`` ("auto"; "direct", i.e. never Winograd; or
    "untuned", the built-in rules whatever was measured)."""
    global _algorithm
    if name not in CONV_ALGORITHMS:
        raise ValueError(f"unknown convolution algorithm {name!r}; choose one of {CONV_ALGORITHMS}")
    saved, _algorithm = _algorithm, name
    try:
        yield
    finally:
        _algorithm = saved


# The candidates of each pass (``kernels.tuning.candidates`` lists those valid for a shape):
#   fwd  im2col (y = col @ W2), im2col-t (yᵀ = W2ᵀ @ colᵀ), wide, winograd, blocked (float32:
#        register-blocked direct convolution, ``blocked.py``; only where measured fastest),
#        lanes (float32, F ≥ 8: channels in the lanes, ``lanes.py``; the same)
#   dx   col2im (dcol = dY @ W2ᵀ, scatter), flipped (dX as a convolution of dY; -t: yᵀ), winograd,
#        lanes (float32, C ≥ 4: C in the lanes, each stride phase's taps only), blocked (float32,
#        s·4·⌈C/4⌉ ≤ 16: pixels in the lanes, each stride phase a stride-1 register-blocked pass)
#   dw   im2col, wide, winograd, blocked (float32: 4 taps × 4 channels in registers, reduced over pixels),
#        lanes (float32: 4-12 input channels × 1-3 output-channel vectors, the same)
#   bwd  winograd (dx and dw in one pass, sharing dY's transform) or split (dx and dw apart)
# and beside each blocked, blocked16: the same kernel with a register block that fits AVX2's 16 registers.
ALGORITHMS = {"fwd": ("im2col", "im2col-t", "wide", "winograd", "winograd4", *BLOCKED, "lanes"),
              "dx": ("col2im", "flipped", "flipped-t", "winograd", "winograd4", "lanes", *BLOCKED),
              "dw": ("im2col", "wide", "winograd", "winograd4", *BLOCKED, "lanes"),
              "bwd": ("winograd", "winograd4", "split")}


def _builtin(pass_: str, key, winograd: bool) -> Choice:
    """The built-in rules, without measurement: what runs where nothing was tuned."""
    c, kh, kw, f, stride = key[3:8]
    if winograd and use_winograd(kh, kw, c, f, stride):
        return Choice("winograd")
    if pass_ == "bwd":
        return Choice("split")
    if pass_ == "dx":
        # (With F >= C the scatter wins: its GEMM dY @ W2ᵀ has K = F, N = KH·KW·C, a better
        # shape than the flipped one's N = C. deep-CNN conv2, F = 64, C = 32: 12.0 vs 12.8 ms
        # single thread, min of 5 interleaved runs.)
        return Choice("flipped" if stride == 1 and c >= 4 and f < c else "col2im")
    return Choice("wide" if _use_wide(c, f, stride) else "im2col")


def choose(pass_: str, key, *, first_use: bool | None = None) -> Choice:
    """The algorithm and chunk size of one pass ("fwd", "dx", "dw", "bwd") for ``key``
    (``tuning.conv_key``) under the current ``conv_algorithm``. ``first_use``: measure a
    shape not measured yet (default: ``SCRATCHNET_TUNE``)."""
    memo = tuning.store().memo  # emptied whenever a measurement is stored
    first_use = tuning.TUNE_AT_FIRST_USE if first_use is None else first_use
    choice = memo.get((pass_, key, _algorithm, first_use))
    if choice is None:
        if _algorithm != "untuned":
            choice = tuning.measured(pass_, key, winograd=_algorithm == "auto", first_use=first_use)
        choice = memo[pass_, key, _algorithm, first_use] = choice or _builtin(pass_, key, _algorithm != "direct")
    return choice


def _cache_key(cache):
    x, w, stride, _, pads = cache
    return conv_key(x.shape, w.shape, stride, pads, x.dtype)


# Column chunk: ~256 KB (a quarter of Zen 4's 1 MB L2, so the chunk, the packed GEMM
# panels and the output all stay in L2), but at least 320 rows so that the K = 800/1600
# GEMMs of deep-CNN conv2 keep a long M. Measured single-thread: 256 KB vs 1 MB makes
# conv3 conv2 fwd 2.5 -> 1.95 ms and dw 2.0 -> 1.65 ms; 320 rows vs 80 keeps conv2 of
# deep-CNN at its best (11.6 vs 12.2 ms).
ROWS_TARGET_BYTES = 1 << 18
MIN_ROWS, MAX_ROWS = 320, 2048


def _chunk_rows(k: int, itemsize: int) -> int:
    return chosen_chunk() or int(min(MAX_ROWS, max(MIN_ROWS, ROWS_TARGET_BYTES // max(1, k * itemsize))))


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


# --- the "wide" path: planar phase images, whole-image column copies --------------------------
#
# For the thin first layers (C = 1: 5x5 or 6x6 filters on 28x28) the cost was not the
# GEMM but im2col's many short runs (KW·C = 5 floats each), and a GEMM orientation with
# F (4, 6, 32) as BLAS's narrow dimension. The wide path removes both:
#
# 1. Split the zero-padded input into s·s phase planes, channel-planar:
#        xq[n, a, b, c, u, v] = xpad[n, s·u + a, s·v + b, c]      [N, s, s, C, Hh + 1, Wh]
#    with Hh = Ho + (KH-1)//s, Wh = Wo + (KW-1)//s. Tap (p, q) of output (i, j) reads phase
#    (p % s, q % s) at (i + p//s, j + q//s): a stride-1 tap of a small plane.
# 2. Compute the outputs on a "wide" grid of Ho × Wh (the Wh - Wo extra columns of each
#    row are garbage and dropped). Then the tap (p, q, c) of ALL outputs of image n,
#        flat index  (p//s)·Wh + q//s + (i·Wh + j)   in plane (n, p % s, q % s, c),
#    is ONE contiguous run of Ho·Wh floats: the transposed column matrix colt [K, Ho·Wh]
#    of an image is K memcpy's. (Extra row Hh + 1: garbage reads stay inside the plane.)
# 3. yᵀ [F, m] = W2ᵀ [F, K] @ colt [K, m]: BLAS's long dimension is m, the pixels, which
#    runs 1.3-3x faster than col [m, K] @ W2 [K, F] for these shapes (measured, one
#    thread: 98 vs 62 GFLOPS for K = 36, F = 6; 82 vs 63 for K = 25, F = 32). A small
#    Numba pass transposes yᵀ into y and adds the bias.
#
# The price is Wh/Wo extra columns (14-18 % here). Filter gradient: dW += colt @ dY_wide,
# with dY copied into the wide grid (zeros in the garbage columns). The code handles any
# stride through the phase planes, but for the stride-2 layers of conv3 (C = 4..12) it
# measured slower than im2col, so ``_use_wide`` only picks it for stride 1, C <= 4.

WIDE_TARGET_BYTES = 1 << 19  # colt per chunk of images: ~512 KB, L2-resident
WIDE_MAX_CHANNELS = 16  # where tuning also times the wide path (it copies K = KH·KW·C planes per image)


def _use_wide(c, f, stride):
    # The built-in rule. Measured (one thread): a clear win for the first layers (C = 1, stride 1: conv 5x5
    # and 6x6 on 28x28, 3-6x faster than im2col + GEMM). For the stride-2 layers of
    # conv3 (C = 4..12) the phase planes and K short copies per image cost more than
    # im2col's runs of KW·C floats, so those keep the im2col path.
    return stride == 1 and c <= 4


@njit
def _phase_planes(x, xq, pt, pl):
    """xq[n, a, b, c, u, v] = x[n, s·u + a - pt, s·v + b - pl, c], 0 outside x.
    Per plane row: the valid v range is computed once, so the inner loop is a plain
    strided copy (contiguous when C = 1 and s = 1) between two zero fills."""
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    s = xq.shape[1]
    hh1, wh = xq.shape[4], xq.shape[5]
    xf = x.reshape(-1)
    zero = x.dtype.type(0)
    for n in range(xq.shape[0]):
        for a in range(s):
            for b in range(s):
                off = pl - b  # s·v - off is the input column
                v0 = min(wh, max(0, (off + s - 1) // s if off > 0 else 0))
                v1 = max(v0, min(wh, (w - 1 + off) // s + 1))
                for u in range(hh1):
                    ih = s * u + a - pt
                    inside = 0 <= ih < h
                    for ch in range(c):
                        dst = xq[n, a, b, ch, u]
                        if not inside:
                            for v in range(wh):
                                dst[v] = zero
                            continue
                        for v in range(v0):
                            dst[v] = zero
                        src = ((n * h + ih) * w + s * v0 - off) * c + ch
                        step = s * c
                        for v in range(v1 - v0):
                            dst[U(v0 + v)] = xf[U(src + v * step)]
                        for v in range(v1, wh):
                            dst[v] = zero


@njit
def _wide_cols(xq, colt, n0, n1, kh, kw, ho):
    """colt[(p·KW + q)·C + c, (n - n0)·Ho·Wh + t] = plane(n, p % s, q % s, c)[(p//s)·Wh + q//s + t]."""
    s, c, hh1, wh = xq.shape[1], xq.shape[3], xq.shape[4], xq.shape[5]
    length = ho * wh
    for n in range(n0, n1):
        d0 = (n - n0) * length
        for p in range(kh):
            for q in range(kw):
                for ch in range(c):
                    src = xq[n, p % s, q % s, ch].reshape(-1)
                    dst = colt[(p * kw + q) * c + ch]
                    s0 = (p // s) * wh + q // s
                    for t in range(length):
                        dst[U(d0 + t)] = src[U(s0 + t)]


@njit
def _unwide(yt, y, n0, n1, wh, bias):
    """y[n, i, j, f] = yt[f, (n - n0)·Ho·Wh + i·Wh + j] + bias[f] for j < Wo
    (a transpose: contiguous reads along j, stores strided by F)."""
    ho, wo, f = y.shape[1], y.shape[2], y.shape[3]
    for n in range(n0, n1):
        for i in range(ho):
            t0 = ((n - n0) * ho + i) * wh
            dst = y[n, i].reshape(-1)
            for k in range(f):
                src = yt[k]
                bk = bias[k]
                for j in range(wo):
                    dst[U(j * f + k)] = src[U(t0 + j)] + bk


@njit
def _widen(dy, dyw, n0, n1, wh):
    """dyw[(n - n0)·Ho·Wh + i·Wh + j, f] = dy[n, i, j, f] for j < Wo, 0 in the garbage columns."""
    ho, wo, f = dy.shape[1], dy.shape[2], dy.shape[3]
    zero = dy.dtype.type(0)
    for n in range(n0, n1):
        for i in range(ho):
            base = ((n - n0) * ho + i) * wh
            for j in range(wh):
                dst = dyw[U(base + j)]
                if j < wo:
                    src = dy[n, i, j]
                    for k in range(f):
                        dst[k] = src[k]
                else:
                    for k in range(f):
                        dst[k] = zero


def _planes(x, kh, kw, stride, pt, pl, out_hw):
    n, c = x.shape[0], x.shape[3]
    ho, wo = out_hw
    hh, wh = ho + (kh - 1) // stride, wo + (kw - 1) // stride
    xq = np.empty((n, stride, stride, c, hh + 1, wh), x.dtype)
    _phase_planes(x, xq, pt, pl)
    return xq


def _wide_chunks(k, length, itemsize):
    return chosen_chunk() or max(1, WIDE_TARGET_BYTES // (k * length * itemsize))


def _chunk_view(buf, rows, cols):
    """The first rows·cols elements of a 2-D scratch buffer as a contiguous [rows, cols]."""
    return buf.reshape(-1)[:rows * cols].reshape(rows, cols)


def _correlate_wide(x, w2, kh, kw, stride, pt, pl, out_hw, bias):
    n = x.shape[0]
    ho, wo = out_hw
    k, f = w2.shape
    xq = _planes(x, kh, kw, stride, pt, pl, out_hw)
    wh = xq.shape[5]
    length = ho * wh
    y = np.empty((n, ho, wo, f), x.dtype)
    per = _wide_chunks(k, length, x.itemsize)
    b = np.ascontiguousarray(bias, x.dtype) if bias is not None else np.zeros(f, x.dtype)
    w2t = np.ascontiguousarray(w2.T)

    def work(a, e):
        colt = scratch("colt", (k, per * length), x.dtype)
        yt = scratch("yw", (f, per * length), x.dtype)
        for s in range(a, e, per):
            t = min(s + per, e)
            m = (t - s) * length
            ct, ytm = _chunk_view(colt, k, m), _chunk_view(yt, f, m)
            _wide_cols(xq, ct, s, t, kh, kw, ho)
            np.dot(w2t, ct, out=ytm)
            _unwide(ytm, y, s, t, wh, b)

    with blas_single():
        parallel(work, n)
    return y


def _filter_grad_wide(x, dy, kh, kw, stride, pt, pl, out_hw):
    n = x.shape[0]
    ho, wo = out_hw
    f = dy.shape[3]
    xq = _planes(x, kh, kw, stride, pt, pl, out_hw)
    wh = xq.shape[5]
    k = kh * kw * x.shape[3]
    length = ho * wh
    per = _wide_chunks(k, length, x.itemsize)

    def work(a, e):
        colt = scratch("colt", (k, per * length), x.dtype)
        dyw = scratch("yw", (per * length, f), x.dtype)
        part = scratch("dw_part", (k, f), x.dtype)
        acc = np.zeros((k, f), x.dtype)
        for s in range(a, e, per):
            t = min(s + per, e)
            m = (t - s) * length
            ct = _chunk_view(colt, k, m)
            _wide_cols(xq, ct, s, t, kh, kw, ho)
            _widen(dy, dyw, s, t, wh)
            np.dot(ct, dyw[:m], out=part)
            acc += part
        return acc

    with blas_single():
        return parallel_sum(work, n, per)


def _correlate(src, w2, kh, kw, stride, pt, pl, out_hw, bias=None, transposed=False):
    """y [N, Ho, Wo, F] = im2col(src) @ w2 (+ bias), chunked over the worker threads.
    ``transposed``: each chunk as yᵀ = w2ᵀ @ colᵀ (the pixels as BLAS's long dimension, as
    in the wide path), then transposed into y."""
    n = src.shape[0]
    ho, wo = out_hw
    k, f = w2.shape
    m = n * ho * wo
    y = np.empty((n, ho, wo, f), src.dtype)
    y2 = y.reshape(m, f)
    rows = _chunk_rows(k, src.itemsize)
    w2t = np.ascontiguousarray(w2.T) if transposed else None

    def work(a, b):
        col = scratch("col", (rows, k), src.dtype)
        yt = scratch("yt", (f, rows), src.dtype) if transposed else None
        for s in range(a, b, rows):
            e = min(s + rows, b)
            _im2col(src, col, s, e, kh, kw, stride, pt, pl, ho, wo)
            out = y2[s:e]
            if transposed:
                ytm = _chunk_view(yt, f, e - s)
                np.dot(w2t, col[:e - s].T, out=ytm)
                if bias is not None:
                    np.add(ytm.T, bias, out=out)
                else:
                    out[...] = ytm.T
                continue
            np.dot(col[:e - s], w2, out=out)
            if bias is not None:
                out += bias

    with blas_single():
        parallel(work, m, min_per_thread=rows)
    return y


def forward_plan(x, w, stride: int, padding: str):
    """``(x, choice, pads, out_hw)``: x C-contiguous, and the algorithm the forward pass
    runs for this shape (``choose``), shared by ``conv2d_forward`` and ``fused.conv2d_infer``."""
    out_hw, pads = spatial_geometry(x.shape, w.shape[:2], (stride, stride), padding)
    x = np.ascontiguousarray(x)
    return x, choose("fwd", conv_key(x.shape, w.shape, stride, pads, x.dtype)), pads, out_hw


def conv2d_forward(x, w, b, stride: int = 1, padding: str = "SAME"):
    """Return ``y [N, Ho, Wo, F]`` and the cache for ``conv2d_backward`` (this module's)."""
    x, choice, pads, out_hw = forward_plan(x, w, stride, padding)
    return forward_with(choice, x, w, b, stride, pads, out_hw), (x, w, stride, out_hw, pads)


def forward_with(choice: Choice, x, w, b, stride, pads, out_hw):
    """y of ``conv2d_forward`` by the algorithm and chunk size of ``choice``."""
    kh, kw, c, f = w.shape
    pt, pl = pads[0][0], pads[1][0]
    with chunk_size(choice.chunk):
        if choice.algorithm in TILE:
            return winograd_forward(x, w, b, pads, out_hw, stride=stride, tile=TILE[choice.algorithm])
        if choice.algorithm in BLOCKED:
            return blocked_forward(x, w, b, stride, pads, out_hw, variant=choice.algorithm)
        if choice.algorithm == "lanes":
            return lanes_forward(x, w, b, stride, pads, out_hw)
        w2 = np.ascontiguousarray(w).reshape(kh * kw * c, f)
        if choice.algorithm == "wide":
            return _correlate_wide(x, w2, kh, kw, stride, pt, pl, out_hw, b)
        assert choice.algorithm in ("im2col", "im2col-t"), choice
        return _correlate(x, w2, kh, kw, stride, pt, pl, out_hw, bias=b, transposed=choice.algorithm == "im2col-t")


def _filter_grad(x, dy2, kh, kw, stride, pt, pl, out_hw):
    n, c = x.shape[0], x.shape[3]
    ho, wo = out_hw
    m, f = dy2.shape
    k = kh * kw * c
    rows = _chunk_rows(k, x.itemsize)

    def work(a, b):
        col = scratch("col", (rows, k), x.dtype)
        part = scratch("dw_part", (f, k), x.dtype)
        acc = np.zeros((f, k), x.dtype)
        for s in range(a, b, rows):
            e = min(s + rows, b)
            _im2col(x, col, s, e, kh, kw, stride, pt, pl, ho, wo)
            # dWᵀ [F, K] = dYᵀ @ col: for K >= 100 this orientation runs 5-50 % faster in
            # OpenBLAS than colᵀ @ dY (K = 150, F = 12: 55 vs 37 GFLOPS; K = 800, F = 64: 100 vs 96)
            np.dot(dy2[s:e].T, col[:e - s], out=part)
            acc += part
        return acc

    with blas_single():
        dwt = parallel_sum(work, m, rows)
    return np.ascontiguousarray(dwt.T)


def _input_grad_scatter(dy2, w2, x_shape, kh, kw, stride, pt, pl, out_hw, gate=None):
    """dx by dcol = dY @ W2ᵀ, chunk by chunk, scattered into dx; then, with ``gate``,
    dx · [gate > 0] over each worker's images."""
    n = x_shape[0]
    ho, wo = out_hw
    k, f = w2.shape
    dx = np.zeros(x_shape, dy2.dtype)
    rows = _chunk_rows(k, dy2.itemsize)
    w2t = w2.T
    per_image = ho * wo
    image = math.prod(x_shape[1:])
    dxf, gatef = dx.reshape(-1), None if gate is None else gate.reshape(-1)

    def work(n0, n1):  # whole images: no two workers touch the same dx pixel
        dcol = scratch("col", (rows, k), dy2.dtype)
        a, b = n0 * per_image, n1 * per_image
        for s in range(a, b, rows):
            e = min(s + rows, b)
            np.dot(dy2[s:e], w2t, out=dcol[:e - s])
            _col2im_add(dcol, dx, s, e, kh, kw, stride, pt, pl, ho, wo)
        if gate is not None:
            _relu_grad_in_place(dxf, gatef, n0 * image, n1 * image)

    with blas_single():
        parallel(work, n)
    return dx


def conv2d_backward_filter(dy, cache):
    """``dw [KH, KW, C, F]`` alone (for benchmarks; ``conv2d_backward`` is what layers call)."""
    return filter_grad_with(choose("dw", _cache_key(cache)), np.ascontiguousarray(dy), cache)


def filter_grad_with(choice: Choice, dy, cache):
    """dw by the algorithm and chunk size of ``choice``; dy C-contiguous."""
    x, w, stride, out_hw, pads = cache
    kh, kw, _, f = w.shape
    with chunk_size(choice.chunk):
        if choice.algorithm in TILE:
            return winograd_backward(x, w, dy, pads, out_hw, stride=stride, need_dx=False, tile=TILE[choice.algorithm])[1]
        if choice.algorithm in BLOCKED:
            return blocked_filter_grad(x, dy, kh, kw, stride, pads, out_hw, variant=choice.algorithm)
        if choice.algorithm == "lanes":
            return lanes_filter_grad(x, dy, kh, kw, stride, pads, out_hw)
        if choice.algorithm == "wide":
            return _filter_grad_wide(x, dy, kh, kw, stride, pads[0][0], pads[1][0], out_hw).reshape(w.shape)
        assert choice.algorithm == "im2col", choice
        dy2 = dy.reshape(-1, f)
        return _filter_grad(x, dy2, kh, kw, stride, pads[0][0], pads[1][0], out_hw).reshape(w.shape)


def conv2d_backward_input(dy, cache):
    """``dx [N, H, W, C]`` alone (for benchmarks; ``conv2d_backward`` is what layers call)."""
    return input_grad_with(choose("dx", _cache_key(cache)), np.ascontiguousarray(dy), cache)


def input_grad_with(choice: Choice, dy, cache, gate=None):
    """dx by the algorithm and chunk size of ``choice``; dy C-contiguous. ``gate``: the
    cache of a ReLU before the layer (x's shape), whose backward is then applied too,
    dx · [gate > 0]: by the lanes and blocked kernels as they store dx, by the scatter's
    workers on their own images once scattered (still in cache, and no second fork-join),
    else in place on dx after."""
    inside = (choice.algorithm in ("lanes", *BLOCKED, "col2im") and gate is not None and gate.flags.c_contiguous
              and gate.dtype == dy.dtype)
    dx = _input_grad(choice, dy, cache, gate if inside else None)
    return dx if inside else relu_mask(dx, gate)


def _input_grad(choice: Choice, dy, cache, gate):
    """dx by ``choice``; ``gate``: the lanes, blocked or scatter kernel's gate (None for the others)."""
    x, w, stride, out_hw, pads = cache
    kh, kw, c, f = w.shape
    (pt, _), (pl, _) = pads
    with chunk_size(choice.chunk):
        if choice.algorithm in TILE:
            return winograd_backward(x, w, dy, pads, out_hw, stride=stride, need_dw=False, tile=TILE[choice.algorithm])[0]
        if choice.algorithm == "lanes":
            return lanes_input_grad(dy, w, x.shape, stride, pads, gate=gate)
        if choice.algorithm in BLOCKED:
            return blocked_input_grad(dy, w, x.shape, stride, pads, gate=gate, variant=choice.algorithm)
        if choice.algorithm in ("flipped", "flipped-t"):  # stride 1 only
            # flip in space, swap C and F: wt[p', q', f, c] = w[KH-1-p', KW-1-q', c, f]
            wt = np.ascontiguousarray(w[::-1, ::-1].transpose(0, 1, 3, 2)).reshape(kh * kw * f, c)
            return _correlate(dy, wt, kh, kw, 1, kh - 1 - pt, kw - 1 - pl, x.shape[1:3],
                              transposed=choice.algorithm == "flipped-t")
        assert choice.algorithm == "col2im", choice
        w2 = np.ascontiguousarray(w).reshape(kh * kw * c, f)
        return _input_grad_scatter(dy.reshape(-1, f), w2, x.shape, kh, kw, stride, pt, pl, out_hw, gate)


def backward_with(choice: Choice, dy, cache, dx_choice: Choice | None = None, dw_choice: Choice | None = None,
                  gate=None):
    """(dx, dw): in one Winograd pass (``choice`` "winograd" or "winograd4") or as two
    ("split"); ``gate`` as in ``input_grad_with``."""
    if choice.algorithm in TILE:  # dx and dw share the transform of dy
        x, w, stride, out_hw, pads = cache
        with chunk_size(choice.chunk):
            dx, dw = winograd_backward(x, w, dy, pads, out_hw, stride=stride, tile=TILE[choice.algorithm])
        return relu_mask(dx, gate), dw
    key = _cache_key(cache)
    return (input_grad_with(dx_choice or choose("dx", key), dy, cache, gate),
            filter_grad_with(dw_choice or choose("dw", key), dy, cache))


def _bias_grad(dy):
    """db = Σ dy over all but the last axis. NumPy's ``dy.reshape(-1, F).sum(0)`` adds one
    F-vector per row, which for F = 6 is a loop of 6 per row (1.2 ms for conv3 conv1, as
    long as its filter gradient). Viewing the rows g at a time as [M/g, g·F] (g dividing M,
    g·F up to 512) gives NumPy long vectorised rows; the g partial sums are added last."""
    f = dy.shape[-1]
    d2 = dy.reshape(-1, f)
    m = d2.shape[0]
    g = max([d for d in range(1, max(1, 512 // f) + 1) if m % d == 0])
    return d2.reshape(m // g, g * f).sum(axis=0).reshape(g, f).sum(axis=0)


def conv2d_backward_params(dy, cache):
    """Return ``dw [KH, KW, C, F], db [F]`` only (a first layer: no input gradient)."""
    dy = np.ascontiguousarray(dy)
    return conv2d_backward_filter(dy, cache), _bias_grad(dy)


def conv2d_backward(dy, cache):
    """Return ``dx [N, H, W, C], dw [KH, KW, C, F], db [F]``."""
    return gated_backward(dy, cache, None)


def gated_backward(dy, cache, gate):
    """``conv2d_backward`` with ``gate`` as in ``input_grad_with`` (``fused.conv2d_backward_relu``)."""
    dy = np.ascontiguousarray(dy)
    db = _bias_grad(dy)
    return (*backward_with(choose("bwd", _cache_key(cache)), dy, cache, gate=gate), db)
