"""``scratchnet predict``: the digit a checkpoint sees in test images or in image files,
its top-3 probabilities, the 28×28 input drawn in the terminal, and optionally a figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHADES = " ░▒▓█"  # 0 … 1, two characters per pixel (a terminal cell is about twice as tall as wide)


def terminal_image(x: np.ndarray) -> str:
    """A [28, 28] image in [0, 1] as 28 lines of Unicode block shades."""
    levels = np.clip((x * len(SHADES)).astype(int), 0, len(SHADES) - 1)
    return "\n".join("".join(SHADES[v] * 2 for v in row) for row in levels)


def top3(p: np.ndarray) -> str:
    order = np.argsort(-p, kind="stable")[:3]
    return "   ".join(f"{k}: {p[k]:.4f}" for k in order)


def figure(path: Path, inputs: list[tuple[str, np.ndarray, int | None]], probabilities: np.ndarray) -> None:
    """One row per input: the image as the network sees it, and the ten probabilities
    (the prediction in blue, a wrong prediction in red, the true digit outlined)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(inputs), 2, figsize=(7, 2.2 * len(inputs)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 2.2]})
    for (title, image, label), p, (left, right) in zip(inputs, probabilities, axes):
        guess = int(p.argmax())
        left.imshow(image, cmap="gray", vmin=0, vmax=1)
        left.set_title(title, fontsize=9)
        left.set_xticks([])
        left.set_yticks([])
        colours = ["#bbbbbb"] * 10
        colours[guess] = "tab:blue" if label in (None, guess) else "tab:red"
        bars = right.bar(range(10), p, color=colours)
        if label is not None:
            bars[label].set_edgecolor("black")
            bars[label].set_linewidth(1.5)
        right.set_xticks(range(10))
        right.set_ylim(0, 1.05)
        right.set_ylabel("probability")
        right.set_title(f"predicted {guess} ({p[guess]:.3f})" + (f", true {label}" if label is not None else ""),
                        fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def predict_command(args) -> int:
    from ..data import load_mnist
    from ..inference import load_image
    from ..ops import softmax
    from .evaluate import restore
    from .train import checkpoint_path

    path = checkpoint_path(args.checkpoint)
    trainer = restore(path)
    inputs = [(str(p), load_image(p), None) for p in args.images]
    if args.test_index:
        test = load_mnist(args.data_dir).test
        inputs += [(f"test image {i}", test.images[i, :, :, 0], int(test.labels[i])) for i in args.test_index]
    images = np.stack([x for _, x, _ in inputs])[..., None]  # [N, 28, 28, 1]
    probabilities = softmax(trainer.logits(images, use_ema=trainer.recipe.eval_with_ema))
    print(f"{path}: recipe {trainer.recipe.name}, step {trainer.step}"
          f"{', moving-average weights' if trainer.recipe.eval_with_ema else ''}\n")
    for (title, image, label), p in zip(inputs, probabilities):
        truth = f", true {label}" + (" (right)" if p.argmax() == label else " (WRONG)") if label is not None else ""
        print(f"{title}: predicted {p.argmax()}{truth}; top 3: {top3(p)}")
        print(terminal_image(image) + "\n")
    if args.show is not None:
        figure(args.show, inputs, probabilities)
        print(f"wrote {args.show}")
    return 0

