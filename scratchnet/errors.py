"""The errors scratchnet raises for things a user can fix, and the stop of a training run.

Every ``ScratchnetError`` message stands on its own in one line (or one line and a list):
it names the file, the option, the layer or the tensor. The command line prints it as
``scratchnet: error: <message>`` without a traceback (``--debug`` shows one).
"""

from __future__ import annotations

import signal


class ScratchnetError(Exception):
    """Bad input or a failed run, explained by its message; the command line exits 1."""


class UsageError(ScratchnetError):
    """A command-line option that cannot work (out of range, contradicting the checkpoint);
    the command line exits 2, as argparse does for its own usage errors."""


class DivergenceError(ScratchnetError):
    """Training produced a non-finite loss or parameter; ``step`` is the update that did."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class TrainingInterrupted(ScratchnetError):
    """SIGINT or SIGTERM stopped a training run after a step; the checkpoint at ``step`` is on disk."""

    def __init__(self, signum: int, step: int, checkpoint):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}; "
                         f"checkpoint written to {checkpoint}")
