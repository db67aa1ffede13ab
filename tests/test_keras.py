"""Keras models in and out (``tfnet.keras``) and ``scratchnet parity --keras``: Keras's own
MNIST convnet example and an LSTM model pass in float64 at the harness's tolerances;
``same`` padding, the LSTM's fused gates, the round trip; unsupported options refused by name."""

import re

import numpy as np
import pytest

import scratchnet.ops

keras = pytest.importorskip("keras")
layers = keras.layers

from tfnet.keras import KerasImportError, from_keras, to_keras  # noqa: E402
from tfnet.keras_parity import check_keras, model_input  # noqa: E402


def randomized(model, seed=0):
    """``model`` with every weight random, biases included (Keras starts them at zero)."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.5 if w.ndim == 1 else 1 / np.sqrt(np.prod(w.shape[:-1])), w.shape)
                       .astype(w.dtype) for w in model.get_weights()])
    return model


def mnist_convnet():
    """https://keras.io/examples/vision/mnist_convnet/, as written there."""
    keras.backend.clear_session()  # layer names from 'conv2d' on
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return randomized(model)


def lstm_model():
    keras.backend.clear_session()
    model = keras.Sequential([keras.Input((28, 28)), layers.LSTM(16, return_sequences=True), layers.LSTM(8),
                              layers.Dense(10, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.RMSprop(1e-3, momentum=0.5))
    return randomized(model, 1)


def assert_all_pass(cases):
    failed = [c for c in cases if not c.ok]
    assert not failed, "\n\n".join(c.table() for c in failed)


@pytest.fixture(scope="module")
def convnet():
    return mnist_convnet()


def test_keras_mnist_convnet_passes_in_float64(convnet):
    cases = check_keras(convnet, model_input(convnet, batch_size=2), np.float64)
    assert_all_pass(cases)
    walk, step = cases
    assert walk.rows[0].tensor == "conv2d output" and walk.rows[-1].tensor == "conv2d input gradient"
    assert "dense/kernel gradient" in [r.tensor for r in walk.rows] and "Adam" in step.name


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_lstm_model_passes(dtype):
    model = lstm_model()
    cases = check_keras(model, model_input(model, batch_size=3), dtype)
    assert_all_pass(cases)
    assert "lstm/recurrent_kernel gradient" in [r.tensor for r in cases[0].rows] and "RMSprop" in cases[1].name


def test_broken_backward_is_named(convnet, monkeypatch):
    from scratchnet import backend

    monkeypatch.setattr(backend, "_active", "reference")
    dense_backward = scratchnet.ops.dense_backward
    monkeypatch.setattr(scratchnet.ops, "dense_backward",
                        lambda dy, cache: (lambda dx, dw, db: (dx * (1 + 1e-7), dw, db))(*dense_backward(dy, cache)))
    walk = check_keras(convnet, model_input(convnet, batch_size=2), np.float64)[0]
    assert walk.first_failure == "dense input gradient", walk.table()
    assert "FIRST DIVERGENCE: dense input gradient" in walk.table()


def cli(capsys, *args):
    """``scratchnet *args`` in this process: (exit status, stdout, stderr)."""
    from scratchnet.cli import main

    try:
        status = main([str(a) for a in args])
    except SystemExit as e:  # usage errors
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_on_a_saved_h5_file(convnet, tmp_path, capsys):
    convnet.save(tmp_path / "convnet.h5")
    status, out, err = cli(capsys, "parity", "--keras", tmp_path / "convnet.h5", "--batch-size", "2", "--quiet")
    assert status == 0, out + err
    assert "keras         float64      2      0" in out and "all passed" in out


def test_cli_input_and_errors(tmp_path, capsys):
    model = randomized(keras.Sequential([keras.Input((5,)), layers.Dense(3, activation="tanh"), layers.Dense(2)]))
    model.save(tmp_path / "mlp.keras")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(4, 5)))
    status, out, _ = cli(capsys, "parity", "--keras", tmp_path / "mlp.keras", "--input", tmp_path / "x.npy")
    assert status == 0 and "(4, 5)" in out and "no training step: the model is not compiled" in out
    np.save(tmp_path / "bad.npy", np.zeros((4, 6)))
    bn = keras.Sequential([keras.Input((5,)), layers.BatchNormalization(name="bn")])
    bn.save(tmp_path / "bn.keras")
    for args, status, message in [
            (["--keras", "mlp.keras", "--input", "bad.npy"], 1, "shape (4, 6), the model takes (N, 5)"),
            (["--keras", "mlp.keras"], 1, "not MNIST's 784 pixels: give --input"),
            (["--keras", "bn.keras"], 1, "Keras layer 'bn' (BatchNormalization): no scratchnet equivalent"),
            (["--keras", "x.npy"], 2, "a .keras or .h5 file"),
            (["--keras", "none.keras"], 2, "none.keras: no such file"),
            (["--input", "x.npy"], 2, "--input goes with --keras"),
            (["--keras", "mlp.keras", "--recipes", "mlp"], 2, "--recipes does not apply to --keras MODEL")]:
        args = [tmp_path / a if a.endswith((".keras", ".npy")) else a for a in args]
        got, _, err = cli(capsys, "parity", *args)
        lines = [l for l in err.splitlines() if l.startswith("scratchnet: error: ")]
        assert got == status and len(lines) == 1 and message in lines[0], err


