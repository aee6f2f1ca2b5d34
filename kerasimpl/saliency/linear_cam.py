"""CAM (Zhou et al.): the feature map weighted by the linear classifier's weights.

Defined only where the explained feature map reaches the logits through
global average pooling and one linear Dense layer (dropout and other
identity layers at inference in between); elsewhere `gradcam` is the
generalisation (on such a model the two maps are equal after scaling).
"""

from __future__ import annotations

import keras

from kerasimpl import compat
from keras import layers, ops

from kerasimpl.saliency.base import NotApplicable
from kerasimpl.saliency.cam import LayerMethod

# Layers that are the identity at inference (or on a pooled vector).
_PASS = (layers.Dropout, layers.SpatialDropout2D, layers.GaussianNoise, layers.GaussianDropout, layers.Identity,
         layers.InputLayer)


class CAM(LayerMethod):
    """CAM: channels weighted by the target's weights in the linear classifier.

    cam_c = ReLU(sum_k w_k^c A_k), w^c the row of the Dense layer that maps
    the globally averaged features to the logit of class c (its bias, a
    constant over the image, is left out, as in the paper and torchcam).
    No gradients: one forward pass.
    Reference: Zhou et al., "Learning Deep Features for Discriminative
    Localization", CVPR 2016, eq. 2 (M_c(x, y) = sum_k w_k^c f_k(x, y)).

    Raises:
        NotApplicable: (a ValueError) the head after `layer` is not global
            average pooling then one linear Dense layer; names what it is.
    """

    name = "cam"
    uses_gradients = False

    def __init__(self, model, layer=None):
        super().__init__(model, layer)
        self.dense = linear_classifier(self.rest, self.layer)

    def _cam(self, acts, grads, images, targets):
        kernel = ops.cast(ops.convert_to_tensor(self.dense.kernel), "float32")  # (K, classes)
        weights = ops.transpose(ops.take(kernel, ops.convert_to_tensor(targets, "int32"), axis=1))  # (N, K)
        return ops.einsum("nhwk,nk->nhw", ops.cast(acts, "float32"), weights)


def linear_classifier(rest, layer_name):
    """The Dense layer of `rest` (feature map -> logits) if `rest` is
    global average pooling then that one linear Dense layer, else raise."""
    everything = _operations(rest)
    kinds = " -> ".join(f"{type(op).__name__}({op.name})" for op in everything) or "nothing"
    chain = []
    for op in everything:  # Flatten is the identity only on a pooled vector
        pooled = bool(chain) and isinstance(chain[0], layers.GlobalAveragePooling2D)
        if not (isinstance(op, _PASS) or (isinstance(op, layers.Flatten) and pooled)):
            chain.append(op)
    ok = (len(chain) == 2 and isinstance(chain[0], layers.GlobalAveragePooling2D)
          and isinstance(chain[1], layers.Dense) and chain[1].activation is keras.activations.linear)
    if not ok:
        raise NotApplicable(
            f"cam needs the feature map of {layer_name!r} to reach the logits through global average pooling and "
            f"one linear Dense layer (Zhou et al. 2016). Received: {kinds}. Use gradcam, its generalisation to any "
            "head (equal to cam where cam applies), or a model with a linear head (no hidden layers)")
    return chain[1]


def _operations(model):
    """The operations from `model`'s input to its output, in order, for a
    chain (one input per operation), nested Sequential models flattened."""
    ops_, tensor = [], model.outputs[0]
    start = model.inputs[0]
    while tensor is not start:
        op, node = compat.producer(tensor)
        if op is None:
            break
        inputs = node.input_tensors
        if len(inputs) != 1:
            ops_.append(op)  # a merge: not a chain, reported as such
            break
        ops_.extend(reversed(op.layers) if isinstance(op, keras.Sequential) else [op])
        tensor = inputs[0]
    return ops_[::-1]
