"""Frozen Keras graphs as native torch programs, for fast feature extraction.

Keras on torch runs every convolution in NHWC and permutes to NCHW and back
around it, and runs BatchNormalization as separate element-wise ops; on a
CPU that is 2-5x slower than the same network written in torch (measured by
`python -m experiments.bench`). For a FROZEN graph (inference only) we can do
better than both: `compile_frozen` walks the functional graph once, folds
every BatchNormalization into the convolution that feeds it, keeps tensors
NCHW in channels-last memory throughout, and runs under
`torch.inference_mode()`.

It covers the whole saved classifier (the head's Dense, Dropout as
identity, Flatten, `LabeledSoftmax`, nested Sequential/functional models),
so every forward pass of a saved model can run here
(`kerasimpl.inference`). On CUDA the program lives on the model's GPU, in
channels-last memory too. A low `precision` runs it under `torch.autocast`
(`kerasimpl.precision`). Only inference, only the torch backend, only the
layer types below; anything else raises `NotImplementedError` and callers
fall back to Keras. Outputs equal the Keras model's to float tolerance
(tested on every registered backbone).
"""

from __future__ import annotations

import threading

import numpy as np

from kerasimpl import layers as ki_layers

IDENTITY = ("Identity", "Dropout", "SpatialDropout2D", "InputLayer", "GaussianNoise", "GaussianDropout")


def compile_frozen(model, precision="float32", device=None):
    """A callable `f(x) -> np.ndarray` computing `model(x, training=False)` in native torch.

    Args:
        model: a Keras functional model (e.g. `models.feature_extractor(clf)`,
            or a whole classifier) with one input.
        precision: `"float32"`, `"bfloat16"` or `"float16"` (a concrete one:
            `kerasimpl.precision.resolve` turns `auto` into one). Low
            precisions run under `torch.autocast`; outputs are float32.
        device: torch device of the program (default: where the model's
            weights live: the GPU on a CUDA machine).

    Raises:
        NotImplementedError: the backend is not torch, or a layer type is not
            supported (the message names it).
        ValueError: an unknown precision, or float16 on a CPU.
    """
    import keras

    if keras.backend.backend() != "torch":
        raise NotImplementedError(f"compile_frozen needs the torch backend; received {keras.backend.backend()!r}")
    import torch

    device = torch.device(device if device is not None else _model_device(model))
    if precision not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"Unknown precision. Received: {precision!r}. Accepted: float32, bfloat16, float16")
    if precision == "float16" and device.type != "cuda":
        raise ValueError(f"float16 runs on CUDA only; the program's device is {device}. Use bfloat16 or float32")
    previous = getattr(_BUILD, "device", None)
    _BUILD.device = device
    try:
        return _Program(model, precision=precision, device=device)
    finally:
        _BUILD.device = previous


_BUILD = threading.local()  # the device the program being built lives on


def _tensor(torch, array):
    """A float tensor of `array` on the device of the program being built."""
    return torch.as_tensor(np.asarray(array)).to(getattr(_BUILD, "device", None) or "cpu")


def _model_device(model):
    return str(model.weights[0].value.device) if model.weights else "cpu"


def _functional_of(model):
    """The functional graph of a nested model (a Sequential's inner one)."""
    graph = getattr(model, "_functional", None) if type(model).__name__ == "Sequential" else model
    if graph is None or not hasattr(graph, "_nodes_by_depth") or len(graph.inputs) != 1:
        raise NotImplementedError(f"nested model {model.name!r} (not built on one Input) is not supported by "
                                  "compile_frozen")
    return graph


