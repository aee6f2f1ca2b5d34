"""Input-gradient attributions: gradients, SmoothGrad, Integrated Gradients.

Each differentiates the target's logit (see `cam.score_tensor`) with respect
to the input pixels, in the model's input units (raw [0, 255] images for a
kerasimpl classifier, whose preprocessing is inside the model). Samples and
interpolation steps of all images are stacked and run `batch_size` rows at a
time. Noise and masks come from NumPy with a seed, so maps are the same on
every backend.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kerasimpl.saliency.base import SaliencyMethod, image_rng, noisy_copies, resolve_targets
from kerasimpl.saliency.cam import score_tensor, softmax
from kerasimpl.saliency.gradients import value_and_grad


class InputGradientMethod(SaliencyMethod):
    """Base: gradients of the target logit w.r.t. the input, batched.

    `batch_size` (default: the device's measured inference batch,
    `runtime.inference_batch_size()`: 16 on a CPU, 128 on an accelerator)
    bounds memory: the backward pass keeps every layer's activations, about
    0.11 GB an image for EfficientNet-Lite0 at 224 px (peak RSS on a CPU: 4.1 GB
    at 32 images, 2.6 GB at 16, 1.6 GB at 8; `docs/saliency_costs.py`).
    """

    def __init__(self, model, batch_size=None):
        from kerasimpl import runtime

        super().__init__(model)
        batch_size = runtime.inference_batch_size() if batch_size is None else batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
        self.batch_size = int(batch_size)
        self.logits = keras.Model(model.input, score_tensor(model))
        self.num_classes = int(self.logits.output.shape[-1])

    def options(self) -> dict:
        return {"batch_size": self.batch_size}

    def input_gradients(self, x, targets, return_logits=False):
        """d logit[target_i] / d x_i for rows `x` (B, H, W, C), as NumPy
        (and, with `return_logits`, every row's logits from the same pass)."""
        x = np.asarray(x, np.float32)
        targets = np.asarray(targets, np.int32)
        grads, logits = [], []
        for s in range(0, len(x), self.batch_size):
            onehot = ops.one_hot(ops.convert_to_tensor(targets[s:s + self.batch_size]), self.num_classes)

            def score(z, onehot=onehot):
                out = self.logits(z, training=False)
                return ops.sum(out * ops.cast(onehot, z.dtype), axis=-1), out

            _, g, out = value_and_grad(score, ops.convert_to_tensor(x[s:s + self.batch_size]), has_aux=True)
            grads.append(np.asarray(ops.convert_to_numpy(g), np.float32))
            logits.append(np.asarray(ops.convert_to_numpy(out), np.float32))
        grads = np.concatenate(grads)
        return (grads, np.concatenate(logits)) if return_logits else grads

    def probabilities_from(self, scores):
        """The model's probabilities from what `self.logits` returned."""
        if self.logits.output is self.model.output:  # no logits exposed: these are the outputs
            return scores
        return softmax(scores)


class Gradients(InputGradientMethod):
    """Vanilla gradients: map = max over channels of |d logit / d pixel|.

    Reference: Simonyan et al., "Deep Inside Convolutional Networks:
    Visualising Image Classification Models and Saliency Maps", ICLR
    Workshop 2014, section 3.1 (eq. 2-3; Captum `Saliency(abs=True)`).
    """

    name = "gradients"

    def _forward(self, images, targets=None):
        """With the targets given, the gradients and the probabilities in one pass."""
        if targets is None:
            return super()._forward(images)
        targets = resolve_targets(np.zeros((len(images), self.num_classes)), targets)  # validates
        grads, logits = self.input_gradients(images, targets, return_logits=True)
        return self.probabilities_from(logits), grads

    def _maps(self, images, targets, context=None):
        grads = self.input_gradients(images, targets) if context is None else context
        return np.abs(grads).max(axis=-1)


class SmoothGrad(InputGradientMethod):
    """SmoothGrad: the gradients map averaged over noisy copies of the image.

    map = 1/n sum_i max_c |d logit / d x (x + e_i)|, e_i ~ N(0, sigma^2),
    sigma = `noise` * (max(x) - min(x)). With `noise=0` it equals
    `Gradients`. An image's noise comes from `seed` and the image itself,
    so its map does not depend on the batch it is explained in.
    Reference: Smilkov et al., "SmoothGrad: removing noise by adding
    noise", ICML Workshop 2017, eq. 2 (sigma as a fraction of the range,
    section 3.2).

    Args:
        samples: noisy copies per image (n).
        noise: noise level, a fraction of each image's value range.
        seed: seed of the noise.
    """

    name = "smoothgrad"

    def __init__(self, model, samples=25, noise=0.15, seed=0, batch_size=None):
        super().__init__(model, batch_size)
        self.samples, self.noise, self.seed = noisy_copies(samples, noise, seed)

    def options(self) -> dict:
        return {"samples": self.samples, "noise": self.noise, "seed": self.seed, "batch_size": self.batch_size}

    def _maps(self, images, targets, context=None):
        maps = []
        for image, target in zip(images, targets):
            sigma = self.noise * float(image.max() - image.min())
            rng = image_rng(self.seed, image)  # the image's own noise, wherever it sits in the batch
            noisy = image[None] + rng.normal(0.0, 1.0, (self.samples, *image.shape)).astype(np.float32) * sigma
            grads = self.input_gradients(noisy, [target] * self.samples)
            maps.append(np.abs(grads).max(axis=-1).mean(axis=0))
        return maps


class IntegratedGradients(InputGradientMethod):
    """Integrated Gradients: path integral of gradients from a baseline.

    attribution = (x - x') * integral_0^1 d logit / d x (x' + a (x - x')) da,
    by `steps`-point Gauss-Legendre quadrature (Captum's default); map =
    the attribution summed over channels (signed: positive evidence high).
    Completeness: the attributions sum to logit(x) - logit(x') up to the
    quadrature error (tested).
    Reference: Sundararajan et al., "Axiomatic Attribution for Deep
    Networks", ICML 2017, eq. 1 and section 3 (completeness).

    Args:
        steps: quadrature points.
        baseline: x', a value in the model's input units (0: black).
        method: `"gausslegendre"` or `"riemann_trapezoid"`.
    """

    name = "integrated-gradients"
    METHODS = ("gausslegendre", "riemann_trapezoid")

    def __init__(self, model, steps=50, baseline=0.0, method="gausslegendre", batch_size=None):
        super().__init__(model, batch_size)
        if steps < 2 or method not in self.METHODS:
            raise ValueError(f"steps must be >= 2 and method one of {self.METHODS}. Received: steps={steps}, "
                             f"method={method!r}")
        self.steps, self.baseline, self.method = int(steps), float(baseline), method

    def options(self) -> dict:
        return {"steps": self.steps, "baseline": self.baseline, "method": self.method,
                "batch_size": self.batch_size}

    def quadrature(self):
        """(alphas, weights) on [0, 1]."""
        if self.method == "gausslegendre":
            x, w = np.polynomial.legendre.leggauss(self.steps)
            return 0.5 * (x + 1.0), 0.5 * w
        alphas = np.linspace(0.0, 1.0, self.steps)
        w = np.full(self.steps, 1.0 / (self.steps - 1))
        w[[0, -1]] *= 0.5
        return alphas, w

    def attributions(self, images, targets) -> np.ndarray:
        """(N, H, W, C) attributions of `images` for `targets`."""
        images = np.asarray(images, np.float32)
        alphas, weights = self.quadrature()
        out = []
        for image, target in zip(images, targets):
            base = np.full_like(image, self.baseline)
            path = base[None] + alphas[:, None, None, None].astype(np.float32) * (image - base)[None]
            grads = self.input_gradients(path, [target] * self.steps)
            out.append((image - base) * np.tensordot(weights, grads, axes=1).astype(np.float32))
        return np.stack(out)

    def _maps(self, images, targets, context=None):
        return self.attributions(images, targets).sum(axis=-1)
