"""Grad-CAM: class activation maps from gradients at a convolutional layer.

Reference: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep
Networks via Gradient-based Localization", ICCV 2017, eq. 1-2.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kerasimpl.saliency.base import SaliencyMethod
from kerasimpl.saliency.gradients import value_and_grad


def score_tensor(model):
    """The tensor Grad-CAM differentiates: logits where the model exposes them.

    For a kerasimpl classifier (a `LabeledSoftmax` named `predictions`) that
    is its input, the logits; otherwise the model output (probabilities for
    a softmax model, which saturate: prefer logits when you can).
    """
    last = model.layers[-1]
    if type(last).__name__ == "LabeledSoftmax":
        return last.input
    return model.output


class GradCAM(SaliencyMethod):
    """Grad-CAM at `layer` (name); `None` picks the kerasimpl default.

    `map` is input height x width, scaled to [0, 1] per image (all zeros when
    no location has positive evidence).
    """

    name = "gradcam"

    def __init__(self, model, layer=None):
        super().__init__(model)
        from kerasimpl.models import feature_map, gradcam_layer_name

        if layer is None:
            layer = gradcam_layer_name(model)
        activations = feature_map(model, layer)
        self.layer = layer
        self.features = keras.Model(model.input, activations)
        # In a flat functional graph the rest of the model is a model too.
        self.rest = keras.Model(activations, score_tensor(model))

    def rebuild(self, model):
        """The same method and layer on another model."""
        return GradCAM(model, self.layer)

    def _maps(self, images, targets):
        acts = self.features(images, training=False)
        onehot = ops.one_hot(ops.convert_to_tensor(targets, "int32"), self.rest.output.shape[-1])

        def score(a):
            return ops.sum(self.rest(a, training=False) * ops.cast(onehot, a.dtype), axis=-1)

        _, grads = value_and_grad(score, acts)
        weights = ops.mean(grads, axis=(1, 2), keepdims=True)  # alpha_k^c, eq. 1
        cam = ops.relu(ops.sum(weights * acts, axis=-1, keepdims=True))  # eq. 2
        cam = ops.image.resize(cam, self.input_size, interpolation="bilinear")[..., 0]
        lo = ops.min(cam, axis=(1, 2), keepdims=True)
        hi = ops.max(cam, axis=(1, 2), keepdims=True)
        cam = ops.where(hi > lo, (cam - lo) / ops.maximum(hi - lo, 1e-12), ops.zeros_like(cam))
        return np.asarray(ops.convert_to_numpy(cam))
