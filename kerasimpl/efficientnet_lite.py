"""EfficientNet-Lite0/1/2 as the TensorFlow authors build them, in a flat Keras graph.

EfficientNet-Lite is EfficientNet made for mobile accelerators and
quantization: no squeeze-and-excitation, ReLU6 instead of swish, and the
stem (32) and head (1280) widths fixed while the width and depth
coefficients scale everything between; TF "SAME" padding is Keras'
`padding="same"` (both pad the extra pixel of a stride-2 window at the
bottom/right).

`EfficientNetLite0(...)` and friends are `keras.applications`-style
builders. Layer names follow `keras.applications.EfficientNetB0`
(`stem_conv`, `block2a_expand_conv`, `block2a_dwconv`, ..., `top_conv`,
`top_activation`, `avg_pool`, `predictions`), so the same Grad-CAM layer
(`top_activation`) and fine-tuning names work. Inputs are preprocessed
outside the builder: `(x - 127) / 128` (`Preprocess("lite")`, the TF
authors' `MEAN_RGB = STDDEV_RGB`-style constants in
`efficientnet_lite_builder.py`).

The builder loads no checkpoints (model builders never import converters):
`kerasimpl.backbones.build_backbone(..., weights="imagenet")` reads the
registry's ImageNet file through `kerasimpl.checkpoints`.

Reference: Liu et al., "Higher accuracy on vision models with
EfficientNet-Lite", TensorFlow blog (2020); Tan & Le, "EfficientNet:
Rethinking model scaling for convolutional neural networks" (ICML 2019);
github.com/tensorflow/tpu `models/official/efficientnet/lite/efficientnet_lite_builder.py`.
"""

from __future__ import annotations

import math

import keras
from keras import layers

from kerasimpl import builders

# (repeats, kernel, stride, expand ratio, input filters, output filters): the builder's
# 'r1_k3_s11_e1_i32_o16', ... strings for every Lite variant.
BLOCKS = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
# name: (width coefficient, depth coefficient, resolution, top dropout)
VARIANTS = {"lite0": (1.0, 1.0, 224, 0.2), "lite1": (1.0, 1.1, 240, 0.2), "lite2": (1.1, 1.2, 260, 0.3)}
STEM_WIDTH, HEAD_WIDTH = 32, 1280
BN_EPSILON, BN_MOMENTUM = 1e-3, 0.99


def round_filters(filters, width):
    """Width scaling rounded to a multiple of 8, never more than 10% down (the authors' rule)."""
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return int(rounded + 8 if rounded < 0.9 * scaled else rounded)


def block_plan(variant):
    """Every MBConv block of `variant` in order: `(name, kernel, stride, expand, in, out)`.

    The first and last stages keep their repeats (the Lite rule "fix head
    and stem"); the first block reads the fixed 32-channel stem.
    """
    width, depth, _, _ = VARIANTS[variant]
    plan = []
    for stage, (repeats, kernel, stride, expand, cin, cout) in enumerate(BLOCKS):
        cin = STEM_WIDTH if stage == 0 else round_filters(cin, width)
        cout = round_filters(cout, width)
        if 0 < stage < len(BLOCKS) - 1:
            repeats = int(math.ceil(depth * repeats))
        for i in range(repeats):
            plan.append((f"block{stage + 1}{chr(ord('a') + i)}", kernel, stride if i == 0 else 1, expand,
                         cin if i == 0 else cout, cout))
    return plan


