"""Dense layer: the reference's three products, with the bias added in place.

``x @ w`` already goes to OpenBLAS sgemm/dgemm, and ``dy @ w.T`` / ``x.T @ dy`` pass
transposed *views*, which BLAS takes as transpose flags (no copy). The only waste in the
reference is ``x @ w + b`` allocating a second [N, Out] array; here the bias is added in
place. (BLAS keeps its own two threads here: one big GEMM, no worker threads.)

A large weight (``BIG_WEIGHT``) has more than one way to each product, chosen per shape
like a convolution's algorithm (``kernels.tuning``: by measurement where ``scratchnet
tune`` measured this machine, else by ``builtin``):

    fwd  blas (x @ w) or skinny (``skinny.py``, 2-12 rows, float32)
    dx   blas (dy @ wᵀ), blas-t (the transposed product (w @ dyᵀ)ᵀ) or skinny
    dw   blas (xᵀ @ dy) or skinny

The built-in rule takes skinny for dw where it applies on a CPU with AVX-512 (deep-CNN fc1
at batch 10 on the AMD EPYC, candidates interleaved, medians of 60: 1.00 against 1.37-1.58
ms; the forward product and dx tied with OpenBLAS there, 1.70-1.91 against 1.61-1.83 and
1.64-1.73 against blas-t's 1.53-2.01, so they stay with it unless ``scratchnet tune``
measures otherwise), and blas-t for dx: for deep-CNN fc1 at batch 50 (50 × 1024 @ 1024 ×
3136) OpenBLAS runs the transposed product 25 % faster (single thread 6.5 -> 4.9 ms; the
weight streams through once either way, the other orientation packs it less well), and
transposing the small [N, In] result back costs ~0.1 ms.
"""

from __future__ import annotations

import numpy as np

from . import skinny, tuning

BIG_WEIGHT = 1 << 20  # elements (deep-CNN fc1 has 3.2 M); smaller layers always run blas
ALGORITHMS = {"dense-fwd": ("blas", "skinny"), "dense-dx": ("blas", "blas-t", "skinny"),
              "dense-dw": ("blas", "skinny")}


def applicable(pass_: str, key) -> list[str]:
    """The algorithms of ``pass_`` for ``key`` (``tuning.dense_key``); [] when there is
    nothing to choose (a small weight, or only blas)."""
    _, m, k, n, dtype = key
    algorithms = (["blas"] + (["blas-t"] if pass_ == "dense-dx" else [])
                  + (["skinny"] if skinny.fits(m, k, n, dtype) else []))
    return algorithms if k * n >= BIG_WEIGHT and len(algorithms) > 1 else []


def builtin(pass_: str, key) -> str:
    """The algorithm that runs where nothing was measured."""
    algorithms = applicable(pass_, key)
    if pass_ == "dense-dw" and "skinny" in algorithms and skinny.AVX512:
        return "skinny"
    return "blas-t" if "blas-t" in algorithms else "blas"


def choose(pass_: str, m: int, w: np.ndarray) -> str:
    """What ``pass_`` runs for a batch of ``m`` rows against ``w``."""
    if w.size < BIG_WEIGHT:
        return "blas"
    algorithm = tuning.dense_choice(pass_, tuning.dense_key(m, w.shape, w.dtype))[0].algorithm
    return algorithm if algorithm != "skinny" or w.flags.c_contiguous else "blas"


def forward_with(algorithm: str, x, w):
    """y = x @ w by ``algorithm``."""
    return skinny.forward(x, w) if algorithm == "skinny" else np.matmul(x, w)


def input_grad_with(algorithm: str, dy, w):
    """dx = dy @ wᵀ by ``algorithm``."""
    if algorithm == "skinny":
        return skinny.input_grad(dy, w)
    if algorithm == "blas-t":
        return np.ascontiguousarray(np.matmul(w, dy.T).T)
    return np.matmul(dy, w.T)


def weight_grad_with(algorithm: str, x, dy):
    """dw = xᵀ @ dy by ``algorithm``."""
    return skinny.weight_grad(x, dy) if algorithm == "skinny" else np.matmul(x.T, dy)


def dense_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray):
    """Return ``y [N, Out]`` and the cache ``(x, w)``."""
    y = forward_with(choose("dense-fwd", len(x), w), x, w)
    y += b
    return y, (x, w)


def _weight_grad(x, dy, w):
    return weight_grad_with(choose("dense-dw", len(x), w), x, dy)


def dense_backward(dy: np.ndarray, cache):
    """Return ``dx [N, In], dw [In, Out], db [Out]``."""
    x, w = cache
    return input_grad_with(choose("dense-dx", len(dy), w), dy, w), _weight_grad(x, dy, w), dy.sum(axis=0)


def dense_backward_params(dy: np.ndarray, cache):
    """Return ``dw [In, Out], db [Out]`` only (a first layer: no input gradient)."""
    x, w = cache
    return _weight_grad(x, dy, w), dy.sum(axis=0)
