"""The six panels of Görner's dashboard, drawn from a dashboard log with matplotlib's Agg
backend (no display needed), and the watcher process that redraws ``dashboard.png`` while
a run trains.

Panels: (1) training and test accuracy, the axis zoomed on where the curves live; (2)
training and test loss; (3) the 10×10 training digits and (6) the 1,000 test digits of the
latest test line, misrecognised first on red, stamped with the true (left, black) and
predicted (right, blue) digit; (4) weights and (5) biases (or the first series the trainer
supplies, e.g. batch-max activations) as nested bands between the percentiles
``q_{3-i}..q_{4+i}`` (i = 0..3) of 7 equal-count buckets: the darkest band holds the
middle seventh of the values, the lightest all of them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from .log import BUCKETS, FOLDER, DashboardLog, read_log

FIGSIZE, DPI = (19.2, 10.8), 80     # 1536 × 864 pixels
IMAGE = "dashboard.png"
RED = np.array([1.0, 0.72, 0.72])   # the background of a misrecognised digit
TRUE_INK, PRED_INK = np.zeros(3), np.array([0.1, 0.2, 0.9])
MIN_INTERVAL, MAX_SHARE = 2.0, 0.05  # seconds between renders; at most 5 % of one core


@lru_cache(maxsize=1)
def glyphs() -> np.ndarray:
    """Bitmaps of the digits 0-9, float [10, 10, 7] in [0, 1] (1 = ink), drawn once by Agg."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = np.zeros((10, 10, 7))
    for d in range(10):  # drawn 8 times larger, then averaged over 8×8 blocks
        fig = Figure(figsize=(0.7, 1.0), dpi=80)
        fig.text(0.5, 0.5, str(d), ha="center", va="center", fontsize=70, fontweight="bold")
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        ink = 1 - np.asarray(canvas.buffer_rgba())[..., 0] / 255.0
        out[d] = np.clip(1.6 * ink.reshape(10, 8, 7, 8).mean(axis=(1, 3)), 0, 1)
    return out


