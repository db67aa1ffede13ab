"""``TFModel``: the TensorFlow twin of a scratchnet ``Sequential``.

Same layers, same names, parameters keyed exactly like scratchnet's (``"conv1/w"``, …),
each a ``tf.Variable``. Weights move between the engines by name with shape checks::

    twin = TFModel.from_sequential(model)      # builds the twin and copies model's weights in
    to_tf(model, twin)                          # scratchnet -> TF
    from_tf(twin, model)                        # TF -> scratchnet
"""

from __future__ import annotations

import numpy as np

from ._tf import tf_dtype
from .layers import TwinLayer


class TFModel:
    def __init__(self, layers: list[TwinLayer], dtype=np.float32):
        self.layers = list(layers)
        self.dtype = np.dtype(dtype)
        self.tf_dtype = tf_dtype(self.dtype)

    @classmethod
    def from_sequential(cls, model, dtype=None, copy_weights: bool = True) -> "TFModel":
        """The twin of a scratchnet ``Sequential`` (in its dtype unless given), with its weights."""
        dtype = np.dtype(dtype or model.dtype)
        twin = cls([TwinLayer(layer, dtype) for layer in model.layers], dtype)
        if copy_weights:
            to_tf(model, twin)
        return twin

    @classmethod
    def from_recipe(cls, recipe, *, seed: int = 0, dtype=np.float32) -> "TFModel":
        """The recipe's model with the initial weights scratchnet draws for ``seed``."""
        from scratchnet.model import Sequential

        return cls.from_sequential(Sequential(recipe.layers(), seed=seed, dtype=dtype))

    # --- parameters -------------------------------------------------------------------------
    @property
    def variables(self) -> dict:
        """``{"layer/param": tf.Variable}`` in layer order (scratchnet's ``params`` order)."""
        return {f"{l.name}/{k}": v for l in self.layers for k, v in l.variables.items()}

    @property
    def trainable_variables(self) -> list:
        return list(self.variables.values())

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The current values as NumPy arrays (copies)."""
        return {k: v.numpy() for k, v in self.variables.items()}

    def load_params(self, values: dict) -> None:
        """Assign ``values`` by name; the names must be exactly the model's and shapes equal."""
        variables = self.variables
        missing, extra = sorted(set(variables) - set(values)), sorted(set(values) - set(variables))
        if missing or extra:
            raise KeyError(f"parameter names differ: missing {missing}, unexpected {extra}")
        for k, v in values.items():
            if tuple(np.shape(v)) != tuple(variables[k].shape):
                raise ValueError(f"parameter {k!r}: expected shape {tuple(variables[k].shape)}, "
                                 f"received {np.shape(v)}")
        for k, v in values.items():
            variables[k].assign(np.asarray(v, self.dtype))

    def layer(self, name: str) -> TwinLayer:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(f"no layer named {name!r}")

    @property
    def dropout_layers(self) -> list[TwinLayer]:
        return [l for l in self.layers if l.kind == "Dropout"]

    # --- forward ------------------------------------------------------------------------------
    def __call__(self, x, training: bool = False, masks: dict | None = None):
        return self.forward_all(x, training, masks)[-1]

    def forward_all(self, x, training: bool = False, masks: dict | None = None) -> list:
        """``[x, output of layer 1, …, output of the last layer]``; ``masks`` maps dropout
        layer names to boolean masks fed in place of random ones."""
        masks = masks or {}
        outs = [x]
        for layer in self.layers:
            outs.append(layer(outs[-1], training, masks.get(layer.name)))
        return outs

    def __repr__(self):
        return "TFModel([" + ", ".join(f"{l.kind}({l.name})" for l in self.layers) + "])"


def _check_same_layers(model, twin) -> None:
    a = [(type(l).__name__, l.name) for l in model.layers]
    b = [(l.kind, l.name) for l in twin.layers]
    if a != b:
        raise ValueError(f"the models differ: scratchnet {a} vs TF {b}")


def to_tf(model, twin: TFModel) -> None:
    """Copy a scratchnet ``Sequential``'s parameters into its TF twin (by name, shapes checked)."""
    _check_same_layers(model, twin)
    twin.load_params(model.params)


def from_tf(twin: TFModel, model) -> None:
    """Copy the TF twin's variables into a scratchnet ``Sequential`` (by name, shapes checked)."""
    _check_same_layers(model, twin)
    model.load_params(twin.params)

