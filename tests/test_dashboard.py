"""The dashboard from a short real run (log format, the six panels, the served page, the
movie, TensorBoard events), ``scratchnet plot`` and the commands' bad inputs."""

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from test_cli_errors import COMMAND, ENV, assert_fails, scratchnet

from scratchnet.dashboard.log import BUCKETS, DashboardLogger, percentiles, read_log, record_size
from scratchnet.dashboard.render import RED, digit_grid, draw, figure

STEPS, EVERY = 60, (5, 20)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """mlp5 for 60 steps with the dashboard (a training point every 5 steps, a test pass every 20)."""
    out = tmp_path_factory.mktemp("dash") / "run"
    result = scratchnet("train", "mlp5", "--steps", STEPS, "--no-progress", "--dashboard",
                        "--log-every", *EVERY, "--out", out)
    assert result.returncode == 0, result.stderr
    return out


def lines_of(run_dir):
    return [json.loads(l) for l in (run_dir / "dashboard" / "log.jsonl").read_text().splitlines()]


def test_log_format(run_dir):
    lines = lines_of(run_dir)
    kinds = [l["kind"] for l in lines]
    assert kinds[0] == "start" and kinds[-1] == "end" and lines[-1]["status"] == "finished"
    start = lines[0]
    assert (start["recipe"], start["engine"], start["steps"], start["step"]) == ("mlp5", "scratchnet", STEPS, 0)
    assert (start["train_every"], start["test_every"], start["grid"], start["test_size"]) == (5, 20, 100, 1000)
    train = [l for l in lines if l["kind"] == "train"]
    test = [l for l in lines if l["kind"] == "test"]
    assert [l["step"] for l in train] == list(range(5, STEPS + 1, 5))
    assert [l["step"] for l in test] == [20, 40, 60] and [l["snapshot"] for l in test] == [0, 1, 2]
    for l in train:
        assert 0 <= l["accuracy"] <= 1 and l["loss"] > 0 and l["lr"] > 0
        assert set(l["percentiles"]) == {"weights", "biases"}
        for q in l["percentiles"].values():
            assert len(q) == BUCKETS + 1 and q == sorted(q)
    assert train[-1]["accuracy"] > 0.5 and test[-1]["accuracy"] > 0.8  # it learnt
    folder = run_dir / "dashboard"
    assert (folder / "snapshots.u8").stat().st_size == 3 * record_size(100, 1000)
    assert np.load(folder / "test-images.npy").shape == (1000, 28, 28)
    # bounded: under 1 KB a training point, 80 KB a test pass
    assert (folder / "log.jsonl").stat().st_size < 1000 * len(lines)
    shot = read_log(run_dir).snapshot()
    labels = np.load(folder / "test-labels.npy")
    assert test[-1]["accuracy"] == (shot.test_predictions == labels).mean()  # from the run's own final test pass
    assert shot.images.shape == (100, 28, 28) and shot.test_predictions.shape == (1000,)
    assert shot.images.max() == 255 and shot.labels.max() <= 9


def test_percentiles_bound_equal_count_buckets():
    assert percentiles(np.arange(701.0)[::-1].reshape(701, 1)) == pytest.approx(range(0, 701, 100))


def test_percentiles_of_a_large_series_come_from_a_fixed_sample():
    from scratchnet.dashboard.log import SAMPLE

    values = np.random.default_rng(1).normal(size=4 * SAMPLE).astype(np.float32)
    logger = DashboardLogger()
    sample = logger.sample("weights", values.size)
    assert len(sample) == SAMPLE and sample is logger.sample("weights", values.size)
    assert logger.sample("biases", 10) is None
    q, exact = percentiles(values, sample), percentiles(values)
    assert (q[0], q[-1]) == (exact[0], exact[-1])
    ranks = np.searchsorted(np.sort(values), q[1:-1]) / values.size
    np.testing.assert_allclose(ranks, np.arange(1, BUCKETS) / BUCKETS, atol=0.01)


