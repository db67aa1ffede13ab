"""MNIST as the TensorFlow tutorials used it, from verified IDX files.

Where the files come from, first match wins:
1. the ``data_dir`` argument (``scratchnet --data-dir``), then ``$SCRATCHNET_DATA_DIR``:
   a folder the user chose, which must hold the four files (raw or ``.gz``);
2. the copy bundled with the repository, ``data/mnist/``;
3. the cache (``$SCRATCHNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/scratchnet/mnist``, else
   ``~/.cache/scratchnet/mnist``), downloading what is missing from the public mirrors
   (``$SCRATCHNET_MNIST_MIRRORS``: comma-separated URLs to use instead).

The split is TF1's ``read_data_sets``: validation = the FIRST 5,000 training images,
train = the other 55,000, test = the 10,000 t10k images.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .download import download_file
from .idx import DataError, parse_idx, read_bytes

# name -> (bytes uncompressed, SHA-256 of the uncompressed file)
MNIST_FILES = {
    "train-images-idx3-ubyte": (47_040_016, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte": (60_008, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte": (7_840_016, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte": (10_008, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}
MIRRORS = ["https://ossci-datasets.s3.amazonaws.com/mnist/",
           "https://storage.googleapis.com/cvdf-datasets/mnist/",
           "http://yann.lecun.com/exdb/mnist/"]
BUNDLED = Path(__file__).resolve().parents[2] / "data" / "mnist"
VALIDATION_SIZE = 5000
TRAIN_SIZE = 60_000 - VALIDATION_SIZE  # the TF tutorials' training split (the checksums fix the 60,000)
TEST_SIZE = 10_000


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # [N, 28, 28, 1] float32 in [0, 1]
    labels: np.ndarray  # [N] int64 class ids

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Mnist:
    train: Split
    validation: Split
    test: Split
    source: Path


def one_hot(labels: np.ndarray, num_classes: int = 10, dtype=np.float32) -> np.ndarray:
    """Class ids [N] -> one-hot rows [N, num_classes]."""
    return np.eye(num_classes, dtype=dtype)[labels]


def to_float_images(pixels: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> float32 [N, 28, 28, 1] as TF1 did: ``float32(x) * float32(1/255)``
    (not ``x / 255``, which differs by 1 ulp for some grey levels)."""
    return (pixels.astype(np.float32) * np.float32(1.0 / 255.0))[..., None]


def file_path(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def cache_dir() -> Path:
    if "SCRATCHNET_CACHE_DIR" in os.environ:
        return Path(os.environ["SCRATCHNET_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "scratchnet" / "mnist"


def locate(data_dir=None) -> Path:
    """The folder the four files are read from (downloading into the cache if needed)."""
    chosen = data_dir or os.environ.get("SCRATCHNET_DATA_DIR")
    if chosen:
        folder = Path(chosen)
        missing = [n for n in MNIST_FILES if file_path(folder, n) is None]
        if missing:
            raise DataError(f"{folder}: missing MNIST files {missing} (as raw IDX or .gz)")
        return folder
    if all(file_path(BUNDLED, n) for n in MNIST_FILES):
        return BUNDLED
    folder = cache_dir()
    mirrors = [m for m in os.environ.get("SCRATCHNET_MNIST_MIRRORS", ",".join(MIRRORS)).split(",") if m]
    for name, (_, sha) in MNIST_FILES.items():
        if file_path(folder, name) is None:
            download_file(name, folder, mirrors, sha)
    return folder


def verified_array(folder: Path, name: str, verify: bool = True) -> np.ndarray:
    """Read one MNIST file, checking its SHA-256 (of the uncompressed bytes) first."""
    path = file_path(folder, name)
    if path is None:
        raise DataError(f"{folder / name}: no such file (raw or .gz)")
    data = read_bytes(path)
    if verify:
        digest = hashlib.sha256(data).hexdigest()
        if digest != MNIST_FILES[name][1]:
            raise DataError(f"{path}: checksum mismatch: SHA-256 {digest}, expected {MNIST_FILES[name][1]}")
    return parse_idx(data, path)


def load_mnist(data_dir=None, *, verify: bool = True) -> Mnist:
    """The three splits (arrays are read-only and shared between calls)."""
    return _load(locate(data_dir).resolve(), verify)


@functools.lru_cache(maxsize=4)
def _load(folder: Path, verify: bool) -> Mnist:
    splits = {}
    for kind in ("train", "t10k"):
        images = verified_array(folder, f"{kind}-images-idx3-ubyte", verify)
        labels = verified_array(folder, f"{kind}-labels-idx1-ubyte", verify)
        if len(images) != len(labels):
            raise DataError(f"{folder}: {kind}-images-idx3-ubyte has {len(images)} images but "
                            f"{kind}-labels-idx1-ubyte has {len(labels)} labels")
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"{folder}/{kind}-images-idx3-ubyte: images of shape {images.shape[1:]}, expected (28, 28)")
        splits[kind] = (to_float_images(images), labels.astype(np.int64))
    (train_x, train_y), (test_x, test_y) = splits["train"], splits["t10k"]
    for a in (train_x, train_y, test_x, test_y):
        a.flags.writeable = False
    v = VALIDATION_SIZE
    return Mnist(train=Split(train_x[v:], train_y[v:]), validation=Split(train_x[:v], train_y[:v]),
                 test=Split(test_x, test_y), source=folder)


def summary_text(data_dir=None) -> str:
    """What ``scratchnet data`` prints: source, checksums, split sizes, class counts."""
    folder = locate(data_dir)
    lines = [f"MNIST files in {folder}"]
    for name, (_, sha) in MNIST_FILES.items():
        path = file_path(folder, name)
        ok = hashlib.sha256(read_bytes(path)).hexdigest() == sha
        lines.append(f"  {path.name:<28} sha256 {'OK' if ok else 'MISMATCH'}")
    m = load_mnist(folder, verify=False)
    lines += ["", f"{'split':<12}{'size':>7}   " + " ".join(f"{d:>5}" for d in range(10))]
    full_train = np.concatenate([m.validation.labels, m.train.labels])
    for name, labels in [("train", m.train.labels), ("validation", m.validation.labels),
                         ("test", m.test.labels), ("train file", full_train)]:
        counts = np.bincount(labels, minlength=10)
        lines.append(f"{name:<12}{len(labels):>7}   " + " ".join(f"{c:>5}" for c in counts))
    return "\n".join(lines)
