"""The parity harness in CI: scratchnet against TensorFlow in float64 and float32.

Quick grid, every recipe's model walked layer by layer, optimizers / schedules / EMA over
100 updates, and a short trajectory of every recipe. The full grid and 100-step
trajectories are marked slow: ``pytest -m slow tests/test_parity.py``.
"""

import numpy as np
import pytest

import scratchnet.ops
from scratchnet.recipes import RECIPES
from tfnet import parity

DTYPES = [np.float64, np.float32]


def assert_all_pass(cases):
    failed = [c for c in cases if not c.ok]
    assert not failed, "\n\n".join(c.table() for c in failed)


@pytest.fixture(scope="module")
def images():
    return parity.training_images()


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_layers_quick_grid(dtype):
    cases = parity.run_layers(dtype)
    assert len(cases) > 30
    assert_all_pass(cases)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_models_walked_layer_by_layer(dtype, images):
    """Batch 3; batch 8 for the batch-norm recipes: over N = 3 or 4 examples dense batch norm
    is ill-conditioned (|x̂| ≤ sqrt(N − 1), dx a cancellation of three terms of one size): measured
    float64 1.6e-10 for conv-bn at batch 3 and 1.2e-10 for mlp5-bn-sigmoid at batch 4, float32
    up to 1e-2 element-wise; at batch 8 every BN recipe is below 6e-12 and 4e-6."""
    def batch(recipe):
        return 8 if any(type(l).__name__ == "BatchNorm" for l in recipe.layers()) else 3
    assert_all_pass([parity.check_model(RECIPES[n], dtype, batch_size=batch(RECIPES[n]), data=images)
                     for n in RECIPES])


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_winograd_changes_only_the_routing_of_max_pool_ties(dtype, images):
    """deep-CNN's conv2 runs Winograd by default. Its per-position rounding makes identical
    receptive fields (blank background) differ in the last bits, so pool2 gives a tie's
    gradient to another window position than TF. The walk says so and goes on from pool2
    down with each layer fed TF's input and upstream gradient; everything passes."""
    from scratchnet.kernels.winograd import use_winograd
    assert use_winograd(5, 5, 32, 64, 1), "deep-CNN conv2 no longer runs Winograd: this test checks nothing"
    case = parity.check_model(RECIPES["deep-cnn"], dtype, batch_size=3, data=images, conv="auto")
    assert case.ok and case.resynced_at == "pool2", case.table()
    assert "pool2: " in case.note and "tied within rounding" in case.note


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_optimizers_schedules_ema(dtype):
    cases = parity.run_optim(dtype) + parity.run_schedules(dtype) + parity.run_ema(dtype)
    assert_all_pass(cases)
    if dtype == np.float64:  # TF1 and Keras updates with float64 hyperparameters are bit-exact
        assert max(c.max_error for c in cases if c.section == "optim") == 0.0


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_short_trajectory(recipe, dtype, images):
    case = parity.compare_trajectory(RECIPES[recipe], dtype, steps=6, batch_size=16, data=images)
    assert case.ok, case.table()
    assert case.drift and max(case.drift) == 6


def test_kinks_are_in_the_grid_and_exact():
    """Deliberate max-pool ties (TF: the first maximum takes the gradient) and ReLU at 0."""
    kinks = [c for c in parity.layer_grid() if c.inputs in ("pool_ties", "relu_zeros")]
    assert len(kinks) == 3
    for case in kinks:
        result = parity.check_layer(case, np.float64)
        assert result.ok and result.max_error < 1e-15, result.table()


def test_grid_covers_the_traps():
    labels = " | ".join(c.label for c in parity.layer_grid())
    for needle in ("pad 2/3", "pad 1/2", "batch 1", "non-square", "overlapping", "T=1 ", "T=5", "VALID",
                   "fed mask", "flatten", "sigmoid", "tanh", "softmax"):
        assert needle in labels, needle