def test_a_resume_drops_the_lines_past_its_checkpoint(tmp_path):
    folder = tmp_path / "dashboard"
    folder.mkdir()
    np.save(folder / "test-images.npy", np.zeros((1000, 28, 28), np.uint8))
    np.save(folder / "test-labels.npy", np.zeros(1000, np.uint8))
    (folder / "snapshots.u8").write_bytes(bytes(2 * record_size(100, 1000)))
    start = {"kind": "start", "pid": 1, "recipe": "mlp5", "engine": "tf", "steps": 400, "grid": 100, "test_size": 1000}
    point = {"kind": "train", "accuracy": 0.5, "loss": 1.0, "lr": 0.1, "percentiles": {}}
    lines = [start | {"step": 0}, point | {"step": 100}, point | {"step": 200},
             {"kind": "test", "step": 200, "accuracy": 0.5, "loss": 1, "snapshot": 0},
             {"kind": "end", "step": 250, "status": "interrupted"},  # checkpoint at 100 only
             start | {"step": 100}, point | {"step": 200}]
    (folder / "log.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines) + '{"kind": "tra')
    log = read_log(tmp_path)
    assert [r["step"] for r in log.train] == [100, 200] and log.test == [] and log.end is None


def test_the_dashboard_has_six_panels_with_data(run_dir):
    from PIL import Image

    with Image.open(run_dir / "dashboard.png") as image:
        assert image.size == (1536, 864)
    fig = figure()
    draw(read_log(run_dir), fig)
    acc, loss, batch, weights, biases, digits = fig.axes
    for ax in (acc, loss):
        assert [len(line.get_xdata()) for line in ax.get_lines()] == [12, 3]  # training, test
    low, high = acc.get_ylim()
    first, *rest = acc.get_lines()[0].get_ydata()
    assert first < low < min(rest) and high == 1.0  # zoomed on where the curves live, past the first climb
    for ax in (weights, biases):
        assert len(ax.collections) == 4  # nested bands q3-q4, q2-q5, q1-q6, q0-q7
    assert batch.get_images()[0].get_array().shape == (280, 280, 3)
    assert digits.get_images()[0].get_array().shape == (25 * 28, 40 * 28, 3)
    assert "misrecognised" in digits.get_title()


def test_misrecognised_digits_come_first_on_red_with_stamps():
    images = np.zeros((4, 28, 28), np.uint8)
    labels, predictions = np.array([1, 2, 3, 4]), np.array([1, 7, 3, 0])  # 2 and 4 misrecognised
    grid = digit_grid(images, labels, predictions, columns=2)
    assert grid.shape == (56, 56, 3)
    cells = [grid[r * 28:(r + 1) * 28, c * 28:(c + 1) * 28] for r in range(2) for c in range(2)]
    for cell in cells[:2]:  # red background, inked top corners (true left, predicted right)
        np.testing.assert_allclose(cell[27, 14], RED)
        assert cell[1:11, 1:8].min() < 0.5 and cell[1:11, 20:27].min() < 0.5
    for cell in cells[2:]:
        assert (cell == 1.0).all()  # white, no stamp


def test_the_real_batch_grid_puts_the_misrecognised_first(run_dir):
    shot = read_log(run_dir).snapshot(0)
    grid = digit_grid(shot.images, shot.labels, shot.predictions, columns=10)
    wrong = int((shot.labels != shot.predictions).sum())
    corner = grid[27::28, 0::28][:10, :10].reshape(100, 3)  # bottom-left pixel of each cell, row by row
    is_red = np.isclose(corner, RED).all(axis=1)
    assert wrong > 0 and is_red[:wrong].all() and not is_red[wrong:].any()


def serve(run_dir, *extra):
    process = subprocess.Popen(COMMAND + ["dashboard", str(run_dir), "--serve", "0", *extra], env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    assert "http://127.0.0.1:" in line, line + process.stderr.read()
    return process, line.split("http://127.0.0.1:")[1].split("/")[0]


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as response:
        return response.status, response.headers["Content-Type"], response.read()


def stop(process):
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err


def test_the_server_answers_the_page_and_the_image_and_stops(run_dir):
    process, port = serve(run_dir)
    try:
        status, kind, page = get(port, "/")
        assert status == 200 and kind.startswith("text/html")
        page = page.decode()
        assert "finished: test accuracy" in page and 'http-equiv="refresh"' not in page
        status, kind, png = get(port, "/dashboard.png?step=60")
        assert status == 200 and kind == "image/png" and png.startswith(b"\x89PNG")
        assert json.loads(get(port, "/status.json")[2])["state"] == "finished"
        with pytest.raises(urllib.error.HTTPError, match="404"):
            get(port, "/nothing")
    finally:
        stop(process)
    with socket.socket() as s:  # the port is free again (for a server, which reuses addresses)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(port)))


def test_a_running_run_gets_a_reloading_page(run_dir, tmp_path):
    from scratchnet.dashboard.serve import page, status

    running = tmp_path / "run"
    shutil.copytree(run_dir, running)
    log = running / "dashboard" / "log.jsonl"
    lines = log.read_text().splitlines()
    start = json.loads(lines[0]) | {"pid": subprocess.os.getpid()}  # alive: this process
    log.write_text("\n".join([json.dumps(start)] + lines[1:-1]) + "\n")
    s = status(running)
    assert s["state"] == "running" and s["step"] == STEPS
    assert 'http-equiv="refresh"' in page(s) and "running: step 60 of 60" in page(s)
    start["pid"] = 2**22 + 1  # above Linux's largest pid: gone, without an end record
    log.write_text("\n".join([json.dumps(start)] + lines[1:-1]) + "\n")
    assert status(running)["state"] == "stopped"


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="no chromium on PATH (apt-get install -y chromium; .ci/run does)")
def test_headless_chromium_shows_the_served_dashboard(run_dir, tmp_path):
    from PIL import Image

    process, port = serve(run_dir)
    shot = tmp_path / "screenshot.png"
    try:
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000",
                        "--virtual-time-budget=5000", f"--screenshot={shot}", f"http://127.0.0.1:{port}/"],
                       capture_output=True, timeout=120, check=True)
    finally:
        stop(process)
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"), np.float64)
    assert pixels.shape[:2] == (1000, 1400)
    assert pixels.std() > 20  # not blank: text, curves and digits on white
    reds = ((pixels[..., 0] > 200) & (pixels[..., 1] < 200) & (pixels[..., 2] < 200)).sum()
    assert reds > 500  # the misrecognised digits' red and the test curve came through


