"""``scratchnet dashboard RUN --serve``: a page on 127.0.0.1 (the standard library's HTTP
server) that shows a run's latest dashboard and reloads itself while the run is alive; once
it is over the page says so (``finished``, ``interrupted``, ...) with the final figures.

Routes: ``/`` the page, ``/dashboard.png`` the image (a running run's renderer keeps it
current; the server draws it only when it is missing or older than the log of a run that
is over), ``/status.json`` the state the page is built from.
"""

from __future__ import annotations

import html
import json
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..errors import ScratchnetError
from .log import FOLDER, read_log
from .render import IMAGE, alive, render

REFRESH = 5  # seconds between page reloads


def status(run_dir: Path) -> dict:
    """``{"state": "running" | "finished" | "interrupted" | "diverged" | "failed" | "stopped",
    "recipe", "engine", "step", "steps", "test_accuracy" (dashboard's latest), "final" (the
    metrics' last test line, or None)}``; "stopped": the process is gone without an end record."""
    log = read_log(run_dir)
    state = log.end["status"] if log.end else ("running" if alive(log.start["pid"]) else "stopped")
    metrics = Path(run_dir) / "metrics.jsonl"
    lines = [json.loads(l) for l in metrics.read_text().splitlines() if l.strip()] if metrics.exists() else []
    tests = [l for l in lines if l["split"] == "test"]
    final = tests[-1] if state == "finished" and tests else None
    return {"state": state, "recipe": log.start["recipe"], "engine": log.start["engine"], "step": log.step,
            "steps": log.start["steps"], "test_accuracy": log.test[-1]["accuracy"] if log.test else None,
            "final": final}


def page(s: dict) -> str:
    """The HTML page for status ``s``: reloading every ``REFRESH`` s while the run is alive."""
    live = s["state"] == "running"
    if s["final"]:
        f = s["final"]
        figures = (f"finished: test accuracy {f['accuracy']:.4f} on all 10,000 test images after {f['step']} "
                   f"steps, {f['time']:.0f} s" + (f"; max during training {f['max_tracked']:.4f}"
                                                   if "max_tracked" in f else ""))
    elif live:
        figures = f"running: step {s['step']} of {s['steps']}" + (
            f", test accuracy {s['test_accuracy']:.4f} (first 1,000 test images)" if s["test_accuracy"] else "")
    else:
        figures = f"{s['state']} at step {s['step']} of {s['steps']}"
    refresh = f'<meta http-equiv="refresh" content="{REFRESH}">' if live else ""
    title = html.escape(f"{s['recipe']} [{s['engine']}]")
    return (f'<!doctype html><html><head><meta charset="utf-8">{refresh}<title>{title}: {s["state"]}</title>'
            '<style>body{font-family:sans-serif;margin:1em;background:#fff}img{max-width:100%}</style></head>'
            f'<body><h1>{title}</h1><p id="status">{html.escape(figures)}</p>'
            f'<img src="/{IMAGE}?step={s["step"]}" alt="dashboard of {title}"></body></html>')


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, run_dir: Path, port: int):
        self.run_dir, self.lock = Path(run_dir), threading.Lock()
        try:
            super().__init__(("127.0.0.1", port), Handler)
        except OSError as e:
            raise ScratchnetError(f"--serve {port}: cannot listen on 127.0.0.1:{port} ({e.strerror})") from None

    def image(self) -> bytes:
        """The dashboard PNG, drawn first if missing, or stale and no renderer will redraw it."""
        png, log = self.run_dir / IMAGE, self.run_dir / FOLDER / "log.jsonl"
        with self.lock:
            if not png.exists() or (png.stat().st_mtime < log.stat().st_mtime
                                    and status(self.run_dir)["state"] != "running"):
                render(self.run_dir)
            return png.read_bytes()


class Handler(BaseHTTPRequestHandler):
    server: Server

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/":
            self.reply(200, "text/html; charset=utf-8", page(status(self.server.run_dir)).encode())
        elif path == f"/{IMAGE}":
            self.reply(200, "image/png", self.server.image())
        elif path == "/status.json":
            self.reply(200, "application/json", json.dumps(status(self.server.run_dir)).encode())
        else:
            self.reply(404, "text/plain", b"not found\n")

    def reply(self, code: int, kind: str, body: bytes):
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass  # no line per request


def serve(run_dir: Path, port: int) -> int:
    """Serve until SIGINT or SIGTERM, then close the socket and return 0."""
    server = Server(run_dir, port)
    print(f"serving {run_dir} on http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)", flush=True)

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
    return 0
