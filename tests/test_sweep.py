"""``scratchnet sweep`` for real: the command in a subprocess, on its own LocalCluster and on
a ``dask scheduler`` with two ``dask worker`` processes started here on 127.0.0.1 (always
torn down); a few dozen steps of cheap recipes."""

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from commandline import COMMAND, ENV, assert_fails, scratchnet

pytest.importorskip("distributed")

GRID = ["softmax", "mlp-sgd", "--seeds", 1, 2, "--engines", "scratchnet", "tf", "--steps", 30]
NAMES = [f"{r}-{e}-seed{s}" for r in ("softmax", "mlp-sgd") for s in (1, 2) for e in ("scratchnet", "tf")]
TIMEOUT = 600  # seconds for one sweep of the grid on two loaded cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def final_test_step(folder: Path) -> int | None:
    lines = [json.loads(l) for l in (folder / "metrics.jsonl").read_text().splitlines()]
    tests = [l["step"] for l in lines if l["split"] == "test"]
    return tests[-1] if tests else None


def assert_finished(out: Path, names, steps: int) -> None:
    for name in names:
        config = json.loads((out / name / "config.json").read_text())
        recipe, engine, seed = name.rsplit("-", 2)
        assert (config["recipe"]["name"], config["engine"], f"seed{config['seed']}") == (recipe, engine, seed)
        assert final_test_step(out / name) == steps, name


