"""Section ``schedules``: every recipe's learning-rate schedule over its whole range of steps."""

from __future__ import annotations

import dataclasses

import numpy as np

from .metrics import Case, _new_case


def check_schedule(label, schedule, last_step: int, dtype=np.float64) -> Case:
    """The schedule at every step 0..last_step against TensorFlow's (one vectorised call:
    the TF schedule is elementwise in the step)."""
    from .._tf import import_tf
    from ..train import tf_schedule

    tf = import_tf()
    dtype = np.dtype(dtype)
    ours = schedule
    if "dtype" in schedule.to_config():
        ours = dataclasses.replace(schedule, dtype=dtype.name)
    steps = np.arange(last_step + 1)
    mine = np.array([ours(int(s)) for s in steps], np.float64)
    theirs = tf_schedule(schedule, tf.constant(steps, tf.int64), dtype)
    theirs = theirs() if callable(theirs) else theirs
    theirs = np.broadcast_to(np.asarray(theirs, np.float64), mine.shape)
    note = ("TF: float64 tensors for every constant" if dtype == np.float64
            else "TF: Python floats (float32 math), scratchnet schedule with dtype='float32'")
    case = _new_case("schedules", f"{label}, steps 0..{last_step}", dtype, note=note)
    case.add("learning rate", mine, theirs)
    return case


def run_schedules(dtype=np.float64) -> list[Case]:
    from scratchnet.optim import schedules
    from scratchnet.recipes import RECIPES

    cases = [check_schedule(f"recipe {r.name}: {r.learning_rate.to_config()['schedule']}", r.learning_rate,
                            r.steps, dtype) for r in RECIPES.values()]
    cases.append(check_schedule("exponential_decay(0.1, 100, 0.96)", schedules.exponential_decay(0.1, 100, 0.96),
                                20000, dtype))
    cases.append(check_schedule("exponential_decay(0.8, 550, 0.99, staircase)",
                                schedules.exponential_decay(0.8, 550, 0.99, staircase=True), 100000, dtype))
    return cases


# --- moving average ---------------------------------------------------------------------------------
