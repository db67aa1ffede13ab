"""Weight initializers, TensorFlow's definitions, drawn from a seeded NumPy generator.

Each initializer is a callable ``init(rng, shape, dtype) -> np.ndarray`` so a model built
from the same seed is the same bit for bit. (TensorFlow's own random streams cannot be
reproduced in NumPy; parity tests copy weights from one engine to the other instead.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Zeros:
    def __call__(self, rng: np.random.Generator, shape, dtype=np.float32) -> np.ndarray:
        return np.zeros(shape, dtype)


@dataclass(frozen=True)
class Constant:
    value: float

    def __call__(self, rng: np.random.Generator, shape, dtype=np.float32) -> np.ndarray:
        return np.full(shape, self.value, dtype)


@dataclass(frozen=True)
class RandomNormal:
    """``N(mean, stddev²)``, like ``tf.random.normal``."""

    stddev: float = 1.0
    mean: float = 0.0

    def __call__(self, rng: np.random.Generator, shape, dtype=np.float32) -> np.ndarray:
        return (self.mean + self.stddev * rng.standard_normal(shape)).astype(dtype)


@dataclass(frozen=True)
class TruncatedNormal:
    """``N(mean, stddev²)`` with every draw beyond two standard deviations redrawn,
    like ``tf.random.truncated_normal`` (the draws follow the truncated law; the result's
    standard deviation is about 0.88·stddev)."""

    stddev: float = 1.0
    mean: float = 0.0

    def __call__(self, rng: np.random.Generator, shape, dtype=np.float32) -> np.ndarray:
        z = rng.standard_normal(shape)
        outside = np.abs(z) > 2.0
        while outside.any():
            z[outside] = rng.standard_normal(int(outside.sum()))
            outside = np.abs(z) > 2.0
        return (self.mean + self.stddev * z).astype(dtype)


@dataclass(frozen=True)
class GlorotUniform:
    """``U(-limit, limit)`` with ``limit = sqrt(6 / (fan_in + fan_out))``: ``tf.get_variable``'s
    default initializer (``glorot_uniform_initializer``) and Keras' ``GlorotUniform``.

    Fans as TensorFlow's ``_compute_fans``: a vector [n] (a bias) has fan_in = fan_out = n;
    a matrix [in, out] has in and out; a conv filter [KH, KW, Cin, Cout] has KH·KW·Cin and
    KH·KW·Cout.
    """

    @staticmethod
    def limit(shape) -> float:
        shape = tuple(shape)
        if len(shape) == 0:
            fan_in = fan_out = 1
        elif len(shape) == 1:
            fan_in = fan_out = shape[0]
        else:
            receptive = int(np.prod(shape[:-2]))
            fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        return float(np.sqrt(6.0 / max(1.0, fan_in + fan_out)))

    def __call__(self, rng: np.random.Generator, shape, dtype=np.float32) -> np.ndarray:
        limit = self.limit(shape)
        return rng.uniform(-limit, limit, shape).astype(dtype)


zeros = Zeros()
glorot_uniform = GlorotUniform()
