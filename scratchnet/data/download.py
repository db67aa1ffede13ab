"""Fetching a data file from a list of mirrors, verified before it is kept."""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .idx import DataError


def download_file(name: str, dest_dir: Path, mirrors: list[str], sha256: str, timeout: float = 30) -> Path:
    """Download ``mirror + name + ".gz"`` from the first mirror that serves it with the
    right content; keep it as ``dest_dir/name.gz``.

    The SHA-256 of the *decompressed* content must equal ``sha256``. The file is written
    to a temporary name and renamed only once verified, so a failed or corrupt download
    leaves nothing behind. Raises ``DataError`` listing every mirror tried and why it failed.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / f"{name}.gz"
    failures = []
    for mirror in mirrors:
        url = f"{mirror.rstrip('/')}/{name}.gz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                payload = response.read()
            digest = hashlib.sha256(gzip.decompress(payload)).hexdigest()
        except (urllib.error.URLError, OSError, EOFError, ValueError) as e:
            failures.append(f"{url}: {e}")
            continue
        if digest != sha256:
            failures.append(f"{url}: checksum mismatch (got {digest}, expected {sha256})")
            continue
        fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        print(f"downloaded {url} -> {target}", file=sys.stderr)
        return target
    raise DataError(f"could not download {name}:\n  " + "\n  ".join(failures))
