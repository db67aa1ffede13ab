"""The command line as a user meets it: the real ``scratchnet`` command in a subprocess,
its stderr and exit status, for bad options, bad files, interrupts and divergence."""

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from scratchnet.checkpoint import load_checkpoint, save_checkpoint

from commandline import COMMAND, ENV, assert_fails, scratchnet


@pytest.mark.parametrize("args, message", [
    (["train", "mlp", "--batch-size", "0"], "scratchnet: error: --batch-size must be between 1 and 55000, got 0"),
    (["train", "mlp", "--batch-size", "60000"], "--batch-size must be between 1 and 55000, got 60000"),
    (["train", "mlp", "--steps", "-5"], "scratchnet: error: --steps must be at least 1, got -5"),
    (["train", "mlp", "--lr", "-0.1"], "--lr must be a positive number, got -0.1"),
    (["train", "mlp", "--lr", "nan"], "--lr must be a positive number, got nan"),
    (["train", "mlp", "--seed", "-1"], "--seed must be between 0 and 2147483647, got -1"),
    (["train", "mlp", "--resume", "no-such-run"], "--resume no-such-run: no checkpoint there"),
    (["train", "mlp-sgd", "--ema"], "--ema: recipe mlp-sgd keeps no moving average"),
    (["--data-dir", "no-such-folder", "data"], "--data-dir no-such-folder: no such folder"),
    (["parity", "--steps", "0"], "--steps must be at least 1, got 0"),
    (["predict", "run"], "predict: give at least one IMAGE or --test-index N"),
    (["predict", "run", "--test-index", "10000"], "--test-index must be between 0 and 9999, got 10000"),
    (["predict", "run", "--test-index", "1", "--show", "figure.txt"], "--show figure.txt: the figure must be a"),
    (["train", "mlp", "--keep-prob", "0"], "--keep-prob must be in (0, 1], got 0.0"),
    (["train", "mlp", "--keep-prob", "0.5"], "--keep-prob: recipe mlp has no dropout layer"),
    (["parity", "--recipes", "mlpp"], "--recipes: unknown recipe 'mlpp'"),
    (["tune", "mlpp"], "tune: unknown recipe 'mlpp'"),
])
def test_bad_options_exit_2_before_any_work(tmp_path, args, message):
    result = scratchnet(*args, cwd=tmp_path)
    assert_fails(result, 2, message)
    assert list(tmp_path.iterdir()) == []  # nothing written: no run folder, no checkpoint


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A short real run of mlp-sgd (a checkpoint to damage)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    result = scratchnet("train", "mlp-sgd", "--steps", 20, "--batch-size", 10, "--no-progress", "--out", out)
    assert result.returncode == 0, result.stderr
    return out


def rewritten(run_dir: Path, path: Path, change) -> Path:
    """A copy of the run's checkpoint with ``change(arrays, meta)`` applied."""
    arrays, meta = load_checkpoint(run_dir / "checkpoint.npz")
    change(arrays, meta)
    save_checkpoint(path, arrays, meta)
    return path


