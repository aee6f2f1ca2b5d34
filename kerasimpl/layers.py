"""The Keras layers kerasimpl adds: in-model preprocessing, labelled softmax,
and torch's adaptive average pooling (AlexNet); and `trainable_batchnorms`,
the BatchNormalization layers of a model that training updates.

All are registered serializable layers, so a saved classifier reloads with
`safe_mode=True` on any backend once `kerasimpl` is imported.
"""

from __future__ import annotations

import keras
from keras import ops

# Per-channel statistics, RGB order.
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)  # caffe convention (VGG, ResNet50)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torch convention (DenseNet)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

LITE_MEAN, LITE_STD = 127.0, 128.0  # EfficientNet-Lite (TF authors' "inception-style" constants for edge models)

# mode -> (reverse the channels, divisor, mean, std): x -> (x[..., ::-1] / divisor - mean) / std,
# each step only where given (None: skipped, so no mode pays for an identity).
PREPROCESSING = {
    "caffe": (True, None, IMAGENET_MEAN_BGR, None),
    "tf": (False, 127.5, 1.0, None),
    "torch": (False, 255.0, IMAGENET_MEAN, IMAGENET_STD),
    "cifar": (False, 255.0, CIFAR10_MEAN, CIFAR10_STD),
    "lite": (False, None, (LITE_MEAN,) * 3, (LITE_STD,) * 3),
    "none": (False, None, None, None),
}
MODES = tuple(PREPROCESSING)


def preprocess(x, mode, flip_channels, constant):
    """`Preprocess`'s arithmetic on any tensor type: the one place the modes are written.

    Args:
        x: float images.
        mode: one of `MODES`.
        flip_channels: `t -> t` with the channel order reversed (RGB -> BGR).
        constant: `values -> tensor` broadcasting over `x`'s channels
            (`kerasimpl.backend.torch.inference` passes NCHW-shaped torch constants).
    """
    reverse, divisor, mean, std = PREPROCESSING[mode]
    if reverse:
        x = flip_channels(x)
    if divisor is not None:
        x = x / divisor
    if mean is not None:
        x = x - constant(mean)
    if std is not None:
        x = x / constant(std)
    return x


@keras.saving.register_keras_serializable(package="kerasimpl")
class Preprocess(keras.layers.Layer):
    """Maps raw [0, 255] RGB pixels to what a backbone's weights expect.

    Modes follow `keras.applications.imagenet_utils.preprocess_input`:

    - `"caffe"`: RGB -> BGR, minus the ImageNet BGR mean, no scaling (VGG16).
    - `"tf"`: scale to [-1, 1] (MobileNetV2).
    - `"torch"`: scale to [0, 1], then ImageNet mean/std (DenseNet).
    - `"cifar"`: scale to [0, 1], then CIFAR-10 mean/std: what `smallcnn`
      used before 2026-12-05 (now `"tf"`); kept so models saved then load.
    - `"lite"`: `(x - 127) / 128` (EfficientNet-Lite: the TF authors' edge
      models use these constants, `MEAN_RGB`/`STDDEV_RGB` in
      `efficientnet_lite_builder.py`, for better post-quantization).
    - `"none"`: identity, for bases that carry their own preprocessing
      (MobileNetV3, EfficientNet take [0, 255] and rescale inside).

    Args:
        mode: one of `MODES`.
    """

    def __init__(self, mode="tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"Unknown preprocessing mode. Received: mode={mode!r}. Accepted: {MODES}")
        self.mode = mode

    def call(self, x):
        dtype = self.compute_dtype
        return preprocess(ops.cast(x, dtype), self.mode, lambda t: ops.flip(t, axis=-1),
                          lambda values: ops.convert_to_tensor(values, dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="kerasimpl")
class LabeledSoftmax(keras.layers.Layer):
    """Softmax over logits that also carries the class names in its config.

    So a saved `.keras` file knows its labels: `model.get_layer("predictions")
    .class_names` after loading.

    Args:
        class_names: sequence of strings, one per class.
    """

    def __init__(self, class_names, **kwargs):
        super().__init__(**kwargs)
        self.class_names = [str(c) for c in class_names]

    def call(self, logits):
        return ops.softmax(ops.cast(logits, "float32"), axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, x):
        return keras.KerasTensor(x.shape, dtype="float32")

    def get_config(self):
        return {**super().get_config(), "class_names": list(self.class_names)}


@keras.saving.register_keras_serializable(package="kerasimpl")
class AdaptiveAveragePooling2D(keras.layers.Layer):
    """`torch.nn.AdaptiveAvgPool2d` for channels-last images, in `keras.ops`.

    Output cell `(i, j)` of an `(oh, ow)` output averages input rows
    `floor(i * H / oh) .. ceil((i + 1) * H / oh) - 1` and the same for
    columns: bins may overlap, and an input smaller than the output repeats
    rows (AlexNet's 1x1 map at 63 px becomes 6x6). Computed as two small
    matrix products with those averaging matrices, so it runs on every
    backend and differentiates for Grad-CAM.

    Reference: PyTorch `aten/src/ATen/native/AdaptiveAveragePooling.cpp`
    (`start_index`, `end_index`).

    Args:
        output_size: int or `(height, width)`.
    """

    def __init__(self, output_size, **kwargs):
        super().__init__(**kwargs)
        size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
            raise ValueError(f"output_size must be a positive int or (height, width). Received: {output_size!r}")
        self.output_size = size

    def call(self, x):
        h, w = x.shape[1], x.shape[2]
        rows = ops.convert_to_tensor(adaptive_pool_matrix(h, self.output_size[0]), x.dtype)
        cols = ops.convert_to_tensor(adaptive_pool_matrix(w, self.output_size[1]), x.dtype)
        x = ops.einsum("ih,nhwc->niwc", rows, x)
        return ops.einsum("jw,niwc->nijc", cols, x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "output_size": list(self.output_size)}


def same_padding(size, kernel, stride=1, dilation=1) -> tuple:
    """`(before, after)` pixels of Keras' / TensorFlow's `padding="same"` along one axis of `size` pixels.

    The output has ceil(size / stride) pixels; the padding that needs is
    split with the odd pixel AFTER (torch's `padding=k // 2` pads both sides
    equally, so the two agree only when the total is even). The fast paths
    (`backend.torch.layers`, `backend.jax.inference`) use this one rule.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def adaptive_pool_matrix(size, out):
    """(out, size) float32 matrix whose row i averages torch's i-th adaptive bin."""
    import numpy as np

    m = np.zeros((out, size), np.float32)
    for i in range(out):
        start, end = (i * size) // out, -(-((i + 1) * size) // out)
        m[i, start:end] = 1.0 / (end - start)
    return m


def trainable_batchnorms(model) -> list:
    """The BatchNormalization layers of `model` (nested models included) whose moving statistics training
    updates (`trainable`)."""
    found = []
    for layer in getattr(model, "layers", ()):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            found.append(layer)
        found += trainable_batchnorms(layer)
    return found
