"""What ``train --dashboard`` costs a run: the same recipe and steps trained with and without
it, alternately, in one process (kernels compiled once, before the first timed run).

    .venv/bin/python -m bench.dashboard_cost [--recipe conv3] [--steps 1000] [--repeats 2]

Per run: the training wall time (``train_seconds``: the loop with its evaluations and
checkpoints), the process's CPU time, the time spent inside the dashboard logger's calls in
the loop (the direct cost) and the CPU time of the renderer process (niced, outside the
loop; it competes for cores only where none is idle). On a machine shared with other work
the wall times vary by more than the dashboard costs; the logger's own time does not.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path


class Timed:
    """An observer that forwards to ``inner`` and adds up the wall time of its calls."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0

    def __getattr__(self, name):
        method = getattr(self.inner, name)

        def timed(*args):
            began = time.perf_counter()
            try:
                return method(*args)
            finally:
                self.seconds += time.perf_counter() - began
        return timed


def main(argv=None) -> None:
    from scratchnet.dashboard import DashboardLogger, LiveRenderer
    from scratchnet.data import load_mnist
    from scratchnet.recipes import get_recipe
    from scratchnet.train import Trainer, run

    parser = argparse.ArgumentParser(prog="python -m bench.dashboard_cost")
    parser.add_argument("--recipe", default="conv3")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    recipe, mnist = get_recipe(args.recipe).with_overrides(steps=args.steps), load_mnist()
    folder = Path(tempfile.mkdtemp(prefix="dashboard-cost-"))
    run(Trainer(recipe.with_overrides(steps=2)), mnist, out_dir=folder / "warm-up", seed=1, progress=False,
        log=lambda *a: None)
    print(f"{args.recipe}, {args.steps} steps; runs in {folder}")
    print("| run | train s | process CPU s | logger s (in the loop) | renderer CPU s | renders |")
    print("|---|---|---|---|---|---|")
    for i in range(args.repeats):
        for dashboard in (False, True):
            logger = Timed(DashboardLogger())
            observers = [logger, LiveRenderer()] if dashboard else []
            out = folder / f"{'dashboard' if dashboard else 'plain'}{i + 1}"
            cpu = time.process_time()
            result = run(Trainer(recipe), mnist, out_dir=out, seed=1, progress=False, log=lambda *a: None,
                         observers=observers)
            cpu = time.process_time() - cpu
            renders, render_cpu = "-", "-"
            if dashboard:
                renders, render_cpu = re.match(r"(\d+) renders, ([\d.]+) s CPU",
                                               (out / "dashboard" / "render.log").read_text()).groups()
            print(f"| {out.name} | {result['train_seconds']} | {cpu:.1f} | "
                  f"{logger.seconds:.2f} | {render_cpu} | {renders} |", flush=True)


if __name__ == "__main__":
    main()