def test_eval_of_missing_non_zip_and_pickled_files_is_one_line(tmp_path, run_dir):
    assert_fails(scratchnet("eval", tmp_path / "missing.npz"), 1, "missing.npz: no such file")
    (tmp_path / "text.npz").write_text("not a zip file\n")
    assert_fails(scratchnet("eval", tmp_path / "text.npz"), 1, "text.npz: not a valid checkpoint: BadZipFile")
    _, meta = load_checkpoint(run_dir / "checkpoint.npz")
    np.savez(tmp_path / "pickled.npz", **{"params/fc1/w": np.array([1, None], object)},
             __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    lines = assert_fails(scratchnet("eval", tmp_path / "pickled.npz"), 1, "pickled.npz: params/fc1/w.npy: holds Python objects")
    assert len(lines) == 1


def test_report_of_a_missing_folder_is_one_line(tmp_path):
    assert_fails(scratchnet("report", tmp_path / "runs"), 1, "runs: no such folder of runs")


def test_eval_of_a_checkpoint_that_does_not_fit_lists_the_tensors(tmp_path, run_dir):
    def change(arrays, meta):
        arrays["params/fc1/w"] = arrays["params/fc1/w"][:, :400]
        arrays["params/fc2/b"] = arrays["params/fc2/b"].astype(np.float64)
    lines = assert_fails(scratchnet("eval", rewritten(run_dir, tmp_path / "shapes.npz", change)), 1,
                         "shapes.npz: checkpoint does not match the model:")
    assert lines[1:] == ["  wrong shape or dtype: params/fc1/w: expected (784, 500) float32, found (784, 400) float32",
                         "  wrong shape or dtype: params/fc2/b: expected (10,) float32, found (10,) float64"]

    def rename(arrays, meta):
        meta["recipe"]["name"] = "mlp-sgdx"
    assert_fails(scratchnet("eval", rewritten(run_dir, tmp_path / "recipe.npz", rename)), 1,
                 "recipe.npz: unknown recipe 'mlp-sgdx'")

    def stray(arrays, meta):
        arrays["extra/w"] = np.zeros(3, np.float32)
    assert_fails(scratchnet("eval", rewritten(run_dir, tmp_path / "stray.npz", stray)), 1,
                 "stray.npz: arrays that do not belong to this model, its optimizer, its moving average or "
                 "the data iterator: extra/w")


def test_predict_refuses_what_it_cannot_read_in_one_line(tmp_path, run_dir):
    from PIL import Image

    (tmp_path / "notes.png").write_text("not an image\n")
    assert_fails(scratchnet("predict", run_dir, tmp_path / "notes.png"), 1,
                 "notes.png: not an image Pillow can read")
    Image.new("L", (50, 50), 255).save(tmp_path / "blank.png")
    assert_fails(scratchnet("predict", run_dir, tmp_path / "blank.png"), 1, "blank.png: no ink: the image is uniform")

    def rename(arrays, meta):
        meta["recipe"]["name"] = "resnet"
    assert_fails(scratchnet("predict", rewritten(run_dir, tmp_path / "other.npz", rename), "--test-index", 0), 1,
                 "other.npz: unknown recipe 'resnet'")


@pytest.mark.parametrize("args, message", [
    (["train", "mlp", "--resume"], "the checkpoint's recipe is mlp-sgd, not mlp"),
    (["train", "mlp-sgd", "--dtype", "float64", "--resume"], "the checkpoint's dtype is float32, not float64"),
    (["train", "mlp-sgd", "--engine", "tf", "--resume"], "the checkpoint's engine is scratchnet, not tf"),
    (["train", "mlp-sgd", "--seed", "4", "--resume"], "the checkpoint's run has seed 1, not 4"),
    (["train", "mlp-sgd", "--lr", "0.1", "--resume"], "--lr 0.1 differs from the run's (the recipe default)"),
    (["train", "mlp-sgd", "--steps", "10", "--resume"], "--steps 10: the checkpoint"),
])
def test_a_resume_that_contradicts_its_checkpoint_is_refused(run_dir, args, message):
    assert_fails(scratchnet(*args, run_dir), 2, message)


def test_a_truncated_data_file_is_one_line(tmp_path):
    import shutil

    from scratchnet.data.mnist import BUNDLED
    data = tmp_path / "mnist"
    shutil.copytree(BUNDLED, data)
    labels = data / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-100])
    assert_fails(scratchnet("--data-dir", data, "train", "mlp-sgd", "--steps", 1, "--out", tmp_path / "run"), 1,
                 "t10k-labels-idx1-ubyte.gz: corrupt gzip stream")


def test_debug_shows_the_traceback(tmp_path):
    result = scratchnet("--debug", "eval", tmp_path / "missing.npz")
    assert result.returncode == 1 and "Traceback" in result.stderr and "CheckpointError" in result.stderr


