"""Section ``models``: every recipe's model, one forward/backward of its loss, walked layer by
layer (outputs in forward order, gradients in backward order)."""

from __future__ import annotations


import numpy as np

from .layers import copy_moving_averages, randomize_moving_averages
from .metrics import Case, _new_case, compare_tensors


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

    ``conv``: the fast backend's convolution algorithm during scratchnet's pass ("direct"
    by default, "auto" as in training).

    Max-pool ties: identical receptive fields (MNIST's blank background) may be rounded
    differently by position (Winograd; OpenBLAS's AVX2 sgemm), so a tie breaks and the
    gradient goes to another window position than TF's. When that alone explains a pool's
    failing input gradient, ``resynced_at`` names the pool and, from it down, each layer's
    backward is fed TF's input and upstream gradient (docs/parity.md, item 13).

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

    t_x = [o.numpy() for o in outs[:-1]]  # TF's input of each layer
    theirs = [np.zeros_like(in_grads[l.name]) if t_in[l.name] is None else t_in[l.name].numpy()
              for l in model.layers]  # TF's gradient of the loss at each layer's input

    for i in reversed(range(len(model.layers))):
        layer = model.layers[i]
        ours = in_grads[layer.name]
        flipped = 0 if case.resynced_at or i + 1 == len(model.layers) else \
            _tie_flips(case, layer, acts[i], t_x[i], ours, theirs[i])
        if flipped:
            case.resynced_at = layer.name
            case.note += (f"; {layer.name}: {flipped} window(s) tied within rounding have their first maximum "
                          f"at another position in each engine, so from {layer.name} down each layer's "
                          "backward is fed TF's input and upstream gradient")
        if case.resynced_at is not None:  # this layer alone, on TF's input and upstream gradient
            with conv_algorithm(conv):
                grads, ours = _isolated(layer, t_x[i], theirs[i + 1], masks, training)
            param_grads.update({f"{layer.name}/{k}": g + l2_grads.get(f"{layer.name}/{k}", 0)
                                for k, g in grads.items()})
        for k in layer.params:
            key = f"{layer.name}/{k}"
            case.add(f"{key} gradient", param_grads[key], t_params[key].numpy())
        case.add(f"{layer.name} input gradient", ours, theirs[i])
    return case


def _tie_flips(case, layer, x_ours, x_theirs, dx_ours, dx_theirs) -> int:
    """The number of windows where a max-pool's first maximum is at another position in the
    two engines, when that alone explains a failing input gradient: the inputs agree within
    the case's tolerance, and in each such window our values at both positions agree as
    closely (a tie broken by rounding). Else 0."""
    if type(layer).__name__ != "MaxPool2D":
        return 0
    if compare_tensors("", dx_ours, dx_theirs, case.criterion, case.tol).ok:
        return 0
    if not compare_tensors("", x_ours, x_theirs, case.criterion, case.tol).ok:
        return 0
    y, first, at_theirs = _first_maxima(layer, x_ours, x_theirs)
    flipped = first[0] != first[1]
    atol = case.tol * float(np.abs(x_theirs).max(initial=0.0))
    if not flipped.any() or float((y - at_theirs)[flipped].max()) > atol:
        return 0
    return int(flipped.sum())


def _first_maxima(layer, x_ours, x_theirs):
    """The pool of ``x_ours``, the window position of each engine's first maximum (TF's rule,
    ``ops.pool``), and the value of ``x_ours`` at the position TF's input chose."""
    from scratchnet.ops.conv import pad_spatial
    from scratchnet.ops.pool import max_pool_forward

    args = layer.pool_size, layer.stride, layer.padding
    y, (_, _, pads, (kh, kw), (sh, sw), first_ours) = max_pool_forward(x_ours, *args)
    first_theirs = max_pool_forward(x_theirs.astype(x_ours.dtype), *args)[1][-1]
    ho, wo = y.shape[1:3]
    xp = pad_spatial(x_ours, pads, value=-np.inf)
    at_theirs = np.empty_like(y)
    for p in range(kh):
        for q in range(kw):
            here = first_theirs == p * kw + q
            at_theirs[here] = xp[:, p:p + sh * ho:sh, q:q + sw * wo:sw, :][here]
    return y, (first_ours, first_theirs), at_theirs


def _isolated(layer, x, dy, masks, training):
    """One layer's forward on ``x`` and backward of ``dy``: its parameter gradients and dx.
    A dropout layer reuses the mask it drew in the walk."""
    if masks and layer.name in masks:
        layer.mask_source = lambda shape, mask=masks[layer.name]: mask
    layer.forward(x, training=training)
    dx = layer.backward(dy)
    return {k: g.copy() for k, g in layer.grads.items()}, dx


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
