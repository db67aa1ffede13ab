"""The ``tf-keras`` variant of the training-step benchmark: what a careful TensorFlow user
writes in Keras, ``Model.fit`` with ``steps_per_execution``, timed per step.

* The network is the recipe's, converted by ``tfnet.keras.to_keras`` (same layers, names
  and initial weights as scratchnet's model for the seed). Recipes whose network does not
  convert exactly (BatchNorm, convolutions or dense layers without a bias) are skipped:
  a Keras ``BatchNormalization`` would be a different, cheaper step (fused, statistics
  from the same pass where conv-bn runs a second forward pass), and a variant doing less
  work than the recipe must not enter "TF best".
* The step is the recipe's: ``loss_scale`` · sparse cross-entropy from logits (the
  naive summed cross-entropy as its sum), plus ``l2_scale · Σ tf.nn.l2_loss(w)`` over the
  recipe's ``l2_params``; Keras' own optimizer (SGD or Adam, the recipe's β/ε where it sets
  them, TF1's ε = 1e-8 for Adam) with the recipe's learning-rate schedule as a Keras
  ``LearningRateSchedule``; the moving average as the optimizer's ``use_ema`` (Keras
  updates it every step; TF1's ``num_updates`` ramp is not modelled: same cost; at the
  end of each ``fit`` call Keras copies the averages into the weights, once per call).
  ``make_fit_step`` checks that, at the initial weights and without dropout, the Keras
  loss equals scratchnet's on the benchmark's batch (``same_loss``) before timing anything.
* The data is one batch, ``tf.data.Dataset.from_tensors((x, y)).repeat()``: no input
  pipeline cost. ``jit_compile`` is Keras' default ("auto", which is off on a CPU-only
  machine); XLA is the ``tf-xla`` variant's business.
* One timed call is ``model.fit(data, epochs=1, steps_per_epoch=N, verbose=0)`` with
  ``steps_per_execution=N``: one ``tf.function`` call runs N steps. The benchmark records
  ``steps_per_call = N`` and the report divides by it. N is chosen so that a call lasts
  about ``TARGET_CALL_SECONDS`` (fit's fixed cost per call is then spread thin): timed at
  N = ``MIN_STEPS``, scaled, and timed and scaled once more if a call is still under half
  the target, at most ``MAX_STEPS``; ``--keras-steps`` fixes it (the smoke run: 2).
"""

from __future__ import annotations

import time

import numpy as np

TARGET_CALL_SECONDS = 0.4
MIN_STEPS, MAX_STEPS = 4, 128


class NotApplicable(Exception):
    """The recipe's network or step has no exact Keras counterpart."""


def keras_schedule(schedule):
    """The recipe's learning-rate schedule as a float or a ``keras.optimizers.schedules`` object."""
    import keras

    config = schedule.to_config()
    kind = config["schedule"]
    if kind == "constant":
        return float(config["learning_rate"])
    if kind == "exponential_decay":
        return keras.optimizers.schedules.ExponentialDecay(
            config["lr0"], config["decay_steps"], config["decay_rate"], staircase=config["staircase"])
    if kind == "gorner":
        decayed = keras.optimizers.schedules.ExponentialDecay(config["lr_max"], config["decay_steps"], 1 / np.e)
        lr_min = float(config["lr_min"])

        class Gorner(keras.optimizers.schedules.LearningRateSchedule):
            def __call__(self, step):
                return lr_min + decayed(step)

            def get_config(self):
                return dict(config)
        return Gorner()
    raise NotApplicable(f"no Keras schedule for {kind!r}")


def keras_optimizer(recipe):
    import keras

    lr = keras_schedule(recipe.learning_rate)
    ema = {"use_ema": True, "ema_momentum": recipe.ema_decay} if recipe.ema_decay else {}
    args = dict(recipe.optimizer_args)
    if recipe.optimizer == "sgd" and not args:
        return keras.optimizers.SGD(lr, **ema)
    if recipe.optimizer == "adam" and set(args) <= {"beta1", "beta2", "epsilon"}:
        return keras.optimizers.Adam(lr, beta_1=args.get("beta1", 0.9), beta_2=args.get("beta2", 0.999),
                                     epsilon=args.get("epsilon", 1e-8), **ema)
    raise NotApplicable(f"optimizer {recipe.optimizer!r} with {args} is not mapped to Keras here")


