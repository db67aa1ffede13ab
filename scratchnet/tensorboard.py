"""``scratchnet train --tensorboard DIR``: TensorBoard event files written by TensorFlow's own
``tf.summary`` writer, for either engine. TensorFlow is imported here only, when the option is
given; ``tensorboard --logdir DIR`` reads them.

Written: ``train/loss`` (the recipe's loss), ``train/accuracy`` (the batch) and
``learning_rate`` every ``scalar_every`` steps (``--log-every``'s TRAIN, default 20); a
histogram of every parameter (``weights/<layer>/<param>``) every ``histogram_every`` steps
(its TEST, default 100); ``<split>/accuracy`` at each
evaluation of the run (validation, test-tracked, test).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class TensorBoardWriter:
    """A ``scratchnet.train.run`` observer writing TensorBoard summaries into ``log_dir``."""

    def __init__(self, log_dir: Path, scalar_every: int = 20, histogram_every: int = 100):
        self.log_dir, self.scalar_every, self.histogram_every = Path(log_dir), scalar_every, histogram_every

    def begin(self, trainer, mnist, out_dir: Path) -> None:
        import tensorflow as tf

        self.tf = tf
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = tf.summary.create_file_writer(str(self.log_dir))

    def step(self, trainer, images, labels, loss, logits, lr) -> None:
        tf, step = self.tf, trainer.step
        with self.writer.as_default(step=step):
            if step % self.scalar_every == 0:
                tf.summary.scalar("train/loss", loss)
                tf.summary.scalar("train/accuracy", float((np.asarray(logits).argmax(axis=1) == labels).mean()))
                tf.summary.scalar("learning_rate", lr)
            if step % self.histogram_every == 0:
                for name, value in trainer.model.params.items():
                    tf.summary.histogram(f"weights/{name}", value)

    def evaluated(self, record: dict, logits) -> None:
        with self.writer.as_default(step=record["step"]):
            self.tf.summary.scalar(f"{record['split']}/accuracy", record["accuracy"])

    def end(self, status: str) -> None:
        self.writer.flush()
        self.writer.close()
