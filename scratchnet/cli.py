"""The ``scratchnet`` command: ``data``, ``train``, ``sweep``, ``eval``, ``predict``, ``report``,
``parity``, ``dashboard``, ``plot`` and ``tune``.

Errors, for every command: ``scratchnet: error: <message>`` on stderr, no traceback
(``--debug`` or ``SCRATCHNET_DEBUG=1`` shows it). Usage errors (a bad option, found before
any work starts) exit 2, as argparse's own do; runtime errors (a bad file, a diverged run)
exit 1; a training run stopped by SIGINT or SIGTERM exits 128 + the signal's number.
This module only parses and validates; ``scratchnet.commands`` does the work.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path

from tfnet.parity import add_arguments as add_parity_arguments

from .errors import ScratchnetError, UsageError

MAX_SEED = 2**31 - 1


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """The options that change how a recipe trains: ``recipes.OVERRIDES`` and the dtype."""
    from .recipes import INITS, OPTIMIZER_DEFAULTS
    parser.add_argument("--steps", type=int, help="training steps (default: the recipe's)")
    parser.add_argument("--batch-size", type=int, help="batch size (default: the recipe's)")
    parser.add_argument("--lr", type=float, help="a constant learning rate instead of the recipe's schedule")
    parser.add_argument("--optimizer", choices=list(OPTIMIZER_DEFAULTS),
                        help="this optimizer with TF1's defaults (momentum: 0.9) instead of the recipe's")
    parser.add_argument("--keep-prob", type=float, help="the keep probability of every dropout layer")
    parser.add_argument("--init", choices=list(INITS),
                        help="every weight and bias from truncated_normal(0.1)/0.1 or Glorot-uniform")
    parser.add_argument("--dtype", choices=["float32", "float64"], default=None,
                        help="float32 (default) or float64 (a resume: the checkpoint's)")
    ema = parser.add_mutually_exclusive_group()
    ema.add_argument("--ema", dest="eval_with_ema", action="store_true", default=None,
                     help="evaluate with the moving-average weights (recipes with a moving average)")
    ema.add_argument("--no-ema", dest="eval_with_ema", action="store_false",
                     help="evaluate with the raw weights")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scratchnet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder with the MNIST IDX files (default: $SCRATCHNET_DATA_DIR, "
                             "then the bundled copy, then a download into the cache)")
    parser.add_argument("--backend", choices=["fast", "reference"], default=None,
                        help="scratchnet's kernels: the fast ones (default) or the plain NumPy "
                             "reference (default: $SCRATCHNET_BACKEND, then fast)")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (also: SCRATCHNET_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("data", help="show the MNIST splits, class counts and checksum status")

    from .recipes import RECIPES
    train = sub.add_parser("train", help="train a tutorial recipe and print its test accuracy")
    train.add_argument("recipe", choices=list(RECIPES), metavar="RECIPE",
                       help="one of: " + ", ".join(RECIPES))
    train.add_argument("--engine", choices=["scratchnet", "tf"], default=None,
                       help="scratchnet (default) or tf (a resume: the checkpoint's)")
    add_training_options(train)
    train.add_argument("--seed", type=int, default=None,
                       help="initialisation, data order and dropout (default 1; a resume: the checkpoint's)")
    train.add_argument("--out", type=Path, help="output folder (default: runs/RECIPE-ENGINE-seedN; "
                                                "a resume: the checkpoint's folder)")
    train.add_argument("--resume", type=Path, metavar="RUN",
                       help="continue the run of this checkpoint.npz or run folder")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--no-nan-check", action="store_true",
                       help="train on through a non-finite loss or parameter (default: stop there)")
    train.add_argument("--dashboard", action="store_true",
                       help="log Görner's dashboard and keep RUN/dashboard.png current while training")
    train.add_argument("--log-every", type=int, nargs=2, metavar=("TRAIN", "TEST"), default=(20, 100),
                       help="steps between the training points (loss, accuracy, percentiles) and between the test "
                            "passes (1,000 images, weight histograms) of --dashboard and --tensorboard (default 20 100)")
    train.add_argument("--tensorboard", type=Path, metavar="DIR",
                       help="also write TensorBoard logs (scalars, weight histograms) into DIR")

    dash = sub.add_parser("dashboard", help="draw a run's dashboard; serve it live, or make a movie of it")
    dash.add_argument("run", type=Path, metavar="RUN_DIR", help="a run folder trained with --dashboard")
    dash.add_argument("--out", type=Path, help="the image to write (default: RUN_DIR/dashboard.png)")
    show = dash.add_mutually_exclusive_group()
    show.add_argument("--serve", type=int, nargs="?", const=8000, metavar="PORT",
                      help="serve a page on http://127.0.0.1:PORT (default 8000) that follows the run")
    show.add_argument("--movie", type=Path, metavar="FILE",
                      help="the whole run as an animation, FILE.mp4 (ffmpeg from imageio-ffmpeg) or FILE.gif")
    dash.add_argument("--fps", type=int, default=10, help="movie frames per second (default 10)")

    plot = sub.add_parser("plot", help="overlay the accuracy, loss and learning-rate curves of runs")
    plot.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR")
    plot.add_argument("--out", type=Path, default=Path("runs.png"), help="the image (default runs.png)")

    ev = sub.add_parser("eval", help="test accuracy of a saved checkpoint")
    ev.add_argument("checkpoint", type=Path, help="a checkpoint.npz or a run folder")

    predict = sub.add_parser("predict", help="the digit a checkpoint sees in test images or image files")
    predict.add_argument("checkpoint", type=Path, help="a checkpoint.npz or a run folder (either engine)")
    predict.add_argument("images", type=Path, nargs="*", metavar="IMAGE",
                         help="image files (PNG, JPEG, …), preprocessed as MNIST was")
    predict.add_argument("--test-index", type=int, nargs="+", default=[], metavar="N",
                         help="MNIST test images by index (0-9999); their true labels are shown")
    predict.add_argument("--show", type=Path, metavar="FILE.png",
                         help="write a figure: each input beside its ten probabilities")

    report = sub.add_parser("report", help="the results table (markdown) of the finished runs in a folder")
    report.add_argument("runs", type=Path, nargs="?", default=Path("runs"))

    sweep = sub.add_parser("sweep", help="train recipes × seeds × engines on a Dask cluster, then the results table")
    sweep.add_argument("recipes", nargs="*", metavar="RECIPE", help="recipes, or all (" + ", ".join(RECIPES) + ")")
    sweep.add_argument("--seeds", type=int, nargs="+", default=[1], metavar="S", help="seeds (default 1)")
    sweep.add_argument("--engines", nargs="+", choices=["scratchnet", "tf"], default=["scratchnet", "tf"],
                       metavar="ENGINE", help="scratchnet and/or tf (default both)")
    add_training_options(sweep)
    sweep.add_argument("--out", type=Path, default=Path("runs"),
                       help="the folder of the run folders RECIPE-ENGINE-seedN (default runs)")
    sweep.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                       help="an existing Dask scheduler whose workers share --out (default: a cluster on this "
                            "machine, one single-threaded worker per core)")
    sweep.add_argument("--bench", action="store_true",
                       help="also run python -m bench.report once per CPU into OUT/bench/<cpu slug>/")
    sweep.add_argument("--bench-quick", action="store_true",
                       help="with --bench: bench.report --quick, its one-round pipeline check")
    sweep.add_argument("--bench-select", metavar="EXPR",
                       help="only the benchmarks of this pytest -k expression (bench.report -k), e.g. sgemm")

    parity = sub.add_parser("parity", help="compare scratchnet with TensorFlow, tensor by tensor")
    add_parity_arguments(parity)

    tune = sub.add_parser("tune", help="time the convolution algorithms (and large dense products) of recipes on "
                                       "this machine; cache and print the fastest per layer, and compile each "
                                       "recipe's kernels into the Numba cache")
    tune.add_argument("recipes", nargs="*", metavar="RECIPE",
                      help="recipes to tune, or all (default: every recipe with a convolution or a large dense layer)")
    tune.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="default float32")
    tune.add_argument("--force", action="store_true", help="measure again the shapes already in the cache")
    tune.add_argument("--repeats", type=int, default=5, help="timed rounds per candidate (default 5; ranked by the fastest)")
    tune.add_argument("--batch-size", type=int, help="the training batch (default: each recipe's)")
    tune.add_argument("--eval-batch", type=int, nargs="+", metavar="N",
                      help="inference batches, forward only (default 1000 1: an evaluation's and a prediction's; "
                           "0: none)")
    return parser


def _in_range(option: str, value, low, high=None) -> None:
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value) or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise UsageError(f"{option} must be {bound}, got {value}")


def _validate_sweep(args) -> None:
    from .recipes import RECIPES
    if not args.recipes and not args.bench:
        raise UsageError("sweep: give at least one RECIPE (or all), or --bench")
    unknown = [r for r in args.recipes if r not in RECIPES and r != "all"]
    if unknown:
        raise UsageError(f"sweep: unknown recipe {unknown[0]!r}; choose from all, {', '.join(RECIPES)}")
    for seed in args.seeds:
        _in_range("--seeds", seed, 0, MAX_SEED)
    for option, values in (("--seeds", args.seeds), ("--engines", args.engines), ("RECIPE", args.recipes)):
        twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if twice is not None:
            raise UsageError(f"{option}: {twice} is given twice")
    if (args.bench_select is not None or args.bench_quick) and not args.bench:
        raise UsageError(f"{'--bench-select' if args.bench_select is not None else '--bench-quick'} goes with --bench")
    if args.scheduler is not None and not re.fullmatch(r"(tcp|tls)://[^/:\s]+:\d{1,5}", args.scheduler):
        raise UsageError(f"--scheduler {args.scheduler}: not a Dask scheduler address (tcp://HOST:PORT)")


def validate(args) -> None:
    """Refuse options that cannot work, before any work starts (``UsageError``)."""
    from .data import TEST_SIZE, TRAIN_SIZE

    if args.data_dir is not None and not args.data_dir.is_dir():
        raise UsageError(f"--data-dir {args.data_dir}: no such folder")
    if args.command in ("train", "sweep"):
        _in_range("--steps", args.steps, 1)
        _in_range("--batch-size", args.batch_size, 1, TRAIN_SIZE)
        if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
            raise UsageError(f"--lr must be a positive number, got {args.lr}")
        if args.keep_prob is not None and not 0 < args.keep_prob <= 1:
            raise UsageError(f"--keep-prob must be in (0, 1], got {args.keep_prob}")
        if args.out is not None and args.out.exists() and not args.out.is_dir():
            raise UsageError(f"--out {args.out}: a file, not a folder")
    if args.command == "sweep":
        _validate_sweep(args)
    if args.command == "train":
        _in_range("--seed", args.seed, 0, MAX_SEED)
        if args.resume is not None and not (args.resume.is_file() or (args.resume / "checkpoint.npz").is_file()):
            raise UsageError(f"--resume {args.resume}: no checkpoint there (a checkpoint.npz or a run folder)")
        for option, value in zip(("TRAIN", "TEST"), args.log_every):
            _in_range(f"--log-every {option}", value, 1)
        if args.tensorboard is not None and args.tensorboard.exists() and not args.tensorboard.is_dir():
            raise UsageError(f"--tensorboard {args.tensorboard}: a file, not a folder")
    if args.command == "predict":
        if not args.images and not args.test_index:
            raise UsageError("predict: give at least one IMAGE or --test-index N")
        for i in args.test_index:
            _in_range("--test-index", i, 0, TEST_SIZE - 1)
        if args.show is not None and args.show.suffix.lower() not in (".png", ".svg", ".pdf"):
            raise UsageError(f"--show {args.show}: the figure must be a .png, .svg or .pdf file")
    if args.command == "dashboard":
        if not (args.run / "dashboard" / "log.jsonl").is_file():
            raise UsageError(f"{args.run}: no dashboard log there (train with --dashboard)")
        if args.serve is not None:
            _in_range("--serve PORT", args.serve, 0, 65535)
        if args.movie is not None and args.movie.suffix.lower() not in (".mp4", ".gif"):
            raise UsageError(f"--movie {args.movie}: the name must end in .mp4 or .gif")
        _in_range("--fps", args.fps, 1, 60)
    if args.command == "plot":
        for run in args.runs:
            if not (run / "metrics.jsonl").is_file() or not (run / "config.json").is_file():
                raise UsageError(f"{run}: not a run folder (no config.json and metrics.jsonl)")
        if args.out.suffix.lower() not in (".png", ".svg", ".pdf"):
            raise UsageError(f"--out {args.out}: the name must end in .png, .svg or .pdf")
    if args.command == "parity":
        from .recipes import RECIPES
        _in_range("--steps", args.steps, 1)
        _in_range("--batch-size", args.batch_size, 0, TRAIN_SIZE)
        _in_range("--seed", args.seed, 0, MAX_SEED)
        unknown = [r for r in args.recipes or () if r not in RECIPES]
        if unknown:
            raise UsageError(f"--recipes: unknown recipe {unknown[0]!r}; choose from {', '.join(RECIPES)}")
        if args.input is not None and args.keras is None:
            raise UsageError("--input goes with --keras MODEL")
        if args.keras is not None:
            if args.recipes or args.full:
                raise UsageError(f"--{'recipes' if args.recipes else 'full'} does not apply to --keras MODEL")
            if Path(args.keras).suffix not in (".keras", ".h5"):
                raise UsageError(f"--keras {args.keras}: a .keras or .h5 file, please")
            for option, path in (("--keras", args.keras), ("--input", args.input)):
                if path is not None and not Path(path).is_file():
                    raise UsageError(f"{option} {path}: no such file")
    if args.command == "tune":
        from .recipes import RECIPES
        unknown = [r for r in args.recipes if r not in RECIPES and r != "all"]
        if unknown:
            raise UsageError(f"tune: unknown recipe {unknown[0]!r}; choose from all, {', '.join(RECIPES)}")
        _in_range("--repeats", args.repeats, 1)
        _in_range("--batch-size", args.batch_size, 1, TRAIN_SIZE)
        for n in args.eval_batch or ():
            _in_range("--eval-batch", n, 0, TEST_SIZE)


def _command(args):
    from .commands.dashboard import dashboard
    from .commands.evaluate import evaluate
    from .commands.plot import plot
    from .commands.predict import predict_command
    from .commands.sweep import sweep
    from .commands.train import train
    from .commands.tune import tune_command

    def data(args):
        from .data import summary_text
        print(summary_text(args.data_dir))
        return 0

    def report(args):
        from .report import markdown
        print(markdown(args.runs))
        return 0

    def parity(args):
        from tfnet.parity import run
        return run(args)

    return {"data": data, "train": train, "eval": evaluate, "predict": predict_command, "report": report,
            "parity": parity, "dashboard": dashboard, "plot": plot, "tune": tune_command,
            "sweep": sweep}[args.command]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("SCRATCHNET_DEBUG") == "1"
    try:
        validate(args)
        if args.data_dir is not None:
            os.environ["SCRATCHNET_DATA_DIR"] = str(args.data_dir)
        if args.backend is not None:
            from . import backend
            backend.set_backend(args.backend)
        return _command(args)(args)
    except UsageError as e:
        if debug:
            raise
        parser.error(str(e))  # usage, then "scratchnet: error: ...", exit 2
    except BrokenPipeError:  # `scratchnet ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ScratchnetError, OSError) as e:
        if debug:
            raise
        print(f"scratchnet: error: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        if debug:
            raise
        print("scratchnet: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still one line, and the way to see more
        if debug:
            raise
        print(f"scratchnet: error: unexpected {type(e).__name__}: {e} (--debug shows the traceback)",
              file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
