"""The dashboard log: what the six panels need, written by a training run into
``RUN/dashboard/``, cheaply and in bounded size, and read back by the renderer.

Files (all appended or replaced whole, so a reader never sees half a record):

* ``log.jsonl``, one JSON object per line, by ``"kind"``:
  * ``start``: ``pid``, ``recipe``, ``engine``, ``step`` (where it starts: 0, or a resume's
    checkpoint), ``steps`` (the run's last step), ``loss_scale``,
    ``train_every``, ``test_every``, ``grid`` (training digits shown) and ``test_size``;
  * ``train`` every ``train_every`` steps: ``step``, ``accuracy`` and ``loss`` of the batch just
    trained on, ``lr``, and ``percentiles``: ``{series: [q_0, ..., q_7]}``, the 8 boundaries of
    7 equal-count buckets (``q_k`` = the ``k/7`` quantile; ``q_0`` the minimum, ``q_7`` the
    maximum) of ``"weights"`` (every parameter with 2 or more axes, all layers together),
    ``"biases"`` (every 1-axis parameter; inner percentiles of a series over ``SAMPLE`` values
    from a fixed subset of it) and any series the trainer supplies
    (``trainer.dashboard_series() -> {name: array}``, e.g. batch-max activations of a
    batch-norm model);
  * ``test`` every ``test_every`` steps: ``step``, ``accuracy`` and ``loss`` on the first
    ``test_size`` test images, ``snapshot`` (its index in ``snapshots.u8``);
  * ``end``: ``step`` and ``status`` (``finished``, ``interrupted``, ``diverged``, ``failed``).
* ``test-images.npy``, ``test-labels.npy``: uint8 ``[test_size, 28, 28]`` and ``[test_size]``,
  the test digits shown (written at the start).
* ``snapshots.u8``: one fixed-size record per test line, uint8:
  training digits ``[grid, 784]``, their labels ``[grid]``, predictions ``[grid]``, then the
  test predictions ``[test_size]`` (79,600 bytes at the defaults; label 255 pads a batch
  smaller than ``grid``).

Loss, both curves: ``loss_scale`` × the mean softmax cross-entropy of the logits (the
recipe's loss without L2; Görner's "cross-entropy × 100"). Size: ~0.3 KB a train line, 80 KB a
test pass (8 MB for 10,000 steps at the defaults).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ScratchnetError

FOLDER = "dashboard"
BUCKETS = 7            # Görner's HISTOGRAM_BUCKETS: equal-count buckets around the median
GRID = 100             # training digits shown: a 10×10 grid
TEST_SIZE = 1000       # test digits shown and evaluated at each test line
TRAIN_EVERY, TEST_EVERY = 20, 100  # Görner's update frequencies
# Inner percentiles of a larger series come from this many of its values, a subset fixed for
# the run: the rank of each is off by at most ~0.2 % (one standard error, sqrt(p(1-p)/n)).
SAMPLE = 1 << 16
PIXELS = 28 * 28


def percentiles(values: np.ndarray, sample: np.ndarray | None = None) -> list[float]:
    """The ``BUCKETS + 1`` boundaries of equal-count buckets of ``values`` (any shape). With
    ``sample`` (indices into the flattened values) the inner ones come from that subset only;
    the minimum and maximum are always exact."""
    flat = values.ravel()
    q = np.quantile(flat if sample is None else flat[sample], np.linspace(0.0, 1.0, BUCKETS + 1))
    if sample is not None:
        q[0], q[-1] = flat.min(), flat.max()
    return q.tolist()


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy of ``logits`` [N, 10] against integer ``labels`` [N]."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def to_pixels(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] (any shape ``[N, ...]`` of 784 values) -> uint8 ``[N, 784]``."""
    return np.clip(np.rint(np.asarray(images).reshape(len(images), PIXELS) * 255), 0, 255).astype(np.uint8)


def record_size(grid: int, test_size: int) -> int:
    return grid * (PIXELS + 2) + test_size


