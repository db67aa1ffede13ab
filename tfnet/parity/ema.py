"""Section ``ema``: ``tf.train.ExponentialMovingAverage`` with and without num_updates."""

from __future__ import annotations


import numpy as np

from .metrics import Case, _new_case
from .optim import OPTIM_SHAPES


def check_ema(decay: float, num_updates: bool, dtype=np.float64, steps: int = 100, seed: int = 0) -> Case:
    """``steps`` applications to a random walk of parameters, against
    ``tf.train.ExponentialMovingAverage`` (its decay is float32 in TF: scratchnet's
    ``decay_dtype="float32"``)."""
    from scratchnet.optim import ExponentialMovingAverage

    from .._tf import import_tf

    tf = import_tf()
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(0, 1, s).astype(dtype) for k, s in OPTIM_SHAPES.items()}
    variables = {k: tf.Variable(v) for k, v in params.items()}
    step = tf.Variable(0, dtype=tf.int64)
    theirs = tf.train.ExponentialMovingAverage(decay, num_updates=step if num_updates else None)
    ours = ExponentialMovingAverage(decay, num_updates=num_updates, decay_dtype="float32")
    ours.apply(params, 0 if num_updates else None)
    theirs.apply(list(variables.values()))
    case = _new_case("ema", f"decay {decay}{', num_updates = step' if num_updates else ''} ({steps} updates)",
                     dtype, note="shadows start at the initial values; decay computed in float32 by both")
    for t in range(1, steps + 1):
        for k, v in params.items():
            v += rng.normal(0, 0.1, v.shape).astype(dtype)
            variables[k].assign(v)
        step.assign(t)
        ours.apply(params, t if num_updates else None)
        theirs.apply(list(variables.values()))
        if t in (1, steps):
            for k in params:
                case.add(f"ema/{k} after {t}", ours.averages[k], theirs.average(variables[k]).numpy())
    return case


def run_ema(dtype=np.float64, steps: int = 100, seed: int = 0) -> list[Case]:
    return [check_ema(0.99, True, dtype, steps, seed), check_ema(0.9, False, dtype, steps, seed),
            check_ema(0.999, True, dtype, steps, seed)]


# --- trajectories ----------------------------------------------------------------------------------
