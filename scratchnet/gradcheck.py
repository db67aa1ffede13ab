"""Gradient checking: analytic gradients against central finite differences.

For a layer or model ``f`` and a fixed random projection ``r`` of its output, the scalar
``L(x, θ) = Σ f(x; θ) · r`` has gradients ``backward(r)`` (analytic) which we compare, for
the input and every parameter, with the fourth-order central difference

    dL/dθ_k ≈ [ -L(θ + 2h e_k) + 8 L(θ + h e_k) - 8 L(θ - h e_k) + L(θ - 2h e_k) ] / 12h

(truncation error O(h⁴), round-off O(ε/h): h = 1e-3 balances the two at about 1e-12 in
float64). Run it in float64 and at least 2h away from kinks (ReLU at 0, max-pool ties).

Per tensor the report gives
    max_abs = max_k |a_k - n_k|
    max_rel = max_k |a_k - n_k| / max(|a_k| + |n_k|, floor)     (CS231n's relative error)
with ``floor = 1e-6 · max_k(|a_k| + |n_k|)`` so that elements that are zero up to
round-off are judged against the tensor's scale, not against themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TensorCheck:
    name: str
    shape: tuple
    max_abs: float
    max_rel: float

    def ok(self, rtol: float) -> bool:
        return self.max_rel <= rtol


@dataclass
class GradCheckReport:
    tensors: list[TensorCheck]

    @property
    def max_rel(self) -> float:
        return max(t.max_rel for t in self.tensors)

    def ok(self, rtol: float = 1e-6) -> bool:
        return all(t.ok(rtol) for t in self.tensors)

    def failures(self, rtol: float = 1e-6) -> list[TensorCheck]:
        return [t for t in self.tensors if not t.ok(rtol)]

    def table(self, rtol: float = 1e-6) -> str:
        rows = [f"{'tensor':<24} {'shape':<20} {'max abs err':>12} {'max rel err':>12}  result"]
        for t in self.tensors:
            rows.append(f"{t.name:<24} {str(t.shape):<20} {t.max_abs:12.3e} {t.max_rel:12.3e}  "
                        f"{'ok' if t.ok(rtol) else 'FAIL'}")
        return "\n".join(rows)

    __str__ = table


def compare(name: str, analytic: np.ndarray, numeric: np.ndarray) -> TensorCheck:
    """Max absolute and relative error between two arrays (definitions in the module doc)."""
    a, n = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    diff = np.abs(a - n)
    size = np.abs(a) + np.abs(n)
    floor = max(1e-6 * float(size.max(initial=0.0)), np.finfo(np.float64).tiny)
    return TensorCheck(name, a.shape, float(diff.max(initial=0.0)),
                       float((diff / np.maximum(size, floor)).max(initial=0.0)))


def numerical_gradient(f, x: np.ndarray, h: float = 1e-3, indices=None) -> np.ndarray:
    """Fourth-order central differences of the scalar ``f()`` w.r.t. ``x`` (perturbed in place).

    ``indices``: flat indices to check (default all); the others are left at 0.
    """
    grad = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for k in (range(flat.size) if indices is None else indices):
        orig = flat[k]
        values = []
        for step in (2 * h, h, -h, -2 * h):
            flat[k] = orig + step
            values.append(f())
        flat[k] = orig
        gflat[k] = (-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * h)
    return grad


def check_gradients(net, x: np.ndarray, *, training: bool = False, seed: int = 0, h: float = 1e-3,
                    max_checks: int | None = None) -> GradCheckReport:
    """Check ``net``'s (a layer or ``Sequential``) input and parameter gradients at ``x``.

    ``max_checks`` bounds the elements checked per tensor (a random sample) for big tensors.
    Layers with randomness (dropout) must be given a fixed mask for the check to be valid.
    """
    rng = np.random.default_rng(seed)
    x = np.array(x, copy=True)
    r = rng.standard_normal(net.forward(x, training).shape).astype(x.dtype)
    loss = lambda: float(np.sum(net.forward(x, training).astype(np.float64) * r))  # noqa: E731

    loss()
    dx = net.backward(r)
    analytic = {"input": dx, **{k: g.copy() for k, g in net.grads.items()}}
    targets = {"input": x, **net.params}

    checks = []
    for name, tensor in targets.items():
        idx = None
        if max_checks is not None and tensor.size > max_checks:
            idx = rng.choice(tensor.size, max_checks, replace=False)
        numeric = numerical_gradient(loss, tensor, h, idx)
        a = analytic[name]
        if idx is not None:
            a, numeric = a.reshape(-1)[idx], numeric.reshape(-1)[idx]
        checks.append(compare(name, a, numeric))
    return GradCheckReport(checks)


def check_function(f, inputs: dict[str, np.ndarray], *, h: float = 1e-3) -> GradCheckReport:
    """Check a scalar function with its own gradients: ``f(**inputs) -> (value, {name: grad})``."""
    arrays = {k: np.array(v, copy=True) for k, v in inputs.items()}
    _, grads = f(**arrays)
    value = lambda: float(f(**arrays)[0])  # noqa: E731
    return GradCheckReport([compare(k, grads[k], numerical_gradient(value, arrays[k], h)) for k in grads])
