"""Inference ops that span layers: ``Sequential.infer`` hands a convolution the ReLU and
the max-pool that follow it, so that a backend can apply them while it writes the
convolution's output, instead of in two more passes over it (``scratchnet.kernels`` does
for its register-blocked convolution). Here, the reference: the three ops in turn."""

from __future__ import annotations

import numpy as np

from .conv import conv2d_forward
from .pool import max_pool


def conv2d_infer(x, w, b, stride: int = 1, padding: str = "SAME", *, relu: bool = False, pool=None):
    """y = maxpool(max(conv(x, w) + b, 0)) [N, Ho', Wo', F]; the ReLU only if ``relu``, the
    pool only if ``pool`` = (ksize, stride, padding) of a ``max_pool``. Nothing is kept."""
    y = conv2d_forward(x, w, b, stride, padding)[0]
    if relu:
        np.maximum(y, 0, out=y)
    return max_pool(y, *pool) if pool is not None else y
