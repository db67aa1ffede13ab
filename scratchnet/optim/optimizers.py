"""Optimizers with TensorFlow 1.x (``tf.compat.v1.train``) rules, and Keras 3 variants.

Parameters and gradients are ``dict[str, np.ndarray]``. ``opt.apply(params, grads)`` updates
the parameter arrays in place, then increments ``opt.iterations``. A learning rate is a
number or a schedule ``step -> rate``, called with the count *before* the increment, like
TF1's ``global_step`` and Keras' ``iterations``.

Precision policy
----------------
Every update runs in the parameter's own dtype. Each hyperparameter is converted to that
dtype just before use (``dtype.type(value)``), as TF's fused ``Apply*`` kernels receive
``cast(hyperparameter, var.dtype)``:

* float32 parameters with Python-float hyperparameters reproduce TF1 with its defaults.
* TF1 turns a Python float into a *float32* tensor before that cast, so float64 TF1 with
  Python floats runs with float32-rounded constants (0.001 becomes 0.0010000000474974513).
  Here a NumPy scalar keeps its own rounding: pass ``np.float32(0.001)`` to get TF1's value,
  or give TF ``tf.constant(0.001, tf.float64)`` to have the exact value on both sides.
  A float32 schedule (TF's ``exponential_decay``) feeding float64 parameters is the same case.
* ``Adam`` keeps ``beta1_power``/``beta2_power`` as running products, like TF1's
  variables. Each lives in its beta's dtype when that beta is a NumPy scalar (TF1: the dtype
  of the beta tensor, float32 for a Python float), otherwise in the parameters' dtype.

The ``Keras*`` classes follow the Keras 3 source instead. Keras keeps the learning rate as
a float32 variable and ``ops.cast``s some Python-float constants through float32; the
``Keras*`` classes do the same, so they match Keras in float64 too. Their other constants
(``1 - beta``, ``rho``, ``epsilon``) are converted to the parameter dtype directly.
"""

from __future__ import annotations

import numpy as np


# Below these sizes a NumPy line is as fast as a Numba call (whose dispatch costs a few µs):
# measured one thread, SGD/EMA break even near 30 K elements, Adam (ten NumPy passes) near 1 K.
FUSED_MIN_SIZE = {"sgd_update": 1 << 15, "ema_update": 1 << 15, "adam_update": 1 << 10}
_kernels = None


def fused(name: str, size: int):
    """The fused in-place update ``name`` of the fast kernels (``scratchnet.kernels.optim``)
    when the fast backend is active and the array has at least ``FUSED_MIN_SIZE[name]``
    elements, else None. The fused kernels are bit-for-bit equal to the NumPy lines they
    replace (same operations, same order, same dtype)."""
    global _kernels
    if size < FUSED_MIN_SIZE[name]:
        return None
    from .. import backend
    if backend.get_backend() != "fast":
        return None
    if _kernels is None:
        from ..kernels import optim as kernels
        _kernels = kernels
    return getattr(_kernels, name)


