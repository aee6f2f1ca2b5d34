"""Occlusion sensitivity: slide a square mask, record the target probability.

Reference: Zeiler & Fergus, "Visualizing and Understanding Convolutional
Networks", ECCV 2014, section 4.2.

With a 224x224 input, a 30x30 patch and stride 20 there are
floor((224 - 30) / 20) + 1 = 10 positions per axis; the last one covers
pixels 180..209, so the final 14 rows and columns are never masked (Captum's
`Occlusion` adds an 11th, edge-aligned position; this follows the reference
experiment).
"""

from __future__ import annotations

import numpy as np
from keras import ops

from kerasimpl.saliency.base import SaliencyMethod


def positions(size, patch, stride):
    """Top-left corners along one axis: 0, stride, ... while the patch fits."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1. Received: stride={stride}")
    if not 1 <= patch <= size:
        raise ValueError(f"patch must lie in [1, {size}] (the input size). Received: patch={patch}")
    return np.arange(0, size - patch + 1, stride)


def occluded_batch(image, corners, patch, fill=0.0):
    """Copies of `image` (H, W, C), each with one `patch` square set to `fill`.

    Args:
        corners: int array (P, 2) of (row, col) top-left corners.

    Returns:
        Tensor (P, H, W, C), built with `keras.ops` on the active backend.
    """
    image = ops.convert_to_tensor(image, "float32")
    h, w = image.shape[0], image.shape[1]
    corners = ops.convert_to_tensor(np.asarray(corners, "int32"))
    r0, c0 = corners[:, 0:1], corners[:, 1:2]
    rows, cols = ops.arange(h, dtype="int32")[None], ops.arange(w, dtype="int32")[None]
    in_rows = ops.logical_and(rows >= r0, rows < r0 + patch)  # (P, H)
    in_cols = ops.logical_and(cols >= c0, cols < c0 + patch)  # (P, W)
    mask = ops.logical_and(in_rows[:, :, None], in_cols[:, None, :])[..., None]  # (P, H, W, 1)
    return ops.where(mask, ops.cast(fill, "float32"), image[None])


def scaled_window(size, patch=30, stride=20, reference=224) -> tuple:
    """`(patch, stride)` for a `size`-px input: the reference experiment's 30/20 at 224 px, scaled.

    At 32 px the 224-px window would cover the whole image once (a 1x1,
    uninformative map); scaled, it is patch 4, stride 3 (10 positions per
    axis, as at 224).
    """
    return max(1, round(patch * size / reference)), max(1, round(stride * size / reference))


class Occlusion(SaliencyMethod):
    """Occlusion sensitivity map of the target-class probability.

    `map[i, j]` is the probability of the target class when the square at
    row `i * stride`, column `j * stride` is filled with `fill`; low values
    mark evidence (`higher_is_important=False`).

    Args:
        model: classifier (raw images in, probabilities out).
        patch: side of the square, in input pixels (default 30).
        stride: step between positions (default 20).
        fill: value of the masked pixels in the model's input units (0:
            black for raw [0, 255] images).
        batch_size: masked copies per forward pass (default: the device's measured inference
            batch, `runtime.inference_batch_size()`: 16 on a CPU, where it ran Lite0 1.2x faster
            than 100 masks at once; 128 on an accelerator).
    """

    name = "occlusion"
    higher_is_important = False

    def __init__(self, model, patch=30, stride=20, fill=0.0, batch_size=None):
        from kerasimpl import runtime

        super().__init__(model)
        batch_size = runtime.inference_batch_size() if batch_size is None else batch_size
        h, w = self.input_size
        self.rows, self.cols = positions(h, patch, stride), positions(w, patch, stride)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
        self.patch, self.stride, self.fill, self.batch_size = int(patch), int(stride), float(fill), int(batch_size)

    def options(self) -> dict:
        return {"patch": self.patch, "stride": self.stride, "fill": self.fill, "batch_size": self.batch_size}

    @property
    def grid_shape(self):
        return len(self.rows), len(self.cols)

    def _maps(self, images, targets, context=None):
        corners = np.array([(r, c) for r in self.rows for c in self.cols])
        maps = []
        for image, target in zip(images, targets):
            probs = []
            for start in range(0, len(corners), self.batch_size):
                batch = occluded_batch(image, corners[start:start + self.batch_size], self.patch, self.fill)
                probs.append(self._probabilities(batch)[:, target])
            maps.append(np.concatenate(probs).reshape(self.grid_shape))
        return maps
