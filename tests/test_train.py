"""The training loop end to end on real MNIST: the loss falls, the outputs are written, and
an interrupted run resumed from its checkpoint ends with exactly the weights of an
uninterrupted one (parameters, optimizer slots, moving averages, data order, dropout)."""

import json

import numpy as np
import pytest

from scratchnet.cli import main
from scratchnet.data import load_mnist
from scratchnet.recipes import RECIPES, get_recipe
from scratchnet.train import Trainer, run


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


def test_mlp_loss_falls_and_outputs_are_written(mnist, tmp_path):
    recipe = get_recipe("mlp").with_overrides(steps=300, eval_every=100)
    trainer = Trainer(recipe, seed=1)
    result = run(trainer, mnist, out_dir=tmp_path, seed=1, progress=False, log=lambda *_: None)
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [100, 200, 300, 300]
    assert lines[-1]["split"] == "test" and lines[-1]["ema"] is True
    assert result["test_accuracy"] > 0.93
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["recipe"]["learning_rate"] and config["recipe"]["l2_params"] == ["fc1/w", "fc2/w"]
    assert (tmp_path / "checkpoint.npz").exists()


def test_loss_falls_for_a_conv_recipe(mnist):
    trainer = Trainer(get_recipe("conv3").with_overrides(batch_size=32), seed=2)
    x, y = mnist.train.images[:32], mnist.train.labels[:32]
    first = trainer.train_step(x, y)[0]
    for _ in range(30):
        last = trainer.train_step(x, y)[0]
    assert last < 0.5 * first


@pytest.mark.parametrize("recipe_name", ["mlp", "mlp5-dropout", "mlp5-bn",
                                         pytest.param("conv-bn", marks=pytest.mark.slow)])
def test_resume_gives_bit_identical_weights(mnist, tmp_path, recipe_name):
    recipe = get_recipe(recipe_name).with_overrides(steps=60, eval_every=25, batch_size=32)
    quiet = dict(progress=False, log=lambda *_: None)
    straight = Trainer(recipe, seed=3)
    run(straight, mnist, out_dir=tmp_path / "a", seed=3, **quiet)

    first = Trainer(recipe.with_overrides(steps=25), seed=3)
    run(first, mnist, out_dir=tmp_path / "b", seed=3, **quiet)
    resumed = Trainer(recipe, seed=99)  # a different seed: everything must come from the checkpoint
    run(resumed, mnist, out_dir=tmp_path / "b", seed=3, resume=tmp_path / "b" / "checkpoint.npz", **quiet)

    a, b = straight.state(), resumed.state()
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_batchnorm_averages_follow_tf1_rules_for_tensors(mnist):
    """Shadows start at zero, decay min(d, (1+i)/(10+i)) with i the pre-increment step, no
    debiasing; 4.1 averages the step's own statistics, 4.2 those of a second pass after the
    update with dropout off."""
    x, y = mnist.train.images[:32], mnist.train.labels[:32]
    same = Trainer(get_recipe("mlp5-bn"), seed=1)
    bn = same.model.layer("bn2")
    assert (bn.moving_mean == 0).all() and same.state()["bn/bn2/variance"].shape == (100,)
    same.train_step(x, y)
    first = bn.batch_mean.copy(), bn.batch_variance.copy()  # the step's forward pass
    np.testing.assert_allclose(bn.moving_mean, 0.9 * first[0], rtol=1e-6)
    np.testing.assert_allclose(bn.moving_variance, 0.9 * first[1], rtol=1e-6)
    same.train_step(x, y)
    d = 2 / 11  # i = 1
    # atol: a mean near 0 is a float32 cancellation (Zen 3: 5.6e-9 on -4.7e-4, rel 1.2e-5)
    np.testing.assert_allclose(bn.moving_mean, d * 0.9 * first[0] + (1 - d) * bn.batch_mean, rtol=1e-5, atol=1e-7)

    second = Trainer(get_recipe("conv-bn"), seed=1)
    bn = second.model.layer("bn3")
    second.loss_and_grads(x, y)
    before = bn.batch_mean.copy()  # statistics of the training pass (pre-update weights)
    second = Trainer(get_recipe("conv-bn"), seed=1)
    second.train_step(x, y)
    bn = second.model.layer("bn3")
    h = x.astype(np.float32)
    for layer in second.model.layers[:second.model.layers.index(bn) + 1]:
        h = layer.forward(h, training=True)  # the updated weights (no dropout before bn3)
    np.testing.assert_allclose(bn.moving_mean, 0.9 * bn.batch_mean, rtol=1e-6)
    assert not np.allclose(bn.moving_mean, 0.9 * before, rtol=1e-3)
    assert second.step == 1


