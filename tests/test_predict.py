"""``scratchnet predict`` and MNIST's preprocessing, end to end: MNIST test digits rendered
as large photos of dark ink on light, noisy paper, off-centre, saved as PNG and JPEG, are
read back as MNIST digits and recognised; the same photos through a deliberately broken
preprocessing are not, which shows the test can fail."""

import numpy as np
import pytest
from PIL import Image

from scratchnet import load_image, predict, preprocess
from scratchnet.commands.evaluate import restore
from scratchnet.data import load_mnist
from scratchnet.inference import MNIST_STEPS, ImageError, bright_ink, center_by_mass
from scratchnet.recipes import get_recipe
from scratchnet.train import Trainer, run

N = 200


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, mnist):
    """An mlp-sgd run of 3,000 steps (test accuracy about 0.98)."""
    out = tmp_path_factory.mktemp("predict") / "run"
    run(Trainer(get_recipe("mlp-sgd").with_overrides(steps=3000), seed=1), mnist, out_dir=out, seed=1,
        progress=False, log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def trained(run_dir):
    return restore(run_dir)


def photo(digit: np.ndarray, rng) -> Image.Image:
    """A 28×28 digit as a 300×200 photo: 5× larger, dark ink on light paper, somewhere
    off-centre, with sensor noise."""
    big = np.asarray(Image.fromarray((digit * 255).astype(np.uint8)).resize((140, 140), Image.BILINEAR)) / 255
    paper = np.full((300, 200), 235.0)
    top, left = rng.integers(0, 300 - 140), rng.integers(0, 200 - 140)
    paper[top:top + 140, left:left + 140] -= 200 * big
    paper += rng.normal(0, 6, paper.shape)
    return Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def photos(tmp_path_factory, mnist):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(N):
        path = folder / f"{i}.{'png' if i % 2 else 'jpg'}"
        photo(mnist.test.images[i, :, :, 0], rng).save(path, quality=90)
        paths.append(path)
    return paths


def accuracy(trainer, photos, labels, steps) -> float:
    """The share of photos recognised; a photo the steps cannot read counts as a miss."""
    images, read = [], []
    for path in photos:
        try:
            images.append(load_image(path, steps))
            read.append(True)
        except ImageError:
            read.append(False)
    guesses = np.full(len(photos), -1)
    if images:
        guesses[np.array(read)] = predict(trainer.model, np.stack(images)).argmax(axis=1)
    return float((guesses == labels).mean())


def top_left(x):
    """A broken step: the digit pasted into the corner of the 28×28 field."""
    field = np.zeros((28, 28))
    field[:x.shape[0], :x.shape[1]] = x
    return field


def test_rendered_digits_are_recognised_and_broken_preprocessing_is_not(trained, photos, mnist):
    labels = mnist.test.labels[:N]
    assert accuracy(trained, photos, labels, MNIST_STEPS) >= 0.95
    no_inversion = tuple(s for s in MNIST_STEPS if s is not bright_ink)
    no_centring = tuple(top_left if s is center_by_mass else s for s in MNIST_STEPS)
    assert accuracy(trained, photos, labels, no_inversion) < 0.5
    assert accuracy(trained, photos, labels, no_centring) < 0.5


def test_predict_gives_probabilities_that_agree_with_the_trainer(trained, mnist):
    x = mnist.test.images[:50]
    p = predict(trained.model, x)
    assert p.shape == (50, 10) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(p.argmax(axis=1), trained.predict(x))


def test_preprocessing_of_an_mnist_digit_keeps_it_an_mnist_digit(mnist):
    digit = mnist.test.images[3, :, :, 0]
    x = preprocess(digit)
    assert x.shape == (28, 28) and x.min() >= 0 and x.max() == 1
    rows, cols = np.nonzero(x > 0.25)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 <= 21  # fits the 20-pixel box
    mass = np.array([np.arange(28) @ x.sum(axis=1), np.arange(28) @ x.sum(axis=0)]) / x.sum()
    np.testing.assert_allclose(mass, 13.5, atol=0.75)


def test_transparent_background_counts_as_paper(tmp_path, mnist):
    ink = (mnist.test.images[0, :, :, 0] * 255).astype(np.uint8)
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = ink  # black ink, alpha = ink: a drawing on a transparent canvas
    Image.fromarray(rgba, "RGBA").save(tmp_path / "drawn.png")
    x = load_image(tmp_path / "drawn.png")
    assert x.max() == 1 and (x > 0.25).sum() > 50


@pytest.mark.parametrize("value", [0, 128, 255])
def test_an_image_without_ink_is_refused(tmp_path, value):
    Image.new("L", (40, 60), value).save(tmp_path / "blank.png")
    with pytest.raises(ImageError, match="blank.png: no ink: the image is uniform"):
        load_image(tmp_path / "blank.png")



def test_the_predict_command_on_image_files_and_test_indices(tmp_path, photos, run_dir):
    from commandline import scratchnet

    result = scratchnet("predict", run_dir, photos[1], photos[2], "--test-index", 7, "--show", tmp_path / "fig.png")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"{photos[1]}: predicted " in out and "test image 7: predicted 9, true 9 (right); top 3: 9: " in out
    art = out.split("test image 7")[1].splitlines()[1:29]
    assert len(art) == 28 and all(len(line) == 56 for line in art) and any("█" in line for line in art)
    with Image.open(tmp_path / "fig.png") as figure:
        assert figure.size[0] >= 600 and figure.size[1] >= 3 * 200
