"""Losses: softmax cross-entropy from logits (stable, the default), the naive summed
cross-entropy of the second deep-MNIST write-up, and TensorFlow's L2 penalty."""

from __future__ import annotations

import numpy as np

from .activations import softmax, softmax_backward


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


def naive_cross_entropy_sum(logits, labels):
    """The second deep-MNIST write-up's loss, computed naively, as TensorFlow computes
    ``-tf.reduce_sum(y * tf.math.log(tf.nn.softmax(z)))`` and differentiates it.

    logits z: [N, C]; labels: class ids [N] (y is their one-hot [N, C]).

        forward    p = softmax(z)              l = log p          L = -Σ_n Σ_k y_nk · l_nk
        backward   dl = -y                     dp = dl / p        dz = p · (dp - Σ_j dp_j p_j)

    Summed over the batch, not averaged. In exact arithmetic dz = p - y, as for
    ``softmax_cross_entropy``; in floating point the two part once a probability underflows
    to 0 (a logit about 104 below its row's maximum in float32, 745 in float64): then
    l = log 0 = -inf, the product y·l is 0·(-inf) = NaN even where y = 0, and so are L and
    dp = -y/0 (0/0 or -inf). Training on it stops at that step (the divergence guard).
    """
    n, c = logits.shape
    targets = np.zeros_like(logits)
    targets[np.arange(n), labels] = 1
    p = softmax(logits)
    with np.errstate(divide="ignore", invalid="ignore"):
        loss = -(targets * np.log(p)).sum()
        dlogits = softmax_backward(-targets / p, p)
    return logits.dtype.type(loss), dlogits


# The losses a recipe may name: (logits [N, C], class ids [N]) -> (loss, dL/dlogits).
LOSSES = {"softmax_cross_entropy": softmax_cross_entropy, "naive_cross_entropy_sum": naive_cross_entropy_sum}


def l2_loss(w):
    """TensorFlow's ``tf.nn.l2_loss``: Σ w² / 2. Its gradient is w itself."""
    return (w * w).sum() / 2


def l2_penalty(params: dict, names, scale: float):
    """``scale · Σ_names l2_loss(params[name])`` and its gradient ``{name: scale · w}``
    (``tf.contrib.layers.l2_regularizer(scale)`` summed over the named weights)."""
    loss = sum(scale * l2_loss(params[k]) for k in names)
    grads = {k: params[k].dtype.type(scale) * params[k] for k in names}
    return loss, grads
