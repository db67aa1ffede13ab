"""``scratchnet plot``: overlay the curves of several runs in one figure."""

from __future__ import annotations


def plot(args) -> int:
    from ..plot import plot as draw
    print(f"wrote {draw(args.runs, args.out)}")
    return 0
