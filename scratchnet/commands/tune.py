"""``scratchnet tune``: time the convolution candidates of recipes (and the products of their
large dense layers) on this machine, cache the fastest (``scratchnet.kernels.tuning``),
print what each layer will run, and run each recipe's step once so that every kernel it
uses is compiled into the Numba cache."""

from __future__ import annotations

import os
import time

import numpy as np

SHOWN = 8  # candidates printed per row (the fastest; the rest are counted)


def conv_recipes() -> list[str]:
    from ..kernels.tuning import conv_layers, dense_layers
    from ..recipes import RECIPES
    return [name for name in RECIPES if conv_layers(name, 1) or dense_layers(name, 1)]


def _shape(key) -> str:
    if key[0] == "dense":
        return f"dense {key[2]}→{key[3]}"
    _, h, w, c, kh, kw, f, s, pads, _ = key
    return f"{h}x{w}x{c} {kh}x{kw}→{f} s{s} {'SAME' if any(pads) else 'VALID'}"


def _passes(first: bool, training: bool, key) -> list[str]:
    from ..kernels.tuning import tunable
    if not training:
        return ["fwd"]
    return ["fwd", "dw"] + ([] if first else ["dx"] + (["bwd"] if tunable("bwd", key) else []))


def _dense_passes(first: bool, training: bool, key) -> list[str]:
    from ..kernels.tuning import tunable
    passes = ["dense-fwd"] + (["dense-dw"] + ([] if first else ["dense-dx"]) if training else [])
    return [p for p in passes if tunable(p, key)]


def tune_command(args) -> int:
    from ..kernels import tuning
    from ..recipes import RECIPES
    from ..train import EVAL_BATCH

    names = conv_recipes() if not args.recipes or "all" in args.recipes else list(dict.fromkeys(args.recipes))
    dtype = np.dtype(args.dtype)
    eval_batches = [n for n in (args.eval_batch or (EVAL_BATCH, 1)) if n]
    st = tuning.store()
    m = st.machine
    print(f"machine: {m['cpu']} ({m['cpu_id'] or 'no cpuinfo'}), {m['threads']} worker thread(s); "
          f"vector extensions: {' '.join(m['vector']) or 'none listed'}")
    print(f"libraries: NumPy {m['numpy']}, Numba {m['numba']}, BLAS {m['blas']}; kernel version {m['kernels']}")
    print(f"cache: {st.path or 'memory only (the folder cannot be written)'}")
    print(f"times: the fastest of {args.repeats} round(s) after one warm-up call, ms; * marks the built-in rule's "
          f"choice, which stays unless another is {tuning.MARGIN:.0%} faster; 'vs built-in' = its time / the "
          "chosen one's\n")
    width = max(len("recipe"), *map(len, names))
    print(f"{'recipe':<{width}} {'layer':<6} {'batch':>5} {'pass':<4} {'shape':<24} {'chosen':<14} {'ms':>8} "
          f"{'vs built-in':>11}  candidates (ms)")
    done: set[str] = set()
    printed: dict[tuple, str] = {}  # a recipe's work list -> the first recipe printed with it
    started, fresh = time.perf_counter(), 0
    for name in names:
        recipe = RECIPES[name]
        runs = [(args.batch_size or recipe.batch_size, True)] + [(n, False) for n in eval_batches]
        work = tuple((layer.name, batch, pass_, key) for batch, training in runs
                     for layer, shape, first in tuning.conv_layers(recipe, batch)
                     for key in [tuning.layer_key(layer, shape, dtype)] for pass_ in _passes(first, training, key))
        work += tuple((layer.name, batch, pass_, key) for batch, training in runs
                      for layer, key, first in tuning.dense_layers(recipe, batch, dtype)
                      for pass_ in _dense_passes(first, training, key))
        if not work or work in printed:
            print(f"{name:<{width}} " + (f"(the same layers as {printed[work]})" if work else "(nothing to tune)"))
            continue
        printed[work] = name
        for layer, batch, pass_, key in work:
            text = tuning.key_text(pass_, key)
            if text not in done:
                fresh += args.force or text not in st.entries
                tuning.tune(pass_, key, repeats=args.repeats, force=args.force, into=st)
                done.update({text, tuning.key_text("dx", key), tuning.key_text("dw", key)} if pass_ == "bwd" else {text})
            print(_row(name, width, layer, batch, pass_, key, st, tuning))
    print(f"\n{fresh} layer pass(es) measured now, in {time.perf_counter() - started:.1f} s; the rest from the "
          f"cache (--force measures them again)\n{tuning.describe()}")
    compiled = sum(_compile(RECIPES[name], args.batch_size or RECIPES[name].batch_size, eval_batches, dtype)
                   for name in names)
    print(f"one training step and evaluation of each recipe run once, in {compiled:.1f} s: every kernel they use "
          "is in the Numba cache, so a run's first step does not compile")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if fresh and load > (os.cpu_count() or 1):
        print(f"note: load average {load:.1f} on {os.cpu_count()} CPUs while measuring: other processes shared the "
              "cores, so these timings are noisy; `scratchnet tune --force` on a quieter machine measures again")
    return 0


def _compile(recipe, batch: int, eval_batches: list[int], dtype) -> float:
    """One training step of ``recipe`` and one evaluation per batch size, on random read-only
    images (as ``load_mnist`` gives them), so that Numba compiles every kernel they use now,
    into its cache, and not in the first step of a run. Returns the seconds taken."""
    from ..train import Trainer
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    images = rng.random((max([batch, *eval_batches]), 28, 28, 1)).astype(dtype)
    images.flags.writeable = False
    labels = rng.integers(0, 10, len(images))
    trainer = Trainer(recipe, seed=0, dtype=dtype)
    trainer.train_step(images[:batch], labels[:batch])
    for n in eval_batches:
        trainer.logits(images[:n])
    return time.perf_counter() - started


def _row(recipe, width, layer, batch, pass_, key, st, tuning) -> str:
    ranked = tuning.ranking(pass_, key, st=st)
    builtin = str(tuning.builtin(pass_, key))
    ms = dict(ranked)
    choice, best = tuning.pick(pass_, key, st=st)
    chosen = str(choice)
    vs = f"{ms[builtin] / best:.2f}×" if builtin in ms and best > 0 else ""
    shown = ", ".join(f"{c}{'*' if c == builtin else ''} {t:.2f}" for c, t in ranked[:SHOWN])
    if len(ranked) > SHOWN:
        rest = f" (+{len(ranked) - SHOWN} slower"
        rest += f"; built-in {builtin} {ms[builtin]:.2f})" if builtin in dict(ranked[SHOWN:]) else ")"
        shown += rest
    pass_ = pass_.removeprefix("dense-")
    return (f"{recipe:<{width}} {layer:<6} {batch:>5} {pass_:<4} {_shape(key):<24} {chosen:<14} {best:8.2f} "
            f"{vs:>11}  {shown}")
