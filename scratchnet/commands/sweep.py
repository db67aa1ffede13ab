"""``scratchnet sweep``: every recipe × seed × engine as a Dask task, then the results table.

The cluster is a ``distributed.LocalCluster`` of this machine (one single-threaded worker
per core) or the one of ``--scheduler``, whose workers must see ``--out`` at the same path
(checked first). A run's folder decides what its task does (``scratchnet.sweep``): finished
runs are skipped, interrupted ones resumed. Dask retries a failed run once (the retry
resumes from the checkpoint the first attempt left, if any); failures are listed after the
table and make the exit status 1. SIGINT or SIGTERM: every training checkpoints the step
it reached and stops; the same command resumes them.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from ..errors import ScratchnetError, UsageError
from ..interrupts import deferred_signals
from ..recipes import OVERRIDES, RECIPES
from ..report import markdown
from ..sweep import FINISHED, Run, bench_run, cpu_slug, running, stop_runs, train_run, visible

POLL = 0.5          # seconds between looks at the futures
WORKERS_POLL = 2.0  # seconds between asking the workers what they run (and redrawing the bar)


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ScratchnetError("scratchnet sweep needs Dask: pip install 'scratchnet[sweep]'") from None
    return distributed


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@contextmanager
def cluster(scheduler: str | None):
    """A ``distributed.Client`` of ``scheduler``, or of a LocalCluster started (and closed) here."""
    distributed = _distributed()
    if scheduler is None:
        import dask
        # One task per worker thread at a time: a long run never waits behind another on a busy worker.
        with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
            local = distributed.LocalCluster(n_workers=cores(), threads_per_worker=1, processes=True,
                                             dashboard_address=None, silence_logs=logging.ERROR)
        with local, distributed.Client(local) as client:
            yield client
        return
    try:
        client = distributed.Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as e:
        raise UsageError(f"--scheduler {scheduler}: no Dask scheduler answers there ({e})") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=30)
        except TimeoutError:
            raise ScratchnetError(f"--scheduler {scheduler}: no worker joined the scheduler in 30 s") from None
        yield client


def check_shared(client, out: Path) -> None:
    """Fail unless every worker reads and writes ``out`` (a token file written here)."""
    text = uuid.uuid4().hex
    token = out / f".sweep-{text}"
    token.write_text(text)
    try:
        problems = client.run(visible, str(token), text)
    except Exception as e:  # noqa: BLE001 - a worker without scratchnet cannot even unpickle the task
        raise ScratchnetError(f"the workers cannot run scratchnet's tasks ({type(e).__name__}: {e}); "
                              "install scratchnet[sweep] on every worker") from None
    finally:
        token.unlink()
    bad = [f"  {worker}: {problem}" for worker, problem in sorted(problems.items()) if problem]
    if bad:
        raise ScratchnetError(f"--out {out}: not the same folder on every worker (a shared filesystem, mounted "
                              "at the same path everywhere):\n" + "\n".join(bad))


def follow(client, futures: dict, what: str, sweep: str, stop) -> list[str]:
    """Wait for ``futures`` ({future: name}) under one progress bar (done, running, failed,
    ETA) until they end or ``stop`` rises; the failures' messages."""
    from tqdm import tqdm

    pending, failures, done, busy, asked = dict(futures), [], 0, 0, 0.0
    with tqdm(total=len(futures), desc=what, unit="run", mininterval=1, dynamic_ncols=True, file=sys.stderr) as bar:
        while pending and stop.signum is None:
            for future in [f for f in pending if f.done()]:
                name = pending.pop(future)
                if future.status == "finished":
                    done += 1
                    resumed = future.result().get("state") == "interrupted"
                    bar.write(f"{name}: {'resumed and ' if resumed else ''}finished", file=sys.stderr)
                else:
                    error = future.exception()
                    failures.append(str(error) if isinstance(error, ScratchnetError)
                                    else f"{name}: {type(error).__name__}: {error}")
                    bar.write(f"{name}: failed", file=sys.stderr)
                bar.update(1)
            redraw = time.monotonic() - asked > WORKERS_POLL  # the elapsed time and ETA move on too
            if redraw:
                busy, asked = sum(map(len, client.run(running, sweep, on_error="ignore").values())), time.monotonic()
            bar.set_postfix(done=done, running=busy, failed=len(failures), refresh=redraw)
            time.sleep(POLL)
    return failures


def _stop(client, futures, sweep: str) -> list[str]:
    """Cancel the sweep's tasks and stop its trainings on every worker; the runs stopped."""
    client.cancel(list(futures))
    return sorted(n for names in client.run(stop_runs, sweep, on_error="ignore").values() for n in names)


def submit_benchmarks(client, sweep: str, out: Path, quick: bool, select: str | None) -> dict:
    """``bench_run`` on one worker of each CPU (by ``bench.report``'s slug: model name,
    family and model, so two CPUs that share a model name still get a report each);
    {future: name}."""
    machines = {}
    for worker, cpu in sorted(client.run(cpu_slug).items()):
        machines.setdefault(cpu, worker)
    return {client.submit(bench_run, sweep, str(out), quick, select, workers=[worker], pure=False): f"bench {cpu}"
            for cpu, worker in machines.items()}


def plan(args) -> list[Run]:
    """Every recipe × seed × engine of the command line, in that order."""
    recipes = list(RECIPES) if "all" in args.recipes else args.recipes
    overrides = {k: getattr(args, k) for k in OVERRIDES if getattr(args, k) is not None}
    return [Run(recipe, engine, seed, overrides, args.dtype)
            for recipe in recipes for seed in args.seeds for engine in args.engines]


def sweep(args) -> int:
    _distributed()
    out = args.out.resolve()
    runs = plan(args)
    todo = [run for run in runs if run.state(out) != FINISHED]
    options = (["--data-dir", str(args.data_dir.resolve())] if args.data_dir is not None else []) + \
              (["--backend", args.backend] if args.backend is not None else [])
    name = f"sweep-{uuid.uuid4().hex[:12]}"
    failures, futures, tasks = [], {}, len(todo)
    with cluster(args.scheduler) as client, deferred_signals(stopping="stopping every run at its next step") as stop:
        out.mkdir(parents=True, exist_ok=True)
        check_shared(client, out)
        if args.bench:
            futures = submit_benchmarks(client, name, out, args.bench_quick, args.bench_select)
            tasks += len(futures)
            failures += follow(client, futures, "bench", name, stop)
        if runs:
            print(f"{len(runs) - len(todo)} of {len(runs)} runs already finished in {out}/", file=sys.stderr)
        if todo and stop.signum is None:
            futures = {client.submit(train_run, name, run, str(out), options, retries=1, pure=False): run.name
                       for run in todo}
            failures += follow(client, futures, "sweep", name, stop)
        if stop.signum is not None:
            stopped = _stop(client, futures, name)
            what = f"{len(stopped)} run{'' if len(stopped) == 1 else 's'} checkpointed and stopped"
            print(f"scratchnet: sweep stopped; {what}{': ' + ', '.join(stopped) if stopped else ''}. "
                  "The same command resumes them.", file=sys.stderr)
            return 128 + stop.signum
    print(markdown(out))
    short = sorted({f"{r.recipe} ({r.steps} steps)" for r in runs if r.steps < RECIPES[r.recipe].steps})
    if short:
        print(f"\nNot in the table (shorter than their recipe, as scratchnet report counts): {', '.join(short)}; "
              f"their folders are in {out}/")
    if failures:
        raise ScratchnetError(f"{len(failures)} of {tasks} tasks failed:\n"
                              + "\n".join(f"  {f}" for f in failures))
    return 0
