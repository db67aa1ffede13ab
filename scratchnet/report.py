"""The results table: every finished run under a folder, grouped by recipe and engine.

A run is a folder written by ``scratchnet train`` (``config.json`` + ``metrics.jsonl``);
its test accuracy is the last ``"split": "test"`` line of its metrics. Runs that overrode
the recipe (``--optimizer``, ``--lr``, ``--keep-prob`` …, recorded in ``config.json``) get
a row of their own, labelled with those options. Beside it the table
gives the figure measured the way the tutorial measured it: the maximum test accuracy
seen during training for Görner's recipes (``max_tracked``), the first 128 test images for
the LSTM, and the final figure for the others.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from .errors import ScratchnetError
from .recipes import RECIPES

ENGINES = ("scratchnet", "tf")


def run_name(recipe: str, engine: str, seed: int) -> str:
    """The folder name of a run: ``mlp-scratchnet-seed1`` (``train``'s default ``--out`` under
    ``runs/``, and every run of a sweep under its ``--out``)."""
    return f"{recipe}-{engine}-seed{seed}"


def override_flags(overrides: dict) -> str:
    """The command-line options of a run's overrides: ``--optimizer sgd --lr 0.01``."""
    flags = []
    for key, value in overrides.items():
        if key == "eval_with_ema":
            flags.append("--ema" if value else "--no-ema")
        else:
            flags.append(f"--{key.replace('_', '-')} {value}")
    return " ".join(flags)


def collect(runs_dir: Path) -> dict[tuple[str, str, str], list[dict]]:
    """``{(recipe, override flags, engine): [{"seed", "test", "tutorial", "seconds", "steps"}, ...]}``
    (flags ``""`` for the recipe as it is), finished runs of at least the recipe's length only,
    in seed order."""
    table = defaultdict(list)
    for config_path in sorted(Path(runs_dir).glob("*/config.json")):
        config = json.loads(config_path.read_text())
        name = config["recipe"]["name"]
        lines = [json.loads(l) for l in (config_path.parent / "metrics.jsonl").read_text().splitlines() if l]
        tests = [l for l in lines if l["split"] == "test"]
        steps = config["recipe"].get("steps")
        if name not in RECIPES or not tests or tests[-1]["step"] != steps or steps < RECIPES[name].steps:
            continue  # unfinished, or a shortened trial run
        overrides = {k: v for k, v in config.get("overrides", {}).items()
                     if not (k == "steps" and v == RECIPES[name].steps)}
        last = tests[-1]
        key, _ = _tutorial_measure(name)
        tutorial = last.get(key) if key else last["accuracy"]
        table[name, override_flags(overrides), config["engine"]].append(
            {"seed": config["seed"], "test": last["accuracy"], "tutorial": tutorial,
             "seconds": last["time"], "steps": last["step"]})
    for runs in table.values():
        runs.sort(key=lambda r: r["seed"])
    return table


def _tutorial_measure(name: str) -> tuple[str | None, str]:
    """The test line's key holding the figure measured the tutorial's way, and its label;
    ``(None, "")`` where the tutorial reported the final figure."""
    if RECIPES[name].track_test_every:
        return "max_tracked", "max during training"
    if name == "lstm":
        return "first128", "first 128 test images"
    return None, ""


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _accuracies(runs, key) -> str:
    mean = _mean(r[key] for r in runs)
    if mean is None:
        return "—"
    if len(runs) == 1:
        return f"**{mean:.4f}** (seed {runs[0]['seed']})"
    each = ", ".join(f"{r[key]:.4f}" for r in runs)
    return f"**{mean:.4f}** ({each}; seeds {', '.join(str(r['seed']) for r in runs)})"


def markdown(runs_dir: Path) -> str:
    if not Path(runs_dir).is_dir():
        raise ScratchnetError(f"{runs_dir}: no such folder of runs")
    table = collect(runs_dir)
    rows = ["| recipe | reported | scratchnet test accuracy | TensorFlow test accuracy "
            "| tutorial's measure, scratchnet / TF | train time per run, scratchnet / TF | commands |",
            "|" + "---|" * 7]
    variants = sorted({(name, flags) for name, flags, _ in table} | {(name, "") for name in RECIPES},
                      key=lambda v: (list(RECIPES).index(v[0]), v[1]))
    for name, flags in variants:
        recipe = RECIPES[name]
        runs = {e: table.get((name, flags, e), []) for e in ENGINES}
        _, measure = _tutorial_measure(name)
        tutorial = " / ".join(f"{m:.4f}" if (m := _mean(r["tutorial"] for r in runs[e])) is not None else "—"
                              for e in ENGINES) if measure else "same as final"
        times = " / ".join(f"{_mean(r['seconds'] for r in runs[e]):.0f} s" if runs[e] else "—" for e in ENGINES)
        reported = f"{recipe.reported:.4f}" if recipe.reported else "—"
        command = " ".join(["scratchnet train", name] + ([flags] if flags else []) + ["--seed S"])
        commands = f"`{command}`, `... --engine tf`"
        label = f"{name} `{flags}`" if flags else name
        rows.append(f"| {label} | {reported} | {_accuracies(runs['scratchnet'], 'test')} "
                    f"| {_accuracies(runs['tf'], 'test')} | {tutorial}{f' ({measure})' if measure else ''} "
                    f"| {times} | {commands} |")
    return "\n".join(rows)