# --- the harness names what breaks --------------------------------------------------------------
# These break a function of the reference backend (scratchnet.ops), so they pin it.

@pytest.fixture
def reference_backend(monkeypatch):
    from scratchnet import backend
    monkeypatch.setattr(backend, "_active", "reference")

def _scaled(fn, which, factor=1 + 1e-7):
    """``fn`` with output number ``which`` multiplied by ``factor`` (a deliberately broken backward)."""
    def broken(*args, **kwargs):
        out = list(fn(*args, **kwargs)) if isinstance(which, int) else fn(*args, **kwargs)
        if isinstance(which, int):
            out[which] = out[which] * factor
            return tuple(out)
        return out * factor
    return broken


def test_broken_conv_input_gradient_is_named(reference_backend, monkeypatch, images):
    monkeypatch.setattr(scratchnet.ops, "conv2d_backward", _scaled(scratchnet.ops.conv2d_backward, 0))
    case = parity.check_model(RECIPES["conv3"], np.float64, batch_size=2, data=images)
    assert not case.ok and case.first_failure == "conv3 input gradient", case.table()
    # Everything before it in backward order is still right.
    rows = [r.tensor for r in case.rows]
    assert all(r.ok for r in case.rows[:rows.index("conv3 input gradient")])
    layer = next(c for c in parity.layer_grid() if c.label.startswith("conv "))
    assert parity.check_layer(layer, np.float64).first_failure == "dx (input gradient)"


def test_broken_dense_weight_gradient_is_named(reference_backend, monkeypatch, images):
    monkeypatch.setattr(scratchnet.ops, "dense_backward", _scaled(scratchnet.ops.dense_backward, 1))
    case = parity.check_model(RECIPES["deep-cnn"], np.float64, batch_size=2, data=images)
    assert case.first_failure == "fc2/w gradient", case.table()


def test_broken_lstm_kernel_gradient_is_named(reference_backend, monkeypatch, images):
    monkeypatch.setattr(scratchnet.ops, "lstm_backward", _scaled(scratchnet.ops.lstm_backward, 1))
    case = parity.check_model(RECIPES["lstm"], np.float64, batch_size=2, data=images)
    assert case.first_failure == "lstm/kernel gradient", case.table()


def test_broken_relu_kink_is_named(reference_backend, monkeypatch):
    monkeypatch.setattr(scratchnet.ops, "relu_backward",
                        lambda dy, x: np.where(x >= 0, dy, 0).astype(dy.dtype))  # ReLU'(0) = 1: wrong
    case = next(c for c in parity.layer_grid() if c.inputs == "relu_zeros")
    assert parity.check_layer(case, np.float64).first_failure == "dx (input gradient)"


def _last_max_forward(x, ksize=(2, 2), stride=(2, 2), padding="SAME"):
    """A max-pool that sends the gradient to the LAST maximum: wrong at ties only."""
    from scratchnet.ops import conv

    (kh, kw), (sh, sw) = ksize, stride
    (ho, wo), pads = conv.spatial_geometry(x.shape, ksize, stride, padding)
    xp = conv.pad_spatial(x, pads, value=-np.inf)
    y = np.full((x.shape[0], ho, wo, x.shape[3]), -np.inf, x.dtype)
    argmax = np.zeros(y.shape, np.int32)
    for p in range(kh):
        for q in range(kw):
            v = xp[:, p:p + sh * ho:sh, q:q + sw * wo:sw, :]
            better = v >= y  # wrong: a later equal value takes over
            y[better], argmax[better] = v[better], p * kw + q
    return y, (x.shape, xp.shape, pads, ksize, stride, argmax)


def test_broken_maxpool_tie_rule_is_named(reference_backend, monkeypatch):
    monkeypatch.setattr(scratchnet.ops, "max_pool_forward", _last_max_forward)
    plain = next(c for c in parity.layer_grid() if c.label.startswith("maxpool 2/2 SAME on 7x7"))
    assert parity.check_layer(plain, np.float64).ok  # no ties: nothing to see
    ties = next(c for c in parity.layer_grid() if c.inputs == "pool_ties")
    assert parity.check_layer(ties, np.float64).first_failure == "dx (input gradient)"


