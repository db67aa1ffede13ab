"""Layers: parameters, shape checks and a cache around the operations in ``scratchnet.ops``.

Every layer has ``forward(x, training=False)`` and ``backward(dy)``; ``backward`` returns
the gradient with respect to the input and fills ``grads`` (same keys as ``params``).
Layouts follow TensorFlow: images NHWC, conv filters HWIO, dense weights [in, out].
A layer's parameters are created by ``build(rng, dtype)`` (``Sequential`` does it) in
float32 or float64; its input must then have the same dtype.
"""

from __future__ import annotations

import numpy as np

from . import backend as _backend
from .initializers import Constant, GlorotUniform, TruncatedNormal, Zeros


class ShapeError(ValueError):
    """An input does not have the shape a layer expects."""


class Layer:
    """Base class. Subclasses set ``expects`` (the input shape, with names for free axes)
    and implement ``_forward`` / ``_backward``."""

    expects: tuple = ()

    def __init__(self, name: str | None = None, backend: str | None = None):
        self.name = name  # Sequential names unnamed layers after their type and position
        self.backend = backend
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self._cache = None

    def build(self, rng: np.random.Generator | None = None, dtype=np.float32) -> "Layer":
        """Create the parameters (layers without parameters have nothing to do)."""
        rng = rng if rng is not None else np.random.default_rng(0)
        self.params = {k: init(rng, shape, dtype) for k, (shape, init) in self.param_specs().items()}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        return self

    def param_specs(self) -> dict:
        """``{name: (shape, initializer)}`` of this layer's parameters."""
        return {}

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._check_input(x)
        y, self._cache = self._forward(x, training)
        return y

    def infer(self, x: np.ndarray, *, overwrite_input: bool = False) -> np.ndarray:
        """The value of ``forward(x, training=False)`` with nothing kept for a backward pass:
        the cache is dropped, and the work a backward would need from the forward (the
        max-pool's argmax, the LSTM's gates at every step) is skipped.
        ``overwrite_input``: x is scratch the caller no longer needs; a pointwise layer
        (ReLU, BatchNorm) then writes y into it instead of a fresh array."""
        self._check_input(x)
        self._cache = None
        return self._infer(x, overwrite_input)

    def _infer(self, x, overwrite_input):
        return self._forward(x, False)[0]

    def infer_fused(self, x: np.ndarray, following: list, *, overwrite_input: bool = False):
        """``(y, k)``: ``infer`` run through this layer and the k - 1 ``following`` layers
        that it takes into its own op (``Sequential.infer`` then skips them). Here k = 1:
        this layer alone."""
        return self.infer(x, overwrite_input=overwrite_input), 1

    def forward_fused(self, x: np.ndarray, following: list, training: bool = False):
        """``(y, k)``: ``forward`` run through this layer and the k - 1 ``following`` layers
        that it takes into its own op, each layer keeping its own cache for ``backward``
        (``Sequential.forward`` then skips them). Here k = 1: this layer alone."""
        return self.forward(x, training), 1

    def backward(self, dy: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Fill ``grads`` and return dL/dx; with ``input_grad=False`` (the first layer of a
        training step: nothing consumes dL/dx) return None and skip computing it where
        the layer can (``_param_grads``)."""
        self._check_cache()
        if input_grad:
            dx, grads = self._backward(dy, self._cache)
        else:
            dx, grads = None, self._param_grads(dy, self._cache)
        self.grads.update(grads)
        return dx

    def backward_fused(self, dy: np.ndarray, preceding: "Layer | None", input_grad: bool = True):
        """``(dx, k)``: ``backward`` run through this layer and the k - 1 layers before it
        that it takes into its own op (``Sequential.backward`` then skips them);
        ``preceding`` is the layer right before it (None: none, or its dx is not needed).
        A layer with a ``_backward_relu`` (a convolution, a max-pool) takes a ReLU right
        before it (on its backend, its dx wanted) into that op, which can apply the ReLU's
        mask as it writes dx: the layer's dx before the mask is never written (k = 2).
        Otherwise k = 1: this layer alone."""
        if not (input_grad and hasattr(self, "_backward_relu") and type(preceding) is ReLU
                and preceding.backend == self.backend):
            return self.backward(dy, input_grad), 1
        self._check_cache()
        preceding._check_cache()
        dx, grads = self._backward_relu(dy, self._cache, preceding._cache)
        self.grads.update(grads)
        return dx, 2

    def _check_cache(self) -> None:
        if self._cache is None:
            raise RuntimeError(f"{self.name}: backward() called before forward() (infer() keeps no cache)")

    def _param_grads(self, dy, cache) -> dict:
        """The parameter gradients alone (default: the full backward, dx dropped)."""
        return self._backward(dy, cache)[1]

    def op(self, name: str):
        return _backend.op(name, self.backend)

    def _check_input(self, x: np.ndarray) -> None:
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{self.describe()}: expected a NumPy array, received {type(x).__name__}")
        if self.expects and (x.ndim != len(self.expects) or any(
                isinstance(e, int) and e != s for e, s in zip(self.expects, x.shape))):
            shape = "(" + ", ".join(str(e) for e in self.expects) + ")"
            raise ShapeError(f"{self.describe()}: expected input of shape {shape}, received {x.shape}")
        if self.params:
            dtype = next(iter(self.params.values())).dtype
            if x.dtype != dtype:
                raise TypeError(f"{self.describe()}: expected {dtype} input (the dtype of its "
                                f"parameters), received {x.dtype}")
        elif not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"{self.describe()}: expected a float32 or float64 input, received {x.dtype}")

    def describe(self) -> str:
        return f"layer {self.name!r} ({type(self).__name__})" if self.name else f"layer {type(self).__name__}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class _Biased(Layer):
    """A layer whose bias is optional: ``b_init=None`` leaves it out (before a batch
    normalisation, whose offset replaces it). The op then adds a zero bias, which changes
    no value, and the layer drops its gradient."""

    def build(self, rng=None, dtype=np.float32):
        super().build(rng, dtype)
        self._zero_bias = None if self.b_init is not None else np.zeros(self.out_features, dtype)
        return self

    def _bias(self):
        return self.params["b"] if self._zero_bias is None else self._zero_bias

    def _grads(self, dw, db):
        return {"w": dw, "b": db} if self._zero_bias is None else {"w": dw}

    # Inference through the layers after this one, in one op (``ops.fused``): a subclass
    # names the op, its own arguments, and the kinds of layer the op can take, in order.
    fused_op, fusable = "", ()

    def _op_args(self) -> tuple:
        return ()

    def infer_fused(self, x, following, *, overwrite_input=False):
        """A BatchNorm, a ReLU and a MaxPool2D right after (each optional, in ``fusable``'s
        order, on this layer's backend) run inside this layer's op, which can apply them as
        it writes y."""
        take = []
        for kind in self.fusable:
            nxt = following[len(take)] if len(take) < len(following) else None
            if type(nxt) is kind and nxt.backend == self.backend \
                    and (kind is not BatchNorm or nxt.features == self.out_features):
                take.append(nxt)
        if not take:
            return super().infer_fused(x, following, overwrite_input=overwrite_input)
        self._check_input(x)
        for layer in (self, *take):
            layer._cache = None
        kinds = {type(l): l for l in take}
        bn, pool = kinds.get(BatchNorm), kinds.get(MaxPool2D)
        fused = {"bn": bn.inference_args(x.dtype) if bn else None, "relu": ReLU in kinds}
        if pool:
            fused["pool"] = pool.pool_size, pool.stride, pool.padding
        return self.op(self.fused_op)(x, *self._op_args(), **fused), 1 + len(take)


class Dense(_Biased):
    """y = x @ w + b.   x [N, In] -> y [N, Out];  w [In, Out], b [Out] (``b_init=None``: no b)."""

    def __init__(self, in_features: int, out_features: int, *, w_init=TruncatedNormal(0.1),
                 b_init=Constant(0.1), name: str | None = None, backend: str | None = None):
        super().__init__(name, backend)
        self.in_features, self.out_features = in_features, out_features
        self.w_init, self.b_init = w_init, b_init
        self.expects = ("N", in_features)

    def param_specs(self):
        specs = {"w": ((self.in_features, self.out_features), self.w_init)}
        return specs | ({"b": ((self.out_features,), self.b_init)} if self.b_init is not None else {})

    def _forward(self, x, training):
        return self.op("dense_forward")(x, self.params["w"], self._bias())

    fused_op = "dense_infer"

    @property
    def fusable(self):
        return (BatchNorm, ReLU)

    def _op_args(self):
        return self.params["w"], self._bias()

    def _backward(self, dy, cache):
        dx, dw, db = self.op("dense_backward")(dy, cache)
        return dx, self._grads(dw, db)

    def _param_grads(self, dy, cache):
        return self._grads(*self.op("dense_backward_params")(dy, cache))


class Conv2D(_Biased):
    """2-D convolution (``tf.nn.conv2d``) plus bias.

    x [N, H, W, C] -> y [N, Ho, Wo, F];  w [KH, KW, C, F] (HWIO), b [F] (``b_init=None``: no b).
    ``padding`` is ``"SAME"`` (TensorFlow's asymmetric rule: the odd pixel goes bottom/right)
    or ``"VALID"``.
    """

    def __init__(self, kernel_size, in_channels: int, out_channels: int, *, stride: int = 1,
                 padding: str = "SAME", w_init=TruncatedNormal(0.1), b_init=Constant(0.1),
                 name: str | None = None, backend: str | None = None):
        super().__init__(name, backend)
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        if padding not in ("SAME", "VALID"):
            raise ValueError(f"{self.describe()}: padding must be 'SAME' or 'VALID', got {padding!r}")
        self.kernel_size, self.in_channels, self.out_channels = (kh, kw), in_channels, out_channels
        self.out_features = out_channels
        self.stride, self.padding = stride, padding
        self.w_init, self.b_init = w_init, b_init
        self.expects = ("N", "H", "W", in_channels)

    def param_specs(self):
        specs = {"w": ((*self.kernel_size, self.in_channels, self.out_channels), self.w_init)}
        return specs | ({"b": ((self.out_channels,), self.b_init)} if self.b_init is not None else {})

    def _forward(self, x, training):
        return self.op("conv2d_forward")(x, self.params["w"], self._bias(), self.stride, self.padding)

    fused_op = "conv2d_infer"

    @property
    def fusable(self):
        return (BatchNorm, ReLU, MaxPool2D)

    def forward_fused(self, x, following, training=False):
        """A ReLU right after (on this layer's backend) runs inside the convolution's op
        (``conv2d_forward_relu``), which can apply it as it writes y: the convolution's
        output before the ReLU is never written. The ReLU keeps its output as its cache,
        which gives its backward the same mask (y > 0 exactly where x > 0)."""
        relu = following[0] if following else None
        if type(relu) is not ReLU or relu.backend != self.backend:
            return super().forward_fused(x, following, training)
        self._check_input(x)
        y, self._cache = self.op("conv2d_forward_relu")(x, self.params["w"], self._bias(), self.stride, self.padding)
        relu._cache = y
        return y, 2

    def _backward_relu(self, dy, cache, relu_cache):
        dx, dw, db = self.op("conv2d_backward_relu")(dy, cache, relu_cache)
        return dx, self._grads(dw, db)

    def _op_args(self):
        return self.params["w"], self._bias(), self.stride, self.padding

    def _backward(self, dy, cache):
        dx, dw, db = self.op("conv2d_backward")(dy, cache)
        return dx, self._grads(dw, db)

    def _param_grads(self, dy, cache):
        return self._grads(*self.op("conv2d_backward_params")(dy, cache))


class BatchNorm(Layer):
    """Batch normalisation over the last axis (``tf.nn.moments`` + ``tf.nn.batch_normalization``).

    x [N, F] (moments over N) or [N, H, W, F] (over N, H, W) -> y, same shape;
    y = γ (x − μ) / sqrt(σ² + ε) + β, in TensorFlow's order of operations (``ops.batchnorm``).
    Parameters ``offset`` β [F] (``offset_init``) and ``scale`` γ [F] (``scale_init``);
    either initializer None leaves that parameter out. Training normalises with the
    batch's mean and biased variance, kept in ``batch_mean`` / ``batch_variance``;
    evaluation with ``moving_mean`` / ``moving_variance`` ([F], zeros at build). The
    layer never updates those itself: the ``Trainer`` does, with decay ``decay``, as
    ``tf.train.ExponentialMovingAverage(decay, iteration).apply([mean, variance])``.
    """

    def __init__(self, features: int, *, offset_init=Zeros(), scale_init=None, eps: float = 1e-5,
                 decay: float = 0.999, name: str | None = None, backend: str | None = None):
        super().__init__(name, backend)
        self.features, self.offset_init, self.scale_init = features, offset_init, scale_init
        self.eps, self.decay = eps, decay
        self.batch_mean = self.batch_variance = None

    def param_specs(self):
        inits = {"offset": self.offset_init, "scale": self.scale_init}
        return {k: ((self.features,), init) for k, init in inits.items() if init is not None}

    def build(self, rng=None, dtype=np.float32):
        super().build(rng, dtype)
        self.moving_mean = np.zeros(self.features, dtype)
        self.moving_variance = np.zeros(self.features, dtype)
        return self

    def _check_input(self, x):
        if isinstance(x, np.ndarray) and (x.ndim not in (2, 4) or x.shape[-1] != self.features):
            f = self.features
            raise ShapeError(f"{self.describe()}: expected input of shape (N, {f}) or (N, H, W, {f}), "
                             f"received {x.shape}")
        super()._check_input(x)

    def _forward(self, x, training):
        if training:
            self.batch_mean, self.batch_variance = self.op("moments")(x)
            mean, var = self.batch_mean, self.batch_variance
        else:
            mean, var = self.moving_mean.astype(x.dtype, copy=False), self.moving_variance.astype(x.dtype, copy=False)
        return self.op("batchnorm_forward")(x, mean, var, self.params.get("offset"), self.params.get("scale"),
                                            self.eps, training)

    def inference_args(self, dtype) -> tuple:
        """(mean, variance, offset, scale, eps) of ``batchnorm`` in evaluation mode."""
        mean, var = self.moving_mean.astype(dtype, copy=False), self.moving_variance.astype(dtype, copy=False)
        return mean, var, self.params.get("offset"), self.params.get("scale"), self.eps

    def _infer(self, x, overwrite_input):
        return self.op("batchnorm")(x, *self.inference_args(x.dtype), out=x if overwrite_input else None)

    def _backward(self, dy, cache):
        dx, doffset, dscale = self.op("batchnorm_backward")(dy, cache)
        return dx, {k: g for k, g in (("offset", doffset), ("scale", dscale)) if g is not None}


class MaxPool2D(Layer):
    """Max-pooling (``tf.nn.max_pool2d``): x [N, H, W, C] -> y [N, Ho, Wo, C].

    Padding cells are -inf. Ties send the whole gradient to the first maximum in
    row-major window order, as TensorFlow does (see ``ops.pool``).
    """

    expects = ("N", "H", "W", "C")

    def __init__(self, pool_size=2, stride=None, padding: str = "SAME", *,
                 name: str | None = None, backend: str | None = None):
        super().__init__(name, backend)
        as_pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
        self.pool_size = as_pair(pool_size)
        self.stride = as_pair(stride if stride is not None else pool_size)
        self.padding = padding

    def _forward(self, x, training):
        return self.op("max_pool_forward")(x, self.pool_size, self.stride, self.padding)

    def _infer(self, x, overwrite_input):
        return self.op("max_pool")(x, self.pool_size, self.stride, self.padding)

    def _backward(self, dy, cache):
        return self.op("max_pool_backward")(dy, cache), {}

    def _backward_relu(self, dy, cache, relu_cache):
        return self.op("max_pool_backward_relu")(dy, cache, relu_cache), {}


class _Pointwise(Layer):
    """An activation applied elementwise (or along the last axis, for Softmax)."""

    kind = ""

    def _forward(self, x, training):
        return self.op(f"{self.kind}_forward")(x)

    def _backward(self, dy, cache):
        return self.op(f"{self.kind}_backward")(dy, cache), {}


class ReLU(_Pointwise):
    """y = max(x, 0); dx = dy · [x > 0]."""
    kind = "relu"

    def _infer(self, x, overwrite_input):
        return self.op("relu")(x, out=x if overwrite_input else None)


class Sigmoid(_Pointwise):
    """y = σ(x); dx = dy · y (1 - y)."""
    kind = "sigmoid"


class Tanh(_Pointwise):
    """y = tanh(x); dx = dy · (1 - y²)."""
    kind = "tanh"


class Softmax(_Pointwise):
    """y = softmax(x) over the last axis. (For training, prefer logits into
    ``softmax_cross_entropy``, which is stable.)"""
    kind = "softmax"


_IDENTITY = object()  # the cache of a dropout pass that kept everything (evaluation, keep_prob 1)


class Dropout(Layer):
    """Inverted dropout (``tf.nn.dropout`` with ``rate = 1 - keep_prob``).

    In training, each element is kept with probability ``keep_prob`` and scaled by
    ``1/keep_prob``; in evaluation the layer is the identity. The mask is
    ``rng.random(x.shape) >= 1 - keep_prob`` from the layer's own generator (seeded from
    the model's generator by ``build``), or, when
    ``mask_source`` is set (a callable ``shape -> bool array``), whatever it returns, so a
    parity test can feed the same masks to both engines.
    """

    def __init__(self, keep_prob: float, *, name: str | None = None):
        super().__init__(name)
        if not 0 < keep_prob <= 1:
            raise ValueError(f"{self.describe()}: keep_prob must be in (0, 1], got {keep_prob}")
        self.keep_prob = keep_prob
        self.rng = np.random.default_rng(0)
        self.mask_source = None

    def build(self, rng=None, dtype=np.float32):
        if rng is not None:
            self.rng = np.random.default_rng(rng.integers(2**63))
        return super().build(rng, dtype)

    def _forward(self, x, training):
        if not training or self.keep_prob == 1:
            return x, _IDENTITY
        mask = (self.mask_source(x.shape) if self.mask_source is not None
                else self.rng.random(x.shape) >= 1 - self.keep_prob)
        if mask.shape != x.shape:
            raise ShapeError(f"{self.describe()}: mask of shape {mask.shape} for input {x.shape}")
        return self.op("dropout_forward")(x, mask, self.keep_prob)

    def _backward(self, dy, cache):
        return (dy if cache is _IDENTITY else self.op("dropout_backward")(dy, cache)), {}


class Reshape(Layer):
    """Reshape each example: x [N, *in_shape] -> y [N, *shape] (one entry may be -1)."""

    def __init__(self, shape, *, name: str | None = None):
        super().__init__(name)
        self.shape = tuple(shape)

    def _forward(self, x, training):
        try:
            return x.reshape((x.shape[0], *self.shape)), x.shape
        except ValueError:
            raise ShapeError(f"{self.describe()}: cannot reshape an input of shape {x.shape} "
                             f"to (N, {', '.join(map(str, self.shape))})") from None

    def _backward(self, dy, x_shape):
        return dy.reshape(x_shape), {}


class Flatten(Reshape):
    """x [N, ...] -> y [N, prod(...)], in NHWC order (h, then w, then c), like TensorFlow."""

    def __init__(self, *, name: str | None = None):
        super().__init__((-1,), name=name)


class LSTM(Layer):
    """LSTM over a sequence with ``BasicLSTMCell`` conventions (see ``ops.lstm``).

    x [N, T, D] -> h [N, T, H] (``return_sequences=True``) or the last output h [N, H].
    Parameters: ``kernel`` [D + H, 4H] acting on [x_t, h_{t-1}] with gate columns ordered
    i, j, f, o; ``bias`` [4H]. ``forget_bias`` is added inside the forget gate's sigmoid
    at run time, so ``LSTM(D, H, forget_bias=1.0)`` is exactly
    ``BasicLSTMCell(H, forget_bias=1.0)`` unrolled over T steps. (Keras' ``LSTM`` orders
    the gates i, f, c, o and folds the forget bias into its trainable bias instead.)
    """

    def __init__(self, input_size: int, units: int, *, forget_bias: float = 1.0,
                 return_sequences: bool = False, kernel_init=GlorotUniform(), bias_init=Zeros(),
                 name: str | None = None, backend: str | None = None):
        super().__init__(name, backend)
        self.input_size, self.units, self.forget_bias = input_size, units, forget_bias
        self.return_sequences = return_sequences
        self.kernel_init, self.bias_init = kernel_init, bias_init
        self.expects = ("N", "T", input_size)

    def param_specs(self):
        return {"kernel": ((self.input_size + self.units, 4 * self.units), self.kernel_init),
                "bias": ((4 * self.units,), self.bias_init)}

    def _forward(self, x, training):
        h, cache = self.op("lstm_forward")(x, self.params["kernel"], self.params["bias"], self.forget_bias)
        return (h if self.return_sequences else h[:, -1]), (cache, h.shape)

    def _infer(self, x, overwrite_input):
        return self.op("lstm_infer")(x, self.params["kernel"], self.params["bias"], self.forget_bias,
                                     all_steps=self.return_sequences)

    def _backward(self, dy, cache):
        cache, h_shape = cache
        if not self.return_sequences:
            dh = np.zeros(h_shape, dy.dtype)
            dh[:, -1] = dy
            dy = dh
        dx, dkernel, dbias = self.op("lstm_backward")(dy, cache)
        return dx, {"kernel": dkernel, "bias": dbias}