def zip_bomb(path: Path, declared: int) -> Path:
    """A checkpoint of recipe mlp whose fc1/w member inflates to ``declared`` bytes of zeros."""
    meta = {"recipe": {"name": "mlp", "eval_with_ema": True}, "engine": "scratchnet", "dtype": "float32", "step": 1}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.frombuffer(json.dumps(meta).encode(), np.uint8))
        zf.writestr("__meta__.npy", buf.getvalue())
        with zf.open("params/fc1/w.npy", "w", force_zip64=True) as f:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                          "shape": (declared // 4,)})
            f.write(header.getvalue())
            chunk = bytes(1 << 22)
            for _ in range(declared // len(chunk)):
                f.write(chunk)
    return path


def test_a_zip_bomb_is_refused_with_flat_memory(tmp_path):
    """Peak memory of refusing a 2 GB bomb, beyond that of refusing an 8 MB one first (which
    pays for the imports and the model the refusal builds)."""
    small = zip_bomb(tmp_path / "small.npz", 8 << 20)
    bomb = zip_bomb(tmp_path / "bomb.npz", 2 << 30)
    assert bomb.stat().st_size < 20 << 20
    probe = ("import resource, sys; from scratchnet.cli import main\n"
             "main(['eval', sys.argv[1]])\n"
             "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
             "status = main(['eval', sys.argv[2]])\n"
             "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
             "print(status, grown, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", probe, str(small), str(bomb)], capture_output=True, text=True,
                            env=ENV)
    lines = result.stderr.splitlines()
    assert "small.npz: declares 8,388,736 bytes of arrays; this model needs at most" in lines[0], lines
    assert "bomb.npz: declares 2,147,483,776 bytes of arrays; this model needs at most" in lines[1], lines
    status, grown_kb = map(int, lines[-1].split())
    assert status == 1 and grown_kb < 100 * 1024, f"peak memory grew by {grown_kb} KB"


def checkpoint_arrays(path: Path) -> dict:
    arrays, _ = load_checkpoint(path)
    return arrays


@pytest.mark.parametrize("engine, recipe, signum", [("scratchnet", "mlp", signal.SIGINT),
                                                    ("tf", "mlp5-dropout", signal.SIGTERM)])
def test_a_signal_at_a_random_step_checkpoints_and_the_resume_is_bit_exact(tmp_path, engine, recipe, signum):
    """mlp: SGD with L2 and a moving average; mlp5-dropout: Adam's slots and dropout generators."""
    options = ["--engine", engine, "--steps", 1500, "--batch-size", 20, "--no-progress"]
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(COMMAND + ["train", recipe, "--out", str(out)] + [str(o) for o in options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().startswith(f"training {recipe} [{engine}, float32] from step 0 to 1500")
    time.sleep(random.uniform(0.2, 1.5))
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 128 + signum, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"scratchnet: interrupted by {signal.Signals(signum).name} at step "), stderr
    step = int(last.split(" at step ")[1].split(";")[0])
    assert 0 < step < 1500 and "Traceback" not in stderr
    assert int(checkpoint_arrays(out / "checkpoint.npz")["step"]) == step
    resume = last.split("Resume with: ")[1].split()
    assert resume[:2] == ["scratchnet", "train"] and resume[3:5] == ["--resume", str(out)]

    resumed = subprocess.run(COMMAND + resume[1:], capture_output=True, text=True, env=ENV, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    straight = scratchnet("train", recipe, "--out", tmp_path / "straight", *options)
    assert straight.returncode == 0, straight.stderr
    a, b = checkpoint_arrays(out / "checkpoint.npz"), checkpoint_arrays(tmp_path / "straight" / "checkpoint.npz")
    assert a.keys() == b.keys() and any(k.startswith(("ema/", "optimizer/adam/m/")) for k in a)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)

    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    keys = [(l["step"], l["split"]) for l in lines]
    assert len(keys) == len(set(keys)) and keys == [(l["step"], l["split"]) for l in
                                                    map(json.loads, (tmp_path / "straight" / "metrics.jsonl")
                                                        .read_text().splitlines())]
    times = [l["time"] for l in lines]
    assert times == sorted(times)


@pytest.mark.parametrize("engine", ["scratchnet", "tf"])
def test_divergence_stops_at_the_first_non_finite_loss(tmp_path, engine):
    result = scratchnet("train", "mlp", "--engine", engine, "--lr", "1e6", "--steps", 50, "--no-progress",
                        "--out", tmp_path / "run")
    assert_fails(result, 1, "training diverged at step 5: the loss is nan and params/fc1/w holds NaN or infinity")
    assert not (tmp_path / "run" / "checkpoint.npz").exists()
    unchecked = scratchnet("train", "mlp", "--engine", engine, "--lr", "1e6", "--steps", 50, "--no-progress",
                           "--no-nan-check", "--out", tmp_path / "unchecked")
    assert unchecked.returncode == 0 and "test accuracy: 0.0980" in unchecked.stdout
