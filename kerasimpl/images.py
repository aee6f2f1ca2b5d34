"""Reading user images: any size, mode and format -> uint8 RGB arrays."""

from __future__ import annotations

import os

import numpy as np

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageError(ValueError):
    """An image file is missing, unreadable, or not an image."""


def read_image(path, size=None) -> np.ndarray:
    """Read `path` as uint8 RGB (H, W, 3), optionally resized to `size=(h, w)`.

    Grayscale, palette and CMYK images become RGB; an alpha channel is
    dropped (the colour kept); 16-bit and float images are scaled from their
    own min..max to 0..255.

    Raises:
        ImageError: the file is missing, truncated, or not an image.
    """
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            rgb = _to_rgb(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e
    if size is not None and rgb.size != (size[1], size[0]):
        rgb = rgb.resize((int(size[1]), int(size[0])), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def _to_rgb(im):
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        im = Image.fromarray(a.round().astype(np.uint8), mode="L")
    return im.convert("RGB")


def list_images(paths) -> list:
    """Expand folders to the images inside (sorted); keep files in given order."""
    out = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            out.extend(sorted(os.path.join(p, f) for f in os.listdir(p) if f.lower().endswith(EXTENSIONS)))
        else:
            out.append(p)
    return out
