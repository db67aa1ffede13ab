"""``ops.fused`` fast: a layer's inference op that also applies the batch normalisation,
ReLU and max-pool after it (``Layer.infer_fused``), and a convolution's training forward
with the ReLU after it (``Layer.forward_fused``), in the write of its output where the
algorithm allows, else in place right after it, in one sweep; and a convolution's
backward with the ReLU before it (``Layer.backward_fused``), the same way for dx. Same
values bit for bit as the layers one by one: the same roundings in the same order
(``tests/test_infer.py``).

* The register-blocked convolution (``blocked.py``) applies all of them as it transposes
  its channel-planar result into NHWC (``blocked_forward``): y never exists unnormalised,
  and with a 2 × 2 pool only the pooled quarter of it is ever written.
* The lanes convolution (``lanes.py``) applies them as it stores each register block
  into y, the pool (without a normalisation) as the max over two rows of blocks.
* Winograd (``winograd.py``) takes the normalisation, the ReLU and a 2 × 2 pool (without a
  normalisation) into its output transform: each of its 2 × 2 output tiles is one pool
  window, of which only the maximum is stored.
* Every other convolution algorithm, and the dense layer, write y, then one sweep applies
  the normalisation and the ReLU (``batchnorm._normalize``), or the ReLU alone; the pool
  runs after.
"""

from __future__ import annotations

from ._runtime import chunk_size
from .activations import relu as relu_op
from .batchnorm import _normalize, scale_shift
from .blocked import VARIANTS as BLOCKED, blocked_forward
from .conv import forward_plan, forward_with, gated_backward
from .dense import dense_forward
from .lanes import lanes_forward, poolable
from .pool import max_pool
from .winograd import TILE, winograd_forward


def pool_fusable(pool, out_hw) -> bool:
    """Whether the blocked, lanes and Winograd forwards can take the max-pool ``pool`` =
    (ksize, stride, padding) after it: 2 × 2 windows, stride 2, an even output (so no
    padding either way); the lanes one also needs even pixel blocks (``lanes.poolable``)."""
    (kh, kw), (sh, sw), _ = pool
    return (kh, kw) == (sh, sw) == (2, 2) and out_hw[0] % 2 == 0 and out_hw[1] % 2 == 0


def _pointwise(y, bn, relu):
    """y = max(batchnorm(y), 0) in place, each part only if asked."""
    if bn is not None:
        return _normalize(y, *bn, out=y, relu=relu)[0]
    return relu_op(y, out=y) if relu else y


def conv2d_infer(x, w, b, stride: int = 1, padding: str = "SAME", *, bn=None, relu: bool = False, pool=None):
    """``ops.fused.conv2d_infer``: maxpool(max(batchnorm(conv(x, w) + b), 0)), nothing kept.
    Where the forward's chosen algorithm is the register-blocked one, applied as it writes y
    (the pool there too without a normalisation, whose scale may be negative), and the
    same where it is the lanes one (the pool where its pixel blocks are even); the
    Winograd one takes them into its output transform (the pool without a normalisation)."""
    return _fused(forward_plan(x, w, stride, padding), w, b, stride, bn, relu, pool)


def conv2d_forward_relu(x, w, b, stride: int = 1, padding: str = "SAME"):
    """``ops.fused.conv2d_forward_relu``: max(conv(x, w) + b, 0) and the convolution's cache,
    the ReLU applied as ``conv2d_infer`` applies it: one pass over y fewer than the two
    layers' ops."""
    plan = forward_plan(x, w, stride, padding)
    x, _, pads, out_hw = plan
    return _fused(plan, w, b, stride, None, True, None), (x, w, stride, out_hw, pads)


def conv2d_backward_relu(dy, cache, relu_cache):
    """``ops.fused.conv2d_backward_relu``: the ReLU's backward applied as the lanes and
    blocked input gradients store dx, by the scatter's workers on their own images, else in
    place on dx right after (``conv.input_grad_with``): for conv-nobn's conv2, whose dx is
    relu1's dy (7.5 MB), one pass and one array fewer than the two layers' ops."""
    return gated_backward(dy, cache, relu_cache)


def _fused(plan, w, b, stride, bn, relu, pool):
    """``conv2d_infer`` for the ``forward_plan`` ``plan``."""
    x, choice, pads, out_hw = plan
    if choice.algorithm not in (*BLOCKED, "lanes", *TILE):
        y = _pointwise(forward_with(choice, x, w, b, stride, pads, out_hw), bn, relu)
        return max_pool(y, *pool) if pool is not None else y
    fuse = pool is not None and bn is None and pool_fusable(pool, out_hw)
    affine = scale_shift(*bn, x.dtype)[1:] if bn is not None else None
    with chunk_size(choice.chunk):
        if choice.algorithm in BLOCKED:
            y = blocked_forward(x, w, b, stride, pads, out_hw, affine=affine, relu=relu, pool=fuse, variant=choice.algorithm)
        elif choice.algorithm == "lanes":
            fuse = fuse and poolable(w.shape[3], out_hw)
            y = lanes_forward(x, w, b, stride, pads, out_hw, affine=affine, relu=relu, pool=fuse)
        else:
            y = winograd_forward(x, w, b, pads, out_hw, stride=stride, affine=affine, relu=relu, pool=fuse,
                                 tile=TILE[choice.algorithm])
    return max_pool(y, *pool) if pool is not None and not fuse else y


def dense_infer(x, w, b, *, bn=None, relu: bool = False):
    """``ops.fused.dense_infer``: max(batchnorm(x @ w + b), 0), the two in one sweep."""
    return _pointwise(dense_forward(x, w, b)[0], bn, relu)
