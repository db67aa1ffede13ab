"""Fast LSTM (``BasicLSTMCell`` conventions of ``scratchnet.ops.lstm``): one GEMM per step
for all four gates and the bias, fused pointwise work, and the weight, bias and input
gradients as large GEMMs after the BPTT loop.

Forward. Each step is ONE GEMM, as TensorFlow's cell writes it (concat, matmul, bias),
with the bias as one more row of the kernel and a column of ones beside the input:

    step t:  z = [x_t, h_{t-1}, 1] @ [K; b + forget_bias on the f block]    [N, D+H+1] @ [D+H+1, 4H]
             σ on the i, f, o blocks, tanh on j;  c_t = σf·c_{t-1} + σi·tanh j;
             h_t = tanh(c_t)·σo

(An earlier version hoisted X @ K_x out of the loop, one [T·N, D] @ [D, 4H] GEMM, and
added it and the bias to h_{t-1} @ K_h in each step. Its K = 28 GEMM ran at half the
rate of the step's and the additions were a pass each: on the AMD EPYC, batch-1,000
inference 42.3 → 37.0 ms and the batch-100 forward + backward 17.0 → 15.5 ms with the one
GEMM, old and new alternating in one process; the step GEMM's K = 157 instead of 128
costs 211 against 190 µs per 128 rows. docs/performance.md has the table.)

Internally the gate columns are reordered from (i, j, f, o) to (i, f, o, j), so the three
sigmoid gates are one contiguous block. The sigmoid is computed as σ(z) = 0.5 + 0.5·tanh(z/2)
with the sigmoid columns of the kernel and bias halved beforehand (exact, a power of two):
one NumPy ``tanh`` pass over all 4H columns (NumPy's float32 tanh is SIMD-vectorised; a
scalar libm call per element from Numba is 5-30× slower), then one Numba pass that maps
the three sigmoid blocks to 0.5 + 0.5·t and computes c_t. The columns go back to the
caller's order only in the returned gradients.

BPTT. Per step only two things are sequential: the fused pointwise backward (one Numba
pass producing dz_t [N, 4H] and the new dc) and dh_{t-1} = dz_t @ K_hᵀ. Everything that
sums over time is done once after the loop with K = T·N = 3584:

    [dK_x; dK_h; dbias] = [X, H_prev, 1]ᵀ @ dZ  (one GEMM over the forward's
    [x_t, h_{t-1}, 1] rows),   dX = dZ @ K_xᵀ

The reference does those products (with K = N) inside the loop, T times.

On several cores the two loops run side by side on row blocks of the batch (one worker
thread each, one-thread BLAS); the post-loop GEMMs use every BLAS thread.
"""

from __future__ import annotations

import numpy as np

from ._runtime import blas_single, njit, parallel

# Threads split the batch: each worker runs the whole time loop for its rows (the rows of
# a recurrence never interact), with one-thread BLAS. Splitting each step's small GEMM
# over BLAS threads instead pays two thread wake-ups per step, 56 per pass.
MIN_ROWS = 16


def _reordered(a: np.ndarray, to_internal: bool = True) -> np.ndarray:
    """``a [..., 4H]`` with its gate blocks moved from the caller's order (i, j, f, o) to
    the internal (i, f, o, j), or back. Four block copies: a fancy-indexed column
    permutation (``a[:, perm]``) took 176 µs for the lstm recipe's [156, 512] kernel,
    more than half of a batch-1 forward pass."""
    h = a.shape[-1] // 4
    out = np.empty(a.shape, a.dtype)
    for internal, caller in enumerate((0, 2, 3, 1)):
        i, c = slice(internal * h, (internal + 1) * h), slice(caller * h, (caller + 1) * h)
        if to_internal:
            out[..., i] = a[..., c]
        else:
            out[..., c] = a[..., i]
    return out


# Both pointwise kernels take each gate block as its own row slice and loop from 0: an
# index like ``h + k`` with a runtime h keeps Numba's negative-index wraparound check,
# which LLVM vectorises as gathers/scatters (see docs/performance.md, rule 3).

@njit
def _gates_cell(a, c_prev, c):
    """On entry a holds [tanh(z_i/2), tanh(z_f/2), tanh(z_o/2), tanh(z_j)]; turns the first
    three blocks into σ = 0.5 + 0.5·tanh(z/2) in place and writes
    c = σf · c_prev + σi · tanh j."""
    n, h = c.shape
    half = a.dtype.type(0.5)
    for r in range(n):
        s3 = a[r, :3 * h]
        for k in range(s3.size):
            s3[k] = half + half * s3[k]
        ai, af, aj = a[r, :h], a[r, h:2 * h], a[r, 3 * h:]
        cp, cr = c_prev[r], c[r]
        for k in range(h):
            cr[k] = af[k] * cp[k] + ai[k] * aj[k]


