"""The runs of ``scratchnet sweep`` and what a Dask worker does with each; no Dask here.

A run is one recipe × engine × seed with the sweep's training options. A worker trains it
with ``python -m scratchnet.cli train`` in a process of its own, single-threaded
(``PINNED``), into ``OUT/RECIPE-ENGINE-seedN/`` (the folder ``scratchnet train`` writes),
appending that process's output to ``OUT/logs/RECIPE-ENGINE-seedN.log``, which it keeps
locked while it runs: one process per run, whichever sweep asks. What to do is
read from the folder at each attempt: nothing there, train; a checkpoint short of the end,
resume it; the final test line written, nothing. ``OUT`` is the same path on the client and
on every worker (a shared filesystem: ``visible``).
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import scratchnet

from .cpu import cpuinfo, slug
from .errors import ScratchnetError, UsageError
from .recipes import RECIPES
from .report import override_flags, run_name

# One thread per training process: BLAS, Numba, scratchnet's pool and TensorFlow's pools.
PINNED = {"SCRATCHNET_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
          "OPENBLAS_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
NEW, INTERRUPTED, FINISHED = "new", "interrupted", "finished"

_running: dict[tuple[str, str], subprocess.Popen] = {}  # this worker's processes, by (sweep, run name)
_stopped: set[str] = set()  # the sweeps stopped here: their retries start nothing


class RunFailed(ScratchnetError):
    """A run's process exited non-zero; the message names its folder, its error and its log."""


@dataclass
class Run:
    recipe: str
    engine: str
    seed: int
    overrides: dict = field(default_factory=dict)  # recipes.OVERRIDES given to the sweep
    dtype: str | None = None                       # None: train's default (float32)

    @property
    def name(self) -> str:
        return run_name(self.recipe, self.engine, self.seed)

    @property
    def steps(self) -> int:
        return self.overrides.get("steps", RECIPES[self.recipe].steps)

    def state(self, out: Path) -> str:
        """``NEW``, ``INTERRUPTED`` or ``FINISHED``: what ``out``'s folder of this run holds.
        ``UsageError`` if it holds a run with other options, or a longer one."""
        folder = out / self.name
        if not (folder / "checkpoint.npz").is_file():
            return NEW
        config_path = folder / "config.json"
        if config_path.is_file():
            config = json.loads(config_path.read_text())
            found = _options(config.get("engine"), config.get("seed"), config.get("dtype"), config.get("overrides", {}))
            wanted = _options(self.engine, self.seed, self.dtype or "float32", self.overrides)
            if found != wanted:
                raise UsageError(f"{folder}: holds a run of {found}, not {wanted}; sweep into another --out")
        metrics = folder / "metrics.jsonl"
        lines = [json.loads(l) for l in metrics.read_text().splitlines() if l.strip()] if metrics.is_file() else []
        tests = [l["step"] for l in lines if l.get("split") == "test"]
        if tests and tests[-1] > self.steps:
            raise UsageError(f"{folder}: holds a run of {tests[-1]} steps, longer than this sweep's {self.steps}; "
                             "sweep into another --out")
        return FINISHED if tests and tests[-1] == self.steps else INTERRUPTED

    def train_args(self, out: Path, state: str) -> list[str]:
        """The ``scratchnet train`` arguments that start (``NEW``) or resume this run."""
        folder = out / self.name
        flags = shlex.split(override_flags(self.overrides)) + (["--dtype", self.dtype] if self.dtype else [])
        where = ["--resume", str(folder)] if state == INTERRUPTED else ["--out", str(folder)]
        return ["train", self.recipe, *where, "--engine", self.engine, "--seed", str(self.seed), *flags,
                "--no-progress"]


def _options(engine, seed, dtype, overrides: dict) -> str:
    """A run's options but its length, as words: ``tf, seed 2, float32, --lr 0.1``."""
    flags = override_flags({k: v for k, v in overrides.items() if k != "steps"})
    return ", ".join([str(engine), f"seed {seed}", str(dtype)] + ([flags] if flags else []))


def log_path(out: Path, name: str) -> Path:
    return out / "logs" / f"{name}.log"


def _last_error(log: Path) -> str:
    """The last ``scratchnet:`` line (an error, an interrupt) of the latest attempt in ``log``,
    else its last line."""
    lines = [l for l in log.read_text(errors="replace").split("\n== ")[-1].splitlines()[1:] if l.strip()]
    errors = [l for l in lines if l.startswith("scratchnet: ")]
    return (errors or lines or ["no output"])[-1]


