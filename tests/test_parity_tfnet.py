"""tfnet itself: lazy TensorFlow import, weight transfer, the BasicLSTMCell twin against
keras.layers.LSTM, and TFTrainer behind scratchnet's Trainer interface."""

import subprocess
import sys

import numpy as np
import pytest

from scratchnet.layers import LSTM
from scratchnet.model import Sequential
from scratchnet.recipes import RECIPES
from tfnet import parity


@pytest.fixture(scope="module")
def images():
    return parity.training_images(4000)


def test_importing_tfnet_and_the_parity_parser_does_not_import_tensorflow():
    code = ("import sys, argparse, tfnet, tfnet.parity; tfnet.parity.add_arguments(argparse.ArgumentParser()); "
            "import scratchnet.cli; print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --- weight transfer ---------------------------------------------------------------------------------

def test_weights_move_both_ways_by_name():
    from tfnet.model import TFModel, from_tf, to_tf

    model = Sequential(RECIPES["conv3"].layers(), seed=4, dtype=np.float64)
    twin = TFModel.from_sequential(model)
    assert list(twin.variables) == list(model.params) and "conv1/w" in twin.variables
    assert all(np.array_equal(model.params[k], v) for k, v in twin.params.items())
    other = Sequential(RECIPES["conv3"].layers(), seed=5, dtype=np.float64)
    to_tf(other, twin)
    assert np.array_equal(twin.variables["fc2/b"].numpy(), other.params["fc2/b"])
    from_tf(TFModel.from_sequential(model), other)
    assert all(np.array_equal(model.params[k], other.params[k]) for k in model.params)


def test_weight_transfer_checks_names_and_shapes():
    from tfnet.model import TFModel, to_tf

    twin = TFModel.from_recipe(RECIPES["mlp"], seed=0)
    with pytest.raises(ValueError, match="fc1/w.*shape"):
        twin.load_params({**twin.params, "fc1/w": np.zeros((3, 3))})
    with pytest.raises(KeyError, match="missing"):
        twin.load_params({"fc1/w": twin.params["fc1/w"]})
    with pytest.raises(ValueError, match="models differ"):
        to_tf(Sequential(RECIPES["softmax"].layers()), twin)


def test_twin_forward_matches_for_every_recipe(images):
    from tfnet.model import TFModel

    x = images[0][:5].astype(np.float64)
    for name, recipe in RECIPES.items():
        model = Sequential(recipe.layers(), seed=2, dtype=np.float64)
        np.testing.assert_allclose(TFModel.from_sequential(model)(x).numpy(), model.forward(x),
                                   rtol=1e-12, atol=1e-13, err_msg=name)


# --- LSTM: the BasicLSTMCell twin and keras.layers.LSTM --------------------------------------------------

def _lstm(rng, d, h, dtype, return_sequences=True):
    layer = LSTM(d, h, return_sequences=return_sequences, name="lstm")
    layer.build(rng, dtype)
    layer.params["kernel"][...] = rng.normal(0, 0.4, layer.params["kernel"].shape)
    layer.params["bias"][...] = rng.normal(0, 0.5, layer.params["bias"].shape)
    return layer


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 2e-6)], ids=["float64", "float32"])
@pytest.mark.parametrize("t_len", [1, 7])
def test_scratchnet_lstm_equals_keras_lstm_with_mapped_weights(dtype, tol, t_len):
    keras = pytest.importorskip("keras")
    import tensorflow as tf

    from tfnet.layers import keras_lstm_grads, keras_lstm_weights

    rng = np.random.default_rng(t_len)
    n, d, h = 3, 4, 5
    layer = _lstm(rng, d, h, dtype)
    x = rng.normal(size=(n, t_len, d)).astype(dtype)
    y = layer.forward(x)
    r = rng.normal(size=y.shape).astype(dtype)
    dx = layer.backward(r)

    theirs = keras.layers.LSTM(h, return_sequences=True, dtype=np.dtype(dtype).name)
    theirs.build((n, t_len, d))
    theirs.set_weights(keras_lstm_weights(layer.params["kernel"], layer.params["bias"], d, forget_bias=1.0))
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        yt = theirs(xt)
        loss = tf.reduce_sum(yt * r)
    grads = tape.gradient(loss, [xt] + theirs.trainable_weights)
    assert [w.name for w in theirs.trainable_weights] == ["kernel", "recurrent_kernel", "bias"]
    np.testing.assert_allclose(y, yt.numpy(), atol=tol, rtol=0)
    np.testing.assert_allclose(dx, grads[0].numpy(), atol=tol, rtol=0)
    for ours, g in zip(keras_lstm_grads(layer.grads["kernel"], layer.grads["bias"], d), grads[1:]):
        np.testing.assert_allclose(ours, g.numpy(), atol=tol * 10, rtol=0)


