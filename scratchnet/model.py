"""``Sequential``: layers run in order forward, and in reverse order backward."""

from __future__ import annotations

from collections import Counter

import numpy as np

from .layers import Layer


class Sequential:
    """A stack of layers with every parameter and gradient listed as ``"layer/param"``.

    >>> model = Sequential([Dense(784, 10, name="fc")], seed=0)
    >>> sorted(model.params)
    ['fc/b', 'fc/w']

    The model is built at construction: each layer draws its initial parameters, in
    order, from ``np.random.default_rng(seed)``, in ``dtype`` (float32 or float64).
    Unnamed layers are named after their type and position (``dense_1``, ``relu_1``, ``dense_2``, …).
    """

    def __init__(self, layers: list[Layer], *, seed: int = 0, dtype=np.float32):
        self.layers = list(layers)
        self._name_layers()
        rng = np.random.default_rng(seed)
        for layer in self.layers:
            layer.build(rng, np.dtype(dtype))

    def _name_layers(self) -> None:
        counts = Counter()
        for layer in self.layers:
            if layer.name is None:
                kind = type(layer).__name__.lower()
                counts[kind] += 1
                layer.name = f"{kind}_{counts[kind]}"
        dup = [n for n, k in Counter(l.name for l in self.layers).items() if k > 1]
        if dup:
            raise ValueError(f"layer names must be unique; repeated: {dup}")

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """The layers in order, each keeping its cache for ``backward``; a convolution takes
        the ReLU after it into its own op (``Layer.forward_fused``), with the same values."""
        k = 0
        while k < len(self.layers):
            x, ran = self.layers[k].forward_fused(x, self.layers[k + 1:], training)
            k += ran
        return x

    __call__ = forward

    def infer(self, x: np.ndarray) -> np.ndarray:
        """The value of ``forward(x)`` (evaluation mode) keeping nothing for a backward pass
        (``Layer.infer``): each layer's output is freed once the next has read it, and the
        arrays the model made itself are reused in place by ReLU and BatchNorm, and a
        convolution or dense layer takes the BatchNorm, ReLU and max-pool after it into its
        own op (``Layer.infer_fused``), with the same values. What every evaluation and
        prediction runs."""
        h, k = x, 0
        while k < len(self.layers):
            # h is scratch unless it is x or a view of it (a Flatten, an identity Dropout);
            # a fresh array has no base, which spares the 0.4 µs of may_share_memory
            mine = h is not x and (h.base is None or not np.may_share_memory(h, x))
            h, ran = self.layers[k].infer_fused(h, self.layers[k + 1:], overwrite_input=mine)
            k += ran
        return h

    def backward(self, dy: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Backpropagate ``dy`` (gradient of the loss w.r.t. the output); return dL/dx.

        ``input_grad=False`` (a training step, which only needs the parameter gradients):
        stop at the first layer that has parameters, without computing its input gradient
        (for a first convolution that is a third of its backward pass), and return None.
        A convolution takes the ReLU before it into its own op (``Layer.backward_fused``),
        with the same values.
        """
        first = -1  # every layer, every input gradient
        if not input_grad:
            first = next((k for k, l in enumerate(self.layers) if l.params), len(self.layers))
        k = len(self.layers) - 1
        while k >= 0:
            if k < first:
                return None
            preceding = self.layers[k - 1] if k > max(first, 0) else None
            dy, ran = self.layers[k].backward_fused(dy, preceding, input_grad=k > first)
            k -= ran
        return dy

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The model's own parameter arrays (update them in place to train)."""
        return {f"{l.name}/{k}": v for l in self.layers for k, v in l.params.items()}

    @property
    def grads(self) -> dict[str, np.ndarray]:
        return {f"{l.name}/{k}": v for l in self.layers for k, v in l.grads.items()}

    @property
    def dtype(self) -> np.dtype:
        return next(iter(self.params.values())).dtype

    def layer(self, name: str) -> Layer:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(f"no layer named {name!r}; layers: {[l.name for l in self.layers]}")

    def load_params(self, values: dict[str, np.ndarray]) -> None:
        """Copy ``values`` into the parameters (same names, same shapes; cast to the model's dtype)."""
        params = self.params
        missing, extra = sorted(set(params) - set(values)), sorted(set(values) - set(params))
        if missing or extra:
            raise KeyError(f"parameter names differ: missing {missing}, unexpected {extra}")
        for k, v in values.items():
            if np.shape(v) != params[k].shape:
                raise ValueError(f"parameter {k!r}: expected shape {params[k].shape}, received {np.shape(v)}")
            params[k][...] = v

    def astype(self, dtype) -> "Sequential":
        """Convert every parameter (and gradient) to ``dtype`` in place; return self."""
        for l in self.layers:
            l.params = {k: v.astype(dtype) for k, v in l.params.items()}
            l.grads = {k: v.astype(dtype) for k, v in l.grads.items()}
        return self

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(l) for l in self.layers)
        return f"Sequential([\n  {inner}\n])"
