"""Shared machinery of the fast kernels: the Numba cache location, the worker threads and
the BLAS thread switch.

Threading model (one rule, so the two kinds of threads never nest):

* Every Numba kernel here is *serial* and compiled with ``nogil=True``; none uses
  ``parallel=True``, so Numba's own threading layer is never started.
* Parallelism comes from a small pool of Python threads (``NUM_THREADS``, one per core).
  Each worker runs a Numba kernel or a BLAS call on its slice of the work; both release
  the GIL, so the workers really run at the same time.
* While the workers call BLAS, OpenBLAS is switched to ONE thread (``blas_single``), so
  2 workers × 1 BLAS thread = 2 busy cores, never 2 × 2. Outside those sections BLAS
  keeps its normal thread count and large single GEMMs (dense layers, LSTM steps) use
  both cores by themselves.

Memory: at import, glibc's malloc is told to keep freed arrays of up to 1 GB for reuse
(``keep_freed_memory``), so a large batch's arrays are not page-faulted in again on every
call.

Numba cache (``cache=True`` on every kernel): compiled machine code is stored so that a
second process loads it instead of compiling (compilation of all kernels takes tens of
seconds; loading, well under a second). Numba's default location is ``__pycache__`` next
to this package. When that is not writable (a read-only install) and ``NUMBA_CACHE_DIR``
is not set, we point Numba at ``$XDG_CACHE_HOME/scratchnet/numba`` (``~/.cache/...``),
before any kernel is defined. An explicit ``NUMBA_CACHE_DIR`` always wins.
"""

from __future__ import annotations

import ctypes
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path

import numpy as np


def _choose_cache_dir() -> str | None:
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None  # the user decided
    pycache = Path(__file__).resolve().parent / "__pycache__"
    try:
        pycache.mkdir(exist_ok=True)
        probe = pycache / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
        return None  # Numba's in-tree default works
    except OSError:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return str(base / "scratchnet" / "numba")


_cache_dir = _choose_cache_dir()

import numba  # noqa: E402  (after the cache decision, which must precede every @njit)

if _cache_dir is not None:
    Path(_cache_dir).mkdir(parents=True, exist_ok=True)
    numba.config.CACHE_DIR = _cache_dir

CACHE_DIR = numba.config.CACHE_DIR or str(Path(__file__).resolve().parent / "__pycache__")


def njit(fn):
    """Serial, GIL-free, cached Numba compilation. No fastmath: the kernels here are
    data movement, comparisons and a few multiply-adds whose results must match the
    NumPy reference, and NaN/inf must behave as in NumPy."""
    return numba.njit(nogil=True, cache=True, error_model="numpy")(fn)


