"""This machine's CPU as ``/proc/cpuinfo`` describes it: what the tuning cache is keyed by,
what a sweep groups its benchmarks by and ``bench.report`` files reports under (``slug``)."""

from __future__ import annotations

import platform
import re
from pathlib import Path


def cpuinfo(text: str | None = None) -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (``text`` for tests); {} if unreadable."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def model_name(info: dict[str, str]) -> str:
    """The CPU's model name (else the platform's word for it)."""
    return info.get("model name") or platform.processor() or platform.machine() or "unknown-cpu"


def slug(info: dict[str, str]) -> str:
    """``<model name>-f<family>m<model>`` in lower case, without trademarks, "CPU" and clock:
    ``amd-epyc-f25m17``. The model name alone does not tell CPUs apart (a virtual machine
    may report just "AMD EPYC" for Zen 3 and Zen 4 alike), the family and model do."""
    name = re.sub(r"\((r|tm)\)|\bcpu\b|@.*$|\bprocessor\b|\d+-core", " ", model_name(info), flags=re.I)
    name = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown-cpu"
    if "cpu family" in info and "model" in info:
        name += f"-f{info['cpu family']}m{info['model']}"
    return name
