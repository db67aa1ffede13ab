"""A register-blocked direct convolution (forward, float32): 4 output channels × 64 output
pixels held in sixteen 16-lane vector registers for the whole reduction over the taps.

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

from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, models, register_model

from ._runtime import chosen_chunk, njit, parallel, scratch

LANES = 16
PIXELS = 4 * LANES  # per register block
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
def _to_nhwc(out, y, n0, count, wh, bias):
    """y[n0 + m, i, j, f] = out[m, f, i·Wh + j] + bias[f] for j < Wo (drops the garbage)."""
    ho, wo, f_ = y.shape[1], y.shape[2], y.shape[3]
    for m in range(count):
        for i in range(ho):
            dst = y[n0 + m, i]
            for f in range(f_):
                src = out[m, f]
                bf = bias[f]
                for j in range(wo):
                    dst[j, f] = src[i * wh + j] + bf


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


def blocked_forward(x, w, b, stride, pads, out_hw):
    """y [N, Ho, Wo, F] = conv(x, w) + b, float32, by register blocks (see the module
    docstring); each worker takes whole images, a chunk of them at a time."""
    from .conv import _phase_planes

    n, _, _, c = x.shape
    kh, kw, _, f = w.shape
    ho, wo = out_hw
    s, pt, pl = stride, pads[0][0], pads[1][0]
    g = geometry(c, kh, kw, f, s, ho, wo)
    hh1, wh, per_image, length, f4 = g
    plane = hh1 * wh
    offsets = np.array([(((p % s) * s + q % s) * c + ch) * plane + (p // s) * wh + q // s
                        for p in range(kh) for q in range(kw) for ch in range(c)], np.int64)
    w2 = np.zeros((kh * kw * c, 4 * f4), np.float32)
    w2[:, :f] = w.reshape(-1, f)
    w4 = np.ascontiguousarray(w2.reshape(-1, f4, 4).transpose(1, 0, 2))  # [F/4, K, 4]
    bias = np.zeros(f, np.float32) if b is None else np.ascontiguousarray(b, np.float32)
    y = np.empty((n, ho, wo, f), np.float32)
    per = images_per_chunk(g)

    def work(a, e):
        planes = scratch("blocked_planes", (per, g.row), np.float32)
        out = scratch("blocked_out", (per, 4 * f4, length), np.float32)
        for s0 in range(a, e, per):
            m = min(per, e - s0)
            _phase_planes(x[s0:s0 + m], planes[:m, :per_image].reshape(m, s, s, c, hh1, wh), pt, pl)
            _blocks(planes, offsets, w4, out, m, length)
            _to_nhwc(out, y, s0, m, wh, bias)

    parallel(work, n)
    return y
