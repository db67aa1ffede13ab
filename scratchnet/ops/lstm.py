"""LSTM over a sequence with TensorFlow's ``BasicLSTMCell`` conventions.

    x [N, T, D],  kernel [D + H, 4H],  bias [4H]  ->  h [N, T, H]

One kernel acts on the concatenation [x_t, h_{t-1}]; its 4H columns are the gates in the
order **i, j, f, o** (input gate, candidate, forget gate, output gate). The forget bias
is a constant added inside the sigmoid at run time (``forget_bias = 1.0`` in the
tutorials), not part of the trainable bias:

    z_t = [x_t, h_{t-1}] @ kernel + bias                   [N, 4H]
    i, j, f, o = split(z_t, 4)
    c_t = c_{t-1} · σ(f + forget_bias) + σ(i) · tanh(j)
    h_t = tanh(c_t) · σ(o)                      with h_0 = c_0 = 0

Backprop through time walks t = T-1 … 0 carrying dh and dc back:

    dh   = dh_out[t] + dh_next
    do   = dh · tanh(c_t)
    dc   = dc_next + dh · σ(o) · (1 - tanh²(c_t))
    di, dj, df = dc · tanh(j), dc · σ(i), dc · c_{t-1};    dc_next = dc · σ(f + fb)
    dz   = [di·σ'(i), dj·(1 - tanh² j), df·σ'(f + fb), do·σ'(o)]       (σ' = σ(1 - σ))
    dkernel += [x_t, h_{t-1}]ᵀ @ dz;  dbias += Σ_n dz
    [dx_t, dh_next] = dz @ kernelᵀ
"""

from __future__ import annotations

import numpy as np

from .activations import sigmoid


def lstm_forward(x, kernel, bias, forget_bias: float = 1.0):
    """Return all hidden states ``h [N, T, H]`` and the cache for ``lstm_backward``."""
    n, t_len, d = x.shape
    hidden = kernel.shape[1] // 4
    fb = x.dtype.type(forget_bias)
    h = np.zeros((n, hidden), x.dtype)
    c = np.zeros((n, hidden), x.dtype)
    hs, steps = [], []
    for t in range(t_len):
        xh = np.concatenate([x[:, t], h], axis=1)
        z = xh @ kernel + bias
        zi, zj, zf, zo = np.split(z, 4, axis=1)
        i, j, f, o = sigmoid(zi), np.tanh(zj), sigmoid(zf + fb), sigmoid(zo)
        c_prev = c
        c = c_prev * f + i * j
        tc = np.tanh(c)
        h = tc * o
        hs.append(h)
        steps.append((xh, c_prev, i, j, f, o, tc))
    return np.stack(hs, axis=1), (kernel, d, steps)


def lstm_infer(x, kernel, bias, forget_bias: float = 1.0, all_steps: bool = True):
    """h [N, T, H] (``all_steps``) or the last step's h [N, H], keeping nothing for backward."""
    h = lstm_forward(x, kernel, bias, forget_bias)[0]
    return h if all_steps else h[:, -1]


def lstm_backward(dh_out, cache):
    """Return ``dx [N, T, D], dkernel [D+H, 4H], dbias [4H]`` from ``dh_out [N, T, H]``."""
    kernel, d, steps = cache
    n, t_len, hidden = dh_out.shape
    dx = np.empty((n, t_len, d), dh_out.dtype)
    dkernel = np.zeros_like(kernel)
    dbias = np.zeros(kernel.shape[1], kernel.dtype)
    dh_next = np.zeros((n, hidden), dh_out.dtype)
    dc_next = np.zeros((n, hidden), dh_out.dtype)
    for t in reversed(range(t_len)):
        xh, c_prev, i, j, f, o, tc = steps[t]
        dh = dh_out[:, t] + dh_next
        do = dh * tc
        dc = dc_next + dh * o * (1 - tc * tc)
        di, dj, df = dc * j, dc * i, dc * c_prev
        dc_next = dc * f
        dz = np.concatenate([di * i * (1 - i), dj * (1 - j * j), df * f * (1 - f), do * o * (1 - o)], axis=1)
        dkernel += xh.T @ dz
        dbias += dz.sum(axis=0)
        dxh = dz @ kernel.T
        dx[:, t] = dxh[:, :d]
        dh_next = dxh[:, d:]
    return dx, dkernel, dbias
