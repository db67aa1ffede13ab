"""Optimizers (TF1 and Keras 3 rules), learning-rate schedules, moving averages."""

from scratchnet.optim.ema import ExponentialMovingAverage
from scratchnet.optim.optimizers import (
    AdaGrad,
    Adam,
    GradientDescent,
    KerasAdagrad,
    KerasAdam,
    KerasRMSprop,
    KerasSGD,
    Momentum,
    Optimizer,
    RMSProp,
    make_optimizer,
)
from scratchnet.optim.schedules import Constant, ExponentialDecay, Gorner, constant, exponential_decay, from_config, gorner

__all__ = [
    "AdaGrad", "Adam", "Constant", "ExponentialDecay", "ExponentialMovingAverage", "GradientDescent",
    "Gorner", "KerasAdagrad", "KerasAdam", "KerasRMSprop", "KerasSGD", "Momentum", "Optimizer",
    "RMSProp", "constant", "exponential_decay", "from_config", "gorner", "make_optimizer",
]
