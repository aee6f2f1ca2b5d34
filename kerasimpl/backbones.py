"""Registry of backbones: name -> spec, and one factory.

A backbone maps an image tensor to a spatial feature map. Pretrained ones
come from `keras.applications`; `smallcnn` is a from-scratch baseline. A new
backbone is one `register(...)` call; the CLIs read their choices from here.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable, Optional

import keras
from keras import layers


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """What kerasimpl needs to know about one backbone.

    Attributes:
        name: registry key (lower case).
        builder: `keras.applications`-style function taking `include_top`,
            `weights`, `input_tensor` and `input_shape`.
        input_size: default square input size.
        preprocessing: `kerasimpl.layers.Preprocess` mode matching the
            weights' own `preprocess_input` convention.
        feature_dim: channels of the pooled features.
        gradcam_layer: last convolutional activation for Grad-CAM; `None`
            means the backbone's output layer (its name is auto-generated).
        pretrained: whether `weights="imagenet"` exists.
        min_size: smallest input size the architecture accepts.
        preprocess_module: the `keras.applications` module whose
            `preprocess_input` defines the convention (tests compare to it).
    """

    name: str
    builder: Callable
    input_size: int
    preprocessing: str
    feature_dim: int
    gradcam_layer: Optional[str]
    pretrained: bool = True
    min_size: int = 32
    preprocess_module: Optional[str] = None


_REGISTRY: dict = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone to the registry (names are case-insensitive)."""
    _REGISTRY[spec.name.lower()] = spec
    return spec


def list_backbones() -> list:
    return sorted(_REGISTRY)


def get_spec(name) -> BackboneSpec:
    """Return the spec of `name`, or raise a ValueError listing accepted names."""
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ValueError(f"Unknown backbone. Received: {name!r}. Accepted: {', '.join(list_backbones())}")
    return _REGISTRY[key]


def build_backbone(name, input_tensor, weights="imagenet", include_top=False, **kwargs) -> keras.Model:
    """Build backbone `name` on `input_tensor` (a flat graph, no nested model).

    Building on the caller's tensor keeps every layer in the caller's graph,
    so intermediate activations (Grad-CAM) stay reachable from the model
    input; see keras-team/keras#18500-style "Graph disconnected" reports.

    Args:
        name: a registered backbone name.
        input_tensor: Keras tensor of preprocessed images (N, H, W, 3).
        weights: `"imagenet"`, `None`, or a path to a local weights file
            (Keras' `*_no_top.h5` download or a `.weights.h5` saved from the
            same backbone).
        include_top: keep the ImageNet classifier top (1000 classes).
        **kwargs: builder arguments such as `alpha` (MobileNets).

    Returns:
        The backbone as a `keras.Model` from the graph's source input to the
        feature map.
    """
    spec = get_spec(name)
    _check_kwargs(spec, {k: v for k, v in kwargs.items() if k != "classifier_activation"})
    if weights == "imagenet" and not spec.pretrained:
        raise ValueError(f"{spec.name} has no ImageNet weights. Received: weights='imagenet'. Accepted: None or a path")
    shape = tuple(input_tensor.shape[1:])
    if min(shape[:2]) < spec.min_size:
        raise ValueError(f"{spec.name} needs inputs of at least {spec.min_size}x{spec.min_size}. Received: {shape}")
    try:
        return spec.builder(include_top=include_top, weights=weights, input_tensor=input_tensor, input_shape=shape,
                            **kwargs)
    except Exception as e:
        if weights == "imagenet" and _looks_like_download_error(e):
            raise RuntimeError(
                f"Could not download ImageNet weights for {spec.name} ({e}). Without internet, fetch the "
                "Keras `*_no_top.h5` file elsewhere and pass its path as weights=PATH (--weights PATH)."
            ) from e
        raise


def _looks_like_download_error(e):
    text = str(e)
    return "URL fetch failure" in text or "urlopen" in text or isinstance(e, OSError)


def _check_kwargs(spec, kwargs):
    params = inspect.signature(spec.builder).parameters
    reserved = {"include_top", "weights", "input_tensor", "input_shape", "classes", "classifier_activation"}
    accepted = sorted(set(params) - reserved - {"pooling", "name"})
    bad = sorted(k for k in kwargs if k not in accepted)
    if bad:
        raise ValueError(f"{spec.name} does not accept {bad}. Accepted keyword arguments: {accepted}")


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
    model = keras.Model(keras.src.ops.operation_utils.get_source_inputs(inp), x, name=name)
    if weights is not None:
        model.load_weights(weights)
    return model


def _conv_bn_relu(x, filters, prefix, act_name=None):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{prefix}_conv")(x)
    x = layers.BatchNormalization(name=f"{prefix}_bn")(x)
    return layers.ReLU(name=act_name or f"{prefix}_relu")(x)


A = keras.applications
register(BackboneSpec("vgg16", A.VGG16, 224, "caffe", 512, "block5_conv3",
                      preprocess_module="keras.applications.vgg16"))
register(BackboneSpec("mobilenetv2", A.MobileNetV2, 224, "tf", 1280, "out_relu",
                      preprocess_module="keras.applications.mobilenet_v2"))
register(BackboneSpec("mobilenetv3large", A.MobileNetV3Large, 224, "none", 960, None,
                      preprocess_module="keras.applications.mobilenet_v3"))
register(BackboneSpec("efficientnetb0", A.EfficientNetB0, 224, "none", 1280, "top_activation",
                      preprocess_module="keras.applications.efficientnet"))
register(BackboneSpec("smallcnn", SmallCNN, 32, "cifar", 128, "smallcnn_out", pretrained=False, min_size=8))
del A
