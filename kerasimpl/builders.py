"""What kerasimpl's `keras.applications`-style builders share: their argument checks and the graph's end.

AlexNet, EfficientNet-Lite and torchvision's MobileNetV2 take the
arguments of `keras.applications` builders. Their checkpoints are other
frameworks' files, which load through `kerasimpl.backbones.build_backbone`
(builders never import converters); the builder itself takes `weights=None`
or a Keras `.weights.h5` saved from the same architecture.
"""

from __future__ import annotations

import keras
from keras import layers


def is_keras_weights(weights) -> bool:
    """Whether `weights` is the path of a Keras weights file (`.h5`, e.g. `.weights.h5`), which a
    builder loads itself, rather than `"imagenet"` or another framework's checkpoint (`kerasimpl.checkpoints`)."""
    return isinstance(weights, str) and weights.endswith(".h5")


def validate(family, weights, input_shape, pooling, classes):
    """Check a builder's common arguments; the errors name what was received and what is accepted."""
    if not (weights is None or is_keras_weights(weights)):
        raise ValueError(f"The {family} builder takes weights=None or a Keras .weights.h5 path; ImageNet and other "
                         f"checkpoints load through kerasimpl.backbones.build_backbone. Received: weights={weights!r}")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max'. Received: pooling={pooling!r}")
    if not (isinstance(classes, int) and not isinstance(classes, bool) and classes >= 1):
        raise ValueError(f"classes must be a positive int. Received: classes={classes!r}")
    if input_shape is not None and (len(input_shape) != 3 or input_shape[-1] != 3):
        raise ValueError(f"input_shape must be (H, W, 3). Received: input_shape={input_shape}")


def finish(input_tensor, x, pooling, name, weights, pool_names=("avg_pool", "max_pool")):
    """The model from `input_tensor`'s source to `x` (a top-less feature map pooled as `pooling` asks),
    with a Keras `.weights.h5` loaded when given."""
    if pooling == "avg":
        x = layers.GlobalAveragePooling2D(name=pool_names[0])(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name=pool_names[1])(x)
    source = keras.utils.get_source_inputs(input_tensor)
    model = keras.Model(source[0] if len(source) == 1 else source, x, name=name)
    if weights is not None:
        model.load_weights(weights)
    return model