def test_tracked_test_maximum_survives_a_resume(mnist, tmp_path):
    """Görner's figure is the best test accuracy seen during training: it is tracked every
    ``track_test_every`` steps, and a resumed run still counts the passes before the resume."""
    recipe = get_recipe("softmax").with_overrides(steps=60, eval_every=25, track_test_every=20)
    quiet = dict(progress=False, log=lambda *_: None)
    straight = run(Trainer(recipe, seed=3), mnist, out_dir=tmp_path / "a", seed=3, **quiet)
    run(Trainer(recipe.with_overrides(steps=25), seed=3), mnist, out_dir=tmp_path / "b", seed=3, **quiet)
    run(Trainer(recipe, seed=3), mnist, out_dir=tmp_path / "b", seed=3,
        resume=tmp_path / "b" / "checkpoint.npz", **quiet)

    def final(folder):
        lines = [json.loads(l) for l in (tmp_path / folder / "metrics.jsonl").read_text().splitlines()]
        tracked = [l for l in lines if l["split"] == "test-tracked"]
        return lines[-1], tracked

    last, tracked = final("a")
    assert [l["step"] for l in tracked] == [20, 40]
    best = max([l["accuracy"] for l in tracked] + [last["accuracy"]])
    assert last["max_tracked"] == best == straight["max_tracked_test_accuracy"]
    assert final("b")[0]["max_tracked"] == best and final("b")[0]["max_tracked_step"] == last["max_tracked_step"]


def test_every_recipe_builds_and_steps(mnist):
    x, y = mnist.train.images[:4], mnist.train.labels[:4]
    for name, recipe in RECIPES.items():
        trainer = Trainer(recipe, seed=0)
        loss, logits = trainer.train_step(x, y)
        assert np.isfinite(loss) and logits.shape == (4, 10), name


def test_cli_train_and_eval(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "mlp-sgd", "--steps", "200", "--out", str(out), "--no-progress"]) == 0
    trained = capsys.readouterr().out
    assert "test accuracy: 0.9" in trained
    assert main(["eval", str(out / "checkpoint.npz")]) == 0
    evaluated = capsys.readouterr().out
    line = lambda text: [l for l in text.splitlines() if l.startswith("test accuracy")][0]  # noqa: E731
    assert line(trained) == line(evaluated)


class Jump:
    """A learning rate that turns hopeless at ``step``."""

    def __init__(self, step):
        self.step = step

    def __call__(self, step):
        return 0.1 if step < self.step else 1e6

    def to_config(self):
        return {"schedule": "jump", "step": self.step}


def test_divergence_keeps_the_last_good_checkpoint(mnist, tmp_path):
    from scratchnet.checkpoint import load_checkpoint
    from scratchnet.errors import DivergenceError

    recipe = get_recipe("mlp").with_overrides(steps=300, eval_every=50, batch_size=20, learning_rate=Jump(120))
    with pytest.raises(DivergenceError) as error:
        run(Trainer(recipe, seed=1), mnist, out_dir=tmp_path, seed=1, progress=False, log=lambda *_: None)
    message = str(error.value)
    assert message.startswith(f"training diverged at step {error.value.step}: the loss is ")
    assert 120 < error.value.step < 150 and "params/fc1/w holds NaN or infinity" in message
    assert f"the last good checkpoint is {tmp_path / 'checkpoint.npz'} (step 100)" in message
    arrays, meta = load_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["step"] == 100 and all(np.isfinite(v).all() for k, v in arrays.items() if k.startswith("params/"))


def test_overrides_are_recorded_and_an_overridden_run_evaluates(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "mlp5-dropout", "--optimizer", "momentum", "--lr", "0.001", "--keep-prob", "0.9",
                 "--init", "glorot", "--steps", "30", "--batch-size", "10", "--out", str(out), "--no-progress"]) == 0
    trained = capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["overrides"] == {"steps": 30, "batch_size": 10, "lr": 0.001, "optimizer": "momentum",
                                   "keep_prob": 0.9, "init": "glorot"}
    assert config["recipe"]["optimizer_args"] == {"momentum": 0.9}
    assert {l["keep_prob"] for l in config["recipe"]["layers"] if l["type"] == "Dropout"} == {0.9}
    assert {l["w_init"] for l in config["recipe"]["layers"] if l["type"] == "Dense"} == {"GlorotUniform()"}
    assert main(["eval", str(out)]) == 0
    line = lambda text: [l for l in text.splitlines() if l.startswith("test accuracy")][0]  # noqa: E731
    assert line(trained) == line(capsys.readouterr().out)
