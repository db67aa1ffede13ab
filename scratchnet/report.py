"""The results table: every finished run under a folder, grouped by recipe and engine.

A run is a folder written by ``scratchnet train`` (``config.json`` + ``metrics.jsonl``);
its test accuracy is the last ``"split": "test"`` line of its metrics.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from .recipes import RECIPES

ENGINES = ("scratchnet", "tf")


def collect(runs_dir: Path) -> dict[tuple[str, str], list[dict]]:
    """``{(recipe, engine): [{"seed", "test", "first128", "seconds", "steps"}, ...]}``."""
    table = defaultdict(list)
    for config_path in sorted(Path(runs_dir).glob("*/config.json")):
        config = json.loads(config_path.read_text())
        lines = [json.loads(l) for l in (config_path.parent / "metrics.jsonl").read_text().splitlines() if l]
        tests = [l for l in lines if l["split"] == "test"]
        if not tests or tests[-1]["step"] != config["recipe"]["steps"]:
            continue  # unfinished, or a shortened trial run
        table[config["recipe"]["name"], config["engine"]].append(
            {"seed": config["seed"], "test": tests[-1]["accuracy"], "first128": tests[-1].get("first128"),
             "seconds": tests[-1]["time"], "steps": tests[-1]["step"]})
    return table


def markdown(runs_dir: Path) -> str:
    table = collect(runs_dir)
    head = ("| recipe | reported | scratchnet test accuracy (seeds) | TensorFlow test accuracy (seeds) "
            "| wall time scratchnet / TF | command |")
    rows = [head, "|" + "---|" * 6]
    for name, recipe in RECIPES.items():
        cells = []
        for engine in ENGINES:
            runs = table.get((name, engine), [])
            if not runs:
                cells.append("—")
                continue
            accs = ", ".join(f"{r['test']:.4f}" for r in runs)
            mean = sum(r["test"] for r in runs) / len(runs)
            cells.append(f"**{mean:.4f}** ({accs}; seeds {', '.join(str(r['seed']) for r in runs)})")
        times = " / ".join(
            f"{sum(r['seconds'] for r in table[name, e]) / len(table[name, e]):.0f} s" if table.get((name, e)) else "—"
            for e in ENGINES)
        reported = f"{recipe.reported:.4f}" if recipe.reported else "—"
        command = f"`scratchnet train {name} --seed S [--engine tf]`"
        rows.append(f"| {name} | {reported} | {cells[0]} | {cells[1]} | {times} | {command} |")
    return "\n".join(rows)
