"""``scratchnet report``: finished runs only, grouped by recipe and engine, with the
tutorial's own measure beside the final test accuracy."""

import json

from scratchnet.recipes import RECIPES
from scratchnet.report import collect, markdown


def fake_run(root, recipe, engine, seed, test, steps=None, overrides=None, **extra):
    folder = root / f"{recipe}-{engine}-seed{seed}{'-' + '-'.join(map(str, overrides.values())) if overrides else ''}"
    folder.mkdir()
    steps = steps or RECIPES[recipe].steps
    config = {"recipe": {"name": recipe, "steps": steps}, "engine": engine, "seed": seed, "overrides": overrides or {}}
    (folder / "config.json").write_text(json.dumps(config))
    lines = [{"step": steps, "split": "validation", "accuracy": 0.5, "time": 9.0},
             {"step": steps, "split": "test", "accuracy": test, "time": 10.0 * seed, **extra}]
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(l) for l in lines) + "\n")


def test_report_averages_seeds_and_skips_short_runs(tmp_path):
    fake_run(tmp_path, "conv3", "scratchnet", 1, 0.9910, max_tracked=0.9925)
    fake_run(tmp_path, "conv3", "scratchnet", 2, 0.9920, max_tracked=0.9931)
    fake_run(tmp_path, "conv3", "tf", 1, 0.9915, max_tracked=0.9927)
    fake_run(tmp_path, "lstm", "scratchnet", 1, 0.9671, first128=0.9765625)
    fake_run(tmp_path, "deep-cnn", "scratchnet", 1, 0.5, steps=100)  # a trial run: not counted

    table = collect(tmp_path)
    assert [r["seed"] for r in table["conv3", "", "scratchnet"]] == [1, 2]
    assert ("deep-cnn", "", "scratchnet") not in table

    rows = {line.split(" | ")[0][2:]: line for line in markdown(tmp_path).splitlines()[2:]}
    assert "**0.9915** (0.9910, 0.9920; seeds 1, 2)" in rows["conv3"]
    assert "0.9928 / 0.9927 (max during training)" in rows["conv3"]
    assert "15 s / 10 s" in rows["conv3"]
    assert "0.9766 / — (first 128 test images)" in rows["lstm"]
    assert "| — | — |" in rows["deep-cnn"]


def test_runs_that_override_the_recipe_get_their_own_row(tmp_path):
    fake_run(tmp_path, "deep-cnn", "scratchnet", 1, 0.9921)
    fake_run(tmp_path, "deep-cnn", "scratchnet", 2, 0.9000, overrides={"optimizer": "sgd", "lr": 0.01})
    fake_run(tmp_path, "deep-cnn", "tf", 2, 0.9010, overrides={"optimizer": "sgd", "lr": 0.01})
    rows = {line.split(" | ")[0][2:]: line for line in markdown(tmp_path).splitlines()[2:]}
    assert "**0.9921** (seed 1)" in rows["deep-cnn"] and "0.9000" not in rows["deep-cnn"]
    row = rows["deep-cnn `--optimizer sgd --lr 0.01`"]
    assert "**0.9000** (seed 2) | **0.9010** (seed 2)" in row
    assert "`scratchnet train deep-cnn --optimizer sgd --lr 0.01 --seed S`" in row
