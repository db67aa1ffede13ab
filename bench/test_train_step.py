"""One full training step per recipe (forward, loss, backward, optimizer update, moving
average where the recipe has one) on a real MNIST batch of the recipe's size.

* ``numpy`` / ``fast``: ``scratchnet.train.Trainer`` with the reference or fast backend.
* ``tf``: ``tfnet.train.TFTrainer`` (the same model as ``tf.nn`` ops on ``tf.Variable``s,
  TF1 optimizer, ``tf.function``); ``tf-xla``: its step compiled with ``jit_compile=True``.
  Whether oneDNN is on depends on the process (``TF_ENABLE_ONEDNN_OPTS``).
"""

from __future__ import annotations

import numpy as np
import pytest

from scratchnet.recipes import RECIPES

from .conftest import record

_BATCHES = {}


def batch(size: int):
    if size not in _BATCHES:
        from scratchnet.data import load_mnist
        train = load_mnist().train
        _BATCHES[size] = (np.ascontiguousarray(train.images[:size]), np.ascontiguousarray(train.labels[:size]))
    return _BATCHES[size]


def make_step(recipe, impl):
    images, labels = batch(recipe.batch_size)
    if impl in ("numpy", "fast"):
        from scratchnet import backend
        from scratchnet.train import Trainer
        backend.set_backend("reference" if impl == "numpy" else "fast")
        trainer = Trainer(recipe, seed=1)
        return lambda: trainer.train_step(images, labels)
    from tfnet.train import TFTrainer
    trainer = TFTrainer(recipe, seed=1)
    if impl == "tf":
        return lambda: trainer.train_step(images, labels)
    from .env import import_tf
    tf = import_tf()
    step = tf.function(trainer._step, autograph=False, jit_compile=True)
    inputs = trainer._inputs(images, labels, None)

    def run():
        loss, logits = step(*inputs)
        return float(loss), logits.numpy()
    try:
        run()
    except Exception as e:  # noqa: BLE001  (XLA refuses some ops; report, don't fail)
        pytest.skip(f"XLA cannot compile this step: {type(e).__name__}: {str(e)[:200]}")
    return run


@pytest.mark.parametrize("name", list(RECIPES))
def test_train_step(benchmark, name, impl):
    recipe = RECIPES[name]
    fn = make_step(recipe, impl)
    try:
        record(benchmark, fn, group=f"train step {name}", impl=impl, case=name, op="train step",
               batch=recipe.batch_size)
    finally:
        from scratchnet import backend
        backend.set_backend(backend.DEFAULT)
