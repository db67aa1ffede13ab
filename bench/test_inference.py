"""Evaluation throughput: the forward pass an evaluation runs, at batch 1 (one image, the
latency a user of ``scratchnet predict`` sees) and batch 1,000 (``EVAL_BATCH``: every
evaluation of the test or validation set runs 10 or 5 of these), on real MNIST test images.

* ``numpy`` / ``fast``: ``Trainer.logits(images)``, exactly what an evaluation calls per
  chunk: ``Sequential.infer`` (the value of ``model.forward(x, training=False)``: no
  dropout, BatchNorm on its moving statistics) with nothing kept for backward: no
  max-pool argmax, no LSTM gates per step, ReLU and BatchNorm in place on the model's own
  arrays. ``cache_bytes`` checks it: the arrays the layers still hold after the pass,
  beyond the input batch and the parameters (0 with ``infer``; 379 MB for conv-bn when
  evaluations ran ``forward``).
* ``tf`` / ``tf-xla``: a ``tf.function`` of the tfnet twin, ``twin(x, training=False)``
  (what ``TFTrainer.logits`` runs), with a fixed input signature, the input a
  ``tf.constant`` made outside the timing (TF is not charged the NumPy-to-tensor copy
  that scratchnet never makes), plain and with ``jit_compile=True``; oneDNN on or off
  per process. The output is fetched as NumPy (``.numpy()``) inside the timing, as
  scratchnet's is a NumPy array.
* ``tf-keras``: the recipe's network in Keras (``bench.keras_fit.keras_model``, where an
  exact one exists) and ``Model.predict_on_batch`` on the same ``tf.constant``: what a
  Keras user runs on one batch (it returns NumPy).

Both start from scratchnet's initial weights for seed 1 (the speed of a forward pass does
not depend on training). Smoke grid (without ``--full``): batch 1 of every recipe, and
batch 1,000 of mlp.
"""

from __future__ import annotations

import numpy as np
import pytest

from scratchnet.recipes import RECIPES

from .conftest import record

SUPPORTED_IMPLS = ("numpy", "fast", "tf", "tf-xla", "tf-keras")
INFERENCE_BATCHES = (1, 1000)
INFERENCE_RECIPES = ("softmax", "mlp", "mlp5", "mlp5-bn", "conv3-small", "conv3", "conv-bn", "lstm", "deep-cnn")
SMOKE_RECIPES = ("mlp", "conv3", "conv-bn", "lstm", "deep-cnn")


def bench_params(full: bool) -> dict:
    if full:
        grid = [(r, b) for r in INFERENCE_RECIPES for b in INFERENCE_BATCHES]
    else:
        grid = [(r, 1) for r in SMOKE_RECIPES] + [("mlp", 1000)]
    return {"infer": grid}


def images(size: int) -> np.ndarray:
    from scratchnet.data import load_mnist
    return np.ascontiguousarray(load_mnist().test.images[:size])


def cache_bytes(model, x) -> int:
    """Bytes of the distinct arrays that ``model``'s layers keep in their backward caches
    after a forward pass on ``x``: activations and the copies made for backward (views
    counted once, by their base buffer), not ``x`` itself nor the parameters."""
    def root(a):
        while isinstance(a.base, np.ndarray):
            a = a.base
        return a
    seen = {id(root(x))} | {id(root(p)) for p in model.params.values()}
    total = 0

    def walk(obj):
        nonlocal total
        if isinstance(obj, np.ndarray):
            base = root(obj)
            if id(base) not in seen:
                seen.add(id(base))
                total += base.nbytes
        elif isinstance(obj, (tuple, list)):
            for o in obj:
                walk(o)
        elif isinstance(obj, dict):
            for o in obj.values():
                walk(o)
    for layer in model.layers:
        walk(layer._cache)
    return total


def make_forward(recipe, impl, x):
    """``(fn, info)``: ``fn()`` returns the logits of ``x``."""
    if impl in ("numpy", "fast"):
        from scratchnet import backend
        from scratchnet.train import Trainer
        backend.set_backend("reference" if impl == "numpy" else "fast")
        trainer = Trainer(recipe, seed=1)
        fn = lambda: trainer.logits(x)  # noqa: E731
        fn()
        return fn, {"cache_bytes": cache_bytes(trainer.model, x)}
    from tfnet.model import TFModel

    from .env import import_tf
    tf = import_tf()
    if impl == "tf-keras":
        from .keras_fit import NotApplicable, keras_model
        try:
            net, _ = keras_model(recipe, seed=1)
        except NotApplicable as e:
            pytest.skip(f"no exact Keras version: {e}")
        t = tf.constant(x)
        fn = lambda: net.predict_on_batch(t)  # noqa: E731
        for _ in range(3):
            fn()
        return fn, {}
    twin = TFModel.from_recipe(recipe, seed=1)
    forward = tf.function(lambda t: twin(t, training=False), autograph=False, jit_compile=(impl == "tf-xla"),
                          input_signature=[tf.TensorSpec(x.shape, tf.float32)])
    t = tf.constant(x)

    def fn():
        return forward(t).numpy()
    for _ in range(3):  # trace, compile, create oneDNN primitives: all outside the timing
        fn()
    return fn, {}


def test_inference(benchmark, infer, impl):
    name, size = infer
    x = images(size)
    try:
        fn, info = make_forward(RECIPES[name], impl, x)
        record(benchmark, fn, group=f"inference {name} batch {size}", impl=impl, case=name, op="inference",
               batch=size, **info)
    finally:
        from scratchnet import backend
        backend.set_backend(backend.DEFAULT)
    assert np.asarray(fn()).shape == (size, 10)
