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

import argparse
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .op_parity import assert_op  # noqa: F401  (tfnet.parity.assert_op: the one-line op test)

SECTIONS = ("layers", "models", "optim", "schedules", "ema", "trajectories")

# section -> dtype -> tolerance of the criterion ("rel" in float64, "scaled" in float32)
TOLERANCES = {
    "float64": {"layers": 1e-10, "models": 1e-10, "optim": 1e-12, "schedules": 1e-14, "ema": 1e-12,
                "trajectories": 1e-8},
    "float32": {"layers": 1e-5, "models": 1e-5, "optim": 1e-6, "schedules": 1e-6, "ema": 1e-6,
                "trajectories": 1e-4},
}
# What is judged: "rel" (max relative error), "scaled" (max|a-b| / max|b|) or "norm"
# (||a-b||₂ / ||b||₂). float32 trajectories under Adam are judged on the norm: Adam turns the
# round-off of a near-zero gradient element into a full ±lr step of that element, so single
# elements part by O(lr) while the tensor as a whole stays together (docs/parity.md).
CRITERION = {"float64": dict.fromkeys(SECTIONS, "rel"),
             "float32": {**dict.fromkeys(SECTIONS, "scaled"), "trajectories": "norm"}}
_CRITERION_NAMES = {"rel": "max rel err", "scaled": "scaled err", "norm": "norm err"}
# max rel err = max |a-b| / max(|a|+|b|, REL_FLOOR · max(|a|+|b|)): scratchnet.gradcheck.compare's
# definition with the floor at 1e-4 of the tensor's scale instead of 1e-6. Both engines round:
# an element that cancels to below 1e-4 of the scale (x·dy summed over a batch of 3, say)
# carries their round-off relative to the scale, not to itself.
REL_FLOOR = 1e-4


def tolerance(section: str, dtype) -> float:
    return TOLERANCES[np.dtype(dtype).name][section]


# --- rows, cases, tables ------------------------------------------------------------------------

@dataclass
class Row:
    tensor: str
    shape: tuple
    max_abs: float
    max_rel: float
    scaled: float
    norm: float
    error: float          # the value judged: max_rel, scaled or norm (see CRITERION)
    ok: bool
    tol: float = math.nan  # the tolerance this row was judged by


@dataclass
class Case:
    section: str
    name: str
    dtype: str
    tol: float
    criterion: str
    rows: list[Row] = field(default_factory=list)
    note: str = ""
    first_failure: str | None = None   # "tensor" (layers, models) or "step N: tensor" (trajectories)
    failing_step: int | None = None
    drift: dict = field(default_factory=dict)  # trajectories: step -> max error of the state

    @property
    def ok(self) -> bool:
        return self.first_failure is None and all(r.ok for r in self.rows)

    @property
    def max_error(self) -> float:
        return max((r.error for r in self.rows), default=0.0)

    def add(self, tensor: str, ours, theirs, tol: float | None = None) -> Row:
        """Compare and append one row, judged by ``tol`` (default: the case's tolerance)."""
        row = compare_tensors(tensor, ours, theirs, self.criterion, self.tol if tol is None else tol)
        self.rows.append(row)
        if not row.ok and self.first_failure is None:
            self.first_failure = tensor
        return row

    def table(self) -> str:
        crit = _CRITERION_NAMES[self.criterion]
        head = (f"== {self.section}: {self.name} [{self.dtype}; pass if {crit} <= {self.tol:g}] "
                f"{'PASS' if self.ok else 'FAIL'}")
        lines = [head]
        if self.note:
            lines.append(f"   {self.note}")
        own_tol = any(r.tol != self.tol for r in self.rows)  # rows with their own tolerance
        lines.append(f"   {'tensor':<34} {'shape':<18} {'max abs err':>11} {'max rel err':>11} "
                     f"{'scaled err':>11} {'norm err':>11}{'  tolerance' if own_tol else ''}  result")
        for r in self.rows:
            lines.append(f"   {r.tensor:<34} {str(r.shape):<18} {r.max_abs:11.3e} {r.max_rel:11.3e} "
                         f"{r.scaled:11.3e} {r.norm:11.3e}{f'  {r.tol:9.2e}' if own_tol else ''}"
                         f"  {'ok' if r.ok else 'FAIL'}")
        if not self.ok:
            lines.append(f"   FIRST DIVERGENCE: {self.first_failure}")
        return "\n".join(lines)


def compare_tensors(tensor: str, ours, theirs, criterion: str, tol: float) -> Row:
    """One row: scratchnet's array against TensorFlow's (the reference)."""
    from scratchnet.gradcheck import compare

    a, b = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if a.shape != b.shape:
        return Row(tensor, b.shape, *[math.inf] * 5, False, tol)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        same = np.array_equal(a, b, equal_nan=True)
        return Row(tensor, a.shape, *[0.0 if same else math.inf] * 5, same, tol)
    c = compare(tensor, a, b)
    size = np.abs(a) + np.abs(b)
    floor = max(REL_FLOOR * float(size.max(initial=0.0)), np.finfo(np.float64).tiny)
    max_rel = float((np.abs(a - b) / np.maximum(size, floor)).max(initial=0.0))
    ref = float(np.abs(b).max(initial=0.0))
    scaled = c.max_abs / ref if ref > 0 else c.max_abs
    norm = _norm_distance(a, b)
    error = {"rel": max_rel, "scaled": scaled, "norm": norm}[criterion]
    return Row(tensor, tuple(a.shape), c.max_abs, max_rel, scaled, norm, error, bool(error <= tol), tol)


def _new_case(section, name, dtype, note="") -> Case:
    dtype = np.dtype(dtype)
    return Case(section, name, dtype.name, tolerance(section, dtype), CRITERION[dtype.name][section], note=note)


# --- layers ----------------------------------------------------------------------------------------