class _Program:
    def __init__(self, model, precision="float32", device=None):
        import keras
        import torch

        from kerasimpl.precision import autocast_precision

        self.torch, self.precision = torch, precision
        self.device = torch.device(device or "cpu")
        capability = torch.cuda.get_device_capability(self.device) if self.device.type == "cuda" else None
        self.autocast = autocast_precision(precision, self.device.type, capability)
        self.input_id = id(model.inputs[0])
        self.output_ids = [id(t) for t in model.outputs]
        nodes = _nodes_in_order(model)
        consumers = {}
        for _, inputs, _, _ in nodes:
            for t in inputs:
                consumers[id(t)] = consumers.get(id(t), 0) + 1
        self.steps = []
        producer = {}  # tensor id -> index of the step that makes it
        for layer, inputs, outputs, node in nodes:
            kind = type(layer).__name__
            if kind == "BatchNormalization" and self._fold_bn(layer, inputs[0], producer, consumers):
                producer[id(outputs[0])] = producer[id(inputs[0])]
                self.steps[producer[id(inputs[0])]]["out"] = id(outputs[0])
                continue
            if isinstance(layer, keras.Model):  # the nested head model
                fn = _Program(_functional_of(layer), precision, self.device).run
            elif isinstance(layer, keras.layers.Layer):
                fn = _convert(layer, torch, len(inputs[0].shape))
            else:
                fn = _convert_op(node, torch)
            if kind in ("ReLU", "Activation") and self._fresh_and_private(inputs[0], producer, consumers):
                fn = _inplace(layer, torch) or fn  # nothing else reads its input: skip an allocation
            producer[id(outputs[0])] = len(self.steps)
            self.steps.append({"fn": fn, "layer": layer, "ins": [id(t) for t in inputs], "out": id(outputs[0]),
                               "rank": len(outputs[0].shape)})

    def _fresh_and_private(self, tensor, producer, consumers):
        """A convolution's own output that no one else reads (safe to overwrite)."""
        idx = producer.get(id(tensor))
        return (idx is not None and isinstance(self.steps[idx]["fn"], (_Conv, _SeparableConv))
                and consumers.get(id(tensor), 0) == 1 and id(tensor) not in self.output_ids)

    def _fold_bn(self, bn, tensor, producer, consumers):
        """Fold `bn` into the convolution producing `tensor`, when that is exact."""
        idx = producer.get(id(tensor))
        if idx is None or consumers.get(id(tensor), 0) != 1:
            return False
        step = self.steps[idx]
        conv = step["fn"]
        if not isinstance(conv, (_Conv, _SeparableConv)) or conv.activation is not None:
            return False
        scale, shift = _bn_affine(bn, self.torch)
        conv.fold(scale, shift)
        return True

    def run(self, x):
        """The graph on an internal-layout tensor (NCHW for images); internal-layout outputs."""
        values = {self.input_id: x}
        for step in self.steps:
            args = [values[i] for i in step["ins"]]
            values[step["out"]] = step["fn"](*args)
        outs = [values[i] for i in self.output_ids]
        return outs[0] if len(outs) == 1 else outs

    def __call__(self, x):
        """Keras-layout input (NumPy or a torch tensor) -> Keras-layout float32 NumPy output(s)."""
        from kerasimpl.precision import autocast

        torch = self.torch
        with torch.inference_mode(), autocast(self.autocast, self.device.type):
            # contiguous: a reversed or strided NumPy view (x[::-1]) has negative strides torch refuses
            x = torch.as_tensor(x if isinstance(x, torch.Tensor) else np.ascontiguousarray(x)).to(self.device)
            x = x.permute(0, 3, 1, 2).float() if x.dim() == 4 else x.float()
            outs = self.run(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)
            outs = [_to_keras_layout(t) for t in (outs if isinstance(outs, list) else [outs])]
        return outs[0] if len(outs) == 1 else outs


def _to_keras_layout(t):
    return (t.permute(0, 2, 3, 1) if t.dim() == 4 else t).float().contiguous().cpu().numpy()


def _nodes_in_order(model):
    """(operation, input tensors, output tensors, node) of every node, inputs first."""
    order = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            layer = node.operation
            if type(layer).__name__ == "InputLayer":
                continue
            order.append((layer, list(node.input_tensors), list(node.output_tensors), node))
    return order


def _np(v):
    import keras

    return keras.ops.convert_to_numpy(v).astype(np.float32)


def _bn_affine(bn, torch):
    mean, var = _np(bn.moving_mean), _np(bn.moving_variance)
    gamma = _np(bn.gamma) if bn.scale else np.ones_like(mean)
    beta = _np(bn.beta) if bn.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + bn.epsilon)
    return _tensor(torch, scale), _tensor(torch, beta - mean * scale)