# --- import and export ---------------------------------------------------------------------------------

def test_round_trip_predicts_what_the_model_predicts(convnet):
    x = model_input(convnet, batch_size=3)
    again = to_keras(from_keras(convnet), input_shape=(28, 28, 1))
    assert [type(l).__name__ for l in again.layers] == ["Conv2D", "Activation", "MaxPooling2D", "Conv2D", "Activation",
                                                        "MaxPooling2D", "Flatten", "Dropout", "Dense", "Activation"]
    np.testing.assert_array_equal(again.predict(x, verbose=0), convnet.predict(x, verbose=0))
    model = lstm_model()
    x = model_input(model, batch_size=3)
    np.testing.assert_array_equal(to_keras(from_keras(model)).predict(x, verbose=0), model.predict(x, verbose=0))


def test_weights_are_copied_exactly(convnet):
    ours = from_keras(convnet)
    assert ours.dtype == np.float32 and list(ours.params)[:2] == ["conv2d/w", "conv2d/b"]
    np.testing.assert_array_equal(ours.params["dense/w"], convnet.get_layer("dense").kernel.numpy())
    assert [l.name for l in ours.layers][-2:] == ["dense", "dense_softmax"]
    model = lstm_model()
    lstm = from_keras(model, np.float64).layer("lstm")
    k, rk, b = (w.astype(np.float64) for w in model.get_layer("lstm").get_weights())
    h = lstm.units
    assert lstm.forget_bias == 0.0 and lstm.return_sequences
    # Keras i, f, c, o -> scratchnet i, j(=c), f, o; kernel and recurrent kernel stacked; bias as is
    np.testing.assert_array_equal(lstm.params["kernel"][:28, h:2 * h], k[:, 2 * h:3 * h])
    np.testing.assert_array_equal(lstm.params["kernel"][28:, 2 * h:3 * h], rk[:, h:2 * h])
    np.testing.assert_array_equal(lstm.params["bias"], np.concatenate([b[:h], b[2 * h:3 * h], b[h:2 * h], b[3 * h:]]))


@pytest.mark.parametrize("size,kernel,stride", [(7, 4, 2), (12, 6, 1), (8, 2, 1), (9, 3, 2)])
def test_same_padding_is_tf_asymmetric_rule(size, kernel, stride):
    model = randomized(keras.Sequential([keras.Input((size, size, 2), dtype="float64"),
                                         layers.Conv2D(3, kernel, strides=stride, padding="same", dtype="float64"),
                                         layers.MaxPooling2D(3, 2, padding="same", dtype="float64")]))
    x = np.random.default_rng(2).normal(size=(2, size, size, 2))
    np.testing.assert_allclose(from_keras(model).forward(x), model(x).numpy(), rtol=0, atol=1e-13)


