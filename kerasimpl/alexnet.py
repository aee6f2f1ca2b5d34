"""AlexNet as torchvision builds it, layer for layer, in a flat Keras graph.

`AlexNet(...)` is a `keras.applications`-style builder. Its layers and
torchvision's `alexnet()` modules, one to one (the Keras names on the left):

| Keras layer | torchvision module |
| --- | --- |
| `conv1_pad` + `conv1`, `conv1_relu`, `pool1` | `features[0]` (11x11/4, pad 2), `[1]`, `[2]` (3/2) |
| `conv2`, `conv2_relu`, `pool2` | `features[3]` (5x5, pad 2), `[4]`, `[5]` |
| `conv3`, `conv3_relu` | `features[6]` (3x3, pad 1), `[7]` |
| `conv4`, `conv4_relu` | `features[8]`, `[9]` |
| `conv5`, `conv5_relu`, `pool5` | `features[10]`, `[11]`, `[12]` |
| `avgpool` | `avgpool` (`AdaptiveAvgPool2d((6, 6))`) |
| `flatten`, `fc6_dropout`, `fc6`, `fc6_relu` | `torch.flatten`, `classifier[0]`, `[1]`, `[2]` |
| `fc7_dropout`, `fc7`, `fc7_relu` | `classifier[3]`, `[4]`, `[5]` |
| `predictions` | `classifier[6]` |

Grad-CAM reads `conv5_relu` (torchvision's `features[11]`, 13x13 at 224 px,
the last convolutional activation, as torchcam's and pytorch-grad-cam's
AlexNet examples pick; `features[12]` would be the 6x6 map after max-pooling).
The builder loads no checkpoints (model builders never import converters):
torchvision's state-dict files load through
`kerasimpl.backbones.build_backbone(..., weights="imagenet" or PATH)`,
converted by `kerasimpl.checkpoints` (source `torchvision-alexnet`).
Inputs are preprocessed outside the builder: ImageNet mean/std on [0, 1]
pixels (`Preprocess("torch")`).

Reference: Krizhevsky, "One weird trick for parallelizing convolutional
neural networks" (2014), the single-tower variant torchvision implements.
"""

from __future__ import annotations

import keras
from keras import layers

from kerasimpl import builders
from kerasimpl.layers import AdaptiveAveragePooling2D

MIN_SIZE = 63  # smallest input whose last max-pool still has a 1x1 window
CONVS = (("conv1", 64, 11, 4), ("conv2", 192, 5, 1), ("conv3", 384, 3, 1), ("conv4", 256, 3, 1),
         ("conv5", 256, 3, 1))
POOLED_AFTER = ("conv1", "conv2", "conv5")
DENSES = (("fc6", 4096), ("fc7", 4096))


def AlexNet(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None, classes=1000,
            classifier_activation="softmax", dropout=0.5, name="alexnet", *, widths=None, dense=None):
    """torchvision's AlexNet (`torchvision.models.alexnet`) for channels-last inputs.

    Args:
        include_top: end with the classifier (avgpool 6x6, flatten, two
            4096-unit layers, `classes` logits); else with `pool5`.
        weights: `None`, or a Keras `.weights.h5` saved from the same
            model. torchvision's checkpoints (`"imagenet"`: its
            `alexnet-owt-7be5be79.pth`, downloaded and hash-checked, or a
            local `.pth`) load through `kerasimpl.backbones.build_backbone`.
        input_tensor: optional Keras tensor to build on (kept in its graph).
        input_shape: `(H, W, 3)`, H and W >= 63; default `(224, 224, 3)`.
        pooling: without the top: `None`, `"avg"` or `"max"` (global).
        classes: classifier width; 1000 with the ImageNet file.
        classifier_activation: activation of `predictions` (`None`: logits).
        dropout: rate of the two classifier dropouts (torchvision: 0.5).
        name: model name.
        widths: filters of conv1..conv5; default torchvision's (64, 192, 384,
            256, 256). Smaller ones make keras-hub-style tiny test models.
        dense: units of fc6 and fc7; default torchvision's (4096, 4096).
    """
    builders.validate("AlexNet", weights, input_shape, pooling, classes)
    widths = _widths("widths", widths, tuple(c[1] for c in CONVS))
    dense = _widths("dense", dense, tuple(d[1] for d in DENSES))
    if input_tensor is None:
        input_tensor = keras.Input(input_shape or (224, 224, 3))
    shape = tuple(input_tensor.shape[1:])
    if len(shape) != 3 or shape[-1] != 3 or min(shape[:2]) < MIN_SIZE:
        raise ValueError(f"AlexNet takes (H, W, 3) inputs with H, W >= {MIN_SIZE}. Received: {shape}")
    x = features(input_tensor, widths)
    if include_top:
        x = classifier(x, classes, classifier_activation, dropout, dense)
    return builders.finish(input_tensor, x, None if include_top else pooling, name, weights)


def features(x, widths=None):
    """torchvision's `features`: five convolutions with their ReLUs and three max-pools."""
    for (conv, _, kernel, stride), width in zip(CONVS, widths or [c[1] for c in CONVS]):
        if conv == "conv1":  # torch's padding=2 before a stride-4 conv: explicit zeros, then valid
            x = layers.ZeroPadding2D(2, name="conv1_pad")(x)
            x = layers.Conv2D(width, kernel, stride, padding="valid", name=conv)(x)
        else:  # stride 1, padding kernel // 2: equal to "same"
            x = layers.Conv2D(width, kernel, stride, padding="same", name=conv)(x)
        x = layers.ReLU(name=f"{conv}_relu")(x)
        if conv in POOLED_AFTER:
            x = layers.MaxPooling2D(3, 2, name=f"pool{conv[-1]}")(x)
    return x


def classifier(x, classes, activation=None, dropout=0.5, widths=None):
    """torchvision's `avgpool` and `classifier`, in Keras' channels-last flatten order."""
    x = AdaptiveAveragePooling2D((6, 6), name="avgpool")(x)
    x = layers.Flatten(name="flatten")(x)
    for (dense, _), width in zip(DENSES, widths or [d[1] for d in DENSES]):
        x = layers.Dropout(dropout, name=f"{dense}_dropout")(x)
        x = layers.Dense(width, name=dense)(x)
        x = layers.ReLU(name=f"{dense}_relu")(x)
    return layers.Dense(classes, activation=activation, name="predictions")(x)


def _widths(name, value, default):
    """`value` as a tuple of len(default) positive ints (None: `default`)."""
    if value is None:
        return default
    ok = isinstance(value, (tuple, list)) and len(value) == len(default) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    if not ok:
        raise ValueError(f"{name} must be {len(default)} integers >= 1 (default {default}). Received: {name}={value!r}")
    return tuple(value)
