"""Output sizes and padding, with TensorFlow's rules.

``SAME``:  out = ceil(n / s); total = max((out - 1)·s + k - n, 0);
           before = total // 2, after = total - before  (the odd pixel goes bottom/right).
``VALID``: out = floor((n - k) / s) + 1, no padding.
"""

from __future__ import annotations


def output_size(n: int, k: int, stride: int, padding: str) -> tuple[int, int, int]:
    """Return ``(out, pad_before, pad_after)`` along one spatial axis."""
    if padding == "SAME":
        out = -(-n // stride)
        total = max((out - 1) * stride + k - n, 0)
        return out, total // 2, total - total // 2
    if padding == "VALID":
        if n < k:
            raise ValueError(f"VALID padding needs input size {n} >= window size {k}")
        return (n - k) // stride + 1, 0, 0
    raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