@pytest.mark.parametrize("name", ["run.gif", "run.mp4"])
def test_the_movie_has_a_frame_per_test_pass(run_dir, tmp_path, name):
    out = tmp_path / name
    if name.endswith(".mp4"):
        imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="no imageio-ffmpeg: MP4 falls back to GIF")
    result = scratchnet("dashboard", run_dir, "--movie", out, "--fps", 5)
    assert result.returncode == 0, result.stderr
    if name.endswith(".gif"):
        from PIL import Image
        with Image.open(out) as gif:
            assert (gif.size, gif.n_frames) == ((960, 540), 3)
    else:
        reader = imageio_ffmpeg.read_frames(str(out))
        assert next(reader)["size"] == (1536, 864)
        assert sum(1 for _ in reader) == 3


def test_without_ffmpeg_an_mp4_becomes_a_gif(run_dir, tmp_path, monkeypatch, capsys):
    from scratchnet.dashboard.movie import movie

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails
    assert movie(run_dir, tmp_path / "run.mp4") == tmp_path / "run.gif"
    assert "no ffmpeg" in capsys.readouterr().out and not (tmp_path / "run.mp4").exists()


def test_plot_overlays_two_runs(run_dir, tmp_path):
    from scratchnet.plot import curves

    other = tmp_path / "seed2"
    result = scratchnet("train", "mlp5", "--steps", 20, "--seed", 2, "--no-progress", "--out", other)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "both.png"
    result = scratchnet("plot", run_dir, other, "--out", out)
    assert result.returncode == 0, result.stderr
    from PIL import Image
    with Image.open(out) as image:
        assert image.size == (1350, 432)
    mine, theirs = curves(run_dir), curves(other)
    assert (mine["label"], theirs["label"]) == ("mlp5 scratchnet seed 1", "mlp5 scratchnet seed 2")
    assert mine["accuracy"][0] == [20, 40, 60] and theirs["accuracy"][0] == [20]  # dashboard; metrics
    assert mine["test_loss"] is not None and theirs["test_loss"] is None
    steps, lr = mine["lr"]
    assert lr[0] == pytest.approx(3e-3 + 1e-4) and lr[-1] < lr[0]  # Görner's decay


