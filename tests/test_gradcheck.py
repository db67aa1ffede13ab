"""What users of PyTorch's gradcheck, JAX's check_grads and Chainer's check_backward asked for:
a fast (directional) mode that still catches a broken backward, the worst element and its
neighbours, a step per dtype with a float32 warning, kink warnings, models with a loss and
a subset of parameters."""

import warnings

import numpy as np
import pytest

import scratchnet.ops
from scratchnet import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential, Tanh, check_gradients, softmax_cross_entropy
from scratchnet.gradcheck import STEP, GradCheckWarning

RTOL = 1e-6


def cnn(seed=0):
    model = Sequential([Conv2D(3, 1, 2, stride=2), Tanh(), MaxPool2D(2), Flatten(), Dense(8, 3)],
                       seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed)
    for v in model.params.values():
        v[...] = rng.standard_normal(v.shape) * 0.5
    return model, rng.standard_normal((2, 7, 7, 1))


@pytest.fixture
def reference_backend(monkeypatch):
    from scratchnet import backend
    monkeypatch.setattr(backend, "_active", "reference")


def test_fast_mode_passes_a_correct_model_with_few_evaluations():
    model, x = cnn()
    calls = []
    forward = model.forward
    model.forward = lambda *a: calls.append(1) or forward(*a)
    report = check_gradients(model, x, fast=True, directions=2)
    assert report.ok(RTOL), report.table(RTOL)
    assert [t.mode for t in report.tensors] == ["fast"] * 5
    assert len(calls) == 2 + 5 * 2 * 4  # two forwards, then 4 per direction per tensor (full: 4 per element)
    assert "  mode" in report.table() and [t.shape for t in report.tensors][0] == (2, 7, 7, 1)


def test_fast_mode_catches_a_broken_backward_and_names_the_element(reference_backend, monkeypatch):
    """One element of the dense weight gradient 1 % off: the directional check fails, falls
    back to the full check of that tensor alone, which names the element."""
    dense_backward = scratchnet.ops.dense_backward

    def broken(dy, cache):
        dx, dw, db = dense_backward(dy, cache)
        dw = dw.copy()
        dw[5, 1] *= 1.01
        return dx, dw, db
    monkeypatch.setattr(scratchnet.ops, "dense_backward", broken)
    model, x = cnn()
    report = check_gradients(model, x, fast=True)
    assert [t.name for t in report.failures(RTOL)] == ["dense_1/w"]
    bad = report.failures(RTOL)[0]
    assert bad.mode == "fast -> full" and bad.worst[0] == (5, 1)
    assert {i for i, _, _ in bad.neighbours} == {(4, 1), (6, 1), (5, 0), (5, 2)}
    assert all(t.mode == "fast" for t in report.tensors if t.name != "dense_1/w")
    assert "worst dense_1/w[5, 1]: analytic" in report.table(RTOL)


def test_step_per_dtype_and_the_float32_warning():
    model = Sequential([Dense(3, 4), Tanh(), Dense(4, 2)], dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    with pytest.warns(GradCheckWarning, match="float32"):
        report = check_gradients(model, x)
    assert report.h == STEP[np.dtype(np.float32)] and report.max_rel < 1e-4
    with pytest.warns(GradCheckWarning):
        assert check_gradients(model, x, h=1e-3).max_rel > 10 * report.max_rel  # float64's step: round-off wins
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_gradients(model.astype(np.float64), x.astype(np.float64)).h == 1e-3


def test_warnings_at_kinks():
    x = np.array([[0.5, -0.0005, 1.0, -2.0]])
    with pytest.warns(GradCheckWarning, match=r"relu.*1 input\(s\) within 2h = 0.002 of 0"):
        check_gradients(ReLU(name="relu").build(), x)
    tie = np.array([1.0, 1.0005, 0.0, -1.0, 0.5, 0.2, 0.0, 1.0]).reshape(1, 2, 4, 1)
    with pytest.warns(GradCheckWarning, match=r"pool.*1 window\(s\) with two values within 2h"):
        report = check_gradients(MaxPool2D(2, 2, "VALID", name="pool").build(), tie)
    assert "a tie" in report.table()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_gradients(ReLU().build(), np.array([[0.5, -0.5]]))


def test_models_with_their_loss_and_a_subset_of_parameters():
    model, x = cnn()
    labels = np.array([2, 0])
    report = check_gradients(model, x, loss=lambda y: softmax_cross_entropy(y, labels),
                             params=["conv2d_1/*"], input=False)
    assert [t.name for t in report.tensors] == ["conv2d_1/w", "conv2d_1/b"] and report.ok(RTOL)
    with pytest.raises(KeyError, match=r"no parameter matches \['fc9/\*'\]"):
        check_gradients(model, x, params=["fc9/*"])
