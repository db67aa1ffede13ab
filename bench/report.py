"""Run every benchmark in separate processes, interleaved over rounds, and write the
report: ``bench/results/report.md`` (tables), ``bench/results/report.png`` (bar chart) and
the raw pytest-benchmark JSON files in ``bench/results/raw/``.

    python -m bench.report                 3 rounds (about 15 minutes on 2 cores)
    python -m bench.report --rounds 5
    python -m bench.report --quick         1 round, few repetitions: checks the pipeline

Each round runs three processes one after the other:

1. numpy + fast (scratchnet), and the sgemm yardstick,
2. TensorFlow with ``TF_ENABLE_ONEDNN_OPTS=0`` (oneDNN off; TF's default on CPUs without
   AVX-512 VNNI, e.g. Zen 3): tf.function and XLA,
3. TensorFlow with ``TF_ENABLE_ONEDNN_OPTS=1``: tf.function and XLA,

because ``TF_ENABLE_ONEDNN_OPTS`` is read once at import, and because TF's thread pools
and OpenBLAS's spinning threads would disturb each other in one process. Rounds
interleave the implementations in time, so a slow phase of a shared machine hits all of
them; each number reported is the median over rounds of the per-round medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from .cases import CASES

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results"

VARIANTS = [  # (tag, impls, extra environment)
    ("scratchnet", "numpy,fast", {}),
    ("tf", "tf,tf-xla", {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    ("tf-onednn", "tf,tf-xla", {"TF_ENABLE_ONEDNN_OPTS": "1"}),
]
IMPL_ORDER = ["numpy", "fast", "tf", "tf-xla", "tf+onednn", "tf-xla+onednn"]
TF_IMPLS = IMPL_ORDER[2:]


def loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def run_round(r: int, args, raw: Path, log) -> None:
    for tag, impls, extra in VARIANTS:
        path = raw / f"round{r}-{tag}.json"
        cmd = [sys.executable, "-m", "pytest", "bench", f"--impls={impls}", "-q", "-p", "no:cacheprovider",
               f"--benchmark-json={path}", "--benchmark-disable-gc", "--benchmark-warmup=off",
               f"--benchmark-min-rounds={args.min_rounds}", f"--benchmark-max-time={args.max_time}"]
        if args.only:
            cmd += ["-k", args.only]
        env = dict(os.environ, **extra)
        t0 = time.time()
        log(f"round {r} {tag}: load {loadavg()} ...")
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        log(f"round {r} {tag}: {time.time() - t0:.0f} s, exit {res.returncode}, load {loadavg()}")
        if res.returncode != 0:
            log(res.stdout[-3000:] + res.stderr[-3000:])


def collect(raw: Path):
    """{(group, impl): [median per round]}, plus flops and the case/op per group."""
    times, meta = defaultdict(list), {}
    for path in sorted(raw.glob("round*.json")):
        for b in json.loads(path.read_text())["benchmarks"]:
            info = b["extra_info"]
            times[(b["group"], info["impl"])].append(b["stats"]["median"])
            meta[b["group"]] = info
    return {k: statistics.median(v) for k, v in times.items()}, {k: len(v) for k, v in times.items()}, meta


def fmt_ms(t):
    return "" if t is None else (f"{t * 1e3:.2f}" if t < 0.1 else f"{t * 1e3:.0f}")


def build_tables(med, meta):
    sgemm = med.get(("sgemm 2048", "numpy"))
    sgemm_gf = meta["sgemm 2048"]["flops"] / sgemm / 1e9 if sgemm else None
    op_rows, train_rows = [], []
    for group, info in meta.items():
        if group == "sgemm 2048":
            continue
        t = {impl: med.get((group, impl)) for impl in IMPL_ORDER}
        tf_known = {i: t[i] for i in TF_IMPLS if t[i] is not None}
        best_impl = min(tf_known, key=tf_known.get) if tf_known else None
        row = dict(group=group, t=t, flops=info.get("flops"), tf_best=tf_known.get(best_impl), tf_best_impl=best_impl)
        (train_rows if info.get("op") == "train step" else op_rows).append(row)
    return sgemm_gf, op_rows, train_rows


def markdown(sgemm_gf, op_rows, train_rows, header: str) -> str:
    lines = [header, ""]
    lines += [f"sgemm yardstick (np.matmul 2048², float32, all threads, same run): **{sgemm_gf:.0f} GFLOPS**"
              if sgemm_gf else "sgemm: not measured", ""]
    lines += ["### Kernels (float32, median ms; GFLOPS and % of sgemm for `fast`; "
              "speed-up = TF best time / fast time, > 1 means scratchnet is faster)", "",
              "| kernel | numpy | fast | fast GFLOPS | % sgemm | tf | tf-xla | tf+onednn | tf-xla+onednn "
              "| TF best | speed-up vs TF best |",
              "|---|" + "---:|" * 10]
    for r in op_rows:
        t, fl = r["t"], r["flops"]
        gf = fl / t["fast"] / 1e9 if fl and t["fast"] else None
        sp = r["tf_best"] / t["fast"] if r["tf_best"] and t["fast"] else None
        lines.append("| " + " | ".join([
            r["group"], fmt_ms(t["numpy"]), fmt_ms(t["fast"]), f"{gf:.0f}" if gf else "",
            f"{100 * gf / sgemm_gf:.0f}%" if gf and sgemm_gf else "",
            *(fmt_ms(t[i]) for i in TF_IMPLS), r["tf_best_impl"] or "", f"**{sp:.2f}×**" if sp else ""]) + " |")
    wino = sorted({c.name for c in CASES if c.winograd})
    if wino:
        lines += ["", f"{', '.join(wino)}: Winograd F(2×2, 5×5), 2.8× fewer multiplications than the direct "
                  "convolution; its GFLOPS and % of sgemm count the direct convolution's FLOPs (an effective "
                  "rate). The `direct` rows time the im2col + sgemm kernel on the same shapes: real FLOPs."]
    lines += ["", "### Full training step per recipe (float32, median ms, real MNIST batch of the recipe's size)", "",
              "| recipe | numpy (reference) | fast | tf | tf-xla | tf+onednn | tf-xla+onednn | TF best "
              "| speed-up vs TF best |",
              "|---|" + "---:|" * 8]
    for r in train_rows:
        t = r["t"]
        sp = r["tf_best"] / t["fast"] if r["tf_best"] and t["fast"] else None
        lines.append("| " + " | ".join([
            r["group"].replace("train step ", ""), fmt_ms(t["numpy"]), fmt_ms(t["fast"]),
            *(fmt_ms(t[i]) for i in TF_IMPLS), r["tf_best_impl"] or "", f"**{sp:.2f}×**" if sp else ""]) + " |")
    return "\n".join(lines) + "\n"


def chart(op_rows, train_rows, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(14, 8), gridspec_kw={"width_ratios": [3, 2]})
    for ax, rows, title in ((axes[0], op_rows, "kernels"), (axes[1], train_rows, "training step")):
        rows = [r for r in rows if r["t"]["fast"] and r["tf_best"]]
        names = [r["group"].replace("train step ", "") for r in rows]
        vals = [r["tf_best"] / r["t"]["fast"] for r in rows]
        ref = [r["tf_best"] / r["t"]["numpy"] if r["t"]["numpy"] else 0 for r in rows]
        y = range(len(rows))
        ax.barh([v + 0.2 for v in y], vals, height=0.4, label="scratchnet fast", color="tab:blue")
        ax.barh([v - 0.2 for v in y], ref, height=0.4, label="scratchnet numpy reference", color="tab:gray")
        ax.axvline(1.0, color="tab:red", lw=1.5, label="TensorFlow (best of 4 variants)")
        ax.set_yticks(list(y), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # decade labels only: no overlapping 3×10⁻¹
        ax.set_xlabel("TF's best time / time  (> 1: faster than TF)")
        ax.set_title(title)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 1))  # the shared legend sits below both panels
    fig.savefig(path, dpi=110)


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numba
    import numpy
    versions = f"Python {platform.python_version()}, NumPy {numpy.__version__}, Numba {numba.__version__}"
    try:
        from importlib.metadata import version
        versions += f", TensorFlow {version('tensorflow-cpu')}"
    except Exception:  # noqa: BLE001
        pass
    from .env import THREADS
    return f"{cpu}, {os.cpu_count()} logical CPUs, {THREADS} threads for every implementation; {versions}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="1 round, 1-2 repetitions each: a pipeline check")
    p.add_argument("--min-rounds", type=int, default=5, help="pytest-benchmark rounds per benchmark and process")
    p.add_argument("--max-time", type=float, default=0.5, help="pytest-benchmark seconds per benchmark")
    p.add_argument("-k", dest="only", help="pytest -k expression to select benchmarks")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--no-run", action="store_true", help="rebuild the report from the JSON already in OUT/raw")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.min_rounds, args.max_time = 1, 1, 0.01
    raw = args.out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    log_lines = []

    def log(msg):
        print(msg, flush=True)
        log_lines.append(msg)

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cmd = "python -m bench.report " + " ".join(argv if argv is not None else sys.argv[1:])
    run_file = raw / "run.json"  # the measuring run's command and log, for --no-run rebuilds
    if args.no_run:
        if run_file.exists():
            run = json.loads(run_file.read_text())
            cmd, started, log_lines[:] = run["command"], run["started"], run["log"]
    else:
        for old in raw.glob("round*.json"):
            old.unlink()
        for r in range(1, args.rounds + 1):
            run_round(r, args, raw, log)
        run_file.write_text(json.dumps({"command": cmd, "started": started, "log": log_lines}))
    med, counts, meta = collect(raw)
    sgemm_gf, op_rows, train_rows = build_tables(med, meta)
    header = (f"## Benchmark report\n\nCommand: `{cmd.strip()}` — started {started}, "
              f"{max(counts.values(), default=0)} round(s).\n\nMachine: {machine()}.\n\n"
              "Process log (load average = 1, 5, 15 min):\n\n```\n" + "\n".join(log_lines) + "\n```")
    text = markdown(sgemm_gf, op_rows, train_rows, header)
    (args.out / "report.md").write_text(text)
    chart(op_rows, train_rows, args.out / "report.png")
    print(text)
    print(f"wrote {args.out / 'report.md'} and {args.out / 'report.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
