"""Graceful stops: SIGINT (Ctrl-C) and SIGTERM (what ``kill``, ``timeout`` and schedulers send)
become a flag that the training loop reads between steps, so a run can write a checkpoint
at the step it reached instead of dying mid-update."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopFlag:
    """``signum``: the first signal received inside ``deferred_signals``, or None."""

    def __init__(self):
        self.signum: int | None = None


@contextmanager
def deferred_signals(stream=sys.stderr, stopping: str = "stopping after this step"):
    """Inside the block, the first SIGINT or SIGTERM only sets ``flag.signum`` (and says
    ``stopping`` on ``stream``); a second one raises ``KeyboardInterrupt`` at once. The previous handlers
    come back on exit. Outside the main thread (where Python delivers no signals) the flag
    simply never rises."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.signum is not None:
            raise KeyboardInterrupt
        flag.signum = signum
        print(f"\n{signal.Signals(signum).name}: {stopping} (again to stop at once)",
              file=stream, flush=True)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