def _same_pads(size, k, s, d):
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


class _Conv:
    """Conv2D / DepthwiseConv2D in NCHW with TF-style 'same' padding."""

    def __init__(self, layer, torch, depthwise):
        self.torch, self.layer = torch, layer
        k = _np(layer.kernel)  # (kh, kw, in, out) or depthwise (kh, kw, in, mult)
        if depthwise:
            kh, kw, cin, mult = k.shape
            w = k.transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)
            self.groups = cin
        else:
            w = k.transpose(3, 2, 0, 1)
            self.groups = getattr(layer, "groups", 1)
        self.weight = _tensor(torch, np.ascontiguousarray(w)).contiguous(memory_format=torch.channels_last)
        self.bias = _tensor(torch, _np(layer.bias)) if layer.use_bias else None
        self.stride, self.dilation = tuple(layer.strides), tuple(layer.dilation_rate)
        self.padding = layer.padding
        act = layer.activation.__name__ if layer.activation is not None else "linear"
        self.activation = None if act == "linear" else _activation(act, torch)

    @classmethod
    def from_arrays(cls, torch, weight, bias, strides, dilation, padding, groups):
        """A linear conv from torch-layout (out, in/groups, kh, kw) weights."""
        conv = cls.__new__(cls)
        conv.torch, conv.layer, conv.groups, conv.activation = torch, None, groups, None
        conv.weight = _tensor(torch, np.ascontiguousarray(weight)).contiguous(memory_format=torch.channels_last)
        conv.bias = None if bias is None else _tensor(torch, bias)
        conv.stride, conv.dilation, conv.padding = tuple(strides), tuple(dilation), padding
        return conv

    def fold(self, scale, shift):
        self.weight = (self.weight * scale.view(-1, 1, 1, 1)).contiguous(memory_format=self.torch.channels_last)
        self.bias = shift if self.bias is None else self.bias * scale + shift

    def __call__(self, x):
        F = self.torch.nn.functional
        if self.padding == "same":
            kh, kw = self.weight.shape[2:]
            top, bottom = _same_pads(x.shape[2], kh, self.stride[0], self.dilation[0])
            left, right = _same_pads(x.shape[3], kw, self.stride[1], self.dilation[1])
            if (top, left) == (bottom, right):
                y = F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
            else:
                x = F.pad(x, (left, right, top, bottom))
                y = F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        else:
            y = F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return self.activation(y) if self.activation is not None else y


class _SeparableConv:
    """SeparableConv2D: depthwise `_Conv`, then a 1x1 pointwise one (Xception)."""

    def __init__(self, layer, torch):
        self.torch = torch
        dk = _np(layer.depthwise_kernel)  # (kh, kw, in, mult)
        kh, kw, cin, mult = dk.shape
        pk = _np(layer.pointwise_kernel)  # (1, 1, in * mult, out)
        self.depthwise = _Conv.from_arrays(torch, dk.transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw), None,
                                           layer.strides, layer.dilation_rate, layer.padding, cin)
        bias = _np(layer.bias) if layer.use_bias else None
        self.pointwise = _Conv.from_arrays(torch, pk.transpose(3, 2, 0, 1), bias, (1, 1), (1, 1), "valid", 1)
        act = layer.activation.__name__ if layer.activation is not None else "linear"
        self.activation = None if act == "linear" else _activation(act, torch)

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


def _per_channel(values, torch):
    t = _tensor(torch, np.asarray(values, np.float32))
    return t.view(1, -1, 1, 1) if t.dim() == 1 and t.numel() > 1 else t


