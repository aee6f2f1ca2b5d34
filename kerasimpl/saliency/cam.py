"""Class activation maps: a weighted sum of one layer's feature maps.

Every CAM method here reads the activations `A` (N, h, w, K) of one layer
(NHWC, as Keras models have them; pytorch-grad-cam assumes NCHW) and, where
it needs them, the gradients `G` of the target's logit with respect to `A`,
then forms a map `cam` (N, h, w) in the one hook `_cam`. The base class does
the rest, the same for all: ReLU, bilinear resize to the input size
(half-pixel centres, as `cv2.resize` in pytorch-grad-cam) and min-max
scaling to [0, 1] per image (all zeros where the map is constant).

The logit is differentiated, not the probability (softmax saturates); for a
model without a `LabeledSoftmax` head the model output is used.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kerasimpl.runtime import no_grad
from kerasimpl.saliency.base import SaliencyMethod
from kerasimpl.saliency.gradients import value_and_grad
from kerasimpl.saliency.layers import feature_map, gradcam_layer_name

EPS = 1e-7  # as pytorch-grad-cam


def score_tensor(model):
    """The tensor explained: logits where the model exposes them.

    For a kerasimpl classifier (a `LabeledSoftmax` named `predictions`) that
    is its input, the logits; otherwise the model output (probabilities for
    a softmax model, which saturate: prefer logits when you can).
    """
    last = model.layers[-1]
    if type(last).__name__ == "LabeledSoftmax":
        return last.input
    return model.output


def interpolation_matrix(n_in, n_out, align_corners=False) -> np.ndarray:
    """(n_out, n_in) matrix of 1-D linear interpolation from n_in to n_out.

    `align_corners=False`: half-pixel centres, edges clamped (cv2,
    `torch.nn.functional.interpolate(align_corners=False)`);
    `align_corners=True`: the end samples coincide
    (`torch.nn.UpsamplingBilinear2d`). Bilinear resize of an (h, w) map is
    `R_h @ m @ R_w.T`.
    """
    if align_corners:
        src = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    else:
        src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in), np.float64)
    np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m.astype(np.float32)


def scale_maps(cam):
    """Min-max scale each (h, w) map of a (N, h, w) tensor to [0, 1]."""
    lo = ops.min(cam, axis=(1, 2), keepdims=True)
    hi = ops.max(cam, axis=(1, 2), keepdims=True)
    return ops.where(hi > lo, (cam - lo) / ops.maximum(hi - lo, 1e-12), ops.zeros_like(cam))


class LayerMethod(SaliencyMethod):
    """Base of the CAM methods: the layer, its activations and gradients.

    Args:
        model: classifier (raw images in, probabilities out), a flat
            functional graph (kerasimpl classifiers are).
        layer: name of the layer whose output (or, for a global pooling
            layer, input) is the (N, h, w, K) feature map; `None`: the
            kerasimpl default (`saliency.layers.gradcam_layer_name`).

    Subclasses implement `_cam(acts, grads, images, targets)` -> (N, h, w).
    """

    uses_gradients = True

    def __init__(self, model, layer=None):
        super().__init__(model)
        if layer is None:
            layer = gradcam_layer_name(model)
        activations = feature_map(model, layer)
        self.layer = layer
        self.features = keras.Model(model.input, activations)
        # In a flat functional graph the rest of the model is a model too.
        self.rest = keras.Model(activations, score_tensor(model))
        self.head = keras.Model(activations, model.output)  # probabilities from the activations

    def options(self) -> dict:
        return {"layer": self.layer}

    def _forward(self, images, targets=None):
        """One pass: the layer's activations, then the probabilities from them."""
        acts = self._activations(images)
        with no_grad():
            return self.head(acts, training=False), acts

    def _activations(self, images):
        """The layer's activations on the fast inference path (`kerasimpl.inference.Forward`, float32:
        the compiled program where it covers the layers below, else Keras), as a backend tensor."""
        from kerasimpl.inference import Forward

        if getattr(self, "_fast_features", None) is None:
            self._fast_features = Forward(self.features, "float32")
        return ops.convert_to_tensor(self._fast_features(np.asarray(images, np.float32)))

    def _maps(self, images, targets, context=None):
        acts = self._activations(images) if context is None else context
        grads = self._gradients(acts, targets) if self.uses_gradients else None
        cam = ops.relu(self._cam(acts, grads, images, targets))[..., None]
        cam = ops.image.resize(cam, self.input_size, interpolation="bilinear")[..., 0]
        return np.asarray(ops.convert_to_numpy(scale_maps(cam)))

    def _gradients(self, acts, targets):
        onehot = ops.one_hot(ops.convert_to_tensor(targets, "int32"), self.rest.output.shape[-1])

        def score(a):
            return ops.sum(self.rest(a, training=False) * ops.cast(onehot, a.dtype), axis=-1)

        return value_and_grad(score, acts)[1]

    def _cam(self, acts, grads, images, targets):
        raise NotImplementedError


class GradCAM(LayerMethod):
    """Grad-CAM: channels weighted by their spatially averaged gradient.

    cam = ReLU(sum_k alpha_k A_k), alpha_k = mean_ij dy/dA_kij.
    Reference: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep
    Networks via Gradient-based Localization", ICCV 2017, eq. 1-2.
    """

    name = "gradcam"

    def _cam(self, acts, grads, images, targets):
        weights = ops.mean(grads, axis=(1, 2), keepdims=True)  # eq. 1
        return ops.sum(weights * acts, axis=-1)  # eq. 2 (ReLU in the base)


