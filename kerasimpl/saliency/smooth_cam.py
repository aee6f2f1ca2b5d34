"""Smooth Grad-CAM++: Grad-CAM++ with SmoothGrad's averaged derivatives."""

from __future__ import annotations

import numpy as np
from keras import ops

from kerasimpl.saliency.base import image_rng, noisy_copies
from kerasimpl.saliency.cam import GradCAMPlusPlus
from kerasimpl.runtime import no_grad


class SmoothGradCAMPlusPlus(GradCAMPlusPlus):
    """Smooth Grad-CAM++: Grad-CAM++'s weights from gradients of noisy copies.

    For N copies x + e_n, e_n ~ N(0, sigma^2), sigma = `noise` * (max(x) -
    min(x)) (as `smoothgrad`), the layer's gradients g_n give the means
    D1 = mean g_n, D2 = mean g_n^2, D3 = mean g_n^3; then
    alpha = D2 / (2 D2 + sum_ab A_kab D3), w_k = sum_ij alpha ReLU(D1) and
    cam = ReLU(sum_k w_k A_k) on the clean image's activations A. alpha's
    numerator is D2, the Grad-CAM++ closed form (the paper prints D1;
    torchcam corrects it to D2 too). With `noise=0` it is Grad-CAM++.
    The noise of an image comes from `seed` and the image itself.
    Reference: Omeiza et al., "Smooth Grad-CAM++: An Enhanced Inference
    Level Visualization Technique for Deep Convolutional Neural Network
    Models", arXiv:1908.01224, 2019, section 3 (eq. 7-9).

    Args:
        samples: N, noisy copies per image (torchcam's default, 4).
        noise: noise level, a fraction of each image's value range.
        seed: seed of the noise.
    """

    name = "smoothgrad-cam++"
    uses_gradients = False  # the gradients are the noisy copies', taken in `_cam`

    def __init__(self, model, layer=None, samples=4, noise=0.15, seed=0):
        super().__init__(model, layer)
        self.samples, self.noise, self.seed = noisy_copies(samples, noise, seed)

    def options(self) -> dict:
        return {"layer": self.layer, "samples": self.samples, "noise": self.noise, "seed": self.seed}

    def noise_draws(self, image) -> np.ndarray:
        """The (samples, H, W, C) noise added to `image`, in input units."""
        image = np.asarray(image, np.float32)
        sigma = self.noise * float(image.max() - image.min())
        rng = image_rng(self.seed, image)
        return (rng.normal(0.0, 1.0, (self.samples, *image.shape)) * sigma).astype(np.float32)

    def _cam(self, acts, grads, images, targets):
        weights = []
        for i, target in enumerate(targets):
            noisy = images[i][None] + self.noise_draws(images[i])
            with no_grad():
                noisy_acts = self.features(noisy, training=False)
            g = self._gradients(noisy_acts, [target] * self.samples)
            d1, d2, d3 = (ops.mean(g**p, axis=0, keepdims=True) for p in (1, 2, 3))
            weights.append(self.channel_weights(acts[i:i + 1], d1, d2, d3))
        return ops.sum(ops.concatenate(weights, axis=0) * acts, axis=-1)
