"""Görner's live dashboard without a GUI event loop: a training run logs what the six panels
need (``log``), a separate process draws them into ``RUN/dashboard.png`` (``render``), a
standard-library web server shows the image live (``serve``) and ``movie`` animates a run."""

from .log import DashboardLogger, read_log
from .render import LiveRenderer, render

__all__ = ["DashboardLogger", "LiveRenderer", "read_log", "render"]
