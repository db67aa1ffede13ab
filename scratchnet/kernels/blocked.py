"""A register-blocked direct convolution (float32; forward, filter and input gradient): 4
output channels × 64 output pixels held in sixteen 16-lane vector registers for the whole
reduction over the taps.

Why explicit vectors. Written as plain Numba loops, a direct convolution keeps its
accumulators in memory: LLVM vectorises the pixel loop, but loads and stores the
accumulator row once per tap and channel, one store per multiply-add (docs/performance.md,
"tried and dropped"). Here a vector is a Numba type of its own (``Vec16``, whose LLVM
model is ``<16 x float>``), so ``acc = vfma(x, w, acc)`` is an SSA value that the register
allocator keeps in a zmm register; ``vload``/``vstore`` are unaligned 16-float loads and
stores and ``vfma`` is ``llvm.fma`` with the scalar broadcast (one rounding, as BLAS's
kernels do).

Layout (the wide path's, ``conv.py``): the zero-padded input of each image split into
s·s phase planes, channel-planar, all back to back in one flat row per image. The output
is computed on the wide grid Ho × Wh (Wh = Wo + (KW-1)//s), where tap (p, q, c) of every
output pixel t = i·Wh + j reads the flat row at ``off[p, q, c] + t``: one contiguous run.
So for a block of 64 pixels and 4 channels, each tap is 4 vector loads, 4 broadcasts and
16 FMAs:

    acc[f, t:t+64] += w[p, q, c, f] · planes[n, off[p, q, c] + t : … + 64]

The 4-channel blocks are the filter's F padded to a multiple of 4 with zero columns; the
wide grid's garbage columns and the pixels past Ho·Wh are computed and dropped.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, models, register_model

from ._runtime import chosen_chunk, njit, parallel, parallel_sum, scratch

LANES = 16
PIXELS = 4 * LANES  # per register block
# The tuning candidates, by register block: 4 channels × 64 pixels (sixteen <16 x float>
# accumulators: AVX-512's 32 registers) or × 16 pixels (four: AVX2's 16 registers of 8 lanes).
VARIANTS = ("blocked", "blocked16")
_VT = ir.VectorType(ir.FloatType(), LANES)


class Vec16(types.Type):
    """16 float32 lanes, held in one vector register."""

    def __init__(self):
        super().__init__(name="Vec16f32")


vec16 = Vec16()


@register_model(Vec16)
class _Vec16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VT)


def _address(context, builder, aryty, ary, idx):
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.bitcast(builder.gep(data, [idx]), _VT.as_pointer())


@intrinsic
def vzero(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_VT, None)
    return vec16(), codegen


@intrinsic
def vload(typingctx, arr, idx):
    """arr[idx : idx + 16] of a contiguous 1-D float32 array (no bounds check)."""
    def codegen(context, builder, sig, args):
        return builder.load(_address(context, builder, sig.args[0], args[0], args[1]), align=4)
    return vec16(arr, idx), codegen


@intrinsic
def vstore(typingctx, arr, idx, v):
    """arr[idx : idx + 16] = v (no bounds check)."""
    def codegen(context, builder, sig, args):
        builder.store(args[2], _address(context, builder, sig.args[0], args[0], args[1]), align=4)
        return context.get_dummy_value()
    return types.none(arr, idx, vec16), codegen


def masked_store(builder, value, address, count):
    """Emit ``address[:count] = value[:count]`` for an i64 ``count`` in 0..16
    (``llvm.masked.store``: the other lanes are not written)."""
    i32 = ir.IntType(32)
    store = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
        ir.VoidType(), [_VT, _VT.as_pointer(), i32, ir.VectorType(ir.IntType(1), LANES)]), "llvm.masked.store.v16f32.p0")
    builder.call(store, [value, address, ir.Constant(i32, 4), _first_lanes(builder, count)])


def _first_lanes(builder, count):
    """The <16 x i1> mask of lanes below the i64 ``count``."""
    i32 = ir.IntType(32)
    lanes = ir.VectorType(i32, LANES)
    undef = ir.Constant(lanes, ir.Undefined)
    n = builder.shuffle_vector(builder.insert_element(undef, builder.trunc(count, i32), ir.Constant(i32, 0)), undef,
                               ir.Constant(lanes, [0] * LANES))
    return builder.icmp_unsigned("<", ir.Constant(lanes, list(range(LANES))), n)


def masked_load(builder, address, count):
    """Emit ``address[:count]`` for an i64 ``count`` in 0..16, the other lanes 0
    (``llvm.masked.load``: nothing past them is read)."""
    i32 = ir.IntType(32)
    load = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
        _VT, [_VT.as_pointer(), i32, ir.VectorType(ir.IntType(1), LANES), _VT]), "llvm.masked.load.v16f32.p0")
    return builder.call(load, [address, ir.Constant(i32, 4), _first_lanes(builder, count), ir.Constant(_VT, None)])


@intrinsic
def vstore_first(typingctx, arr, idx, v, count):
    """arr[idx : idx + count] = v[:count], 0 < count <= 16 (``masked_store``; no bounds check)."""
    def codegen(context, builder, sig, args):
        masked_store(builder, args[2], _address(context, builder, sig.args[0], args[0], args[1]),
                     context.cast(builder, args[3], sig.args[3], types.int64))
        return context.get_dummy_value()
    return types.none(arr, idx, vec16, count), codegen


@intrinsic
def vfma(typingctx, a, s, c):
    """a · s + c with s a float32 broadcast to every lane, rounded once (``llvm.fma``)."""
    def codegen(context, builder, sig, args):
        va, scalar, vc = args
        undef = ir.Constant(_VT, ir.Undefined)
        vs = builder.insert_element(undef, scalar, ir.Constant(ir.IntType(32), 0))
        vs = builder.shuffle_vector(vs, undef, ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VT, [_VT] * 3), "llvm.fma.v16f32")
        return builder.call(fma, [va, vs, vc])
    return vec16(vec16, types.float32, vec16), codegen


@intrinsic
def vfmav(typingctx, a, b, c):
    """a · b + c lane by lane, rounded once (``llvm.fma``)."""
    def codegen(context, builder, sig, args):
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VT, [_VT] * 3), "llvm.fma.v16f32")
        return builder.call(fma, list(args))
    return vec16(vec16, vec16, vec16), codegen


@intrinsic
def vadd(typingctx, a, b):
    """a + b lane by lane."""
    def codegen(context, builder, sig, args):
        return builder.fadd(*args)
    return vec16(vec16, vec16), codegen


@intrinsic
def vmul(typingctx, a, b):
    """a · b lane by lane."""
    def codegen(context, builder, sig, args):
        return builder.fmul(*args)
    return vec16(vec16, vec16), codegen


@intrinsic
def vrelu(typingctx, v):
    """0 where v <= 0, else v (-0.0 -> +0.0, NaN stays NaN, like ``activations._relu``)."""
    def codegen(context, builder, sig, args):
        zero = ir.Constant(_VT, None)
        return builder.select(builder.fcmp_ordered("<=", args[0], zero), zero, args[0])
    return vec16(vec16), codegen


@intrinsic
def vsum(typingctx, v):
    """The sum of the 16 lanes, as a tree of pairwise adds in a fixed order."""
    def codegen(context, builder, sig, args):
        lanes = [builder.extract_element(args[0], ir.Constant(ir.IntType(32), i)) for i in range(LANES)]
        while len(lanes) > 1:
            lanes = [builder.fadd(lanes[i], lanes[i + 1]) for i in range(0, len(lanes), 2)]
        return lanes[0]
    return types.float32(vec16), codegen


@njit
def _blocks(planes, offsets, w4, out, count, length):
    """out[m, f, t] = Σ_k w4[f // 4, k, f % 4] · planes[m, offsets[k] + t] for images
    m < count and t < length (a multiple of 64), 4 channels × 64 pixels at a time."""
    taps = offsets.size
    for m in range(count):
        src = planes[m]
        for fb in range(w4.shape[0]):
            wb = w4[fb]
            for t0 in range(0, length, PIXELS):
                a00 = vzero(); a01 = vzero(); a02 = vzero(); a03 = vzero()  # noqa: E702
                a10 = vzero(); a11 = vzero(); a12 = vzero(); a13 = vzero()  # noqa: E702
                a20 = vzero(); a21 = vzero(); a22 = vzero(); a23 = vzero()  # noqa: E702
                a30 = vzero(); a31 = vzero(); a32 = vzero(); a33 = vzero()  # noqa: E702
                for k in range(taps):
                    o = offsets[k] + t0
                    x0 = vload(src, o); x1 = vload(src, o + 16); x2 = vload(src, o + 32); x3 = vload(src, o + 48)  # noqa: E702
                    wk = wb[k]
                    w0 = wk[0]; w1 = wk[1]; w2 = wk[2]; w3 = wk[3]  # noqa: E702
                    a00 = vfma(x0, w0, a00); a01 = vfma(x1, w0, a01); a02 = vfma(x2, w0, a02); a03 = vfma(x3, w0, a03)  # noqa: E702
                    a10 = vfma(x0, w1, a10); a11 = vfma(x1, w1, a11); a12 = vfma(x2, w1, a12); a13 = vfma(x3, w1, a13)  # noqa: E702
                    a20 = vfma(x0, w2, a20); a21 = vfma(x1, w2, a21); a22 = vfma(x2, w2, a22); a23 = vfma(x3, w2, a23)  # noqa: E702
                    a30 = vfma(x0, w3, a30); a31 = vfma(x1, w3, a31); a32 = vfma(x2, w3, a32); a33 = vfma(x3, w3, a33)  # noqa: E702
                r0, r1, r2, r3 = out[m, 4 * fb], out[m, 4 * fb + 1], out[m, 4 * fb + 2], out[m, 4 * fb + 3]
                vstore(r0, t0, a00); vstore(r0, t0 + 16, a01); vstore(r0, t0 + 32, a02); vstore(r0, t0 + 48, a03)  # noqa: E702
                vstore(r1, t0, a10); vstore(r1, t0 + 16, a11); vstore(r1, t0 + 32, a12); vstore(r1, t0 + 48, a13)  # noqa: E702
                vstore(r2, t0, a20); vstore(r2, t0 + 16, a21); vstore(r2, t0 + 32, a22); vstore(r2, t0 + 48, a23)  # noqa: E702
                vstore(r3, t0, a30); vstore(r3, t0 + 16, a31); vstore(r3, t0 + 32, a32); vstore(r3, t0 + 48, a33)  # noqa: E702


@njit
def _blocks16(planes, offsets, w4, out, count, length):
    """``_blocks`` with a register block of 4 channels × 16 pixels: 4 accumulators, for CPUs
    with 16 vector registers of 8 lanes (AVX2), where the 4 × 64 block's sixteen <16 x float>
    accumulators take 32 registers and spill to the stack at every multiply-add."""
    taps = offsets.size
    for m in range(count):
        src = planes[m]
        for fb in range(w4.shape[0]):
            wb = w4[fb]
            r0, r1, r2, r3 = out[m, 4 * fb], out[m, 4 * fb + 1], out[m, 4 * fb + 2], out[m, 4 * fb + 3]
            for t0 in range(0, length, LANES):
                a0 = vzero(); a1 = vzero(); a2 = vzero(); a3 = vzero()  # noqa: E702
                for k in range(taps):
                    x = vload(src, offsets[k] + t0)
                    wk = wb[k]
                    a0 = vfma(x, wk[0], a0); a1 = vfma(x, wk[1], a1); a2 = vfma(x, wk[2], a2); a3 = vfma(x, wk[3], a3)  # noqa: E702
                vstore(r0, t0, a0); vstore(r1, t0, a1); vstore(r2, t0, a2); vstore(r3, t0, a3)  # noqa: E702


_BLOCKS = dict(zip(VARIANTS, (_blocks, _blocks16)))  # the micro-kernel of each variant


@intrinsic
def vgated(typingctx, v, gate, idx, count):
    """v where gate[idx : idx + count] > 0, else 0 (the lanes from count on: 0; a masked
    load, so nothing past them is read; NaN in the gate gives 0, as ``_relu_grad``)."""
    def codegen(context, builder, sig, args):
        g = masked_load(builder, _address(context, builder, sig.args[1], args[1], args[2]),
                        context.cast(builder, args[3], sig.args[3], types.int64))
        return builder.select(builder.fcmp_ordered(">", g, ir.Constant(_VT, None)), args[0], ir.Constant(_VT, None))
    return vec16(vec16, gate, idx, count), codegen


@intrinsic
def vtranspose16(typingctx, src, start, stride, dst):
    """dst[16·p + r] = src[start + r·stride + p] for r, p < 16: a 16 × 16 tile of a flat
    float32 array transposed in registers into the 256 floats of ``dst``. Four rounds of
    two-source shuffles: round d (8, 4, 2, 1) swaps, in every 2d × 2d block, the two
    off-diagonal d × d blocks, which leaves the whole tile transposed."""
    def codegen(context, builder, sig, args):
        a, a0, step, b = args
        i64 = ir.IntType(64)
        a0, step = (context.cast(builder, v, t, types.int64) for v, t in zip((a0, step), sig.args[1:3]))
        rows = [builder.load(_address(context, builder, sig.args[0], a,
                                      builder.add(a0, builder.mul(step, ir.Constant(i64, r)))), align=4)
                for r in range(LANES)]
        d = LANES // 2
        while d:
            low = [l if l & d == 0 else LANES + l - d for l in range(LANES)]
            high = [l + d if l & d == 0 else LANES + l for l in range(LANES)]
            for r in range(LANES):
                if r & d == 0:
                    x, y = rows[r], rows[r + d]
                    rows[r] = builder.shuffle_vector(x, y, ir.Constant(ir.VectorType(ir.IntType(32), LANES), low))
                    rows[r + d] = builder.shuffle_vector(x, y, ir.Constant(ir.VectorType(ir.IntType(32), LANES), high))
            d //= 2
        for r in range(LANES):
            builder.store(rows[r], _address(context, builder, sig.args[3], b, ir.Constant(i64, LANES * r)), align=4)
        return context.get_dummy_value()
    return types.none(src, start, stride, dst), codegen


@njit
def _to_nhwc(src, rows, length, y, n0, count, wh, vectors, affine, relu):
    """y[n0 + m, i, j, f] = out[m, f, i·Wh + j] + bias[f] for j < Wo (drops the garbage),
    out = src viewed as [count, rows, length]; then, if ``affine`` (a batch normalisation
    after the layer), y·mul[f] + add[f]; then max(·, 0) if ``relu``. ``vectors`` = (bias,
    mul, add), each padded to whole groups of 16 channels. Each group of 16 channels goes 16
    pixels at a time through a register transpose (``vtranspose16``); the last group, if F
    is not a multiple of 16, reads whole 16-row tiles (src has rows to spare after the last
    image) and stores only its F mod 16 channels. Where F < 16 (one group) each pixel's
    store is a whole vector that runs into the next pixels, which are stored after it, in
    increasing address order; only the stores that would run past the image are masked
    (``vstore_first``). Masked stores of F = 6 floats at every pixel took 0.43 ms for conv3's
    conv1 (100 images, one thread), whole ones 0.26."""
    ho, wo, f_ = y.shape[1], y.shape[2], y.shape[3]
    dst = y.reshape(-1)
    tile = np.empty(LANES * LANES, np.float32)
    pixels = ho * wh
    for m in range(count):
        for f0 in range(0, f_, LANES):
            nf = min(LANES, f_ - f0)
            b, p_, q_ = vload(vectors[0], f0), vload(vectors[1], f0), vload(vectors[2], f0)
            i = j = 0  # of the tile's first pixel
            for t0 in range(0, pixels, LANES):
                vtranspose16(src, (m * rows + f0) * length + t0, length, tile)
                for p in range(min(LANES, pixels - t0)):
                    if j < wo:
                        v = vadd(vload(tile, LANES * p), b)
                        if affine:
                            v = vadd(vmul(v, p_), q_)
                        v = vrelu(v) if relu else v
                        at = (((n0 + m) * ho + i) * wo + j) * f_ + f0
                        if nf == LANES or (f_ < LANES and at + LANES <= ((n0 + m + 1) * ho * wo) * f_):
                            vstore(dst, at, v)
                        else:
                            vstore_first(dst, at, v, nf)
                    j += 1
                    if j == wh:
                        i, j = i + 1, 0


def epilogue_vectors(f: int, width: int, b, affine) -> np.ndarray:
    """[3, width] float32: the bias (0 without one), mul (1) and add (0) of a forward's store,
    ``affine`` = (mul, add) [F] or None, each zero-padded from F to ``width`` channels."""
    vectors = np.zeros((3, width), np.float32)
    vectors[1] = 1
    if b is not None:
        vectors[0, :f] = b
    if affine is not None:
        vectors[1:, :f] = affine
    return vectors


@njit
def _pool2(out, pooled, count, f_, wh, ho2, wo2):
    """pooled[m, f, i·Wo2 + j] (f < F) = the max of out[m, f, (2i + a)·Wh + 2j + b] over the 2 × 2
    window, in row-major order with a strict >, as ``pool._pool_forward`` scans it."""
    for m in range(count):
        for f in range(f_):
            src, dst = out[m, f], pooled[m, f]
            for i in range(ho2):
                r0, r1 = 2 * i * wh, (2 * i + 1) * wh
                for j in range(wo2):
                    v = src[r0 + 2 * j]
                    for u in (src[r0 + 2 * j + 1], src[r1 + 2 * j], src[r1 + 2 * j + 1]):
                        if u > v:
                            v = u
                    dst[i * wo2 + j] = v


TARGET_BYTES = 1 << 19  # planes + outputs of one chunk of images: ~512 KB, L2-resident


class Geometry(NamedTuple):
    hh1: int        # rows of a phase plane (one more than the taps read: garbage reads stay inside)
    wh: int         # the wide grid's row length
    per_image: int  # floats of one image's planes
    length: int     # output pixels computed per image: Ho·Wh rounded up to a whole block
    f4: int         # 4-channel blocks (F rounded up)

    @property
    def row(self) -> int:
        """Floats of one image's row of planes: reads run up to ``length`` past its planes."""
        return self.per_image + self.length


def geometry(c, kh, kw, f, stride, ho, wo) -> Geometry:
    hh1, wh = ho + (kh - 1) // stride + 1, wo + (kw - 1) // stride
    return Geometry(hh1, wh, stride * stride * c * hh1 * wh, -(-ho * wh // PIXELS) * PIXELS, -(-f // 4))


def images_per_chunk(g: Geometry) -> int:
    """Images per chunk: the kernel's own rule (planes and outputs ~TARGET_BYTES), unless a
    tuned choice set the chunk."""
    return chosen_chunk() or max(1, TARGET_BYTES // (4 * (g.row + 4 * g.f4 * g.length)))


def _tap_offsets(c, kh, kw, s, hh1, wh):
    """off[(p·KW + q)·C + c]: where tap (p, q, c) of output pixel 0 sits in an image's planes."""
    plane = hh1 * wh
    return np.array([(((p % s) * s + q % s) * c + ch) * plane + (p // s) * wh + q // s
                     for p in range(kh) for q in range(kw) for ch in range(c)], np.int64)


def blocked_forward(x, w, b, stride, pads, out_hw, *, affine=None, relu=False, pool=False, variant="blocked"):
    """y [N, Ho, Wo, F] = conv(x, w) + b, float32, by register blocks (see the module
    docstring); each worker takes whole images, a chunk of them at a time. Inference can
    fuse the layers after it into the write of y: ``affine`` = (mul, add) [F] a batch
    normalisation with fixed statistics, y·mul + add; ``relu`` max(y, 0); ``pool`` (not with
    ``affine``) a 2 × 2 max-pool of stride 2 (even Ho, Wo: ``fused.pool_fusable``; y is
    then [N, Ho/2, Wo/2, F]), taken before the bias and the ReLU, which both commute with
    the max (rounding is monotone). ``variant``: the register block, one of ``VARIANTS``."""
    from .conv import _phase_planes

    n, _, _, c = x.shape
    kh, kw, _, f = w.shape
    ho, wo = out_hw
    s, pt, pl = stride, pads[0][0], pads[1][0]
    g = geometry(c, kh, kw, f, s, ho, wo)
    hh1, wh, per_image, length, f4 = g
    offsets = _tap_offsets(c, kh, kw, s, hh1, wh)
    w2 = np.zeros((kh * kw * c, 4 * f4), np.float32)
    w2[:, :f] = w.reshape(-1, f)
    w4 = np.ascontiguousarray(w2.reshape(-1, f4, 4).transpose(1, 0, 2))  # [F/4, K, 4]
    assert not (pool and affine is not None), "a max-pool does not commute with a negative scale"
    vectors = epilogue_vectors(f, -(-f // LANES) * LANES, b, affine)
    ho2, wo2 = ho // 2, wo // 2
    y = np.empty((n, ho2, wo2, f) if pool else (n, ho, wo, f), np.float32)
    per = images_per_chunk(g)
    pooled_length = -(-ho2 * wo2 // LANES) * LANES
    blocks = _BLOCKS[variant]

    def work(a, e):
        planes = scratch("blocked_planes", (per, g.row), np.float32)
        # + LANES rows: the transposes into y read whole 16-channel tiles
        out_rows = scratch("blocked_out", (per * 4 * f4 + LANES, length), np.float32)
        out = out_rows[:per * 4 * f4].reshape(per, 4 * f4, length)
        pooled_rows = scratch("blocked_pooled", (per * f + LANES, pooled_length), np.float32) if pool else None
        for s0 in range(a, e, per):
            m = min(per, e - s0)
            _phase_planes(x[s0:s0 + m], planes[:m, :per_image].reshape(m, s, s, c, hh1, wh), pt, pl)
            blocks(planes, offsets, w4, out, m, length)
            if pool:
                _pool2(out, pooled_rows[:per * f].reshape(per, f, pooled_length), m, f, wh, ho2, wo2)
                _to_nhwc(pooled_rows.reshape(-1), f, pooled_length, y, s0, m, wo2, vectors, affine is not None, relu)
            else:
                _to_nhwc(out_rows.reshape(-1), 4 * f4, length, y, s0, m, wh, vectors, affine is not None, relu)

    parallel(work, n)
    return y


# --- the filter gradient: 4 taps × 4 output channels in registers, reduced over pixels ------
#
#     dw[k, f] = Σ_{n, t} planes[n, off[k] + t] · dY_wide[n, f, t]
#
# dY_wide is dY of each image in the wide grid, channel-planar ([F, length], zeros in the
# garbage columns and past Ho·Wh), so both factors of every product are contiguous runs:
# per 16 pixels, 4 taps and 4 channels cost 8 vector loads and 16 FMAs, and the 16
# accumulators stay in registers over all the pixels of all the images of a chunk.

@njit
def _dy_wide(dy, dyw, n0, count, wh, length):
    """dyw[m, f, i·Wh + j] = dy[n0 + m, i, j, f] for j < Wo; 0 elsewhere (garbage, tail, padded F)."""
    ho, wo, f_ = dy.shape[1], dy.shape[2], dy.shape[3]
    zero = np.float32(0)
    for m in range(count):
        for f in range(dyw.shape[1]):
            dst = dyw[m, f]
            for t in range(length):
                dst[t] = zero
        for i in range(ho):
            src = dy[n0 + m, i]
            for j in range(wo):
                for f in range(f_):
                    dyw[m, f, i * wh + j] = src[j, f]


@njit
def _filter_blocks(planes, offsets4, dyw, acc, count, length):
    """acc[kb, fb, a, b] += Σ_{m < count, t < length} planes[m, offsets4[kb, a] + t] · dyw[m, 4·fb + b, t]."""
    for kb in range(offsets4.shape[0]):
        o0, o1, o2, o3 = offsets4[kb, 0], offsets4[kb, 1], offsets4[kb, 2], offsets4[kb, 3]
        for fb in range(acc.shape[1]):
            a00 = vzero(); a01 = vzero(); a02 = vzero(); a03 = vzero()  # noqa: E702
            a10 = vzero(); a11 = vzero(); a12 = vzero(); a13 = vzero()  # noqa: E702
            a20 = vzero(); a21 = vzero(); a22 = vzero(); a23 = vzero()  # noqa: E702
            a30 = vzero(); a31 = vzero(); a32 = vzero(); a33 = vzero()  # noqa: E702
            for m in range(count):
                src = planes[m]
                g0, g1, g2, g3 = dyw[m, 4 * fb], dyw[m, 4 * fb + 1], dyw[m, 4 * fb + 2], dyw[m, 4 * fb + 3]
                for t in range(0, length, LANES):
                    x0 = vload(src, o0 + t); x1 = vload(src, o1 + t); x2 = vload(src, o2 + t); x3 = vload(src, o3 + t)  # noqa: E702
                    d0 = vload(g0, t); d1 = vload(g1, t); d2 = vload(g2, t); d3 = vload(g3, t)  # noqa: E702
                    a00 = vfmav(x0, d0, a00); a01 = vfmav(x0, d1, a01); a02 = vfmav(x0, d2, a02); a03 = vfmav(x0, d3, a03)  # noqa: E702
                    a10 = vfmav(x1, d0, a10); a11 = vfmav(x1, d1, a11); a12 = vfmav(x1, d2, a12); a13 = vfmav(x1, d3, a13)  # noqa: E702
                    a20 = vfmav(x2, d0, a20); a21 = vfmav(x2, d1, a21); a22 = vfmav(x2, d2, a22); a23 = vfmav(x2, d3, a23)  # noqa: E702
                    a30 = vfmav(x3, d0, a30); a31 = vfmav(x3, d1, a31); a32 = vfmav(x3, d2, a32); a33 = vfmav(x3, d3, a33)  # noqa: E702
            r = acc[kb, fb]
            r[0, 0] += vsum(a00); r[0, 1] += vsum(a01); r[0, 2] += vsum(a02); r[0, 3] += vsum(a03)  # noqa: E702
            r[1, 0] += vsum(a10); r[1, 1] += vsum(a11); r[1, 2] += vsum(a12); r[1, 3] += vsum(a13)  # noqa: E702
            r[2, 0] += vsum(a20); r[2, 1] += vsum(a21); r[2, 2] += vsum(a22); r[2, 3] += vsum(a23)  # noqa: E702
            r[3, 0] += vsum(a30); r[3, 1] += vsum(a31); r[3, 2] += vsum(a32); r[3, 3] += vsum(a33)  # noqa: E702


@njit
def _filter_blocks16(planes, offsets4, dyw, acc, count, length):
    """``_filter_blocks`` in register blocks of 2 taps × 2 channels (4 accumulators, 4 loads
    per 4 FMAs): for 16 vector registers of 8 lanes, as ``_blocks16``."""
    for kb in range(offsets4.shape[0]):
        for a in range(0, 4, 2):
            o0, o1 = offsets4[kb, a], offsets4[kb, a + 1]
            for fb in range(acc.shape[1]):
                for b in range(0, 4, 2):
                    a00 = vzero(); a01 = vzero(); a10 = vzero(); a11 = vzero()  # noqa: E702
                    for m in range(count):
                        src = planes[m]
                        g0, g1 = dyw[m, 4 * fb + b], dyw[m, 4 * fb + b + 1]
                        for t in range(0, length, LANES):
                            x0 = vload(src, o0 + t); x1 = vload(src, o1 + t)  # noqa: E702
                            d0 = vload(g0, t); d1 = vload(g1, t)  # noqa: E702
                            a00 = vfmav(x0, d0, a00); a01 = vfmav(x0, d1, a01)  # noqa: E702
                            a10 = vfmav(x1, d0, a10); a11 = vfmav(x1, d1, a11)  # noqa: E702
                    r = acc[kb, fb]
                    r[a, b] += vsum(a00); r[a, b + 1] += vsum(a01)  # noqa: E702
                    r[a + 1, b] += vsum(a10); r[a + 1, b + 1] += vsum(a11)  # noqa: E702


_FILTER_BLOCKS = dict(zip(VARIANTS, (_filter_blocks, _filter_blocks16)))


def blocked_filter_grad(x, dy, kh, kw, stride, pads, out_hw, *, variant="blocked"):
    """dw [KH, KW, C, F] of the convolution, float32, by register blocks (see above; ``variant``
    one of ``VARIANTS``); the images are summed in parts fixed by the shape (``parallel_sum``)."""
    from .conv import _phase_planes

    n, _, _, c = x.shape
    f = dy.shape[3]
    ho, wo = out_hw
    s, pt, pl = stride, pads[0][0], pads[1][0]
    g = geometry(c, kh, kw, f, s, ho, wo)
    hh1, wh, per_image, length, f4 = g
    taps = kh * kw * c
    k4 = -(-taps // 4)
    offsets = np.zeros(4 * k4, np.int64)  # padded taps read offset 0; their rows are dropped
    offsets[:taps] = _tap_offsets(c, kh, kw, s, hh1, wh)
    offsets4 = offsets.reshape(k4, 4)
    per = images_per_chunk(g)
    filter_blocks = _FILTER_BLOCKS[variant]

    def work(a, e):
        planes = scratch("blocked_planes", (per, g.row), np.float32)
        dyw = scratch("blocked_out", (per, 4 * f4, length), np.float32)
        planes[:, per_image:] = 0  # read past the planes against dY's zero tail: 0 · garbage may be NaN
        acc = np.zeros((k4, f4, 4, 4), np.float32)
        for s0 in range(a, e, per):
            m = min(per, e - s0)
            _phase_planes(x[s0:s0 + m], planes[:m, :per_image].reshape(m, s, s, c, hh1, wh), pt, pl)
            _dy_wide(dy, dyw, s0, m, wh, length)
            filter_blocks(planes, offsets4, dyw, acc, m, length)
        return acc

    acc = parallel_sum(work, n, per)
    dw = acc.transpose(0, 2, 1, 3).reshape(4 * k4, 4 * f4)[:taps, :f]
    return np.ascontiguousarray(dw).reshape(kh, kw, c, f)


# --- the input gradient: pixels in the lanes, every stride phase in one pass ------------------
#
#     dx[n, s·u + a, s·v + b, c] = Σ_{p ≡ a + pt, q ≡ b + pl (mod s), f}
#                                  dY[n, u + (a + pt - p)/s, v + (b + pl - q)/s, f] · w[p, q, c, f]
#
# Each phase (a, b) of dx (rows ≡ a, columns ≡ b mod s) is a stride-1 correlation of dY with
# that phase's taps of the filter, C and F swapped. dY of each image is laid out once per
# chunk as zero-padded channel-planar planes [F, Hd, Wd]; on a phase's wide grid u·Wd + v,
# tap (p, q, f) reads the planes at off + u·Wd + v: one contiguous run, as in the forward,
# so ``_blocks`` computes each phase, 4 channels × 64 pixels per register block. Narrow C
# (conv3-small's conv2: C = 4) fills every lane, where the lanes kernel (C in the lanes)
# fills a quarter of them. The phases' outputs are then interleaved into dx, through the
# ReLU's gate if one is given.

class GradGeometry(NamedTuple):
    top: int        # zero rows above dY in its planes
    left: int       # zero columns left of it
    hd: int         # plane height
    wd: int         # plane width = a row of the phases' wide grid
    length: int     # output pixels computed per phase: Hu·Wd rounded up to a whole block
    c4: int         # 4-channel blocks (C rounded up)
    phases: tuple   # per phase (a, b), a-major: ([(p, dY row offset)], [(q, dY column offset)])


def _phase_taps(k: int, s: int, pad: int, a: int) -> list[tuple[int, int]]:
    """The taps p < k that reach output phase a, p ≡ a + pad (mod s), with their offset into
    dY, (a + pad - p) / s."""
    return [(p, (a + pad - p) // s) for p in range(k) if (a + pad - p) % s == 0]


@lru_cache(maxsize=64)
def grad_geometry(x_hw, dy_hw, kh, kw, s, pt, pl, c) -> GradGeometry:
    """The planes and phases of ``blocked_input_grad`` for x [., H, W, C] (``x_hw`` = (H, W)),
    dY [., Ho, Wo, .] and a KH × KW filter of stride s, padded pt above, pl left."""
    (h, w), (ho, wo) = x_hw, dy_hw
    rows = [_phase_taps(kh, s, pt, a) for a in range(s)]
    cols = [_phase_taps(kw, s, pl, b) for b in range(s)]
    offs_i = [o for taps in rows for _, o in taps] or [0]
    offs_j = [o for taps in cols for _, o in taps] or [0]
    top, left = max(0, -min(offs_i)), max(0, -min(offs_j))
    hu, wv = -(-h // s), -(-w // s)
    hd = max(ho + top, hu + top + max(offs_i))
    wd = max(wo + left, wv + left + max(offs_j))
    phases = tuple((tuple(rows[a]), tuple(cols[b])) for a in range(s) for b in range(s))
    return GradGeometry(top, left, hd, wd, -(-hu * wd // PIXELS) * PIXELS, -(-c // 4), phases)


@lru_cache(maxsize=64)
def _phase_taps_of(g: GradGeometry, f: int):
    """Per phase: its taps' offsets into an image's planes, and their (p, q, f) as index
    arrays into the filter."""
    plane = g.hd * g.wd
    out = []
    for rows, cols in g.phases:
        taps = np.array([(p, q, ff, ff * plane + (oi + g.top) * g.wd + oj + g.left)
                         for p, oi in rows for q, oj in cols for ff in range(f)], np.int64).reshape(-1, 4)
        out.append((np.ascontiguousarray(taps[:, 3]), taps[:, 0], taps[:, 1], taps[:, 2]))
    return tuple(out)


def _phase_filters(w, g: GradGeometry):
    """Per phase: its taps' offsets into an image's planes and its filter [C/4, K, 4] over
    those taps (p, q, f), C padded with zero columns."""
    c, f = w.shape[2], w.shape[3]
    offsets, filters = [], []
    for off, p, q, ff in _phase_taps_of(g, f):
        w2 = np.zeros((len(off), 4 * g.c4), np.float32)
        w2[:, :c] = w[p, q, :, ff]
        offsets.append(off)
        filters.append(np.ascontiguousarray(w2.reshape(-1, g.c4, 4).transpose(1, 0, 2)))
    return tuple(offsets), tuple(filters)


@njit
def _dy_planes(dy, planes, n0, count, top, left, hd, wd):
    """planes[m, f·Hd·Wd + (top + i)·Wd + left + j] = dY[n0 + m, i, j, f]; zero elsewhere
    (the padding, and the run past the planes that the garbage columns' taps read)."""
    ho, wo, f_ = dy.shape[1], dy.shape[2], dy.shape[3]
    plane = hd * wd
    zero = np.float32(0)
    for m in range(count):
        row = planes[m]
        for t in range(row.size):
            row[t] = zero
        for i in range(ho):
            src = dy[n0 + m, i]
            for j in range(wo):
                at = (top + i) * wd + left + j
                for f in range(f_):
                    row[f * plane + at] = src[j, f]


@njit
def _phases_to_nhwc(out, rows, length, dx, n0, count, s, wd, gate):
    """dx[n0 + m, s·u + a, s·v + b, c] = out[m, a, b, c, u·Wd + v] (· [gate > 0], gate flat
    and x's shape, if not None), out flat [per, s, s, rows, length] with 16 rows to spare.
    For each dx row, 16 pixels v of all the phases b at a time go through a register
    transpose (``vtranspose16``: row b·rows + c of the tile is pixel v's channel c of
    phase b, s·rows <= 16), then each pixel's C channels are one masked store."""
    h, w, c_ = dx.shape[1], dx.shape[2], dx.shape[3]
    dxf = dx.reshape(-1)
    tile = np.empty(LANES * LANES + LANES, np.float32)
    wv = -(-w // s)
    for m in range(count):
        for hh in range(h):
            a, u = hh % s, hh // s
            first = (m * s + a) * s * rows * length + u * wd
            for v0 in range(0, wv, LANES):
                vtranspose16(out, first + v0, length, tile)
                for p in range(min(LANES, wv - v0)):
                    col = s * (v0 + p)
                    at = (((n0 + m) * h + hh) * w + col) * c_
                    for b in range(min(s, w - col)):
                        vec = vload(tile, LANES * p + b * rows)
                        if gate is not None:
                            vec = vgated(vec, gate, at + b * c_, c_)
                        vstore_first(dxf, at + b * c_, vec, c_)


def grad_applies(c: int, stride: int, dtype) -> bool:
    """Whether ``blocked_input_grad`` takes a layer of C input channels: float32, and the
    s phases of 4·⌈C/4⌉ channels of one dx row fit one 16-row transpose."""
    return np.dtype(dtype) == np.float32 and stride * 4 * -(-c // 4) <= LANES


def blocked_input_grad(dy, w, x_shape, stride, pads, gate=None, *, variant="blocked"):
    """dx [N, H, W, C] of the convolution, float32, by register blocks (see above; ``variant``
    one of ``VARIANTS``); each worker takes whole images, a chunk at a time. ``gate`` (x's shape,
    C-contiguous): the cache of a ReLU before the layer, applied as dx is written, dx · [gate > 0]."""
    assert grad_applies(x_shape[3], stride, np.float32), "blocked_input_grad: C too wide for its stride"
    n = x_shape[0]
    kh, kw, c, f = w.shape
    s, pt, pl = stride, pads[0][0], pads[1][0]
    g = grad_geometry(x_shape[1:3], dy.shape[1:3], kh, kw, s, pt, pl, c)
    offsets, filters = _phase_filters(w, g)
    row = f * g.hd * g.wd + g.length
    per = grad_images_per_chunk(x_shape, dy.shape, kh, kw, s, pads)
    rows = 4 * g.c4
    dx = np.empty(x_shape, np.float32)
    gf = None if gate is None else gate.reshape(-1)
    blocks = _BLOCKS[variant]

    def work(a, e):
        planes = scratch("blocked_planes", (per, row), np.float32)
        # + LANES rows: the transposes read whole 16-row tiles
        flat = scratch("blocked_out", (per * s * s * rows + LANES, g.length), np.float32)
        out = flat[:per * s * s * rows].reshape(per, s * s, rows, g.length)
        for s0 in range(a, e, per):
            m = min(per, e - s0)
            _dy_planes(dy, planes, s0, m, g.top, g.left, g.hd, g.wd)
            for k in range(s * s):
                blocks(planes, offsets[k], filters[k], out[:, k], m, g.length)
            _phases_to_nhwc(flat.reshape(-1), rows, g.length, dx, s0, m, s, g.wd, gf)

    parallel(work, n)
    return dx


def grad_images_per_chunk(x_shape, dy_shape, kh, kw, stride, pads) -> int:
    """Images per chunk of ``blocked_input_grad``: planes and phase outputs ~TARGET_BYTES,
    unless a tuned choice set the chunk. Shared with ``tuning``."""
    g = grad_geometry(tuple(x_shape[1:3]), tuple(dy_shape[1:3]), kh, kw, stride, pads[0][0], pads[1][0], x_shape[3])
    floats = dy_shape[3] * g.hd * g.wd + g.length + stride * stride * 4 * g.c4 * g.length
    return chosen_chunk() or max(1, TARGET_BYTES // (4 * floats))
