"""What "equal" means: tolerances and criteria per section and dtype, the ``Row`` of one
tensor's comparison and the ``Case`` that tabulates them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


SECTIONS = ("layers", "models", "optim", "schedules", "ema", "trajectories")

# section -> dtype -> tolerance of the criterion ("rel" in float64, "scaled" in float32)
TOLERANCES = {
    "float64": {"layers": 1e-10, "models": 1e-10, "optim": 1e-12, "schedules": 1e-14, "ema": 1e-12,
                "trajectories": 1e-8},
    "float32": {"layers": 1e-5, "models": 1e-5, "optim": 1e-6, "schedules": 1e-6, "ema": 1e-6,
                "trajectories": 1e-4},
}
# What is judged: "rel" (max relative error), "scaled" (max|a-b| / max|b|) or "norm"
# (||a-b||₂ / ||b||₂). Trajectories are judged on the norm in both dtypes: Adam moves an
# element whose gradient is near its ε by about lr·g/ε, so the round-off of that gradient
# (any summation order) becomes a parameter difference lr/ε times larger; single elements
# part while the tensor as a whole stays together. In float64 on conv-bn (lr 0.02, ε 1e-8)
# scratchnet's own two backends part by 5.7e-8 max rel err after 2 steps, their norms by
# ~1e-12 (docs/parity.md); in float32 single elements part by O(lr).
CRITERION = {"float64": {**dict.fromkeys(SECTIONS, "rel"), "trajectories": "norm"},
             "float32": {**dict.fromkeys(SECTIONS, "scaled"), "trajectories": "norm"}}
_CRITERION_NAMES = {"rel": "max rel err", "scaled": "scaled err", "norm": "norm err"}
# max rel err = max |a-b| / max(|a|+|b|, REL_FLOOR · max(|a|+|b|)): scratchnet.gradcheck.compare's
# definition with the floor at 1e-4 of the tensor's scale instead of 1e-6. Both engines round:
# an element that cancels to below 1e-4 of the scale (x·dy summed over a batch of 3, say)
# carries their round-off relative to the scale, not to itself.
REL_FLOOR = 1e-4


def tolerance(section: str, dtype) -> float:
    return TOLERANCES[np.dtype(dtype).name][section]


# --- rows, cases, tables ------------------------------------------------------------------------

@dataclass
class Row:
    tensor: str
    shape: tuple
    max_abs: float
    max_rel: float
    scaled: float
    norm: float
    error: float          # the value judged: max_rel, scaled or norm (see CRITERION)
    ok: bool
    tol: float = math.nan  # the tolerance this row was judged by


@dataclass
class Case:
    section: str
    name: str
    dtype: str
    tol: float
    criterion: str
    rows: list[Row] = field(default_factory=list)
    note: str = ""
    first_failure: str | None = None   # "tensor" (layers, models) or "step N: tensor" (trajectories)
    failing_step: int | None = None
    drift: dict = field(default_factory=dict)  # trajectories: step -> max error of the state
    resynced_at: str | None = None  # models: the max-pool below which layers take TF's inputs (ties)

    @property
    def ok(self) -> bool:
        return self.first_failure is None and all(r.ok for r in self.rows)

    @property
    def max_error(self) -> float:
        return max((r.error for r in self.rows), default=0.0)

    def add(self, tensor: str, ours, theirs, tol: float | None = None) -> Row:
        """Compare and append one row, judged by ``tol`` (default: the case's tolerance)."""
        row = compare_tensors(tensor, ours, theirs, self.criterion, self.tol if tol is None else tol)
        self.rows.append(row)
        if not row.ok and self.first_failure is None:
            self.first_failure = tensor
        return row

    def table(self) -> str:
        crit = _CRITERION_NAMES[self.criterion]
        head = (f"== {self.section}: {self.name} [{self.dtype}; pass if {crit} <= {self.tol:g}] "
                f"{'PASS' if self.ok else 'FAIL'}")
        lines = [head]
        if self.note:
            lines.append(f"   {self.note}")
        own_tol = any(r.tol != self.tol for r in self.rows)  # rows with their own tolerance
        lines.append(f"   {'tensor':<34} {'shape':<18} {'max abs err':>11} {'max rel err':>11} "
                     f"{'scaled err':>11} {'norm err':>11}{'  tolerance' if own_tol else ''}  result")
        for r in self.rows:
            lines.append(f"   {r.tensor:<34} {str(r.shape):<18} {r.max_abs:11.3e} {r.max_rel:11.3e} "
                         f"{r.scaled:11.3e} {r.norm:11.3e}{f'  {r.tol:9.2e}' if own_tol else ''}"
                         f"  {'ok' if r.ok else 'FAIL'}")
        if not self.ok:
            lines.append(f"   FIRST DIVERGENCE: {self.first_failure}")
        return "\n".join(lines)


def compare_tensors(tensor: str, ours, theirs, criterion: str, tol: float) -> Row:
    """One row: scratchnet's array against TensorFlow's (the reference)."""
    from scratchnet.gradcheck import compare

    a, b = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if a.shape != b.shape:
        return Row(tensor, b.shape, *[math.inf] * 5, False, tol)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        same = np.array_equal(a, b, equal_nan=True)
        return Row(tensor, a.shape, *[0.0 if same else math.inf] * 5, same, tol)
    c = compare(tensor, a, b)
    size = np.abs(a) + np.abs(b)
    floor = max(REL_FLOOR * float(size.max(initial=0.0)), np.finfo(np.float64).tiny)
    max_rel = float((np.abs(a - b) / np.maximum(size, floor)).max(initial=0.0))
    ref = float(np.abs(b).max(initial=0.0))
    scaled = c.max_abs / ref if ref > 0 else c.max_abs
    norm = _norm_distance(a, b)
    error = {"rel": max_rel, "scaled": scaled, "norm": norm}[criterion]
    return Row(tensor, tuple(a.shape), c.max_abs, max_rel, scaled, norm, error, bool(error <= tol), tol)


def _new_case(section, name, dtype, note="") -> Case:
    dtype = np.dtype(dtype)
    return Case(section, name, dtype.name, tolerance(section, dtype), CRITERION[dtype.name][section], note=note)


# --- layers ----------------------------------------------------------------------------------------


def _norm_distance(a, b) -> float:
    """||a - b||₂ / ||b||₂ (the "norm err" of ``compare_tensors``)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ref = float(np.linalg.norm(b))
    return float(np.linalg.norm(a - b)) / ref if ref > 0 else float(np.abs(a - b).max(initial=0.0))
