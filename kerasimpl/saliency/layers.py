"""Which layer a class activation map reads: the default Grad-CAM layer and its feature map.

`gradcam_layer_name` picks the layer of a model (the registry's choice for
a backbone, else the backbone's last spatial feature map); `feature_map`
turns a layer name into the (N, H, W, C) tensor the CAM methods
(`kerasimpl.saliency.cam.LayerMethod`) differentiate; `spatial_layers`
lists the candidates for error messages.
"""

from __future__ import annotations

from keras import layers

from kerasimpl.backbones import get_spec
from kerasimpl.layers import AdaptiveAveragePooling2D
from kerasimpl.models import POOL, PREPROCESS

GLOBAL_POOLS = (layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D)
_POOLING = (layers.MaxPooling2D, layers.AveragePooling2D, AdaptiveAveragePooling2D, *GLOBAL_POOLS)
# Layers that may sit between a backbone's own global pooling and `pool`
# (ConvNeXt: LayerNorm; MobileNetV3's top: 1x1 conv + activation).
_AFTER_POOLING = (layers.Activation, layers.Conv2D, layers.Dense, layers.LayerNormalization, layers.Dropout,
                  layers.BatchNormalization)


def gradcam_layer_name(model, backbone=None) -> str:
    """The default Grad-CAM layer.

    The registry's layer for `backbone` if it names one; else, in a
    kerasimpl classifier, the last global pooling layer inside the backbone
    (ConvNeXt's, or MobileNetV3's top when `keep_top_hidden`), whose INPUT
    is the feature map (see `feature_map`), else the layer feeding `pool`
    if spatial; for a kept classifier top (AlexNet's: flat vectors before
    `pool`), the last spatial map before `pool` that no pooling layer made
    (`conv5_relu`, the registry's layer; read from the graph, not the
    model's name); else the last layer whose output is a spatial (H, W > 1)
    feature map.
    """
    if backbone is not None:
        name = get_spec(backbone).gradcam_layer
        if name is not None:
            return name
    names = [layer.name for layer in model.layers]
    if POOL in names and PREPROCESS in names:
        name = _last_feature_map_layer(model)
        layer = model.get_layer(name)
        if isinstance(layer, GLOBAL_POOLS) or len(layer.output.shape) == 4:
            return name
        # A kept classifier top (AlexNet: ... conv5_relu, pool5, avgpool, flatten, fc6, fc7): the last
        # spatial map before `pool` that no pooling layer made (conv5_relu, as the registry says).
        before_pool = model.layers[: names.index(POOL)]
        for candidate in reversed(before_pool):
            shape = candidate.output.shape
            if len(shape) == 4 and not isinstance(candidate, _POOLING):
                return candidate.name
    for layer in reversed(model.layers):
        shape = getattr(layer, "output", None) is not None and layer.output.shape
        if shape and len(shape) == 4 and shape[1] and shape[1] > 1 and shape[2] > 1:
            return layer.name
    raise ValueError(f"{model.name} has no layer with a spatial (N, H, W, C) output for Grad-CAM")


def _last_feature_map_layer(model):
    """Walk back from `pool` over a few per-vector layers: a global pooling
    there (pool-inside families, kept top) names the feature map; otherwise
    the layer feeding `pool` does."""
    tensor = model.get_layer(POOL).input
    for _ in range(4):
        layer = _producer(model, tensor)  # None: a raw op (ConvNeXt's `x + y`), not a layer
        if isinstance(layer, GLOBAL_POOLS):
            return layer.name
        if not isinstance(layer, _AFTER_POOLING):
            break
        tensor = layer.input
    layer = _producer(model, model.get_layer(POOL).input)
    if layer is None:
        raise ValueError(f"No layer of {model.name} produces the input of {POOL}")
    return layer.name


def _producer(model, tensor):
    """The layer of `model` whose output is `tensor`, or None (a raw `keras.ops` result)."""
    for layer in model.layers:
        try:
            if layer.output is tensor:
                return layer
        except (AttributeError, ValueError):  # a layer called more than once has no single output
            pass
    return None


def feature_map(model, layer_name):
    """The (N, H, W, C) tensor of `model` that `layer_name` stands for.

    A layer's output; for a global pooling layer, the feature map entering
    it (ConvNeXt's last stage ends in a raw `x + y` op, not a layer, so the
    pooling that reads it is how to name it).

    Raises:
        ValueError: no such layer, or no 4-D tensor there; names candidates.
    """
    try:
        layer = model.get_layer(layer_name)
    except ValueError as e:
        raise ValueError(f"No layer {layer_name!r} in {model.name}. Accepted, e.g. (4-D outputs): "
                         f"{spatial_layers(model)[-5:]}") from e
    tensor = layer.input if isinstance(layer, GLOBAL_POOLS) else layer.output
    if len(getattr(tensor, "shape", ())) != 4:
        raise ValueError(f"Expected a layer with a 4-D (N, H, W, C) output. Received: {layer_name} with "
                         f"{tensor.shape}. Accepted, e.g.: {spatial_layers(model)[-5:]}")
    return tensor


def spatial_layers(model) -> list:
    """Names of the layers whose output is 4-D (candidates for Grad-CAM)."""
    names = []
    for layer in model.layers:
        try:
            if len(layer.output.shape) == 4:
                names.append(layer.name)
        except (AttributeError, ValueError):
            pass
    return names
