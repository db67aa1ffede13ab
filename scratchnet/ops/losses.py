"""Losses: softmax cross-entropy from logits and TensorFlow's L2 penalty."""

from __future__ import annotations

import numpy as np


def log_softmax(logits):
    """log p_k = z_k - max z - log Σ_j e^(z_j - max z): finite for any finite logits."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax_cross_entropy(logits, labels):
    """Mean softmax cross-entropy and its gradient with respect to the logits.

    logits: [N, C]; labels: class ids [N] (integers) or a distribution [N, C] (one-hot).

        loss = -(1/N) Σ_n Σ_k y_nk · log softmax(z_n)_k
        dL/dz = (softmax(z) - y) / N

    Computed from log-softmax in one step, so logits of ±1e4 give a finite loss and
    gradient (softmax followed by log would give log 0 = -inf).
    """
    n, c = logits.shape
    if labels.ndim == 1:
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"class-id labels must be integers, got {labels.dtype}")
        targets = np.zeros_like(logits)
        targets[np.arange(n), labels] = 1
    else:
        if labels.shape != logits.shape:
            raise ValueError(f"labels shape {labels.shape} does not match logits shape {logits.shape}")
        targets = labels.astype(logits.dtype, copy=False)
    logp = log_softmax(logits)
    loss = -(targets * logp).sum() / n
    dlogits = (np.exp(logp) - targets) / logits.dtype.type(n)
    return logits.dtype.type(loss), dlogits.astype(logits.dtype, copy=False)


def l2_loss(w):
    """TensorFlow's ``tf.nn.l2_loss``: Σ w² / 2. Its gradient is w itself."""
    return (w * w).sum() / 2


def l2_penalty(params: dict, names, scale: float):
    """``scale · Σ_names l2_loss(params[name])`` and its gradient ``{name: scale · w}``
    (``tf.contrib.layers.l2_regularizer(scale)`` summed over the named weights)."""
    loss = sum(scale * l2_loss(params[k]) for k in names)
    grads = {k: params[k].dtype.type(scale) * params[k] for k in names}
    return loss, grads