def _num_threads() -> int:
    env = os.environ.get("SCRATCHNET_NUM_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


NUM_THREADS = _num_threads()
_pool = ThreadPoolExecutor(max_workers=NUM_THREADS, thread_name_prefix="scratchnet") if NUM_THREADS > 1 else None


def parallel(fn, n_items: int, min_per_thread: int = 1):
    """Run ``fn(start, stop)`` over ``range(n_items)`` split into contiguous parts, one
    per worker thread (fewer if the parts would be smaller than ``min_per_thread``).
    Returns the list of results in order."""
    parts = max(1, min(NUM_THREADS, n_items // max(1, min_per_thread)))
    if parts == 1 or _pool is None:
        return [fn(0, n_items)]
    bounds = [n_items * k // parts for k in range(parts + 1)]
    futures = [_pool.submit(fn, bounds[k], bounds[k + 1]) for k in range(1, parts)]
    first = fn(bounds[0], bounds[1])  # the calling thread does the first part itself
    return [first] + [f.result() for f in futures]


# A parallel sum is cut into this many parts whatever the number of worker threads, so the
# filter gradients round the same on a 1-core and a 16-core machine (OpenBLAS's own threads
# are another matter: its multi-threaded GEMM rounds differently from its 1-thread GEMM).
REDUCTION_PARTS = 8


def parallel_sum(fn, n_items: int, chunk: int = 1):
    """Σ fn(start, stop) over a split of ``range(n_items)`` that depends on ``n_items`` and
    ``chunk`` only, never on the thread count: ``REDUCTION_PARTS`` parts (fewer when there are
    fewer chunks), each a whole number of chunks, spread over the workers and added in part
    order. ``fn`` returns a fresh array (it is added into in place)."""
    chunks = -(-n_items // max(1, chunk))
    parts = max(1, min(REDUCTION_PARTS, chunks))
    bounds = [min(n_items, chunk * (chunks * k // parts)) for k in range(parts + 1)]
    per_worker = parallel(lambda a, b: [fn(bounds[p], bounds[p + 1]) for p in range(a, b)], parts)
    total, *rest = [r for results in per_worker for r in results]
    for r in rest:
        total += r
    return total


# --- the chunk size a tuned choice asks for ------------------------------------------------

_chunk = ContextVar("scratchnet_chunk", default=None)


@contextmanager
def chunk_size(n: int | None):
    """Inside: the kernels size their chunks as ``n`` (im2col: rows; wide and Winograd:
    images) instead of by their own rule; ``None`` keeps the rule. ``kernels.tuning``
    sets it around one call, in the calling thread, which is where the chunks are sized."""
    if n is None:
        yield
        return
    token = _chunk.set(n)
    try:
        yield
    finally:
        _chunk.reset(token)


def chosen_chunk() -> int | None:
    return _chunk.get()


# --- OpenBLAS thread count --------------------------------------------------------------

_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved = None


@lru_cache(maxsize=None)
def _find_blas():
    """threadpoolctl's controller of NumPy's BLAS (None without threadpoolctl or a BLAS it
    knows), looked up once per process."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    libs = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    # NumPy's own BLAS (the one np.matmul calls) is the one loaded from numpy's folders.
    mine = [c for c in libs if "numpy" in str(c.filepath)] or libs
    return mine[0] if mine else None


# --- OpenBLAS's idle spin ----------------------------------------------------------------
#
# After every multi-threaded call, OpenBLAS's own threads busy-wait for the next one for
# 2^THREAD_TIMEOUT cycles before they sleep (blas_server.c; default 2^28, about 0.1 s at
# 2.6 GHz). So a dense layer's GEMM leaves a thread spinning on the second core for the
# next 0.1 s, while the convolution after it hands half of its work to our worker: three
# busy threads on two cores. Measured on the 2-vCPU EPYC: right after a training step, the
# worker of conv-nobn's conv2 was put on the main thread's core and the call took the time
# of one thread (15.5 ms instead of 8.9). Training steps with the default against 2^20
# (interleaved processes, median of 25 steps, three rounds): conv-bn 118-130 -> 70-77 ms,
# conv-nobn 85-92 -> 50-62, deep-cnn 42-48 -> 28-42, lstm 26-29 -> 16-21; the MLPs, all
# GEMMs back to back, within the noise (rule 9 of docs/performance.md). 2^20 cycles
# (~0.4 ms) still spans the gaps between consecutive GEMMs. A THREAD_TIMEOUT the user set wins.
BLAS_SPIN_LOG2_CYCLES = 20


def shorten_blas_spin(log2_cycles: int = BLAS_SPIN_LOG2_CYCLES) -> bool:
    """Make OpenBLAS's idle threads sleep after 2^log2_cycles cycles instead of 2^28 (unless
    ``OPENBLAS_THREAD_TIMEOUT``/``GOTO_THREAD_TIMEOUT`` is set): set the variable, have
    OpenBLAS read its environment again and stop its threads, which it restarts, with the
    new timeout, at its next multi-threaded call (so no other thread may be inside OpenBLAS
    meanwhile: it runs once, when ``scratchnet.kernels`` is imported). True if the setting
    took effect."""
    if any(v in os.environ for v in ("OPENBLAS_THREAD_TIMEOUT", "GOTO_THREAD_TIMEOUT")):
        return False  # the user decided
    blas = _find_blas()
    if blas is None or blas.internal_api != "openblas" or getattr(blas, "threading_layer", None) != "pthreads":
        return False
    lib = ctypes.CDLL(blas.filepath)
    if not all(hasattr(lib, f) for f in ("openblas_read_env", "openblas_thread_timeout", "blas_thread_shutdown_")):
        return False
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(log2_cycles)
    lib.openblas_read_env()
    lib.blas_thread_shutdown_()
    return lib.openblas_thread_timeout() == log2_cycles


@contextmanager
def blas_single():
    """Inside: NumPy's BLAS uses one thread (the worker threads supply the parallelism)."""
    global _blas_users, _blas_saved
    blas = _find_blas() if NUM_THREADS > 1 else None
    if blas is None:
        yield
        return
    with _blas_lock:
        if _blas_users == 0:
            _blas_saved = blas.get_num_threads()
            blas.set_num_threads(1)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                blas.set_num_threads(_blas_saved)


BLAS_SPIN_SHORTENED = NUM_THREADS > 1 and shorten_blas_spin()


# --- glibc's allocator: large arrays kept for reuse -------------------------------------------
#
# glibc's malloc serves a request above its mmap threshold with a fresh mmap and returns it
# to the kernel when it is freed. The threshold adapts to the sizes freed, but never above
# 32 MB, so every array larger than that is new memory on every call: conv-BN's batch-1,000
# evaluation (conv1's output is 75 MB, conv2's 38 MB) took 992 page faults and 10-17 ms of
# kernel time per pass (THP huge pages, compacted on fault: ``madvise`` defrag), of a
# 100 ms pass. With both thresholds raised, the freed memory stays in the heap and the next
# pass reuses it: 0 faults, 0.3 ms of kernel time, 110.6 -> 90.6 ms (medians of 10; AMD
# EPYC family 25 model 17). TensorFlow's BFC allocator keeps its memory the same way. The
# process keeps the peak of what it allocated (a few hundred MB for that pass).
# ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` set by the user win.
KEEP_FREED_BYTES = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # malloc.h


def keep_freed_memory(limit: int = KEEP_FREED_BYTES) -> bool:
    """Raise glibc's mmap and trim thresholds to ``limit`` bytes (unless the user set either
    variable), so that arrays up to that size are reused from the heap instead of mapped
    and faulted in again on every call. True if it took effect (glibc only)."""
    if any(v in os.environ for v in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False  # the user decided
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))


FREED_MEMORY_KEPT = keep_freed_memory()


# --- per-thread scratch buffers ----------------------------------------------------------

_local = threading.local()


def scratch(slot: str, shape, dtype) -> np.ndarray:
    """A reusable per-thread buffer of at least ``shape`` elements, returned as a view of
    that exact shape. Reusing it avoids the page faults of a fresh multi-megabyte allocation
    on every call."""
    cache = getattr(_local, "bufs", None)
    if cache is None:
        cache = _local.bufs = {}
    key = (slot, np.dtype(dtype))
    need = math.prod(shape)  # (np.prod: 3 µs, a tenth of a batch-1 convolution's overhead)
    buf = cache.get(key)
    if buf is None or buf.size < need:
        buf = cache[key] = np.empty(need, dtype)
    return buf[:need].reshape(shape)