def _convert(layer, torch, rank=4):
    """A torch callable for one Keras layer, in NCHW (`rank`: of its input)."""
    F = torch.nn.functional
    kind = type(layer).__name__
    if kind in ("Conv2D", "DepthwiseConv2D"):
        return _Conv(layer, torch, depthwise=kind == "DepthwiseConv2D")
    if kind in IDENTITY:
        return lambda x: x
    if kind == "BatchNormalization":
        scale, shift = _bn_affine(layer, torch)
        return lambda x: x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
    if kind == "ReLU":
        if layer.negative_slope or layer.threshold:
            raise NotImplementedError("ReLU with negative_slope/threshold")
        top = layer.max_value
        return (lambda x: torch.clamp(x, 0.0, float(top))) if top is not None else F.relu
    if kind == "Activation":
        return _activation(layer.activation.__name__, torch)
    if kind == "Add":
        return lambda *xs: _reduce(xs, torch.add)
    if kind == "Multiply":
        return lambda *xs: _reduce(xs, torch.mul)
    if kind == "ZeroPadding2D":
        (top, bottom), (left, right) = layer.padding
        return lambda x: F.pad(x, (left, right, top, bottom))
    if kind == "GlobalAveragePooling2D":
        keep = layer.keepdims
        return lambda x: x.mean(dim=(2, 3), keepdim=keep)
    if kind in ("MaxPooling2D", "AveragePooling2D"):
        return _pool(layer, torch, kind)
    if kind == "Concatenate":
        if layer.axis not in (-1, 3):
            raise NotImplementedError(f"Concatenate on axis {layer.axis}")
        return lambda *xs: torch.cat(xs, dim=1)  # NHWC channels = NCHW dim 1
    if kind == "SeparableConv2D":
        return _SeparableConv(layer, torch)
    if kind == "Reshape":
        return _reshape(layer)
    if kind == "Rescaling":
        scale, offset = _per_channel(layer.scale, torch), _per_channel(layer.offset, torch)
        return lambda x: x * scale + offset
    if kind == "Normalization":
        mean, var = _np(layer.mean).reshape(-1), _np(layer.variance).reshape(-1)
        m = _per_channel(mean, torch)
        s = _per_channel(np.maximum(np.sqrt(var), 1e-7), torch)
        return lambda x: (x - m) / s
    if kind == "Resizing":
        if layer.interpolation != "bilinear" or layer.crop_to_aspect_ratio or layer.pad_to_aspect_ratio:
            raise NotImplementedError("Resizing other than plain bilinear")
        size = (layer.height, layer.width)
        return lambda x: F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
    if isinstance(layer, ki_layers.Preprocess):
        return _preprocess(layer.mode, torch)
    if isinstance(layer, ki_layers.AdaptiveAveragePooling2D):  # AlexNet's avgpool: torch's own op
        size = tuple(layer.output_size)
        return lambda x: F.adaptive_avg_pool2d(x, size)
    if kind in ("Dense", "Flatten", "LabeledSoftmax", "Softmax"):
        return _head_layer(layer, torch, rank)
    raise NotImplementedError(f"layer {layer.name!r} of type {kind} is not supported by compile_frozen")


def _convert_op(node, torch):
    """A raw `keras.ops` node in the graph (e.g. `x + 3.0` in MobileNetV3's
    hard-sigmoid): element-wise arithmetic with tensors and scalar constants."""
    import keras

    ops = {"Add": torch.add, "Multiply": torch.mul, "Subtract": torch.sub, "TrueDivide": torch.div}
    name = type(node.operation).__name__
    args = node.arguments.args
    if name not in ops or node.arguments.kwargs or len(args) != 2:
        raise NotImplementedError(f"keras.ops node {name} is not supported by compile_frozen")
    if not all(keras.backend.is_keras_tensor(a) or np.isscalar(a) for a in args):
        raise NotImplementedError(f"keras.ops node {name} with non-scalar constants")
    slots = [keras.backend.is_keras_tensor(a) for a in args]
    fn = ops[name]

    def run(*tensors):
        it = iter(tensors)
        return fn(*[next(it) if is_t else float(a) for a, is_t in zip(args, slots)])

    return run


def _inplace(layer, torch):
    """The in-place twin of a ReLU / Activation layer, or None."""
    F = torch.nn.functional
    if type(layer).__name__ == "ReLU":
        top = layer.max_value
        return torch.relu_ if top is None else (lambda x: x.clamp_(0.0, float(top)))
    return {
        "relu": torch.relu_,
        "hard_swish": lambda x: F.hardswish(x, inplace=True),
        "hard_silu": lambda x: F.hardswish(x, inplace=True),
        "swish": lambda x: F.silu(x, inplace=True),
        "silu": lambda x: F.silu(x, inplace=True),
        "sigmoid": torch.sigmoid_,
    }.get(layer.activation.__name__)


