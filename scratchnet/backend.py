"""Which implementation of the hot ops runs: the NumPy reference or a faster one.

Every backend is a module exposing the functions of ``scratchnet.ops`` with the same
signatures. Choose one per layer (``Conv2D(..., backend="reference")``), for the process
(``set_backend("reference")``), or from the environment (``SCRATCHNET_BACKEND``).

* ``"reference"``: ``scratchnet.ops``, plain NumPy, the version to read.
* ``"fast"`` (the default): ``scratchnet.kernels``, Numba + BLAS kernels that agree with
  the reference (``tests/test_kernels.py``) and are several times faster
  (``docs/performance.md``). A forward's cache must go to the same backend's backward,
  which the layers guarantee by asking the same backend for both.
"""

from __future__ import annotations

import importlib
import os

BACKENDS = {"reference": "scratchnet.ops", "fast": "scratchnet.kernels"}
DEFAULT = "fast"

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


_modules: dict = {}  # name -> module, imported at first use (an import_module call costs 0.4 µs per op)


def _module(name: str):
    module = _modules.get(name)
    if module is None:
        if name not in BACKENDS:
            raise ValueError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
        module = _modules[name] = importlib.import_module(BACKENDS[name])
    return module
