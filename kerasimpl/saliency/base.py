"""What every saliency method shares: targets, the output contract, the loop.

Contract: `method.explain(images, targets)` returns one `Explanation` per
image. `Explanation.map` is the method's own 2-D float map (occlusion:
target probability per mask position; Grad-CAM: [0, 1] over the input);
`Explanation.importance()` is the common view: input height x width, in
[0, 1], higher = more important, for overlays and quality measures.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import zlib

import numpy as np
from keras import ops


class NotApplicable(ValueError):
    """A method that is not defined for this model (e.g. CAM without a
    linear head); the message names the alternative."""


@dataclasses.dataclass(frozen=True)
class Explanation:
    """One image's saliency.

    Attributes:
        method: `occlusion`, `gradcam`, ...
        map: the method's 2-D float map.
        target: explained class index.
        score: the model's probability of `target` on the unmodified image.
        input_size: `(height, width)` of the model input.
        higher_is_important: whether large values of `map` mark evidence.
    """

    method: str
    map: np.ndarray
    target: int
    score: float
    input_size: tuple
    higher_is_important: bool = True

    def importance(self) -> np.ndarray:
        """The map as input-size (H, W) float32 in [0, 1], high = important."""
        m = np.asarray(self.map, np.float64)
        if not self.higher_is_important:
            m = -m
        lo, hi = m.min(), m.max()
        m = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
        h, w = self.input_size
        if m.shape != (h, w):  # nearest: each cell covers its stretch of the input
            rows = np.minimum((np.arange(h) * m.shape[0]) // h, m.shape[0] - 1)
            cols = np.minimum((np.arange(w) * m.shape[1]) // w, m.shape[1] - 1)
            m = m[rows][:, cols]
        return m.astype(np.float32)


class SaliencyMethod:
    """Base of saliency methods: subclasses implement `_maps` (and may `_forward`).

    Args:
        model: a Keras classifier taking (N, H, W, C) images and returning
            class probabilities.
    """

    name = "saliency"
    higher_is_important = True
    precision = "float32"  # of the black-box forward passes (`kerasimpl.precision`; set per instance)

    def __init__(self, model):
        self.model = model
        self.input_size = tuple(int(d) for d in model.input_shape[1:3])

    def explain(self, images, targets=None) -> list:
        """Explain `images` (N, H, W, C) for `targets` (ints; default top-1)."""
        images = np.asarray(images, dtype="float32")
        if images.ndim == 3:
            images = images[None]
        if tuple(images.shape[1:3]) != self.input_size:
            raise ValueError(f"images must be {self.input_size} (the model input). Received: {images.shape[1:3]}")
        probs, context = self._forward(images, targets)
        probs = np.asarray(ops.convert_to_numpy(probs))
        targets = resolve_targets(probs, targets)
        maps = self._maps(images, targets, context)
        return [
            Explanation(self.name, np.asarray(m, np.float32), int(t), float(probs[i, t]), self.input_size,
                        self.higher_is_important)
            for i, (m, t) in enumerate(zip(maps, targets))
        ]

    def options(self) -> dict:
        """The settings given to the constructor (besides the model)."""
        return {}

    def rebuild(self, model):
        """The same method with the same settings on another model: the
        constructor's options and the forward passes' `precision`."""
        method = type(self)(model, **self.options())
        method.precision = self.precision
        return method

    def _forward(self, images, targets=None):
        """`(probabilities, context)` of `images`; the context (e.g. a layer's
        activations, computed on the way) is handed to `_maps`, so no method
        runs the model twice where once does. `targets` are the requested
        ones (`None`: top-1, known only after this pass)."""
        return self._probabilities(images), None

    def _probabilities(self, batch):
        """The model's outputs on `batch` on the fast path (`kerasimpl.inference.Forward`)."""
        from kerasimpl.inference import Forward

        if getattr(self, "_fast", None) is None or self._fast.precision != self.precision:
            self._fast = Forward(self.model, self.precision)
        return self._fast(batch)

    def _maps(self, images, targets, context=None):
        """One 2-D float map per image (the method's own units)."""
        raise NotImplementedError


def resolve_targets(probs, targets):
    """Given labels as ints, or `None` for each image's top-1 class."""
    n, k = probs.shape
    if targets is None:
        return [int(i) for i in probs.argmax(1)]
    targets = [int(t) for t in np.atleast_1d(targets)]
    if len(targets) != n or any(not 0 <= t < k for t in targets):
        raise ValueError(f"targets must be {n} class indices in [0, {k}). Received: {targets}")
    return targets


def image_rng(seed, image):
    """A NumPy generator for one image's random draws (noise, masks).

    Seeded by `seed` and the image's own bytes, so an image's map depends on
    the image and the seed, not on its position in a batch or on the other
    images explained with it.
    """
    data = np.ascontiguousarray(np.asarray(image, np.float32)).tobytes()
    return np.random.default_rng([int(seed), zlib.crc32(data)])


def noisy_copies(samples, noise, seed):
    """Validated `(samples, noise, seed)` of a method that averages over
    noisy copies (SmoothGrad, Smooth Grad-CAM++, SS-CAM): one check, one
    wording, for all of them.

    Raises:
        ValueError: naming the value received and what is accepted:
            `samples` an integer >= 1, `noise` a finite number >= 0, `seed`
            an integer.
    """
    if not _is_int(samples) or samples < 1:
        raise ValueError(f"samples (noisy copies per image) must be an integer >= 1. Received: samples={samples!r}")
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0. Received: noise={noise!r}")
    if not _is_int(seed):
        raise ValueError(f"seed must be an integer. Received: seed={seed!r}")
    return int(samples), float(noise), int(seed)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
