"""Score-CAM and its variants: channels weighted by the scores of masked images.

Each channel A_k of the layer, upsampled to the input and scaled to [0, 1],
masks the image; the target logits of the masked images, softmaxed over
the channels, weight the channels. SS-CAM averages those logits over noisy
masks, IS-CAM over masks scaled from 0 to 1. All three subtract nothing
from the logits: torchcam subtracts the baseline image's logit, a constant
over k that the softmax ignores.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from kerasimpl.saliency.base import image_rng, noisy_copies
from kerasimpl.saliency.cam import LayerMethod, interpolation_matrix, score_tensor, softmax


class ScoreCAM(LayerMethod):
    """Score-CAM: each channel weighted by the score of the image it masks.

    Each activation map A_k is upsampled to the input (bilinear, corners
    aligned, as the authors' code and pytorch-grad-cam), scaled to [0, 1]
    and multiplied into the image; the target logits of those K masked
    images, softmaxed over k, weight the channels: cam = ReLU(sum_k w_k A_k).
    K forward passes per image, `batch_size` at a time.
    Reference: Wang et al., "Score-CAM: Score-Weighted Visual Explanations
    for Convolutional Neural Networks", CVPR Workshops 2020, eq. 6-8.
    """

    name = "scorecam"
    uses_gradients = False

    def __init__(self, model, layer=None, batch_size=32):
        super().__init__(model, layer)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
        self.batch_size = int(batch_size)

    def options(self) -> dict:
        return {"layer": self.layer, "batch_size": self.batch_size}

    def _cam(self, acts, grads, images, targets):
        weights = []
        images = ops.convert_to_tensor(images, "float32")
        for i, target in enumerate(targets):
            masks = self.masks(acts[i])
            weights.append(softmax(self.channel_scores(images[i], masks, target)))
        weights = ops.convert_to_tensor(np.stack(weights).astype("float32"))[:, None, None, :]
        return ops.sum(weights * ops.cast(acts, "float32"), axis=-1)

    def masks(self, act):
        """(K, H, W) masks in [0, 1] from one image's (h, w, K) activations:
        upsampled (corners aligned), then min-max scaled per channel."""
        h, w, _ = act.shape
        rh = ops.convert_to_tensor(interpolation_matrix(h, self.input_size[0], align_corners=True))
        rw = ops.convert_to_tensor(interpolation_matrix(w, self.input_size[1], align_corners=True))
        up = ops.einsum("Hh,hwk,Ww->kHW", rh, ops.cast(act, "float32"), rw)
        lo = ops.min(up, axis=(1, 2), keepdims=True)
        hi = ops.max(up, axis=(1, 2), keepdims=True)
        return (up - lo) / (hi - lo + 1e-8)

    def channel_scores(self, image, masks, target):
        """(K,) target logits of the image seen through each mask."""
        return self.masked_logits(image, masks, target)

    def masked_logits(self, image, masks, target):
        """Target logits of `image * masks[k]` for every k, `batch_size` at a time."""
        scores = []
        for s in range(0, masks.shape[0], self.batch_size):
            batch = image[None] * masks[s:s + self.batch_size, :, :, None]
            scores.append(self._scores(batch)[:, target])
        return np.concatenate(scores).astype(np.float64)

    def _scores(self, batch):
        """Logits of masked images on the fast path (`kerasimpl.inference.Forward`: compiled on torch)."""
        import keras

        from kerasimpl.inference import Forward

        if getattr(self, "_fast_scores", None) is None or self._fast_scores.precision != self.precision:
            self._fast_scores = Forward(keras.Model(self.model.input, score_tensor(self.model)), self.precision)
        return np.asarray(self._fast_scores(batch))


class SSCAM(ScoreCAM):
    """SS-CAM (Smoothed Score-CAM): Score-CAM's scores averaged over noisy masks.

    w_k = softmax_k((1/N) sum_n Y(x * (M_k + d_n))), d_n ~ N(0, noise^2)
    drawn per channel and pixel at the input resolution (noise on the
    masks, as torchcam's `SSCAM`; defaults N = 35, noise = 2.0 as there).
    The noise of an image comes from `seed` and the image itself
    (`noise_draws`), so a map does not depend on the batch. With
    `noise=0` it is Score-CAM exactly. N * K forward passes per image.
    Reference: Wang et al., "SS-CAM: Smoothed Score-CAM for Sharper Visual
    Feature Localization", arXiv:2006.14255, 2020, section 3.

    Args:
        samples: N, noisy copies of each mask.
        noise: standard deviation of the noise added to the [0, 1] masks.
        seed: seed of the noise.
    """

    name = "sscam"

    def __init__(self, model, layer=None, samples=35, noise=2.0, seed=0, batch_size=32):
        super().__init__(model, layer, batch_size)
        self.samples, self.noise, self.seed = noisy_copies(samples, noise, seed)

    def options(self) -> dict:
        return {**super().options(), "samples": self.samples, "noise": self.noise, "seed": self.seed}

    def noise_draws(self, image, shape):
        """The `samples` noise arrays of `shape` (K, H, W) for `image`, in order."""
        rng = image_rng(self.seed, ops.convert_to_numpy(image))
        for _ in range(self.samples):
            yield (rng.normal(0.0, 1.0, shape) * self.noise).astype(np.float32)

    def channel_scores(self, image, masks, target):
        total = 0.0
        for d in self.noise_draws(image, tuple(masks.shape)):
            total = total + self.masked_logits(image, masks + ops.convert_to_tensor(d), target)
        return total / self.samples


class ISCAM(ScoreCAM):
    """IS-CAM (Integrated Score-CAM): Score-CAM's scores integrated along the mask.

    w_k = softmax_k((1/N) sum_{n=1..N} Y(x * (n/N) M_k)): the masked image's
    logit averaged over masks scaled linearly from 0 (excluded) to 1, the
    integral of integrated gradients' path applied to Score-CAM's masks.
    With `steps=1` it is Score-CAM exactly. torchcam's `ISCAM` scales the
    n-th mask by the running sum (1 + ... + n)/N, which reaches (N + 1)/2
    (its docstring's formula has the same running sum); we keep the masks
    in [0, 1]. N * K forward passes per image.
    Reference: Naidu et al., "IS-CAM: Integrated Score-CAM for
    axiomatic-based explanations", arXiv:2010.03023, 2020, section 3.

    Args:
        steps: N, points along the path.
    """

    name = "iscam"

    def __init__(self, model, layer=None, steps=10, batch_size=32):
        super().__init__(model, layer, batch_size)
        if steps < 1:
            raise ValueError(f"steps must be >= 1. Received: steps={steps}")
        self.steps = int(steps)

    def options(self) -> dict:
        return {**super().options(), "steps": self.steps}

    def coefficients(self) -> np.ndarray:
        """The mask scales n/N, n = 1..N."""
        return np.arange(1, self.steps + 1, dtype=np.float64) / self.steps

    def channel_scores(self, image, masks, target):
        coeffs = self.coefficients()
        return sum(self.masked_logits(image, masks * float(c), target) for c in coeffs) / len(coeffs)
