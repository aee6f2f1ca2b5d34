"""MobileNetV2 as torchvision builds it, layer for layer, in a flat Keras graph.

`MobileNetV2Torchvision(...)` is a `keras.applications`-style builder for
the network of `torchvision.models.mobilenet_v2`, so torchvision's ImageNet
checkpoint (`mobilenet_v2-b0353104.pth`) loads into it exactly. It differs
from `keras.applications.MobileNetV2` (registry name `mobilenetv2`) in the
three places where the two frameworks' checkpoints differ:

| | torchvision (this builder) | `keras.applications.MobileNetV2` |
| --- | --- | --- |
| stride-2 3x3 convolutions | pad 1 on every side | pad ((0, 1), (0, 1)) at even sizes (`correct_pad`) |
| BatchNormalization | epsilon 1e-5, momentum 0.9 (torch's 0.1) | epsilon 1e-3, momentum 0.999 |
| preprocessing | ImageNet mean/std on [0, 1] (`Preprocess("torch")`) | [-1, 1] (`Preprocess("tf")`) |
| width rounding (`alpha`) | `_make_divisible(c * alpha, 8)`; head `1280 * max(1, alpha)` | the same for alpha >= 1 |

Everything else is the same network (Sandler et al.): a 32-channel stride-2
stem, 17 inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 linear
project, ReLU6), a 1x1 head convolution to 1280 channels, global average
pooling, dropout 0.2 and the classifier. Layer names follow Keras'
MobileNetV2 (`Conv1`, `expanded_conv_depthwise`, `block_1_expand`, ...,
`Conv_1`, `out_relu`, `predictions`), so Grad-CAM (`out_relu`) and
fine-tuning by block name mean the same depth in both.

The builder loads no checkpoints (model builders never import converters):
`kerasimpl.backbones.build_backbone(..., weights="imagenet" or PATH)` ports
torchvision's state dict through `kerasimpl.checkpoints` (source
`torchvision-mobilenet-v2`).

Reference: Sandler et al., "MobileNetV2: Inverted Residuals and Linear
Bottlenecks" (CVPR 2018); torchvision `models/mobilenetv2.py`.
"""

from __future__ import annotations

import keras
from keras import layers

from kerasimpl import builders

# torchvision's inverted_residual_setting: (expand ratio t, channels c, repeats n, first stride s).
SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
           (6, 320, 1, 1))
STEM_WIDTH, HEAD_WIDTH = 32, 1280
BN_EPSILON, BN_MOMENTUM = 1e-5, 0.9  # torch's BatchNorm2d defaults (momentum 0.1 -> Keras 0.9)
MIN_SIZE = 32


