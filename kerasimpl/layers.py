"""The Keras layers kerasimpl adds: in-model preprocessing, labelled softmax,
and torch's adaptive average pooling (AlexNet).

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

MODES = ("caffe", "tf", "torch", "cifar", "lite", "none")


@keras.saving.register_keras_serializable(package="kerasimpl")
class Preprocess(keras.layers.Layer):
    """Maps raw [0, 255] RGB pixels to what a backbone's weights expect.

    Modes follow `keras.applications.imagenet_utils.preprocess_input`:

    - `"caffe"`: RGB -> BGR, minus the ImageNet BGR mean, no scaling (VGG16).
    - `"tf"`: scale to [-1, 1] (MobileNetV2).
    - `"torch"`: scale to [0, 1], then ImageNet mean/std (DenseNet).
    - `"cifar"`: scale to [0, 1], then CIFAR-10 mean/std (from-scratch models).
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
        x = ops.cast(x, self.compute_dtype)
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(IMAGENET_MEAN_BGR, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "lite":
            return (x - LITE_MEAN) / LITE_STD
        if self.mode in ("torch", "cifar"):
            mean, std = (IMAGENET_MEAN, IMAGENET_STD) if self.mode == "torch" else (CIFAR10_MEAN, CIFAR10_STD)
            mean = ops.convert_to_tensor(mean, self.compute_dtype)
            std = ops.convert_to_tensor(std, self.compute_dtype)
            return (x / 255.0 - mean) / std
        return x

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


def adaptive_pool_matrix(size, out):
    """(out, size) float32 matrix whose row i averages torch's i-th adaptive bin."""
    import numpy as np

    m = np.zeros((out, size), np.float32)
    for i in range(out):
        start, end = (i * size) // out, -(-((i + 1) * size) // out)
        m[i, start:end] = 1.0 / (end - start)
    return m
