"""``scratchnet parity``: its options, the sections run in order, the summary."""

from __future__ import annotations

import argparse

import numpy as np

from .ema import run_ema
from .layers import run_layers
from .metrics import SECTIONS, Case
from .models import run_models
from .optim import run_optim
from .schedules import run_schedules
from .trajectories import run_trajectories


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``scratchnet parity`` (the CLI calls this to build its parser)."""
    parser.add_argument("--dtype", choices=["float64", "float32", "both"], default="float64",
                        help="precision of both engines (default float64)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), metavar="SECTION",
                        help="what to compare: " + ", ".join(SECTIONS) + " (default: all)")
    parser.add_argument("--full", action="store_true",
                        help="the full layer grid (bigger shapes, T=28 LSTMs) instead of the quick one")
    parser.add_argument("--steps", type=int, default=100, help="trajectory steps per recipe (default 100)")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="trajectory batch size (default 16; 0 = each recipe's own)")
    parser.add_argument("--recipes", nargs="+", metavar="RECIPE", help="only these recipes (models, trajectories)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quiet", action="store_true", help="print only failing tables and the summary")
    parser.add_argument("--keras", metavar="MODEL", help="instead of the sections: this Keras model (.keras, .h5) "
                        "against its scratchnet import (tfnet.keras_parity)")
    parser.add_argument("--input", metavar="X.npy", help="with --keras: this batch instead of MNIST images")


def run_sections(dtype, sections, *, full=False, steps=100, batch_size=16, recipes=None, seed=1,
                 report=print, quiet=False) -> list[Case]:
    """Run the sections in one dtype; ``report`` receives each case's table as it finishes."""
    runners = {
        "layers": lambda: run_layers(dtype, full=full, seed=seed),
        "models": lambda: run_models(dtype, recipes=recipes, seed=seed),
        "optim": lambda: run_optim(dtype, seed=seed),
        "schedules": lambda: run_schedules(dtype),
        "ema": lambda: run_ema(dtype, seed=seed),
        "trajectories": lambda: run_trajectories(dtype, recipes=recipes, steps=steps,
                                                 batch_size=batch_size or None, seed=seed),
    }
    cases = []
    for section in sections:
        for case in runners[section]():
            cases.append(case)
            if not quiet or not case.ok:
                report(case.table() + "\n")
    return cases


def summary(cases: list[Case]) -> str:
    lines = ["== summary (worst error/tolerance: the closest any tensor came to failing; a row fails above 1)",
             f"   {'section':<13} {'dtype':<8} {'cases':>5} {'failed':>6} {'max error':>10} {'tolerance':>10} "
             f"{'worst error/tolerance':>22}"]
    groups: dict = {}
    for c in cases:
        groups.setdefault((c.section, c.dtype), []).append(c)
    for (section, dtype), cs in groups.items():
        rows = [r for c in cs for r in c.rows]
        own = any(r.tol != cs[0].tol for r in rows)  # float32 trajectories: a bound per tensor
        worst = max((r.error / r.tol for r in rows), default=0.0)
        lines.append(f"   {section:<13} {dtype:<8} {len(cs):>5} {sum(not c.ok for c in cs):>6} "
                     f"{max(c.max_error for c in cs):10.2e} {'per tensor' if own else f'{cs[0].tol:.0e}':>10} "
                     f"{worst:22.3g}")
    failed = [c for c in cases if not c.ok]
    for c in failed:
        lines.append(f"   FAIL {c.section} [{c.dtype}] {c.name}: first divergence at {c.first_failure}")
    lines.append("   all passed" if not failed else f"   {len(failed)} case(s) FAILED")
    return "\n".join(lines)


def run(args) -> int:
    """``scratchnet parity``: run, print the tables and the summary; 0 if everything passed."""
    if args.keras:
        from ..keras_parity import run as run_keras
        return run_keras(args)
    dtypes = ["float64", "float32"] if args.dtype == "both" else [args.dtype]
    from scratchnet import backend
    print(f"scratchnet ({backend.get_backend()} backend) vs TensorFlow (oracle).\n"
          "float64: judged on the max relative error (floor 1e-4 of each tensor's scale); TF receives "
          "every hyperparameter as a float64 tensor.\n"
          "float32: judged on the scaled error max|a-b|/max|b| (trajectories: the norm error "
          "||a-b||/||b||); TF receives Python floats, as the tutorials wrote them.")
    if backend.get_backend() == "fast":
        from scratchnet.kernels.tuning import describe
        print(describe() + " (per layer: the models tables' notes)")
    print()
    cases = []
    for dtype in dtypes:
        cases += run_sections(np.dtype(dtype), args.sections, full=args.full, steps=args.steps,
                              batch_size=args.batch_size, recipes=args.recipes, seed=args.seed,
                              quiet=args.quiet)
    print(summary(cases))
    return 0 if all(c.ok for c in cases) else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tfnet.parity", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
