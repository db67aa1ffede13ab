"""Kernel benchmarks at the recipes' real shapes (``bench.cases``), plus the machine's
sgemm rate measured in the same run (the yardstick for "% of sgemm")."""

from __future__ import annotations

import numpy as np
import pytest

from .cases import CASES, KERNEL_IMPLS, build
from .conftest import record

SUPPORTED_IMPLS = KERNEL_IMPLS
PAIRS = [(c, op) for c in CASES for op in c.ops]
SGEMM_N = 2048


@pytest.mark.parametrize("case,op", PAIRS, ids=[f"{c.name.replace(' ', '-')}-{op}" for c, op in PAIRS])
def test_op(benchmark, case, op, impl):
    fn = build(case, op, impl)
    if fn is None:
        pytest.skip(f"{impl} has no separate {op} for {case.kind}")
    record(benchmark, fn, group=f"{case.name} {op}", impl=impl, flops=case.flops(op),
           case=case.name, op=op)


def test_sgemm(benchmark, impl):
    """np.matmul on 2048×2048 float32 with all BLAS threads: the practical peak."""
    if impl != "numpy":
        pytest.skip("measured once per run, with the numpy implementation")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((SGEMM_N, SGEMM_N)).astype(np.float32)
    b = rng.standard_normal((SGEMM_N, SGEMM_N)).astype(np.float32)
    out = np.empty_like(a)
    record(benchmark, lambda: np.matmul(a, b, out=out), group="sgemm 2048", impl="numpy",
           flops=2.0 * SGEMM_N ** 3, case="sgemm", op="2048^3")