@dataclass
class LayerCase:
    label: str
    make: Callable          # () -> an unbuilt scratchnet layer
    x_shape: tuple
    inputs: str = "normal"  # "normal" | "away_from_zero" | "pool_ties" | "relu_zeros" | "constant_channel"
    mask_keep: float | None = None
    training: bool = True   # False: evaluation mode (BatchNorm: random moving averages in both)


def layer_grid(full: bool = False) -> list[LayerCase]:
    """The layer cases: ``full=False`` is the quick grid (CI), ``True`` adds bigger shapes."""
    from scratchnet.initializers import Constant, Zeros
    from scratchnet.layers import (LSTM, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Reshape, Sigmoid,
                                   Softmax, Tanh)

    c = []
    # Dense
    for n, i, o in [(1, 3, 2), (5, 7, 4)] + ([(16, 784, 10), (32, 300, 100), (7, 1, 5)] if full else []):
        c.append(LayerCase(f"dense {i}->{o} batch {n}", lambda i=i, o=o: Dense(i, o, name="dense"), (n, i)))
    # Conv2D: (x shape, kernel, F, stride, padding, why)
    convs = [((2, 7, 7, 3), 3, 4, 1, "SAME", ""),
             ((1, 8, 8, 2), (2, 3), 3, 2, "SAME", "non-square kernel, batch 1"),
             ((2, 12, 12, 1), 6, 2, 1, "SAME", "pad 2/3 (asymmetric)"),
             ((2, 13, 13, 2), 5, 3, 2, "SAME", "13 -> 7, pad 2/2"),
             ((2, 14, 14, 1), 5, 3, 2, "SAME", "pad 1/2 (asymmetric)"),
             ((2, 9, 7, 2), (3, 2), 2, 2, "VALID", "non-square, VALID"),
             ((1, 5, 5, 1), 5, 2, 1, "VALID", "kernel = input")]
    if full:
        convs += [((2, 28, 28, 1), 6, 6, 1, "SAME", "Görner conv1: pad 2/3"),
                  ((2, 28, 28, 6), 5, 12, 2, "SAME", "Görner conv2: pad 1/2"),
                  ((2, 14, 14, 12), 4, 24, 2, "SAME", "Görner conv3: pad 1/1"),
                  ((2, 14, 14, 32), 5, 64, 1, "SAME", "deep-CNN conv2"),
                  ((3, 10, 11, 3), (1, 4), 2, 3, "SAME", "stride 3, 1x4"),
                  ((2, 6, 6, 4), 1, 3, 1, "VALID", "1x1")]
    for xs, k, f, s, pad, why in convs:
        kk = k if isinstance(k, tuple) else (k, k)
        label = f"conv {kk[0]}x{kk[1]} {xs[3]}->{f} s{s} {pad} on {xs[1]}x{xs[2]}" + (f" ({why})" if why else "")
        c.append(LayerCase(label, lambda k=k, ci=xs[3], f=f, s=s, pad=pad:
                           Conv2D(k, ci, f, stride=s, padding=pad, name="conv"), xs))
    # BatchNorm: (x shape, offset, scale, inputs, training, why)
    norms = [((8, 6), True, True, "normal", True, ""), ((8, 6), True, False, "normal", True, ""),
             ((8, 6), False, True, "normal", True, ""), ((5, 4), False, False, "normal", True, ""),
             ((2, 5, 5, 8), True, True, "normal", True, ""), ((3, 4, 4, 4), True, False, "normal", True, ""),
             ((1, 8), True, True, "normal", True, "batch 1: variance 0"),
             ((1, 3, 3, 4), True, False, "normal", True, "conv batch 1"),
             ((4, 3, 3, 8), True, True, "constant_channel", True, "channel 0 constant: variance 0"),
             ((6, 5), True, True, "constant_channel", True, "dense, feature 0 constant"),
             ((8, 6), True, True, "normal", False, "evaluation: moving averages"),
             ((2, 4, 4, 8), True, False, "normal", False, "evaluation: moving averages")]
    if full:
        norms += [((2, 28, 28, 24), True, False, "normal", True, "conv-bn bn1"),
                  ((2, 14, 14, 48), True, False, "normal", True, "conv-bn bn2"),
                  ((16, 200), True, True, "normal", True, "mlp5-bn-sigmoid bn1"),
                  ((100, 200), True, False, "normal", True, "conv-bn bn4")]
    for xs, off, sc, inputs, training, why in norms:
        label = (f"batchnorm {'conv' if len(xs) == 4 else 'dense'} {xs} offset {'on' if off else 'off'}, "
                 f"scale {'on' if sc else 'off'}" + (f" ({why})" if why else ""))
        c.append(LayerCase(label, lambda f=xs[-1], off=off, sc=sc: BatchNorm(
            f, offset_init=Zeros() if off else None, scale_init=Constant(1.0) if sc else None, name="bn"),
            xs, inputs=inputs, training=training))
    # MaxPool2D: (x shape, window, stride, padding, why)
    pools = [((2, 7, 7, 3), 2, 2, "SAME", "7 -> 4, pad 0/1 with -inf"),
             ((2, 8, 8, 2), 3, 1, "VALID", "overlapping windows"),
             ((1, 7, 7, 2), 3, 2, "SAME", "overlapping, asymmetric pad"),
             ((2, 6, 9, 2), (2, 3), (1, 2), "SAME", "non-square window and stride")]
    if full:
        pools += [((2, 28, 28, 4), 2, 2, "SAME", "deep-CNN pool1"), ((2, 14, 14, 8), 2, 2, "SAME", "pool2"),
                  ((3, 9, 9, 2), 3, 1, "SAME", "3x3 stride 1 SAME"), ((2, 5, 5, 1), 5, 5, "VALID", "global")]
    for xs, k, s, pad, why in pools:
        c.append(LayerCase(f"maxpool {k}/{s} {pad} on {xs[1]}x{xs[2]} ({why})",
                           lambda k=k, s=s, pad=pad: MaxPool2D(k, s, pad, name="pool"), xs))
    # The kinks, on purpose
    c.append(LayerCase("maxpool 2/2 SAME with deliberate ties (first-max rule)",
                       lambda: MaxPool2D(2, 2, "SAME", name="pool"), (2, 6, 6, 2), inputs="pool_ties"))
    c.append(LayerCase("maxpool 3/1 VALID with deliberate ties, overlapping",
                       lambda: MaxPool2D(3, 1, "VALID", name="pool"), (1, 6, 6, 2), inputs="pool_ties"))
    c.append(LayerCase("relu with exact zeros (gradient 0 at 0)", lambda: ReLU(name="relu"), (4, 9),
                       inputs="relu_zeros"))
    # Pointwise
    shapes = [(3, 10), (2, 4, 4, 3)] + ([(50, 1024)] if full else [])
    for cls, inputs in [(ReLU, "away_from_zero"), (Sigmoid, "normal"), (Tanh, "normal"), (Softmax, "normal")]:
        for xs in shapes:
            c.append(LayerCase(f"{cls.__name__.lower()} on {xs}", lambda cls=cls: cls(name=cls.__name__.lower()),
                               xs, inputs=inputs))
    # Dropout with a fed mask
    for keep, xs in [(0.5, (3, 20)), (0.75, (2, 5, 5, 3))] + ([(0.9, (50, 1024))] if full else []):
        c.append(LayerCase(f"dropout keep {keep} on {xs} (fed mask)", lambda keep=keep: Dropout(keep, name="dropout"),
                           xs, mask_keep=keep))
    # Reshape / Flatten
    c.append(LayerCase("flatten (2,4,4,3) NHWC order", lambda: Flatten(name="flatten"), (2, 4, 4, 3)))
    c.append(LayerCase("reshape (2,28,28,1) -> (2,28,28)", lambda: Reshape((28, 28), name="rows"), (2, 28, 28, 1)))
    # LSTM: (N, T, D, H, return_sequences, forget_bias)
    lstms = [(2, 1, 3, 2, False, 1.0), (1, 1, 4, 3, True, 1.0), (2, 5, 4, 3, False, 1.0),
             (3, 4, 2, 5, True, 1.0), (2, 6, 3, 4, True, 0.0)]
    if full:
        lstms += [(4, 28, 28, 16, False, 1.0), (2, 28, 28, 128, False, 1.0)]
    for n, t, d, h, seq, fb in lstms:
        c.append(LayerCase(f"lstm T={t} D={d} H={h} batch {n}{' sequences' if seq else ''} forget_bias {fb}",
                           lambda d=d, h=h, seq=seq, fb=fb: LSTM(d, h, forget_bias=fb, return_sequences=seq,
                                                                name="lstm"), (n, t, d)))
    return c


