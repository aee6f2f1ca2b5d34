"""RISE: randomized input sampling for explanation.

Reference: Petsiuk et al., "RISE: Randomized Input Sampling for Explanation
of Black-box Models", BMVC 2018, eq. 6 (saliency = E[f(x . M) M] / p) and
section 3.2 (mask generation: a random binary s x s grid, kept with
probability p, bilinearly upsampled to (s + 1) cells and randomly shifted
by up to one cell).
"""

from __future__ import annotations

import numpy as np
from keras import ops

from kerasimpl.saliency.base import SaliencyMethod
from kerasimpl.saliency.cam import interpolation_matrix


def rise_masks(n, input_size, grid=7, p=0.5, seed=0) -> np.ndarray:
    """`n` soft masks (n, H, W) in [0, 1], as in the paper's section 3.2."""
    if n < 1 or grid < 1 or not 0.0 < p <= 1.0:
        raise ValueError(f"masks need n >= 1, grid >= 1 and p in (0, 1]. Received: n={n}, grid={grid}, p={p}")
    h, w = input_size
    rng = np.random.default_rng(seed)
    cell_h, cell_w = -(-h // grid), -(-w // grid)
    up_h, up_w = (grid + 1) * cell_h, (grid + 1) * cell_w
    rh = interpolation_matrix(grid, up_h)
    rw = interpolation_matrix(grid, up_w)
    cells = (rng.random((n, grid, grid)) < p).astype(np.float32)
    up = np.einsum("Hh,nhw,Ww->nHW", rh, cells, rw)
    dy, dx = rng.integers(0, cell_h, n), rng.integers(0, cell_w, n)
    return np.stack([up[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)]).astype(np.float32)


class RISE(SaliencyMethod):
    """Saliency as the mask average weighted by the target probability.

    map = sum_i f_t(x . M_i) M_i / (n p): the expected probability of the
    target when a pixel is kept (in probability units; higher = important).
    Black box: only forward passes, `batch_size` masked images at a time;
    `masks` forwards per image.

    Args:
        masks: number of random masks n (the paper uses 4000 to 8000; more
            gives smoother maps, linearly slower).
        grid: cells per side s of the random grid.
        p: probability that a cell is kept.
        fill: value of removed pixels in the model's input units (0: black).
        seed: seed of the masks.
    """

    name = "rise"

    def __init__(self, model, masks=1000, grid=7, p=0.5, fill=0.0, seed=0, batch_size=64):
        super().__init__(model)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
        self.num_masks, self.grid, self.p, self.fill, self.seed = int(masks), int(grid), float(p), float(fill), int(seed)
        self.batch_size = int(batch_size)
        self.masks = rise_masks(self.num_masks, self.input_size, self.grid, self.p, self.seed)

    def options(self) -> dict:
        return {"masks": self.num_masks, "grid": self.grid, "p": self.p, "fill": self.fill, "seed": self.seed,
                "batch_size": self.batch_size}

    def _maps(self, images, targets, context=None):
        maps = []
        for image, target in zip(images, targets):
            image = ops.convert_to_tensor(image, "float32")
            probs = []
            for s in range(0, self.num_masks, self.batch_size):
                m = ops.convert_to_tensor(self.masks[s:s + self.batch_size, :, :, None])
                batch = image[None] * m + self.fill * (1.0 - m)
                probs.append(self._probabilities(batch)[:, target])
            weights = np.concatenate(probs).astype(np.float64)
            maps.append(np.tensordot(weights, self.masks, axes=1) / (self.num_masks * self.p))
        return maps
