"""This machine's CPU as ``/proc/cpuinfo`` describes it: what the tuning cache is keyed by,
what a sweep groups its benchmarks by, and what ``bench.machine`` files reports under."""

from __future__ import annotations

import platform
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