def _layer_input(case: LayerCase, rng, dtype):
    shape = case.x_shape
    if case.inputs == "away_from_zero":   # ReLU away from its kink
        return (np.sign(rng.standard_normal(shape)) * (0.05 + np.abs(rng.standard_normal(shape)))).astype(dtype)
    if case.inputs == "pool_ties":        # a few distinct levels: windows full of exact ties
        return rng.integers(-1, 2, shape).astype(dtype)
    if case.inputs == "relu_zeros":
        x = rng.standard_normal(shape)
        x[rng.random(shape) < 0.4] = 0.0
        return x.astype(dtype)
    if case.inputs == "constant_channel":  # the first feature constant over the batch: variance 0
        x = rng.standard_normal(shape)
        x[..., 0] = 1.5
        return x.astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def randomize_params(params: dict, rng, bias_std: float = 0.5) -> None:
    """Random values for every parameter, biases included (zero biases hide bugs)."""
    for k, v in params.items():
        if v.ndim == 1:
            v[...] = rng.normal(0.0, bias_std, v.shape)
        else:
            fan_in = int(np.prod(v.shape[:-1]))
            v[...] = rng.normal(0.0, 1.0 / math.sqrt(max(fan_in, 1)), v.shape)


def randomize_moving_averages(layers, rng) -> None:
    """Random moving averages (variances positive) for the BatchNorm layers among ``layers``."""
    for layer in layers:
        if hasattr(layer, "moving_mean"):
            layer.moving_mean[...] = rng.normal(0.0, 0.5, layer.moving_mean.shape)
            layer.moving_variance[...] = rng.uniform(0.2, 2.0, layer.moving_variance.shape)


def copy_moving_averages(layers, twins) -> None:
    """scratchnet's BatchNorm moving averages into the twins' ``moving`` variables."""
    for layer, twin in zip(layers, twins):
        if twin.moving:
            twin.moving["mean"].assign(layer.moving_mean)
            twin.moving["variance"].assign(layer.moving_variance)


def check_layer(case: LayerCase, dtype=np.float64, seed: int = 0) -> Case:
    """One layer case: y, dx and every parameter gradient of ``Σ y·r``, both engines."""
    from ._tf import import_tf
    from .layers import twin_layer

    tf = import_tf()
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    layer = case.make()
    layer.build(rng, dtype)
    randomize_params(layer.params, rng)
    x = _layer_input(case, rng, dtype)
    mask = None
    if case.mask_keep is not None:
        mask = rng.random(x.shape) >= 1 - case.mask_keep
        layer.mask_source = lambda shape: mask
    if not case.training and hasattr(layer, "moving_mean"):
        randomize_moving_averages([layer], rng)
    y = layer.forward(x, training=case.training)
    r = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(r)
    grads = {k: g.copy() for k, g in layer.grads.items()}

    twin = twin_layer(layer, dtype)
    twin.assign(layer.params)
    copy_moving_averages([layer], [twin])
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        yt = twin(xt, training=case.training, mask=None if mask is None else tf.constant(mask))
        loss = tf.reduce_sum(yt * tf.constant(r))
    names = list(twin.variables)
    tgrads = tape.gradient(loss, [xt] + [twin.variables[k] for k in names])

    out = _new_case("layers", case.label, dtype)
    out.add("y (output)", y, yt.numpy())
    out.add("dx (input gradient)", dx, tgrads[0].numpy())
    for k, g in zip(names, tgrads[1:]):
        out.add(f"d{k}", grads[k], g.numpy())
    return out


