"""Each Keras layer's torch twin: the converter table of `kerasimpl.backend.torch.inference`.

`CONVERTERS` maps a Keras layer class to a converter `(layer, torch, rank)
-> callable` that computes the layer, at inference, on NCHW torch tensors
(`rank`: of the layer's input), with the layer's weights read once into
tensors on the device of the program being built. `register` adds an
entry; kerasimpl's own layers (`kerasimpl.layers`) register theirs at the
end of this module, reusing the layers' own arithmetic. A layer whose class
has no entry, or whose settings a converter does not cover, raises
`NotImplementedError` naming it, and callers fall back to Keras.
"""

from __future__ import annotations

import contextlib
import threading

import keras
import numpy as np
from keras import layers

from kerasimpl import layers as ki_layers
from kerasimpl.backend.torch.layout import torch_dense_kernel, torch_kernel

# Keras layer class -> converter `(layer, torch, rank) -> callable on NCHW tensors`
# (`rank`: of the layer's input). Exact classes: a subclass may compute
# something else, so it is unsupported until it registers its own.
CONVERTERS = {}


def register(*layer_classes):
    """Decorator: the decorated `(layer, torch, rank) -> callable` converts layers of these classes."""

    def add(converter):
        for cls in layer_classes:
            CONVERTERS[cls] = converter
        return converter

    return add


def convert(layer, torch, rank=4):
    """A torch callable for one Keras layer, in NCHW (`rank`: of its input), from `CONVERTERS`.

    Raises:
        NotImplementedError: no converter for the layer's class, or one that
            cannot convert this layer's settings (the message names them).
    """
    converter = CONVERTERS.get(type(layer))
    if converter is None:
        raise NotImplementedError(f"layer {layer.name!r} of type {type(layer).__name__} is not supported by "
                                  "compile_frozen")
    return converter(layer, torch, rank)


_BUILD = threading.local()  # the device the program being built lives on


@contextlib.contextmanager
def building_on(device):
    """Within the block, converters put their tensors on `device` (a torch device)."""
    previous = getattr(_BUILD, "device", None)
    _BUILD.device = device
    try:
        yield
    finally:
        _BUILD.device = previous


def _tensor(torch, array):
    """A float tensor of `array` on the device of the program being built."""
    return torch.as_tensor(np.asarray(array)).to(getattr(_BUILD, "device", None) or "cpu")


def _np(v):
    return keras.ops.convert_to_numpy(v).astype(np.float32)


def bn_affine(bn, torch):
    mean, var = _np(bn.moving_mean), _np(bn.moving_variance)
    gamma = _np(bn.gamma) if bn.scale else np.ones_like(mean)
    beta = _np(bn.beta) if bn.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + bn.epsilon)
    return _tensor(torch, scale), _tensor(torch, beta - mean * scale)


