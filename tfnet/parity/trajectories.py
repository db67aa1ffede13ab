"""Section ``trajectories``: every recipe trained in both engines from the same weights,
batches and dropout masks, compared along the way."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from .metrics import Case, _new_case, _norm_distance, tolerance
from .models import MaskStream, training_images


def checkpoints(steps: int) -> list[int]:
    """The steps at which the whole state is compared."""
    marks = {1, 2, 3, 5, steps} | set(range(10, steps + 1, 10))
    return sorted(s for s in marks if s <= steps)


def _in_dtype(recipe, dtype):
    """``recipe`` with its schedule computed in ``dtype`` (what TF computes in)."""
    lr = recipe.learning_rate
    if hasattr(lr, "to_config") and "dtype" in lr.to_config():
        recipe = recipe.with_overrides(learning_rate=dataclasses.replace(lr, dtype=np.dtype(dtype).name))
    return recipe


def _scratchnet_trainer(recipe, dtype, seed):
    from scratchnet.train import Trainer

    trainer = Trainer(_in_dtype(recipe, dtype), seed=seed, dtype=np.dtype(dtype))
    if trainer.ema is not None:
        trainer.ema.decay_dtype = np.dtype("float32")
    return trainer


def parity_trainers(recipe, dtype=np.float64, seed: int = 1):
    """A scratchnet ``Trainer`` and a tfnet ``TFTrainer`` set up to take identical steps:
    same initial weights (scratchnet's, for ``seed``), the schedule computed in the run's
    dtype on both sides, and the EMA decay in float32 on both sides (TF's rule)."""
    from ..train import TFTrainer

    theirs = TFTrainer(_in_dtype(recipe, dtype), seed=seed, dtype=np.dtype(dtype))
    return _scratchnet_trainer(recipe, dtype, seed), theirs


# float32 trajectories. Two float32 runs of a chaotic training loop part by however much
# float32 round-off moves each of them, so the bound is the triangle inequality through
# the float64 runs of both engines started from the same float32 state:
#   ||ours32 - tf32|| <= ||ours32 - ours64|| + ||ours64 - tf64|| + ||tf64 - tf32||
# Each tensor passes if its norm err <= max(1e-4, SLACK x that sum), every distance in units
# of ||tf32|| (so the inequality holds exactly once the runs have parted; SLACK covers the
# float64 twins' own round-off). What can fail is the middle term: the float64 twins must
# agree to the float64 trajectory tolerance at every checkpoint (the "float64 twins" row),
# so all of the float32 difference is float32 rounding. A float32-only bug in a scratchnet
# op would widen the first term; the layers and models sections catch it at 1e-5 in a
# single step. docs/parity.md has the measurements that led here.
SLACK = 1.25


def _float64_shadows(ours, theirs_cls, recipe, seed, stream):
    """float64 trainers of both engines in ``ours``'s exact state (its float32 values,
    widened), fed the same dropout masks as the float32 runs."""
    state = {k: (v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in ours.state().items()}
    mine = _scratchnet_trainer(recipe, np.float64, seed)
    mine.load_state(state)
    for layer in mine.dropout_layers:
        layer.mask_source = lambda shape, name=layer.name: stream.drawn[name]
    tf = theirs_cls(_in_dtype(recipe, np.float64), seed=seed, dtype=np.dtype(np.float64))
    own = tf.state()  # its own slots where scratchnet has none yet (e.g. Adam's β-powers before step 1)
    tf.load_state(own | {k: v for k, v in state.items() if k in own and not k.startswith("rng/")})
    return mine, tf


def _rounding_bound(floor, ours32, ours64, tf64, tf32) -> float:
    unit = float(np.linalg.norm(np.asarray(tf32, np.float64))) or 1.0

    def d(a, b):
        return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64))) / unit

    return max(floor, SLACK * (d(ours32, ours64) + d(ours64, tf64) + d(tf32, tf64)))


def _add_twins_row(probe, a64, t64, keys) -> None:
    """One row: the float64 twins' worst tensor, judged by the float64 trajectory bound."""
    worst = max(keys, key=lambda k: _norm_distance(a64[k], t64[k]))
    probe.add(f"float64 twins ({worst})", a64[worst], t64[worst], tolerance("trajectories", np.float64))


