"""Training a recipe in scratchnet: one step, evaluation in bounded batches, and the loop
that writes checkpoints, metrics and the resolved configuration.

One training step (``Trainer.train_step``):

    logits = model(x, training=True)
    loss   = loss_scale · cross-entropy (the recipe's: mean from logits, or the naive sum)
             + l2_scale · Σ ||w||²/2
    grads  = backward(loss)                       (hand-written, layer by layer)
    optimizer.apply(params, grads); step += 1
    ema.apply(params, num_updates=step)           (after the update, as tfnet does)

With BatchNorm layers, their moving averages follow the step, as Görner's scripts run
``tf.train.ExponentialMovingAverage(decay, iteration).apply([mean, variance])`` on the
batch-statistics tensors: shadows start at zero (TF1's rule for tensors), no debiasing,
num_updates = the iteration fed with the step (the pre-increment step), decay in float32.
The statistics come from the step's own forward pass (``bn_statistics="same_pass"``) or
from a second forward pass over the same batch after the update, dropout off ("second_pass").
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import deque
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

from . import checkpoint
from .data import BatchIterator
from .errors import DivergenceError, TrainingInterrupted
from .interrupts import deferred_signals
from .layers import BatchNorm, Dropout
from .model import Sequential
from .ops import LOSSES, l2_penalty
from .optim import ExponentialMovingAverage, make_optimizer
from .recipes import Recipe
from .rng import generator_state, set_generator_state

EVAL_BATCH = 1000  # never push all 10,000 test images through at once


class Trainer:
    """A recipe's model, optimizer and moving average, stepped in NumPy."""

    engine = "scratchnet"

    def __init__(self, recipe: Recipe, *, seed: int = 0, dtype=np.float32):
        self.recipe = recipe
        self.model = Sequential(recipe.layers(), seed=seed, dtype=dtype)
        self.optimizer = make_optimizer(recipe.optimizer, recipe.learning_rate, **recipe.optimizer_args)
        self.ema = ExponentialMovingAverage(recipe.ema_decay) if recipe.ema_decay else None
        if self.ema is not None:
            self.ema.apply(self.model.params, num_updates=0)  # shadows start at the initial weights
        self.optimizer.build(self.model.params)  # slots now, so state() is complete before a step
        self.batchnorms = [l for l in self.model.layers if isinstance(l, BatchNorm)]
        self.bn_averages = {l.name: self._statistics_average(l) for l in self.batchnorms}
        self.step = 0

    @property
    def dtype(self) -> np.dtype:
        return self.model.dtype

    @property
    def dropout_layers(self) -> list[Dropout]:
        return [l for l in self.model.layers if isinstance(l, Dropout)]

    def learning_rate(self) -> float:
        return float(self.recipe.learning_rate(self.step))

    def loss_and_grads(self, images: np.ndarray, labels: np.ndarray):
        """Forward and backward through the model; return ``(loss, logits, grads)``."""
        r, dtype = self.recipe, self.model.dtype
        logits = self.model.forward(images.astype(dtype, copy=False), training=True)
        loss, dlogits = LOSSES[r.loss](logits, labels)
        loss = loss * dtype.type(r.loss_scale)
        self.model.backward(dlogits * dtype.type(r.loss_scale), input_grad=False)  # dL/dimages is never used
        grads = dict(self.model.grads)
        if r.l2_scale:
            l2, l2_grads = l2_penalty(self.model.params, r.l2_params, r.l2_scale)
            loss = loss + l2
            grads.update({k: grads[k] + g for k, g in l2_grads.items()})
        return float(loss), logits, grads

    def train_step(self, images: np.ndarray, labels: np.ndarray):
        """One update; returns ``(loss, logits)``."""
        loss, logits, grads = self.loss_and_grads(images, labels)
        self.optimizer.apply(self.model.params, grads)
        if self.batchnorms:
            self._update_batchnorm_averages(images)
        self.step += 1
        if self.ema is not None:
            self.ema.apply(self.model.params, num_updates=self.step)
        return loss, logits

    @staticmethod
    def _statistics_average(layer: BatchNorm) -> ExponentialMovingAverage:
        """The moving average of a BatchNorm layer's batch statistics; its shadows are the
        layer's ``moving_mean`` / ``moving_variance`` (zeros: TF1 starts a tensor's at zero)."""
        average = ExponentialMovingAverage(layer.decay, decay_dtype="float32")
        average.averages = {"mean": layer.moving_mean, "variance": layer.moving_variance}
        return average

    def _update_batchnorm_averages(self, images: np.ndarray) -> None:
        if self.recipe.bn_statistics == "second_pass":  # the updated weights, dropout off
            x = images.astype(self.dtype, copy=False)
            last = max(k for k, l in enumerate(self.model.layers) if isinstance(l, BatchNorm))
            for layer in self.model.layers[:last + 1]:
                x = x if isinstance(layer, Dropout) else layer.forward(x, training=True)
        elif self.recipe.bn_statistics != "same_pass":
            raise ValueError(f"bn_statistics must be 'same_pass' or 'second_pass', got {self.recipe.bn_statistics!r}")
        for layer in self.batchnorms:
            self.bn_averages[layer.name].apply({"mean": layer.batch_mean, "variance": layer.batch_variance},
                                               num_updates=self.step)

    def logits(self, images: np.ndarray, *, use_ema: bool = False) -> np.ndarray:
        """Inference logits [N, 10], computed EVAL_BATCH images at a time (``Sequential.infer``:
        evaluation mode, nothing kept for backward)."""
        swap = self.ema.averaged(self.model.params) if use_ema and self.ema else nullcontext()
        with swap:
            return np.concatenate([self.model.infer(images[i:i + EVAL_BATCH].astype(self.dtype, copy=False))
                                   for i in range(0, len(images), EVAL_BATCH)])

    def predict(self, images: np.ndarray, *, use_ema: bool = False) -> np.ndarray:
        """Class predictions [N]."""
        return self.logits(images, use_ema=use_ema).argmax(axis=1)

    def accuracy(self, images, labels, *, use_ema: bool = False) -> float:
        return float((self.predict(images, use_ema=use_ema) == labels).mean())

    def state(self) -> dict[str, np.ndarray]:
        """Everything a bit-exact resume needs: parameters, optimizer slots, moving
        averages, step and the dropout generators."""
        arrays = {f"params/{k}": v for k, v in self.model.params.items()}
        arrays.update({f"optimizer/{k}": v for k, v in self.optimizer.state().items()})
        if self.ema is not None:
            arrays.update(self.ema.state())  # keys "ema/<param>"
        for layer in self.batchnorms:
            arrays[f"bn/{layer.name}/mean"] = layer.moving_mean.copy()
            arrays[f"bn/{layer.name}/variance"] = layer.moving_variance.copy()
        for layer in self.dropout_layers:
            arrays[f"rng/{layer.name}"] = generator_state(layer.rng)
        arrays["step"] = np.array(self.step, np.int64)
        return arrays

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        group = lambda prefix: {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}  # noqa: E731
        checkpoint.check_compatible(self.model.params, group("params/"), what="model parameters")
        self.model.load_params(group("params/"))
        self.optimizer.load_state(group("optimizer/"))
        if self.ema is not None:
            self.ema.load_state(arrays)
        for layer in self.batchnorms:  # in place: the averages' shadows are these arrays
            layer.moving_mean[...] = arrays[f"bn/{layer.name}/mean"]
            layer.moving_variance[...] = arrays[f"bn/{layer.name}/variance"]
        for layer in self.dropout_layers:
            set_generator_state(layer.rng, arrays[f"rng/{layer.name}"])
        self.step = int(arrays["step"])