class Conv:
    """Conv2D / DepthwiseConv2D in NCHW with TF-style 'same' padding."""

    def __init__(self, layer, torch, depthwise):
        self.torch, self.layer = torch, layer
        k = _np(layer.kernel)  # (kh, kw, in, out) or depthwise (kh, kw, in, mult)
        w = torch_kernel(k, depthwise)
        self.groups = k.shape[2] if depthwise else getattr(layer, "groups", 1)
        self.weight = _tensor(torch, np.ascontiguousarray(w)).contiguous(memory_format=torch.channels_last)
        self.bias = _tensor(torch, _np(layer.bias)) if layer.use_bias else None
        self.stride, self.dilation = tuple(layer.strides), tuple(layer.dilation_rate)
        self.padding = layer.padding
        self.explicit_pad = (0, 0)  # a symmetric ZeroPadding2D before a 'valid' conv, folded in (`inference`)
        self.activation = _own_activation(layer, torch)

    @classmethod
    def from_arrays(cls, torch, weight, bias, strides, dilation, padding, groups):
        """A linear conv from torch-layout (out, in/groups, kh, kw) weights."""
        conv = cls.__new__(cls)
        conv.torch, conv.layer, conv.groups, conv.activation = torch, None, groups, None
        conv.weight = _tensor(torch, np.ascontiguousarray(weight)).contiguous(memory_format=torch.channels_last)
        conv.bias = None if bias is None else _tensor(torch, bias)
        conv.stride, conv.dilation, conv.padding = tuple(strides), tuple(dilation), padding
        conv.explicit_pad = (0, 0)
        return conv

    def fold(self, scale, shift):
        self.weight = (self.weight * scale.view(-1, 1, 1, 1)).contiguous(memory_format=self.torch.channels_last)
        self.bias = shift if self.bias is None else self.bias * scale + shift

    def __call__(self, x):
        F = self.torch.nn.functional
        if self.padding == "same":
            kh, kw = self.weight.shape[2:]
            top, bottom = ki_layers.same_padding(x.shape[2], kh, self.stride[0], self.dilation[0])
            left, right = ki_layers.same_padding(x.shape[3], kw, self.stride[1], self.dilation[1])
            if (top, left) == (bottom, right):
                y = F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
            else:
                x = F.pad(x, (left, right, top, bottom))
                y = F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        else:
            y = F.conv2d(x, self.weight, self.bias, self.stride, self.explicit_pad, self.dilation, self.groups)
        return self.activation(y) if self.activation is not None else y


class SeparableConv:
    """SeparableConv2D: depthwise `Conv`, then a 1x1 pointwise one (Xception)."""

    def __init__(self, layer, torch):
        self.torch = torch
        dk = _np(layer.depthwise_kernel)  # (kh, kw, in, mult)
        pk = _np(layer.pointwise_kernel)  # (1, 1, in * mult, out)
        self.depthwise = Conv.from_arrays(torch, torch_kernel(dk, depthwise=True), None,
                                           layer.strides, layer.dilation_rate, layer.padding, dk.shape[2])
        bias = _np(layer.bias) if layer.use_bias else None
        self.pointwise = Conv.from_arrays(torch, torch_kernel(pk), bias, (1, 1), (1, 1), "valid", 1)
        self.activation = _own_activation(layer, torch)

    def fold(self, scale, shift):
        self.pointwise.fold(scale, shift)

    def __call__(self, x):
        y = self.pointwise(self.depthwise(x))
        return self.activation(y) if self.activation is not None else y


def _activation(name, torch):
    F = torch.nn.functional
    table = {
        "relu": F.relu,
        "relu6": F.relu6,
        "sigmoid": torch.sigmoid,
        "swish": F.silu,
        "silu": F.silu,
        # Keras: hard_sigmoid(x) = relu6(x + 3) / 6, hard_swish(x) = x * hard_sigmoid(x):
        # torch's fused kernels compute exactly these.
        "hard_sigmoid": F.hardsigmoid,
        "hard_swish": F.hardswish,
        "hard_silu": F.hardswish,
        "tanh": torch.tanh,
        "gelu": F.gelu,
        "linear": lambda x: x,
        "softmax": lambda x: torch.softmax(x, dim=1),
    }
    if name not in table:
        raise NotImplementedError(f"activation {name!r} is not supported by compile_frozen")
    return table[name]


def _own_activation(layer, torch):
    """A convolution layer's own activation (None: linear), in place where it has an in-place twin: it
    runs on the convolution's fresh output, which nothing else reads (torchvision's ReLU(inplace=True))."""
    act = layer.activation.__name__ if layer.activation is not None else "linear"
    return None if act == "linear" else (_inplace_activation(act, torch) or _activation(act, torch))


def _inplace_activation(name, torch):
    """The in-place twin of activation `name` (same values, no new tensor), or None."""
    F = torch.nn.functional
    return {"relu": torch.relu_, "relu6": lambda x: x.clamp_(0.0, 6.0), "sigmoid": torch.sigmoid_,
            "swish": lambda x: F.silu(x, inplace=True), "silu": lambda x: F.silu(x, inplace=True),
            "hard_swish": lambda x: F.hardswish(x, inplace=True), "hard_silu": lambda x: F.hardswish(x, inplace=True),
            "tanh": torch.tanh_}.get(name)


