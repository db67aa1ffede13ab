"""Section ``layers``: every layer type over a grid of shapes, strides and paddings, the same
input and weights into both engines; output, input gradient and parameter gradients."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .metrics import Case, _new_case


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
    from .._tf import import_tf
    from ..layers import twin_layer

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
