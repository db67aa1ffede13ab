"""Thread settings shared by every benchmark process, applied before NumPy or TF load.

All implementations get the same number of threads (the cores we may use): OpenBLAS
and scratchnet's worker pool through environment variables read at library load, and
TensorFlow through ``tf.config.threading`` before its first op. OpenBLAS's idle spin is
left to scratchnet (``kernels._runtime.shorten_blas_spin``), so the benchmark times what
a user's process runs.
"""

from __future__ import annotations

import os


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


THREADS = int(os.environ.get("BENCH_THREADS", cores()))


def apply() -> None:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "SCRATCHNET_NUM_THREADS"):
        os.environ.setdefault(var, str(THREADS))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def onednn() -> bool:
    """Whether this process's TensorFlow runs its oneDNN kernels, as TF reports it.
    ``TF_ENABLE_ONEDNN_OPTS`` is read once, at import; unset, TF decides from the CPU (on
    here: this Zen 4 has AVX-512 VNNI/BF16; off on, e.g., Zen 3)."""
    import_tf()
    from tensorflow.python.util import _pywrap_util_port
    return bool(_pywrap_util_port.IsMklEnabled())


_tf = None


def import_tf():
    """TensorFlow with intra-op = inter-op = THREADS, set before its first op."""
    global _tf
    if _tf is None:
        apply()
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(THREADS)
        _tf = tf
    return _tf