class GradCAMPlusPlus(LayerMethod):
    """Grad-CAM++: positive gradients weighted per location.

    alpha_kij = g^2 / (2 g^2 + sum_ab A_kab g^3) (0 where g = 0),
    w_k = sum_ij alpha_kij ReLU(g_kij), cam = ReLU(sum_k w_k A_k), with
    g = dy/dA for the logit y (the exponential-score closed form of eq. 19,
    as pytorch-grad-cam computes it).
    Reference: Chattopadhyay et al., "Grad-CAM++: Improved Visual
    Explanations for Deep Convolutional Networks", WACV 2018, eq. 19 and 9.
    """

    name = "gradcam++"

    def _cam(self, acts, grads, images, targets):
        weights = self.channel_weights(acts, grads, grads * grads, grads * grads * grads)
        return ops.sum(weights * acts, axis=-1)

    def channel_weights(self, acts, g, g2, g3):
        """w_k = sum_ij alpha_kij ReLU(g_kij), (N, 1, 1, K), from the
        gradient `g` and its powers (or, smoothed, their means)."""
        total = ops.sum(acts, axis=(1, 2), keepdims=True)
        alpha = g2 / self.denominator(g2, g3, total)
        alpha = ops.where(ops.not_equal(g2, 0.0), alpha, ops.zeros_like(alpha))
        return ops.sum(alpha * ops.relu(g), axis=(1, 2), keepdims=True)

    @staticmethod
    def denominator(g2, g3, total):
        """alpha's denominator 2 g^2 + sum_ab A_kab g^3 (eps as pytorch-grad-cam's).

        torchcam 0.5.0's `GradCAMpp` divides `alpha[idx][mask]` in place; a
        boolean-mask index is a copy, so its division is lost and its
        weights are sum_ij g^2 ReLU(g): ours with this denominator set to 1
        (tested).
        """
        return 2.0 * g2 + total * g3 + 1e-6


class HiResCAM(LayerMethod):
    """HiResCAM: gradients times activations, element-wise, summed over channels.

    cam = ReLU(sum_k G_k * A_k). Equals Grad-CAM (times h*w) when the
    gradient is spatially constant (global average pooling then a dense
    layer), and is faithful to what the model computes where it is not.
    Reference: Draelos & Carin, "Use HiResCAM instead of Grad-CAM for
    faithful explanations of convolutional neural networks", 2020, eq. 3.
    """

    name = "hirescam"

    def _cam(self, acts, grads, images, targets):
        return ops.sum(grads * acts, axis=-1)


class XGradCAM(LayerMethod):
    """XGrad-CAM: gradients weighted by the normalised activations.

    w_k = sum_ij (A_kij / sum_ab A_kab) G_kij, cam = ReLU(sum_k w_k A_k).
    Reference: Fu et al., "Axiom-based Grad-CAM: Towards Accurate
    Visualization and Explanation of CNNs", BMVC 2020, eq. 9.
    """

    name = "xgradcam"

    def _cam(self, acts, grads, images, targets):
        total = ops.sum(acts, axis=(1, 2), keepdims=True)
        weights = ops.sum(grads * acts / (total + EPS), axis=(1, 2), keepdims=True)
        return ops.sum(weights * acts, axis=-1)


class LayerCAM(LayerMethod):
    """Layer-CAM: activations weighted by their positive gradients, per location.

    cam = ReLU(sum_k ReLU(G_k) * A_k). Equals Grad-CAM up to scale when
    the gradient is positive and spatially constant.
    Reference: Jiang et al., "LayerCAM: Exploring Hierarchical Class
    Activation Maps for Localization", IEEE TIP 2021, eq. 5-6.
    """

    name = "layercam"

    def _cam(self, acts, grads, images, targets):
        return ops.sum(ops.relu(grads) * acts, axis=-1)


class EigenCAM(LayerMethod):
    """Eigen-CAM: the first principal component of the feature map.

    cam = ReLU(A' v1), A' the (h*w, K) activations centred per channel and
    v1 their first right singular vector. Not class-discriminative: the
    target does not enter. The singular vector's sign is arbitrary; it is
    chosen here so that the projection correlates positively with the
    channel sum of the activations (pytorch-grad-cam leaves it to the SVD).
    Reference: Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using
    Principal Components", IJCNN 2020, eq. 4-5.
    """

    name = "eigencam"
    uses_gradients = False

    def _cam(self, acts, grads, images, targets):
        return self.projection(acts)

    @staticmethod
    def projection(acts):
        """A' v1 as (N, h, w), sign fixed as described above."""
        n, h, w, k = acts.shape
        flat = ops.reshape(ops.cast(acts, "float32"), (n, h * w, k))
        centred = flat - ops.mean(flat, axis=1, keepdims=True)
        _, _, vt = ops.svd(centred, full_matrices=False)
        proj = ops.einsum("npk,nk->np", centred, vt[:, 0, :])
        strength = ops.sum(flat, axis=-1)
        strength = strength - ops.mean(strength, axis=1, keepdims=True)
        sign = ops.where(ops.sum(proj * strength, axis=1, keepdims=True) < 0, -1.0, 1.0)
        return ops.reshape(proj * sign, (n, h, w))


def softmax(x, axis=-1):
    """NumPy softmax over `axis` (float64 for the sums)."""
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
