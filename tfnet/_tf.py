"""The one place TensorFlow is imported (quietly), so that importing it stays lazy."""

from __future__ import annotations

import os


def import_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def tf_dtype(dtype):
    """The TensorFlow dtype of a NumPy dtype (float32 or float64)."""
    import numpy as np

    tf = import_tf()
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return tf.float32
    if dtype == np.float64:
        return tf.float64
    raise TypeError(f"tfnet works in float32 or float64, not {dtype}")
