"""The IDX file format of MNIST, read and checked.

    bytes 0-1   zero
    byte  2     type code (0x08 unsigned byte, 0x09 signed byte, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64)
    byte  3     number of dimensions d
    then        d big-endian uint32 sizes, then the data, big-endian, row-major

Files may be gzip-compressed (recognised by their first two bytes, not their name).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ..errors import ScratchnetError

TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"


class DataError(ScratchnetError, ValueError):
    """A data file is missing, corrupt or not what it should be; the message names it."""


def read_bytes(path: Path) -> bytes:
    """The file's content, decompressed if it is gzip."""
    raw = Path(path).read_bytes()
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip stream ({e})") from None


def parse_idx(data: bytes, path) -> np.ndarray:
    """Parse IDX ``data`` (already decompressed); ``path`` is only used in error messages."""
    if len(data) < 4:
        raise DataError(f"{path}: truncated: {len(data)} bytes, too short for an IDX header")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: wrong magic number: first two bytes are {data[:2].hex()}, expected 0000")
    code, ndim = data[2], data[3]
    if code not in TYPES:
        raise DataError(f"{path}: unknown IDX type code 0x{code:02x}; expected one of "
                        + ", ".join(f"0x{c:02x}" for c in TYPES))
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{path}: truncated header: {ndim} dimensions need {header} bytes, found {len(data)}")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, offset=4))
    dtype = np.dtype(TYPES[code])
    expected = int(np.prod(dims)) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        what = "truncated" if found < expected else "trailing bytes"
        raise DataError(f"{path}: {what}: header says {'×'.join(map(str, dims))} = {expected} bytes of "
                        f"data, found {found}")
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path) -> np.ndarray:
    """Read an IDX file (raw or gzip) into an array of its own shape and type."""
    return parse_idx(read_bytes(path), path)
