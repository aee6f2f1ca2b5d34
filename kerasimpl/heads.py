"""Classification heads: pooled features -> class logits."""

from __future__ import annotations

import dataclasses

import keras
from keras import layers


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """A dense head: optional hidden layers, dropout, then one logit per class.

    Attributes:
        hidden: widths of the hidden Dense layers (ReLU), e.g. `(256,)`.
        dropout: dropout rate before each Dense layer.
    """

    hidden: tuple = (256,)
    dropout: float = 0.3

    def __post_init__(self):
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1). Received: dropout={self.dropout}")
        if any(int(h) < 1 for h in self.hidden):
            raise ValueError(f"hidden widths must be >= 1. Received: hidden={self.hidden}")


def build_head(feature_dim, num_classes, config=HeadConfig(), name="head") -> keras.Sequential:
    """A `keras.Sequential` from `(feature_dim,)` features to `num_classes` logits.

    The head is its own model so it can be trained alone on cached
    features, then used inside the full classifier unchanged.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2. Received: num_classes={num_classes}")
    stack = [keras.Input((feature_dim,), name="features")]
    for i, width in enumerate(config.hidden):
        if config.dropout:
            stack.append(layers.Dropout(config.dropout, name=f"dropout_{i}"))
        stack.append(layers.Dense(int(width), activation="relu", name=f"dense_{i}"))
    if config.dropout:
        stack.append(layers.Dropout(config.dropout, name="dropout_out"))
    stack.append(layers.Dense(num_classes, name="logits"))
    return keras.Sequential(stack, name=name)
