"""Property-based fuzzing of everything scratchnet reads from disk: IDX files, their gzip
streams and checkpoints, with bytes flipped, cut off or appended. Only ``DataError`` and
``CheckpointError`` may ever escape. A few seconds in the default run (a fixed sequence of
examples); ``-m slow`` runs thousands of fresh ones."""

import gzip

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchnet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, spec_of
from scratchnet.data import DataError, read_idx

QUICK = settings(max_examples=150, deadline=None, derandomize=True, database=None)
LONG = settings(max_examples=2000, deadline=None, database=None)


def idx_bytes() -> bytes:
    """A small valid IDX file: 3 images of 4×5 unsigned bytes."""
    pixels = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    return bytes([0, 0, 0x08, 3]) + np.array(pixels.shape, ">u4").tobytes() + pixels.tobytes()


def checkpoint_bytes(tmp_path) -> tuple[bytes, dict]:
    """A small valid checkpoint and the spec it satisfies."""
    rng = np.random.default_rng(0)
    arrays = {"params/fc/w": rng.standard_normal((6, 4)).astype(np.float32),
              "params/fc/b": np.zeros(4, np.float32),
              "optimizer/adam/m/fc/w": np.zeros((6, 4), np.float32),
              "rng/dropout": np.arange(6, dtype=np.uint64), "step": np.array(7, np.int64)}
    save_checkpoint(tmp_path / "valid.npz", arrays, {"recipe": {"name": "mlp"}, "step": 7})
    return (tmp_path / "valid.npz").read_bytes(), spec_of(arrays)


def mutations():
    """Strategies that damage a byte string: flip bytes, cut it, append to it, or all three."""
    flips = st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(1, 255)), min_size=1, max_size=8)
    return st.tuples(flips | st.just([]), st.none() | st.floats(0, 1), st.binary(max_size=64))


def mutate(data: bytes, mutation) -> bytes:
    flips, cut, tail = mutation
    out = bytearray(data)
    for position, xor in flips:
        out[position % len(out)] ^= xor
    if cut is not None:
        out = out[:int(cut * len(out))]
    return bytes(out) + tail


def only(errors, read, data, path):
    path.write_bytes(data)
    try:
        read(path)
    except errors:
        pass


def fuzz_idx(tmp_path, mutation, compress):
    data = idx_bytes()
    if compress:
        data = gzip.compress(data)
    only(DataError, read_idx, mutate(data, mutation), tmp_path / "fuzzed-idx")


def fuzz_checkpoint(tmp_path, mutation, with_spec):
    data, spec = checkpoint_bytes(tmp_path)
    read = (lambda p: load_checkpoint(p, spec)) if with_spec else load_checkpoint
    only(CheckpointError, read, mutate(data, mutation), tmp_path / "fuzzed.npz")


TARGETS = {"idx": lambda t, m: fuzz_idx(t, m, compress=False),
           "idx.gz": lambda t, m: fuzz_idx(t, m, compress=True),
           "checkpoint": lambda t, m: fuzz_checkpoint(t, m, with_spec=False),
           "checkpoint-against-spec": lambda t, m: fuzz_checkpoint(t, m, with_spec=True)}


@pytest.mark.parametrize("budget", [pytest.param(QUICK, id="quick"),
                                    pytest.param(LONG, id="long", marks=pytest.mark.slow)])
@pytest.mark.parametrize("target", TARGETS)
def test_damaged_files_raise_only_their_own_error(tmp_path, target, budget):
    @budget
    @given(mutation=mutations())
    def fuzz(mutation):
        TARGETS[target](tmp_path, mutation)

    fuzz()


def test_the_fuzzer_damages_what_it_reads(tmp_path):
    """The mutations reach the parsers: a clean file reads, and some damaged ones are refused."""
    data, spec = checkpoint_bytes(tmp_path)
    (tmp_path / "clean.npz").write_bytes(data)
    load_checkpoint(tmp_path / "clean.npz", spec)
    with pytest.raises(CheckpointError):
        (tmp_path / "cut.npz").write_bytes(mutate(data, ([], 0.5, b"")))
        load_checkpoint(tmp_path / "cut.npz", spec)
    with pytest.raises(DataError):
        (tmp_path / "cut-idx").write_bytes(mutate(gzip.compress(idx_bytes()), ([], 0.7, b"")))
        read_idx(tmp_path / "cut-idx")
