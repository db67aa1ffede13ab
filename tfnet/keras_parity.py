"""``scratchnet parity --keras MODEL.keras``: a Keras model against its scratchnet import.

Both engines run the same batch (MNIST images reshaped to the model's input, or
``--input X.npy``) forward in training mode, then backward from

    L = Σ y·r        (y the model's output, r a fixed standard-normal array)

Keras's side is the Keras model itself: its own layers called one after the other under a
``tf.GradientTape``, each Dropout drawing its own mask (the mask is read by replaying the
layer's seed generator on ones, then fed to scratchnet). The rows are each Keras layer's
output in forward order, the loss, then in backward order each layer's weight gradients
(in Keras's layout and names) and its input gradient: the first failing row is the first
divergent pass (``FIRST DIVERGENCE``).

A softmax on the last layer (Keras's MNIST example ends in ``Dense(10, "softmax")``) is
compared as it is: scratchnet's ``Softmax`` layer, probabilities out, its Jacobian in the
backward pass. ``L = Σ y·r`` needs no labels and no loss of the model's own, so nothing is
fused or skipped (a cross-entropy on logits would have left the softmax out of the check).

The training step: the model's compiled optimizer (SGD, Adam, RMSprop or Adagrad, without
clipping, weight decay or EMA) applies the gradients of L once; scratchnet's ``Keras*``
twin does the same, and every weight is compared after the update.

float64 casts the model (``clone_model`` with float64 layers, weights widened exactly);
float32 runs the model as it is. Tolerances are the ``models`` section's.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from scratchnet.errors import ScratchnetError

from .parity import CRITERION, TOLERANCES, Case, summary, training_images


def load_model(path):
    """``keras.models.load_model`` (``.keras`` or ``.h5``), its failure as one line."""
    from ._tf import import_tf

    import_tf()
    import keras

    try:
        with warnings.catch_warnings():  # "Skipping variable loading for optimizer": its config is what we use
            warnings.simplefilter("ignore")
            return keras.models.load_model(path)
    except Exception as e:  # a bad file, custom objects, a newer format
        raise ScratchnetError(f"{path}: cannot load the Keras model: {type(e).__name__}: {e}") from None


def cast_model(model, dtype):
    """A copy of ``model`` with every layer in ``dtype``, the same weights (cast), and a fresh
    copy of its compiled optimizer (or None)."""
    import keras

    dtype = np.dtype(dtype).name
    clone = keras.models.clone_model(
        model, clone_function=lambda l: type(l).from_config({**l.get_config(), "dtype": dtype}))
    clone.set_weights([w.astype(dtype) for w in model.get_weights()])
    opt = getattr(model, "optimizer", None)
    return clone, (type(opt).from_config(opt.get_config()) if opt is not None else None)


_UNSUPPORTED_OPTIONS = ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "loss_scale_factor",
                        "gradient_accumulation_steps")


def scratchnet_optimizer(opt):
    """scratchnet's ``Keras*`` twin of a Keras optimizer, or ``(None, why not)``."""
    from scratchnet.optim import KerasAdagrad, KerasAdam, KerasRMSprop, KerasSGD

    if opt is None:
        return None, "the model is not compiled"
    cfg, kind = opt.get_config(), type(opt).__name__
    options = [k for k in _UNSUPPORTED_OPTIONS if cfg.get(k)] + (["use_ema"] if cfg.get("use_ema") else [])
    if kind == "Adam" and cfg.get("amsgrad"):
        options.append("amsgrad")
    if isinstance(cfg["learning_rate"], dict):
        options.append("a learning-rate schedule")
    if options:
        return None, f"{kind} with {', '.join(options)} has no scratchnet twin"
    lr = cfg["learning_rate"]
    make = {"SGD": lambda: KerasSGD(lr, cfg["momentum"], cfg["nesterov"]),
            "Adam": lambda: KerasAdam(lr, cfg["beta_1"], cfg["beta_2"], cfg["epsilon"]),
            "RMSprop": lambda: KerasRMSprop(lr, cfg["rho"], cfg["momentum"], cfg["epsilon"], cfg["centered"]),
            "Adagrad": lambda: KerasAdagrad(lr, cfg["initial_accumulator_value"], cfg["epsilon"])}
    if kind not in make:
        return None, f"optimizer {kind} has no scratchnet twin (SGD, Adam, RMSprop, Adagrad)"
    return make[kind](), ""


def model_input(model, path=None, batch_size: int = 4):
    """The batch: ``path`` (a ``.npy`` array) or MNIST training images reshaped to the
    model's input shape (which must hold 784 values)."""
    shape = tuple(model.inputs[0].shape[1:])
    if path is not None:
        try:
            x = np.load(path)
        except (OSError, ValueError) as e:
            raise ScratchnetError(f"--input {path}: cannot read it as a .npy array: {e}") from None
        if x.ndim != len(shape) + 1 or any(s is not None and s != d for s, d in zip(shape, x.shape[1:])):
            raise ScratchnetError(f"--input {path}: shape {x.shape}, the model takes (N, "
                                  f"{', '.join('None' if s is None else str(s) for s in shape)})")
        return x
    if None in shape or int(np.prod(shape)) != 28 * 28:
        raise ScratchnetError(f"the model takes inputs of shape {shape}, not MNIST's 784 pixels: give --input X.npy")
    return training_images(batch_size)[0].reshape((-1, *shape))


