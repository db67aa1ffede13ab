"""Which implementation of the hot ops runs: the NumPy reference or a faster one.

Every backend is a module exposing the functions of ``scratchnet.ops`` with the same
signatures. Choose one per layer (``Conv2D(..., backend="reference")``), for the process
(``set_backend("reference")``), or from the environment (``SCRATCHNET_BACKEND``).
"""

from __future__ import annotations

import importlib
import os

BACKENDS = {"reference": "scratchnet.ops"}
DEFAULT = "reference"

_active = os.environ.get("SCRATCHNET_BACKEND", DEFAULT)


def set_backend(name: str) -> None:
    """Make ``name`` the process-wide default backend."""
    global _active
    _module(name)
    _active = name


def get_backend() -> str:
    return _active


def op(name: str, backend: str | None = None):
    """The function ``name`` (e.g. ``"conv2d_forward"``) from ``backend`` or the active one."""
    return getattr(_module(backend or _active), name)


def _module(name: str):
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    return importlib.import_module(BACKENDS[name])
