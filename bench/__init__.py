"""Benchmarks: scratchnet's fast kernels against the NumPy reference and TensorFlow.

Run everything and write the report:   python -m bench.report
Smoke test (every benchmark once):     pytest bench --benchmark-disable -q
See docs/performance.md.
"""