def _per_channel(values, torch):
    t = _tensor(torch, np.asarray(values, np.float32))
    return t.view(1, -1, 1, 1) if t.dim() == 1 and t.numel() > 1 else t


@register(layers.Conv2D)
def _conv2d(layer, torch, rank):
    return Conv(layer, torch, depthwise=False)


@register(layers.DepthwiseConv2D)
def _depthwise_conv2d(layer, torch, rank):
    return Conv(layer, torch, depthwise=True)


@register(layers.SeparableConv2D)
def _separable_conv2d(layer, torch, rank):
    return SeparableConv(layer, torch)


@register(layers.Identity, layers.Dropout, layers.SpatialDropout2D, layers.InputLayer, layers.GaussianNoise,
          layers.GaussianDropout)
def _identity(layer, torch, rank):  # inference: the noise and dropout layers pass their input through
    return lambda x: x


@register(layers.BatchNormalization)
def _batch_norm(layer, torch, rank):  # one not folded into a convolution
    scale, shift = bn_affine(layer, torch)
    return lambda x: x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


@register(layers.ReLU)
def _relu(layer, torch, rank):
    if layer.negative_slope or layer.threshold:
        raise NotImplementedError("ReLU with negative_slope/threshold")
    top = layer.max_value  # ReLU6 (MobileNetV2, EfficientNet-Lite): max_value=6
    return (lambda x: torch.clamp(x, 0.0, float(top))) if top is not None else torch.nn.functional.relu


@register(layers.Activation)
def _activation_layer(layer, torch, rank):
    return _activation(layer.activation.__name__, torch)


@register(layers.Add)
def _add(layer, torch, rank):
    return lambda *xs: _reduce(xs, torch.add)


@register(layers.Multiply)
def _multiply(layer, torch, rank):
    return lambda *xs: _reduce(xs, torch.mul)


@register(layers.Concatenate)
def _concatenate(layer, torch, rank):
    if layer.axis not in (-1, 3):
        raise NotImplementedError(f"Concatenate on axis {layer.axis}")
    return lambda *xs: torch.cat(xs, dim=1)  # NHWC channels = NCHW dim 1


@register(layers.ZeroPadding2D)
def _zero_padding(layer, torch, rank):
    (top, bottom), (left, right) = layer.padding
    return lambda x: torch.nn.functional.pad(x, (left, right, top, bottom))


@register(layers.GlobalAveragePooling2D)
def _global_average_pooling(layer, torch, rank):
    keep = layer.keepdims
    return lambda x: x.mean(dim=(2, 3), keepdim=keep)


@register(layers.Rescaling)
def _rescaling(layer, torch, rank):
    scale, offset = _per_channel(layer.scale, torch), _per_channel(layer.offset, torch)
    return lambda x: x * scale + offset


@register(layers.Normalization)
def _normalization(layer, torch, rank):
    mean, var = _np(layer.mean).reshape(-1), _np(layer.variance).reshape(-1)
    m = _per_channel(mean, torch)
    s = _per_channel(np.maximum(np.sqrt(var), 1e-7), torch)
    return lambda x: (x - m) / s


@register(layers.Resizing)
def _resizing(layer, torch, rank):
    if layer.interpolation != "bilinear" or layer.crop_to_aspect_ratio or layer.pad_to_aspect_ratio:
        raise NotImplementedError("Resizing other than plain bilinear")
    size = (layer.height, layer.width)
    return lambda x: torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False,
                                                     antialias=False)


def _reduce(xs, op):
    out = xs[0]
    for x in xs[1:]:
        out = op(out, x)
    return out