def _reduce(xs, op):
    out = xs[0]
    for x in xs[1:]:
        out = op(out, x)
    return out


def _pool(layer, torch, kind):
    F = torch.nn.functional
    k, s = tuple(layer.pool_size), tuple(layer.strides)
    pool = F.max_pool2d if kind == "MaxPooling2D" else F.avg_pool2d
    if layer.padding != "same":
        return lambda x: pool(x, k, s)
    if kind == "AveragePooling2D":
        # TF 'same' average pooling divides by the in-image count: torch's
        # count_include_pad=False, for the symmetric case (InceptionV3's 3x3/1).
        if s != (1, 1) or k[0] % 2 == 0 or k[1] % 2 == 0:
            raise NotImplementedError(f"AveragePooling2D padding='same' with pool {k}, strides {s}")
        return lambda x: F.avg_pool2d(x, k, s, (k[0] // 2, k[1] // 2), count_include_pad=False)

    def run(x):
        top, bottom = _same_pads(x.shape[2], k[0], s[0], 1)
        left, right = _same_pads(x.shape[3], k[1], s[1], 1)
        return pool(F.pad(x, (left, right, top, bottom), value=float("-inf")), k, s)

    return run


def _reshape(layer):
    target = tuple(layer.target_shape)
    if len(target) == 3 and target[:2] == (1, 1):  # (N, C) -> (N, 1, 1, C): NCHW (N, C, 1, 1)
        return lambda x: x.reshape(x.shape[0], -1, 1, 1)
    if len(target) == 1:
        return lambda x: x.reshape(x.shape[0], -1)
    raise NotImplementedError(f"Reshape to {target}")


def _preprocess(mode, torch):
    from kerasimpl.layers import (CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_MEAN_BGR, IMAGENET_STD,
                                  LITE_MEAN, LITE_STD)

    if mode == "caffe":
        mean = _per_channel(IMAGENET_MEAN_BGR, torch)
        return lambda x: x.flip(1) - mean
    if mode == "tf":
        return lambda x: x / 127.5 - 1.0
    if mode == "lite":
        return lambda x: (x - LITE_MEAN) / LITE_STD
    if mode in ("torch", "cifar"):
        m, s = (IMAGENET_MEAN, IMAGENET_STD) if mode == "torch" else (CIFAR10_MEAN, CIFAR10_STD)
        m, s = _per_channel(m, torch), _per_channel(s, torch)
        return lambda x: (x / 255.0 - m) / s
    if mode == "none":
        return lambda x: x
    raise NotImplementedError(f"Preprocess mode {mode!r}")


def _head_layer(layer, torch, rank):
    """Dense, Flatten and the softmax layers of a classifier's head."""
    kind = type(layer).__name__
    if kind == "Flatten":  # Keras flattens NHWC: channels last in each pixel's run
        return (lambda x: x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)) if rank == 4 else (
            lambda x: x.reshape(x.shape[0], -1))
    if rank != 2:
        raise NotImplementedError(f"{kind} layer {layer.name!r} on rank-{rank} input is not supported by "
                                  "compile_frozen")
    if kind in ("LabeledSoftmax", "Softmax"):
        if kind == "Softmax" and layer.axis not in (-1, 1):
            raise NotImplementedError(f"Softmax on axis {layer.axis}")
        return lambda x: torch.softmax(x.float(), dim=-1)  # float32, as LabeledSoftmax computes it
    weight = _tensor(torch, np.ascontiguousarray(_np(layer.kernel).T))
    bias = _tensor(torch, _np(layer.bias)) if layer.use_bias else None
    act = layer.activation.__name__ if layer.activation is not None else "linear"
    activation = _activation(act, torch)
    F = torch.nn.functional
    return lambda x: activation(F.linear(x, weight, bias))
