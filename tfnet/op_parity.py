"""``assert_op``: a NumPy op with a hand-written backward against a TensorFlow function, in
one line of a test (tinygrad's ``helper_test_op``, with gradients)::

    assert_op(relu_forward, relu_backward, tf.nn.relu, [(4, 9)], away_from=0.0)
    assert_op(dense_forward, dense_backward, lambda x, w, b: x @ w + b, [(5, 7), (7, 4), (4,)])

Random standard-normal inputs of ``shapes`` (``away_from``: a kink or a list of kinks, every
value moved at least ``margin`` from each) go into both sides. NumPy: ``y, cache =
numpy_forward(*xs)`` and ``numpy_backward(r, cache)`` -> the input gradients (one array,
or a tuple with one per input). TensorFlow: ``tf_fn(*tensors)`` under a ``GradientTape``
with ``L = Σ y·r`` for a fixed random r. The rows y, dx0, dx1, ... are judged by the layer
section's criterion for the dtype (float64: max rel err <= 1e-10; float32: scaled err <=
1e-5), or on the max abs error when ``atol`` (the output) / ``grad_atol`` (the gradients)
are given. A failure raises ``AssertionError`` with the table; success returns the ``Case``.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def op_inputs(shapes, dtype=np.float64, *, away_from=None, margin: float = 0.05, seed: int = 0) -> list:
    """Standard-normal arrays of ``shapes``, each value at least ``margin`` from every kink."""
    rng = np.random.default_rng(seed)
    kinks = [] if away_from is None else np.atleast_1d(away_from)
    xs = []
    for shape in shapes:
        x = rng.standard_normal(shape)
        for k in kinks:
            near = np.abs(x - k) < margin
            x[near] = k + np.where(x[near] >= k, margin, -margin)
        xs.append(x.astype(dtype))
    return xs


def assert_op(numpy_forward, numpy_backward, tf_fn, shapes, *, dtype=np.float64, atol: float | None = None,
              grad_atol: float | None = None, away_from=None, margin: float = 0.05, seed: int = 0,
              name: str | None = None):
    """Compare output and every input gradient of a NumPy op with ``tf_fn`` (module doc)."""
    from ._tf import import_tf
    from .parity import CRITERION, TOLERANCES, Case

    tf = import_tf()
    dtype = np.dtype(dtype)
    xs = op_inputs(shapes, dtype, away_from=away_from, margin=margin, seed=seed)
    y, cache = numpy_forward(*(x.copy() for x in xs))
    r = np.random.default_rng(seed + 1).standard_normal(np.shape(y)).astype(dtype)
    grads = numpy_backward(r, cache)
    grads = list(grads) if isinstance(grads, (tuple, list)) else [grads]

    ts = [tf.constant(x) for x in xs]
    with tf.GradientTape() as tape:
        for t in ts:
            tape.watch(t)
        yt = tf_fn(*ts)
        loss = tf.reduce_sum(yt * tf.constant(r))
    tgrads = tape.gradient(loss, ts)

    label = name or getattr(numpy_forward, "__name__", "op")
    case = Case("ops", f"{label} on {', '.join(map(str, shapes))}", dtype.name, TOLERANCES[dtype.name]["layers"],
                CRITERION[dtype.name]["layers"], note="L = Σ y·r; TF's gradients from GradientTape")
    if len(grads) != len(xs):
        raise AssertionError(f"{label}: the backward returned {len(grads)} gradients for {len(xs)} inputs")
    pairs = [("y", y, yt.numpy(), atol)] + [
        (f"dx{k}", g, np.zeros(np.shape(x)) if tg is None else tg.numpy(), grad_atol)
        for k, (x, g, tg) in enumerate(zip(xs, grads, tgrads))]
    for tensor, ours, theirs, abs_tol in pairs:
        row = case.add(tensor, ours, theirs)
        if abs_tol is not None:  # judged on the max abs error instead
            case.rows[-1] = dataclasses.replace(row, error=row.max_abs, ok=row.max_abs <= abs_tol, tol=abs_tol)
    case.first_failure = next((r.tensor for r in case.rows if not r.ok), None)
    if not case.ok:
        raise AssertionError("\n" + case.table())
    return case
