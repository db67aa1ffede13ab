"""Keras models in and out of scratchnet: ``from_keras(model) -> Sequential`` and
``to_keras(sequential) -> keras.Model``, weights copied exactly.

==================  ===================================================================
Keras layer         scratchnet layers
==================  ===================================================================
InputLayer          (nothing: the input shape comes from the weights)
Dense               ``Dense`` (+ the activation layer, named ``<name>_<activation>``)
Conv2D              ``Conv2D`` (same/valid = TF's SAME/VALID: the odd pixel of padding
                    goes bottom/right in both) (+ activation)
MaxPooling2D        ``MaxPool2D``
Flatten, Reshape    ``Flatten``, ``Reshape`` (channels_last: NHWC order in both)
Dropout             ``Dropout(keep_prob = 1 - rate)``
Activation, ReLU,   ``ReLU``, ``Sigmoid``, ``Tanh``, ``Softmax`` (``linear``: nothing)
Softmax
LSTM                ``LSTM(forget_bias=0)``: Keras' kernel [D, 4H] and recurrent_kernel
                    [H, 4H] stacked into [D+H, 4H], gate blocks i, f, c, o re-ordered to
                    i, j(=c), f, o; Keras' bias (its forget bias already folded in by
                    ``unit_forget_bias``, an initializer) copied as is
==================  ===================================================================

Anything else -- another layer type, dilation, groups, strides that differ per axis,
``use_bias=False``, channels_first, an activation scratchnet lacks, regularizers and
constraints, a mixed-precision dtype policy, a frozen layer (``trainable=False``), LSTM
options other than tanh/sigmoid without state or dropout -- raises
``KerasImportError`` naming the layer and the option; nothing is approximated.
The model must be a ``keras.Sequential`` or a functional chain (one input, one output,
each layer fed by the one before), built (its weights exist).
"""

from __future__ import annotations

import numpy as np

from scratchnet.errors import ScratchnetError

ACTIVATIONS = {"relu": "ReLU", "sigmoid": "Sigmoid", "tanh": "Tanh", "softmax": "Softmax"}


class KerasImportError(ScratchnetError):
    """A Keras model, layer or option that scratchnet cannot represent exactly."""


def _refuse(layer, option: str):
    raise KerasImportError(f"Keras layer {layer.name!r} ({type(layer).__name__}): {option} is not supported")


def _require(layer, cfg: dict, option: str, allowed) -> None:
    value = cfg.get(option)
    if value not in allowed:
        _refuse(layer, f"{option}={value!r} (scratchnet has {', '.join(map(repr, allowed))})")


def _no_regularizers(layer, cfg: dict) -> None:
    for k, v in cfg.items():
        if (k.endswith("_regularizer") or k.endswith("_constraint")) and v is not None:
            _refuse(layer, f"{k}={v.get('class_name', v) if isinstance(v, dict) else v!r}")


def _activation(layer, name) -> list:
    from scratchnet import layers as sn

    act = name if isinstance(name, str) else None
    if act == "linear":
        return []
    if act not in ACTIVATIONS:
        _refuse(layer, f"activation={name!r} (scratchnet has linear, {', '.join(ACTIVATIONS)})")
    return [getattr(sn, ACTIVATIONS[act])(name=f"{layer.name}_{act}")]


def _same_pair(layer, option: str, value) -> int:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if pair[0] != pair[1]:
        _refuse(layer, f"{option}={pair} (scratchnet takes one stride for both axes)")
    return pair[0]