def test_lstm_weight_mapping_is_documented_and_invertible():
    from tfnet.layers import keras_lstm_weights, lstm_from_keras_weights

    d, h = 2, 3
    kernel = np.arange((d + h) * 4 * h, dtype=np.float64).reshape(d + h, 4 * h)
    bias = np.arange(4 * h, dtype=np.float64)
    k, rk, b = keras_lstm_weights(kernel, bias, d, forget_bias=1.0)
    # i, j, f, o  ->  i, f, c(=j), o; the forget bias folded into the f block
    np.testing.assert_array_equal(k[:, h:2 * h], kernel[:d, 2 * h:3 * h])
    np.testing.assert_array_equal(rk[:, 2 * h:3 * h], kernel[d:, h:2 * h])
    np.testing.assert_array_equal(b, np.concatenate([bias[:h], bias[2 * h:3 * h] + 1, bias[h:2 * h], bias[3 * h:]]))
    k2, b2 = lstm_from_keras_weights(k, rk, b, forget_bias=1.0)
    np.testing.assert_array_equal(k2, kernel)
    np.testing.assert_array_equal(b2, bias)


# --- TFTrainer -----------------------------------------------------------------------------------------

def test_tftrainer_has_the_trainer_interface(images):
    from scratchnet.train import Trainer

    from tfnet.train import TFTrainer

    x, y = images[0][:32], images[1][:32]
    recipe = RECIPES["mlp"].with_overrides(batch_size=32)
    tf_trainer, sn_trainer = TFTrainer(recipe, seed=1), Trainer(recipe, seed=1)
    assert tf_trainer.engine == "tf" and tf_trainer.recipe is recipe and tf_trainer.dtype == np.float32
    assert tf_trainer.step == 0 and tf_trainer.learning_rate() == pytest.approx(0.8)
    loss, logits = tf_trainer.train_step(x, y)
    sn_trainer.train_step(x, y)
    assert isinstance(loss, float) and logits.shape == (32, 10) and tf_trainer.step == 1
    assert set(tf_trainer.state()) == set(sn_trainer.state())  # the same checkpoint keys
    acc = tf_trainer.accuracy(images[0][:1500], images[1][:1500], use_ema=True)
    assert 0 <= acc <= 1 and tf_trainer.predict(images[0][:1500]).shape == (1500,)
    assert tf_trainer.dropout_layers == []


def assert_resume_is_bit_exact(recipe, images, size: int, steps: int):
    """``steps`` steps, save, ``steps`` more; a trainer of another seed loaded from the save
    takes the same ``steps`` steps to the same state. Returns the save and the batches."""
    from tfnet.train import TFTrainer

    imgs, labels = images
    batch = lambda s: (imgs[size * s:size * (s + 1)], labels[size * s:size * (s + 1)])  # noqa: E731
    first = TFTrainer(recipe, seed=3)
    for s in range(steps):
        first.train_step(*batch(s))
    saved = first.state()
    for s in range(steps, 2 * steps):
        first.train_step(*batch(s))
    second = TFTrainer(recipe, seed=11)
    second.load_state(saved)
    for s in range(steps, 2 * steps):
        second.train_step(*batch(s))
    for k, v in first.state().items():
        np.testing.assert_array_equal(v, second.state()[k], err_msg=k)
    return saved, batch


def test_tftrainer_resumes_bit_for_bit_with_its_own_dropout(images):
    from tfnet.train import TFTrainer

    recipe = RECIPES["mlp5-dropout"].with_overrides(batch_size=16)
    saved, batch = assert_resume_is_bit_exact(recipe, images, 16, 3)
    # Different seeds draw different dropout masks.
    third = TFTrainer(recipe, seed=4)
    third.load_state({**saved, **{k: v for k, v in third.state().items() if k.startswith("rng/")}})
    third.train_step(*batch(3))
    assert not np.array_equal(third.model.params["fc1/w"], TFTrainer(recipe, seed=3).model.params["fc1/w"])


@pytest.mark.parametrize("name", ["mlp5-bn", "conv-bn"])
def test_tftrainer_resumes_batchnorm_averages_bit_for_bit(images, name):
    """The moving averages of the batch statistics are in state() (bn/<layer>/mean|variance)
    and come back on load_state(); conv-bn also checks the second statistics pass."""
    from tfnet.train import TFTrainer

    recipe = RECIPES[name].with_overrides(batch_size=8)
    assert not TFTrainer(recipe, seed=3).state()["bn/bn1/mean"].any()  # shadows start at zero
    saved, _ = assert_resume_is_bit_exact(recipe, images, 8, 2)
    assert saved["bn/bn1/mean"].any()


def test_both_engines_start_from_the_same_weights():
    from scratchnet.train import Trainer

    from tfnet.train import TFTrainer

    for name in ("deep-cnn", "lstm"):
        a, b = Trainer(RECIPES[name], seed=7), TFTrainer(RECIPES[name], seed=7)
        assert all(np.array_equal(v, b.model.params[k]) for k, v in a.model.params.items())


def test_shared_loop_and_cli_drive_the_tf_engine(tmp_path):
    from scratchnet.cli import main

    out = tmp_path / "run"
    assert main(["train", "mlp-sgd", "--engine", "tf", "--steps", "30", "--batch-size", "50",
                 "--no-progress", "--out", str(out)]) == 0
    assert (out / "checkpoint.npz").exists() and '"engine": "tf"' in (out / "config.json").read_text()
