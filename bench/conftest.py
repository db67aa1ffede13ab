"""pytest-benchmark setup: thread environment, the ``--impls`` choice, labels.

    pytest bench                              every benchmark, every implementation, one process
    pytest bench --impls numpy,fast           without TensorFlow
    pytest bench --benchmark-disable -q       smoke test: each benchmark runs once, untimed
    pytest bench --full                       also the whole batch-size sweep and every inference recipe
    python -m bench.report                    the real thing (separate processes, rounds, --full, report)

A test module lists the implementations it offers in ``SUPPORTED_IMPLS`` (default: all),
and its parameter grids in ``bench_params(full) -> {argnames: values}``: the smoke run
(without ``--full``) takes a small grid that still runs every code path once.
"""

from __future__ import annotations

from . import env

env.apply()  # before NumPy/TF are imported by the test modules

import scratchnet.kernels  # noqa: E402,F401  (shortens OpenBLAS's idle spin before any timing, as in training)

from .cases import IMPLS  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--impls", default=",".join(IMPLS),
                     help=f"comma-separated implementations to benchmark (default: all of {','.join(IMPLS)})")
    parser.addoption("--full", action="store_true",
                     help="the full grids: batch-size sweep of every sweep recipe, inference of every "
                          "inference recipe (python -m bench.report passes it); default: a small smoke grid")
    parser.addoption("--keras-steps", type=int, default=None,
                     help="tf-keras: steps per fit call (steps_per_execution); default: chosen so that a "
                          "call lasts about 0.4 s (bench.keras_fit)")


def pytest_generate_tests(metafunc):
    if "impl" in metafunc.fixturenames:
        impls = [i for i in metafunc.config.getoption("impls").split(",") if i]
        supported = getattr(metafunc.module, "SUPPORTED_IMPLS", IMPLS)
        metafunc.parametrize("impl", [i for i in impls if i in supported])
    grids = getattr(metafunc.module, "bench_params", None)
    if grids is not None:
        for argnames, values in grids(metafunc.config.getoption("full")).items():
            if all(a.strip() in metafunc.fixturenames for a in argnames.split(",")):
                metafunc.parametrize(argnames, values, ids=[_id(v) for v in values])


def _id(value) -> str:
    return "-".join(map(str, value)) if isinstance(value, tuple) else str(value)


def keras_steps(config) -> int | None:
    """``--keras-steps``, or 2 in a smoke run (``--benchmark-disable``: one call, untimed)."""
    steps = config.getoption("keras_steps")
    if steps is None and config.getoption("benchmark_disable"):
        steps = 2
    return steps


def label(impl: str) -> str:
    """The implementation's name in reports; TF runs say whether oneDNN was on."""
    return impl + ("+onednn" if _is_tf(impl) and env.onednn() else "")


def _is_tf(impl: str) -> bool:
    return impl.startswith("tf")


def record(benchmark, fn, *, group: str, impl: str, flops: float | None = None, **info):
    """Warm ``fn`` up (JIT, tracing, first-touch allocations), then time it."""
    fn()
    fn()
    benchmark.group = group
    benchmark.extra_info.update(impl=label(impl), threads=env.THREADS,
                                 onednn=env.onednn() if _is_tf(impl) else None, **info)
    if flops:
        benchmark.extra_info["flops"] = flops
    steps = getattr(fn, "steps_per_call", None)
    if steps:  # one call runs several steps (tf-keras: fit with steps_per_execution)
        benchmark.extra_info["steps_per_call"] = steps
    benchmark(fn)
    stats = getattr(benchmark, "stats", None)
    if flops and stats is not None and getattr(stats, "stats", None) is not None:
        benchmark.extra_info["gflops"] = flops / stats.stats.median / 1e9
