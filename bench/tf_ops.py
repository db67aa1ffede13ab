"""The TensorFlow side of ``bench.cases``: the same operations as ``tf.function``s with a
fixed input signature, inputs held as ``tf.constant``s (created outside the timing), and
warmed up (tracing, oneDNN primitive creation) before ``build_tf`` returns.

Backward passes call the gradient kernels directly (``Conv2DBackpropInput``,
``Conv2DBackpropFilter``, ``MaxPoolGrad``, ``ReluGrad``, transposed ``matmul``) rather than a
``GradientTape``, except for the LSTM and the batch normalisation (``tf.nn.moments`` +
``tf.nn.batch_normalization``, the scripts' ops: no single gradient kernel), whose backward
is only reachable through the tape (so they are timed as forward and as forward+backward).
"""

from __future__ import annotations

from .env import import_tf


def _lstm_forward(tf, x, k, b, forget_bias=1.0):
    """BasicLSTMCell unrolled from raw ops (gate order i, j, f, o; forget bias added at
    run time): exactly scratchnet's LSTM."""
    n, t_len = x.shape[0], x.shape[1]
    hidden = k.shape[1] // 4
    h = tf.zeros((n, hidden), x.dtype)
    c = tf.zeros((n, hidden), x.dtype)
    hs = []
    for t in range(t_len):
        z = tf.matmul(tf.concat([x[:, t], h], axis=1), k) + b
        i, j, f, o = tf.split(z, 4, axis=1)
        c = c * tf.sigmoid(f + forget_bias) + tf.sigmoid(i) * tf.tanh(j)
        h = tf.tanh(c) * tf.sigmoid(o)
        hs.append(h)
    return tf.stack(hs, axis=1)


def build_tf(case, op, a, xla: bool = False):
    tf = import_tf()
    c = {k: tf.constant(v) for k, v in a.items() if k != "s"}
    kind = case.kind
    fn = None
    if kind == "conv":
        s = a["s"]
        strides = [1, s, s, 1]
        if op == "fwd":
            def fn(x, w, b):
                return tf.nn.bias_add(tf.nn.conv2d(x, w, strides, "SAME"), b)
            args = (c["x"], c["w"], c["b"])
        elif op == "dx":
            def fn(w, dy):
                return tf.raw_ops.Conv2DBackpropInput(input_sizes=a["x"].shape, filter=w, out_backprop=dy,
                                                      strides=strides, padding="SAME")
            args = (c["w"], c["dy"])
        elif op == "dw":
            def fn(x, dy):
                return tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=a["w"].shape, out_backprop=dy,
                                                       strides=strides, padding="SAME")
            args = (c["x"], c["dy"])
        else:
            def fn(x, w, dy):
                dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=a["x"].shape, filter=w, out_backprop=dy,
                                                    strides=strides, padding="SAME")
                dw = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=a["w"].shape, out_backprop=dy,
                                                     strides=strides, padding="SAME")
                return dx, dw, tf.reduce_sum(dy, axis=[0, 1, 2])
            args = (c["x"], c["w"], c["dy"])
    elif kind == "pool":
        if op == "fwd":
            def fn(x):
                return tf.nn.max_pool2d(x, 2, 2, "SAME")
            args = (c["x"],)
        else:
            y = tf.nn.max_pool2d(c["x"], 2, 2, "SAME")

            def fn(x, y, dy):
                return tf.raw_ops.MaxPoolGrad(orig_input=x, orig_output=y, grad=dy, ksize=[1, 2, 2, 1],
                                              strides=[1, 2, 2, 1], padding="SAME")
            args = (c["x"], y, c["dy"])
    elif kind == "relu":
        if op == "fwd":
            def fn(x):
                return tf.nn.relu(x)
            args = (c["x"],)
        else:
            def fn(dy, x):
                return tf.raw_ops.ReluGrad(gradients=dy, features=x)
            args = (c["dy"], c["x"])
    elif kind == "dense":
        if op == "fwd":
            def fn(x, w, b):
                return tf.nn.bias_add(tf.matmul(x, w), b)
            args = (c["x"], c["w"], c["b"])
        else:
            def fn(x, w, dy):
                return (tf.matmul(dy, w, transpose_b=True), tf.matmul(x, dy, transpose_a=True),
                        tf.reduce_sum(dy, axis=0))
            args = (c["x"], c["w"], c["dy"])
    elif kind == "batchnorm":
        axes = list(range(len(a["x"].shape) - 1))

        def forward(x, offset):
            mean, variance = tf.nn.moments(x, axes)
            return tf.nn.batch_normalization(x, mean, variance, offset, None, 1e-5)
        if op == "fwd":
            fn, args = forward, (c["x"], c["offset"])
        elif op == "fwd+bwd":
            def fn(x, offset, dy):
                with tf.GradientTape() as tape:
                    tape.watch([x, offset])
                    loss = tf.reduce_sum(forward(x, offset) * dy)
                return tape.gradient(loss, [x, offset])
            args = (c["x"], c["offset"], c["dy"])
    elif kind == "lstm":
        if op == "fwd":
            def fn(x, k, b):
                return _lstm_forward(tf, x, k, b)
            args = (c["x"], c["k"], c["b"])
        elif op == "fwd+bwd":
            def fn(x, k, b, dy):
                with tf.GradientTape() as tape:
                    tape.watch([x, k, b])
                    h = _lstm_forward(tf, x, k, b)
                    loss = tf.reduce_sum(h * dy)
                return tape.gradient(loss, [x, k, b])
            args = (c["x"], c["k"], c["b"], c["dy"])
    if fn is None:
        return None
    sig = [tf.TensorSpec(t.shape, t.dtype) for t in args]
    compiled = tf.function(fn, input_signature=sig, jit_compile=xla, autograph=False)

    def run():
        out = compiled(*args)
        first = out[0] if isinstance(out, (tuple, list)) else out
        first.numpy()  # wait for the result (a zero-copy view on CPU)
        return out

    for _ in range(3):  # trace, compile, create oneDNN primitives: all outside the timing
        run()
    return run