@register(layers.MaxPooling2D, layers.AveragePooling2D)
def _pool(layer, torch, rank):
    F = torch.nn.functional
    k, s = tuple(layer.pool_size), tuple(layer.strides)
    average = type(layer) is layers.AveragePooling2D
    pool = F.avg_pool2d if average else F.max_pool2d
    if layer.padding != "same":
        return lambda x: pool(x, k, s)
    if average:
        # TF 'same' average pooling divides by the in-image count: torch's
        # count_include_pad=False, for the symmetric case (InceptionV3's 3x3/1).
        if s != (1, 1) or k[0] % 2 == 0 or k[1] % 2 == 0:
            raise NotImplementedError(f"AveragePooling2D padding='same' with pool {k}, strides {s}")
        return lambda x: F.avg_pool2d(x, k, s, (k[0] // 2, k[1] // 2), count_include_pad=False)

    def run(x):
        top, bottom = ki_layers.same_padding(x.shape[2], k[0], s[0], 1)
        left, right = ki_layers.same_padding(x.shape[3], k[1], s[1], 1)
        return pool(F.pad(x, (left, right, top, bottom), value=float("-inf")), k, s)

    return run


@register(layers.Reshape)
def _reshape(layer, torch, rank):
    target = tuple(layer.target_shape)
    if len(target) == 3 and target[:2] == (1, 1):  # (N, C) -> (N, 1, 1, C): NCHW (N, C, 1, 1)
        return lambda x: x.reshape(x.shape[0], -1, 1, 1)
    if len(target) == 1:
        return lambda x: x.reshape(x.shape[0], -1)
    raise NotImplementedError(f"Reshape to {target}")


@register(layers.Flatten)
def _flatten(layer, torch, rank):  # Keras flattens NHWC: channels last in each pixel's run
    if rank == 4:
        return lambda x: x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
    return lambda x: x.reshape(x.shape[0], -1)


@register(layers.Dense)
def _dense(layer, torch, rank):
    _flat_input(layer, rank)
    weight = _tensor(torch, np.ascontiguousarray(torch_dense_kernel(_np(layer.kernel))))
    bias = _tensor(torch, _np(layer.bias)) if layer.use_bias else None
    act = layer.activation.__name__ if layer.activation is not None else "linear"
    activation = _activation(act, torch)
    F = torch.nn.functional
    return lambda x: activation(F.linear(x, weight, bias))


def _flat_input(layer, rank):
    """The head's Dense and softmax layers take (N, features) only."""
    if rank != 2:
        raise NotImplementedError(f"{type(layer).__name__} layer {layer.name!r} on rank-{rank} input is not "
                                  "supported by compile_frozen")


def inplace(layer, torch):
    """The in-place twin of a ReLU / Activation layer, or None."""
    if type(layer) is layers.ReLU:
        top = layer.max_value
        return torch.relu_ if top is None else (lambda x: x.clamp_(0.0, float(top)))
    return _inplace_activation(layer.activation.__name__, torch)


# kerasimpl's own layers (`kerasimpl.layers`): their torch twins.


@register(ki_layers.Preprocess)
def _preprocess(layer, torch, rank):
    """The layer's own arithmetic (`layers.preprocess`) on NCHW torch tensors."""
    mode = layer.mode
    _, _, mean, std = ki_layers.PREPROCESSING[mode]
    constants = {v: _per_channel(v, torch) for v in (mean, std) if v is not None}  # made once, on the device
    return lambda x: ki_layers.preprocess(x, mode, lambda t: t.flip(1), constants.__getitem__)


@register(ki_layers.AdaptiveAveragePooling2D)
def _adaptive_average_pooling(layer, torch, rank):  # AlexNet's avgpool: torch's own op
    size = tuple(layer.output_size)
    return lambda x: torch.nn.functional.adaptive_avg_pool2d(x, size)


@register(ki_layers.LabeledSoftmax, layers.Softmax)
def _softmax(layer, torch, rank):
    _flat_input(layer, rank)
    if type(layer) is layers.Softmax and layer.axis not in (-1, 1):
        raise NotImplementedError(f"Softmax on axis {layer.axis}")
    return lambda x: torch.softmax(x.float(), dim=-1)  # float32, as LabeledSoftmax computes it