def _case(name, dtype, note="") -> Case:
    dtype = np.dtype(dtype).name
    return Case("keras", name, dtype, TOLERANCES[dtype]["models"], CRITERION[dtype]["models"], note=note)


def check_keras(model, x, dtype=np.float64, *, seed: int = 0, name: str | None = None) -> list[Case]:
    """The walk (forward, loss, backward) and the training step, as two ``Case``s
    (one if the optimizer has no scratchnet twin: its reason is in the walk's note)."""
    from ._tf import import_tf
    from .keras import import_model, params_to_keras

    tf = import_tf()
    dtype = np.dtype(dtype)
    km, opt = cast_model(model, dtype)
    ours, groups = import_model(km, dtype)
    x = np.asarray(x, dtype)
    rng = np.random.default_rng(seed)

    outs, masks = [tf.constant(x)], {}
    weights = [w for layer, _ in groups for w in layer.trainable_weights]
    with tf.GradientTape() as tape:
        tape.watch(outs[0])
        for layer, _ in groups:
            if type(layer).__name__ == "Dropout":  # read the mask this call will draw
                state = layer.seed_generator.state.numpy()
                masks[layer.name] = layer(tf.ones_like(outs[-1]), training=True).numpy() != 0
                layer.seed_generator.state.assign(state)
            outs.append(layer(outs[-1], training=True))
        r = rng.standard_normal(tuple(outs[-1].shape)).astype(dtype)
        loss = tf.reduce_sum(outs[-1] * r)
    tgrads = tape.gradient(loss, outs[:-1] + weights)
    t_in, t_w = tgrads[:len(groups)], tgrads[len(groups):]

    for layer in ours.layers:
        if layer.name in masks:
            layer.mask_source = lambda shape, m=masks[layer.name]: m
    acts = [x]
    for _, group in groups:
        a = acts[-1]
        for l in group:
            a = l.forward(a, training=True)
        acts.append(a)
    dy, in_grads, w_grads = r, [], []
    for _, group in reversed(groups):
        for l in reversed(group):
            dy = l.backward(dy)
        in_grads.append(dy)
        w_grads.append(params_to_keras(group[0], group[0].grads, grads=True) if group and group[0].params else [])
    in_grads, w_grads = in_grads[::-1], w_grads[::-1]

    ours_opt, why_not = scratchnet_optimizer(opt)
    label = name or km.name
    walk = _case(f"{label} (batch {len(x)}, L = Σ y·r{', Keras dropout masks' if masks else ''})", dtype,
                 note="rows: each Keras layer's output in forward order, the loss, then its weight gradients "
                      "(Keras layout) and input gradient in backward order"
                      + (f"; no training step: {why_not}" if why_not else ""))
    for (layer, _), a, b in zip(groups, acts[1:], outs[1:]):
        walk.add(f"{layer.name} output", a, b.numpy())
    walk.add("loss", float(np.sum(acts[-1].astype(np.float64) * r)), loss.numpy())
    k = len(weights)
    for i in reversed(range(len(groups))):
        layer = groups[i][0]
        k -= len(layer.trainable_weights)
        for w, ours_g, theirs_g in zip(layer.trainable_weights, w_grads[i], t_w[k:]):
            walk.add(f"{layer.name}/{w.name} gradient", ours_g, theirs_g.numpy())
        g = t_in[i]
        walk.add(f"{layer.name} input gradient", in_grads[i], np.zeros_like(in_grads[i]) if g is None else g.numpy())
    if ours_opt is None:
        return [walk]

    opt.apply_gradients(zip(t_w, weights))
    ours_opt.apply(ours.params, ours.grads)
    step = _case(f"{label}: one {type(opt).__name__} step (lr {opt.get_config()['learning_rate']:g})", dtype,
                 note="each weight after one update from the gradients of L (Keras layout)")
    for layer, group in groups:
        if group and group[0].params:
            for w, ours_w in zip(layer.trainable_weights, params_to_keras(group[0], group[0].params)):
                step.add(f"{layer.name}/{w.name} after 1 step", ours_w, w.numpy())
    return [walk, step]


def run(args) -> int:
    """``scratchnet parity --keras MODEL``: print the tables and the summary; 0 if all passed."""
    from .keras import import_groups

    model = load_model(args.keras)
    import_groups(model)  # an unsupported layer is refused before anything runs
    x = model_input(model, args.input, args.batch_size or 4)
    dtypes = ["float64", "float32"] if args.dtype == "both" else [args.dtype]
    print(f"{args.keras} ({model.name}: {', '.join(type(l).__name__ for l in model.layers)}) against its "
          f"scratchnet import, on {'--input ' + str(args.input) if args.input else 'MNIST training images'} "
          f"{x.shape}.\nKeras is the reference: its own layers under a GradientTape; L = Σ y·r for a fixed "
          "random r; float64 casts the model.\n")
    cases = []
    for dtype in dtypes:
        for case in check_keras(model, x, dtype, seed=args.seed, name=Path(args.keras).name):
            cases.append(case)
            if not args.quiet or not case.ok:
                print(case.table() + "\n")
    print(summary(cases))
    return 0 if all(c.ok for c in cases) else 1