def keras_model(recipe, seed: int = 1):
    """The recipe's network in Keras with scratchnet's initial weights for ``seed``."""
    from scratchnet.layers import BatchNorm
    from scratchnet.model import Sequential
    from tfnet.keras import KerasImportError, to_keras

    model = Sequential(recipe.layers(), seed=seed)
    for layer in model.layers:
        if isinstance(layer, BatchNorm):
            raise NotApplicable(f"{layer.name}: BatchNorm has no exact Keras counterpart (Keras' "
                                "BatchNormalization is fused, with its own moving-average rule, and "
                                "never runs the second forward pass of conv-bn's statistics)")
    for layer in model.layers:
        if getattr(layer, "b_init", 0) is None:
            raise NotApplicable(f"{layer.name}: a layer without a bias (tfnet.keras.to_keras keeps biases)")
    try:
        return to_keras(model, input_shape=(28, 28, 1)), model
    except KerasImportError as e:
        raise NotApplicable(str(e)) from None


def recipe_loss(recipe, keras_net):
    """The recipe's loss as a Keras loss function (it reads the weights for the L2 term,
    inside fit's GradientTape, so their gradients include it)."""
    import tensorflow as tf

    if recipe.loss not in ("softmax_cross_entropy", "naive_cross_entropy_sum"):
        raise NotApplicable(f"loss {recipe.loss!r}")
    reduce = tf.reduce_sum if recipe.loss == "naive_cross_entropy_sum" else tf.reduce_mean
    scale = float(recipe.loss_scale)
    weights = []
    if recipe.l2_scale:
        by_name = {}
        for theirs in keras_net.layers:
            if theirs.weights:
                by_name[f"{theirs.name}/w"] = theirs.weights[0]  # kernel first, as params_to_keras orders them
        missing = [k for k in recipe.l2_params if k not in by_name]
        if missing:
            raise NotApplicable(f"L2 on {missing}: not a Keras kernel")
        weights = [by_name[k] for k in recipe.l2_params]
    l2 = float(recipe.l2_scale)

    def loss(y_true, logits):
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(tf.reshape(y_true, [-1]), tf.int64),
                                                            logits=logits)
        total = reduce(ce) * scale
        if weights:
            total = total + tf.add_n([l2 * tf.nn.l2_loss(w) for w in weights])
        return total
    return loss


def same_loss(recipe, net, sequential, loss, images, labels) -> None:
    """Raise unless the Keras network and loss give scratchnet's loss (evaluation mode, so
    no dropout) on this batch, to float32 rounding."""
    from scratchnet.ops import LOSSES, l2_penalty

    theirs = float(loss(labels, net(images, training=False)))
    logits = sequential.forward(images.astype(sequential.dtype, copy=False))
    ours = float(LOSSES[recipe.loss](logits, labels)[0]) * recipe.loss_scale
    if recipe.l2_scale:
        ours += float(l2_penalty(sequential.params, recipe.l2_params, recipe.l2_scale)[0])
    if not abs(theirs - ours) <= 1e-4 * max(1.0, abs(ours)):
        raise RuntimeError(f"Keras version of {recipe.name}: loss {theirs} at the initial weights, scratchnet {ours}")


def make_fit_step(recipe, images, labels, *, steps: int | None = None, seed: int = 1):
    """``(run, steps_per_call)``: ``run()`` trains ``steps_per_call`` steps in one ``fit``
    call (compiled and warmed up before this returns)."""
    from .env import import_tf

    tf = import_tf()
    net, sequential = keras_model(recipe, seed)
    data = tf.data.Dataset.from_tensors((tf.constant(images), tf.constant(labels))).repeat()
    loss = recipe_loss(recipe, net)
    same_loss(recipe, net, sequential, loss, images, labels)
    optimizer = keras_optimizer(recipe)

    def compiled(n):
        net.compile(optimizer=optimizer, loss=loss, steps_per_execution=n)
        run = lambda: net.fit(data, epochs=1, steps_per_epoch=n, verbose=0, shuffle=False)  # noqa: E731
        history = run()  # trace and compile the n-step function
        if not np.isfinite(history.history["loss"][-1]):
            raise RuntimeError(f"Keras fit of {recipe.name}: loss {history.history['loss']}")
        return run

    if steps is not None:
        return compiled(steps), steps
    n, run = MIN_STEPS, compiled(MIN_STEPS)
    for _ in range(2):  # a first estimate still carries fit's fixed cost per call: refine once
        run()
        t0 = time.perf_counter()
        run()
        seconds = time.perf_counter() - t0
        if seconds >= TARGET_CALL_SECONDS / 2 or n == MAX_STEPS:
            break
        n = int(min(MAX_STEPS, max(n + 1, round(n * TARGET_CALL_SECONDS / max(seconds, 1e-6)))))
        run = compiled(n)
    return run, n
