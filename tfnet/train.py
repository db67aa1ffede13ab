"""``TFTrainer``: a recipe trained in TensorFlow, with the interface of scratchnet's ``Trainer``.

One step, compiled with ``tf.function``, exactly as the TF 1.x tutorials wrote it::

    logits = twin(x, training=True)                 (tf.nn ops on tf.Variables)
    loss   = loss_scale · reduce_mean(sparse_softmax_cross_entropy_with_logits)
             + Σ_{l2_params} l2_scale · tf.nn.l2_loss(w)
    grads  = tf.GradientTape().gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables), global_step)   # tf.compat.v1.train.*Optimizer
    ema.apply(variables)                             # tf.train.ExponentialMovingAverage(decay,
                                                     #   num_updates=global_step), after the update

With BatchNorm layers the step also maintains their moving averages as Görner's scripts
do: ``tf.train.ExponentialMovingAverage(decay, iteration)`` over the batch statistics of
``tf.nn.moments``, ``iteration`` = the pre-increment step (the scripts' fed ``iter``). The
scripts apply it to the statistics *tensors*, which TF2 only accepts on variables, so
each statistic is assigned to a zero-initialised ``tf.Variable`` and the EMA applied to
that: the shadow starts at zero and is not debiased, exactly TF1's rule for a tensor.
``bn_statistics="same_pass"`` (4.0/4.1, ``sess.run([train_step, update_ema])``) takes the
step's own forward statistics; ``"second_pass"`` (4.2) a second forward pass after the
update, dropout off (``sess.run(update_ema, {pkeep: 1.0})``).

The learning rate is TensorFlow's own schedule read at the pre-increment ``global_step``:
``tf.compat.v1.train.exponential_decay`` or Görner's ``0.0001 + exponential_decay(0.003,
step, 2000, 1/e)``. The initial weights are scratchnet's (``Sequential(recipe.layers(),
seed, dtype)`` copied into the twin), so both engines start from the same point.

Precision: in float32 the hyperparameters are Python floats, as the tutorials wrote them
(TF makes float32 tensors of them). In float64 every hyperparameter (learning rate and the
schedule's constants, β1, β2, ε, momentum, decay …) is handed to TF as a **float64 tensor**,
otherwise TF would round it to float32 first. The moving average's decay is float32
whatever the variables' dtype: ``ExponentialMovingAverage`` hard-codes it.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np

from ._tf import import_tf, tf_dtype
from .model import TFModel

EVAL_BATCH = 1000
RNG_STATE_SPEC = ((3,), np.dtype(np.int64))  # a Philox tf.random.Generator's state, as checkpoints hold it

# TF1 optimizers: our name -> (class name, {recipe argument: TF argument}, slots)
_TF1 = {
    "sgd": ("GradientDescentOptimizer", {}, ()),
    "momentum": ("MomentumOptimizer", {"momentum": "momentum", "use_nesterov": "use_nesterov"}, ("momentum",)),
    "adagrad": ("AdagradOptimizer", {"initial_accumulator_value": "initial_accumulator_value"}, ("accumulator",)),
    "rmsprop": ("RMSPropOptimizer", {"decay": "decay", "momentum": "momentum", "epsilon": "epsilon",
                                     "centered": "centered"}, ("rms", "momentum", "mg")),
    "adam": ("AdamOptimizer", {"beta1": "beta1", "beta2": "beta2", "epsilon": "epsilon"}, ("m", "v")),
}
# Hyperparameters that become float64 tensors in float64 runs (booleans and the Adagrad
# accumulator's initial value, a constant_initializer in the variable's dtype, stay as given).
_FLOAT_ARGS = {"momentum", "decay", "epsilon", "beta1", "beta2"}


def hyper(value, dtype):
    """A hyperparameter as TF should receive it: a float64 tensor in float64, else as given."""
    tf = import_tf()
    if np.dtype(dtype) == np.float64 and isinstance(value, (float, int, np.floating)) and not isinstance(value, bool):
        return tf.constant(float(value), tf.float64)
    return value


def tf_schedule(schedule, global_step, dtype):
    """TensorFlow's own version of a scratchnet schedule (from its ``to_config()``): a number,
    or a zero-argument callable that reads ``global_step`` (what ``tf.compat.v1.train.
    exponential_decay`` returns in eager mode)."""
    tf = import_tf()
    config = schedule.to_config() if hasattr(schedule, "to_config") else None
    if config is None:
        if isinstance(schedule, (int, float)):
            return hyper(schedule, dtype)
        raise TypeError(f"cannot translate the learning rate {schedule!r} to TensorFlow")
    kind = config["schedule"]
    if kind == "constant":
        return hyper(config["learning_rate"], dtype)
    if kind == "exponential_decay":
        return tf.compat.v1.train.exponential_decay(
            hyper(config["lr0"], dtype), global_step, config["decay_steps"], hyper(config["decay_rate"], dtype),
            staircase=config["staircase"])
    if kind == "gorner":
        decayed = tf.compat.v1.train.exponential_decay(
            hyper(config["lr_max"], dtype), global_step, config["decay_steps"], hyper(1 / math.e, dtype))
        lr_min = hyper(config["lr_min"], dtype)
        return lambda: lr_min + decayed()
    raise ValueError(f"no TensorFlow twin for the schedule {kind!r}")


def tf_optimizer(name: str, learning_rate, args: dict, dtype):
    """``tf.compat.v1.train.<Name>Optimizer`` for a recipe's optimizer name and arguments
    (scratchnet's TF1 keyword names, which are TF1's own)."""
    tf = import_tf()
    args = dict(args)
    flavor = args.pop("flavor", "tf1")
    if flavor != "tf1":
        raise ValueError(f"TFTrainer uses the TF1 optimizers of the tutorials; flavor {flavor!r} is not supported")
    if name not in _TF1:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(_TF1)}")
    cls, names, _ = _TF1[name]
    unknown = set(args) - set(names)
    if unknown:
        raise TypeError(f"{cls} has no argument(s) {sorted(unknown)}")
    kwargs = {names[k]: (hyper(v, dtype) if k in _FLOAT_ARGS else v) for k, v in args.items()}
    if name == "momentum" and "momentum" not in kwargs:
        raise TypeError("the momentum optimizer needs a momentum")
    if name in ("rmsprop", "adam"):  # the TF1 defaults, as float64 tensors when needed
        defaults = {"rmsprop": {"decay": 0.9, "momentum": 0.0, "epsilon": 1e-10},
                    "adam": {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}}[name]
        for k, v in defaults.items():
            kwargs.setdefault(k, hyper(v, dtype))
    return getattr(tf.compat.v1.train, cls)(learning_rate, **kwargs)


def recipe_loss(recipe, logits, labels, variables: dict):
    """``loss_scale · cross-entropy + Σ l2_scale · tf.nn.l2_loss(w)`` over the recipe's
    ``l2_params`` (``variables``: ``{"layer/param": var}``). The cross-entropy is
    ``reduce_mean(sparse_softmax_cross_entropy_with_logits)``, or for the recipes of the
    second deep-MNIST write-up its naive ``-reduce_sum(y * log(softmax(logits)))``."""
    tf = import_tf()
    if recipe.loss == "naive_cross_entropy_sum":
        y = tf.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
        loss = -tf.reduce_sum(y * tf.math.log(tf.nn.softmax(logits)))
    elif recipe.loss == "softmax_cross_entropy":
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    else:
        raise ValueError(f"no TensorFlow twin for the loss {recipe.loss!r}")
    loss = loss * tf.constant(recipe.loss_scale, logits.dtype)
    if recipe.l2_scale:
        scale = hyper(recipe.l2_scale, logits.dtype.as_numpy_dtype)
        loss = loss + tf.add_n([scale * tf.nn.l2_loss(variables[k]) for k in recipe.l2_params])
    return loss


class TFTrainer:
    """A recipe's model, optimizer and moving average, stepped in TensorFlow.

    The interface is scratchnet's ``Trainer``'s: ``train_step(images, labels) -> (loss,
    logits)``, ``loss_and_grads``, ``predict``, ``accuracy(..., use_ema=)``,
    ``learning_rate()``, ``step``, ``dtype``, ``recipe``, ``model``, ``state()`` /
    ``load_state()``, ``dropout_layers``; ``engine = "tf"``. ``train_step`` also takes
    ``masks={dropout layer name: bool array}`` to replace dropout's random masks.
    """

    engine = "tf"

    def __init__(self, recipe, *, seed: int = 0, dtype=np.float32):
        tf = import_tf()
        self.recipe = recipe
        self._dtype = np.dtype(dtype)
        self._tf_dtype = tf_dtype(self._dtype)
        self.model = TFModel.from_recipe(recipe, seed=seed, dtype=self._dtype)
        for i, layer in enumerate(self.model.dropout_layers):
            layer.generator = tf.random.Generator.from_seed(seed * 1009 + i)
        self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.schedule = tf_schedule(recipe.learning_rate, self.global_step, self._dtype)
        self.optimizer = tf_optimizer(recipe.optimizer, self.schedule, recipe.optimizer_args, self._dtype)
        self._variables = self.model.variables
        self._var_list = list(self._variables.values())
        self.optimizer._create_slots(self._var_list)  # eagerly, so state() works before a step
        self.ema = None
        if recipe.ema_decay:
            self.ema = tf.train.ExponentialMovingAverage(recipe.ema_decay, num_updates=self.global_step)
            self.ema.apply(self._var_list)  # shadows start at the initial weights (a numerical no-op)
        self.iteration = tf.Variable(0, dtype=tf.int64, trainable=False, name="iteration")
        self.batchnorms = [l for l in self.model.layers if l.kind == "BatchNorm"]
        self._bn_stats, self._bn_emas = {}, {}
        for layer in self.batchnorms:
            stats = [tf.Variable(tf.zeros([layer.layer.features], self._tf_dtype), trainable=False,
                                 name=f"{layer.name}/batch_{k}") for k in ("mean", "variance")]
            ema = tf.compat.v1.train.ExponentialMovingAverage(layer.layer.decay, num_updates=self.iteration)
            ema.apply(stats)  # shadows = the zero initial values (the update is a numerical no-op)
            layer.moving = {"mean": ema.average(stats[0]), "variance": ema.average(stats[1])}
            self._bn_stats[layer.name], self._bn_emas[layer.name] = stats, ema
        self._step_fn = tf.function(self._step, autograph=False)
        self._grads_fn = tf.function(self._loss_and_grads, autograph=False)
        self._forward_fn = tf.function(lambda x: self.model(x, training=False), autograph=False)

    # --- properties of scratchnet's Trainer ---------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def step(self) -> int:
        return int(self.global_step.numpy())

    @property
    def dropout_layers(self):
        return self.model.dropout_layers

    def learning_rate(self) -> float:
        lr = self.schedule() if callable(self.schedule) else self.schedule
        return float(lr)

    # --- the compiled pieces ----------------------------------------------------------------
    def _loss(self, x, y, masks):
        logits = self.model(x, training=True, masks=masks)
        return recipe_loss(self.recipe, logits, y, self._variables), logits

    def _loss_and_grads(self, x, y, masks):
        tf = import_tf()
        with tf.GradientTape() as tape:
            loss, logits = self._loss(x, y, masks)
        return loss, logits, tape.gradient(loss, self._var_list)

    def _update_batchnorm_averages(self, x):
        if self.recipe.bn_statistics == "second_pass":  # the updated weights, dropout off
            last = max(k for k, l in enumerate(self.model.layers) if l.kind == "BatchNorm")
            for layer in self.model.layers[:last + 1]:
                x = x if layer.kind == "Dropout" else layer(x, training=True)
        for layer in self.batchnorms:
            stats = self._bn_stats[layer.name]
            for var, value in zip(stats, layer.statistics):
                var.assign(value)
            self._bn_emas[layer.name].apply(stats)

    def _step(self, x, y, masks):
        self.iteration.assign(self.global_step)
        loss, logits, grads = self._loss_and_grads(x, y, masks)
        if self.batchnorms and self.recipe.bn_statistics == "same_pass":
            self._update_batchnorm_averages(x)
        self.optimizer.apply_gradients(zip(grads, self._var_list), global_step=self.global_step)
        if self.batchnorms and self.recipe.bn_statistics == "second_pass":
            self._update_batchnorm_averages(x)
        if self.ema is not None:
            self.ema.apply(self._var_list)  # after the update, num_updates = the new global_step
        return loss, logits

    def _inputs(self, images, labels, masks):
        tf = import_tf()
        x = tf.constant(np.asarray(images, self._dtype))
        y = tf.constant(np.asarray(labels, np.int64))
        if masks is not None:
            masks = {k: tf.constant(np.asarray(v, bool)) for k, v in masks.items()}
        return x, y, masks

    # --- scratchnet's Trainer interface -------------------------------------------------------
    def train_step(self, images, labels, masks: dict | None = None):
        """One update; returns ``(loss, logits)`` (a float and a NumPy array)."""
        loss, logits = self._step_fn(*self._inputs(images, labels, masks))
        return float(loss), logits.numpy()

    def loss_and_grads(self, images, labels, masks: dict | None = None):
        """``(loss, logits, {"layer/param": gradient})`` without updating anything."""
        loss, logits, grads = self._grads_fn(*self._inputs(images, labels, masks))
        return float(loss), logits.numpy(), {k: g.numpy() for k, g in zip(self._variables, grads)}

    @contextmanager
    def averaged(self):
        """Run with the moving averages in the variables; the trained values come back on exit."""
        saved = [v.numpy() for v in self._var_list]
        for v in self._var_list:
            v.assign(self.ema.average(v))
        try:
            yield
        finally:
            for v, s in zip(self._var_list, saved):
                v.assign(s)

    def logits(self, images, *, use_ema: bool = False) -> np.ndarray:
        """Inference logits [N, 10], computed EVAL_BATCH images at a time."""
        def run():
            return np.concatenate([self._forward_fn(np.asarray(images[i:i + EVAL_BATCH], self._dtype)).numpy()
                                   for i in range(0, len(images), EVAL_BATCH)])
        if use_ema and self.ema is not None:
            with self.averaged():
                return run()
        return run()

    def predict(self, images, *, use_ema: bool = False) -> np.ndarray:
        """Class predictions [N]."""
        return self.logits(images, use_ema=use_ema).argmax(axis=1)

    def accuracy(self, images, labels, *, use_ema: bool = False) -> float:
        return float((self.predict(images, use_ema=use_ema) == np.asarray(labels)).mean())

    # --- state: the keys of scratchnet's Trainer.state() --------------------------------------
    def _opt_name(self):
        return self.recipe.optimizer

    def _slots(self):
        """``{(slot, param): tf.Variable}`` for the slots this optimizer has."""
        out = {}
        for slot in _TF1[self._opt_name()][2]:
            for k, v in self._variables.items():
                s = self.optimizer.get_slot(v, slot)
                if s is not None:
                    out[(slot, k)] = s
        return out

    def _non_slots(self):
        if self._opt_name() == "adam":
            b1, b2 = self.optimizer._get_beta_accumulators()
            return {"beta1_power": b1, "beta2_power": b2}
        return {}

    def averages(self) -> dict[str, np.ndarray]:
        """The moving averages ``{"layer/param": array}`` ({} without a moving average)."""
        if self.ema is None:
            return {}
        return {k: self.ema.average(v).numpy() for k, v in self._variables.items()}

    def state(self) -> dict[str, np.ndarray]:
        """Parameters, optimizer slots, moving averages, step and dropout generators, under
        the keys scratchnet's ``Trainer.state()`` uses (``params/…``, ``optimizer/adam/m/…``,
        ``ema/…``, ``bn/<layer>/mean|variance``, ``step``, ``rng/<dropout layer>``: here a ``tf.random.Generator`` state)."""
        name = self._opt_name()
        arrays = {f"params/{k}": v.numpy() for k, v in self._variables.items()}
        arrays["optimizer/iterations"] = np.array(self.step, np.int64)
        arrays.update({f"optimizer/{name}/{k}": v.numpy() for k, v in self._non_slots().items()})
        arrays.update({f"optimizer/{name}/{slot}/{k}": v.numpy() for (slot, k), v in self._slots().items()})
        arrays.update({f"ema/{k}": v for k, v in self.averages().items()})
        for layer in self.batchnorms:
            arrays.update({f"bn/{layer.name}/{k}": v.numpy() for k, v in layer.moving.items()})
        for layer in self.dropout_layers:
            arrays[f"rng/{layer.name}"] = layer.generator.state.numpy()
        arrays["step"] = np.array(self.step, np.int64)
        return arrays

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        name = self._opt_name()
        self.model.load_params({k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")})
        for k, v in self._non_slots().items():
            v.assign(np.asarray(arrays[f"optimizer/{name}/{k}"], v.dtype.as_numpy_dtype))
        for (slot, k), v in self._slots().items():
            v.assign(np.asarray(arrays[f"optimizer/{name}/{slot}/{k}"], self._dtype))
        if self.ema is not None:
            for k, v in self._variables.items():
                self.ema.average(v).assign(np.asarray(arrays[f"ema/{k}"], self._dtype))
        for layer in self.batchnorms:
            for k, v in layer.moving.items():
                v.assign(np.asarray(arrays[f"bn/{layer.name}/{k}"], self._dtype))
        for layer in self.dropout_layers:
            state = np.asarray(arrays[f"rng/{layer.name}"])
            if state.shape != RNG_STATE_SPEC[0]:
                raise ValueError(f"rng/{layer.name}: not a TensorFlow generator state (shape {state.shape}); "
                                 "was this checkpoint written by the other engine?")
            layer.generator.state.assign(state.astype(np.int64))
        self.global_step.assign(int(arrays["step"]))
