"""TF twins of scratchnet's layers: the same forward pass written with ``tf.nn`` ops on
``tf.Variable``s, differentiated by ``tf.GradientTape`` (nothing here is hand-derived).

``twin_layer(layer, dtype)`` reads a scratchnet layer's type and hyperparameters and returns
a ``TwinLayer``: ``twin(x, training=False, mask=None)`` runs the TF op and
``twin.variables`` holds a ``tf.Variable`` per scratchnet parameter, same names, same
shapes (values start at zero; ``tfnet.model.to_tf`` or ``twin.assign`` copies them in).

=============  ==========================================================================
scratchnet     TensorFlow twin
=============  ==========================================================================
Dense          ``tf.matmul(x, w) + b``  (no ``+ b`` when the layer has no bias)
Conv2D         ``tf.nn.conv2d(x, w, strides=[1, s, s, 1], padding) + b``  (NHWC, HWIO)
BatchNorm      ``tf.nn.batch_normalization(x, mean, variance, offset, scale, eps)`` (None for
               a missing offset or scale) with, in training, ``mean, variance =
               tf.nn.moments(x, all axes but the last)`` (kept in ``twin.statistics`` for the
               moving averages) and, in evaluation, the ``tf.Variable``s in ``twin.moving``
               (``"mean"``, ``"variance"``; ``TFTrainer`` puts its EMA shadows there)
MaxPool2D      ``tf.nn.max_pool2d(x, [1, kh, kw, 1], [1, sh, sw, 1], padding)``
ReLU …         ``tf.nn.relu``, ``tf.sigmoid``, ``tf.tanh``, ``tf.nn.softmax``
Dropout        fed mask: ``tf.where(mask, x * tf.constant(1/keep, dtype), 0)`` (TF's own
               formula, bit-identical to ``tf.nn.dropout`` for that mask); otherwise, in
               training, ``tf.nn.experimental.general_dropout`` -- ``tf.nn.dropout``'s own
               implementation -- drawing from a checkpointable ``tf.random.Generator``
Reshape        ``tf.reshape(x, [-1, *shape])``; Flatten: ``tf.reshape(x, [N, -1])`` (NHWC order)
LSTM           ``BasicLSTMCell(H, forget_bias)`` unrolled over T (``static_rnn``), written
               with the cell's own ops (``rnn_cell_impl.py``): ``z = bias_add(matmul(concat(
               [x_t, h]), kernel), bias)``, ``i, j, f, o = split(z, 4)``,
               ``c = c·σ(f + forget_bias) + σ(i)·tanh(j)``, ``h = tanh(c)·σ(o)``.
               (``BasicLSTMCell`` itself raises under Keras 3.)
=============  ==========================================================================
"""

from __future__ import annotations

import numpy as np

from ._tf import import_tf, tf_dtype


class TwinLayer:
    """The TF twin of one scratchnet layer."""

    def __init__(self, layer, dtype=np.float32):
        tf = import_tf()
        self.layer = layer            # the scratchnet layer whose hyperparameters we mirror
        self.name = layer.name
        self.kind = type(layer).__name__
        if self.kind not in _FORWARD:
            raise NotImplementedError(f"no TensorFlow twin for layer type {self.kind!r} ({layer.name})")
        self.dtype = np.dtype(dtype)
        self.tf_dtype = tf_dtype(self.dtype)
        self.variables = {k: tf.Variable(tf.zeros(shape, self.tf_dtype), name=f"{layer.name}/{k}")
                          for k, (shape, _) in layer.param_specs().items()}
        self.generator = None         # Dropout: the tf.random.Generator of normal training
        if self.kind == "Dropout":
            self.generator = tf.random.Generator.from_seed(0)
        self.moving, self.statistics = {}, None  # BatchNorm: evaluation / last training statistics
        if self.kind == "BatchNorm":
            self.moving = {k: tf.Variable(tf.zeros([layer.features], self.tf_dtype), name=f"{layer.name}/moving_{k}")
                           for k in ("mean", "variance")}

    def __call__(self, x, training: bool = False, mask=None):
        return _FORWARD[self.kind](self, x, training, mask)

    def assign(self, values: dict) -> None:
        """Set the variables from ``{param: array}`` (same names and shapes)."""
        for k, v in values.items():
            if k not in self.variables:
                raise KeyError(f"{self.name}: no parameter {k!r}; has {sorted(self.variables)}")
            if tuple(np.shape(v)) != tuple(self.variables[k].shape):
                raise ValueError(f"{self.name}/{k}: expected shape {tuple(self.variables[k].shape)}, "
                                 f"received {np.shape(v)}")
            self.variables[k].assign(np.asarray(v, self.dtype))

    def __repr__(self):
        return f"TwinLayer({self.kind}, name={self.name!r})"


