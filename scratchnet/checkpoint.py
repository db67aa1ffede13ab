"""Checkpoints: one ``.npz`` file of named arrays plus a JSON ``meta`` dict.

Array names may contain ``/`` (``"conv1/w"``, ``"adam/m/conv1/w"``). ``meta`` is stored as
the UTF-8 bytes of its JSON text, a uint8 array under the reserved name ``"__meta__"``, so
the file holds numbers only and loads with ``allow_pickle=False``.

Writes are atomic: the file is written to a temporary name in the same directory, flushed
to disk, then renamed over ``path`` with ``os.replace``. A crash at any moment leaves
either the old checkpoint or the new one at ``path``, never half a file (a killed process
may leave its hidden ``.<name>.<hex>.tmp`` file behind; an error removes it).
"""

from __future__ import annotations

import json
import os
import uuid
import zipfile

import numpy as np

META_KEY = "__meta__"
# np.savez takes the arrays as keyword arguments, so these names cannot be arrays.
_RESERVED = {META_KEY, "file", "allow_pickle"}


class CheckpointError(ValueError):
    """A file that is not a valid checkpoint, or one that does not fit the model."""


def save_checkpoint(path, arrays: dict[str, np.ndarray], meta: dict | None = None) -> None:
    """Write ``arrays`` and the JSON-serialisable ``meta`` to ``path``, atomically."""
    reserved = _RESERVED & arrays.keys()
    if reserved:
        raise ValueError(f"reserved array names: {sorted(reserved)}")
    payload = {key: np.asarray(a) for key, a in arrays.items()}
    payload[META_KEY] = np.frombuffer(json.dumps(meta or {}).encode(), np.uint8)
    path = os.path.abspath(path)
    directory, base = os.path.split(path)
    # A fresh name in the same directory (os.replace cannot cross file systems); "x" refuses
    # to reuse an existing file, and unlike tempfile.mkstemp the umask decides the mode.
    tmp = os.path.join(directory, f".{base}.{uuid.uuid4().hex}.tmp")
    f = open(tmp, "xb")
    try:
        with f:
            np.savez(f, allow_pickle=False, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path) -> tuple[dict[str, np.ndarray], dict]:
    """``(arrays, meta)`` from a file written by ``save_checkpoint``."""
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with npz:
            arrays = {key: npz[key] for key in npz.files}
    except (ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: not a valid checkpoint: {e}") from e
    if META_KEY not in arrays:
        raise CheckpointError(f"{path}: not a scratchnet checkpoint (no {META_KEY!r} entry)")
    meta = json.loads(arrays.pop(META_KEY).tobytes().decode())
    return arrays, meta


def check_compatible(expected: dict, loaded: dict[str, np.ndarray], what: str = "checkpoint") -> None:
    """Raise ``CheckpointError`` listing every tensor of ``loaded`` that does not fit.

    ``expected`` maps names to arrays or to ``(shape, dtype)`` pairs. Reported: names
    missing from ``loaded``, names ``loaded`` has in excess, and shape or dtype mismatches.
    """
    problems = []
    for key in sorted(expected.keys() - loaded.keys()):
        problems.append(f"missing: {key}")
    for key in sorted(loaded.keys() - expected.keys()):
        problems.append(f"unexpected: {key} {tuple(loaded[key].shape)} {loaded[key].dtype}")
    for key in sorted(expected.keys() & loaded.keys()):
        want = expected[key]
        shape, dtype = (want.shape, want.dtype) if isinstance(want, np.ndarray) else want
        shape, dtype = tuple(shape), np.dtype(dtype)
        found = loaded[key]
        if found.shape != shape or found.dtype != dtype:
            problems.append(f"wrong shape or dtype: {key}: expected {shape} {dtype}, "
                            f"found {found.shape} {found.dtype}")
    if problems:
        raise CheckpointError(f"{what} does not match the model:\n  " + "\n  ".join(problems))