def import_layer(layer) -> list:
    """The unbuilt scratchnet layers computing Keras ``layer`` (a list: Dense + activation)."""
    from scratchnet import layers as sn

    kind = type(layer).__name__
    cfg = layer.get_config()
    _no_regularizers(layer, cfg)
    if cfg.get("data_format", "channels_last") != "channels_last":
        _refuse(layer, f"data_format={cfg['data_format']!r}")
    if kind == "InputLayer":
        return []
    policy = layer.dtype_policy
    if policy.compute_dtype not in ("float32", "float64") or policy.compute_dtype != policy.variable_dtype:
        _refuse(layer, f"the dtype policy {policy.name!r} (scratchnet computes in its weights' float32 or float64)")
    if layer.weights and not layer.trainable:
        _refuse(layer, "trainable=False (scratchnet trains every parameter)")
    if kind in ("Dense", "Conv2D", "LSTM") and not layer.built:
        _refuse(layer, "an unbuilt layer (build the model or load it with its weights)")
    if kind in ("Dense", "Conv2D", "LSTM"):
        _require(layer, cfg, "use_bias", [True])
    if kind == "Dense":
        d_in, d_out = layer.kernel.shape
        if len(layer.input.shape) != 2:
            _refuse(layer, f"an input of rank {len(layer.input.shape)} (scratchnet's Dense takes [N, features])")
        return [sn.Dense(d_in, d_out, name=layer.name), *_activation(layer, cfg["activation"])]
    if kind == "Conv2D":
        _require(layer, cfg, "padding", ["same", "valid"])
        _require(layer, cfg, "groups", [1])
        if tuple(cfg["dilation_rate"]) != (1, 1):
            _refuse(layer, f"dilation_rate={tuple(cfg['dilation_rate'])}")
        kh, kw, c_in, c_out = layer.kernel.shape
        stride = _same_pair(layer, "strides", cfg["strides"])
        return [sn.Conv2D((kh, kw), c_in, c_out, stride=stride, padding=cfg["padding"].upper(), name=layer.name),
                *_activation(layer, cfg["activation"])]
    if kind == "MaxPooling2D":
        _require(layer, cfg, "padding", ["same", "valid"])
        return [sn.MaxPool2D(tuple(cfg["pool_size"]), tuple(cfg["strides"] or cfg["pool_size"]),
                             cfg["padding"].upper(), name=layer.name)]
    if kind == "Flatten":
        return [sn.Flatten(name=layer.name)]
    if kind == "Reshape":
        return [sn.Reshape(tuple(cfg["target_shape"]), name=layer.name)]
    if kind == "Dropout":
        _require(layer, cfg, "noise_shape", [None])
        return [sn.Dropout(1.0 - cfg["rate"], name=layer.name)]
    if kind == "Activation":
        return _activation(layer, cfg["activation"])
    if kind == "ReLU":
        for option in ("max_value", "negative_slope", "threshold"):
            _require(layer, cfg, option, [None, 0.0] if option == "max_value" else [0.0])
        return [sn.ReLU(name=layer.name)]
    if kind == "Softmax":
        _require(layer, cfg, "axis", [-1])
        return [sn.Softmax(name=layer.name)]
    if kind == "LSTM":
        for option, allowed in [("activation", ["tanh"]), ("recurrent_activation", ["sigmoid"]),
                                ("return_state", [False]), ("go_backwards", [False]), ("stateful", [False]),
                                ("dropout", [0.0, 0]), ("recurrent_dropout", [0.0, 0])]:
            _require(layer, cfg, option, allowed)
        d, four_h = layer.cell.kernel.shape
        return [sn.LSTM(d, four_h // 4, forget_bias=0.0, return_sequences=cfg["return_sequences"], name=layer.name)]
    raise KerasImportError(f"Keras layer {layer.name!r} ({kind}): no scratchnet equivalent (supported: InputLayer, "
                           "Dense, Conv2D, MaxPooling2D, Flatten, Reshape, Dropout, Activation, ReLU, Softmax, LSTM)")


def keras_layers(model) -> list:
    """The layers of a Keras ``Sequential`` or functional chain, in order (no InputLayer)."""
    import keras

    if not isinstance(model, keras.Model):
        raise KerasImportError(f"expected a keras.Model, received {type(model).__name__}")
    if not model.built:
        raise KerasImportError(f"Keras model {model.name!r} is not built (call it on an input or give keras.Input)")
    layers = [l for l in model.layers if type(l).__name__ != "InputLayer"]
    if not isinstance(model, keras.Sequential):
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise KerasImportError(f"Keras model {model.name!r}: {len(model.inputs)} inputs and "
                                   f"{len(model.outputs)} outputs (scratchnet takes a chain: one of each)")
        for prev, layer in zip([None] + layers, layers):
            parents = [p.operation for node in layer._inbound_nodes for p in node.parent_nodes]
            if len(parents) != 1 or (prev is not None and parents[0] is not prev):
                raise KerasImportError(f"Keras layer {layer.name!r}: not fed by the layer before it "
                                       "(scratchnet takes a chain of layers)")
    return layers


def import_groups(model) -> list:
    """``[(keras_layer, [scratchnet layers])]``, one entry per Keras layer, unbuilt."""
    return [(layer, import_layer(layer)) for layer in keras_layers(model)]


def keras_to_params(layer, weights: list) -> dict:
    """Keras ``layer``'s weight list as the params of its (first) scratchnet layer."""
    kind = type(layer).__name__
    if kind == "LSTM":
        from .layers import lstm_from_keras_weights

        kernel, bias = lstm_from_keras_weights(*weights, forget_bias=0.0)
        return {"kernel": kernel, "bias": bias}
    return dict(zip(["w", "b"], weights)) if weights else {}


def params_to_keras(layer, params: dict, *, grads: bool = False) -> list:
    """The inverse of ``keras_to_params`` for a scratchnet layer (``grads``: its gradients,
    which for an LSTM are re-ordered without the forget-bias shift)."""
    if type(layer).__name__ == "LSTM":
        from .layers import keras_lstm_grads, keras_lstm_weights

        if grads:
            return keras_lstm_grads(params["kernel"], params["bias"], layer.input_size)
        return keras_lstm_weights(params["kernel"], params["bias"], layer.input_size, layer.forget_bias)
    return [params[k] for k in ("w", "b") if k in params]


def from_keras(model, dtype=None):
    """A scratchnet ``Sequential`` computing what Keras ``model`` computes, with its weights
    (in ``dtype``, default the weights' own)."""
    return import_model(model, dtype)[0]


def import_model(model, dtype=None):
    """``(sequential, [(keras_layer, [its scratchnet layers in sequential])])``."""
    from scratchnet.model import Sequential

    groups = import_groups(model)
    weights = [w for l, _ in groups for w in l.get_weights()]
    dtype = np.dtype(dtype or (weights[0].dtype if weights else np.float32))
    seq = Sequential([s for _, group in groups for s in group], dtype=dtype)
    for layer, group in groups:
        for k, v in keras_to_params(layer, layer.get_weights()).items():
            group[0].params[k][...] = v
    return seq, groups


def _keras_layer(layer, dtype: str):
    import keras

    kind, kw = type(layer).__name__, {"name": layer.name, "dtype": dtype}
    if kind == "Dense":
        return keras.layers.Dense(layer.out_features, **kw)
    if kind == "Conv2D":
        return keras.layers.Conv2D(layer.out_channels, layer.kernel_size, strides=layer.stride,
                                   padding=layer.padding.lower(), **kw)
    if kind == "MaxPool2D":
        return keras.layers.MaxPooling2D(layer.pool_size, layer.stride, padding=layer.padding.lower(), **kw)
    if kind in ("ReLU", "Sigmoid", "Tanh", "Softmax"):
        return keras.layers.Activation(kind.lower(), **kw)
    if kind == "Dropout":
        return keras.layers.Dropout(1.0 - layer.keep_prob, **kw)
    if kind == "Flatten":
        return keras.layers.Flatten(**kw)
    if kind == "Reshape":
        return keras.layers.Reshape(layer.shape, **kw)
    if kind == "LSTM":
        return keras.layers.LSTM(layer.units, return_sequences=layer.return_sequences, **kw)
    raise KerasImportError(f"scratchnet layer {layer.name!r} ({kind}): no Keras equivalent")


def to_keras(sequential, input_shape=None):
    """A ``keras.Sequential`` with ``sequential``'s layers, names and weights (in its dtype).
    ``input_shape`` (without the batch axis) is needed unless the first layer is a Dense
    or an LSTM."""
    import keras

    first = sequential.layers[0]
    if input_shape is None:
        if type(first).__name__ == "Dense":
            input_shape = (first.in_features,)
        elif type(first).__name__ == "LSTM":
            input_shape = (None, first.input_size)
        else:
            raise KerasImportError(f"to_keras: give input_shape (the first layer {first.name!r} does not fix it)")
    dtype = sequential.dtype.name
    layers = [_keras_layer(l, dtype) for l in sequential.layers]
    model = keras.Sequential([keras.Input(tuple(input_shape), dtype=dtype), *layers])
    for ours, theirs in zip(sequential.layers, layers):
        if ours.params:
            theirs.set_weights(params_to_keras(ours, ours.params))
    return model