class Optimizer:
    """The shared machinery: learning rate, ``iterations``, slots and their state.

    Slots (per-parameter accumulators, TF's name) are created on the first ``apply`` or by
    ``build``. ``state()`` holds every slot as ``"<name>/<slot>/<param>"``, other optimizer
    variables as ``"<name>/<variable>"`` and the count as ``"iterations"``.
    """

    name = "optimizer"
    slot_names: tuple[str, ...] = ()

    def __init__(self, learning_rate):
        self.learning_rate = learning_rate
        self.iterations = 0
        self.slots: dict[str, dict[str, np.ndarray]] = {s: {} for s in self.slot_names}
        self.variables: dict[str, np.ndarray] = {}

    def current_learning_rate(self):
        """The rate of the next update: the schedule's value at the pre-increment step."""
        lr = self.learning_rate
        return lr(self.iterations) if callable(lr) else lr

    def build(self, params: dict[str, np.ndarray]) -> None:
        """Create the slots that do not exist yet, each filled with its initial value."""
        for slot, arrays in self.slots.items():
            for key, p in params.items():
                if key not in arrays:
                    arrays[key] = np.full_like(p, self._initial_value(slot, p.dtype))

    def apply(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """One update of every array of ``params``, in place; then ``iterations += 1``."""
        if params.keys() != grads.keys():
            raise KeyError(f"params and grads differ: {sorted(params.keys() ^ grads.keys())}")
        self.build(params)
        lr = self.current_learning_rate()
        for key, p in params.items():
            self._update(key, p, np.asarray(grads[key], p.dtype), lr)
        self._finish()
        self.iterations += 1

    def state(self) -> dict[str, np.ndarray]:
        out = {"iterations": np.array(self.iterations, np.int64)}
        out.update({f"{self.name}/{k}": v.copy() for k, v in self.variables.items()})
        for slot, arrays in self.slots.items():
            out.update({f"{self.name}/{slot}/{k}": v.copy() for k, v in arrays.items()})
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore ``state()``. Keys that belong to something else (params, EMA) are ignored."""
        self.iterations = int(state["iterations"])
        for key, value in state.items():
            prefix, _, rest = key.partition("/")
            if prefix != self.name:
                continue
            slot, _, param = rest.partition("/")
            if not param:
                self.variables[slot] = np.array(value)
            elif slot in self.slots:
                self.slots[slot][param] = np.array(value)
            else:
                raise KeyError(f"{key!r}: {type(self).__name__} has no slot {slot!r}")

    def _initial_value(self, slot: str, dtype: np.dtype):
        return 0

    def _update(self, key: str, p: np.ndarray, g: np.ndarray, lr) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        """Runs once per ``apply``, after all the parameters are updated."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(learning_rate={self.learning_rate!r})"


class GradientDescent(Optimizer):
    """``tf.compat.v1.train.GradientDescentOptimizer``: ``w -= g·lr``."""

    name = "sgd"

    def _update(self, key, p, g, lr):
        lr = p.dtype.type(lr)
        sgd = fused("sgd_update", p.size)
        if sgd is None or not sgd(p, g, lr):
            p -= g * lr


class Momentum(Optimizer):
    """``tf.compat.v1.train.MomentumOptimizer`` (kernel ``ApplyMomentum``)::

        a = a·μ + g
        w -= lr·a                      (use_nesterov: w -= g·lr + a·μ·lr)

    The slot ``a`` starts at 0. Keras' SGD keeps ``-lr`` inside its slot instead (see
    ``KerasSGD``); both give the same weights for a constant rate, not for a schedule.
    """

    name = "momentum"
    slot_names = ("momentum",)

    def __init__(self, learning_rate, momentum: float, use_nesterov: bool = False):
        super().__init__(learning_rate)
        self.momentum = momentum
        self.use_nesterov = use_nesterov

    def _update(self, key, p, g, lr):
        lr, mu = p.dtype.type(lr), p.dtype.type(self.momentum)
        a = self.slots["momentum"][key]
        a[...] = a * mu + g
        if self.use_nesterov:
            p -= g * lr + a * mu * lr
        else:
            p -= a * lr


class AdaGrad(Optimizer):
    """``tf.compat.v1.train.AdagradOptimizer`` (kernel ``ApplyAdagrad``)::

        acc += g²
        w -= g·lr·(1/sqrt(acc))

    ``acc`` starts at ``initial_accumulator_value``. TF1 has no epsilon here; Keras adds
    one inside the square root (``KerasAdagrad``). TF's float32 ``rsqrt`` is a fast
    approximation, not ``1/sqrt``: measured up to 2 ulp apart (float64 matches exactly).
    """

    name = "adagrad"
    slot_names = ("accumulator",)

    def __init__(self, learning_rate, initial_accumulator_value: float = 0.1):
        if initial_accumulator_value <= 0:
            raise ValueError(f"initial_accumulator_value must be positive: {initial_accumulator_value}")
        super().__init__(learning_rate)
        self.initial_accumulator_value = initial_accumulator_value

    def _initial_value(self, slot, dtype):
        return dtype.type(self.initial_accumulator_value)

    def _update(self, key, p, g, lr):
        one, lr = p.dtype.type(1), p.dtype.type(lr)
        acc = self.slots["accumulator"][key]
        acc += g * g
        p -= g * lr * (one / np.sqrt(acc))


class RMSProp(Optimizer):
    """``tf.compat.v1.train.RMSPropOptimizer`` (kernels ``ApplyRMSProp``, ``ApplyCenteredRMSProp``)::

        ms += (g² - ms)·(1 - ρ)
        mom = mom·μ + g·lr / sqrt(ms + ε)                   (ε inside the square root)
        w -= mom
        centered: mg += (g - mg)·(1 - ρ);  mom = mom·μ + g·lr / sqrt(ms - mg² + ε)

    ``ρ`` is ``decay``, ``μ`` is ``momentum``. The mean square ``ms`` starts at **1.0**
    (``mom`` and ``mg`` at 0); Keras starts it at 0 and defaults ε to 1e-7 (``KerasRMSprop``).
    """

    name = "rmsprop"

    def __init__(self, learning_rate, decay: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-10, centered: bool = False):
        self.slot_names = ("rms", "momentum", "mg") if centered else ("rms", "momentum")
        super().__init__(learning_rate)
        self.decay, self.momentum, self.epsilon, self.centered = decay, momentum, epsilon, centered

    def _initial_value(self, slot, dtype):
        return 1 if slot == "rms" else 0

    def _update(self, key, p, g, lr):
        t = p.dtype.type
        one, lr, rho, mu, eps = t(1), t(lr), t(self.decay), t(self.momentum), t(self.epsilon)
        ms, mom = self.slots["rms"][key], self.slots["momentum"][key]
        ms += (g * g - ms) * (one - rho)
        if self.centered:
            mg = self.slots["mg"][key]
            mg += (g - mg) * (one - rho)
            mom[...] = mom * mu + g * lr / np.sqrt(ms - mg * mg + eps)
        else:
            mom[...] = mom * mu + g * lr / np.sqrt(ms + eps)
        p -= mom


class Adam(Optimizer):
    """``tf.compat.v1.train.AdamOptimizer`` (kernel ``ApplyAdam``), step t = 1, 2, ...::

        lr_t = lr·sqrt(1 - β2ᵗ) / (1 - β1ᵗ)
        m += (g - m)·(1 - β1)
        v += (g² - v)·(1 - β2)
        w -= m·lr_t / (sqrt(v) + ε)                         (ε outside the square root)

    ``m`` and ``v`` start at 0. β1ᵗ and β2ᵗ are the variables ``beta1_power`` and
    ``beta2_power``: they start at β and are multiplied by β after every update (their dtype:
    see the module's precision policy). ε is "epsilon hat": it is added after the bias
    correction, so this is not the textbook ``m̂/(sqrt(v̂) + ε)``. Keras: ``KerasAdam``.
    """

    name = "adam"
    slot_names = ("m", "v")

    def __init__(self, learning_rate=0.001, beta1: float = 0.9, beta2: float = 0.999,
                 epsilon: float = 1e-8):
        super().__init__(learning_rate)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon

    def build(self, params):
        super().build(params)
        common = np.result_type(*params.values())
        for key, beta in (("beta1_power", self.beta1), ("beta2_power", self.beta2)):
            if key not in self.variables:
                dtype = beta.dtype if isinstance(beta, np.floating) else common
                self.variables[key] = np.array(beta, dtype)

    def _update(self, key, p, g, lr):
        t = p.dtype.type
        one, lr, b1, b2, eps = t(1), t(lr), t(self.beta1), t(self.beta2), t(self.epsilon)
        b1p, b2p = t(self.variables["beta1_power"]), t(self.variables["beta2_power"])
        m, v = self.slots["m"][key], self.slots["v"][key]
        alpha = lr * np.sqrt(one - b2p) / (one - b1p)
        adam = fused("adam_update", p.size)
        if adam is not None and adam(p, g, m, v, alpha, one - b1, one - b2, eps):
            return  # the same three lines, fused into one pass
        m += (g - m) * (one - b1)
        v += (g * g - v) * (one - b2)
        p -= m * alpha / (np.sqrt(v) + eps)

    def _finish(self):
        for key, beta in (("beta1_power", self.beta1), ("beta2_power", self.beta2)):
            power = self.variables[key]
            power *= power.dtype.type(beta)


def _keras_cast(value, dtype: np.dtype):
    """Keras ``ops.cast(python_float, dtype)``: the float becomes a float32 tensor first."""
    return dtype.type(np.float32(value))


class KerasOptimizer(Optimizer):
    """Keras 3: the learning rate (a float32 variable, or a schedule's value) is float32."""

    def current_learning_rate(self):
        return np.float32(super().current_learning_rate())


class KerasSGD(KerasOptimizer):
    """``keras.optimizers.SGD``::

        no momentum: w -= g·lr
        m = m·μ - g·lr;  w += m            (nesterov: w += m·μ - g·lr, with the new m)

    ``m`` starts at 0 and exists only when μ != 0; μ goes through float32.
    """

    name = "keras_sgd"

    def __init__(self, learning_rate=0.01, momentum: float = 0.0, nesterov: bool = False):
        self.slot_names = ("momentum",) if momentum else ()
        super().__init__(learning_rate)
        self.momentum, self.nesterov = momentum, nesterov

    def _update(self, key, p, g, lr):
        lr = p.dtype.type(lr)
        if not self.momentum:
            p -= g * lr
            return
        mu = _keras_cast(self.momentum, p.dtype)
        m = self.slots["momentum"][key]
        m[...] = m * mu - g * lr
        p += m * mu - g * lr if self.nesterov else m


class KerasAdagrad(KerasOptimizer):
    """``keras.optimizers.Adagrad``::

        acc += g²
        w -= lr·g / sqrt(acc + ε)                         (ε inside the square root)

    ``acc`` starts at ``initial_accumulator_value`` rounded through float32
    (``initializers.Constant``): 0.10000000149011612 for the default, even in float64.
    """

    name = "keras_adagrad"
    slot_names = ("accumulator",)

    def __init__(self, learning_rate=0.001, initial_accumulator_value: float = 0.1,
                 epsilon: float = 1e-7):
        super().__init__(learning_rate)
        self.initial_accumulator_value, self.epsilon = initial_accumulator_value, epsilon

    def _initial_value(self, slot, dtype):
        return _keras_cast(self.initial_accumulator_value, dtype)

    def _update(self, key, p, g, lr):
        lr, eps = p.dtype.type(lr), p.dtype.type(self.epsilon)
        acc = self.slots["accumulator"][key]
        acc += g * g
        p -= lr * g / np.sqrt(acc + eps)


class KerasRMSprop(KerasOptimizer):
    """``keras.optimizers.RMSprop``::

        v = ρ·v + (1 - ρ)·g²
        inc = lr·g / sqrt(v + ε)                           (ε inside the square root)
        centered: a = ρ·a + (1 - ρ)·g;  inc = lr·g / sqrt(v - a² + ε)
        w -= inc                           (momentum μ > 0: mom = μ·mom + inc;  w -= mom)

    ``v`` starts at **0** (TF1: 1.0) and ε defaults to 1e-7 (TF1: 1e-10).
    """

    name = "keras_rmsprop"

    def __init__(self, learning_rate=0.001, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, centered: bool = False):
        slots = ["velocity"]
        if momentum > 0:
            slots.append("momentum")
        if centered:
            slots.append("average_gradient")
        self.slot_names = tuple(slots)
        super().__init__(learning_rate)
        self.rho, self.momentum, self.epsilon, self.centered = rho, momentum, epsilon, centered

    def _update(self, key, p, g, lr):
        t = p.dtype.type
        lr, rho, one_minus_rho, eps = t(lr), t(self.rho), t(1 - self.rho), t(self.epsilon)
        v = self.slots["velocity"][key]
        v[...] = rho * v + one_minus_rho * (g * g)
        if self.centered:
            a = self.slots["average_gradient"][key]
            a[...] = rho * a + one_minus_rho * g
            inc = lr * g / np.sqrt(v - a * a + eps)
        else:
            inc = lr * g / np.sqrt(v + eps)
        if self.momentum > 0:
            mom = self.slots["momentum"][key]
            mom[...] = t(self.momentum) * mom + inc
            inc = mom
        p -= inc


class KerasAdam(KerasOptimizer):
    """``keras.optimizers.Adam``, step t = iterations + 1::

        lr_t = lr·sqrt(1 - β2ᵗ) / (1 - β1ᵗ)       β^t = pow(cast(β), t) in the parameter dtype
        m += (g - m)·(1 - β1)
        v += (g² - v)·(1 - β2)
        w -= m·lr_t / (sqrt(v) + ε)

    Same formula as TF1's ``Adam`` but ε defaults to 1e-7 (TF1: 1e-8), the powers come from
    ``pow`` rather than running products, and β in the powers is rounded through float32.
    """

    name = "keras_adam"
    slot_names = ("momentum", "velocity")

    def __init__(self, learning_rate=0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7):
        super().__init__(learning_rate)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def _update(self, key, p, g, lr):
        t = p.dtype.type
        one, lr, step = t(1), t(lr), t(self.iterations + 1)
        b1p = _keras_cast(self.beta_1, p.dtype) ** step
        b2p = _keras_cast(self.beta_2, p.dtype) ** step
        m, v = self.slots["momentum"][key], self.slots["velocity"][key]
        alpha = lr * np.sqrt(one - b2p) / (one - b1p)
        m += (g - m) * t(1 - self.beta_1)
        v += (g * g - v) * t(1 - self.beta_2)
        p -= m * alpha / (np.sqrt(v) + t(self.epsilon))


OPTIMIZERS = {
    "tf1": {"sgd": GradientDescent, "momentum": Momentum, "adagrad": AdaGrad,
            "rmsprop": RMSProp, "adam": Adam},
    "keras": {"sgd": KerasSGD, "momentum": KerasSGD, "adagrad": KerasAdagrad,
              "rmsprop": KerasRMSprop, "adam": KerasAdam},
}


def make_optimizer(name: str, learning_rate, flavor: str = "tf1", **kwargs) -> Optimizer:
    """``make_optimizer("adam", 1e-4)``; the keyword names are the library's own
    (TF1 ``beta1``, ``decay``, ``use_nesterov``; Keras ``beta_1``, ``rho``, ``nesterov``)."""
    if flavor not in OPTIMIZERS:
        raise ValueError(f"unknown flavor {flavor!r}; choose one of {sorted(OPTIMIZERS)}")
    if name not in OPTIMIZERS[flavor]:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS[flavor])}")
    return OPTIMIZERS[flavor][name](learning_rate, **kwargs)
