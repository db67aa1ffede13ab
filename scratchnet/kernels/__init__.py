"""Fast kernels: the same functions, signatures and results as ``scratchnet.ops``.

This module is the ``"fast"`` backend (``scratchnet.backend``). Each hot operation has a
faster implementation here; everything else is re-exported from the reference:

========================  ==================================================================
conv2d_*                  chunked NHWC im2col (Numba, contiguous runs) + one-thread sgemm per
                          worker; "wide" whole-image columns for thin first layers;
                          Winograd F(2x2, 5x5) for 5x5 stride-1 layers with >= 16 channels
                          (F(4x4, 5x5) where tuned faster; ``conv_algorithm("direct")``
                          turns both off); per shape, the
                          algorithm and chunk size measured fastest on this machine where
                          ``tuning`` has a measurement (``scratchnet tune``), including
                          a register-blocked direct forward, filter and input gradient in
                          explicit 16-lane vectors (``blocked.py``, float32) and a direct forward with
                          the channels in the lanes and its filter gradient (``lanes.py``,
                          float32, F ≥ 8) where they measure fastest;
                          ``conv2d_backward_params`` skips dX for a first layer
*_infer                   ``conv2d_infer``, ``dense_infer`` (``fused.py``): inference through
                          the BatchNorm, ReLU and max-pool after the layer; the blocked and
                          lanes forwards apply them as they write y, Winograd takes the ReLU and
                          pool into its output transform, the others one sweep after it;
                          ``conv2d_forward_relu`` the training forward with its ReLU, the same way;
                          ``conv2d_backward_relu`` the backward with the ReLU before it (the
                          lanes and blocked input gradients apply it as they store dx, the
                          scatter's workers on their own images, the others in place)
max_pool_*                one Numba pass writing max and uint8 argmax; backward writes dx once
                          when the windows tile the input, else scatters through the argmax
                          (``max_pool_backward_relu``: with the ReLU before it, in that pass);
                          ``max_pool`` (inference) the same pass without the argmax
dense_*                   BLAS with transpose flags, bias added in place; for a big weight,
                          per shape the product measured fastest (or the built-in rule):
                          dX as (w @ dyᵀ)ᵀ, or for 2-12 rows the register-blocked "skinny"
                          products (``skinny.py``, float32); ``dense_backward_params``
                          skips dX for a first layer
lstm_*                    one GEMM per step for the four gates and the bias ([x_t, h, 1] @
                          [K; b]), fused pointwise, post-loop weight-gradient GEMMs;
                          ``lstm_infer`` runs L2-sized row blocks through all steps keeping
                          only the current inputs, c and h
relu_*, relu              one-pass Numba, split over the worker threads (NumPy's call for
                          small inputs; ``relu``, inference: in place when the model says its
                          input is scratch)
moments, batchnorm_*      per-channel row sweeps (Numba, float64 accumulators, split over the
                          workers); the backward's compact formula in one reduction + one write
softmax_cross_entropy     one pass per row (Numba)
dropout_*                 one Numba pass each (the mask is the layer's, as in the reference)
optim.adam/ema/sgd_update fused one-pass optimizer updates, bit-equal to the NumPy lines
                          (used by ``scratchnet.optim`` when this backend is active)
========================  ==================================================================

A forward's cache is meant for the backward of the SAME module (the layers always pair
them through the backend); caches are not interchangeable with ``scratchnet.ops``.
See ``docs/performance.md`` for the design and the measurements.
"""

from ..ops import (l2_loss, l2_penalty, log_softmax,  # noqa: F401
                   naive_cross_entropy_sum, output_size, sigmoid, sigmoid_backward, sigmoid_forward, softmax,
                   softmax_backward, softmax_forward, tanh_backward, tanh_forward)
from ._runtime import CACHE_DIR, NUM_THREADS  # noqa: F401
from .activations import relu, relu_backward, relu_forward  # noqa: F401
from .batchnorm import batchnorm, batchnorm_backward, batchnorm_forward, moments  # noqa: F401
from .conv import conv2d_backward, conv2d_backward_params, conv2d_forward, conv_algorithm  # noqa: F401
from .dense import dense_backward, dense_backward_params, dense_forward  # noqa: F401
from .dropout import dropout_backward, dropout_forward  # noqa: F401
from .fused import conv2d_backward_relu, conv2d_forward_relu, conv2d_infer, dense_infer  # noqa: F401
from .losses import softmax_cross_entropy  # noqa: F401
from .lstm import lstm_backward, lstm_forward, lstm_infer  # noqa: F401
from .pool import max_pool, max_pool_backward, max_pool_backward_relu, max_pool_forward  # noqa: F401

FAST = ("conv2d_forward", "conv2d_backward", "conv2d_backward_params", "dense_backward_params", "max_pool_forward", "max_pool_backward",
        "dense_forward", "dense_backward", "lstm_forward", "lstm_backward",
        "relu_forward", "relu_backward", "softmax_cross_entropy", "dropout_forward", "dropout_backward",
        "moments", "batchnorm_forward", "batchnorm_backward", "relu", "batchnorm", "max_pool", "lstm_infer", "conv2d_infer", "dense_infer",
        "conv2d_forward_relu", "conv2d_backward_relu", "max_pool_backward_relu")
