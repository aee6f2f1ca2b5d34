"""SmallCNN: a small, fast CNN for small images, trained from scratch (`kerasimpl.backbones`' baseline)."""

from __future__ import annotations

import keras
from keras import layers


def SmallCNN(include_top=False, weights=None, input_tensor=None, input_shape=None, widths=(32, 64, 128), name="smallcnn"):
    """A small fast CNN for 32x32 images, trained from scratch.

    Conv-BN-ReLU stem, then per width a block of two 3x3 Conv-BN-ReLU with
    a 2x2 max-pool between them (in the spirit of the fast CIFAR-10
    trainers, e.g. Keller Jordan's airbench). The output is the last
    block's feature map, named `smallcnn_out`.

    Reference: Page, "How to train your ResNet" (2018); Jordan, "94% on
    CIFAR-10 in 3.29 seconds on a single GPU" (2024).
    """
    if include_top:
        raise ValueError("SmallCNN is a backbone only. Received: include_top=True. Accepted: False")
    if weights not in (None,) and not isinstance(weights, str):
        raise ValueError(f"SmallCNN weights must be None or a path. Received: weights={weights!r}")
    x = inp = input_tensor if input_tensor is not None else keras.Input(input_shape)
    x = _conv_bn_relu(x, widths[0], "stem")
    for i, w in enumerate(widths):
        x = _conv_bn_relu(x, w, f"block{i + 1}_a")
        x = layers.MaxPooling2D(2, name=f"block{i + 1}_pool")(x)
        x = _conv_bn_relu(x, w, f"block{i + 1}_b", act_name=f"{name}_out" if i == len(widths) - 1 else None)
    model = keras.Model(keras.utils.get_source_inputs(inp), x, name=name)
    if weights is not None:
        model.load_weights(weights)
    return model


def _conv_bn_relu(x, filters, prefix, act_name=None):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{prefix}_conv")(x)
    x = layers.BatchNormalization(name=f"{prefix}_bn")(x)
    return layers.ReLU(name=act_name or f"{prefix}_relu")(x)