def digit_grid(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, columns: int) -> np.ndarray:
    """RGB float image [rows·28, columns·28, 3]: the digits (uint8 [N, 28, 28]) dark on white,
    misrecognised first (on red, stamped true top-left and predicted top-right), then the rest."""
    order = np.argsort(labels == predictions, kind="stable")
    rows = -(-len(images) // columns)
    out = np.ones((rows * 28, columns * 28, 3))
    marks = glyphs()
    for k, i in enumerate(order):
        r, c = divmod(k, columns)
        cell = out[r * 28:(r + 1) * 28, c * 28:(c + 1) * 28]
        wrong = labels[i] != predictions[i]
        cell[:] = (RED if wrong else 1.0) * (1 - images[i][..., None] / 255.0)
        if wrong:
            for glyph, x, ink in ((marks[labels[i]], 1, TRUE_INK), (marks[predictions[i]], 20, PRED_INK)):
                a = glyph[..., None]
                cell[1:11, x:x + 7] = cell[1:11, x:x + 7] * (1 - a) + ink * a
    return out


def zoomed(values: list[float], steps: list[int], top: float | None = None) -> tuple[float, float]:
    """Y limits holding the curve after its first tenth of steps (the rest is the climb)."""
    v, s = np.asarray(values), np.asarray(steps)
    late = v[s >= 0.1 * s.max()] if len(v) > 1 else v
    lo, hi = np.quantile(late, 0.02), late.max() if top is None else top
    pad = max(hi - lo, 1e-3) * 0.08
    return (max(lo - pad, 0.0), hi if top is not None else hi + pad)


def bands(ax, steps, rows, color) -> None:
    """Nested percentile bands: rows [T, BUCKETS + 1] of bucket boundaries over steps [T]."""
    q, mid = np.asarray(rows), BUCKETS // 2
    for i in range(mid + 1):
        ax.fill_between(steps, q[:, mid - i], q[:, mid + 1 + i], color=color, alpha=1.6 / BUCKETS, lw=0)


def draw(log: DashboardLog, fig, upto: int | None = None) -> None:
    """The six panels of ``log`` (up to its test line ``upto``, default all) into ``fig``."""
    train, test = log.train, log.test
    if upto is not None:
        train = [r for r in train if r["step"] <= test[upto]["step"]]
        test = test[:upto + 1]
    start = log.start
    axes = fig.subplots(2, 3)
    (acc, loss, batch), (weights, biases, digits) = axes
    last = max([r["step"] for r in train + test] or [0])
    title = f"{start['recipe']} [{start['engine']}], step {last} of {start['steps']}"
    if upto is None and log.end is not None:
        title += f" ({log.end['status']})"
    fig.suptitle(title, fontsize=14)
    for ax, key, where in ((acc, "accuracy", "lower right"), (loss, "loss", "upper right")):
        for name, lines, color, width in (("training", train, "#1f77b4", 0.8), ("test", test, "#d62728", 1.2)):
            if lines:
                ax.plot([r["step"] for r in lines], [r[key] for r in lines], lw=width, color=color,
                        label=f"{name} {key}")
        everything = train + test
        if everything:
            ax.set_ylim(*zoomed([r[key] for r in everything], [r["step"] for r in everything],
                                top=1.0 if key == "accuracy" else None))
            ax.legend(loc=where, fontsize=9)
        ax.set_xlim(0, max(last, 1))
        ax.grid(alpha=0.3)
    best = max((r["accuracy"] for r in test), default=None)
    acc.set_title("Accuracy" + (f" (first {len(log.test_labels):,} test images: {test[-1]['accuracy']:.4f}, "
                                f"max {best:.4f})" if test else ""))
    scale = start["loss_scale"]
    loss.set_title("Cross-entropy" + (f" × {scale:g}" if scale != 1 else ""))
    for ax, name in ((weights, "weights"), (biases, None)):
        names = list(train[-1]["percentiles"]) if train else []
        extra = [n for n in names if n not in ("weights", "biases")]
        name = name or (extra[0] if extra else "biases")
        rows = [(r["step"], r["percentiles"][name]) for r in train if name in r["percentiles"]]
        if rows:
            bands(ax, [s for s, _ in rows], [q for _, q in rows], "#2ca02c" if name == "weights" else "#9467bd")
            lo, hi = rows[-1][1][0], rows[-1][1][-1]
            ax.set_title(f"{name.capitalize()} (percentile bands; now {lo:.3g} to {hi:.3g})")
        else:
            ax.set_title(name.capitalize())
        ax.set_xlim(0, max(last, 1))
        ax.grid(alpha=0.3)
    shot = log.snapshot(-1 if upto is None else upto)
    for ax, name in ((batch, "Training digits"), (digits, "Test digits")):
        ax.set_axis_off()
        if shot is None:
            ax.set_title(name)
            continue
        if ax is batch:
            images, labels, preds, columns = shot.images, shot.labels, shot.predictions, 10
        else:
            images, labels, preds, columns = log.test_images, log.test_labels, shot.test_predictions, 40
        wrong = int((labels != preds).sum())
        ax.imshow(digit_grid(images, labels, preds, columns), interpolation="nearest")
        ax.set_title(f"{name}: {wrong} of {len(labels)} misrecognised (red; true / predicted)")
    fig.subplots_adjust(left=0.035, right=0.99, bottom=0.04, top=0.9, wspace=0.15, hspace=0.2)  # fixed: cheap


def figure():
    from matplotlib.figure import Figure
    return Figure(figsize=FIGSIZE, dpi=DPI)


def render(run_dir: Path, out: Path | None = None, log: DashboardLog | None = None) -> Path:
    """Draw ``run_dir``'s dashboard (its ``log``, read if not given) into ``out`` (default
    ``RUN/dashboard.png``), replacing it atomically: a reader sees the old image or the new one."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / IMAGE
    fig = figure()
    canvas = FigureCanvasAgg(fig)
    draw(log or read_log(run_dir), fig)
    canvas.draw()
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.png")  # the watcher and a server may both draw
    Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3]).save(tmp, compress_level=1)  # drawn once, quick zlib
    os.replace(tmp, out)
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watch(run_dir: Path, parent: int) -> int:
    """Redraw ``run_dir``'s dashboard whenever its log grew, waiting after each render at least
    ``MIN_INTERVAL`` s and ``1/MAX_SHARE`` times the render's own CPU time; stop after the
    render that shows the end record, or when process ``parent`` is gone. Returns the number
    of renders."""
    log_path = Path(run_dir) / FOLDER / "log.jsonl"
    seen, renders = None, 0
    while True:
        size = log_path.stat().st_size if log_path.exists() else None
        if size is not None and size != seen:
            seen, began = size, time.process_time()
            log = read_log(run_dir)
            render(run_dir, log=log)
            renders += 1
            if log.end is not None:
                return renders
            rest = time.time() + max(MIN_INTERVAL, (time.process_time() - began) / MAX_SHARE)
            while time.time() < rest and not ended(log_path):  # the final image comes at once
                time.sleep(0.5)
            continue
        if not alive(parent):
            return renders
        time.sleep(0.5)


def ended(log_path: Path) -> bool:
    """Whether the last line of the log is an end record (reads only the file's tail)."""
    with log_path.open("rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 200))
        return b'"kind": "end"' in f.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]


class LiveRenderer:
    """A ``run`` observer that keeps ``RUN/dashboard.png`` current from a separate, niced
    process (``watch``), so drawing never runs in the training process; at the end it waits
    for the final image."""

    def begin(self, trainer, mnist, out_dir: Path) -> None:
        folder = Path(out_dir) / FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        self.errors = (folder / "render.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from scratchnet.dashboard.render import main; main(sys.argv[1:])",
             str(out_dir), "--watch", str(os.getpid())],
            stdout=self.errors, stderr=self.errors, start_new_session=True, preexec_fn=lambda: os.nice(10))

    def step(self, *args) -> None:
        pass

    def evaluated(self, record: dict, logits) -> None:
        pass

    def end(self, status: str) -> None:
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.errors.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scratchnet.dashboard.render")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--watch", type=int, metavar="PID", help="redraw until the run ends or PID exits")
    args = parser.parse_args(argv)
    if args.watch is None:
        print(render(args.run_dir))
    else:
        renders = watch(args.run_dir, args.watch)
        print(f"{renders} renders, {time.process_time():.1f} s CPU in the renderer process")


if __name__ == "__main__":
    main()
