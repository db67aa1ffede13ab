"""Run every benchmark in separate processes, interleaved over rounds, and write the
report of this CPU: ``bench/results/<cpu>/report.md`` (tables), ``report.png`` (bar chart),
``summary.json`` (the figures, for the side-by-side table) and the raw pytest-benchmark
JSON files in ``raw/`` (not committed). ``<cpu>`` is the CPU's slug (``bench.machine``:
model name, family and model), so a run on another machine adds its own folder instead
of overwriting; ``bench/results/README.md`` and the marked block of
``docs/performance.md`` then show every machine side by side.

    python -m bench.report                 3 rounds, full grids (sweep, inference); long
    python -m bench.report --rounds 5      what the issue's targets are judged by
    python -m bench.report --quick         1 round, 1 repetition, smoke grids: checks the
                                           pipeline (written to <cpu>/quick/, nothing else touched)
    python -m bench.report -k "inference"  a part (pytest -k): written to <cpu>/partial/, nothing else touched
    python -m bench.report --machines      only rebuild the side-by-side tables from summary.json files

Before round 1, ``scratchnet tune all`` (``--no-tune``: not) measures the convolution
candidates of every recipe not yet in this machine's tuning cache, so the fast rows run
what a tuned machine runs; the report lists the algorithm of every layer pass.

Each round runs three processes one after the other:

1. numpy + fast (scratchnet), and the sgemm yardstick,
2. TensorFlow with ``TF_ENABLE_ONEDNN_OPTS=0`` (oneDNN off; TF's default on CPUs without
   AVX-512 VNNI, e.g. Zen 3): tf.function, XLA and Keras ``fit``,
3. TensorFlow with ``TF_ENABLE_ONEDNN_OPTS=1``: the same three,

because ``TF_ENABLE_ONEDNN_OPTS`` is read once at import, and because TF's thread pools
and OpenBLAS's spinning threads would disturb each other in one process. Rounds
interleave the implementations in time, so a slow phase of a shared machine hits all of
them; each number reported is the median over rounds of the per-round medians (per step
for Keras ``fit``, whose one call runs ``steps_per_call`` steps). "TF best" is the fastest
of all six TensorFlow variants, per row.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from . import machine as machine_info
from .cases import CASES

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "performance.md"
DOCS_BEGIN, DOCS_END = "<!-- machines:begin (python -m bench.report --machines) -->", "<!-- machines:end -->"

TF_SET = "tf,tf-xla,tf-keras"
VARIANTS = [  # (tag, impls, extra environment)
    ("scratchnet", "numpy,fast", {}),
    ("tf", TF_SET, {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    ("tf-onednn", TF_SET, {"TF_ENABLE_ONEDNN_OPTS": "1"}),
]
IMPL_ORDER = ["numpy", "fast", "tf", "tf-xla", "tf-keras", "tf+onednn", "tf-xla+onednn", "tf-keras+onednn"]
TF_IMPLS = IMPL_ORDER[2:]
KERNEL_TF = ["tf", "tf-xla", "tf+onednn", "tf-xla+onednn"]  # no Keras variant for a single op


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
        if args.full:
            cmd.append("--full")
        if args.keras_steps:
            cmd.append(f"--keras-steps={args.keras_steps}")
        if args.only:
            cmd += ["-k", args.only]
        env = dict(os.environ, **extra)
        t0 = time.time()
        log(f"round {r} {tag}: load {loadavg()} ...")
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        log(f"round {r} {tag}: {time.time() - t0:.0f} s, exit {res.returncode}, load {loadavg()}")
        if res.returncode != 0:
            log(res.stdout[-3000:] + res.stderr[-3000:])


def tune_first(log) -> None:
    """``scratchnet tune all`` before round 1 (a subprocess, like the rounds): the fast rows
    then run what a user gets once the machine is tuned; shapes already in the cache are
    not measured again."""
    t0 = time.time()
    log(f"tune: load {loadavg()} ...")
    res = subprocess.run([sys.executable, "-m", "scratchnet.cli", "tune", "all"], cwd=ROOT, capture_output=True,
                         text=True)
    summary = [line for line in res.stdout.splitlines() if "measured now" in line]
    log(f"tune: {time.time() - t0:.0f} s, exit {res.returncode}, load {loadavg()}"
        + (f"; {summary[0]}" if summary else ""))
    if res.returncode != 0:
        log(res.stdout[-3000:] + res.stderr[-3000:])


def conv_plans() -> dict:
    """{recipe: {"train": plan, "eval": plan}}: the convolution algorithm and chunk (and the
    product of each large dense layer) of every layer pass the fast backend runs in a
    training step and in a batch-1,000 evaluation
    (``kernels.tuning.conv_plan``), with where each choice came from."""
    from scratchnet.commands.tune import conv_recipes
    from scratchnet.kernels import tuning
    from scratchnet.recipes import RECIPES
    from scratchnet.train import EVAL_BATCH

    def text(rows):
        measured = sum(r.source == "measured" for r in rows)
        return f"{tuning.plan_text(rows)} ({measured} of {len(rows)} measured)"
    return {name: {"train": text(tuning.conv_plan(name, RECIPES[name].batch_size)),
                   "eval": text(tuning.conv_plan(name, EVAL_BATCH, training=False))} for name in conv_recipes()}


def plan_markdown(plans: dict) -> str:
    if not plans:
        return ""
    lines = ["### Kernels the fast rows ran (`kernels.tuning.conv_plan`: each convolution's algorithm/chunk, "
             "+ = dx and dw in one Winograd pass; each large dense layer's product)", "",
             "| recipe | training step | evaluation, batch 1,000 |",
             "|---|---|---|"]
    lines += [f"| {name} | {p['train']} | {p['eval']} |" for name, p in plans.items()]
    return "\n".join(lines) + "\n"


def collect(raw: Path):
    """{(group, impl): median over rounds of the per-round median, per step}, the number of
    rounds per key, and the extra_info per group (impl-independent fields, plus
    ``cache_bytes`` from the scratchnet run)."""
    times, meta = defaultdict(list), {}
    for path in sorted(raw.glob("round*.json")):
        for b in json.loads(path.read_text())["benchmarks"]:
            info = b["extra_info"]
            steps = info.get("steps_per_call") or 1
            times[(b["group"], info["impl"])].append(b["stats"]["median"] / steps)
            kept = meta.setdefault(b["group"], {})
            for k, v in info.items():
                if k not in ("impl", "onednn", "steps_per_call", "gflops"):
                    kept.setdefault(k, v)
            if info["impl"] == "fast" and "cache_bytes" in info:
                kept["cache_bytes"] = info["cache_bytes"]
    return {k: statistics.median(v) for k, v in times.items()}, {k: len(v) for k, v in times.items()}, meta


def fmt_ms(t):
    return "" if t is None else (f"{t * 1e3:.2f}" if t < 0.1 else f"{t * 1e3:.0f}")


def fmt_rate(n):
    return "" if n is None else (f"{n / 1e3:.1f} k" if n >= 1e4 else f"{n:.0f}")


def speedup(r):
    return r["tf_best"] / r["t"]["fast"] if r.get("tf_best") and r["t"].get("fast") else None


def build_tables(med, meta):
    """sgemm GFLOPS and the rows of each table: {"kernels", "train", "sweep", "inference": [row]}."""
    sgemm = med.get(("sgemm 2048", "numpy"))
    sgemm_gf = meta["sgemm 2048"]["flops"] / sgemm / 1e9 if sgemm else None
    tables = {"kernels": [], "train": [], "sweep": [], "inference": []}
    kind = {"train step": "train", "sweep": "sweep", "inference": "inference"}
    for group, info in meta.items():
        if group == "sgemm 2048":
            continue
        t = {impl: med.get((group, impl)) for impl in IMPL_ORDER}
        tf_known = {i: t[i] for i in TF_IMPLS if t[i] is not None}
        best_impl = min(tf_known, key=tf_known.get) if tf_known else None
        row = dict(group=group, t=t, flops=info.get("flops"), tf_best=tf_known.get(best_impl),
                   tf_best_impl=best_impl, case=info.get("case"), batch=info.get("batch"),
                   cache_bytes=info.get("cache_bytes"))
        tables[kind.get(info.get("op"), "kernels")].append(row)
    tables["sweep"].sort(key=lambda r: (r["case"], r["batch"]))
    tables["inference"].sort(key=lambda r: (r["case"], r["batch"]))
    return sgemm_gf, tables


def sweep_ratios(rows) -> dict:
    """{recipe: {batch: speed-up}} of the sweep rows."""
    out = {}
    for r in rows:
        out.setdefault(r["case"], {})[r["batch"]] = speedup(r)
    return out


def _cells(r, impls):
    return [fmt_ms(r["t"][i]) for i in impls]


def _sp(r):
    sp = speedup(r)
    return f"**{sp:.2f}×**" if sp else ""


def markdown(sgemm_gf, tables, header: str) -> str:
    lines = [header, ""]
    lines += [f"sgemm yardstick (np.matmul 2048², float32, all threads, same run): **{sgemm_gf:.0f} GFLOPS**"
              if sgemm_gf else "sgemm: not measured", ""]
    if tables["kernels"]:
        lines += ["### Kernels (float32, median ms; GFLOPS and % of sgemm for `fast`; "
                  "speed-up = TF best time / fast time, > 1 means scratchnet is faster)", "",
                  "| kernel | numpy | fast | fast GFLOPS | % sgemm | " + " | ".join(KERNEL_TF)
                  + " | TF best | speed-up vs TF best |",
                  "|---|" + "---:|" * 10]
        for r in tables["kernels"]:
            t, fl = r["t"], r["flops"]
            gf = fl / t["fast"] / 1e9 if fl and t["fast"] else None
            lines.append("| " + " | ".join([
                r["group"], fmt_ms(t["numpy"]), fmt_ms(t["fast"]), f"{gf:.0f}" if gf else "",
                f"{100 * gf / sgemm_gf:.0f}%" if gf and sgemm_gf else "",
                *_cells(r, KERNEL_TF), r["tf_best_impl"] or "", _sp(r)]) + " |")
        shown = {r["case"] for r in tables["kernels"]}
        wino = sorted({c.name for c in CASES if c.winograd and c.name in shown})
        if wino:
            lines += ["", f"{', '.join(wino)}: Winograd, F(2×2, 5×5) (2.8× fewer multiplications than the direct "
                      "convolution) or, where the tuning cache measured it faster, F(4×4, 5×5) (6.25× fewer); its "
                      "GFLOPS and % of sgemm count the direct convolution's FLOPs (an effective rate). The `direct` "
                      "rows time the im2col + sgemm kernel on the same shapes: real FLOPs."]
        lines.append("")
    tf_head = " | ".join(TF_IMPLS)
    if tables["train"]:
        lines += ["### Full training step per recipe (float32, median ms, real MNIST batch of the recipe's size; "
                  "tf-keras = Keras `Model.fit` with `steps_per_execution`, per step)", "",
                  f"| recipe | numpy (reference) | fast | {tf_head} | TF best | speed-up vs TF best |",
                  "|---|" + "---:|" * (len(TF_IMPLS) + 4)]
        for r in tables["train"]:
            lines.append("| " + " | ".join([r["case"], *_cells(r, ["numpy", "fast"]), *_cells(r, TF_IMPLS),
                                             r["tf_best_impl"] or "", _sp(r)]) + " |")
        lines += ["", "An empty tf-keras cell: the recipe's network has no exact Keras version "
                  "(BatchNorm, layers without a bias; see `bench/keras_fit.py`).", ""]
    if tables["sweep"]:
        lines += ["### Training step against batch size (float32, median ms per step; µs/image = fast time / batch)",
                  "", f"| recipe | batch | fast | fast µs/image | {tf_head} | TF best | TF best µs/image "
                  "| speed-up vs TF best |", "|---|" + "---:|" * (len(TF_IMPLS) + 6)]
        for r in tables["sweep"]:
            b, t = r["batch"], r["t"]
            per = lambda v: f"{v / b * 1e6:.0f}" if v else ""  # noqa: E731
            lines.append("| " + " | ".join([r["case"], str(b), fmt_ms(t["fast"]), per(t["fast"]),
                                             *_cells(r, TF_IMPLS), r["tf_best_impl"] or "", per(r["tf_best"]),
                                             _sp(r)]) + " |")
        batches = sorted({r["batch"] for r in tables["sweep"]})
        lines += ["", "The speed-ups of that table by batch size (how the ratio moves as the work grows):", "",
                  "| recipe | " + " | ".join(f"batch {b}" for b in batches) + " |", "|---|" + "---:|" * len(batches)]
        for case, ratios in sweep_ratios(tables["sweep"]).items():
            lines.append(f"| {case} | " + " | ".join(f"{ratios[b]:.2f}×" if ratios.get(b) else "" for b in batches)
                         + " |")
        lines.append("")
    if tables["inference"]:
        lines += ["### Inference: the evaluation forward pass (float32, median ms; images/s = batch / time)", "",
                  "scratchnet: `Trainer.logits` (training=False, what every evaluation runs); TF: a `tf.function` "
                  "of the tfnet twin, `training=False` (tf-keras: the Keras network's `predict_on_batch`). `Trainer.logits` "
                  "runs `Sequential.infer`, which keeps no backward cache; the last column is what the layers "
                  "still hold after the pass.", "",
                  "| recipe | batch | numpy | fast | fast images/s | " + tf_head
                  + " | TF best | TF best images/s | speed-up vs TF best | caches kept (MB) |",
                  "|---|" + "---:|" * (len(TF_IMPLS) + 8)]
        for r in tables["inference"]:
            b, t = r["batch"], r["t"]
            rate = lambda v: fmt_rate(b / v) if v else ""  # noqa: E731
            cache = f"{r['cache_bytes'] / 1e6:.1f}" if r.get("cache_bytes") is not None else ""
            lines.append("| " + " | ".join([r["case"], str(b), *_cells(r, ["numpy", "fast"]), rate(t["fast"]),
                                             *_cells(r, TF_IMPLS), r["tf_best_impl"] or "", rate(r["tf_best"]),
                                             _sp(r), cache]) + " |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def chart(tables, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    panels = [(tables[k], title) for k, title in (("kernels", "kernels"), ("train", "training step"),
                                                  ("inference", "inference")) if tables[k]]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 8), squeeze=False,
                             gridspec_kw={"width_ratios": [3 if t == "kernels" else 2 for _, t in panels]})
    axes = axes[0]
    for ax, (rows, title) in zip(axes, panels):
        rows = [r for r in rows if r["t"]["fast"] and r["tf_best"]]
        names = [r["group"].replace("train step ", "").replace("inference ", "") for r in rows]
        vals = [r["tf_best"] / r["t"]["fast"] for r in rows]
        ref = [r["tf_best"] / r["t"]["numpy"] if r["t"]["numpy"] else 0 for r in rows]
        y = range(len(rows))
        ax.barh([v + 0.2 for v in y], vals, height=0.4, label="scratchnet fast", color="tab:blue")
        ax.barh([v - 0.2 for v in y], ref, height=0.4, label="scratchnet numpy reference", color="tab:gray")
        ax.axvline(1.0, color="tab:red", lw=1.5, label="TensorFlow (best of its variants)")
        ax.set_yticks(list(y), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # decade labels only: no overlapping 3×10⁻¹
        ax.set_xlabel("TF's best time / time  (> 1: faster than TF)")
        ax.set_title(title)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 1))  # the shared legend sits below the panels
    fig.savefig(path, dpi=110)


# --- the side-by-side tables over machines -------------------------------------------------------

SIDE_ROWS = ("train", "inference")  # and one line per recipe for the sweep
MIN_SUMMARY_ROUNDS = 3  # a -k run of at least this many rounds writes its summary.json (shown side by side)


def summary(machine: dict, cmd: str, started: str, rounds: int, sgemm_gf, tables) -> dict:
    rows = {}
    for kind, table in tables.items():
        for r in table:
            rows[r["group"]] = {"kind": kind, "case": r["case"], "batch": r["batch"], "fast": r["t"]["fast"],
                                "speedup": speedup(r), "cache_bytes": r.get("cache_bytes"),
                                "numpy": r["t"]["numpy"], "tf_best": r["tf_best"], "tf_best_impl": r["tf_best_impl"],
                                "times": {k: v for k, v in r["t"].items() if v is not None}}
    return {"machine": machine, "command": cmd, "started": started, "rounds": rounds,
            "sgemm_gflops": sgemm_gf, "rows": rows}


def load_summaries(out: Path) -> list[dict]:
    """Every ``<cpu>/summary.json`` (full runs) and ``<cpu>/<part>/summary.json`` (``-k`` runs
    of 3 rounds or more; never ``quick/``), oldest first."""
    found = []
    for path in sorted([*out.glob("*/summary.json"), *out.glob("*/*/summary.json")]):
        if path.parent.name == "quick":
            continue
        s = json.loads(path.read_text())
        s["folder"] = path.parent.relative_to(out).as_posix()
        found.append(s)
    return sorted(found, key=lambda s: s.get("started", ""))


def side_by_side(summaries: list[dict], link_prefix: str = "") -> str:
    """Every machine's speed-ups (TF best / fast) per recipe, one column per machine."""
    if not summaries:
        return "No per-CPU results yet: run `python -m bench.report --rounds 5`.\n"
    lines = ["| | " + " | ".join(f"[{s['machine']['cpu']} `{s['folder']}`]({link_prefix}{s['folder']}/report.md)"
                                  for s in summaries) + " |",
             "|---|" + "---|" * len(summaries)]
    facts = [("family / model", lambda s: f"{s['machine'].get('family') or '?'} / {s['machine'].get('model') or '?'}"),
             ("vector extensions", lambda s: " ".join(s["machine"].get("vector_extensions") or []) or "not recorded"),
             ("sgemm 2048³ (GFLOPS)", lambda s: f"{s['sgemm_gflops']:.0f}" if s.get("sgemm_gflops") else "?"),
             ("threads", lambda s: str(s["machine"].get("threads", "?"))),
             ("run", lambda s: f"{s.get('started', '?')}, {s.get('rounds', '?')} round(s): `{s.get('command', '?')}`")]
    for name, fn in facts:
        lines.append(f"| {name} | " + " | ".join(fn(s) for s in summaries) + " |")
    groups = []
    for s in summaries:
        for g, r in s["rows"].items():
            if r["kind"] in SIDE_ROWS and g not in groups:
                groups.append(g)
    order = {k: i for i, k in enumerate(SIDE_ROWS)}
    groups.sort(key=lambda g: next((order[s["rows"][g]["kind"]] for s in summaries if g in s["rows"]), 9))
    lines.append("| **speed-up vs TF best** (fast vs TF best, its variant) | " + " | ".join("" for _ in summaries) + " |")
    for g in groups:
        cells = []
        for s in summaries:
            r = s["rows"].get(g)
            if not r or not r.get("fast") or not r.get("tf_best"):
                cells.append("")
                continue
            sp = r.get("speedup") or r["tf_best"] / r["fast"]
            cells.append(f"**{sp:.2f}×** ({fmt_ms(r['fast'])} vs {fmt_ms(r['tf_best'])} ms, "
                         f"{r['tf_best_impl']})")
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    sweeps = {}
    for i, s in enumerate(summaries):
        for r in s["rows"].values():
            if r["kind"] == "sweep" and r.get("speedup"):
                sweeps.setdefault(r["case"], [dict() for _ in summaries])[i][r["batch"]] = r["speedup"]
    for case, per_machine in sweeps.items():
        cells = [" / ".join(f"{v:.2f}×" for _, v in sorted(d.items())) +
                 (f" (batch {', '.join(str(b) for b in sorted(d))})" if d else "") for d in per_machine]
        lines.append(f"| sweep {case}: speed-up by batch | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_machines(out: Path, docs: Path | None = DOCS) -> None:
    """``out/README.md`` (index) and the marked block of ``docs`` from every ``summary.json``."""
    summaries = load_summaries(out)
    index = ["# Benchmark results, one folder per CPU", "",
             "Each folder holds one machine's `report.md` (all tables), `report.png` and `summary.json`, written "
             "by `python -m bench.report --rounds 5` on that machine (the folder name is the CPU's slug: model "
             "name, family and model); a folder inside one holds a part of the benchmarks (`-k`) measured over "
             f"{MIN_SUMMARY_ROUNDS} rounds or more, whose command the table shows. This table is rebuilt from the "
             "`summary.json` files by `python -m bench.report --machines`.", "", side_by_side(summaries)]
    (out / "README.md").write_text("\n".join(index))
    if docs is not None and docs.exists():
        text = docs.read_text()
        if DOCS_BEGIN in text and DOCS_END in text:
            rel = os.path.relpath(out, docs.parent).replace(os.sep, "/") + "/"
            head, rest = text.split(DOCS_BEGIN, 1)
            _, tail = rest.split(DOCS_END, 1)
            docs.write_text(head + DOCS_BEGIN + "\n" + side_by_side(summaries, rel) + DOCS_END + tail)


# --- main -------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true",
                   help="1 round, 1 repetition each, smoke grids (unless --full): a pipeline check, written to "
                        "OUT/<cpu>/quick/")
    p.add_argument("--full", action="store_true", default=None,
                   help="full grids (the default, except with --quick)")
    p.add_argument("--min-rounds", type=int, default=5, help="pytest-benchmark rounds per benchmark and process")
    p.add_argument("--max-time", type=float, default=0.5, help="pytest-benchmark seconds per benchmark")
    p.add_argument("--keras-steps", type=int, help="tf-keras steps per fit call (default: adaptive, ~0.4 s a call)")
    p.add_argument("-k", dest="only", help="pytest -k expression to select benchmarks")
    p.add_argument("--out", type=Path, default=OUT, help="results root (one folder per CPU inside)")
    p.add_argument("--no-run", action="store_true", help="rebuild the report from the JSON already in raw/")
    p.add_argument("--no-tune", action="store_true",
                   help="do not run `scratchnet tune all` first (the fast rows then use whatever the tuning "
                        "cache holds, or the built-in rules)")
    p.add_argument("--machines", action="store_true",
                   help="only rebuild OUT/README.md and docs/performance.md's side-by-side table")
    args = p.parse_args(argv)
    for option, value, low in (("--rounds", args.rounds, 1), ("--min-rounds", args.min_rounds, 1),
                               ("--keras-steps", args.keras_steps, 1)):
        if value is not None and value < low:
            p.error(f"{option} must be at least {low}, got {value}")
    if not args.max_time > 0:
        p.error(f"--max-time must be more than 0 seconds, got {args.max_time}")
    if args.machines:
        write_machines(args.out, DOCS if args.out.resolve() == OUT.resolve() else None)
        print(side_by_side(load_summaries(args.out)))
        return 0
    if args.quick:
        args.rounds, args.min_rounds, args.max_time = 1, 1, 0.01
    if args.full is None:
        args.full = not args.quick
    machine = machine_info.describe()
    # a quick run or a -k selection must not replace the machine's full report
    folder = args.out / machine["slug"] / ("quick" if args.quick else "partial" if args.only else "")
    partial = args.quick or bool(args.only)
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    log_lines = []

    def log(msg):
        print(msg, flush=True)
        log_lines.append(msg)

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cmd = "python -m bench.report " + " ".join(argv if argv is not None else sys.argv[1:])
    run_file = raw / "run.json"  # the measuring run's command and log, for --no-run rebuilds
    plans = {}
    if args.no_run:
        if run_file.exists():
            run = json.loads(run_file.read_text())
            cmd, started, log_lines[:], plans = run["command"], run["started"], run["log"], run.get("plans", {})
    else:
        for old in raw.glob("round*.json"):
            old.unlink()
        if not (args.quick or args.no_tune):
            tune_first(log)
        plans = conv_plans()
        for r in range(1, args.rounds + 1):
            run_round(r, args, raw, log)
        run_file.write_text(json.dumps({"command": cmd, "started": started, "log": log_lines, "plans": plans}))
    med, counts, meta = collect(raw)
    sgemm_gf, tables = build_tables(med, meta)
    rounds = max(counts.values(), default=0)
    warning = ("**A pipeline check (`--quick`): one repetition, smoke grids. These are not measurements.**\n\n"
               if args.quick else "")
    header = (f"## Benchmark report: {machine['cpu']} (`{machine['slug']}`)\n\n{warning}"
              f"Command: `{cmd.strip()}` — started {started}, {rounds} round(s).\n\n"
              f"Machine: {machine_info.one_line(machine)}.\n\n"
              "Process log (load average = 1, 5, 15 min):\n\n```\n" + "\n".join(log_lines) + "\n```")
    text = markdown(sgemm_gf, tables, header) + ("\n" + plan_markdown(plans) if plans else "")
    (folder / "report.md").write_text(text)
    chart(tables, folder / "report.png")
    measured = not partial or (not args.quick and rounds >= MIN_SUMMARY_ROUNDS)  # a -k part of enough rounds too
    if measured:
        (folder / "summary.json").write_text(json.dumps(summary(machine, cmd.strip(), started, rounds, sgemm_gf,
                                                                tables), indent=1) + "\n")
    if not partial:
        write_machines(args.out, DOCS if args.out.resolve() == OUT.resolve() else None)
    print(text)
    print(f"wrote {folder / 'report.md'} and {folder / 'report.png'}"
          + (f", {folder / 'summary.json'}" if measured else "") + ("" if partial else f", {args.out / 'README.md'}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