def twin_layer(layer, dtype=np.float32) -> TwinLayer:
    """The TF twin of a scratchnet layer (its variables are zeros until assigned)."""
    return TwinLayer(layer, dtype)


# --- forward ops, one per layer type ---------------------------------------------------------

def _dense(t, x, training, mask):
    tf = import_tf()
    y = tf.matmul(x, t.variables["w"])
    return y + t.variables["b"] if "b" in t.variables else y


def _conv2d(t, x, training, mask):
    tf = import_tf()
    s = t.layer.stride
    y = tf.nn.conv2d(x, t.variables["w"], strides=[1, s, s, 1], padding=t.layer.padding)
    return y + t.variables["b"] if "b" in t.variables else y


def _batchnorm(t, x, training, mask):
    tf = import_tf()
    if training:
        mean, variance = tf.nn.moments(x, list(range(len(x.shape) - 1)))
        t.statistics = (mean, variance)
    else:
        mean, variance = t.moving["mean"], t.moving["variance"]
    return tf.nn.batch_normalization(x, mean, variance, t.variables.get("offset"), t.variables.get("scale"),
                                     t.layer.eps)


def _max_pool(t, x, training, mask):
    tf = import_tf()
    (kh, kw), (sh, sw) = t.layer.pool_size, t.layer.stride
    return tf.nn.max_pool2d(x, ksize=[1, kh, kw, 1], strides=[1, sh, sw, 1], padding=t.layer.padding)


def _pointwise(fn_name):
    def forward(t, x, training, mask):
        tf = import_tf()
        return {"relu": tf.nn.relu, "sigmoid": tf.sigmoid, "tanh": tf.tanh, "softmax": tf.nn.softmax}[fn_name](x)
    return forward


def _dropout(t, x, training, mask):
    tf = import_tf()
    keep = t.layer.keep_prob
    if mask is not None:
        # TF's own formula (nn_ops._dropout with a Python rate): scale first, then select.
        return tf.where(mask, x * tf.constant(1 / keep, x.dtype), tf.zeros_like(x))
    if not training or keep == 1:
        return x
    gen = t.generator
    return tf.nn.experimental.general_dropout(
        x, rate=1 - keep, uniform_sampler=lambda shape, dtype: gen.uniform(shape, dtype=dtype))


def _reshape(t, x, training, mask):
    tf = import_tf()
    shape = t.layer.shape
    return tf.reshape(x, [tf.shape(x)[0], *shape])


def lstm_sequence(x, kernel, bias, forget_bias: float = 1.0):
    """All hidden states ``[N, T, H]`` of ``BasicLSTMCell(H, forget_bias)`` run over
    ``x [N, T, D]`` from a zero state, op for op as ``rnn_cell_impl.BasicLSTMCell.call``."""
    tf = import_tf()
    n = tf.shape(x)[0]
    hidden = kernel.shape[1] // 4
    h = tf.zeros([n, hidden], x.dtype)
    c = tf.zeros([n, hidden], x.dtype)
    forget_bias_tensor = tf.constant(forget_bias, dtype=x.dtype)
    outputs = []
    for t in range(x.shape[1]):
        gate_inputs = tf.nn.bias_add(tf.matmul(tf.concat([x[:, t], h], 1), kernel), bias)
        i, j, f, o = tf.split(gate_inputs, num_or_size_splits=4, axis=1)
        c = tf.add(tf.multiply(c, tf.sigmoid(tf.add(f, forget_bias_tensor))),
                   tf.multiply(tf.sigmoid(i), tf.tanh(j)))
        h = tf.multiply(tf.tanh(c), tf.sigmoid(o))
        outputs.append(h)
    return tf.stack(outputs, axis=1)


