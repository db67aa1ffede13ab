"""Minibatches: TF1's ``DataSet.next_batch`` (shuffled, reshuffled every epoch) and bounded
in-order batches for evaluation."""

from __future__ import annotations

import numpy as np

from ..rng import generator_state, set_generator_state


class BatchIterator:
    """``next_batch()`` as TF1's ``DataSet.next_batch(batch_size)`` with shuffling:

    the examples are shuffled before the first epoch and at the end of every epoch; a batch
    that crosses the end of an epoch is the rest of the old epoch followed by the head of
    the newly shuffled one. The order comes from ``np.random.default_rng(seed)``;
    ``state()`` / ``load_state()`` save and restore it exactly (for resuming training).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int = 0,
                 shuffle: bool = True):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if not 0 < batch_size <= len(images):
            raise ValueError(f"batch_size must be in 1..{len(images)}, got {batch_size}")
        self.images, self.labels, self.batch_size, self.shuffle = images, labels, batch_size, shuffle
        self.rng = np.random.default_rng(seed)
        self.order = self._new_order()
        self.position = 0
        self.epochs_completed = 0

    def _new_order(self) -> np.ndarray:
        n = len(self.images)
        return self.rng.permutation(n) if self.shuffle else np.arange(n)

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """``(images [B, ...], labels [B])``."""
        n, start = len(self.images), self.position
        if start + self.batch_size <= n:
            idx = self.order[start:start + self.batch_size]
            self.position += self.batch_size
        else:
            rest = self.order[start:]
            self.epochs_completed += 1
            self.order = self._new_order()
            self.position = self.batch_size - len(rest)
            idx = np.concatenate([rest, self.order[:self.position]])
        return self.images[idx], self.labels[idx]

    def state(self) -> dict[str, np.ndarray]:
        """The iterator's position and generator state as plain numeric arrays."""
        return {"order": self.order.copy(), "position": np.array(self.position, np.int64),
                "epochs_completed": np.array(self.epochs_completed, np.int64),
                "rng": generator_state(self.rng)}

    @staticmethod
    def state_spec(num_examples: int) -> dict[str, tuple[tuple, np.dtype]]:
        """``{name: (shape, dtype)}`` of ``state()`` over ``num_examples`` examples."""
        return {"order": ((num_examples,), np.dtype(np.int64)), "position": ((), np.dtype(np.int64)),
                "epochs_completed": ((), np.dtype(np.int64)), "rng": ((6,), np.dtype(np.uint64))}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        if len(state["order"]) != len(self.images):
            raise ValueError(f"saved data order covers {len(state['order'])} examples, this data has "
                             f"{len(self.images)}")
        self.order = np.array(state["order"])
        self.position = int(state["position"])
        self.epochs_completed = int(state["epochs_completed"])
        set_generator_state(self.rng, state["rng"])


def iterate_batches(images: np.ndarray, labels: np.ndarray, batch_size: int):
    """In-order ``(images, labels)`` slices of at most ``batch_size`` (the last may be smaller)."""
    for i in range(0, len(images), batch_size):
        yield images[i:i + batch_size], labels[i:i + batch_size]
