"""Reference operations: plain NumPy, each forward beside its hand-written backward.

Every ``*_forward`` returns ``(output, cache)`` and every ``*_backward(dy, cache)`` returns
the gradients, CS231n-style; the inference ops (``relu``, ``batchnorm``, ``max_pool``,
``lstm_infer``, ``conv2d_infer``, ``dense_infer``: what ``Layer.infer`` runs) return the forward's output alone;
``conv2d_forward_relu`` is a convolution's forward and the ReLU after it, in one op,
``conv2d_backward_relu`` its backward and the ReLU's before it (``max_pool_backward_relu``
a max-pool's). These are the versions to read; the fast kernels in
``scratchnet.kernels`` must agree with them.
"""

from .activations import (relu, relu_backward, relu_forward, sigmoid, sigmoid_backward, sigmoid_forward,
                          softmax, softmax_backward, softmax_forward, tanh_backward, tanh_forward)
from .batchnorm import batchnorm, batchnorm_backward, batchnorm_forward, moments
from .conv import conv2d_backward, conv2d_backward_params, conv2d_forward
from .dense import dense_backward, dense_backward_params, dense_forward
from .dropout import dropout_backward, dropout_forward
from .fused import conv2d_backward_relu, conv2d_forward_relu, conv2d_infer, dense_infer, max_pool_backward_relu
from .losses import LOSSES, l2_loss, l2_penalty, log_softmax, naive_cross_entropy_sum, softmax_cross_entropy
from .lstm import lstm_backward, lstm_forward, lstm_infer
from .padding import output_size
from .pool import max_pool, max_pool_backward, max_pool_forward
