"""Reading user images: any size, mode and format -> uint8 RGB arrays."""

from __future__ import annotations

import os

import numpy as np

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageError(ValueError):
    """An image file is missing, unreadable, or not an image."""


def read_image(path, size=None, crop=None) -> np.ndarray:
    """Read `path` as uint8 RGB (H, W, 3), optionally resized to `size=(h, w)`.

    `crop`: keep only the central square whose side is this fraction of the
    shorter side, then resize it (ImageNet evaluation: 0.875, torchvision's
    resize 256 / crop 224 and the TF EfficientNet-Lite authors' crop of
    224 / (224 + 32)), so a photo is never squashed out of its aspect ratio.

    Grayscale, palette and CMYK images become RGB; an alpha channel is
    dropped (the colour kept); 16-bit and float images are scaled from their
    own min..max to 0..255. A JPEG much larger than `size` is decoded at a
    reduced DCT scale that still covers `size` (Pillow's `draft`), then
    resized bilinearly: several times faster on photos, the same pixels
    for training (image folders) and inference (`experiments.infer`).

    Raises:
        ImageError: the file is missing, truncated, or not an image.
    """
    from PIL import Image

    if crop is not None and not 0 < crop <= 1:
        raise ValueError(f"crop is the kept fraction of the shorter side, in (0, 1]. Received: crop={crop!r}")
    with _open(path) as im:
        if size is not None and crop is None:
            im.draft("RGB", (int(size[1]), int(size[0])))
        rgb = _load_rgb(im, path)
    if crop is not None:
        w, h = rgb.size
        side = max(1, int(round(min(w, h) * crop)))
        left, top = (w - side) // 2, (h - side) // 2
        rgb = rgb.crop((left, top, left + side, top + side))
    if size is not None and rgb.size != (size[1], size[0]):
        rgb = rgb.resize((int(size[1]), int(size[0])), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def probe_image(path) -> tuple:
    """Decode `path` once, cheaply, and return its full `(height, width)`.

    The whole file is read (a truncated JPEG or PNG fails here, as it would
    in `read_image`), at the smallest DCT scale for JPEGs.

    Raises:
        ImageError: as `read_image`.
    """
    with _open(path) as im:
        width, height = im.size
        im.draft("RGB", (max(1, width // 8), max(1, height // 8)))
        _load_rgb(im, path)
    return int(height), int(width)


def _open(path):
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    try:
        im = Image.open(path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:  # the warning: where the user's filters make it an error
        raise ImageError(f"{path}: not a readable image ({type(e).__name__}: {_one_line(e)})") from e
    try:
        _check_pixels(im, path)
    except ImageError:
        im.close()
        raise
    return im


def _check_pixels(im, path):
    """Refuse an image whose header claims more than Pillow's MAX_IMAGE_PIXELS.

    Pillow itself only warns from MAX_IMAGE_PIXELS to twice that (89-179
    Mpx) and then decodes: gigabytes from a few kB of hostile PNG. The size
    is checked here from the header, before any pixel is decoded, and again
    after loading (a GIF's frames may grow it). No warnings filter: those
    are process-wide, and loader threads would race on them.
    """
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    if limit and im.width * im.height > limit:
        raise ImageError(f"{os.fspath(path)}: refused as a possible decompression bomb ({im.width}x{im.height} = "
                         f"{im.width * im.height} pixels; the limit is {limit}, PIL.Image.MAX_IMAGE_PIXELS)")


def _one_line(e):
    return " ".join(str(e).split())


def _load_rgb(im, path):
    from PIL import Image

    try:
        im.load()
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, Image.DecompressionBombError) as e:
        raise ImageError(f"{os.fspath(path)}: not a readable image ({type(e).__name__}: {_one_line(e)})") from e
    _check_pixels(im, path)
    try:
        return _to_rgb(im)
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise ImageError(f"{os.fspath(path)}: not a readable image ({type(e).__name__}: {_one_line(e)})") from e


def _to_rgb(im):
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        im = Image.fromarray(a.round().astype(np.uint8), mode="L")
    return im.convert("RGB")


def list_images(paths, recursive=False) -> list:
    """Expand folders to the image files inside (sorted; hidden ones skipped,
    sub-folders too with `recursive`); keep files in the given order."""
    out = []
    for p in paths:
        p = os.fspath(p)
        if not os.path.isdir(p):
            out.append(p)
            continue
        for dirpath, dirnames, filenames in os.walk(p):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
            out.extend(os.path.join(dirpath, f) for f in sorted(filenames)
                       if not f.startswith(".") and f.lower().endswith(EXTENSIONS))
    return out
