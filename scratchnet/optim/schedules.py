"""Learning-rate schedules: callables ``step -> rate``, called with the pre-increment step.

TensorFlow computes ``exponential_decay`` in float32 (the dtype of the initial rate, a
Python float turned into a float32 tensor). Each schedule takes ``dtype``: ``"float64"``
(the default) is plain double-precision math, ``"float32"`` repeats TF's float32
operations one by one and matches its values bit for bit.

``to_config()`` gives a JSON-ready dict and ``from_config`` rebuilds the schedule from it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

_DTYPES = ("float32", "float64")


def _check_dtype(dtype: str) -> None:
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")


@dataclass(frozen=True)
class Constant:
    """``rate(step) = learning_rate``."""

    learning_rate: float

    def __call__(self, step: int) -> float:
        return self.learning_rate

    def to_config(self) -> dict:
        return {"schedule": "constant", **asdict(self)}


@dataclass(frozen=True)
class ExponentialDecay:
    """``tf.compat.v1.train.exponential_decay``::

        rate(step) = lr0 · decay_rate ** (step / decay_steps)     (staircase: floor of the exponent)

    In ``"float32"`` every quantity is a float32 as in TF: ``p = f32(step) / f32(decay_steps)``,
    ``rate = f32(lr0) · pow(f32(decay_rate), p)``.
    """

    lr0: float
    decay_steps: int
    decay_rate: float
    staircase: bool = False
    dtype: str = "float64"

    def __post_init__(self):
        _check_dtype(self.dtype)

    def __call__(self, step: int):
        f = np.dtype(self.dtype).type
        p = f(step) / f(self.decay_steps)
        if self.staircase:
            p = np.floor(p)
        return f(self.lr0) * f(self.decay_rate) ** p

    def to_config(self) -> dict:
        return {"schedule": "exponential_decay", **asdict(self)}


@dataclass(frozen=True)
class Gorner:
    """Martin Görner's rate, his TF code ``0.0001 + tf.train.exponential_decay(0.003, step, 2000, 1/math.e)``::

        rate(step) = lr_min + lr_max · (1/e) ** (step / decay_steps)

    So ``lr_max`` is the amplitude of the decaying part: the rate starts at
    ``lr_min + lr_max`` (0.0031) and tends to ``lr_min``.
    """

    lr_min: float = 1e-4
    lr_max: float = 3e-3
    decay_steps: int = 2000
    dtype: str = "float64"

    def __post_init__(self):
        _check_dtype(self.dtype)

    def __call__(self, step: int):
        decay = ExponentialDecay(self.lr_max, self.decay_steps, 1 / math.e, dtype=self.dtype)
        return np.dtype(self.dtype).type(self.lr_min) + decay(step)

    def to_config(self) -> dict:
        return {"schedule": "gorner", **asdict(self)}


SCHEDULES = {"constant": Constant, "exponential_decay": ExponentialDecay, "gorner": Gorner}

# The lower-case names the recipes use.
constant, exponential_decay, gorner = Constant, ExponentialDecay, Gorner


def from_config(config: dict):
    """The schedule that ``to_config()`` described."""
    kwargs = dict(config)
    return SCHEDULES[kwargs.pop("schedule")](**kwargs)
