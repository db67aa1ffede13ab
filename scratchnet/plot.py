"""Runs side by side: test accuracy, loss and learning rate against step, one line per run,
labelled ``recipe engine seed N``.

Accuracy is the dashboard log's test line where the run has one (``--dashboard``: the first
1,000 test images every 100 steps), else ``metrics.jsonl``'s test passes (``test-tracked`` and
final ``test``), else its validation passes; the legend says which. Loss needs a dashboard log (training batches,
faint, and the test line). The learning rate is the run's schedule (``config.json``) itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .errors import ScratchnetError


def label(config: dict) -> str:
    return f"{config['recipe']['name']} {config['engine']} seed {config['seed']}"


def curves(run_dir: Path) -> dict:
    """``{"label", "accuracy": (steps, values, what), "train_loss", "test_loss", "lr"}`` of a run;
    a curve the run did not log is None."""
    from .dashboard.log import FOLDER
    from .optim.schedules import from_config

    run_dir = Path(run_dir)
    try:
        config = json.loads((run_dir / "config.json").read_text())
        metrics = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
        schedule = from_config(config["recipe"]["learning_rate"])
    except (ValueError, KeyError, TypeError) as e:
        raise ScratchnetError(f"{run_dir}: config.json or metrics.jsonl unreadable ({type(e).__name__}: {e})") from None
    out = {"label": label(config), "train_loss": None, "test_loss": None, "accuracy": None}
    if (run_dir / FOLDER / "log.jsonl").is_file():
        from .dashboard.log import read_log
        log = read_log(run_dir)
        if log.test:
            out["accuracy"] = ([r["step"] for r in log.test], [r["accuracy"] for r in log.test],
                               f"{len(log.test_labels):,} test images")
            out["test_loss"] = ([r["step"] for r in log.test], [r["loss"] for r in log.test])
        if log.train:
            out["train_loss"] = ([r["step"] for r in log.train], [r["loss"] for r in log.train])
    if out["accuracy"] is None:
        for splits, what in ((("test-tracked", "test"), "10,000 test images"), (("validation",), "validation")):
            lines = [l for l in metrics if l["split"] in splits]
            if lines:
                out["accuracy"] = ([l["step"] for l in lines], [l["accuracy"] for l in lines], what)
                break
    last = max([l["step"] for l in metrics] or [config["recipe"]["steps"]])
    steps = np.linspace(0, last, 200).astype(int)
    out["lr"] = (steps, [float(schedule(int(s))) for s in steps])
    return out


def plot(run_dirs: list[Path], out: Path) -> Path:
    """Overlay the curves of ``run_dirs`` in three panels into ``out`` (written atomically)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.8), dpi=90)
    acc, loss, lr = fig.subplots(1, 3)
    drew_loss = False
    runs = [curves(run_dir) for run_dir in run_dirs]
    labels = [c["label"] for c in runs]
    for run_dir, c in zip(run_dirs, runs):  # the same recipe, engine and seed twice: name the folders
        if labels.count(c["label"]) > 1:
            c["label"] += f" ({Path(run_dir).name})"
    for i, c in enumerate(runs):
        color = f"C{i % 10}"
        if c["accuracy"]:
            steps, values, what = c["accuracy"]
            acc.plot(steps, values, color=color, lw=1.2, label=f"{c['label']}: {what}")
        if c["train_loss"]:
            loss.plot(*c["train_loss"], color=color, lw=0.6, alpha=0.35)
        if c["test_loss"]:
            loss.plot(*c["test_loss"], color=color, lw=1.2, label=c["label"])
            drew_loss = True
        lr.plot(*c["lr"], color=color, lw=1.2, label=c["label"])
    values = [v for line in acc.get_lines() for v in line.get_ydata()[len(line.get_ydata()) // 10:]]
    if values:
        lo = float(np.quantile(values, 0.02))
        acc.set_ylim(max(0.0, lo - (1 - lo) * 0.1), 1.0)
    acc.set_title("Test accuracy")
    loss.set_title("Loss (test; training batches faint)" if drew_loss else "Loss: no dashboard log in these runs")
    if drew_loss:
        top = max(np.quantile(line.get_ydata(), 0.9) for line in loss.get_lines())
        loss.set_ylim(0, top * 1.2)
    lr.set_title("Learning rate")
    lr.set_yscale("log")
    for ax in (acc, loss, lr):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    fig.savefig(tmp)
    os.replace(tmp, out)
    return out
