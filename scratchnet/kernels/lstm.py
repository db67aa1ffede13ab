"""Fast LSTM (``BasicLSTMCell`` conventions of ``scratchnet.ops.lstm``): hoisted input
GEMM, one GEMM per step for all four gates, fused pointwise work, and the weight and
input gradients as large GEMMs after the BPTT loop.

Forward. The kernel [D+H, 4H] splits into an input part K_x [D, 4H] and a recurrent part
K_h [H, 4H]. The input part does not depend on the recurrence, so all T steps are done
at once before the loop (one [T·N, D] @ [D, 4H] GEMM, bias and forget bias folded in):

    Gx = X @ K_x + (bias + forget_bias on the f block)      [T, N, 4H]
    step t:  z = h_{t-1} @ K_h + Gx[t]                       one [N, H] @ [H, 4H] GEMM
             σ on the i, f, o blocks, tanh on j;  c_t = σf·c_{t-1} + σi·tanh j;
             h_t = tanh(c_t)·σo

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

    [dK_x; dK_h] = [X, H_prev]ᵀ @ dZ  (one GEMM: the forward keeps [x_t, h_{t-1}] side by
    side in one array),   dbias = Σ dZ,   dX = dZ @ K_xᵀ

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
    """(ks, bp): the kernel and the bias (the forget bias folded in) in internal gate order,
    their sigmoid columns halved."""
    # σ(z) = 0.5 + 0.5·tanh(z/2): the sigmoid columns of the kernel and bias are halved
    # (exact: a power of two), so ONE np.tanh pass over all 4H columns serves the three
    # sigmoid gates and the candidate, instead of negate, exp, +1, reciprocal (4 passes
    # over 3H columns) plus a tanh; and tanh never overflows, unlike exp(-z).
    hidden = kernel.shape[1] // 4
    b = bias.astype(dtype)
    b[2 * hidden:3 * hidden] += dtype.type(forget_bias)  # the f block, in the caller's order
    ks, bp = np.empty(kernel.shape, dtype), np.empty((1, b.size), dtype)
    _halved_rows(np.asarray(kernel, dtype), ks)
    _halved_rows(b.reshape(1, -1), bp)
    return ks, bp[0]


def lstm_forward(x, kernel, bias, forget_bias: float = 1.0):
    """Return all hidden states ``h [N, T, H]`` and the cache for ``lstm_backward`` (this module's)."""
    n, t_len, d = x.shape
    hidden = kernel.shape[1] // 4
    dtype = x.dtype
    kp = _reordered(kernel)  # kept for the backward
    ks, bp = _halved(kernel, bias, forget_bias, dtype)
    # xh[t] = [x_t, h_{t-1}]: the step GEMM reads h_{t-1} from it, and the backward gets
    # both weight gradients from ONE GEMM over it.
    xh = np.empty((t_len + 1, n, d + hidden), dtype)
    xh[:t_len, :, :d] = x.transpose(1, 0, 2)
    xh[t_len, :, :d] = 0
    xh[0, :, d:] = 0
    acts = np.matmul(xh[:t_len, :, :d].reshape(t_len * n, d), ks[:d]).reshape(t_len, n, 4 * hidden)
    acts += bp
    kh = ks[d:]
    cs = np.empty((t_len, n, hidden), dtype)
    tcs = np.empty((t_len, n, hidden), dtype)

    def rows(a, b):  # the recurrence of examples a..b-1 (rows never interact)
        zero_c = np.zeros((b - a, hidden), dtype)
        hz = np.empty((b - a, 4 * hidden), dtype)
        for t in range(t_len):
            z = acts[t, a:b]
            np.dot(xh[t, a:b, d:], kh, out=hz)
            z += hz
            np.tanh(z, out=z)
            _gates_cell(z, cs[t - 1, a:b] if t else zero_c, cs[t, a:b])  # z becomes [σi, σf, σo, tanh j]
            np.tanh(cs[t, a:b], out=tcs[t, a:b])
            np.multiply(tcs[t, a:b], z[:, 2 * hidden:3 * hidden], out=xh[t + 1, a:b, d:])

    with blas_single():
        parallel(rows, n, min_per_thread=MIN_ROWS)
    h = np.ascontiguousarray(xh[1:, :, d:].transpose(1, 0, 2))
    return h, (xh, kp, acts, cs, tcs, d)


# Inference: rows in blocks whose per-step gates stay in L2 (128 rows · 4H = 512 floats:
# 256 KB). Measured, lstm recipe, batch 1,000, 2 workers, median of 9 (AMD EPYC Zen 4):
# blocks of 16 / 32 / 64 / 128 / 256 / 500 rows: 78 / 56 / 50 / 42 / 47 / 44 ms.
INFER_BLOCK = 128
# ... and the input GEMM of a block runs as many steps ahead as fit in INFER_GATE_BYTES,
# so that its output is read back from cache, not memory: 4 steps of 128 rows · 4H (all
# 28 would be 7.3 MB). Measured, same machine, batch 1,000, median of 22 interleaved
# passes, two runs: all 28 steps 44.2 / 49.8 ms, 4 steps 41.1 / 40.2, 2 steps 43.2 / 44.1;
# the same values. A small batch gets all its steps in one GEMM (batch 1: 57 KB).
INFER_GATE_BYTES = 1 << 20


def lstm_infer(x, kernel, bias, forget_bias: float = 1.0, all_steps: bool = True):
    """h [N, T, H] (``all_steps``) or the last step's h [N, H], keeping nothing for backward.

    The forward's arithmetic in the same order (so the same values), but each worker runs
    blocks of ``INFER_BLOCK`` rows through all T steps with only the current c and h: the
    forward's [T, N, 4H] gates and [T, N, H] cell states (57 + 28 MB at N = 1,000) are
    never written, and the input GEMM runs ``INFER_GATE_BYTES`` ahead, not all T."""
    n, t_len, d = x.shape
    hidden = kernel.shape[1] // 4
    dtype = x.dtype
    ks, bp = _halved(kernel, bias, forget_bias, dtype)
    kx, kh = ks[:d], ks[d:]
    out = np.empty((n, t_len, hidden) if all_steps else (n, hidden), dtype)

    def rows(a, b):
        for s in range(a, b, INFER_BLOCK):
            e = min(s + INFER_BLOCK, b)
            m = e - s
            h = np.zeros((m, hidden), dtype)
            c, c_next = np.zeros((m, hidden), dtype), np.empty((m, hidden), dtype)
            z = np.empty((m, 4 * hidden), dtype)
            ahead = max(1, INFER_GATE_BYTES // z.nbytes)
            for t in range(t_len):
                if t % ahead == 0:  # the input GEMM of the next `ahead` steps
                    t1 = min(t + ahead, t_len)
                    gx = np.matmul(np.ascontiguousarray(x[s:e, t:t1].transpose(1, 0, 2)).reshape((t1 - t) * m, d), kx)
                    gx = gx.reshape(t1 - t, m, 4 * hidden)
                    gx += bp
                np.dot(h, kh, out=z)
                np.add(gx[t % ahead], z, out=z)
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
    kh_t = kp[d:].T

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
    dkp = np.matmul(xh[:t_len].reshape(t_len * n, d + hidden).T, dz2)  # [x_t, h_{t-1}]ᵀ @ dz, all t
    dbp = dz2.sum(axis=0)
    dx = np.matmul(dz2, kp[:d].T).reshape(t_len, n, d).transpose(1, 0, 2)
    return np.ascontiguousarray(dx), _reordered(dkp, False), _reordered(dbp, False)
