"""Inference: class probabilities of a model, and real images turned into MNIST digits.

A photo or a scan of a handwritten digit is not what the network was trained on. MNIST's
digits went through a fixed preparation (LeCun et al.: "size normalized to fit in a 20×20
pixel box while preserving their aspect ratio … centered in a 28×28 image by computing the
center of mass of the pixels"), with bright ink on a black background. ``preprocess`` runs
the same steps, each a function of its own (``MNIST_STEPS``), on a 2-D float image:

1. ``grayscale``      any image Pillow reads → [H, W] floats in [0, 1] (transparent
                      pixels count as white paper);
2. ``bright_ink``     inverted when the background (the median of the border pixels) is
                      light, so that ink is bright on dark, as in MNIST;
3. ``crop_to_ink``    the background level subtracted and the contrast stretched to [0, 1],
                      then cut to the bounding box of the pixels above ``INK`` (faint noise
                      and paper texture fall below it); an image without ink is refused;
4. ``fit_in_20``      the longer side scaled to 20 px, the aspect ratio kept (Pillow's
                      antialiasing filter, as MNIST's normalisation left grey levels);
5. ``center_by_mass`` pasted into a black 28×28 field so that the ink's centre of mass sits
                      at the field's centre (14, 14);
6. ``unit_range``     scaled so that the brightest pixel is 1: values in [0, 1].
"""

from __future__ import annotations

import numpy as np

from .errors import ScratchnetError

INK = 0.25           # a pixel is ink above this (after the background is removed)
BOX, FIELD = 20, 28  # MNIST: the digit fits in 20×20, centred in 28×28
PREDICT_BATCH = 1000


class ImageError(ScratchnetError):
    """An image that cannot be read, or holds no digit."""


def predict(model, images: np.ndarray) -> np.ndarray:
    """Class probabilities [N, 10] of ``model`` (a ``Sequential``) for ``images``
    [N, 28, 28] or [N, 28, 28, 1] in [0, 1], in evaluation mode, PREDICT_BATCH at a time."""
    from .ops import softmax

    x = np.asarray(images, model.dtype).reshape(len(images), FIELD, FIELD, 1)
    return np.concatenate([softmax(model.infer(x[i:i + PREDICT_BATCH]))
                           for i in range(0, len(x), PREDICT_BATCH)])


def grayscale(image) -> np.ndarray:
    """A Pillow image (or an array) as [H, W] floats in [0, 1]; alpha composited over white."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        return image.astype(np.float64) / (255.0 if image.dtype == np.uint8 else 1.0)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return np.asarray(image.convert("L"), np.float64) / 255.0


def _border(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x[0], x[-1], x[1:-1, 0], x[1:-1, -1]])


def bright_ink(x: np.ndarray) -> np.ndarray:
    """Invert when the background (the border's median) is light."""
    return 1.0 - x if np.median(_border(x)) > 0.5 else x


def crop_to_ink(x: np.ndarray) -> np.ndarray:
    """Background removed, contrast stretched to [0, 1], cut to the ink's bounding box."""
    background, peak = np.median(_border(x)), x.max()
    if peak - background < 0.1:
        raise ImageError(f"no ink: the image is uniform (brightness {background:.2f} ± {peak - background:.2f})")
    x = np.clip((x - background) / (peak - background), 0.0, 1.0)
    rows, cols = np.nonzero(x > INK)
    x = x[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    return np.where(x > INK / 2, x, 0.0)  # paper texture and noise inside the box go dark


def fit_in_20(x: np.ndarray) -> np.ndarray:
    """The longer side scaled to 20 pixels, the aspect ratio kept."""
    from PIL import Image

    h, w = x.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(x.astype(np.float32)).resize(size, Image.LANCZOS), np.float64)


def center_by_mass(x: np.ndarray) -> np.ndarray:
    """Pasted into a black 28×28 field with the centre of mass at (14, 14) (kept inside the field)."""
    x = np.clip(x, 0.0, None)
    h, w = x.shape
    total = x.sum()
    cy, cx = ((np.arange(h) @ x.sum(axis=1)) / total, (np.arange(w) @ x.sum(axis=0)) / total) if total else (h / 2, w / 2)
    top = int(np.clip(round(FIELD / 2 - 0.5 - cy), 0, FIELD - h))
    left = int(np.clip(round(FIELD / 2 - 0.5 - cx), 0, FIELD - w))
    field = np.zeros((FIELD, FIELD))
    field[top:top + h, left:left + w] = x
    return field


def unit_range(x: np.ndarray) -> np.ndarray:
    """Scaled so that the brightest pixel is 1."""
    x = np.clip(x, 0.0, None)
    return x / x.max() if x.max() > 0 else x


MNIST_STEPS = (grayscale, bright_ink, crop_to_ink, fit_in_20, center_by_mass, unit_range)


def preprocess(image, steps=MNIST_STEPS) -> np.ndarray:
    """An image (Pillow or array) as a 28×28 float32 MNIST digit in [0, 1], through ``steps``."""
    x = image
    for step in steps:
        x = step(x)
    if x.shape != (FIELD, FIELD):
        raise ImageError(f"preprocessing ended with shape {x.shape}, not {FIELD}×{FIELD}")
    return x.astype(np.float32)


def load_image(path, steps=MNIST_STEPS) -> np.ndarray:
    """The file at ``path`` (PNG, JPEG, whatever Pillow reads) as a 28×28 MNIST digit."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return preprocess(image, steps)
    except ImageError as e:
        raise ImageError(f"{path}: {e}") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ImageError(f"{path}: not an image Pillow can read ({type(e).__name__}: {e})") from None
