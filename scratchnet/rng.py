"""Saving and restoring a NumPy generator's exact state as plain integers (checkpoints are
``.npz`` files read without pickle, so the state cannot be stored as a Python dict)."""

from __future__ import annotations

import numpy as np

MASK64 = 2**64 - 1


def generator_state(rng: np.random.Generator) -> np.ndarray:
    """A PCG64 generator's state as uint64 words: [state_hi, state_lo, inc_hi, inc_lo, has_uint32, uinteger]."""
    s = rng.bit_generator.state
    if s["bit_generator"] != "PCG64":
        raise TypeError(f"only PCG64 generators can be saved, got {s['bit_generator']}")
    words = [w for v in (s["state"]["state"], s["state"]["inc"]) for w in (v >> 64, v & MASK64)]
    return np.array(words + [s["has_uint32"], s["uinteger"]], np.uint64)


def set_generator_state(rng: np.random.Generator, words: np.ndarray) -> None:
    w = [int(v) for v in words]
    rng.bit_generator.state = {"bit_generator": "PCG64",
                               "state": {"state": (w[0] << 64) | w[1], "inc": (w[2] << 64) | w[3]},
                               "has_uint32": w[4], "uinteger": w[5]}
