"""Draw step-size.png for page 8: the error of central differences against the step h.

    .venv/bin/python docs/learn/figures/step_size.py      (needs matplotlib: pip install -e '.[bench]')

d/dx tanh(x) at x = 0.5, by the 2nd- and 4th-order central differences of
scratchnet.gradcheck, in float64 and float32, against the exact 1 - tanh(0.5)².
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def errors(dtype, hs):
    x0, exact = dtype(0.5), 1 - np.tanh(0.5) ** 2
    f = lambda x: np.tanh(dtype(x))  # noqa: E731
    second, fourth = [], []
    for h in hs:
        h = dtype(h)
        c2 = (f(x0 + h) - f(x0 - h)) / (2 * h)
        c4 = (-f(x0 + 2 * h) + 8 * f(x0 + h) - 8 * f(x0 - h) + f(x0 - 2 * h)) / (12 * h)
        second.append(max(abs(float(c2) - exact), 1e-17))
        fourth.append(max(abs(float(c4) - exact), 1e-17))
    return second, fourth


def main():
    hs = np.logspace(-9, -0.5, 120)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for dtype, style in ((np.float64, "-"), (np.float32, ":")):
        second, fourth = errors(dtype, hs)
        name = np.dtype(dtype).name
        ax.loglog(hs, second, style, color="tab:blue", label=f"2nd order, {name}")
        ax.loglog(hs, fourth, style, color="tab:red", label=f"4th order, {name}")
    ax.axvline(1e-3, color="gray", lw=0.8)
    ax.text(1.15e-3, 3e-16, "h = 1e-3\n(check_gradients)", fontsize=8, color="gray")
    ax.set_xlabel("step h")
    ax.set_ylabel("|numeric − exact| of d tanh/dx at 0.5")
    ax.set_ylim(1e-17, 1)
    ax.set_title("Truncation (falls with h) against round-off (rises as 1/h)", fontsize=10)
    ax.legend(fontsize=8, loc="lower left", ncol=2)
    fig.tight_layout()
    out = Path(__file__).with_name("step-size.png")
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