def EfficientNetLite(variant, include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
                     classes=1000, classifier_activation="softmax", dropout=None, drop_connect_rate=0.2,
                     name=None):
    """EfficientNet-Lite `variant` ("lite0", "lite1", "lite2") for channels-last inputs.

    Args:
        variant: one of `VARIANTS`.
        include_top: end with global average pooling, dropout and the
            `classes`-way `predictions` Dense; else with `top_activation`.
        weights: `None` or the path of a Keras `.weights.h5` saved from the
            same architecture (ImageNet checkpoints load through
            `kerasimpl.backbones.build_backbone`).
        input_tensor: optional Keras tensor to build on (kept in its graph).
        input_shape: `(H, W, 3)`, H and W >= 32; default the variant's
            resolution (224, 240, 260).
        pooling: without the top: `None`, `"avg"` or `"max"` (global).
        classes: classifier width.
        classifier_activation: activation of `predictions` (`None`: logits).
        dropout: rate before `predictions` (default the variant's: 0.2, 0.2, 0.3).
        drop_connect_rate: stochastic depth, scaled up linearly over the
            blocks as in the authors' code (`0.2 * index / blocks`); only in training.
        name: model name (default `efficientnet<variant>`).
    """
    _validate(variant, include_top, weights, input_shape, pooling, classes)
    _, _, resolution, top_dropout = VARIANTS[variant]
    if input_tensor is None:
        input_tensor = keras.Input(input_shape or (resolution, resolution, 3))
    shape = tuple(input_tensor.shape[1:])
    if len(shape) != 3 or shape[-1] != 3 or min(shape[:2]) < 32:
        raise ValueError(f"EfficientNet-Lite takes (H, W, 3) inputs with H, W >= 32. Received: {shape}")
    x = _conv_bn(input_tensor, STEM_WIDTH, 3, 2, "stem")
    plan = block_plan(variant)
    for index, (block, kernel, stride, expand, cin, cout) in enumerate(plan):
        x = mbconv(x, block, kernel, stride, expand, cin, cout, drop_connect_rate * index / len(plan))
    x = _conv_bn(x, HEAD_WIDTH, 1, 1, "top")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(top_dropout if dropout is None else dropout, name="top_dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    return builders.finish(input_tensor, x, None if include_top else pooling, name or f"efficientnet{variant}",
                           weights)


def mbconv(x, name, kernel, stride, expand, cin, cout, drop_rate):
    """Inverted residual block without squeeze-and-excitation: 1x1 expand, depthwise, 1x1 project."""
    inputs = x
    if expand != 1:
        x = _conv_bn(x, cin * expand, 1, 1, name, conv="expand_conv", bn="expand_bn", act="expand_activation")
    x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_dwconv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    x = layers.ReLU(max_value=6.0, name=f"{name}_activation")(x)
    x = layers.Conv2D(cout, 1, padding="same", use_bias=False, name=f"{name}_project_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_project_bn")(x)
    if stride == 1 and cin == cout:
        if drop_rate > 0:  # per-sample stochastic depth, as Keras' EfficientNet
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(x)
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def _conv_bn(x, filters, kernel, stride, prefix, conv="conv", bn="bn", act="activation"):
    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{prefix}_{conv}")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{prefix}_{bn}")(x)
    return layers.ReLU(max_value=6.0, name=f"{prefix}_{act}")(x)


def _validate(variant, include_top, weights, input_shape, pooling, classes):
    if variant not in VARIANTS:
        raise ValueError(f"Unknown EfficientNet-Lite variant. Received: {variant!r}. Accepted: {sorted(VARIANTS)}")
    builders.validate("EfficientNet-Lite", weights, input_shape, pooling, classes)


def EfficientNetLite0(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
                      classes=1000, classifier_activation="softmax", name="efficientnetlite0"):
    """EfficientNet-Lite0 (224 px, 4.7 M parameters with the top). See `EfficientNetLite`."""
    return EfficientNetLite("lite0", include_top, weights, input_tensor, input_shape, pooling, classes,
                            classifier_activation, name=name)


def EfficientNetLite1(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
                      classes=1000, classifier_activation="softmax", name="efficientnetlite1"):
    """EfficientNet-Lite1 (240 px, 5.4 M parameters with the top). See `EfficientNetLite`."""
    return EfficientNetLite("lite1", include_top, weights, input_tensor, input_shape, pooling, classes,
                            classifier_activation, name=name)


def EfficientNetLite2(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
                      classes=1000, classifier_activation="softmax", name="efficientnetlite2"):
    """EfficientNet-Lite2 (260 px, 6.1 M parameters with the top). See `EfficientNetLite`."""
    return EfficientNetLite("lite2", include_top, weights, input_tensor, input_shape, pooling, classes,
                            classifier_activation, name=name)
