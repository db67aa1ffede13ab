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
import math
import os
import uuid
import zipfile
from contextlib import contextmanager
from typing import Mapping, NamedTuple

import numpy as np

from .errors import ScratchnetError

META_KEY = "__meta__"
# np.savez takes the arrays as keyword arguments, so these names cannot be arrays.
_RESERVED = {META_KEY, "file", "allow_pickle"}


# Bounds that hold for every checkpoint scratchnet writes; checked before anything is read.
MAX_META_BYTES = 1 << 20   # the JSON meta (a recipe's configuration is a few KB)
MAX_NPY_HEADER = 4096      # one .npy header (numpy writes 128 bytes for these arrays)


class CheckpointError(ScratchnetError, ValueError):
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


def load_checkpoint(path, expected: Mapping | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """``(arrays, meta)`` from a file written by ``save_checkpoint``, read without pickle.

    With ``expected`` (names to arrays or ``(shape, dtype)`` pairs, e.g. ``spec_of(trainer.
    state())``) the file is checked before any array data is read: first the zip directory
    (every member a ``.npy`` of an expected name, the declared sizes in all no more than the
    expected arrays need), then each member's ``.npy`` header (shape, dtype, memory order).
    A zip bomb is refused from its headers, with flat memory. Every problem of the file,
    its zip structure or its contents raises ``CheckpointError`` naming ``path``.
    """
    with _open(path) as zf:
        members = _members(zf)
        meta = _read_meta(zf, members.pop(META_KEY, None))
        if expected is not None:
            _check_declared_sizes(members, expected)
        headers = {name: _read_header(zf, info) for name, info in members.items()}
        if expected is not None:
            check_compatible(expected, headers, what="checkpoint")
        arrays = {name: _read_data(zf, members[name], header) for name, header in headers.items()}
    return arrays, meta


def read_meta(path) -> dict:
    """The ``meta`` dict of a checkpoint alone (what recipe, engine and dtype it holds)."""
    with _open(path) as zf:
        return _read_meta(zf, _members(zf).get(META_KEY))


@contextmanager
def _open(path):
    """The checkpoint as a ``ZipFile``; any problem inside becomes a ``CheckpointError`` naming ``path``."""
    try:
        with zipfile.ZipFile(path) as zf:
            yield zf
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: a folder, not a checkpoint file") from None
    except Exception as e:  # zipfile, zlib and the .npy parser raise a dozen types on damaged input
        raise CheckpointError(f"{path}: not a valid checkpoint: {type(e).__name__}: {e}") from None


def spec_of(arrays: Mapping[str, np.ndarray]) -> dict[str, tuple[tuple, np.dtype]]:
    """``{name: (shape, dtype)}`` of ``arrays``: what ``load_checkpoint(expected=)`` takes."""
    return {k: (np.shape(v), np.asarray(v).dtype) for k, v in arrays.items()}


class _Header(NamedTuple):
    shape: tuple
    dtype: np.dtype
    fortran_order: bool
    length: int  # bytes before the data


def _members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """``{array name: ZipInfo}``; refuses anything but uniquely named ``.npy`` members."""
    members = {}
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            raise CheckpointError(f"member {info.filename!r} is not a .npy array")
        name = info.filename[:-len(".npy")]
        if name in members:
            raise CheckpointError(f"member {info.filename!r} appears twice")
        members[name] = info
    return members


def _read_meta(zf: zipfile.ZipFile, info: zipfile.ZipInfo | None) -> dict:
    if info is None:
        raise CheckpointError(f"not a scratchnet checkpoint (no {META_KEY!r} entry)")
    if info.file_size > MAX_META_BYTES:
        raise CheckpointError(f"{META_KEY} declares {info.file_size:,} bytes, more than {MAX_META_BYTES:,}")
    header = _read_header(zf, info)
    if header.dtype != np.uint8 or len(header.shape) != 1:
        raise CheckpointError(f"{META_KEY} is {header.shape} {header.dtype}, not a 1-D uint8 array")
    meta = json.loads(_read_data(zf, info, header).tobytes().decode())
    if not isinstance(meta, dict):
        raise CheckpointError(f"{META_KEY} is not a JSON object")
    return meta


def _needed_bytes(want) -> int:
    shape, dtype = (want.shape, want.dtype) if isinstance(want, np.ndarray) else want
    return math.prod(shape) * np.dtype(dtype).itemsize


def _check_declared_sizes(members: dict[str, zipfile.ZipInfo], expected: Mapping) -> None:
    """From the zip directory alone: every name expected, the declared total within bounds."""
    unexpected = sorted(members.keys() - expected.keys())
    if unexpected:
        raise CheckpointError("arrays that do not belong to this model, its optimizer, its moving "
                              f"average or the data iterator: {', '.join(unexpected[:5])}"
                              + (f" (and {len(unexpected) - 5} more)" if len(unexpected) > 5 else ""))
    declared = sum(info.file_size for info in members.values())
    allowed = sum(_needed_bytes(expected[name]) + MAX_NPY_HEADER for name in members)
    if declared > allowed:
        raise CheckpointError(f"declares {declared:,} bytes of arrays; this model needs at most {allowed:,}")


def _read_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Header:
    """The ``.npy`` header of a member, checked against the member's declared size."""
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise CheckpointError(f"{info.filename}: unsupported .npy format version {version}")
        shape, fortran_order, dtype = readers[version](f, max_header_size=MAX_NPY_HEADER)
        length = f.tell()
    if dtype.hasobject:
        raise CheckpointError(f"{info.filename}: holds Python objects ({dtype}); checkpoints hold numbers only")
    needed = length + math.prod(shape) * dtype.itemsize
    if info.file_size != needed:
        raise CheckpointError(f"{info.filename}: its header declares {shape} {dtype} ({needed:,} bytes with "
                              f"the header), the zip entry {info.file_size:,} bytes")
    return _Header(tuple(shape), dtype, fortran_order, length)


def _read_data(zf: zipfile.ZipFile, info: zipfile.ZipInfo, header: _Header) -> np.ndarray:
    array = np.empty(header.shape, header.dtype, order="F" if header.fortran_order else "C")
    view = memoryview(array.reshape(-1, order="A").view(np.uint8)) if array.size else memoryview(b"")
    with zf.open(info) as f:
        f.read(header.length)
        filled = 0
        while filled < len(view):
            n = f.readinto(view[filled:])
            if not n:
                raise CheckpointError(f"{info.filename}: truncated: {filled:,} of {len(view):,} data bytes")
            filled += n
    return array


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