def make_divisible(value, divisor=8):
    """torchvision's `_make_divisible`: the nearest multiple of `divisor`, never more than 10% down."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def block_plan(alpha=1.0):
    """Every inverted residual block in order: `(name, expand, stride, in channels, out channels)`.

    Names as Keras' MobileNetV2: `expanded_conv`, then `block_1` ... `block_16`;
    block `i` is torchvision's `features[i + 1]`.
    """
    plan, cin = [], make_divisible(STEM_WIDTH * alpha)
    for t, c, n, s in SETTING:
        cout = make_divisible(c * alpha)
        for i in range(n):
            plan.append(("expanded_conv" if not plan else f"block_{len(plan)}", t, s if i == 0 else 1, cin, cout))
            cin = cout
    return plan


def head_width(alpha=1.0):
    return make_divisible(HEAD_WIDTH * max(1.0, alpha))


def MobileNetV2Torchvision(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
                           classes=1000, classifier_activation="softmax", alpha=1.0, dropout=0.2,
                           name="mobilenetv2_tv"):
    """torchvision's MobileNetV2 (`torchvision.models.mobilenet_v2`) for channels-last inputs.

    Args:
        include_top: end with global average pooling, dropout and the
            `classes`-way `predictions` Dense; else with `out_relu`.
        weights: `None` or the path of a Keras `.weights.h5` saved from the
            same architecture. torchvision's checkpoints (`"imagenet"` or a
            local `.pth`) load through `kerasimpl.backbones.build_backbone`.
        input_tensor: optional Keras tensor to build on (kept in its graph).
        input_shape: `(H, W, 3)`, H and W >= 32; default `(224, 224, 3)`.
        pooling: without the top: `None`, `"avg"` or `"max"` (global).
        classes: classifier width; 1000 with the ImageNet file.
        classifier_activation: activation of `predictions` (`None`: logits).
        alpha: width multiplier (torchvision's `width_mult`); the ImageNet
            file is for 1.0.
        dropout: rate before `predictions` (torchvision: 0.2).
        name: model name.
    """
    _validate(weights, input_shape, pooling, classes, alpha)
    if input_tensor is None:
        input_tensor = keras.Input(input_shape or (224, 224, 3))
    shape = tuple(input_tensor.shape[1:])
    if len(shape) != 3 or shape[-1] != 3 or min(shape[:2]) < MIN_SIZE:
        raise ValueError(f"MobileNetV2 takes (H, W, 3) inputs with H, W >= {MIN_SIZE}. Received: {shape}")
    x = _conv_bn_relu(input_tensor, make_divisible(STEM_WIDTH * alpha), 3, 2, "Conv1", "bn_Conv1", "Conv1_relu")
    for block, expand, stride, cin, cout in block_plan(alpha):
        x = inverted_residual(x, block, expand, stride, cin, cout)
    x = _conv_bn_relu(x, head_width(alpha), 1, 1, "Conv_1", "Conv_1_bn", "out_relu")
    pool_names = ("global_average_pooling2d", "global_max_pooling2d")  # keras.applications.MobileNetV2's
    if include_top:
        x = layers.GlobalAveragePooling2D(name=pool_names[0])(x)
        x = layers.Dropout(dropout, name="predictions_dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    return builders.finish(input_tensor, x, None if include_top else pooling, name, weights, pool_names)


def inverted_residual(x, name, expand, stride, cin, cout):
    """1x1 expand (unless `expand` is 1), 3x3 depthwise, 1x1 linear projection; residual when shapes allow."""
    inputs = x
    if expand != 1:
        x = _conv_bn_relu(x, cin * expand, 1, 1, f"{name}_expand", f"{name}_expand_BN", f"{name}_expand_relu")
    x, padding = _torch_padding(x, 3, stride, f"{name}_pad")
    x = layers.DepthwiseConv2D(3, stride, padding=padding, use_bias=False, name=f"{name}_depthwise")(x)
    x = _bn(x, f"{name}_depthwise_BN")
    x = layers.ReLU(6.0, name=f"{name}_depthwise_relu")(x)
    x = layers.Conv2D(cout, 1, use_bias=False, name=f"{name}_project")(x)
    x = _bn(x, f"{name}_project_BN")
    if stride == 1 and cin == cout:
        x = layers.Add(name=f"{name}_add")([inputs, x])
    return x


def _conv_bn_relu(x, filters, kernel, stride, conv, bn, act):
    x, padding = _torch_padding(x, kernel, stride, f"{conv}_pad")
    x = layers.Conv2D(filters, kernel, stride, padding=padding, use_bias=False, name=conv)(x)
    return layers.ReLU(6.0, name=act)(_bn(x, bn))


def _torch_padding(x, kernel, stride, name):
    """torch's `padding=kernel // 2` on every side, as `(x, Keras padding)`: at stride 1 (odd kernels)
    Keras' "same" pads exactly that; at stride 2 "same" would pad 0 before and 1 after at even sizes,
    so the pad is an explicit symmetric `ZeroPadding2D` and the window "valid"."""
    if stride == 1:
        return x, "same"
    return layers.ZeroPadding2D(kernel // 2, name=name)(x), "valid"


def _bn(x, name):
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def _validate(weights, input_shape, pooling, classes, alpha):
    builders.validate("MobileNetV2 (torchvision)", weights, input_shape, pooling, classes)
    if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and alpha > 0):
        raise ValueError(f"alpha must be a positive number. Received: alpha={alpha!r}")