@contextmanager
def _claimed(out: Path, name: str):
    """``name``'s log, open for appending and locked (``RunFailed`` if another process holds
    it): a process started with it as its output keeps the lock until it exits."""
    log = log_path(out, name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFailed(f"{out / name}: another process is still at it (it holds {log}): "
                            "a second sweep, or one killed without its runs") from None
        yield f


def _execute(sweep: str, name: str, log, argv: list[str], where: Path, env: dict, cwd: Path | None = None) -> None:
    """Run ``argv`` with its output appended to the open ``log``; ``RunFailed`` naming
    ``where`` if it fails."""
    if sweep in _stopped:
        raise RunFailed(f"{where}: not started, the sweep was stopped")
    log.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()}, worker pid {os.getpid()}: "
              f"{shlex.join(argv)}\n")
    log.flush()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **env})
    _running[sweep, name] = proc
    try:
        status = proc.wait()
    finally:
        del _running[sweep, name]
    if status != 0:
        raise RunFailed(f"{where}: exit {status}: {_last_error(Path(log.name))} (log: {log.name})")


def train_run(sweep: str, run: Run, out: str, options: list[str]) -> dict:
    """A Dask task of the sweep named ``sweep``: bring ``run`` to its end in ``out`` (global
    ``scratchnet`` ``options`` such as ``--data-dir`` first); ``{"name", "state"}`` with the
    state it found."""
    out = Path(out)
    with _claimed(out, run.name) as log:
        state = run.state(out)
        if state == NEW:  # lines of an attempt that died before its first checkpoint
            (out / run.name / "metrics.jsonl").unlink(missing_ok=True)
        if state != FINISHED:
            argv = [sys.executable, "-m", "scratchnet.cli", *options, *run.train_args(out, state)]
            _execute(sweep, run.name, log, argv, out / run.name, PINNED)
    return {"name": run.name, "state": state}


def running(sweep: str) -> list[str]:
    """The names of the sweep's runs training on this worker now."""
    return sorted(name for s, name in _running if s == sweep)


def stop_runs(sweep: str, timeout: float = 120) -> list[str]:
    """Stop the sweep named ``sweep`` here: start nothing more of it, SIGTERM this worker's
    trainings (each checkpoints the step it reached) and wait for them."""
    _stopped.add(sweep)
    procs = {name: proc for (s, name), proc in _running.items() if s == sweep}
    for proc in procs.values():
        proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return sorted(procs)


def cpu_slug() -> str:
    """This machine's CPU as ``bench.report`` files its reports: ``amd-epyc-f25m17``."""
    return slug(cpuinfo())


def bench_run(sweep: str, out: str, quick: bool, select: str | None) -> dict:
    """A Dask task: ``python -m bench.report`` (``--quick``, ``-k select``) of this machine
    into ``OUT/bench/<cpu slug>/`` (``quick/`` or ``partial/`` inside, as bench.report files
    them), from scratchnet's source checkout, where ``bench/`` is."""
    out, cpu = Path(out), cpu_slug()
    root = Path(scratchnet.__file__).resolve().parent.parent
    name = f"bench-{cpu}"
    if not (root / "bench" / "report.py").is_file():
        raise RunFailed(f"{name}: {socket.gethostname()} has no bench/ beside its scratchnet ({root}): "
                        "--bench needs a source checkout on every worker")
    argv = [sys.executable, "-m", "bench.report", "--out", str(out / "bench"), *(["--quick"] if quick else []),
            *(["-k", select] if select else [])]
    folder = out / "bench" / cpu / ("quick" if quick else "partial" if select else "")
    with _claimed(out, name) as log:
        _execute(sweep, name, log, argv, folder, {}, cwd=root)
    return {"name": name, "cpu": cpu, "report": str(folder / "report.md")}


def visible(token: str, text: str) -> str | None:
    """Why this worker cannot use the client's ``--out`` (the client wrote ``text`` into
    ``token`` there), or None."""
    where = f"{socket.gethostname()} (pid {os.getpid()})"
    try:
        if Path(token).read_text() != text:
            return f"{where} reads another file at {token}"
    except OSError as e:
        return f"{where} cannot read {token}: {e.strerror or e}"
    if not os.access(Path(token).parent, os.W_OK):
        return f"{where} cannot write into {Path(token).parent}"
    return None