@njit
def _cell_backward(dh_out, dh_next, dc, a, c_prev, tc, dz):
    """One step of BPTT for all N rows: writes dz [N, 4H] (internal order) and updates
    dc in place to dc · σf (the carry into step t-1)."""
    n, h = dc.shape
    one = dc.dtype.type(1)
    for r in range(n):
        ai, af, ao, aj = a[r, :h], a[r, h:2 * h], a[r, 2 * h:3 * h], a[r, 3 * h:]
        zi, zf, zo, zj = dz[r, :h], dz[r, h:2 * h], dz[r, 2 * h:3 * h], dz[r, 3 * h:]
        tcr, dho, dhn, dcr, cp = tc[r], dh_out[r], dh_next[r], dc[r], c_prev[r]
        for k in range(h):
            i = ai[k]
            f = af[k]
            o = ao[k]
            j = aj[k]
            t = tcr[k]
            dh = dho[k] + dhn[k]
            do = dh * t
            d = dcr[k] + dh * o * (one - t * t)
            zi[k] = d * j * i * (one - i)
            zf[k] = d * cp[k] * f * (one - f)
            zo[k] = do * o * (one - o)
            zj[k] = d * i * (one - j * j)
            dcr[k] = d * f


@njit
def _halved_rows(a, out):
    """out [R, 4H] = a in internal gate order (i, f, o, j), the three sigmoid blocks × 0.5.
    One pass: NumPy's four block copies plus a strided in-place multiply took 43 µs for
    the lstm recipe's [156, 512] kernel, an eighth of a batch-1 forward pass."""
    h = a.shape[1] // 4
    half = out.dtype.type(0.5)
    for r in range(a.shape[0]):
        src, dst = a[r], out[r]
        si, sj, sf, so = src[:h], src[h:2 * h], src[2 * h:3 * h], src[3 * h:]
        di, df, do, dj = dst[:h], dst[h:2 * h], dst[2 * h:3 * h], dst[3 * h:]
        for k in range(h):
            di[k] = si[k] * half
            df[k] = sf[k] * half
            do[k] = so[k] * half
            dj[k] = sj[k]


def _halved(kernel, bias, forget_bias, dtype):
    """kb [D+H+1, 4H]: the kernel's rows, then the bias (the forget bias folded in) as the
    last row, in internal gate order, their sigmoid columns halved."""
    # σ(z) = 0.5 + 0.5·tanh(z/2): the sigmoid columns of the kernel and bias are halved
    # (exact: a power of two), so ONE np.tanh pass over all 4H columns serves the three
    # sigmoid gates and the candidate, instead of negate, exp, +1, reciprocal (4 passes
    # over 3H columns) plus a tanh; and tanh never overflows, unlike exp(-z).
    hidden = kernel.shape[1] // 4
    b = bias.astype(dtype)
    b[2 * hidden:3 * hidden] += dtype.type(forget_bias)  # the f block, in the caller's order
    kb = np.empty((kernel.shape[0] + 1, kernel.shape[1]), dtype)
    _halved_rows(np.asarray(kernel, dtype), kb[:-1])
    _halved_rows(b.reshape(1, -1), kb[-1:])
    return kb


def lstm_forward(x, kernel, bias, forget_bias: float = 1.0):
    """Return all hidden states ``h [N, T, H]`` and the cache for ``lstm_backward`` (this module's)."""
    n, t_len, d = x.shape
    hidden = kernel.shape[1] // 4
    dtype = x.dtype
    kp = _reordered(kernel)  # kept for the backward
    kb = _halved(kernel, bias, forget_bias, dtype)
    # xh[t] = [x_t, h_{t-1}, 1]: the step's one GEMM reads it, and the backward gets both
    # weight gradients and the bias gradient from ONE GEMM over it.
    xh = np.empty((t_len + 1, n, d + hidden + 1), dtype)
    xh[:t_len, :, :d] = x.transpose(1, 0, 2)
    xh[t_len, :, :d] = 0
    xh[:, :, -1] = 1
    xh[0, :, d:d + hidden] = 0
    acts = np.empty((t_len, n, 4 * hidden), dtype)
    cs = np.empty((t_len, n, hidden), dtype)
    tcs = np.empty((t_len, n, hidden), dtype)

    def rows(a, b):  # the recurrence of examples a..b-1 (rows never interact)
        zero_c = np.zeros((b - a, hidden), dtype)
        for t in range(t_len):
            z = acts[t, a:b]
            np.dot(xh[t, a:b], kb, out=z)
            np.tanh(z, out=z)
            _gates_cell(z, cs[t - 1, a:b] if t else zero_c, cs[t, a:b])  # z becomes [σi, σf, σo, tanh j]
            np.tanh(cs[t, a:b], out=tcs[t, a:b])
            np.multiply(tcs[t, a:b], z[:, 2 * hidden:3 * hidden], out=xh[t + 1, a:b, d:d + hidden])

    with blas_single():
        parallel(rows, n, min_per_thread=MIN_ROWS)
    h = np.ascontiguousarray(xh[1:, :, d:d + hidden].transpose(1, 0, 2))
    return h, (xh, kp, acts, cs, tcs, d)