def compare_trajectory(recipe, dtype=np.float64, *, steps: int = 100, batch_size: int | None = 16,
                       seed: int = 1, data=None) -> Case:
    """Train ``steps`` steps in both engines on the same batches and dropout masks; compare
    the loss at every step and the whole state (parameters, optimizer slots, moving
    averages) at ``checkpoints(steps)``. ``first_failure`` is ``"step N: tensor"``."""
    recipe = recipe.with_overrides(steps=steps, batch_size=batch_size)
    images, labels = data if data is not None else training_images()
    dtype = np.dtype(dtype)
    ours, theirs = parity_trainers(recipe, dtype, seed)
    stream = MaskStream(seed + 1)
    stream.attach(ours.dropout_layers)
    shadows = _float64_shadows(ours, type(theirs), recipe, seed, stream) if dtype == np.float32 else None
    losses_64 = ([], [])
    order = np.random.default_rng(seed).permutation(len(images))
    b = recipe.batch_size
    note = (f"{steps} steps, batch {b}, seed {seed}; TF hyperparameters "
            f"{'as float64 tensors' if dtype == np.float64 else 'as Python floats (float32)'}; "
            f"{'scratchnet EMA decay in float32 (as TF); ' if recipe.ema_decay else ''}"
            f"state compared at steps {checkpoints(steps)}"
            + ("\n   float32: a tensor passes if its norm err <= max(1e-4, "
               f"{SLACK:g} x (|ours32 - ours64| + |ours64 - tf64| + |tf64 - tf32|) / |tf32|), the float64 runs "
               "started from the same state (the 'tolerance' column), and those float64 twins agree "
               f"to {tolerance('trajectories', np.float64):g}" if dtype == np.float32 else ""))
    case = _new_case("trajectories", f"{recipe.name} ({recipe.optimizer})", dtype, note=note)
    marks = set(checkpoints(steps))
    losses_ours, losses_theirs = [], []
    last_ok = 0
    t0 = time.time()
    for step in range(1, steps + 1):
        idx = order[((step - 1) * b + np.arange(b)) % len(images)]
        x, y = images[idx], labels[idx]
        loss_a, _ = ours.train_step(x, y)
        if shadows:
            losses_64[0].append(shadows[0].train_step(x, y)[0])
        masks = stream.take()
        loss_b, _ = theirs.train_step(x, y, masks=masks)
        if shadows:
            losses_64[1].append(shadows[1].train_step(x, y, masks=masks)[0])
        losses_ours.append(loss_a)
        losses_theirs.append(loss_b)
        if step in marks:
            a, t = ours.state(), theirs.state()
            a64, t64 = (shadows[0].state(), shadows[1].state()) if shadows else (None, None)
            probe = _new_case("trajectories", "", dtype)
            keys = [k for k in t if not k.startswith("rng/") and k in a]
            for k in keys:
                probe.add(k, a[k], t[k], _rounding_bound(probe.tol, a[k], a64[k], t64[k], t[k]) if shadows else None)
            if shadows:
                _add_twins_row(probe, a64, t64, keys)
            if step == steps or (not probe.ok and case.first_failure is None):
                if not probe.ok and case.first_failure is None:
                    case.first_failure = f"step {step}: {probe.first_failure} (state agreed at step {last_ok})"
                    case.failing_step = step
                if step == steps:
                    case.rows = [dataclasses.replace(r, tensor=f"{r.tensor} @{step}") for r in probe.rows]
            if probe.ok:
                last_ok = step
            case.drift[step] = max(r.error for r in probe.rows)
    loss_tol = _rounding_bound(case.tol, losses_ours, *losses_64, losses_theirs) if shadows else None
    case.add(f"loss, steps 1..{steps}", np.array(losses_ours), np.array(losses_theirs), loss_tol)
    drift = ", ".join(f"{s}: {e:.1e}" for s, e in sorted(case.drift.items()))
    case.note += f"\n   max error at each checkpoint: {drift}  ({time.time() - t0:.1f} s)"
    return case


def run_trajectories(dtype=np.float64, recipes=None, steps: int = 100, batch_size: int | None = 16,
                     seed: int = 1) -> list[Case]:
    from scratchnet.recipes import RECIPES

    data = training_images()
    return [compare_trajectory(RECIPES[n], dtype, steps=steps, batch_size=batch_size, seed=seed, data=data)
            for n in (recipes or list(RECIPES))]


# --- the command ---------------------------------------------------------------------------------
