"""``scratchnet eval``: the test accuracy of a checkpoint of either engine, in scratchnet."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..checkpoint import CheckpointError, load_checkpoint, read_meta
from .train import checkpoint_path

ENGINES = ("scratchnet", "tf")


def restore(path: Path):
    """A scratchnet ``Trainer`` holding the weights (and moving averages) of the checkpoint at
    ``path`` (a file or a run folder); the file is checked against the recipe's model before
    its data is read."""
    from ..data import TRAIN_SIZE
    from ..recipes import RECIPES, overridden
    from ..train import Trainer, checkpoint_spec

    path = checkpoint_path(path)
    meta = read_meta(path)
    recipe, engine, dtype = meta.get("recipe", {}).get("name"), meta.get("engine"), meta.get("dtype")
    if recipe not in RECIPES:
        raise CheckpointError(f"{path}: unknown recipe {recipe!r}; this scratchnet knows {', '.join(RECIPES)}")
    if engine not in ENGINES or dtype not in ("float32", "float64"):
        raise CheckpointError(f"{path}: engine {engine!r} and dtype {dtype!r}; expected one of {ENGINES} "
                              "and float32 or float64")
    try:  # the run's own overrides: an --optimizer changes the slots its checkpoint holds
        run_recipe = overridden(RECIPES[recipe], **meta.get("overrides", {}))
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: overrides {meta.get('overrides')} do not apply to {recipe}: {e}") from None
    trainer = Trainer(run_recipe, dtype=np.dtype(dtype))
    spec = checkpoint_spec(trainer, TRAIN_SIZE)
    if engine == "tf":  # a tf.random.Generator's state for each dropout layer
        from tfnet.train import RNG_STATE_SPEC
        spec.update({k: RNG_STATE_SPEC for k in spec if k.startswith("rng/")})
    arrays, _ = load_checkpoint(path, spec)
    if engine == "tf":  # scratchnet's generators cannot take TF's states; evaluation draws no masks
        arrays.update({k: v for k, v in trainer.state().items() if k.startswith("rng/")})
    trainer.load_state({k: v for k, v in arrays.items() if not k.startswith("data/")})
    return trainer


def evaluate(args) -> int:
    from ..data import load_mnist

    path = checkpoint_path(args.checkpoint)
    trainer = restore(path)
    test = load_mnist(args.data_dir).test
    recipe = trainer.recipe
    acc = trainer.accuracy(test.images, test.labels, use_ema=recipe.eval_with_ema)
    print(f"{path}: recipe {recipe.name}, step {trainer.step}"
          f"{', moving-average weights' if recipe.eval_with_ema else ''}")
    print(f"test accuracy: {acc:.4f}")
    return 0
