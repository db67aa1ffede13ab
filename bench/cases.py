"""The benchmarked operations at the recipes' real shapes, each buildable in every
implementation: ``numpy`` (scratchnet.ops, the reference), ``fast`` (scratchnet.kernels),
``tf`` (TensorFlow ops in a ``tf.function``) and ``tf-xla`` (the same with
``jit_compile=True``). ``tf-keras`` (Keras ``Model.fit``) exists for whole training steps
only (``bench.keras_fit``); ``KERNEL_IMPLS`` are the ones a single operation has.

``build(case, op, impl)`` returns a zero-argument callable that runs the operation once
on fixed float32 inputs (created outside the timing) and returns its result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IMPLS = ("numpy", "fast", "tf", "tf-xla", "tf-keras")
KERNEL_IMPLS = IMPLS[:4]


@dataclass(frozen=True)
class Case:
    name: str      # e.g. "deep-cnn conv2"
    kind: str      # conv | pool | dense | lstm | relu | batchnorm
    shape: tuple   # kind-specific
    ops: tuple     # which of fwd / dx / dw / bwd / fwd+bwd are timed
    algorithm: str = "auto"  # conv, fast: "direct" never uses Winograd (scratchnet.kernels.conv_algorithm)

    @property
    def winograd(self) -> bool:
        """Whether the fast kernel's forward runs Winograd, F(2×2) or F(4×4), by the tuning
        cache or the built-in rule (then its GFLOPS are direct-convolution FLOPs per second:
        an effective rate, for comparison with the other columns)."""
        from scratchnet.kernels.tuning import choice_for
        from scratchnet.kernels.winograd import TILE
        if self.kind != "conv" or self.algorithm == "direct":
            return False
        n, h, w, c, kh, kw, f, s = self.shape
        return choice_for("fwd", (n, h, w, c), (kh, kw, c, f), s).algorithm in TILE

    def flops(self, op: str) -> float | None:
        """Floating-point operations (a multiply-add counts 2) of one call, or None."""
        if self.kind == "conv":
            n, h, w, c, kh, kw, f, s = self.shape
            one = 2.0 * n * (-(-h // s)) * (-(-w // s)) * f * kh * kw * c
            return {"fwd": one, "dx": one, "dw": one, "bwd": 2 * one}.get(op)
        if self.kind == "dense":
            n, i, o = self.shape
            one = 2.0 * n * i * o
            return {"fwd": one, "bwd": 2 * one}.get(op)
        if self.kind == "lstm":
            n, t, d, h = self.shape
            one = 2.0 * t * n * (d + h) * 4 * h
            return {"fwd": one, "bwd": 2 * one, "fwd+bwd": 3 * one}.get(op)
        return None


CASES = [
    Case("deep-cnn conv1", "conv", (50, 28, 28, 1, 5, 5, 32, 1), ("fwd", "dx", "dw", "bwd")),
    Case("deep-cnn conv2", "conv", (50, 14, 14, 32, 5, 5, 64, 1), ("fwd", "dx", "dw", "bwd")),
    Case("deep-cnn conv2 direct", "conv", (50, 14, 14, 32, 5, 5, 64, 1), ("fwd", "dx", "dw", "bwd"), "direct"),
    Case("conv3 conv1", "conv", (100, 28, 28, 1, 6, 6, 6, 1), ("fwd", "dx", "dw", "bwd")),
    Case("conv3 conv2", "conv", (100, 28, 28, 6, 5, 5, 12, 2), ("fwd", "dx", "dw", "bwd")),
    Case("conv3 conv3", "conv", (100, 14, 14, 12, 4, 4, 24, 2), ("fwd", "dx", "dw", "bwd")),
    Case("deep-cnn pool1", "pool", (50, 28, 28, 32), ("fwd", "bwd")),
    Case("deep-cnn pool2", "pool", (50, 14, 14, 64), ("fwd", "bwd")),
    Case("deep-cnn relu1", "relu", (50, 28, 28, 32), ("fwd", "bwd")),
    Case("deep-cnn fc1", "dense", (50, 3136, 1024), ("fwd", "bwd")),
    Case("lstm 28x128", "lstm", (128, 28, 28, 128), ("fwd", "bwd", "fwd+bwd")),
    # conv-bn's four batch normalisations (offset, no scale); fwd includes the moments
    Case("conv-bn bn1", "batchnorm", (100, 28, 28, 24), ("fwd", "bwd", "fwd+bwd")),
    Case("conv-bn bn2", "batchnorm", (100, 14, 14, 48), ("fwd", "bwd", "fwd+bwd")),
    Case("conv-bn bn3", "batchnorm", (100, 7, 7, 64), ("fwd", "bwd", "fwd+bwd")),
    Case("conv-bn bn4", "batchnorm", (100, 200), ("fwd", "bwd", "fwd+bwd")),
]


def _arrays(case: Case, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    if case.kind == "conv":
        n, h, w, c, kh, kw, f, s = case.shape
        ho, wo = -(-h // s), -(-w // s)
        return {"x": r(n, h, w, c), "w": r(kh, kw, c, f) * 0.1, "b": r(f), "dy": r(n, ho, wo, f), "s": s}
    if case.kind == "batchnorm":
        return {"x": r(*case.shape) + 0.5, "offset": r(case.shape[-1]), "dy": r(*case.shape)}
    if case.kind in ("pool", "relu"):
        n, h, w, c = case.shape
        ho, wo = (-(-h // 2), -(-w // 2)) if case.kind == "pool" else (h, w)
        return {"x": r(n, h, w, c), "dy": r(n, ho, wo, c)}
    if case.kind == "dense":
        n, i, o = case.shape
        return {"x": r(n, i), "w": r(i, o) * 0.02, "b": r(o), "dy": r(n, o)}
    if case.kind == "lstm":
        n, t, d, h = case.shape
        return {"x": r(n, t, d), "k": r(d + h, 4 * h) * 0.09, "b": np.zeros(4 * h, np.float32), "dy": r(n, t, h)}
    raise ValueError(case.kind)


def build(case: Case, op: str, impl: str):
    """A zero-argument callable running ``op`` of ``case`` in ``impl``, or None if that
    implementation does not offer the op separately."""
    a = _arrays(case)
    if impl in ("numpy", "fast"):
        return _build_numpy(case, op, impl, a)
    from .tf_ops import build_tf
    return build_tf(case, op, a, xla=(impl == "tf-xla"))


def _build_conv(m, op, impl, a):
    import scratchnet.kernels as fast
    fwd = lambda: m.conv2d_forward(a["x"], a["w"], a["b"], a["s"], "SAME")  # noqa: E731
    _, cache = fwd()
    if op == "fwd":
        return fwd
    if op == "bwd":
        return lambda: m.conv2d_backward(a["dy"], cache)
    if impl == "fast":  # the reference computes dx and dw together only
        part = fast.conv.conv2d_backward_input if op == "dx" else fast.conv.conv2d_backward_filter
        return lambda: part(a["dy"], cache)
    return None


def _build_numpy(case, op, impl, a):
    import scratchnet.kernels as fast
    import scratchnet.ops as ref
    m = fast if impl == "fast" else ref
    k = case.kind
    if k == "conv":
        with fast.conv_algorithm(case.algorithm):
            fn = _build_conv(m, op, impl, a)
        if fn is None:
            return None

        def run():
            with fast.conv_algorithm(case.algorithm):
                return fn()
        return run
    if k == "pool":
        fwd = lambda: m.max_pool_forward(a["x"], (2, 2), (2, 2), "SAME")  # noqa: E731
        _, cache = fwd()
        return fwd if op == "fwd" else (lambda: m.max_pool_backward(a["dy"], cache))
    if k == "relu":
        fwd = lambda: m.relu_forward(a["x"])  # noqa: E731
        return fwd if op == "fwd" else (lambda: m.relu_backward(a["dy"], a["x"]))
    if k == "dense":
        fwd = lambda: m.dense_forward(a["x"], a["w"], a["b"])  # noqa: E731
        _, cache = fwd()
        return fwd if op == "fwd" else (lambda: m.dense_backward(a["dy"], cache))
    if k == "batchnorm":
        def fwd():
            mean, var = m.moments(a["x"])
            return m.batchnorm_forward(a["x"], mean, var, a["offset"], None, 1e-5)
        _, cache = fwd()
        if op == "fwd":
            return fwd
        if op == "bwd":
            return lambda: m.batchnorm_backward(a["dy"], cache)
        return lambda: m.batchnorm_backward(a["dy"], fwd()[1])
    if k == "lstm":
        fwd = lambda: m.lstm_forward(a["x"], a["k"], a["b"], 1.0)  # noqa: E731
        _, cache = fwd()
        if op == "fwd":
            return fwd
        if op == "bwd":
            return lambda: m.lstm_backward(a["dy"], cache)
        return lambda: m.lstm_backward(a["dy"], fwd()[1])
    raise ValueError(k)