def _lstm(t, x, training, mask):
    hs = lstm_sequence(x, t.variables["kernel"], t.variables["bias"], t.layer.forget_bias)
    return hs if t.layer.return_sequences else hs[:, -1]


_FORWARD = {
    "Dense": _dense, "Conv2D": _conv2d, "BatchNorm": _batchnorm, "MaxPool2D": _max_pool,
    "ReLU": _pointwise("relu"), "Sigmoid": _pointwise("sigmoid"), "Tanh": _pointwise("tanh"),
    "Softmax": _pointwise("softmax"), "Dropout": _dropout, "Reshape": _reshape, "Flatten": _reshape,
    "LSTM": _lstm,
}


# --- BasicLSTMCell <-> keras.layers.LSTM ----------------------------------------------------------

def _ijfo_to_ifjo(a):
    """Re-order the 4H gate blocks of the last axis from i, j, f, o to i, f, j(=c), o."""
    i, j, f, o = np.split(np.asarray(a), 4, axis=-1)
    return np.concatenate([i, f, j, o], axis=-1)


def _ifjo_to_ijfo(a):
    i, f, j, o = np.split(np.asarray(a), 4, axis=-1)
    return np.concatenate([i, j, f, o], axis=-1)


def keras_lstm_weights(kernel, bias, input_size: int, forget_bias: float = 1.0):
    """Map scratchnet's / ``BasicLSTMCell``'s LSTM weights to ``keras.layers.LSTM``'s.

    scratchnet: ``kernel [D+H, 4H]`` on ``[x_t, h]``, gate blocks **i, j, f, o**, ``bias [4H]``,
    ``forget_bias`` added inside σ at run time.  Keras: ``kernel [D, 4H]`` on x_t,
    ``recurrent_kernel [H, 4H]`` on h, gate blocks **i, f, c, o** (c = j), ``bias [4H]`` with
    nothing added at run time. So::

        W = kernel[:, [i, f, j, o]]          keras kernel = W[:D], recurrent_kernel = W[D:]
        keras bias = [b_i, b_f + forget_bias, b_j, b_o]

    Returns ``[kernel, recurrent_kernel, bias]`` (the order of ``LSTM.set_weights``). The
    two cells then compute the same function; gradients map with ``keras_lstm_grads``.
    """
    w = _ijfo_to_ifjo(kernel)
    b = np.array(bias, copy=True)
    h = b.shape[-1] // 4
    b = _ijfo_to_ifjo(b)
    b[h:2 * h] += b.dtype.type(forget_bias)
    return [w[:input_size], w[input_size:], b]


def keras_lstm_grads(dkernel, dbias, input_size: int):
    """scratchnet's LSTM gradients in Keras' layout (the +forget_bias shift has no gradient):
    ``[d kernel, d recurrent_kernel, d bias]``."""
    w = _ijfo_to_ifjo(dkernel)
    return [w[:input_size], w[input_size:], _ijfo_to_ifjo(dbias)]


def lstm_from_keras_weights(kernel, recurrent_kernel, bias, forget_bias: float = 1.0):
    """The inverse of ``keras_lstm_weights``: ``(kernel [D+H, 4H], bias [4H])`` in i, j, f, o."""
    b = np.array(bias, copy=True)
    h = b.shape[-1] // 4
    b[h:2 * h] -= b.dtype.type(forget_bias)
    return _ifjo_to_ijfo(np.concatenate([kernel, recurrent_kernel], axis=0)), _ifjo_to_ijfo(b)