TRACKED = "test-tracked"  # metrics split of the test passes during training


def checkpoint_spec(trainer, num_train: int) -> dict[str, tuple]:
    """``{name: (shape, dtype)}`` of every array in a checkpoint of ``trainer``'s run (its
    ``state()`` and the data iterator's over ``num_train`` examples): what a checkpoint may hold."""
    spec = checkpoint.spec_of(trainer.state())
    spec.update({f"data/{k}": v for k, v in BatchIterator.state_spec(num_train).items()})
    return spec


def resume_problem(meta: dict, recipe: str, engine: str, dtype) -> str | None:
    """Why a checkpoint with ``meta`` cannot continue a run of ``recipe`` in ``engine`` and
    ``dtype`` (None if it can)."""
    found = {"recipe": meta.get("recipe", {}).get("name"), "engine": meta.get("engine"), "dtype": meta.get("dtype")}
    for what, want in (("recipe", recipe), ("engine", engine), ("dtype", str(np.dtype(dtype)))):
        if found[what] != want:
            return f"the checkpoint's {what} is {found[what]}, not {want}"
    return None


def _keep_metrics_upto(path: Path, step: int) -> list[dict]:
    """Drop the lines of ``path`` past ``step`` (written after the checkpoint a run resumes
    from), atomically; return the lines kept."""
    lines = [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []
    kept = [l for l in lines if l["step"] <= step]
    if len(kept) < len(lines):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(json.dumps(l) + "\n" for l in kept))
        os.replace(tmp, path)
    return kept