def grouped_params(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{"weights": all parameters with 2+ axes, "biases": all 1-axis ones}``, flattened."""
    groups = {"weights": [v.ravel() for v in params.values() if v.ndim >= 2],
              "biases": [v.ravel() for v in params.values() if v.ndim == 1]}
    return {k: np.concatenate(v) for k, v in groups.items() if v}


class DashboardLogger:
    """A ``scratchnet.train.run`` observer that writes the dashboard log of its run.

    Per step it only counts; every ``train_every`` steps it takes the percentiles of the
    parameters; every ``test_every`` steps an inference pass over ``TEST_SIZE`` test images,
    except at the steps where the run itself evaluates the test set (every
    ``track_test_every`` steps and the last step), whose logits it takes instead.
    """

    def __init__(self, train_every: int = TRAIN_EVERY, test_every: int = TEST_EVERY):
        self.train_every, self.test_every = train_every, test_every
        self.samples: dict[str, tuple[int, np.ndarray]] = {}

    def begin(self, trainer, mnist, out_dir: Path) -> None:
        self.trainer, self.folder, self.pending = trainer, Path(out_dir) / FOLDER, None
        self.folder.mkdir(parents=True, exist_ok=True)
        recipe = trainer.recipe
        self.loss_scale, self.use_ema = recipe.loss_scale, recipe.eval_with_ema
        self.test_images = mnist.test.images[:TEST_SIZE]
        self.test_labels = np.asarray(mnist.test.labels[:TEST_SIZE])
        np.save(self.folder / "test-images.npy", to_pixels(self.test_images).reshape(-1, 28, 28))
        np.save(self.folder / "test-labels.npy", self.test_labels.astype(np.uint8))
        self.log = (self.folder / "log.jsonl").open("a")
        self.snapshots = (self.folder / "snapshots.u8").open("ab")
        self.count = self.snapshots.tell() // record_size(GRID, len(self.test_labels))
        self.write(kind="start", pid=os.getpid(), recipe=recipe.name, engine=trainer.engine,
                   steps=recipe.steps, step=trainer.step, loss_scale=recipe.loss_scale,
                   train_every=self.train_every, test_every=self.test_every, grid=GRID,
                   test_size=len(self.test_labels), time=time.time())

    def write(self, **record) -> None:
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()

    def step(self, trainer, images, labels, loss, logits, lr) -> None:
        step = trainer.step
        if step % self.train_every == 0:
            logits = np.asarray(logits)
            series = grouped_params(trainer.model.params)
            series.update(getattr(trainer, "dashboard_series", dict)())
            self.write(kind="train", step=step, accuracy=float((logits.argmax(axis=1) == labels).mean()),
                       loss=self.loss_scale * cross_entropy(logits, labels), lr=lr,
                       percentiles={k: percentiles(v, self.sample(k, v.size)) for k, v in series.items()})
        if step % self.test_every == 0:
            if self.run_tests_at(step):
                self.pending = images, labels, logits  # test logits come with the run's own pass
            else:
                self.test_snapshot(trainer, images, labels, logits)

    def run_tests_at(self, step: int) -> bool:
        """Whether ``scratchnet.train.run`` evaluates the whole test set after ``step``."""
        track, last = self.trainer.recipe.track_test_every, self.trainer.recipe.steps
        return step == last or bool(track) and step % track == 0

    def sample(self, name: str, size: int) -> np.ndarray | None:
        """The fixed random subset of series ``name`` (of ``size`` values), None if small."""
        if size <= SAMPLE:
            return None
        if self.samples.get(name, (0, None))[0] != size:
            self.samples[name] = size, np.sort(np.random.default_rng(0).choice(size, SAMPLE, replace=False))
        return self.samples[name][1]

    def test_snapshot(self, trainer, images, labels, logits, test_logits=None) -> None:
        if test_logits is None:
            test_logits = trainer.logits(self.test_images, use_ema=self.use_ema)
        test_logits = test_logits[:len(self.test_labels)]
        test_pred = test_logits.argmax(axis=1)
        n = min(GRID, len(labels))
        digits = np.zeros((GRID, PIXELS), np.uint8)
        digits[:n] = to_pixels(images[:n])
        truth, pred = np.full(GRID, 255, np.uint8), np.full(GRID, 255, np.uint8)
        truth[:n], pred[:n] = labels[:n], np.asarray(logits)[:n].argmax(axis=1)
        self.snapshots.write(b"".join(a.tobytes() for a in (digits, truth, pred, test_pred.astype(np.uint8))))
        self.snapshots.flush()
        self.write(kind="test", step=trainer.step, accuracy=float((test_pred == self.test_labels).mean()),
                   loss=self.loss_scale * cross_entropy(test_logits, self.test_labels), snapshot=self.count)
        self.count += 1

    def evaluated(self, record: dict, logits) -> None:
        if self.pending is not None and record["split"] in ("test", "test-tracked"):
            self.test_snapshot(self.trainer, *self.pending, test_logits=logits)
            self.pending = None

    def end(self, status: str) -> None:
        if self.pending is not None:  # stopped before the run's test pass: the weights are the step's
            self.test_snapshot(self.trainer, *self.pending)
        self.write(kind="end", step=self.trainer.step, status=status, time=time.time())
        self.log.close()
        self.snapshots.close()


@dataclass
class Snapshot:
    """The digits of one test line: training batch ``images`` uint8 [n, 28, 28], ``labels``
    and ``predictions`` [n]; ``test_predictions`` [test_size]."""
    images: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    test_predictions: np.ndarray


@dataclass
class DashboardLog:
    """A run's dashboard log as read back (complete lines and records only)."""
    folder: Path
    start: dict
    train: list[dict] = field(default_factory=list)
    test: list[dict] = field(default_factory=list)
    end: dict | None = None
    test_images: np.ndarray | None = None   # uint8 [test_size, 28, 28]
    test_labels: np.ndarray | None = None   # [test_size]

    @property
    def step(self) -> int:
        return max([r["step"] for r in self.train + self.test] or [self.start.get("step", 0)])

    def snapshot(self, index: int = -1) -> Snapshot | None:
        """Snapshot ``index`` (of the test lines; -1 the latest), or None before the first."""
        if not self.test:
            return None
        index = self.test[index]["snapshot"]
        grid, size = self.start["grid"], self.start["test_size"]
        with (self.folder / "snapshots.u8").open("rb") as f:
            f.seek(index * record_size(grid, size))
            raw = np.frombuffer(f.read(record_size(grid, size)), np.uint8)
        labels, preds = raw[grid * PIXELS:grid * (PIXELS + 1)], raw[grid * (PIXELS + 1):grid * (PIXELS + 2)]
        n = int((labels != 255).sum())
        return Snapshot(raw[:n * PIXELS].reshape(n, 28, 28), labels[:n], preds[:n], raw[grid * (PIXELS + 2):])


def read_log(run_dir: Path) -> DashboardLog:
    """The dashboard log of ``run_dir`` (the latest start onwards), or ``ScratchnetError`` if none."""
    folder = Path(run_dir) / FOLDER
    path = folder / "log.jsonl"
    if not path.is_file():
        raise ScratchnetError(f"{run_dir}: no dashboard log ({path}); train with --dashboard")
    text = path.read_text()
    lines = [json.loads(l) for l in text[:text.rfind("\n") + 1].splitlines() if l.strip()]
    if not lines or lines[0].get("kind") != "start":
        raise ScratchnetError(f"{path}: not a dashboard log (its first line is no start record)")
    size = (folder / "snapshots.u8").stat().st_size if (folder / "snapshots.u8").exists() else 0
    whole = size // record_size(lines[0]["grid"], lines[0]["test_size"])
    log = DashboardLog(folder, lines[0])
    for line in lines:
        kind = line.get("kind")
        if kind == "start":  # a resume: the lines past its checkpoint's step are dropped
            log.start, log.end = line, None
            log.train = [r for r in log.train if r["step"] <= line["step"]]
            log.test = [r for r in log.test if r["step"] <= line["step"]]
        elif kind == "train":
            log.train.append(line)
        elif kind == "test" and line["snapshot"] < whole:
            log.test.append(line)
        elif kind == "end":
            log.end = line
    log.test_images = np.load(folder / "test-images.npy")
    log.test_labels = np.load(folder / "test-labels.npy")
    return log
