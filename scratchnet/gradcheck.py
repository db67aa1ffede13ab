"""Gradient checking: analytic gradients against central finite differences.

For a layer or model ``f`` and a fixed random projection ``r`` of its output, the scalar
``L(x, θ) = Σ f(x; θ) · r`` (or a loss of the caller's, ``loss=``) has gradients
``backward(r)`` (analytic) which we compare, for the input and every parameter, with the
fourth-order central difference

    dL/dθ_k ≈ [ -L(θ + 2h e_k) + 8 L(θ + h e_k) - 8 L(θ - h e_k) + L(θ - 2h e_k) ] / 12h

(truncation error O(h⁴), round-off O(ε/h): the two balance near h = ε^(1/5), so the step
is chosen per dtype, ``STEP``: 1e-3 in float64 (about 1e-12 of error), 3e-2 in float32,
where round-off hides errors below about 1e-4 and a ``GradCheckWarning`` says so).

``fast=True`` checks each tensor along ``directions`` random unit vectors u instead of every
element: ``<∇L, u>`` against the same stencil along u, 4 evaluations per direction instead
of 4 per element (PyTorch's fast gradcheck, Chainer's ``check_backward``). A tensor that
fails falls back to the full check, so a failure still names the worst element.

A ``GradCheckWarning`` is also raised when an input of a ReLU lies within 2h of 0 or a
max-pool window holds two values within 2h of each other (a tie): a difference across a
kink measures a blend of two slopes and fails a correct backward.

Per tensor the report gives
    max_abs = max_k |a_k - n_k|
    max_rel = max_k |a_k - n_k| / max(|a_k| + |n_k|, floor)     (CS231n's relative error)
with ``floor = 1e-6 · max_k(|a_k| + |n_k|)`` so that elements that are zero up to
round-off are judged against the tensor's scale, not against themselves; and for a
failing tensor its worst element (index, analytic, numeric) and that element's
neighbours (±1 along each axis), where a shifted index or a wrong axis shows.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from fnmatch import fnmatch

import numpy as np

STEP = {np.dtype(np.float64): 1e-3, np.dtype(np.float32): 3e-2}


class GradCheckWarning(UserWarning):
    """A check that may fail a correct backward: float32, or an input at a kink."""


@dataclass
class TensorCheck:
    name: str
    shape: tuple
    max_abs: float
    max_rel: float
    mode: str = "full"        # "full", "fast" (directional), "fast -> full" (fell back)
    worst: tuple | None = None  # (index, analytic, numeric) of the element with the largest rel err
    neighbours: list = field(default_factory=list)  # [(index, analytic, numeric)], ±1 along each axis

    def ok(self, rtol: float) -> bool:
        return self.max_rel <= rtol

    def describe_worst(self) -> str:
        """``worst (1, 2): analytic 0.5, numeric 1; neighbours (0, 2): 0.3/0.3, …``."""
        if self.worst is None:
            return ""
        pairs = ", ".join(f"{i}: {a:.4g}/{n:.4g}" for i, a, n in self.neighbours)
        index, a, n = self.worst
        return (f"worst {self.name}{list(index)}: analytic {a:.4g}, numeric {n:.4g}"
                + (f"; neighbours (analytic/numeric) {pairs}" if pairs else ""))


@dataclass
class GradCheckReport:
    tensors: list[TensorCheck]
    h: float = 1e-3
    warnings: list[str] = field(default_factory=list)

    @property
    def max_rel(self) -> float:
        return max(t.max_rel for t in self.tensors)

    def ok(self, rtol: float = 1e-6) -> bool:
        return all(t.ok(rtol) for t in self.tensors)

    def failures(self, rtol: float = 1e-6) -> list[TensorCheck]:
        return [t for t in self.tensors if not t.ok(rtol)]

    def table(self, rtol: float = 1e-6) -> str:
        fast = any(t.mode != "full" for t in self.tensors)
        rows = [f"{'tensor':<24} {'shape':<20} {'max abs err':>12} {'max rel err':>12}  result"
                + ("  mode" if fast else "")]
        for t in self.tensors:
            rows.append(f"{t.name:<24} {str(t.shape):<20} {t.max_abs:12.3e} {t.max_rel:12.3e}  "
                        f"{'ok' if t.ok(rtol) else 'FAIL'}" + (f"  {t.mode}" if fast else ""))
            if not t.ok(rtol) and t.worst is not None:
                rows.append(f"    {t.describe_worst()}")
        rows += [f"warning: {w}" for w in self.warnings]
        return "\n".join(rows)

    __str__ = table


def compare(name: str, analytic: np.ndarray, numeric: np.ndarray) -> TensorCheck:
    """Max absolute and relative error between two arrays (definitions in the module doc),
    and the worst element."""
    a, n = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    diff = np.abs(a - n)
    size = np.abs(a) + np.abs(n)
    floor = max(1e-6 * float(size.max(initial=0.0)), np.finfo(np.float64).tiny)
    rel = diff / np.maximum(size, floor)
    worst = None
    if a.size:
        k = np.unravel_index(int(np.argmax(rel)), a.shape)
        worst = (tuple(int(i) for i in k), float(a[k]), float(n[k]))
    return TensorCheck(name, a.shape, float(diff.max(initial=0.0)), float(rel.max(initial=0.0)), worst=worst)


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


def directional_derivative(f, x: np.ndarray, u: np.ndarray, h: float = 1e-3) -> float:
    """<∇f, u> by the same fourth-order stencil along ``u`` (``x`` perturbed in place, then restored)."""
    orig = x.copy()
    values = []
    for step in (2 * h, h, -h, -2 * h):
        x[...] = orig + step * u
        values.append(f())
    x[...] = orig
    return (-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * h)


def kinks(net, x: np.ndarray, h: float, training: bool = False) -> list[str]:
    """The layers of ``net`` whose input sits within 2h of a kink: ReLU inputs near 0,
    max-pool windows whose two largest values are within 2h (one message per layer)."""
    from .ops.conv import pad_spatial, spatial_geometry

    found = []
    for layer in getattr(net, "layers", [net]):
        kind = type(layer).__name__
        if kind == "ReLU":
            near = int(np.count_nonzero(np.abs(x) < 2 * h))
            if near:
                found.append(f"{layer.describe()}: {near} input(s) within 2h = {2 * h:g} of 0")
        elif kind == "MaxPool2D":
            (kh, kw), (sh, sw) = layer.pool_size, layer.stride
            (ho, wo), pads = spatial_geometry(x.shape, layer.pool_size, layer.stride, layer.padding)
            xp = pad_spatial(x.astype(np.float64), pads, value=-np.inf)
            windows = np.sort(np.stack([xp[:, p:p + sh * ho:sh, q:q + sw * wo:sw, :]
                                        for p in range(kh) for q in range(kw)]), axis=0)
            ties = int(np.count_nonzero(windows[-1] - windows[-2] < 2 * h)) if kh * kw > 1 else 0
            if ties:
                found.append(f"{layer.describe()}: {ties} window(s) with two values within 2h = {2 * h:g} (a tie)")
        x = layer.forward(x, training)
    return found


def _neighbours(index, shape, analytic, loss, tensor, h) -> list:
    out = []
    for axis in range(len(shape)):
        for d in (-1, 1):
            j = list(index)
            j[axis] += d
            if 0 <= j[axis] < shape[axis]:
                k = int(np.ravel_multi_index(j, shape))
                out.append((tuple(j), float(analytic.reshape(-1)[k]),
                            float(numerical_gradient(loss, tensor, h, [k]).reshape(-1)[k])))
    return out


def check_gradients(net, x: np.ndarray, *, training: bool = False, seed: int = 0, h: float | None = None,
                    max_checks: int | None = None, params=None, input: bool = True, loss=None,
                    fast: bool = False, directions: int = 3, rtol: float = 1e-6) -> GradCheckReport:
    """Check ``net``'s (a layer or ``Sequential``) input and parameter gradients at ``x``.

    ``h``: the step (default ``STEP[dtype]``). ``max_checks`` bounds the elements checked
    per tensor (a random sample) for big tensors. ``params``: only the parameters whose names
    match one of these ``fnmatch`` patterns (``["conv1/*", "fc2/b"]``; default all);
    ``input=False`` skips the input. ``loss``: ``y -> (L, dL/dy)`` instead of ``Σ y·r``
    (a model with its loss: ``lambda y: softmax_cross_entropy(y, labels)``). ``fast``:
    ``directions`` random directions per tensor, the full check where one fails by ``rtol``.
    Layers with randomness (dropout) must be given a fixed mask for the check to be valid.
    """
    rng = np.random.default_rng(seed)
    x = np.array(x, copy=True)
    h = STEP.get(x.dtype, 1e-3) if h is None else h
    notes = []
    if x.dtype == np.float32:
        notes.append(f"checking in float32 (step h = {h:g}): float32 round-off hides errors below about 1e-4; "
                     "check in float64")
    notes += kinks(net, x, h, training)
    for note in notes:
        warnings.warn(note, GradCheckWarning, stacklevel=2)

    y = net.forward(x, training)
    if loss is None:
        r = rng.standard_normal(y.shape).astype(x.dtype)
        value = lambda: float(np.sum(net.forward(x, training).astype(np.float64) * r))  # noqa: E731
    else:
        r = np.asarray(loss(y)[1], x.dtype)
        value = lambda: float(loss(net.forward(x, training))[0])  # noqa: E731
    value()
    dx = net.backward(r)
    analytic = {"input": dx, **{k: g.copy() for k, g in net.grads.items()}}
    names = list(net.params)
    if params is not None:
        unmatched = [p for p in params if not any(fnmatch(n, p) for n in names)]
        if unmatched:
            raise KeyError(f"no parameter matches {unmatched}; parameters: {names}")
        names = [n for n in names if any(fnmatch(n, p) for p in params)]
    targets = ({"input": x} if input else {}) | {k: net.params[k] for k in names}

    checks = []
    for name, tensor in targets.items():
        a_full = analytic[name]
        if fast:
            us = [u / np.linalg.norm(u) for u in (rng.standard_normal(tensor.shape) for _ in range(directions))]
            c = compare(name, [float(np.sum(a_full * u)) for u in us],
                        [directional_derivative(value, tensor, u.astype(tensor.dtype), h) for u in us])
            c.shape, c.mode, c.worst = tensor.shape, "fast", None
            if c.ok(rtol):
                checks.append(c)
                continue
        idx = None
        if max_checks is not None and tensor.size > max_checks:
            idx = rng.choice(tensor.size, max_checks, replace=False)
        numeric = numerical_gradient(value, tensor, h, idx)
        a = a_full
        if idx is not None:
            a, numeric = a.reshape(-1)[idx], numeric.reshape(-1)[idx]
        c = compare(name, a, numeric)
        c.mode = "fast -> full" if fast else "full"
        if c.worst is not None:
            index = (np.unravel_index(int(idx[c.worst[0][0]]), tensor.shape) if idx is not None else c.worst[0])
            index = tuple(int(i) for i in index)
            c.shape, c.worst = tensor.shape, (index, *c.worst[1:])
            if not c.ok(rtol):
                c.neighbours = _neighbours(index, tensor.shape, a_full, value, tensor, h)
        checks.append(c)
    return GradCheckReport(checks, h, notes)


def check_function(f, inputs: dict[str, np.ndarray], *, h: float = 1e-3) -> GradCheckReport:
    """Check a scalar function with its own gradients: ``f(**inputs) -> (value, {name: grad})``."""
    arrays = {k: np.array(v, copy=True) for k, v in inputs.items()}
    _, grads = f(**arrays)
    value = lambda: float(f(**arrays)[0])  # noqa: E731
    return GradCheckReport([compare(k, grads[k], numerical_gradient(value, arrays[k], h)) for k in grads], h)
