"""Section ``optim``: TF1 and Keras 3 optimizers over the same stream of gradients."""

from __future__ import annotations

import dataclasses

import numpy as np

from .metrics import Case, _new_case


OPTIM_SHAPES = {"conv1/w": (3, 3, 2, 4), "conv1/b": (4,), "dense/w": (13, 7)}


def optimizer_cases():
    """(label, flavor, name, learning rate (a number or a scratchnet schedule), kwargs)."""
    from scratchnet.optim import schedules

    decay = schedules.exponential_decay(0.5, 7, 0.5, staircase=True)
    smooth = schedules.exponential_decay(0.05, 10, 0.9)
    gorner = schedules.gorner(1e-4, 3e-3, 20)
    return [
        ("sgd 0.1", "tf1", "sgd", 0.1, {}),
        ("sgd, staircase decay 0.5·0.5^floor(t/7)", "tf1", "sgd", decay, {}),
        ("momentum 0.1, 0.9", "tf1", "momentum", 0.1, {"momentum": 0.9}),
        ("momentum nesterov, smooth decay", "tf1", "momentum", smooth, {"momentum": 0.9, "use_nesterov": True}),
        ("adagrad 0.1", "tf1", "adagrad", 0.1, {}),
        ("rmsprop 0.01", "tf1", "rmsprop", 0.01, {}),
        ("rmsprop centered, momentum 0.5", "tf1", "rmsprop", 0.01, {"momentum": 0.5, "centered": True}),
        ("adam 0.01", "tf1", "adam", 0.01, {}),
        ("adam, Görner decay", "tf1", "adam", gorner, {}),
        ("keras sgd 0.1", "keras", "sgd", 0.1, {}),
        ("keras sgd nesterov 0.9", "keras", "sgd", 0.1, {"momentum": 0.9, "nesterov": True}),
        ("keras adagrad 0.1", "keras", "adagrad", 0.1, {}),
        ("keras rmsprop centered momentum", "keras", "rmsprop", 0.01, {"momentum": 0.5, "centered": True}),
        ("keras adam 0.01", "keras", "adam", 0.01, {}),
    ]


_KERAS = {"sgd": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adam": "Adam"}


def check_optimizer(label, flavor, name, lr, kwargs, dtype=np.float64, steps: int = 100, seed: int = 0) -> Case:
    """``steps`` updates of the same gradient stream in scratchnet and in TensorFlow's
    optimizer object; compared after every update (rows: after 1 and after ``steps``)."""
    from scratchnet.optim import make_optimizer

    from .._tf import import_tf
    from ..train import tf_optimizer, tf_schedule

    tf = import_tf()
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    init = {k: rng.normal(0, 1, s).astype(dtype) for k, s in OPTIM_SHAPES.items()}
    stream = [{k: (rng.normal(0, 1, s) * rng.choice([1e-3, 1.0, 10.0])).astype(dtype)
               for k, s in OPTIM_SHAPES.items()} for _ in range(steps)]
    sched = lr
    if flavor == "tf1" and hasattr(lr, "to_config") and dtype == np.float32 and "dtype" in lr.to_config():
        sched = dataclasses.replace(lr, dtype="float32")  # TF computes a Python-float schedule in float32
    if flavor == "keras" and hasattr(lr, "to_config") and "dtype" in lr.to_config():
        sched = dataclasses.replace(lr, dtype="float32")
    ours = make_optimizer(name, sched, flavor=flavor, **kwargs)
    params = {k: v.copy() for k, v in init.items()}
    if flavor == "tf1":
        step = tf.Variable(0, dtype=tf.int64)
        theirs = tf_optimizer(name, tf_schedule(lr, step, dtype), kwargs, dtype)
        variables = {k: tf.Variable(v) for k, v in init.items()}
        apply = lambda grads: theirs.apply_gradients(  # noqa: E731
            [(tf.constant(grads[k]), variables[k]) for k in variables], global_step=step)
        note = ("TF1 optimizer; hyperparameters as float64 tensors" if dtype == np.float64
                else "TF1 optimizer; hyperparameters as Python floats (float32 tensors)")
    else:
        import keras

        if hasattr(lr, "to_config"):
            raise ValueError("keras cases take a constant rate")
        theirs = getattr(keras.optimizers, _KERAS[name])(learning_rate=lr, **kwargs)
        variables = {k: keras.Variable(v, dtype=dtype.name) for k, v in init.items()}
        apply = lambda grads: theirs.apply_gradients(  # noqa: E731
            [(tf.constant(grads[k]), variables[k]) for k in variables])
        note = "Keras 3 optimizer (float32 learning rate and casts modelled by scratchnet's Keras* classes)"
    case = _new_case("optim", f"{label} ({steps} updates)", dtype, note=note)
    for t, grads in enumerate(stream, start=1):
        ours.apply(params, grads)
        apply(grads)
        if t in (1, steps):
            for k in params:
                case.add(f"{k} after {t} update{'s' if t > 1 else ''}", params[k], variables[k].numpy())
        elif case.first_failure is None:
            probe = _new_case("optim", "", dtype)
            for k in params:
                probe.add(k, params[k], variables[k].numpy())
            if not probe.ok:
                case.first_failure = f"update {t}: {probe.first_failure}"
                case.failing_step = t
    return case


def run_optim(dtype=np.float64, steps: int = 100, seed: int = 0) -> list[Case]:
    return [check_optimizer(*c, dtype=dtype, steps=steps, seed=seed) for c in optimizer_cases()]


# --- schedules ---------------------------------------------------------------------------------------
