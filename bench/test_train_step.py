"""One full training step per recipe (forward, loss, backward, optimizer update, moving
average where the recipe has one) on a real MNIST batch, at the recipe's batch size
(``test_train_step``) and over a batch-size sweep (``test_train_step_sweep``: how the cost
grows with the work, against TF at every size).

* ``numpy`` / ``fast``: ``scratchnet.train.Trainer`` with the reference or fast backend.
* ``tf``: ``tfnet.train.TFTrainer`` (the same model as ``tf.nn`` ops on ``tf.Variable``s,
  TF1 optimizer, ``tf.function``); ``tf-xla``: its step compiled with ``jit_compile=True``.
* ``tf-keras``: the recipe's network in Keras, trained by ``Model.fit`` with
  ``steps_per_execution`` (``bench.keras_fit``); one timed call runs several steps
  (``steps_per_call`` in the JSON; the report divides). Skipped where no exact Keras network exists.
  Whether oneDNN is on depends on the process (``TF_ENABLE_ONEDNN_OPTS``).

The sweep leaves out the NumPy reference (it is about scratchnet against TensorFlow);
its smoke grid (without ``--full``) is mlp at batch 1 and 500.
"""

from __future__ import annotations

import numpy as np
import pytest

from scratchnet.recipes import RECIPES

from .conftest import keras_steps, record

SWEEP_BATCHES = (1, 10, 100, 500)
# one recipe per distinct network (the others share one: mlp-sgd, mlp5-sigmoid, deep-cnn-gd, ...)
SWEEP_RECIPES = ("softmax", "mlp", "mlp5", "mlp5-bn", "conv3-small", "conv3", "conv-bn", "lstm", "deep-cnn")
SMOKE_SWEEP = (("mlp", 1), ("mlp", 500))
SWEEP_IMPLS = ("fast", "tf", "tf-xla", "tf-keras")
# tf-keras in the smoke run: L2 + moving average, dropout + convolutions, LSTM, pooling, and
# one recipe that has no Keras version (the skip path); every recipe with --full
KERAS_SMOKE = ("mlp", "conv3", "lstm", "deep-cnn", "conv-bn")


def bench_params(full: bool) -> dict:
    sweep = [(r, b) for r in SWEEP_RECIPES for b in SWEEP_BATCHES] if full else list(SMOKE_SWEEP)
    return {"name": list(RECIPES), "sweep": sweep}


_BATCHES = {}


def batch(size: int):
    if size not in _BATCHES:
        from scratchnet.data import load_mnist
        train = load_mnist().train
        _BATCHES[size] = (np.ascontiguousarray(train.images[:size]), np.ascontiguousarray(train.labels[:size]))
    return _BATCHES[size]


def make_step(recipe, impl, config=None):
    """A zero-argument callable running one training step of ``recipe`` (its batch size)
    in ``impl`` (tf-keras: ``steps_per_call`` steps, set as an attribute of the callable)."""
    images, labels = batch(recipe.batch_size)
    if impl.startswith("tf"):
        from .env import import_tf
        import_tf()  # threads set before TF's first op, whichever test reaches TF first
    if impl in ("numpy", "fast"):
        from scratchnet import backend
        from scratchnet.train import Trainer
        backend.set_backend("reference" if impl == "numpy" else "fast")
        trainer = Trainer(recipe, seed=1)
        return lambda: trainer.train_step(images, labels)
    if impl == "tf-keras":
        from .keras_fit import NotApplicable, make_fit_step
        try:
            run, steps = make_fit_step(recipe, images, labels, steps=keras_steps(config) if config else None)
        except NotApplicable as e:
            pytest.skip(f"no exact Keras version: {e}")
        run.steps_per_call = steps
        return run
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


def _timed_step(benchmark, recipe, impl, config, group: str, **info):
    fn = make_step(recipe, impl, config)
    try:
        record(benchmark, fn, group=group, impl=impl, case=recipe.name, batch=recipe.batch_size, **info)
    finally:
        from scratchnet import backend
        backend.set_backend(backend.DEFAULT)


def test_train_step(benchmark, name, impl, request):
    if impl == "tf-keras" and name not in KERAS_SMOKE and not request.config.getoption("full"):
        pytest.skip(f"smoke grid: tf-keras for {', '.join(KERAS_SMOKE)} only (all with --full)")
    _timed_step(benchmark, RECIPES[name], impl, request.config, f"train step {name}", op="train step")


def test_train_step_sweep(benchmark, sweep, impl, request):
    name, size = sweep
    if impl not in SWEEP_IMPLS:
        pytest.skip(f"the sweep compares {', '.join(SWEEP_IMPLS)}")
    recipe = RECIPES[name].with_overrides(batch_size=size)
    _timed_step(benchmark, recipe, impl, request.config, f"sweep {name} batch {size}", op="sweep")
