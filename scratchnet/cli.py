"""The ``scratchnet`` command: ``data``, ``train``, ``eval``, ``report`` and ``parity``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from tfnet.parity import add_arguments as add_parity_arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scratchnet", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder with the MNIST IDX files (default: $SCRATCHNET_DATA_DIR, "
                             "then the bundled copy, then a download into the cache)")
    parser.add_argument("--backend", choices=["fast", "reference"], default=None,
                        help="scratchnet's kernels: the fast ones (default) or the plain NumPy "
                             "reference (default: $SCRATCHNET_BACKEND, then fast)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("data", help="show the MNIST splits, class counts and checksum status")

    from .recipes import RECIPES
    train = sub.add_parser("train", help="train a tutorial recipe and print its test accuracy")
    train.add_argument("recipe", choices=list(RECIPES), metavar="RECIPE",
                       help="one of: " + ", ".join(RECIPES))
    train.add_argument("--engine", choices=["scratchnet", "tf"], default="scratchnet")
    train.add_argument("--steps", type=int, help="training steps (default: the recipe's)")
    train.add_argument("--batch-size", type=int, help="batch size (default: the recipe's)")
    train.add_argument("--seed", type=int, default=1, help="initialisation, data order and dropout (default 1)")
    train.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    train.add_argument("--out", type=Path, help="output folder (default: runs/RECIPE-ENGINE-seedN)")
    train.add_argument("--resume", type=Path, help="continue from this checkpoint.npz")
    ema = train.add_mutually_exclusive_group()
    ema.add_argument("--ema", dest="eval_with_ema", action="store_true", default=None,
                     help="evaluate with the moving-average weights (recipes with a moving average)")
    ema.add_argument("--no-ema", dest="eval_with_ema", action="store_false",
                     help="evaluate with the raw weights")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    ev = sub.add_parser("eval", help="test accuracy of a saved checkpoint")
    ev.add_argument("checkpoint", type=Path)

    report = sub.add_parser("report", help="the results table (markdown) of the finished runs in a folder")
    report.add_argument("runs", type=Path, nargs="?", default=Path("runs"))

    parity = sub.add_parser("parity", help="compare scratchnet with TensorFlow, tensor by tensor")
    add_parity_arguments(parity)

    args = parser.parse_args(argv)
    if args.data_dir is not None:
        os.environ["SCRATCHNET_DATA_DIR"] = str(args.data_dir)
    if args.backend is not None:
        from . import backend
        backend.set_backend(args.backend)
    commands = {"data": _data, "train": _train, "eval": _eval, "report": _report, "parity": _parity}
    return commands[args.command](args)


def _data(args) -> int:
    from .data import summary_text
    print(summary_text(args.data_dir))
    return 0


def _train(args) -> int:
    from .data import load_mnist
    from .recipes import get_recipe
    from .train import Trainer, run

    recipe = get_recipe(args.recipe).with_overrides(steps=args.steps, batch_size=args.batch_size,
                                                    eval_with_ema=args.eval_with_ema)
    if recipe.eval_with_ema and not recipe.ema_decay:
        print(f"recipe {recipe.name} keeps no moving average; --ema ignored", file=sys.stderr)
        recipe = recipe.with_overrides(eval_with_ema=False)
    dtype = np.dtype(args.dtype)
    if args.engine == "tf":
        from tfnet.train import TFTrainer
        trainer = TFTrainer(recipe, seed=args.seed, dtype=dtype)
    else:
        trainer = Trainer(recipe, seed=args.seed, dtype=dtype)
    out = args.out or Path("runs") / f"{recipe.name}-{args.engine}-seed{args.seed}"
    result = run(trainer, load_mnist(args.data_dir), out_dir=out, seed=args.seed, resume=args.resume,
                 progress=not args.no_progress)
    print(f"wrote {out}/ (checkpoint.npz, metrics.jsonl, config.json); "
          f"{result['steps']} steps in {result['train_seconds']} s")
    return 0


def _eval(args) -> int:
    from .checkpoint import load_checkpoint
    from .data import load_mnist
    from .recipes import get_recipe
    from .train import Trainer

    arrays, meta = load_checkpoint(args.checkpoint)
    recipe = get_recipe(meta["recipe"]["name"]).with_overrides(eval_with_ema=meta["recipe"]["eval_with_ema"])
    trainer = Trainer(recipe, dtype=np.dtype(meta["dtype"]))
    trainer.load_state({k: v for k, v in arrays.items() if not k.startswith("data/")})
    test = load_mnist(args.data_dir).test
    acc = trainer.accuracy(test.images, test.labels, use_ema=recipe.eval_with_ema)
    print(f"{args.checkpoint}: recipe {recipe.name}, step {trainer.step}"
          f"{', moving-average weights' if recipe.eval_with_ema else ''}")
    print(f"test accuracy: {acc:.4f}")
    return 0


def _report(args) -> int:
    from .report import markdown
    print(markdown(args.runs))
    return 0


def _parity(args) -> int:
    from tfnet.parity import run as run_parity
    return run_parity(args)


if __name__ == "__main__":
    sys.exit(main())
