"""pytest-benchmark setup: thread environment, the ``--impls`` choice, labels.

    pytest bench                              every benchmark, every implementation, one process
    pytest bench --impls numpy,fast           without TensorFlow
    pytest bench --benchmark-disable -q       smoke test: each benchmark runs once, untimed
    python -m bench.report                    the real thing (separate processes, rounds, report)
"""

from __future__ import annotations

from . import env

env.apply()  # before NumPy/TF are imported by the test modules

from .cases import IMPLS  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--impls", default=",".join(IMPLS),
                     help=f"comma-separated implementations to benchmark (default: all of {','.join(IMPLS)})")


def pytest_generate_tests(metafunc):
    if "impl" in metafunc.fixturenames:
        impls = [i for i in metafunc.config.getoption("impls").split(",") if i]
        metafunc.parametrize("impl", impls)


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
    benchmark(fn)
    stats = getattr(benchmark, "stats", None)
    if flops and stats is not None and getattr(stats, "stats", None) is not None:
        benchmark.extra_info["gflops"] = flops / stats.stats.median / 1e9
