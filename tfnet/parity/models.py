"""Section ``models``: every recipe's model, one forward/backward of its loss, walked layer by
layer (outputs in forward order, gradients in backward order)."""

from __future__ import annotations


import numpy as np

from .layers import copy_moving_averages, randomize_moving_averages
from .metrics import Case, _new_case


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
    from scratchnet import backend
    from scratchnet.kernels import conv_algorithm
    from scratchnet.kernels.tuning import conv_plan, plan_text
    from scratchnet.model import Sequential
    from scratchnet.ops import LOSSES, l2_penalty

    from .._tf import import_tf
    from ..model import TFModel
    from ..train import recipe_loss

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
        plan = plan_text(conv_plan(model, len(x), dtype, every_input_grad=True)) if backend.get_backend() == "fast" else ""
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
                          f"scratchnet's convolution algorithm: {conv}{f' ({plan})' if plan else ''}")
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