# Inference: rows in blocks whose per-step gates stay in L2 (128 rows · 4H = 512 floats:
# 256 KB). Measured, lstm recipe, batch 1,000, 2 workers, median of 9 (AMD EPYC Zen 4):
# blocks of 16 / 32 / 64 / 128 / 256 / 500 rows: 78 / 56 / 50 / 42 / 47 / 44 ms.
INFER_BLOCK = 128


def lstm_infer(x, kernel, bias, forget_bias: float = 1.0, all_steps: bool = True):
    """h [N, T, H] (``all_steps``) or the last step's h [N, H], keeping nothing for backward.

    The forward's arithmetic in the same order (the same values, up to a BLAS that rounds a
    row by its place in the GEMM: OpenBLAS's AVX2 sgemm does, by 1 ulp), but each worker runs
    blocks of ``INFER_BLOCK`` rows through all T steps with only the current [x_t, h, 1],
    c and gates: the forward's [T, N, D+H+1] inputs, [T, N, 4H] gates and [T, N, H] cell
    states (18 + 57 + 28 MB at N = 1,000) are never written."""
    n, t_len, d = x.shape
    hidden = kernel.shape[1] // 4
    dtype = x.dtype
    kb = _halved(kernel, bias, forget_bias, dtype)
    out = np.empty((n, t_len, hidden) if all_steps else (n, hidden), dtype)

    def rows(a, b):
        for s in range(a, b, INFER_BLOCK):
            e = min(s + INFER_BLOCK, b)
            m = e - s
            xh = np.empty((m, d + hidden + 1), dtype)
            xh[:, d:d + hidden], xh[:, -1] = 0, 1
            h = xh[:, d:d + hidden]
            c, c_next = np.zeros((m, hidden), dtype), np.empty((m, hidden), dtype)
            z = np.empty((m, 4 * hidden), dtype)
            for t in range(t_len):
                xh[:, :d] = x[s:e, t]
                np.dot(xh, kb, out=z)
                np.tanh(z, out=z)
                _gates_cell(z, c, c_next)  # z becomes [σi, σf, σo, tanh j]
                c, c_next = c_next, c
                np.tanh(c, out=h)
                np.multiply(h, z[:, 2 * hidden:3 * hidden], out=h)
                if all_steps:
                    out[s:e, t] = h
            if not all_steps:
                out[s:e] = h

    with blas_single():
        parallel(rows, n, min_per_thread=MIN_ROWS)
    return out


def lstm_backward(dh_out, cache):
    """Return ``dx [N, T, D], dkernel [D+H, 4H], dbias [4H]`` from ``dh_out [N, T, H]``."""
    xh, kp, acts, cs, tcs, d = cache
    n, t_len, hidden = dh_out.shape
    dtype = kp.dtype
    dht = np.ascontiguousarray(dh_out.transpose(1, 0, 2), dtype=dtype)
    dz = np.empty((t_len, n, 4 * hidden), dtype)
    kh_t = kp[d:].T  # [4H, H]

    def rows(a, b):  # BPTT of examples a..b-1
        dc = np.zeros((b - a, hidden), dtype)
        dh_next = np.zeros((b - a, hidden), dtype)
        zero_c = np.zeros((b - a, hidden), dtype)
        for t in reversed(range(t_len)):
            _cell_backward(dht[t, a:b], dh_next, dc, acts[t, a:b], cs[t - 1, a:b] if t else zero_c, tcs[t, a:b], dz[t, a:b])
            if t:
                np.dot(dz[t, a:b], kh_t, out=dh_next)

    with blas_single():
        parallel(rows, n, min_per_thread=MIN_ROWS)
    dz2 = dz.reshape(t_len * n, 4 * hidden)
    dkb = np.matmul(xh[:t_len].reshape(t_len * n, d + hidden + 1).T, dz2)  # [x_t, h_{t-1}, 1]ᵀ @ dz, all t
    dx = np.matmul(dz2, kp[:d].T).reshape(t_len, n, d).transpose(1, 0, 2)
    return np.ascontiguousarray(dx), _reordered(dkb[:-1], False), _reordered(dkb[-1], False)
