"""A direct convolution with the output channels in the vector lanes (float32): the
forward for F ≥ 8, the input gradient for C ≥ 4 (C takes the lanes), and the filter
gradient for F ≥ 8 where C is a multiple of 4, 6, 8 or 12. R output pixels of one row ×
FV 16-channel vectors are held in R·FV registers for the whole reduction over the taps,
in NHWC throughout.

This is ``blocked.py`` turned the other way round, and the layout oneDNN's AVX-512
direct convolution uses: in HWIO the 16 filter values of one tap (p, q, c) for 16
consecutive output channels are contiguous, and in NHWC so are the 16 channels of one
output pixel. So per tap, FV vector loads of w and R broadcasts of input values feed R·FV
FMAs::

    acc[r, v] += w[p, q, c, f0 + 16v : +16] · xpad[n, i·s + p, (j0 + r)·s + q, c]

and the result is stored straight into y[n, i, j0 + r, f0 : f0 + 16·FV] with the bias
(and, for inference, a batch normalisation's affine, the ReLU and a 2 × 2 max-pool)
applied: no wide grid, no garbage columns, no transpose. The input is zero-padded once
per chunk of images, so no tap needs a bounds check; where F is not a whole number of
blocks, the filter is padded with zero channels and the last vector is stored masked.

The register block is a Numba tuple of ``Vec16`` values, built and updated by intrinsics
(``_zeros``, ``_fma_block``, ``_store_block``) that unroll R and FV at compile time: the
tuple is an SSA value, so its R·FV vectors stay in zmm registers across the tap loop
(FV = 3, R = 7: 21 accumulators, 3 filter vectors, a broadcast; FV = 4 spills and is
never used: F = 64 runs as two blocks of 2). Each multiply-add rounds once and the sum
runs over the taps in (p, q, c) order, as in ``blocked.py``; the tests pin it against the
reference like every candidate.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from ._runtime import chosen_chunk, njit, parallel, parallel_sum, scratch
from .blocked import LANES, _VT, _address, epilogue_vectors, masked_load, masked_store, vec16

_FMA = ir.FunctionType(_VT, [_VT] * 3)


@intrinsic
def _zeros(typingctx, count):
    """A tuple of ``count`` (a literal) zero vectors."""
    if not isinstance(count, types.IntegerLiteral):
        return None

    def codegen(context, builder, sig, args):
        return context.make_tuple(builder, sig.return_type, [ir.Constant(_VT, None)] * sig.return_type.count)
    return types.UniTuple(vec16, count.literal_value)(count), codegen


def _i64(context, builder, sig, args, *which):
    return [context.cast(builder, args[k], sig.args[k], types.int64) for k in which]


@intrinsic
def _fma_block(typingctx, acc, wf, wi, xf, xi, step, fv):
    """acc[r·FV + v] + wf[wi + 16v : +16] · xf[xi + r·step] for r < R = len(acc) / FV and
    v < FV (FV a literal): FV vector loads, R broadcasts, R·FV FMAs, rounded once each."""
    if not isinstance(fv, types.IntegerLiteral):
        return None
    nv = fv.literal_value
    nr = acc.count // nv

    def codegen(context, builder, sig, args):
        wi_, xi_, step_ = _i64(context, builder, sig, args, 2, 4, 5)
        i64, i32 = ir.IntType(64), ir.IntType(32)
        ws = [builder.load(_address(context, builder, sig.args[1], args[1], builder.add(wi_, ir.Constant(i64, LANES * v))),
                           align=4) for v in range(nv)]
        xdata = context.make_array(sig.args[3])(context, builder, args[3]).data
        fma = cgutils.get_or_insert_function(builder.module, _FMA, "llvm.fma.v16f32")
        undef = ir.Constant(_VT, ir.Undefined)
        spread = ir.Constant(ir.VectorType(i32, LANES), [0] * LANES)
        out = []
        for r in range(nr):
            xr = builder.load(builder.gep(xdata, [builder.add(xi_, builder.mul(step_, ir.Constant(i64, r)))]), align=4)
            xb = builder.shuffle_vector(builder.insert_element(undef, xr, ir.Constant(i32, 0)), undef, spread)
            out += [builder.call(fma, [ws[v], xb, builder.extract_value(args[0], r * nv + v)]) for v in range(nv)]
        return context.make_tuple(builder, sig.return_type, out)
    return acc(acc, wf, wi, xf, xi, step, fv), codegen


@intrinsic
def _pool_block(typingctx, acc, prev, fv):
    """The 2 × 2 max-pool of a block's pixels, row by row: with ``prev`` None, the max of
    each pixel pair (2r, 2r + 1) of ``acc`` (one output row); else the max of ``prev``'s
    pairs and this row's two pixels, in that order. Each max is "take u if u > v", the
    scan of ``pool._pool_forward`` (row-major, strict >: NaN behaves the same)."""
    if not isinstance(fv, types.IntegerLiteral):
        return None
    nv = fv.literal_value
    half = acc.count // nv // 2

    def codegen(context, builder, sig, args):
        def later(u, v):  # u if u > v else v
            return builder.select(builder.fcmp_ordered(">", u, v), u, v)
        out = []
        for r in range(half):
            for v in range(nv):
                a, b = (builder.extract_value(args[0], (2 * r + k) * nv + v) for k in (0, 1))
                if isinstance(sig.args[1], types.NoneType):
                    out.append(later(b, a))
                else:
                    out.append(later(b, later(a, builder.extract_value(args[1], r * nv + v))))
        return context.make_tuple(builder, sig.return_type, out)
    return types.UniTuple(vec16, half * nv)(acc, prev, fv), codegen


@intrinsic
def _store_block(typingctx, yf, base, stride, channels, acc, bias, mul, add, f0, count, affine, relu, gate, fv):
    """For r < count: yf[base + r·stride + 16v : +16] = acc[r·FV + v] + bias[f0 + 16v : +16],
    then ·mul + add (same slices) if ``affine``, then 0 where <= 0 if ``relu`` (-0.0 -> +0.0,
    NaN stays NaN, like ``activations._relu``), then, if ``gate`` is an array (not None),
    0 where not gate[same index] > 0 (a ReLU's backward, ``activations._relu_grad``). Only
    the channels below ``channels`` are stored: a vector that reaches past F stores its
    lanes below it (``masked_store``; bias, mul and add are padded to whole vectors, and
    gate is read there by a masked load)."""
    if not isinstance(fv, types.IntegerLiteral):
        return None
    nv = fv.literal_value
    nr = acc.count // nv
    gated = not isinstance(gate, types.NoneType)

    def codegen(context, builder, sig, args):
        base_, stride_, channels_, f0_, count_ = _i64(context, builder, sig, args, 1, 2, 3, 8, 9)
        affine_, relu_ = (context.cast(builder, args[k], sig.args[k], types.boolean) for k in (10, 11))
        block = args[4]
        i64 = ir.IntType(64)
        zero = ir.Constant(_VT, None)

        def vectors(k):
            return [builder.load(_address(context, builder, sig.args[k], args[k], builder.add(f0_, ir.Constant(i64, LANES * v))),
                                 align=4) for v in range(nv)]
        bs, ms, ads = vectors(5), vectors(6), vectors(7)
        for r in range(nr):
            with cgutils.if_likely(builder, builder.icmp_signed(">", count_, ir.Constant(i64, r))):
                row = builder.add(base_, builder.mul(stride_, ir.Constant(i64, r)))
                for v in range(nv):
                    y = builder.fadd(builder.extract_value(block, r * nv + v), bs[v])
                    y = builder.select(affine_, builder.fadd(builder.fmul(y, ms[v]), ads[v]), y)
                    y = builder.select(relu_, builder.select(builder.fcmp_ordered("<=", y, zero), zero, y), y)
                    index = builder.add(row, ir.Constant(i64, LANES * v))
                    at = _address(context, builder, sig.args[0], args[0], index)
                    valid = builder.sub(channels_, builder.add(f0_, ir.Constant(i64, LANES * v)))  # channels left

                    def gated_(value, load):
                        if not gated:
                            return value
                        g = load(_address(context, builder, sig.args[12], args[12], index))
                        return builder.select(builder.fcmp_ordered(">", g, zero), value, zero)
                    with builder.if_else(builder.icmp_signed(">=", valid, ir.Constant(i64, LANES))) as (whole, part):
                        with whole:
                            builder.store(gated_(y, lambda p: builder.load(p, align=4)), at, align=4)
                        with part:
                            with builder.if_then(builder.icmp_signed(">", valid, ir.Constant(i64, 0))):
                                masked_store(builder, gated_(y, lambda p: masked_load(builder, p, valid)), at, valid)
        return context.get_dummy_value()
    return types.none(yf, base, stride, channels, acc, bias, mul, add, f0, count, affine, relu, gate, fv), codegen


def _block_address(context, builder, sig, args, r, v):
    """&arr[base + r·stride + 16v] for an intrinsic's (arr, base, stride, ...) arguments."""
    base_, stride_ = _i64(context, builder, sig, args, 1, 2)
    i64 = ir.IntType(64)
    index = builder.add(builder.add(base_, builder.mul(stride_, ir.Constant(i64, r))), ir.Constant(i64, LANES * v))
    return _address(context, builder, sig.args[0], args[0], index)


@intrinsic
def _load_block(typingctx, arr, base, stride, count, fv):
    """The tuple (arr[base + r·stride + 16v : +16] for r < count / FV, v < FV), both literals."""
    if not isinstance(fv, types.IntegerLiteral) or not isinstance(count, types.IntegerLiteral):
        return None
    nv = fv.literal_value
    nr = count.literal_value // nv

    def codegen(context, builder, sig, args):
        return context.make_tuple(builder, sig.return_type, [
            builder.load(_block_address(context, builder, sig, args, r, v), align=4) for r in range(nr) for v in range(nv)])
    return types.UniTuple(vec16, nr * nv)(arr, base, stride, count, fv), codegen


@intrinsic
def _save_block(typingctx, arr, base, stride, acc, fv):
    """arr[base + r·stride + 16v : +16] = acc[r·FV + v], the inverse of ``_load_block``."""
    if not isinstance(fv, types.IntegerLiteral):
        return None
    nv = fv.literal_value
    nr = acc.count // nv

    def codegen(context, builder, sig, args):
        for r in range(nr):
            for v in range(nv):
                builder.store(builder.extract_value(args[3], r * nv + v), _block_address(context, builder, sig, args, r, v),
                              align=4)
        return context.get_dummy_value()
    return types.none(arr, base, stride, acc, fv), codegen


@njit
def _pad(x, xq, n0, count, pt, pl):
    """xq[m, pt + i, pl + j] = x[n0 + m, i, j] for m < count; zero around it."""
    h, w = x.shape[1], x.shape[2]
    for m in range(count):
        xq[m] = 0
        for i in range(h):
            xq[m, pt + i, pl:pl + w] = x[n0 + m, i]


@njit
def _row_block(xf, wf, m, i, j0, f0, geometry, fv, nacc):
    """The register block of output row i, pixels j0.., channels f0.. of padded image m;
    ``geometry`` = (Hp, Wp, C, Fp, KH, KW, s), wf the filter with Fp channels."""
    hp, wp, c, fp, kh, kw, s = geometry
    acc = _zeros(nacc)
    taps = kw * c
    for p in range(kh):
        xi = ((m * hp + i * s + p) * wp + j0 * s) * c
        wi = p * taps * fp + f0
        for _ in range(taps):  # (q, c) of this kernel row: one run in xq and in w
            acc = _fma_block(acc, wf, wi, xf, xi, s * c, fv)
            wi += fp
            xi += 1
    return acc


@njit
def _convolve(xq, wf, bias, mul, add, affine, relu, pool, y, n0, count, kh, kw, s, fv, nacc):
    """y[n0 + m, i, j, f] (m < count) = Σ_{p, q, c} w[p, q, c, f] · xq[m, i·s + p, j·s + q, c] + bias[f],
    then the epilogue of ``_store_block``; blocks of R = nacc / fv pixels × 16·fv channels
    (wf, bias, mul and add padded with zeros to Fp, a whole number of blocks). ``pool`` (R
    even, y [N, Ho/2, Wo/2, F]): each pair of rows 2 × 2 max-pooled before the bias, which
    commutes with the max (rounding is monotone), as ``blocked.py`` does."""
    numba.literally(fv)
    numba.literally(nacc)
    ho, wo, f_ = y.shape[1], y.shape[2], y.shape[3]
    xf, yf = xq.reshape(-1), y.reshape(-1)
    pixels, fp = nacc // fv, bias.size
    geometry = (xq.shape[1], xq.shape[2], xq.shape[3], fp, kh, kw, s)
    for m in range(count):
        for i in range(ho):
            for f0 in range(0, fp, LANES * fv):
                for j0 in range(0, 2 * wo if pool else wo, pixels):
                    base = (((n0 + m) * ho + i) * wo) * f_ + f0
                    if pool:
                        top = _pool_block(_row_block(xf, wf, m, 2 * i, j0, f0, geometry, fv, nacc), None, fv)
                        out = _pool_block(_row_block(xf, wf, m, 2 * i + 1, j0, f0, geometry, fv, nacc), top, fv)
                        count_ = min(pixels // 2, wo - j0 // 2)
                        _store_block(yf, base + j0 // 2 * f_, f_, f_, out, bias, mul, add, f0, count_, affine, relu, None, fv)
                    else:
                        acc = _row_block(xf, wf, m, i, j0, f0, geometry, fv, nacc)
                        count_ = min(pixels, wo - j0)
                        _store_block(yf, base + j0 * f_, f_, f_, acc, bias, mul, add, f0, count_, affine, relu, None, fv)


# The register blocks (FV vectors × R pixels) the kernels are compiled for. Numba
# specialises a kernel on the literal FV and R·FV only when they arrive as constants from
# jitted code (a literal dispatch from Python re-enters the compiler on every call, ~40 ms),
# hence one small jitted switch per kernel, indexed by the block's place in BLOCKS.
BLOCKS = ((1, 7), (1, 14), (2, 7), (2, 14), (3, 7))


@njit
def _convolve_block(block, xq, wf, bias, mul, add, affine, relu, pool, y, n0, count, kh, kw, s):
    """``_convolve`` with the register block BLOCKS[block]."""
    if block == 0:
        _convolve(xq, wf, bias, mul, add, affine, relu, pool, y, n0, count, kh, kw, s, 1, 7)
    elif block == 1:
        _convolve(xq, wf, bias, mul, add, affine, relu, pool, y, n0, count, kh, kw, s, 1, 14)
    elif block == 2:
        _convolve(xq, wf, bias, mul, add, affine, relu, pool, y, n0, count, kh, kw, s, 2, 14)
    elif block == 3:
        _convolve(xq, wf, bias, mul, add, affine, relu, pool, y, n0, count, kh, kw, s, 2, 28)
    else:
        _convolve(xq, wf, bias, mul, add, affine, relu, pool, y, n0, count, kh, kw, s, 3, 21)


def applies(pass_: str, c: int, f: int, dtype) -> bool:
    """Whether the kernel of ``pass_`` ("fwd", "dx", "dw") takes a layer of C → F channels:
    float32, at least 8 channels in the lanes for the forward (F; a block's last vector
    holds what is left: F = 12 uses three quarters of its 16 lanes, F = 24 of its 32) and
    4 for the input gradient (C: its only other candidate for narrow C with stride 2 is the
    scatter, which it still beat with a quarter of the lanes: ``scratchnet tune --force``,
    conv3-small's conv2, C = 4, 0.95 against 0.98 ms; conv3's, C = 6, 1.39 against 1.45),
    and for the filter gradient F ≥ 8 and a register block (``filter_block``)."""
    if np.dtype(dtype) != np.float32:
        return False
    if pass_ == "dx":
        return c >= 4
    return f >= 8 and (pass_ == "fwd" or filter_block(c, f) is not None)


def register_block(f: int, wo: int) -> tuple[int, int]:
    """(FV, R): 3 vectors × 7 pixels where F is a multiple of 48, else 1 vector (F ≤ 16) or
    2 (F padded to a multiple of 32) × 14 pixels where the row is a multiple of 14, else × 7
    (so the recipes' rows of 7, 14 and 28 pixels split into whole blocks)."""
    if f % 48 == 0:
        return 3, 7
    return (1 if f <= LANES else 2), (14 if wo % 14 == 0 else 7)


TARGET_BYTES = 1 << 19  # padded images of one chunk: ~512 KB, L2-resident


def padded_shape(h, w, c, kh, kw, stride, top_left, out_hw, pixels) -> tuple[int, int, int]:
    """(Hp, Wp, C) of a padded image: the image at ``top_left`` = (pt, pl) and every tap of
    every computed pixel inside it (the last block of a row computes up to R - 1 pixels
    past Wo, which are not stored)."""
    ho, wo = out_hw
    return (max((ho - 1) * stride + kh, top_left[0] + h),
            max((-(-wo // pixels) * pixels - 1) * stride + kw, top_left[1] + w), c)


def poolable(f: int, out_hw) -> bool:
    """Whether the forward can take a 2 × 2 max-pool of stride 2 (``fused.pool_fusable``'s
    even output): its pixel blocks must be of even length."""
    return out_hw[0] % 2 == 0 and register_block(f, out_hw[1])[1] % 2 == 0


def images_per_chunk(pass_: str, x_shape, w_shape, stride, top_left, out_hw) -> int:
    """Images per chunk of ``pass_``: the padded copies it makes (x, or dy for "dx"), and dy
    for "dw", ~TARGET_BYTES, unless a tuned choice set the chunk. Shared by the kernels
    and ``tuning`` (their default chunk)."""
    _, h, w, c = x_shape
    kh, kw, _, f = w_shape
    if pass_ == "dx":
        floats = math.prod(input_grad_geometry(x_shape, kh, kw, stride, top_left)[2]) * f
    else:
        pixels = register_block(f, out_hw[1])[1] if pass_ == "fwd" else 1
        floats = math.prod(padded_shape(h, w, c, kh, kw, stride, top_left, out_hw, pixels))
        floats += out_hw[0] * out_hw[1] * f if pass_ == "dw" else 0
    return chosen_chunk() or max(1, TARGET_BYTES // (4 * floats))


def lanes_forward(x, w, b, stride, pads, out_hw, *, affine=None, relu=False, pool=False):
    """y [N, Ho, Wo, F] = conv(x, w) + b, float32 (``applies``), by register blocks (see the
    module docstring); each worker takes whole images, a chunk at a time. Inference can
    fuse the layers after it into the store of y: ``affine`` = (mul, add) [F] a batch
    normalisation with fixed statistics, y·mul + add; ``relu`` max(y, 0); ``pool`` (not with
    ``affine``; where ``poolable``) a 2 × 2 max-pool of stride 2, y then [N, Ho/2, Wo/2, F]."""
    n, h, wd, c = x.shape
    kh, kw, _, f = w.shape
    ho, wo = out_hw
    fv, pixels = register_block(f, wo)
    block = BLOCKS.index((fv, pixels))
    assert not (pool and (affine is not None or not poolable(f, out_hw))), "pool: even rows of 14-pixel blocks, no affine"
    top_left = pads[0][0], pads[1][0]
    padded = padded_shape(h, wd, c, kh, kw, stride, top_left, out_hw, pixels)
    fp = -(-f // (LANES * fv)) * LANES * fv
    if fp == f:  # a whole number of blocks: no copy (10 µs for conv-bn conv3's filter)
        wf = np.ascontiguousarray(w, np.float32)
    else:
        wf = np.zeros((kh, kw, c, fp), np.float32)
        wf[..., :f] = w
    bias, mul, add = epilogue_vectors(f, fp, b, affine)
    y = np.empty((n, ho // 2, wo // 2, f) if pool else (n, ho, wo, f), np.float32)
    per = images_per_chunk("fwd", x.shape, w.shape, stride, top_left, out_hw)

    def work(a, e):
        xq = scratch("lanes_padded", (per, *padded), np.float32)
        for s0 in range(a, e, per):
            m = min(per, e - s0)
            _pad(x, xq, s0, m, *top_left)
            _convolve_block(block, xq, wf.reshape(-1), bias, mul, add, affine is not None, relu, pool, y, s0, m, kh, kw,
                            stride)

    parallel(work, n)
    return y


# --- the input gradient: C in the lanes, phase by phase in one pass -------------------------
#
#     dx[n, h, w, c0 + 16v : +16] = Σ_{p, q, f} dy[n, (h + pt - p)/s, (w + pl - q)/s, f] · w[p, q, c0 + 16v : +16, f]
#
# over the taps that divide: p ≡ h + pt and q ≡ w + pl (mod s). The dx pixels of one row
# whose columns share a phase b (w = b, b + s, …) use the same taps q and read consecutive
# dy pixels, so R of them are one register block, fed per (p, q, f) by FV vectors of the
# transposed filter wt[p, q, f, c0 : …] and R broadcasts of dy: the forward's block with F
# as the reduction and the dx pixel stride s·C. dy is padded once per chunk (no bounds
# checks, no zero rows multiplied: only the taps that divide are visited).

@njit
def _input_grad(dq, wt, dx, gate, n0, count, kh, kw, s, pt, pl, tq, lq, fv, nacc):
    """dx[n0 + m] (m < count) by the sum above, 0 where not gate > 0 if gate (flat, dx's
    shape) is not None; dq: dy of the chunk with tq rows and lq columns of zeros before
    it; wt [KH, KW, F, Cp] flat, C padded with zeros to whole blocks."""
    numba.literally(fv)
    numba.literally(nacc)
    h_, w_, c_ = dx.shape[1], dx.shape[2], dx.shape[3]
    hq, wq, f_ = dq.shape[1], dq.shape[2], dq.shape[3]
    cp = wt.size // (kh * kw * f_)
    df, xf = dq.reshape(-1), dx.reshape(-1)
    pixels = nacc // fv
    zeros, ones = np.zeros(cp, np.float32), np.ones(cp, np.float32)
    for m in range(count):
        for h in range(h_):
            for b in range(s):
                width = (w_ - b + s - 1) // s  # dx columns b, b + s, … of this row
                for c0 in range(0, cp, LANES * fv):
                    for v0 in range(0, width, pixels):
                        acc = _zeros(nacc)
                        for p in range((h + pt) % s, kh, s):
                            for q in range((b + pl) % s, kw, s):
                                di = ((m * hq + (h + pt - p) // s + tq) * wq + (b + pl - q) // s + v0 + lq) * f_
                                wi = (p * kw + q) * f_ * cp + c0
                                for _ in range(f_):
                                    acc = _fma_block(acc, wt, wi, df, di, f_, fv)
                                    wi += cp
                                    di += 1
                        _store_block(xf, (((n0 + m) * h_ + h) * w_ + b + s * v0) * c_ + c0, s * c_, c_, acc, zeros, ones,
                                     zeros, c0, min(pixels, width - v0), False, False, gate, fv)


@njit
def _input_grad_block(block, dq, wt, dx, gate, n0, count, kh, kw, s, pt, pl, tq, lq):
    """``_input_grad`` with the register block BLOCKS[block]."""
    if block == 0:
        _input_grad(dq, wt, dx, gate, n0, count, kh, kw, s, pt, pl, tq, lq, 1, 7)
    elif block == 1:
        _input_grad(dq, wt, dx, gate, n0, count, kh, kw, s, pt, pl, tq, lq, 1, 14)
    elif block == 2:
        _input_grad(dq, wt, dx, gate, n0, count, kh, kw, s, pt, pl, tq, lq, 2, 14)
    elif block == 3:
        _input_grad(dq, wt, dx, gate, n0, count, kh, kw, s, pt, pl, tq, lq, 2, 28)
    else:
        _input_grad(dq, wt, dx, gate, n0, count, kh, kw, s, pt, pl, tq, lq, 3, 21)


def input_grad_geometry(x_shape, kh, kw, stride, top_left):
    """(FV, R), the top and left zero rows/columns of dy, and its padded (rows, columns),
    for the convolution's padding ``top_left`` = (pt, pl)."""
    _, h, w, c = x_shape
    pt, pl = top_left
    fv, pixels = register_block(c, -(-w // stride))
    tq, lq = max(0, -(-(kh - 1 - pt) // stride)), max(0, -(-(kw - 1 - pl) // stride))
    return (fv, pixels), (tq, lq), (tq + -(-(h + pt) // stride) + 1, lq + -(-(w + pl) // stride) + pixels + 1)


def lanes_input_grad(dy, w, x_shape, stride, pads, gate=None):
    """dx [N, H, W, C] of the convolution, float32 (``applies``), by register blocks
    (see above); each worker takes whole images, a chunk at a time. ``gate`` (x's shape,
    C-contiguous): the cache of a ReLU before the layer, whose backward is then applied
    as dx is stored, dx · [gate > 0]."""
    kh, kw, c, f = w.shape
    top_left = pads[0][0], pads[1][0]
    (fv, pixels), (tq, lq), (hq, wq) = input_grad_geometry(x_shape, kh, kw, stride, top_left)
    cp = -(-c // (LANES * fv)) * LANES * fv
    wt = np.zeros((kh, kw, f, cp), np.float32)
    wt[..., :c] = w.transpose(0, 1, 3, 2)
    dx = np.empty(x_shape, np.float32)
    per = images_per_chunk("dx", x_shape, w.shape, stride, top_left, dy.shape[1:3])
    block = BLOCKS.index((fv, pixels))
    gf = None if gate is None else gate.reshape(-1)

    def work(a, e):
        dq = scratch("lanes_padded", (per, hq, wq, f), np.float32)
        for s0 in range(a, e, per):
            m = min(per, e - s0)
            _pad(dy, dq, s0, m, tq, lq)
            _input_grad_block(block, dq, wt.reshape(-1), dx, gf, s0, m, kh, kw, stride, *top_left, tq, lq)

    parallel(work, x_shape[0])
    return dx


# --- the filter gradient: RC input channels × FV output-channel vectors, reduced over pixels ----
#
#     dw[p, q, c0 + r, f0 + 16v : +16] += Σ_{n, i, j} xpad[n, i·s + p, j·s + q, c0 + r] · dy[n, i, j, f0 + 16v : +16]
#
# The same block turned into a reduction: per output pixel, FV vector loads of dy (its F
# channels are contiguous in NHWC), RC broadcasts of x (its C channels too) and RC·FV
# FMAs; the block stays in registers over every pixel of a chunk of images and goes to
# memory once per chunk and tap. A GEMM over K = pixels, with neither factor copied.

@njit
def _filter_grad(xq, dy, part, n0, count, kh, kw, s, fv, nacc):
    """part [(p·KW + q)·C + c, f] += the sum above over images n0..n0 + count (xq their
    padded copies), in blocks of RC = nacc / fv channels × 16·fv output channels."""
    numba.literally(fv)
    numba.literally(nacc)
    ho, wo, f_ = dy.shape[1], dy.shape[2], dy.shape[3]
    hp, wp, c = xq.shape[1], xq.shape[2], xq.shape[3]
    xf, df = xq.reshape(-1), dy.reshape(-1)
    for p in range(kh):
        for q in range(kw):
            for c0 in range(0, c, nacc // fv):
                for f0 in range(0, f_, LANES * fv):
                    base = ((p * kw + q) * c + c0) * f_ + f0
                    acc = _load_block(part, base, f_, nacc, fv)
                    for m in range(count):
                        for i in range(ho):
                            xi = ((m * hp + i * s + p) * wp + q) * c + c0
                            di = (((n0 + m) * ho + i) * wo) * f_ + f0
                            for _ in range(wo):
                                acc = _fma_block(acc, df, di, xf, xi, 1, fv)
                                xi += s * c
                                di += f_
                    _save_block(part, base, f_, acc, fv)


FILTER_BLOCKS = ((3, 8), (2, 12), (2, 8), (1, 12), (1, 8), (1, 6), (1, 4))  # (FV, RC)


@njit
def _filter_grad_block(block, xq, dy, part, n0, count, kh, kw, s):
    """``_filter_grad`` with the register block FILTER_BLOCKS[block]."""
    if block == 0:
        _filter_grad(xq, dy, part, n0, count, kh, kw, s, 3, 24)
    elif block == 1:
        _filter_grad(xq, dy, part, n0, count, kh, kw, s, 2, 24)
    elif block == 2:
        _filter_grad(xq, dy, part, n0, count, kh, kw, s, 2, 16)
    elif block == 3:
        _filter_grad(xq, dy, part, n0, count, kh, kw, s, 1, 12)
    elif block == 4:
        _filter_grad(xq, dy, part, n0, count, kh, kw, s, 1, 8)
    elif block == 5:
        _filter_grad(xq, dy, part, n0, count, kh, kw, s, 1, 6)
    else:
        _filter_grad(xq, dy, part, n0, count, kh, kw, s, 1, 4)


def filter_block(c: int, f: int) -> tuple[int, int] | None:
    """(FV, RC) of the filter gradient's register block: FV = 3 where F is a multiple of 48,
    1 for F ≤ 16, else 2; RC the largest of 12, 8, 6, 4 that divides C and fits FV (at most
    24 accumulators). None where C has no such divisor (fewer than 4 independent sums per
    vector would wait on the FMA latency)."""
    fv = 3 if f % 48 == 0 else 1 if f <= LANES else 2
    return next(((fv, rc) for rc in (12, 8, 6, 4) if (fv, rc) in FILTER_BLOCKS and c % rc == 0), None)


def lanes_filter_grad(x, dy, kh, kw, stride, pads, out_hw):
    """dw [KH, KW, C, F] of the convolution, float32 (``applies``), by register
    blocks (see above); the images are summed in parts fixed by the shape (``parallel_sum``).
    Where F is not a whole number of blocks, each chunk's dy is copied with zero channels up
    to Fp (the vectors read whole pixels) and the padded channels of dw are dropped."""
    n, h, wd, c = x.shape
    f = dy.shape[3]
    top_left = pads[0][0], pads[1][0]
    padded = padded_shape(h, wd, c, kh, kw, stride, top_left, out_hw, 1)
    fv, rc = filter_block(c, f)
    block = FILTER_BLOCKS.index((fv, rc))
    fp = -(-f // (LANES * fv)) * LANES * fv
    dy = np.ascontiguousarray(dy, np.float32)
    per = images_per_chunk("dw", x.shape, (kh, kw, c, f), stride, top_left, out_hw)

    def work(a, e):
        xq = scratch("lanes_padded", (per, *padded), np.float32)
        dyq = np.zeros((per, *out_hw, fp), np.float32) if fp != f else None
        part = np.zeros(kh * kw * c * fp, np.float32)
        for s0 in range(a, e, per):
            m = min(per, e - s0)
            _pad(x, xq, s0, m, *top_left)
            if dyq is None:
                _filter_grad_block(block, xq, dy, part, s0, m, kh, kw, stride)
            else:
                dyq[:m, ..., :f] = dy[s0:s0 + m]
                _filter_grad_block(block, xq, dyq, part, 0, m, kh, kw, stride)
        return part

    return np.ascontiguousarray(parallel_sum(work, n, per).reshape(kh, kw, c, fp)[..., :f])