@pytest.mark.slow  # imports TensorFlow twice
@pytest.mark.parametrize("engine", ["scratchnet", "tf"])
def test_tensorboard_events_hold_scalars_and_histograms(tmp_path, engine):
    import tensorflow as tf

    result = scratchnet("train", "mlp5", "--steps", STEPS, "--no-progress", "--engine", engine,
                        "--log-every", *EVERY, "--tensorboard", tmp_path / "tb", "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    tags = {}
    for path in (tmp_path / "tb").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    assert tags["train/loss"] == tags["learning_rate"] == list(range(5, STEPS + 1, 5))
    assert tags["weights/fc1/w"] == [20, 40, 60] and tags["test/accuracy"] == [60]


def test_a_run_without_tensorboard_never_imports_tensorflow(tmp_path):
    code = ("import sys; from scratchnet.cli import main; "
            f"main(['train', 'softmax', '--steps', '3', '--no-progress', '--dashboard', '--out', {str(tmp_path)!r}]); "
            "assert 'tensorflow' not in sys.modules, 'imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "dashboard.png").exists()


def test_a_dashboard_logger_counts_snapshots_on_from_a_resume(run_dir, tmp_path):
    shutil.copytree(run_dir / "dashboard", tmp_path / "dashboard")
    logger = DashboardLogger()

    class Stub:
        recipe = type("R", (), {"name": "mlp5", "steps": 80, "loss_scale": 1.0, "eval_with_ema": False})
        engine, step = "scratchnet", 60

    mnist = type("M", (), {"test": type("S", (), {"images": np.zeros((1000, 28, 28, 1)), "labels": np.zeros(1000)})})
    logger.begin(Stub, mnist, tmp_path)
    assert logger.count == 3
    logger.end("finished")


@pytest.mark.parametrize("args, status, message", [
    (["dashboard", "."], 2, "no dashboard log there (train with --dashboard)"),
    (["plot", "."], 2, ".: not a run folder (no config.json and metrics.jsonl)"),
    (["train", "mlp5", "--log-every", "0", "100"], 2, "--log-every TRAIN must be at least 1, got 0"),
])
def test_bad_inputs_are_one_line(tmp_path, args, status, message):
    assert_fails(scratchnet(*args, cwd=tmp_path), status, message)


def test_bad_dashboard_options_are_one_line(run_dir, tmp_path):
    assert_fails(scratchnet("dashboard", run_dir, "--movie", tmp_path / "run.avi"), 2,
                 "run.avi: the name must end in .mp4 or .gif")
    assert_fails(scratchnet("plot", run_dir, "--out", tmp_path / "runs.jpeg"), 2,
                 "runs.jpeg: the name must end in .png, .svg or .pdf")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert_fails(scratchnet("dashboard", run_dir, "--serve", port), 1,
                     f"--serve {port}: cannot listen on 127.0.0.1:{port} (Address already in use)")
    (tmp_path / "bad" / "dashboard").mkdir(parents=True)
    (tmp_path / "bad" / "dashboard" / "log.jsonl").write_text('{"kind": "train"}\n')
    assert_fails(scratchnet("dashboard", tmp_path / "bad"), 1, "log.jsonl: not a dashboard log")


def test_a_trainer_can_add_series_shown_in_the_fifth_panel(tmp_path):
    """The hook for batch-norm recipes: ``trainer.dashboard_series()`` -> {name: values}."""
    from scratchnet.data import load_mnist
    from scratchnet.recipes import get_recipe
    from scratchnet.train import Trainer, run

    class WithActivations(Trainer):
        def dashboard_series(self):
            return {"batch-max activations": np.arange(8.0) * 7 + self.step}

    trainer = WithActivations(get_recipe("softmax").with_overrides(steps=20))
    run(trainer, load_mnist(), out_dir=tmp_path, seed=1, progress=False, log=lambda *a: None,
        observers=[DashboardLogger(10, 20)])
    log = read_log(tmp_path)
    assert log.train[-1]["percentiles"]["batch-max activations"] == pytest.approx(np.arange(8.0) * 7 + 20)
    assert log.end["status"] == "finished" and log.end["step"] == 20
    fig = figure()
    draw(log, fig)
    assert fig.axes[4].get_title().startswith("Batch-max activations") and len(fig.axes[4].collections) == 4


def train_mlp5_with_dashboard(out, steps):
    """``scratchnet train mlp5 --dashboard`` started in the background."""
    return subprocess.Popen(COMMAND + ["train", "mlp5", "--steps", str(steps), "--no-progress", "--dashboard",
                                       "--out", str(out)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_the_dashboard_updates_while_the_run_trains(tmp_path):
    """The image is replaced during training, not only at the end, and is whole each time."""
    from PIL import Image

    out = tmp_path / "run"
    process = train_mlp5_with_dashboard(out, 6000)
    seen = set()
    while process.poll() is None:
        png = out / "dashboard.png"
        if png.exists():
            seen.add(png.stat().st_mtime_ns)
            with Image.open(png) as image:
                image.load()  # a half-written file would not decode
        time.sleep(0.2)
    assert process.returncode == 0, process.stderr.read()
    assert len(seen) >= 2, seen  # replaced while the run trains (a render every 10-15 s here)
    assert read_log(out).end["status"] == "finished"


@pytest.mark.slow
def test_an_interrupted_run_says_so_and_a_resume_continues_its_log(tmp_path):
    out = tmp_path / "run"
    process = train_mlp5_with_dashboard(out, 2000)
    log = out / "dashboard" / "log.jsonl"
    while process.poll() is None and not (log.exists() and '"kind": "test"' in log.read_text()):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 128 + signal.SIGINT, process.stderr.read()
    stopped = read_log(out)
    assert stopped.end["status"] == "interrupted" and (out / "dashboard.png").exists()
    result = scratchnet("train", "mlp5", "--resume", out, "--steps", 2100, "--no-progress", "--dashboard")
    assert result.returncode == 0, result.stderr
    resumed = read_log(out)
    assert resumed.start["step"] == stopped.end["step"] and resumed.end["status"] == "finished"
    steps = [r["step"] for r in resumed.train]
    assert steps == sorted(set(steps)) and steps[-1] == 2100  # no step twice, none past the end


def test_the_dashboard_watches_without_steering(tmp_path):
    """With dropout (its generators) and the extra test passes, the weights stay bit for bit those
    of a run without the dashboard."""
    from scratchnet.data import load_mnist
    from scratchnet.recipes import get_recipe
    from scratchnet.train import Trainer, run

    recipe, mnist, params = get_recipe("mlp5-dropout").with_overrides(steps=40), load_mnist(), []
    for observers in ([], [DashboardLogger(5, 10)]):
        trainer = Trainer(recipe, seed=1)
        run(trainer, mnist, out_dir=tmp_path / str(len(observers)), seed=1, progress=False, log=lambda *a: None,
            observers=observers)
        params.append(trainer.model.params)
    assert all(np.array_equal(params[0][k], params[1][k]) for k in params[0])