def run_layers(dtype=np.float64, full: bool = False, seed: int = 0) -> list[Case]:
    return [check_layer(c, dtype, seed) for c in layer_grid(full)]


# --- data ----------------------------------------------------------------------------------------------

def training_images(count: int | None = None):
    """MNIST training images [N, 28, 28, 1] float32 in [0, 1] and labels [N] (int64):
    ``scratchnet.data.load_mnist`` when available, else the bundled IDX files read here."""
    try:
        from scratchnet.data import load_mnist

        train = load_mnist().train
        images, labels = train.images, train.labels
    except Exception:  # the data module may be missing: read the bundled files directly
        import gzip
        from pathlib import Path

        root = Path(__file__).resolve().parents[1] / "data" / "mnist"
        with gzip.open(root / "train-images-idx3-ubyte.gz") as f:
            images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
        with gzip.open(root / "train-labels-idx1-ubyte.gz") as f:
            labels = np.frombuffer(f.read(), np.uint8, offset=8)
        images = images[5000:].astype(np.float32) / np.float32(255)
        labels = labels[5000:]
    images = np.asarray(images, np.float32).reshape(-1, 28, 28, 1)
    labels = np.asarray(labels).astype(np.int64)
    if labels.ndim == 2:
        labels = labels.argmax(axis=1)
    if count is not None:
        images, labels = images[:count], labels[:count]
    return images, labels


