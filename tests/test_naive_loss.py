"""The second deep-MNIST write-up's naive summed cross-entropy: equal to the stable loss
where nothing underflows, NaN in both engines at the same step once a probability does."""

import numpy as np
import pytest

from scratchnet import check_function
from scratchnet.ops import naive_cross_entropy_sum, softmax_cross_entropy
from scratchnet.optim import schedules

LABELS = np.array([3, 0, 9, 1])


def test_naive_loss_is_the_summed_stable_loss_and_its_gradient_checks():
    z = np.random.default_rng(0).normal(0, 3, (4, 10))
    loss, grad = naive_cross_entropy_sum(z, LABELS)
    stable, stable_grad = softmax_cross_entropy(z, LABELS)
    assert loss == pytest.approx(4 * stable, rel=1e-14)
    np.testing.assert_allclose(grad, 4 * stable_grad, rtol=1e-10, atol=1e-15)
    report = check_function(lambda z: (lambda l, g: (l, {"z": g}))(*naive_cross_entropy_sum(z, LABELS)), {"z": z})
    assert report.ok(1e-6), report.table()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_naive_loss_equals_tensorflow_and_underflows_like_it(dtype):
    tf = pytest.importorskip("tensorflow")
    # row 2: a logit 800 below its row's maximum underflows in both dtypes
    z = np.random.default_rng(1).normal(0, 3, (4, 10)).astype(dtype)
    z_under = z.copy()
    z_under[2, 5] = -800
    for logits, finite in ((z, True), (z_under, False)):
        zt = tf.constant(logits)
        with tf.GradientTape() as tape:
            tape.watch(zt)
            y = tf.one_hot(LABELS, 10, dtype=zt.dtype)
            tloss = -tf.reduce_sum(y * tf.math.log(tf.nn.softmax(zt)))
        tgrad = tape.gradient(tloss, zt).numpy()
        loss, grad = naive_cross_entropy_sum(logits, LABELS)
        assert np.isfinite(loss) == finite == np.isfinite(tloss.numpy())
        np.testing.assert_array_equal(np.isnan(grad), np.isnan(tgrad))
        ok = np.isfinite(tgrad)
        np.testing.assert_allclose(grad[ok], tgrad[ok], rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
        if finite:
            assert loss == pytest.approx(float(tloss), rel=1e-5 if dtype == np.float32 else 1e-12)


def test_both_engines_diverge_at_the_same_step_with_the_same_message(tmp_path):
    """Adam at lr 0.05 drives deep-cnn's logits apart within a few steps; once one
    probability underflows to 0 the naive loss is NaN, and the guard stops both engines."""
    pytest.importorskip("tensorflow")
    from scratchnet.data import load_mnist
    from scratchnet.errors import DivergenceError
    from scratchnet.recipes import RECIPES
    from scratchnet.train import Trainer, run
    from tfnet.train import TFTrainer

    recipe = RECIPES["deep-cnn-glorot-1k"].with_overrides(learning_rate=schedules.constant(0.05), steps=200,
                                                          batch_size=10)
    mnist = load_mnist()
    errors = {}
    for engine, make in (("scratchnet", Trainer), ("tf", TFTrainer)):
        with pytest.raises(DivergenceError) as error:
            run(make(recipe, seed=1), mnist, out_dir=tmp_path / engine, seed=1, progress=False, log=lambda *_: None)
        errors[engine] = error.value
    a, b = errors["scratchnet"], errors["tf"]
    assert a.step == b.step < 200 and "the loss is nan" in str(a)
    assert str(a).replace(str(tmp_path / "scratchnet"), "") == str(b).replace(str(tmp_path / "tf"), "")