def test_broken_maxpool_tie_rule_is_named_in_the_model_walk(reference_backend, monkeypatch, images):
    """The walk's re-synchronisation at a tie does not hide a wrong tie rule: fed TF's
    input, whose ties are exact, the pool still routes to the wrong position."""
    monkeypatch.setattr(scratchnet.ops, "max_pool_forward", _last_max_forward)
    case = parity.check_model(RECIPES["deep-cnn"], np.float64, batch_size=3, data=images)
    assert case.first_failure == "pool2 input gradient", case.table()


def test_broken_optimizer_is_caught_at_its_first_step(monkeypatch, images):
    from scratchnet.optim import optimizers

    original = optimizers.Adam._update

    def drifting(self, key, p, g, lr):
        original(self, key, p, g, lr)
        if self.iterations == 2 and key == "fc2/b":  # the third update of one tensor goes wrong
            p *= 1 + 1e-6
    monkeypatch.setattr(optimizers.Adam, "_update", drifting)
    case = parity.compare_trajectory(RECIPES["mlp5"], np.float64, steps=5, batch_size=4, data=images)
    assert case.failing_step == 3 and case.first_failure.startswith("step 3: params/fc2/b"), case.first_failure


def test_float32_trajectory_fails_when_its_float64_twins_part(monkeypatch, images):
    """The float32 bound is the triangle through the float64 twins; what makes it a test is
    that the twins themselves must agree to the float64 bound."""
    from scratchnet.optim import optimizers

    original = optimizers.Adam._update

    def drifting(self, key, p, g, lr):  # a scratchnet bug far below float32's 1e-4 floor
        original(self, key, p, g, lr)
        if self.iterations == 2 and key == "fc2/b":
            p *= 1 + 1e-6
    monkeypatch.setattr(optimizers.Adam, "_update", drifting)
    case = parity.compare_trajectory(RECIPES["mlp5"], np.float32, steps=5, batch_size=4, data=images)
    assert case.first_failure.startswith("step 3: float64 twins (params/fc2/b)"), case.first_failure


def test_cli_exit_status(capsys):
    from scratchnet.cli import main

    assert main(["parity", "--sections", "ema", "schedules", "--dtype", "float64", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "all passed" in out and "float64 tensor" in out and "(fast backend)" in out


def test_cli_backend_option(reference_backend, capsys):
    from scratchnet import backend
    from scratchnet.cli import main

    backend.set_backend("fast")  # the fixture restores the default afterwards
    assert main(["--backend", "reference", "parity", "--sections", "ema", "--quiet"]) == 0
    assert "(reference backend)" in capsys.readouterr().out and backend.get_backend() == "reference"


def test_cli_fails_on_a_broken_backward(reference_backend, monkeypatch, capsys):
    from scratchnet.cli import main

    monkeypatch.setattr(scratchnet.ops, "tanh_backward", _scaled(scratchnet.ops.tanh_backward, None, 1.001))
    assert main(["parity", "--sections", "layers", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "FAIL layers [float64] tanh" in out and "first divergence at dx (input gradient)" in out


# --- slow: the full grid and long trajectories -------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_layers_full_grid(dtype):
    assert_all_pass(parity.run_layers(dtype, full=True))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_trajectory_100_steps(recipe, dtype, images):
    case = parity.compare_trajectory(RECIPES[recipe], dtype, steps=100, batch_size=16, data=images)
    assert case.ok, case.table()


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["mlp", "lstm", "conv3"])
def test_trajectory_recipe_batch_size_float64(recipe, images):
    case = parity.compare_trajectory(RECIPES[recipe], np.float64, steps=100, batch_size=None, data=images)
    assert case.ok, case.table()
