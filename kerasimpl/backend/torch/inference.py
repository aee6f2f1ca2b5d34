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
(`kerasimpl.precision` chooses it; `autocast` here applies it). Only inference, only the torch backend, only the
layer types of the converter table (`kerasimpl.backend.torch.layers.CONVERTERS`,
extended with `register`); anything else raises `NotImplementedError` and
callers fall back to Keras. Outputs equal the Keras model's to float
tolerance (tested on every registered backbone).
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np

from kerasimpl import compat
from keras import layers

from kerasimpl.backend.torch.layers import (  # noqa: F401  (CONVERTERS and register: the table, public here too)
    CONVERTERS, Conv, SeparableConv, bn_affine, building_on, convert, inplace, register,
)


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
    if keras.backend.backend() != "torch":
        raise NotImplementedError(f"compile_frozen needs the torch backend; received {keras.backend.backend()!r}")
    import torch

    device = torch.device(device if device is not None else _model_device(model))
    if precision not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"Unknown precision. Received: {precision!r}. Accepted: float32, bfloat16, float16")
    if precision == "float16" and device.type != "cuda":
        raise ValueError(f"float16 runs on CUDA only; the program's device is {device}. Use bfloat16 or float32")
    with building_on(device):
        return _Program(model, precision=precision, device=device)


def _model_device(model):
    return str(model.weights[0].value.device) if model.weights else "cpu"


def _functional_of(model):
    """The functional graph of a nested model (a Sequential's inner one)."""
    graph = compat.sequential_graph(model) if isinstance(model, keras.Sequential) else model
    if graph is None or compat.nodes_by_depth(graph) is None or len(graph.inputs) != 1:
        raise NotImplementedError(f"nested model {model.name!r} (not built on one Input) is not supported by "
                                  "compile_frozen")
    return graph


class _Program:
    def __init__(self, model, precision="float32", device=None):
        import torch

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
            if type(layer) is layers.BatchNormalization and self._fold_bn(layer, inputs[0], producer, consumers):
                producer[id(outputs[0])] = producer[id(inputs[0])]
                self.steps[producer[id(inputs[0])]]["out"] = id(outputs[0])
                continue
            if isinstance(layer, keras.Model):  # the nested head model
                fn = _Program(_functional_of(layer), precision, self.device).run
            elif isinstance(layer, layers.Layer):
                fn = convert(layer, torch, len(inputs[0].shape))
            else:
                fn = _convert_op(node, torch)
            if type(fn) is Conv and fn.padding == "valid":
                self._fold_padding(fn, inputs[0], producer, consumers)
            if type(layer) in (layers.ReLU, layers.Activation) and self._fresh_and_private(inputs[0], producer,
                                                                                            consumers):
                fn = inplace(layer, torch) or fn  # nothing else reads its input: skip an allocation
            producer[id(outputs[0])] = len(self.steps)
            self.steps.append({"fn": fn, "layer": layer, "ins": [id(t) for t in inputs], "out": id(outputs[0]),
                               "rank": len(outputs[0].shape)})

    def _fresh_and_private(self, tensor, producer, consumers):
        """A convolution's own output that no one else reads (safe to overwrite)."""
        idx = producer.get(id(tensor))
        return (idx is not None and isinstance(self.steps[idx]["fn"], (Conv, SeparableConv))
                and consumers.get(id(tensor), 0) == 1 and id(tensor) not in self.output_ids)

    def _fold_padding(self, conv, tensor, producer, consumers):
        """Let a 'valid' `conv` pad inside `F.conv2d` when `tensor` is a symmetric ZeroPadding2D's private
        output (torch-style `padding=1` nets: torchvision's MobileNetV2, AlexNet): the pad step becomes a
        pass-through instead of a copy of the whole map."""
        idx = producer.get(id(tensor))
        if idx is None or consumers.get(id(tensor), 0) != 1 or id(tensor) in self.output_ids:
            return
        step = self.steps[idx]
        if type(step["layer"]) is not layers.ZeroPadding2D:
            return
        (top, bottom), (left, right) = step["layer"].padding
        if top == bottom and left == right:
            conv.explicit_pad = (top, left)
            step["fn"] = _pass_through

    def _fold_bn(self, bn, tensor, producer, consumers):
        """Fold `bn` into the convolution producing `tensor`, when that is exact."""
        idx = producer.get(id(tensor))
        if idx is None or consumers.get(id(tensor), 0) != 1:
            return False
        step = self.steps[idx]
        conv = step["fn"]
        if not isinstance(conv, (Conv, SeparableConv)) or conv.activation is not None:
            return False
        scale, shift = bn_affine(bn, self.torch)
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
        torch = self.torch
        with torch.inference_mode(), autocast(self.autocast, self.device.type):
            # contiguous: a reversed or strided NumPy view (x[::-1]) has negative strides torch refuses
            x = torch.as_tensor(x if isinstance(x, torch.Tensor) else np.ascontiguousarray(x)).to(self.device)
            x = x.permute(0, 3, 1, 2).float() if x.dim() == 4 else x.float()
            outs = self.run(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)
            outs = [_to_keras_layout(t) for t in (outs if isinstance(outs, list) else [outs])]
        return outs[0] if len(outs) == 1 else outs


def autocast_precision(precision, device_type="cpu", capability=None) -> str:
    """The dtype autocast really runs for `precision` on a device.

    On CUDA, bfloat16 needs compute capability 8.0 (Ampere) for native
    kernels: on older GPUs a low precision runs as float16 (their tensor
    cores' type). Elsewhere: `precision` itself.
    """
    if device_type == "cuda" and precision == "bfloat16" and (capability is None or tuple(capability) < (8, 0)):
        return "float16"
    return precision


def torch_dtype(precision):
    """The torch dtype of a concrete precision."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[precision]


def autocast(precision, device_type="cpu"):
    """`torch.autocast` for a low precision, a no-op context for float32."""
    if precision == "float32":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=device_type, dtype=torch_dtype(precision))


def _pass_through(x):
    return x


def _to_keras_layout(t):
    return (t.permute(0, 2, 3, 1) if t.dim() == 4 else t).float().contiguous().cpu().numpy()


def _nodes_in_order(model):
    """(operation, input tensors, output tensors, node) of every node, inputs first."""
    order = []
    graph = compat.nodes_by_depth(model)
    for depth in sorted(graph, reverse=True):
        for node in graph[depth]:
            layer = node.operation
            if isinstance(layer, layers.InputLayer):
                continue
            order.append((layer, list(node.input_tensors), list(node.output_tensors), node))
    return order


def _convert_op(node, torch):
    """A raw `keras.ops` node in the graph (e.g. `x + 3.0` in MobileNetV3's
    hard-sigmoid): element-wise arithmetic with tensors and scalar constants."""
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
