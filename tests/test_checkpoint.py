"""Checkpoints: exact round trip, atomic writes, no pickle, and clear mismatch errors."""

import os

import numpy as np
import pytest

from scratchnet.checkpoint import CheckpointError, check_compatible, load_checkpoint, save_checkpoint
from scratchnet.optim import Adam


def sample_arrays(dtype):
    rng = np.random.default_rng(0)
    return {
        "conv1/w": rng.standard_normal((5, 5, 1, 4)).astype(dtype),
        "conv1/b": np.full(4, 0.1, dtype),
        "adam/beta1_power": np.array(0.9**3, dtype),
        "iterations": np.array(3, np.int64),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_exact(tmp_path, dtype):
    arrays = sample_arrays(dtype)
    meta = {"recipe": "deep-cnn", "step": 3, "schedule": {"schedule": "constant", "learning_rate": 1e-4}}
    save_checkpoint(tmp_path / "model.npz", arrays, meta)
    loaded, loaded_meta = load_checkpoint(tmp_path / "model.npz")
    assert loaded_meta == meta and loaded.keys() == arrays.keys()
    for key, a in arrays.items():
        assert loaded[key].dtype == a.dtype and loaded[key].shape == a.shape
        np.testing.assert_array_equal(loaded[key], a)


def test_optimizer_state_survives_a_checkpoint(tmp_path):
    params = {"w": np.linspace(-1, 1, 6, dtype=np.float32)}
    opt = Adam(0.01)
    opt.apply(params, {"w": np.ones(6, np.float32)})
    save_checkpoint(tmp_path / "ckpt.npz", {**params, **opt.state()})
    arrays, _ = load_checkpoint(tmp_path / "ckpt.npz")
    restored = Adam(0.01)
    restored.load_state(arrays)
    assert restored.iterations == 1
    for key, value in opt.state().items():
        np.testing.assert_array_equal(restored.state()[key], value)


@pytest.mark.parametrize("failing", ["savez", "replace"])
def test_a_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch, failing):
    path = tmp_path / "model.npz"
    save_checkpoint(path, {"w": np.zeros(3)}, {"version": 1})
    before = path.read_bytes()

    def savez_then_crash(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    def crash(*args):
        raise OSError("disk full")

    if failing == "savez":
        monkeypatch.setattr(np, "savez", savez_then_crash)
    else:
        monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"w": np.ones(3)}, {"version": 2})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind


def test_object_arrays_are_refused(tmp_path):
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "a.npz", {"w": np.array([1, None], object)})
    path = tmp_path / "pickled.npz"
    np.savez(path, w=np.array([1, None], object), __meta__=np.frombuffer(b"{}", np.uint8))
    with pytest.raises(CheckpointError, match="pickled.npz: w.npy: holds Python objects"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"not a zip file", b"PK\x03\x04 truncated"])
def test_invalid_files_name_the_file(tmp_path, content):
    path = tmp_path / "broken.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="broken.npz: not a valid checkpoint"):
        load_checkpoint(path)


def test_an_npz_without_meta_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, w=np.zeros(2))
    with pytest.raises(CheckpointError, match="plain.npz: not a scratchnet checkpoint"):
        load_checkpoint(path)


def test_reserved_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "a.npz", {"__meta__": np.zeros(1)})


def test_check_compatible_names_every_problem():
    expected = {"conv1/w": ((5, 5, 1, 32), "float32"), "conv1/b": np.zeros(32, np.float32),
                "fc/w": ((3136, 1024), np.float32)}
    loaded = {"conv1/w": np.zeros((5, 5, 1, 16), np.float32), "conv1/b": np.zeros(32, np.float64),
              "extra": np.zeros(2, np.float32)}
    with pytest.raises(CheckpointError) as error:
        check_compatible(expected, loaded, what="deep-cnn.npz")
    message = str(error.value)
    assert message.startswith("deep-cnn.npz does not match")
    assert "missing: fc/w" in message
    assert "unexpected: extra (2,) float32" in message
    assert "conv1/w: expected (5, 5, 1, 32) float32, found (5, 5, 1, 16) float32" in message
    assert "conv1/b: expected (32,) float32, found (32,) float64" in message


def test_check_compatible_accepts_a_match():
    arrays = sample_arrays(np.float32)
    check_compatible(arrays, {k: v.copy() for k, v in arrays.items()})
    check_compatible({k: (v.shape, v.dtype) for k, v in arrays.items()}, arrays)