def test_to_keras_keeps_names_dtype_and_forget_bias():
    from scratchnet import LSTM, Dense, ReLU, Sequential

    ours = Sequential([LSTM(4, 3, forget_bias=1.0, name="rnn"), Dense(3, 2, name="fc"), ReLU()], dtype=np.float64)
    model = to_keras(ours)
    assert [l.name for l in model.layers] == ["rnn", "fc", "relu_1"] and model.layers[0].cell.kernel.dtype == "float64"
    x = np.random.default_rng(3).normal(size=(2, 5, 4))
    np.testing.assert_allclose(model(x).numpy(), ours.forward(x), rtol=0, atol=1e-14)


UNSUPPORTED = [
    (layers.Conv2D(4, 3, dilation_rate=2, name="c"), (9, 9, 2), "'c' (Conv2D): dilation_rate=(2, 2)"),
    (layers.Conv2D(4, 3, groups=2, name="c"), (9, 9, 2), "'c' (Conv2D): groups=2"),
    (layers.Conv2D(4, 3, strides=(1, 2), name="c"), (9, 9, 2), "'c' (Conv2D): strides=(1, 2)"),
    (layers.Conv2D(4, 3, use_bias=False, name="c"), (9, 9, 2), "'c' (Conv2D): use_bias=False"),
    (layers.MaxPooling2D(2, data_format="channels_first", name="p"), (2, 8, 8), "'p' (MaxPooling2D): data_format"),
    (layers.Dense(4, activation="elu", name="d"), (5,), "'d' (Dense): activation='elu'"),
    (layers.Dense(4, kernel_regularizer="l2", name="d"), (5,), "'d' (Dense): kernel_regularizer='L2'"),
    (layers.Dense(4, name="d"), (3, 5), "'d' (Dense): an input of rank 3"),
    (layers.ReLU(max_value=6, name="r"), (5,), "'r' (ReLU): max_value=6"),
    (layers.LSTM(3, recurrent_activation="hard_sigmoid", name="l"), (4, 2), "'l' (LSTM): recurrent_activation"),
    (layers.LSTM(3, go_backwards=True, name="l"), (4, 2), "'l' (LSTM): go_backwards=True"),
    (layers.LSTM(3, recurrent_dropout=0.1, name="l"), (4, 2), "'l' (LSTM): recurrent_dropout=0.1"),
    (layers.GRU(3, name="g"), (4, 2), "'g' (GRU): no scratchnet equivalent"),
    (layers.Dense(4, dtype="mixed_float16", name="d"), (5,), "'d' (Dense): the dtype policy 'mixed_float16'"),
    (layers.Dense(4, trainable=False, name="d"), (5,), "'d' (Dense): trainable=False"),
]


@pytest.mark.parametrize("layer,shape,message", UNSUPPORTED, ids=[m for _, _, m in UNSUPPORTED])
def test_unsupported_is_refused_by_layer_and_option(layer, shape, message):
    model = keras.Sequential([keras.Input(shape), layer])
    with pytest.raises(KerasImportError, match=re.escape("Keras layer " + message)):
        from_keras(model)


def test_functional_chains_import_and_branches_are_refused():
    inp = keras.Input((6,))
    chain = keras.Model(inp, layers.Dense(2, name="out")(layers.Dense(4, activation="relu")(inp)))
    x = np.random.default_rng(4).normal(size=(3, 6)).astype(np.float32)
    # atol: Keras draws its own weights, so an output may land near 0 (2e-6 rel seen on 6e-3)
    np.testing.assert_allclose(from_keras(chain).forward(x), chain(x).numpy(), rtol=1e-6, atol=1e-6)
    a = layers.Dense(4, name="a")(inp)
    branch = keras.Model(inp, layers.Add(name="sum")([a, layers.Dense(4, name="b")(inp)]))
    with pytest.raises(KerasImportError, match="'b': not fed by the layer before it"):
        from_keras(branch)
