"""``scratchnet dashboard RUN --movie FILE``: the whole run as an animation, one frame per
test line of the dashboard log (at most ``MAX_FRAMES``, evenly spread), Görner's
``save_movie`` without a screen. MP4 (H.264) through the ffmpeg binary of the
``imageio-ffmpeg`` package; GIF through Pillow, also the fallback where that is missing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ScratchnetError
from .log import read_log
from .render import draw, figure

MAX_FRAMES = 200
GIF_DPI = 50  # 960 × 540: a GIF stores every frame whole


def frames(run_dir: Path, dpi: int | None = None):
    """The dashboard after each test line: uint8 RGB arrays [H, W, 3]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    log = read_log(run_dir)
    if not log.test:
        raise ScratchnetError(f"{run_dir}: no test line in the dashboard log yet, so no frame to draw")
    for i in np.unique(np.linspace(0, len(log.test) - 1, min(MAX_FRAMES, len(log.test))).astype(int)):
        fig = figure()
        if dpi:
            fig.set_dpi(dpi)
        canvas = FigureCanvasAgg(fig)
        draw(log, fig, upto=int(i))
        canvas.draw()
        yield np.asarray(canvas.buffer_rgba())[..., :3].copy()


def movie(run_dir: Path, out: Path, fps: int = 10) -> Path:
    """Write the animation of ``run_dir`` to ``out`` (.mp4, or .gif; an .mp4 becomes a .gif
    beside it, with a note, where no ffmpeg is installed). Returns the file written."""
    out = Path(out)
    if out.suffix.lower() == ".mp4":
        try:
            import imageio_ffmpeg
        except ImportError:
            out = out.with_suffix(".gif")
            print(f"no ffmpeg (pip install imageio-ffmpeg for MP4); writing the GIF {out} instead")
        else:
            return _mp4(imageio_ffmpeg, frames(run_dir), out, fps)
    return _gif(frames(run_dir, dpi=GIF_DPI), out, fps)


def _mp4(imageio_ffmpeg, images, out: Path, fps: int) -> Path:
    tmp = out.with_name(f".{out.stem}.tmp.mp4")
    first = next(images)
    writer = imageio_ffmpeg.write_frames(str(tmp), (first.shape[1], first.shape[0]), fps=fps, quality=7,
                                         macro_block_size=8, ffmpeg_log_level="error")
    writer.send(None)  # start ffmpeg
    writer.send(first)
    for image in images:
        writer.send(image)
    writer.close()
    os.replace(tmp, out)
    return out


def _gif(images, out: Path, fps: int) -> Path:
    from PIL import Image

    pictures = [Image.fromarray(image).quantize(colors=128) for image in images]
    tmp = out.with_name(f".{out.stem}.tmp.gif")
    pictures[0].save(tmp, save_all=True, append_images=pictures[1:], duration=round(1000 / fps), loop=0)
    os.replace(tmp, out)
    return out
