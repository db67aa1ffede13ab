"""What machine a benchmark ran on: CPU model, family/model, vector extensions, caches and
software versions, and the slug its results are filed under (``bench/results/<slug>/``).

A model name alone is not enough to tell CPUs apart (a virtual machine may report just
"AMD EPYC" for Zen 3 and Zen 4 alike), so the slug carries the family and model numbers:
``amd-epyc-f25m17``, ``intel-xeon-platinum-8375c-f6m106``.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from scratchnet.cpu import cpuinfo, model_name, slug

# The vector extensions that decide which kernels a CPU runs well, in /proc/cpuinfo's names.
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx_vnni", "avx512f", "avx512dq", "avx512bw", "avx512vl",
                "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def vector_extensions(info: dict) -> list[str]:
    flags = set(info.get("flags", "").split())
    return [f for f in VECTOR_FLAGS if f in flags]



def caches() -> str:
    """``L1d 32K, L2 1024K, L3 32768K`` (per core, from sysfs; '' if unknown)."""
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    parts = []
    for index in sorted(root.glob("index*")):
        try:
            level, kind = (index / "level").read_text().strip(), (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        parts.append(f"L{level}{'d' if kind == 'Data' else ''} {size}")
    return ", ".join(parts)


def versions() -> str:
    import numba
    import numpy

    text = f"Python {platform.python_version()}, NumPy {numpy.__version__}, Numba {numba.__version__}"
    try:
        from importlib.metadata import PackageNotFoundError, version
        for dist in ("tensorflow-cpu", "tensorflow", "keras"):
            try:
                text += f", {dist} {version(dist)}"
            except PackageNotFoundError:
                continue
    except ImportError:
        pass
    return text


def describe() -> dict:
    """Everything the report header and the per-CPU index need, JSON-ready."""
    from .env import THREADS

    info = cpuinfo()
    return {
        "cpu": info.get("model name", platform.processor() or "?"),
        "vendor": info.get("vendor_id", ""),
        "family": info.get("cpu family", ""), "model": info.get("model", ""), "stepping": info.get("stepping", ""),
        "slug": slug(info),
        "vector_extensions": vector_extensions(info),
        "caches": caches(),
        "logical_cpus": os.cpu_count(),
        "threads": THREADS,
        "versions": versions(),
    }


def one_line(m: dict) -> str:
    fam = f" (family {m['family']} model {m['model']})" if m.get("family") else ""
    ext = ", ".join(m.get("vector_extensions") or []) or "none recorded"
    cache = f"; caches seen by CPU 0: {m['caches']}" if m.get("caches") else ""
    return (f"{m['cpu']}{fam}, {m['logical_cpus']} logical CPUs, {m['threads']} threads for every "
            f"implementation; vector extensions: {ext}{cache}; {m['versions']}")
