"""Exponential moving average of the parameters, ``tf.train.ExponentialMovingAverage``.

The averages ("shadows") are initialised to the parameters' values on the first ``apply``;
then every ``apply(params, num_updates=n)`` does, in each parameter's dtype::

    d = min(decay, (1 + n) / (10 + n))          (just ``decay`` when num_updates=False)
    shadow -= (shadow - w) · (1 - d)

TF computes ``d`` and ``1 - d`` in float32, then casts ``1 - d`` to the parameter dtype.
``decay_dtype="float32"`` repeats that bit for bit; the default ``"float64"`` is plain
double-precision math.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from .optimizers import fused


class ExponentialMovingAverage:
    """``num_updates=True``: ``apply`` takes TF's ``num_updates`` (usually the global step),
    which lowers the decay early in training (0.1, 0.18, 0.25, ... for n = 0, 1, 2, ...)."""

    name = "ema"

    def __init__(self, decay: float, num_updates: bool = True, decay_dtype: str = "float64"):
        self.decay = decay
        self.num_updates = num_updates
        self.decay_dtype = np.dtype(decay_dtype)
        self.averages: dict[str, np.ndarray] = {}

    def effective_decay(self, num_updates: int | None = None):
        f = self.decay_dtype.type
        if not self.num_updates:
            return f(self.decay)
        if num_updates is None:
            raise ValueError("this average was built with num_updates=True: pass num_updates to apply()")
        n = f(num_updates)
        return min(f(self.decay), (f(1) + n) / (f(10) + n))

    def apply(self, params: dict[str, np.ndarray], num_updates: int | None = None) -> None:
        one_minus_decay = self.decay_dtype.type(1) - self.effective_decay(num_updates)
        for key, w in params.items():
            shadow = self.averages.setdefault(key, w.copy())
            c = w.dtype.type(one_minus_decay)
            ema = fused("ema_update", w.size)
            if ema is None or not ema(shadow, w, c):
                shadow -= (shadow - w) * c

    @contextmanager
    def averaged(self, params: dict[str, np.ndarray]):
        """``with ema.averaged(params): evaluate(...)`` runs with the averages in ``params``;
        the trained values are put back on exit, bit for bit."""
        saved = {key: params[key].copy() for key in self.averages}
        for key, shadow in self.averages.items():
            params[key][...] = shadow
        try:
            yield params
        finally:
            for key, value in saved.items():
                params[key][...] = value

    def state(self) -> dict[str, np.ndarray]:
        return {f"{self.name}/{key}": a.copy() for key, a in self.averages.items()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore ``state()``; keys that do not start with ``"ema/"`` are ignored."""
        prefix = f"{self.name}/"
        self.averages = {k[len(prefix):]: np.array(v) for k, v in state.items() if k.startswith(prefix)}