class MaskStream:
    """One shared stream of dropout masks: scratchnet's Dropout layers draw from it through
    ``mask_source`` (``rng.random(shape) >= 1 - keep``, TF's rule) and the masks they drew
    are then fed to the TF twin."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.drawn: dict[str, np.ndarray] = {}

    def attach(self, dropout_layers) -> None:
        for layer in dropout_layers:
            layer.mask_source = self._source(layer)

    def _source(self, layer):
        def source(shape):
            mask = self.rng.random(shape) >= 1 - layer.keep_prob
            self.drawn[layer.name] = mask
            return mask
        return source

    def take(self) -> dict | None:
        drawn, self.drawn = self.drawn, {}
        return drawn or None


# --- models: one forward/backward, walked layer by layer -----------------------------------------

def check_model(recipe, dtype=np.float64, *, batch_size: int = 4, seed: int = 0, data=None,
                conv: str = "direct", training: bool = True) -> Case:
    """The recipe's model and loss, one forward/backward in both engines, compared layer by
    layer: outputs in forward order, then (backward order) each layer's parameter gradients
    and its input gradient. ``first_failure`` names the first divergent pass.

    ``conv``: the fast backend's convolution algorithm during scratchnet's pass. "direct"
    by default: Winograd ("auto") rounds identical receptive fields differently, so max-pool
    ties on MNIST's blank background route their input gradients elsewhere than TF does
    (docs/parity.md; ``tests/test_parity.py`` checks that nothing else changes).

    ``training=False``: evaluation mode (dropout off; BatchNorm normalises with moving
    averages, set to random values in both engines)."""
    from scratchnet.kernels import conv_algorithm
    from scratchnet.model import Sequential
    from scratchnet.ops import LOSSES, l2_penalty

    from ._tf import import_tf
    from .model import TFModel
    from .train import recipe_loss

    tf = import_tf()
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    images, labels = data if data is not None else training_images(batch_size)
    x, y = images[:batch_size].astype(dtype), labels[:batch_size]
    model = Sequential(recipe.layers(), seed=seed, dtype=dtype)
    for v in model.params.values():  # the recipe's init plus noise: no zero biases, no zero weights
        v += rng.normal(0.0, 0.05, v.shape).astype(dtype)
    randomize_moving_averages(model.layers, rng)
    stream = MaskStream(seed + 1)
    dropouts = [l for l in model.layers if type(l).__name__ == "Dropout"] if training else []
    stream.attach(dropouts)

    acts = [x]
    with conv_algorithm(conv):
        for layer in model.layers:
            acts.append(layer.forward(acts[-1], training=training))
        masks = stream.take()
        loss, dlogits = LOSSES[recipe.loss](acts[-1], y)
        scale = dtype.type(recipe.loss_scale)
        loss, dy = loss * scale, dlogits * scale
        l2_grads = {}
        if recipe.l2_scale:
            l2, l2_grads = l2_penalty(model.params, recipe.l2_params, recipe.l2_scale)
            loss = loss + l2
        in_grads, param_grads = {}, {}
        for layer in reversed(model.layers):
            dy = layer.backward(dy)
            in_grads[layer.name] = dy
            for k, g in layer.grads.items():
                key = f"{layer.name}/{k}"
                param_grads[key] = g + l2_grads[key] if key in l2_grads else g.copy()

    twin = TFModel.from_sequential(model)
    copy_moving_averages(model.layers, twin.layers)
    variables = twin.variables
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        outs = twin.forward_all(xt, training=training,
                                masks={k: tf.constant(v) for k, v in (masks or {}).items()})
        tloss = recipe_loss(recipe, outs[-1], tf.constant(y), variables)
    keys = list(variables)
    tgrads = tape.gradient(tloss, outs[:-1] + [variables[k] for k in keys])
    t_in = dict(zip([l.name for l in model.layers], tgrads[:len(model.layers)]))
    t_params = dict(zip(keys, tgrads[len(model.layers):]))

    mode = "" if training else ", evaluation mode: moving averages"
    case = _new_case("models", f"{recipe.name} (batch {batch_size}, {recipe.loss} ×{recipe.loss_scale:g}"
                     f"{', L2' if recipe.l2_scale else ''}{', fed dropout masks' if dropouts else ''}{mode})", dtype,
                     note="rows: outputs in forward order, loss, then gradients in backward order; "
                          f"scratchnet's convolution algorithm: {conv}")
    for layer, a, b in zip(model.layers, acts[1:], outs[1:]):
        case.add(f"{layer.name} output", a, b.numpy())
    case.add("loss", loss, tloss.numpy())
    for layer in reversed(model.layers):
        for k in layer.params:
            key = f"{layer.name}/{k}"
            case.add(f"{key} gradient", param_grads[key], t_params[key].numpy())
        g = t_in[layer.name]
        case.add(f"{layer.name} input gradient", in_grads[layer.name],
                 np.zeros_like(in_grads[layer.name]) if g is None else g.numpy())
    return case


def run_models(dtype=np.float64, recipes=None, batch_size: int = 4, seed: int = 0) -> list[Case]:
    from scratchnet.recipes import RECIPES

    data = training_images(batch_size)
    cases = []
    for n in (recipes or list(RECIPES)):
        cases.append(check_model(RECIPES[n], dtype, batch_size=batch_size, seed=seed, data=data))
        if any(type(l).__name__ == "BatchNorm" for l in RECIPES[n].layers()):  # and with the moving averages
            cases.append(check_model(RECIPES[n], dtype, batch_size=batch_size, seed=seed, data=data, training=False))
    return cases


# --- optimizers ---------------------------------------------------------------------------------------

OPTIM_SHAPES = {"conv1/w": (3, 3, 2, 4), "conv1/b": (4,), "dense/w": (13, 7)}


def optimizer_cases():
    """(label, flavor, name, learning rate (a number or a scratchnet schedule), kwargs)."""
    from scratchnet.optim import schedules

    decay = schedules.exponential_decay(0.5, 7, 0.5, staircase=True)
    smooth = schedules.exponential_decay(0.05, 10, 0.9)
    gorner = schedules.gorner(1e-4, 3e-3, 20)
    return [
        ("sgd 0.1", "tf1", "sgd", 0.1, {}),
        ("sgd, staircase decay 0.5·0.5^floor(t/7)", "tf1", "sgd", decay, {}),
        ("momentum 0.1, 0.9", "tf1", "momentum", 0.1, {"momentum": 0.9}),
        ("momentum nesterov, smooth decay", "tf1", "momentum", smooth, {"momentum": 0.9, "use_nesterov": True}),
        ("adagrad 0.1", "tf1", "adagrad", 0.1, {}),
        ("rmsprop 0.01", "tf1", "rmsprop", 0.01, {}),
        ("rmsprop centered, momentum 0.5", "tf1", "rmsprop", 0.01, {"momentum": 0.5, "centered": True}),
        ("adam 0.01", "tf1", "adam", 0.01, {}),
        ("adam, Görner decay", "tf1", "adam", gorner, {}),
        ("keras sgd 0.1", "keras", "sgd", 0.1, {}),
        ("keras sgd nesterov 0.9", "keras", "sgd", 0.1, {"momentum": 0.9, "nesterov": True}),
        ("keras adagrad 0.1", "keras", "adagrad", 0.1, {}),
        ("keras rmsprop centered momentum", "keras", "rmsprop", 0.01, {"momentum": 0.5, "centered": True}),
        ("keras adam 0.01", "keras", "adam", 0.01, {}),
    ]


_KERAS = {"sgd": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adam": "Adam"}


def check_optimizer(label, flavor, name, lr, kwargs, dtype=np.float64, steps: int = 100, seed: int = 0) -> Case:
    """``steps`` updates of the same gradient stream in scratchnet and in TensorFlow's
    optimizer object; compared after every update (rows: after 1 and after ``steps``)."""
    from scratchnet.optim import make_optimizer

    from ._tf import import_tf
    from .train import tf_optimizer, tf_schedule

    tf = import_tf()
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    init = {k: rng.normal(0, 1, s).astype(dtype) for k, s in OPTIM_SHAPES.items()}
    stream = [{k: (rng.normal(0, 1, s) * rng.choice([1e-3, 1.0, 10.0])).astype(dtype)
               for k, s in OPTIM_SHAPES.items()} for _ in range(steps)]
    sched = lr
    if flavor == "tf1" and hasattr(lr, "to_config") and dtype == np.float32 and "dtype" in lr.to_config():
        sched = dataclasses.replace(lr, dtype="float32")  # TF computes a Python-float schedule in float32
    if flavor == "keras" and hasattr(lr, "to_config") and "dtype" in lr.to_config():
        sched = dataclasses.replace(lr, dtype="float32")
    ours = make_optimizer(name, sched, flavor=flavor, **kwargs)
    params = {k: v.copy() for k, v in init.items()}
    if flavor == "tf1":
        step = tf.Variable(0, dtype=tf.int64)
        theirs = tf_optimizer(name, tf_schedule(lr, step, dtype), kwargs, dtype)
        variables = {k: tf.Variable(v) for k, v in init.items()}
        apply = lambda grads: theirs.apply_gradients(  # noqa: E731
            [(tf.constant(grads[k]), variables[k]) for k in variables], global_step=step)
        note = ("TF1 optimizer; hyperparameters as float64 tensors" if dtype == np.float64
                else "TF1 optimizer; hyperparameters as Python floats (float32 tensors)")
    else:
        import keras

        if hasattr(lr, "to_config"):
            raise ValueError("keras cases take a constant rate")
        theirs = getattr(keras.optimizers, _KERAS[name])(learning_rate=lr, **kwargs)
        variables = {k: keras.Variable(v, dtype=dtype.name) for k, v in init.items()}
        apply = lambda grads: theirs.apply_gradients(  # noqa: E731
            [(tf.constant(grads[k]), variables[k]) for k in variables])
        note = "Keras 3 optimizer (float32 learning rate and casts modelled by scratchnet's Keras* classes)"
    case = _new_case("optim", f"{label} ({steps} updates)", dtype, note=note)
    for t, grads in enumerate(stream, start=1):
        ours.apply(params, grads)
        apply(grads)
        if t in (1, steps):
            for k in params:
                case.add(f"{k} after {t} update{'s' if t > 1 else ''}", params[k], variables[k].numpy())
        elif case.first_failure is None:
            probe = _new_case("optim", "", dtype)
            for k in params:
                probe.add(k, params[k], variables[k].numpy())
            if not probe.ok:
                case.first_failure = f"update {t}: {probe.first_failure}"
                case.failing_step = t
    return case


def run_optim(dtype=np.float64, steps: int = 100, seed: int = 0) -> list[Case]:
    return [check_optimizer(*c, dtype=dtype, steps=steps, seed=seed) for c in optimizer_cases()]


# --- schedules ---------------------------------------------------------------------------------------

def check_schedule(label, schedule, last_step: int, dtype=np.float64) -> Case:
    """The schedule at every step 0..last_step against TensorFlow's (one vectorised call:
    the TF schedule is elementwise in the step)."""
    from ._tf import import_tf
    from .train import tf_schedule

    tf = import_tf()
    dtype = np.dtype(dtype)
    ours = schedule
    if "dtype" in schedule.to_config():
        ours = dataclasses.replace(schedule, dtype=dtype.name)
    steps = np.arange(last_step + 1)
    mine = np.array([ours(int(s)) for s in steps], np.float64)
    theirs = tf_schedule(schedule, tf.constant(steps, tf.int64), dtype)
    theirs = theirs() if callable(theirs) else theirs
    theirs = np.broadcast_to(np.asarray(theirs, np.float64), mine.shape)
    note = ("TF: float64 tensors for every constant" if dtype == np.float64
            else "TF: Python floats (float32 math), scratchnet schedule with dtype='float32'")
    case = _new_case("schedules", f"{label}, steps 0..{last_step}", dtype, note=note)
    case.add("learning rate", mine, theirs)
    return case


def run_schedules(dtype=np.float64) -> list[Case]:
    from scratchnet.optim import schedules
    from scratchnet.recipes import RECIPES

    cases = [check_schedule(f"recipe {r.name}: {r.learning_rate.to_config()['schedule']}", r.learning_rate,
                            r.steps, dtype) for r in RECIPES.values()]
    cases.append(check_schedule("exponential_decay(0.1, 100, 0.96)", schedules.exponential_decay(0.1, 100, 0.96),
                                20000, dtype))
    cases.append(check_schedule("exponential_decay(0.8, 550, 0.99, staircase)",
                                schedules.exponential_decay(0.8, 550, 0.99, staircase=True), 100000, dtype))
    return cases


# --- moving average ---------------------------------------------------------------------------------

def check_ema(decay: float, num_updates: bool, dtype=np.float64, steps: int = 100, seed: int = 0) -> Case:
    """``steps`` applications to a random walk of parameters, against
    ``tf.train.ExponentialMovingAverage`` (its decay is float32 in TF: scratchnet's
    ``decay_dtype="float32"``)."""
    from scratchnet.optim import ExponentialMovingAverage

    from ._tf import import_tf

    tf = import_tf()
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(0, 1, s).astype(dtype) for k, s in OPTIM_SHAPES.items()}
    variables = {k: tf.Variable(v) for k, v in params.items()}
    step = tf.Variable(0, dtype=tf.int64)
    theirs = tf.train.ExponentialMovingAverage(decay, num_updates=step if num_updates else None)
    ours = ExponentialMovingAverage(decay, num_updates=num_updates, decay_dtype="float32")
    ours.apply(params, 0 if num_updates else None)
    theirs.apply(list(variables.values()))
    case = _new_case("ema", f"decay {decay}{', num_updates = step' if num_updates else ''} ({steps} updates)",
                     dtype, note="shadows start at the initial values; decay computed in float32 by both")
    for t in range(1, steps + 1):
        for k, v in params.items():
            v += rng.normal(0, 0.1, v.shape).astype(dtype)
            variables[k].assign(v)
        step.assign(t)
        ours.apply(params, t if num_updates else None)
        theirs.apply(list(variables.values()))
        if t in (1, steps):
            for k in params:
                case.add(f"ema/{k} after {t}", ours.averages[k], theirs.average(variables[k]).numpy())
    return case


def run_ema(dtype=np.float64, steps: int = 100, seed: int = 0) -> list[Case]:
    return [check_ema(0.99, True, dtype, steps, seed), check_ema(0.9, False, dtype, steps, seed),
            check_ema(0.999, True, dtype, steps, seed)]


# --- trajectories ----------------------------------------------------------------------------------

def checkpoints(steps: int) -> list[int]:
    """The steps at which the whole state is compared."""
    marks = {1, 2, 3, 5, steps} | set(range(10, steps + 1, 10))
    return sorted(s for s in marks if s <= steps)


def _in_dtype(recipe, dtype):
    """``recipe`` with its schedule computed in ``dtype`` (what TF computes in)."""
    lr = recipe.learning_rate
    if hasattr(lr, "to_config") and "dtype" in lr.to_config():
        recipe = recipe.with_overrides(learning_rate=dataclasses.replace(lr, dtype=np.dtype(dtype).name))
    return recipe


def _scratchnet_trainer(recipe, dtype, seed):
    from scratchnet.train import Trainer

    trainer = Trainer(_in_dtype(recipe, dtype), seed=seed, dtype=np.dtype(dtype))
    if trainer.ema is not None:
        trainer.ema.decay_dtype = np.dtype("float32")
    return trainer


def parity_trainers(recipe, dtype=np.float64, seed: int = 1):
    """A scratchnet ``Trainer`` and a tfnet ``TFTrainer`` set up to take identical steps:
    same initial weights (scratchnet's, for ``seed``), the schedule computed in the run's
    dtype on both sides, and the EMA decay in float32 on both sides (TF's rule)."""
    from .train import TFTrainer

    theirs = TFTrainer(_in_dtype(recipe, dtype), seed=seed, dtype=np.dtype(dtype))
    return _scratchnet_trainer(recipe, dtype, seed), theirs


# float32 trajectories. Two float32 runs of a chaotic training loop part by however much
# float32 round-off moves each of them, so the bound is the triangle inequality through
# the float64 runs of both engines (which agree to 1e-8, the float64 trajectory check):
#   ||ours32 - tf32|| <= ||ours32 - ours64|| + ||ours64 - tf64|| + ||tf64 - tf32||
# Each tensor passes if its norm err <= max(1e-4, SLACK x that sum), measured at the same
# step (SLACK covers the norms' slightly different denominators). A float32-only bug in a
# scratchnet op would widen the first term, but the layers and models sections catch it
# at 1e-5 in a single step. docs/parity.md has the measurements that led here.
SLACK = 1.25


def _float64_shadows(ours, theirs_cls, recipe, seed, stream):
    """float64 trainers of both engines in ``ours``'s exact state (its float32 values,
    widened), fed the same dropout masks as the float32 runs."""
    state = {k: (v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in ours.state().items()}
    mine = _scratchnet_trainer(recipe, np.float64, seed)
    mine.load_state(state)
    for layer in mine.dropout_layers:
        layer.mask_source = lambda shape, name=layer.name: stream.drawn[name]
    tf = theirs_cls(_in_dtype(recipe, np.float64), seed=seed, dtype=np.dtype(np.float64))
    own = tf.state()  # its own slots where scratchnet has none yet (e.g. Adam's β-powers before step 1)
    tf.load_state(own | {k: v for k, v in state.items() if k in own and not k.startswith("rng/")})
    return mine, tf


def _rounding_bound(floor, ours32, ours64, tf64, tf32) -> float:
    d = _norm_distance
    return max(floor, SLACK * (d(ours32, ours64) + d(ours64, tf64) + d(tf32, tf64)))


def _norm_distance(a, b) -> float:
    """||a - b||₂ / ||b||₂ (the "norm err" of ``compare_tensors``)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ref = float(np.linalg.norm(b))
    return float(np.linalg.norm(a - b)) / ref if ref > 0 else float(np.abs(a - b).max(initial=0.0))


def compare_trajectory(recipe, dtype=np.float64, *, steps: int = 100, batch_size: int | None = 16,
                       seed: int = 1, data=None) -> Case:
    """Train ``steps`` steps in both engines on the same batches and dropout masks; compare
    the loss at every step and the whole state (parameters, optimizer slots, moving
    averages) at ``checkpoints(steps)``. ``first_failure`` is ``"step N: tensor"``."""
    recipe = recipe.with_overrides(steps=steps, batch_size=batch_size)
    images, labels = data if data is not None else training_images()
    dtype = np.dtype(dtype)
    ours, theirs = parity_trainers(recipe, dtype, seed)
    stream = MaskStream(seed + 1)
    stream.attach(ours.dropout_layers)
    shadows = _float64_shadows(ours, type(theirs), recipe, seed, stream) if dtype == np.float32 else None
    losses_64 = ([], [])
    order = np.random.default_rng(seed).permutation(len(images))
    b = recipe.batch_size
    note = (f"{steps} steps, batch {b}, seed {seed}; TF hyperparameters "
            f"{'as float64 tensors' if dtype == np.float64 else 'as Python floats (float32)'}; "
            f"{'scratchnet EMA decay in float32 (as TF); ' if recipe.ema_decay else ''}"
            f"state compared at steps {checkpoints(steps)}"
            + ("\n   float32: a tensor passes if its norm err <= max(1e-4, "
               f"{SLACK:g} x (|ours32 - ours64| + |ours64 - tf64| + |tf64 - tf32|)), the float64 runs "
               "started from the same state (the 'tolerance' column)" if dtype == np.float32 else ""))
    case = _new_case("trajectories", f"{recipe.name} ({recipe.optimizer})", dtype, note=note)
    marks = set(checkpoints(steps))
    losses_ours, losses_theirs = [], []
    last_ok = 0
    t0 = time.time()
    for step in range(1, steps + 1):
        idx = order[((step - 1) * b + np.arange(b)) % len(images)]
        x, y = images[idx], labels[idx]
        loss_a, _ = ours.train_step(x, y)
        if shadows:
            losses_64[0].append(shadows[0].train_step(x, y)[0])
        masks = stream.take()
        loss_b, _ = theirs.train_step(x, y, masks=masks)
        if shadows:
            losses_64[1].append(shadows[1].train_step(x, y, masks=masks)[0])
        losses_ours.append(loss_a)
        losses_theirs.append(loss_b)
        if step in marks:
            a, t = ours.state(), theirs.state()
            a64, t64 = (shadows[0].state(), shadows[1].state()) if shadows else (None, None)
            probe = _new_case("trajectories", "", dtype)
            keys = [k for k in t if not k.startswith("rng/") and k in a]
            for k in keys:
                probe.add(k, a[k], t[k], _rounding_bound(probe.tol, a[k], a64[k], t64[k], t[k]) if shadows else None)
            if step == steps or (not probe.ok and case.first_failure is None):
                if not probe.ok and case.first_failure is None:
                    case.first_failure = f"step {step}: {probe.first_failure} (state agreed at step {last_ok})"
                    case.failing_step = step
                if step == steps:
                    case.rows = [dataclasses.replace(r, tensor=f"{r.tensor} @{step}") for r in probe.rows]
            if probe.ok:
                last_ok = step
            case.drift[step] = max(r.error for r in probe.rows)
    loss_tol = _rounding_bound(case.tol, losses_ours, *losses_64, losses_theirs) if shadows else None
    case.add(f"loss, steps 1..{steps}", np.array(losses_ours), np.array(losses_theirs), loss_tol)
    drift = ", ".join(f"{s}: {e:.1e}" for s, e in sorted(case.drift.items()))
    case.note += f"\n   max error at each checkpoint: {drift}  ({time.time() - t0:.1f} s)"
    return case


def run_trajectories(dtype=np.float64, recipes=None, steps: int = 100, batch_size: int | None = 16,
                     seed: int = 1) -> list[Case]:
    from scratchnet.recipes import RECIPES

    data = training_images()
    return [compare_trajectory(RECIPES[n], dtype, steps=steps, batch_size=batch_size, seed=seed, data=data)
            for n in (recipes or list(RECIPES))]


# --- the command ---------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``scratchnet parity`` (the CLI calls this to build its parser)."""
    parser.add_argument("--dtype", choices=["float64", "float32", "both"], default="float64",
                        help="precision of both engines (default float64)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), metavar="SECTION",
                        help="what to compare: " + ", ".join(SECTIONS) + " (default: all)")
    parser.add_argument("--full", action="store_true",
                        help="the full layer grid (bigger shapes, T=28 LSTMs) instead of the quick one")
    parser.add_argument("--steps", type=int, default=100, help="trajectory steps per recipe (default 100)")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="trajectory batch size (default 16; 0 = each recipe's own)")
    parser.add_argument("--recipes", nargs="+", metavar="RECIPE", help="only these recipes (models, trajectories)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quiet", action="store_true", help="print only failing tables and the summary")
    parser.add_argument("--keras", metavar="MODEL", help="instead of the sections: this Keras model (.keras, .h5) "
                        "against its scratchnet import (tfnet.keras_parity)")
    parser.add_argument("--input", metavar="X.npy", help="with --keras: this batch instead of MNIST images")


def run_sections(dtype, sections, *, full=False, steps=100, batch_size=16, recipes=None, seed=1,
                 report=print, quiet=False) -> list[Case]:
    """Run the sections in one dtype; ``report`` receives each case's table as it finishes."""
    runners = {
        "layers": lambda: run_layers(dtype, full=full, seed=seed),
        "models": lambda: run_models(dtype, recipes=recipes, seed=seed),
        "optim": lambda: run_optim(dtype, seed=seed),
        "schedules": lambda: run_schedules(dtype),
        "ema": lambda: run_ema(dtype, seed=seed),
        "trajectories": lambda: run_trajectories(dtype, recipes=recipes, steps=steps,
                                                 batch_size=batch_size or None, seed=seed),
    }
    cases = []
    for section in sections:
        for case in runners[section]():
            cases.append(case)
            if not quiet or not case.ok:
                report(case.table() + "\n")
    return cases


def summary(cases: list[Case]) -> str:
    lines = ["== summary (worst error/tolerance: the closest any tensor came to failing; a row fails above 1)",
             f"   {'section':<13} {'dtype':<8} {'cases':>5} {'failed':>6} {'max error':>10} {'tolerance':>10} "
             f"{'worst error/tolerance':>22}"]
    groups: dict = {}
    for c in cases:
        groups.setdefault((c.section, c.dtype), []).append(c)
    for (section, dtype), cs in groups.items():
        rows = [r for c in cs for r in c.rows]
        own = any(r.tol != cs[0].tol for r in rows)  # float32 trajectories: a bound per tensor
        worst = max((r.error / r.tol for r in rows), default=0.0)
        lines.append(f"   {section:<13} {dtype:<8} {len(cs):>5} {sum(not c.ok for c in cs):>6} "
                     f"{max(c.max_error for c in cs):10.2e} {'per tensor' if own else f'{cs[0].tol:.0e}':>10} "
                     f"{worst:22.3g}")
    failed = [c for c in cases if not c.ok]
    for c in failed:
        lines.append(f"   FAIL {c.section} [{c.dtype}] {c.name}: first divergence at {c.first_failure}")
    lines.append("   all passed" if not failed else f"   {len(failed)} case(s) FAILED")
    return "\n".join(lines)


def run(args) -> int:
    """``scratchnet parity``: run, print the tables and the summary; 0 if everything passed."""
    if args.keras:
        from .keras_parity import run as run_keras
        return run_keras(args)
    dtypes = ["float64", "float32"] if args.dtype == "both" else [args.dtype]
    from scratchnet import backend
    print(f"scratchnet ({backend.get_backend()} backend) vs TensorFlow (oracle).\n"
          "float64: judged on the max relative error (floor 1e-4 of each tensor's scale); TF receives "
          "every hyperparameter as a float64 tensor.\n"
          "float32: judged on the scaled error max|a-b|/max|b| (trajectories: the norm error "
          "||a-b||/||b||); TF receives Python floats, as the tutorials wrote them.\n")
    cases = []
    for dtype in dtypes:
        cases += run_sections(np.dtype(dtype), args.sections, full=args.full, steps=args.steps,
                              batch_size=args.batch_size, recipes=args.recipes, seed=args.seed,
                              quiet=args.quiet)
    print(summary(cases))
    return 0 if all(c.ok for c in cases) else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tfnet.parity", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
