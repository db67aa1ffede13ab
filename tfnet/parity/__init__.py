"""The parity harness: scratchnet against TensorFlow, tensor by tensor.

Sections (``scratchnet parity --sections ...``; library: ``run_<section>(dtype, ...)``):

* ``layers``       every layer type over a grid of shapes / strides / paddings: the same
                   input and weights (random, biases non-zero) into both engines; compare the
                   output y, the input gradient dx and every parameter gradient of
                   ``L = Σ y·r`` for a fixed random r (scratchnet: ``backward(r)``; TF:
                   ``GradientTape``); BatchNorm with offset/scale on and off, in training
                   (batch 1 and a constant channel: variance 0) and evaluation mode.
                   Plus the kinks, on purpose: max-pool ties (TF sends the
                   gradient to the first maximum) and ReLU at exactly 0 (gradient 0).
* ``models``       every recipe's model, one forward/backward of the recipe's loss (scale, L2)
                   on MNIST images with fed dropout masks (BatchNorm recipes also once in
                   evaluation mode, with random moving averages), layer by layer: the outputs in
                   forward order, then each layer's parameter and input gradients in
                   **backward order**, so the first failing row is the first divergent pass.
* ``optim``        TF1 (``tf.compat.v1.train.*Optimizer``) and Keras 3 optimizers: 100 updates
                   over the same stream of gradients (constant and decaying rates), compared
                   after every update.
* ``schedules``    every recipe's schedule (and a few more) over its whole range of steps.
* ``ema``          ``tf.train.ExponentialMovingAverage`` with and without num_updates.
* ``trajectories`` every recipe trained ``--steps`` steps in both engines (scratchnet's
                   ``Trainer``, tfnet's ``TFTrainer``) from the same initial weights, batches and
                   dropout masks; parameters, optimizer slots and moving averages compared at
                   checkpoints along the way, the loss at every step.

Tolerances (``TOLERANCES``): float64 is judged on the max relative error
|a-b| / max(|a|+|b|, 1e-4·scale) (``scratchnet.gradcheck.compare``'s, floor at 1e-4 of the
tensor's scale max(|a|+|b|) instead of 1e-6, see ``REL_FLOOR``); float32 on the scaled
error max|a-b| / max|b| (summation order differs between NumPy/OpenBLAS and TF's Eigen and
oneDNN kernels, so single elements that cancel to ~0 carry relative errors no tolerance on
element-wise relative error could bound). ``docs/parity.md`` gives the justification.
"""

from __future__ import annotations

from ..op_parity import assert_op  # noqa: F401  (the one-line op test)
from .cli import add_arguments, main, run, run_sections, summary  # noqa: F401
from .ema import check_ema, run_ema  # noqa: F401
from .layers import (LayerCase, check_layer, copy_moving_averages, layer_grid, randomize_moving_averages,  # noqa: F401
                     randomize_params, run_layers)
from .metrics import (CRITERION, REL_FLOOR, SECTIONS, TOLERANCES, Case, Row, compare_tensors,  # noqa: F401
                      tolerance)
from .models import MaskStream, check_model, run_models, training_images  # noqa: F401
from .optim import check_optimizer, optimizer_cases, run_optim  # noqa: F401
from .schedules import check_schedule, run_schedules  # noqa: F401
from .trajectories import checkpoints, compare_trajectory, parity_trainers, run_trajectories  # noqa: F401