def _best(tracked: list[tuple[int, float]]) -> tuple[int, float]:
    """``(step, accuracy)`` of the highest accuracy, the earliest step if tied."""
    return max(tracked, key=lambda t: (t[1], -t[0]))


def first_non_finite(arrays: dict[str, np.ndarray]) -> str | None:
    """The name of the first array (in ``arrays``' order) holding a NaN or an infinity."""
    return next((k for k, v in arrays.items() if not np.isfinite(v).all()), None)


@contextmanager
def _ending(observers, status):
    """Calls ``end(status())`` on each observer when the block exits, however it exits."""
    try:
        yield
    except DivergenceError:
        status = lambda: "diverged"  # noqa: E731
        raise
    finally:
        for o in observers:
            o.end(status())


def run(trainer, mnist, *, out_dir: Path, seed: int, resume: Path | None = None,
        progress: bool = True, nan_check: bool = True, overrides: dict | None = None, log=print,
        observers=()) -> dict:
    """Train ``trainer`` on ``mnist`` for its recipe's steps; return the final metrics.

    Writes into ``out_dir``: ``config.json`` (the resolved recipe and run options, with the
    command-line ``overrides`` of the recipe),
    ``metrics.jsonl`` (one JSON line per evaluation; with ``track_test_every`` also a
    ``"test-tracked"`` line every N steps, and the final test line carries their maximum,
    the figure Görner's tutorial reported) and ``checkpoint.npz`` (at every
    evaluation and at the end; atomic). The data order comes from ``seed``.

    ``resume`` (a checkpoint file) continues a run bit for bit: the checkpoint is checked
    against ``checkpoint_spec`` before its data is read, the metrics lines past it are
    dropped and the ``time`` column counts on from the checkpoint's.

    SIGINT and SIGTERM (in the main thread) let the current step finish, write a checkpoint
    at that step and raise ``TrainingInterrupted``; a second signal stops at once.
    ``nan_check`` raises ``DivergenceError`` at the first non-finite loss (checked every
    step) or parameter (checked at every evaluation), before a checkpoint is written, so the
    last good one is kept.

    ``observers`` (e.g. ``scratchnet.dashboard.DashboardLogger``) watch without steering:
    ``begin(trainer, mnist, out_dir)`` once, ``step(trainer, images, labels, loss, logits, lr)``
    after every update, ``evaluated(record, logits)`` with each metrics line and the logits of
    its split, and ``end(status)`` (``"finished"``, ``"interrupted"``, ``"diverged"`` or
    ``"failed"``) however the run stops.
    """
    from tqdm import tqdm

    recipe = trainer.recipe
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    batches = BatchIterator(mnist.train.images, mnist.train.labels, recipe.batch_size, seed=seed)
    elapsed = 0.0
    if resume is not None:
        arrays, meta = checkpoint.load_checkpoint(resume, checkpoint_spec(trainer, len(mnist.train.images)))
        problem = resume_problem(meta, recipe.name, trainer.engine, trainer.dtype)
        if problem:
            raise checkpoint.CheckpointError(f"{resume}: {problem}")
        trainer.load_state({k: v for k, v in arrays.items() if not k.startswith("data/")})
        batches.load_state({k[len("data/"):]: v for k, v in arrays.items() if k.startswith("data/")})
        elapsed = float(meta.get("elapsed", 0.0))
    config = {"recipe": recipe.to_config(), "engine": trainer.engine, "seed": seed,
              "dtype": str(trainer.dtype), "overrides": overrides or {},
              "resumed_from": str(resume) if resume else None}
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    metrics_path = out_dir / "metrics.jsonl"
    # (step, accuracy) of the test passes during training (recipes with track_test_every),
    # including those before a resume.
    tracked = ([(l["step"], l["accuracy"]) for l in _keep_metrics_upto(metrics_path, trainer.step)
                if l["split"] == TRACKED] if resume is not None else [])
    start = time.time() - elapsed
    saved = {"step": trainer.step, "path": resume}  # the newest checkpoint of this run

    def save():
        arrays = trainer.state()
        arrays.update({f"data/{k}": v for k, v in batches.state().items()})
        meta = config | {"step": trainer.step, "elapsed": round(time.time() - start, 2)}
        checkpoint.save_checkpoint(out_dir / "checkpoint.npz", arrays, meta)
        saved.update(step=trainer.step, path=out_dir / "checkpoint.npz")

    def check(loss=None):
        """The divergence guard: stop at a non-finite ``loss`` (if given) or parameter."""
        bad = first_non_finite({k: v for k, v in trainer.state().items() if k.startswith("params/")})
        if loss is None and bad is None:
            return
        what = " and ".join(([f"the loss is {loss}"] if loss is not None else [])
                            + ([f"{bad} holds NaN or infinity"] if bad else []))
        kept = (f"the last good checkpoint is {saved['path']} (step {saved['step']})" if saved["path"]
                else "no checkpoint was written")
        raise DivergenceError(f"training diverged at step {trainer.step}: {what}; {kept}. Lower the learning "
                              "rate, or pass --no-nan-check to train on regardless", trainer.step)

    def evaluate(split_name, split):
        logits = trainer.logits(split.images, use_ema=recipe.eval_with_ema)
        correct = logits.argmax(axis=1) == split.labels
        acc = float(correct.mean())
        record = {"step": trainer.step, "split": split_name, "accuracy": acc,
                  "ema": recipe.eval_with_ema, "time": round(time.time() - start, 2)}
        if split_name == "test":  # the LSTM tutorial reported its accuracy on these 128 images only
            record["first128"] = float(correct[:128].mean())
        if split_name in ("test", TRACKED) and recipe.track_test_every:
            tracked.append((trainer.step, acc))
        if split_name == "test" and recipe.track_test_every:
            step, best = _best(tracked)
            record.update(max_tracked=best, max_tracked_step=step)
        metrics.write(json.dumps(record) + "\n")
        metrics.flush()
        for o in observers:
            o.evaluated(record, logits)
        return acc

    log(f"training {recipe.name} [{trainer.engine}, {trainer.dtype}] from step {trainer.step} to {recipe.steps} "
        f"into {out_dir}/")
    recent = deque(maxlen=100)
    for o in observers:
        o.begin(trainer, mnist, out_dir)
    status = "failed"
    # The guard reports non-finite values itself; NumPy's overflow warnings would only repeat it.
    quiet_overflow = np.errstate(over="ignore", invalid="ignore") if nan_check else nullcontext()
    with (_ending(observers, lambda: status), metrics_path.open("a") as metrics, deferred_signals() as stop,
          quiet_overflow, tqdm(total=recipe.steps, initial=trainer.step, disable=not progress, unit="step",
               dynamic_ncols=True, desc=f"{recipe.name} [{trainer.engine}]") as bar):
        while trainer.step < recipe.steps:
            images, labels = batches.next_batch()
            lr = trainer.learning_rate()
            loss, logits = trainer.train_step(images, labels)
            if nan_check and not math.isfinite(loss):
                check(loss)
            for o in observers:
                o.step(trainer, images, labels, loss, logits, lr)
            recent.append(float((np.asarray(logits).argmax(axis=1) == labels).mean()))
            bar.update(1)
            if trainer.step % 10 == 0 or trainer.step == recipe.steps:
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}", acc=f"{np.mean(recent):.3f}")
            if trainer.step % recipe.eval_every == 0 and trainer.step < recipe.steps:
                if nan_check:
                    check()
                val = evaluate("validation", mnist.validation)
                bar.write(f"step {trainer.step}: validation accuracy {val:.4f}")
                save()
            if recipe.track_test_every and trainer.step % recipe.track_test_every == 0 and trainer.step < recipe.steps:
                evaluate(TRACKED, mnist.test)
            if stop.signum is not None:
                if saved["step"] != trainer.step or saved["path"] is None:
                    save()
                status = "interrupted"
                raise TrainingInterrupted(stop.signum, trainer.step, out_dir / "checkpoint.npz")
        bar.close()
        if nan_check:
            check()
        save()  # before the final evaluation: an interrupt from here on loses no training
        train_seconds = time.time() - start
        val = evaluate("validation", mnist.validation)
        test = evaluate("test", mnist.test)
        status = "finished"
    result = {"recipe": recipe.name, "engine": trainer.engine, "seed": seed, "steps": trainer.step,
              "validation_accuracy": val, "test_accuracy": test, "train_seconds": round(train_seconds, 1)}
    log(f"validation accuracy: {val:.4f}")
    if recipe.track_test_every:
        step, best = _best(tracked)
        result["max_tracked_test_accuracy"] = best
        log(f"max test accuracy during training (every {recipe.track_test_every} steps, as the tutorial "
            f"reports it): {best:.4f} at step {step}")
    log(f"test accuracy: {test:.4f}")
    return result
