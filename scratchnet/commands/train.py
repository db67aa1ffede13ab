"""``scratchnet train``: resolve the recipe, its overrides and a resume, run, report.

A resume continues the same run: recipe, engine, dtype, seed and overrides come from the
checkpoint (options that contradict it are refused), only ``--steps`` may grow.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import numpy as np

from ..errors import TrainingInterrupted, UsageError
from ..report import run_name


def checkpoint_path(path: Path) -> Path:
    """``path`` itself, or ``path/checkpoint.npz`` when it is a run folder."""
    return path / "checkpoint.npz" if path.is_dir() else path


def given_overrides(args) -> dict:
    """The experiment overrides on the command line (``recipes.OVERRIDES``), as config.json records them."""
    from ..recipes import OVERRIDES

    return {k: getattr(args, k) for k in OVERRIDES if getattr(args, k) is not None}


def resolve_resume(args, meta: dict) -> dict:
    """The run options of a resume: the checkpoint's, with ``--steps`` allowed to change and
    any other option that contradicts the checkpoint refused (``UsageError``)."""
    from ..checkpoint import CheckpointError
    from ..train import resume_problem

    if not isinstance(meta.get("seed"), int) or not isinstance(meta.get("overrides", {}), dict):
        raise CheckpointError(f"{args.resume}: not the checkpoint of a training run (no seed or overrides in its meta)")
    saved = meta.get("overrides", {})
    engine, dtype = args.engine or meta.get("engine"), args.dtype or meta.get("dtype")
    problem = resume_problem(meta, args.recipe, engine, dtype)
    if problem:
        raise UsageError(f"--resume {args.resume}: {problem}")
    if args.seed is not None and args.seed != meta.get("seed"):
        raise UsageError(f"--resume {args.resume}: the checkpoint's run has seed {meta.get('seed')}, not {args.seed}")
    for key, value in given_overrides(args).items():
        if key != "steps" and value != saved.get(key):
            option = "--" + key.replace("_", "-")
            raise UsageError(f"--resume {args.resume}: {option} {value} differs from the run's "
                             f"({saved.get(key, 'the recipe default')}); a resume continues the same run")
    overrides = {**saved, **({"steps": args.steps} if args.steps is not None else {})}
    return {"engine": engine, "dtype": dtype, "seed": meta["seed"], "overrides": overrides}


def resume_command(args, out: Path) -> str:
    """The command line that continues this run from its checkpoint."""
    words = ["scratchnet"]
    if args.data_dir is not None:
        words += ["--data-dir", str(args.data_dir)]
    if args.backend is not None:
        words += ["--backend", args.backend]
    words += ["train", args.recipe, "--resume", str(out)]
    if args.steps is not None:
        words += ["--steps", str(args.steps)]
    words += [flag for flag, on in (("--no-progress", args.no_progress), ("--no-nan-check", args.no_nan_check),
                                    ("--dashboard", args.dashboard)) if on]
    if tuple(args.log_every) != (20, 100):
        words += ["--log-every", *map(str, args.log_every)]
    if args.tensorboard is not None:
        words += ["--tensorboard", str(args.tensorboard)]
    return shlex.join(words)


def observers(args) -> list:
    """The watchers of the run that ``--dashboard`` and ``--tensorboard`` ask for."""
    watching = []
    if args.dashboard:
        from ..dashboard import DashboardLogger, LiveRenderer
        watching += [DashboardLogger(*args.log_every), LiveRenderer()]
    if args.tensorboard is not None:
        from ..tensorboard import TensorBoardWriter
        watching.append(TensorBoardWriter(args.tensorboard, *args.log_every))
    return watching


def train(args) -> int:
    from ..checkpoint import read_meta
    from ..data import load_mnist
    from ..recipes import get_recipe, overridden
    from ..train import Trainer, run

    resume = checkpoint_path(args.resume) if args.resume is not None else None
    if resume is not None:
        meta = read_meta(resume)
        options = resolve_resume(args, meta)
    else:
        options = {"engine": args.engine or "scratchnet", "dtype": args.dtype or "float32",
                   "seed": 1 if args.seed is None else args.seed, "overrides": given_overrides(args)}
    try:
        recipe = overridden(get_recipe(args.recipe), **options["overrides"])
    except ValueError as e:
        raise UsageError(f"--keep-prob: {e}") from None
    if recipe.eval_with_ema and not recipe.ema_decay:
        raise UsageError(f"--ema: recipe {recipe.name} keeps no moving average")
    if resume is not None:
        step = meta.get("step", 0)
        if recipe.steps <= step:
            raise UsageError(f"--steps {recipe.steps}: the checkpoint {resume} is already at step {step}")
    dtype, seed = np.dtype(options["dtype"]), options["seed"]
    out = args.out or (resume.parent if resume else Path("runs") / run_name(recipe.name, options["engine"], seed))
    mnist = load_mnist(args.data_dir)
    if options["engine"] == "tf":
        from tfnet.train import TFTrainer
        trainer = TFTrainer(recipe, seed=seed, dtype=dtype)
    else:
        trainer = Trainer(recipe, seed=seed, dtype=dtype)
    try:
        result = run(trainer, mnist, out_dir=out, seed=seed, resume=resume, progress=not args.no_progress,
                     nan_check=not args.no_nan_check, overrides=options["overrides"], observers=observers(args))
    except TrainingInterrupted as stop:
        print(f"scratchnet: {stop}. Resume with: {resume_command(args, out)}", file=sys.stderr)
        return 128 + stop.signum
    print(f"wrote {out}/ (checkpoint.npz, metrics.jsonl, config.json{', dashboard.png' if args.dashboard else ''}); "
          f"{result['steps']} steps in {result['train_seconds']} s")
    return 0