@pytest.fixture(scope="module")
def scheduler():
    """``tcp://127.0.0.1:PORT`` of a real scheduler with two one-thread workers, stopped afterwards."""
    from distributed import Client

    address = f"tcp://127.0.0.1:{free_port()}"
    env = {**ENV, "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "1.0"}
    dask = [sys.executable, "-m", "dask"]
    procs = [subprocess.Popen(dask + ["scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                                      "--no-dashboard"], env=env, stderr=subprocess.DEVNULL)]
    try:
        procs += [subprocess.Popen(dask + ["worker", address, "--nthreads", "1", "--host", "127.0.0.1",
                                           "--no-dashboard"], env=env, stderr=subprocess.DEVNULL) for _ in range(2)]
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_a_sweep_on_a_local_cluster_trains_every_run(tmp_path):
    out = tmp_path / "runs"
    result = scratchnet("sweep", *GRID, "--out", out, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert_finished(out, NAMES, 30)
    assert result.stdout.startswith("| recipe | reported | scratchnet test accuracy |")
    assert "Not in the table (shorter than their recipe" in result.stdout
    assert "0 of 8 runs already finished" in result.stderr and "sweep: 100%" in result.stderr


def test_the_same_sweep_on_a_scheduler_and_two_workers(tmp_path, scheduler):
    out = tmp_path / "runs"
    result = scratchnet("sweep", *GRID, "--out", out, "--scheduler", scheduler, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert_finished(out, NAMES, 30)
    workers = {log.read_text().split(", worker pid ")[1].split(":")[0] for log in (out / "logs").glob("*.log")}
    assert len(workers) == 2  # both workers trained


@pytest.mark.slow
def test_bench_writes_one_report_per_cpu_model(tmp_path, scheduler):
    out = tmp_path / "runs"
    result = scratchnet("sweep", "--bench", "--bench-quick", "--bench-select", "sgemm", "--out", out, "--scheduler", scheduler,
                        timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    from scratchnet.cpu import cpuinfo, slug
    [report] = (out / "bench").glob("*/*/report.md")  # one CPU here: <slug>/quick/, as bench.report files it
    assert report.parent == out / "bench" / slug(cpuinfo()) / "quick"
    assert "sgemm yardstick (np.matmul 2048², float32, all threads, same run): **" in report.read_text()


def test_a_failing_run_is_reported_while_the_others_finish(tmp_path, scheduler):
    out = tmp_path / "runs"
    result = scratchnet("sweep", "mlp5-dropout", "softmax", "--engines", "scratchnet", "--steps", 30,
                        "--keep-prob", 0.5, "--out", out, "--scheduler", scheduler, timeout=TIMEOUT)
    lines = assert_fails(result, 1, "scratchnet: error: 1 of 2 tasks failed:")
    log = out / "logs" / "softmax-scratchnet-seed1.log"
    assert lines[1:] == [(f"  {out / 'softmax-scratchnet-seed1'}: exit 2: scratchnet: error: --keep-prob: recipe "
                          f"softmax has no dropout layer (log: {log})")]
    assert log.read_text().count("\n== ") + log.read_text().startswith("== ") == 2  # tried, then retried once
    assert_finished(out, ["mlp5-dropout-scratchnet-seed1"], 30)
    assert result.stdout.startswith("| recipe |")


def test_a_run_that_another_process_trains_is_left_alone(tmp_path, scheduler):
    import fcntl

    log = tmp_path / "runs" / "logs" / "mlp-sgd-scratchnet-seed1.log"
    log.parent.mkdir(parents=True)
    with log.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = scratchnet("sweep", "mlp-sgd", "--engines", "scratchnet", "--steps", 30, "--out", tmp_path / "runs",
                            "--scheduler", scheduler, timeout=TIMEOUT)
    assert_fails(result, 1, "1 of 1 tasks failed:")
    assert f"mlp-sgd-scratchnet-seed1: another process is still at it (it holds {log})" in result.stderr
    assert not (tmp_path / "runs" / "mlp-sgd-scratchnet-seed1").exists()


def test_a_sweep_stopped_mid_run_is_resumed_by_the_next_one_then_skipped(tmp_path, scheduler):
    out, steps = tmp_path / "runs", 6000  # the stop comes ~1 s after the first checkpoint: far from the end
    args = ["sweep", "mlp-sgd", "--engines", "scratchnet", "--steps", str(steps), "--batch-size", "10",
            "--out", str(out), "--scheduler", scheduler]
    proc = subprocess.Popen(COMMAND + args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = out / "mlp-sgd-scratchnet-seed1" / "checkpoint.npz"
    deadline = time.monotonic() + TIMEOUT
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, stderr
    assert "1 run checkpointed and stopped: mlp-sgd-scratchnet-seed1. The same command resumes them." in stderr
    assert "Traceback" not in stderr

    result = scratchnet(*args, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert "mlp-sgd-scratchnet-seed1: resumed and finished" in result.stderr
    config = json.loads(checkpoint.with_name("config.json").read_text())
    assert config["resumed_from"] == str(checkpoint)
    starts = [l for l in (out / "logs" / "mlp-sgd-scratchnet-seed1.log").read_text().splitlines()
              if l.startswith("training mlp-sgd")]
    assert starts[0].startswith(f"training mlp-sgd [scratchnet, float32] from step 0 to {steps}")
    resumed_at = int(starts[1].split(" from step ")[1].split()[0])
    assert 1000 <= resumed_at < steps  # from the checkpoint, not from the start
    metrics = [json.loads(l) for l in checkpoint.with_name("metrics.jsonl").read_text().splitlines()]
    assert [(l["step"], l["split"]) for l in metrics] == [(s, "validation") for s in range(1000, steps, 1000)] + [
        (steps, "validation"), (steps, "test")]

    written = checkpoint.stat().st_mtime_ns
    again = scratchnet(*args, timeout=TIMEOUT)
    assert again.returncode == 0, again.stderr
    assert "1 of 1 runs already finished" in again.stderr and checkpoint.stat().st_mtime_ns == written


@pytest.mark.parametrize("args, message", [
    (["sweep", "mlp", "--seeds", "-1"], "--seeds must be between 0 and 2147483647, got -1"),
    (["sweep", "mlp", "--seeds", "1", "2", "1"], "--seeds: 1 is given twice"),
    (["sweep", "mlpp", "--seeds", "1"], "sweep: unknown recipe 'mlpp'; choose from all, mlp-sgd, mlp"),
    (["sweep", "--seeds", "1"], "sweep: give at least one RECIPE (or all), or --bench"),
    (["sweep", "mlp", "--steps", "0"], "--steps must be at least 1, got 0"),
    (["sweep", "mlp", "--scheduler", "localhost:8786"], "--scheduler localhost:8786: not a Dask scheduler address"),
    (["sweep", "mlp", "--bench-select", "sgemm"], "--bench-select goes with --bench"),
    (["sweep", "mlp", "--bench-quick"], "--bench-quick goes with --bench"),
])
def test_bad_options_exit_2_before_any_work(tmp_path, args, message):
    assert_fails(scratchnet(*args, cwd=tmp_path), 2, message)
    assert list(tmp_path.iterdir()) == []


def test_a_scheduler_that_does_not_answer_is_one_line(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    assert_fails(scratchnet("sweep", "mlp", "--scheduler", address, cwd=tmp_path, timeout=120), 2,
                 f"--scheduler {address}: no Dask scheduler answers there")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_of_another_experiment_is_refused(tmp_path):
    folder = tmp_path / "runs" / "mlp-sgd-scratchnet-seed1"
    folder.mkdir(parents=True)
    (folder / "checkpoint.npz").write_bytes(b"")
    (folder / "config.json").write_text(json.dumps({"engine": "scratchnet", "seed": 1, "dtype": "float32",
                                                    "overrides": {"lr": 0.1}}))
    assert_fails(scratchnet("sweep", "mlp-sgd", "--engines", "scratchnet", cwd=tmp_path), 2,
                 f"{folder.resolve()}: holds a run of scratchnet, seed 1, float32, --lr 0.1, not scratchnet, "
                 "seed 1, float32; sweep into another --out")
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 100, "split": "test", "accuracy": 0.9}) + "\n")
    assert_fails(scratchnet("sweep", "mlp-sgd", "--engines", "scratchnet", "--lr", 0.1, "--steps", 50, cwd=tmp_path),
                 2, f"{folder.resolve()}: holds a run of 100 steps, longer than this sweep's 50; sweep into another")


def test_without_dask_the_sweep_says_how_to_install_it(tmp_path):
    probe = ("import sys; sys.modules['distributed'] = None\n"
             "from scratchnet.cli import main; sys.exit(main(['sweep', 'mlp']))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV, cwd=tmp_path,
                            timeout=120)
    assert_fails(result, 1, "scratchnet sweep needs Dask: pip install 'scratchnet[sweep]'")
    assert list(tmp_path.iterdir()) == []
