"""Running the real ``scratchnet`` command in a subprocess, and reading its error."""

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).with_name("scratchnet")
COMMAND = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "scratchnet.cli"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


def scratchnet(*args, cwd=None, timeout=900):
    return subprocess.run(COMMAND + [str(a) for a in args], capture_output=True, text=True, env=ENV,
                          cwd=cwd, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    """The error message: from the ``scratchnet: error:`` line to the end."""
    lines = stderr.rstrip("\n").splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("scratchnet: error: "))
    return lines[start:]


def assert_fails(result, status: int, message: str) -> list[str]:
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = error_lines(result.stderr)
    assert message in lines[0], lines
    return lines
