"""MNIST, bundled and verified: IDX reading, the TF-tutorial split, batches."""

from .batches import BatchIterator, iterate_batches
from .download import download_file
from .idx import DataError, read_idx
from .mnist import MNIST_FILES, TEST_SIZE, TRAIN_SIZE, Mnist, Split, load_mnist, one_hot, summary_text

__all__ = ["BatchIterator", "iterate_batches", "download_file", "DataError", "read_idx", "MNIST_FILES", "TEST_SIZE", "TRAIN_SIZE",
           "Mnist", "Split", "load_mnist", "one_hot", "summary_text"]
