"""The JAX fast path for inference: the model jitted once, depthwise convolutions as shifted sums.

On the JAX backend a Keras model's depthwise convolutions lower to XLA's
grouped convolution (`feature_group_count` = channels), which XLA:CPU runs
far below the speed of the same arithmetic written out: at MobileNetV3-Large's
fifteen depthwise shapes (batch 16, 224 px) 1.17 s against 0.09 s for
the k x k shifted multiply-adds below, equal to 6e-6 (docs/benchmarks.md,
2-core AMD EPYC; jax 0.10.2). XLA's own options (XNNPACK/YNNPACK convolution
fusions, oneDNN, single-threaded Eigen) did not close it. `compile_jax`
jits the stateless forward pass of `shifted_graph(model)`: the model rebuilt
by `keras.models.clone_model` (public API; the same layers and variables)
with each depthwise layer of the common case (channels-last, no dilation,
depth multiplier 1) computed that way; any other runs as Keras' own.

Reference: jax-ml/jax#23713 ("Depthwise convolution ... significantly
slower than PyTorch and TensorFlow", open).
"""

from __future__ import annotations

import weakref

import keras
import numpy as np

JAX_PATH = "compiled jax (XLA, depthwise convolutions as shifted sums)"


def depthwise_conv_shifted(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
    """`keras.ops.depthwise_conv` (JAX backend) as k x k strided slices times the kernel, summed.

    Same arguments and result as Keras' (Keras' "same" padding: the extra
    row/column goes after). Channels-last, dilation 1 and depth multiplier 1
    only; anything else is passed to Keras' own implementation.
    """
    import jax.numpy as jnp
    from jax import lax

    stride = _pair(strides)
    if (data_format not in (None, "channels_last") or _pair(dilation_rate) != (1, 1) or kernel.ndim != 4
            or kernel.shape[3] != 1 or inputs.ndim != 4 or str(padding).lower() not in ("valid", "same")):
        return keras.ops.depthwise_conv(inputs, kernel, strides, padding, data_format, dilation_rate)
    inputs, kernel = jnp.asarray(inputs), jnp.asarray(keras.ops.convert_to_tensor(kernel))  # a variable's value
    kh, kw = kernel.shape[:2]
    n, h, w, c = inputs.shape
    if str(padding).lower() == "same":
        from kerasimpl.layers import same_padding

        pads = [same_padding(size, k, s) for size, k, s in ((h, kh, stride[0]), (w, kw, stride[1]))]
        inputs = jnp.pad(inputs, ((0, 0), pads[0], pads[1], (0, 0)))
    hp, wp = inputs.shape[1], inputs.shape[2]
    out_h, out_w = (hp - kh) // stride[0] + 1, (wp - kw) // stride[1] + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            window = lax.slice(inputs, (0, i, j, 0),
                               (n, i + (out_h - 1) * stride[0] + 1, j + (out_w - 1) * stride[1] + 1, c),
                               (1, stride[0], stride[1], 1))
            term = window * kernel[i, j, :, 0].astype(window.dtype)
            out = term if out is None else out + term
    return out


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


_GRAPHS = weakref.WeakKeyDictionary()  # model -> its shifted graph, made once per model


def shifted_graph(model):
    """`model`'s graph with each covered depthwise convolution computed by `depthwise_conv_shifted`.

    `keras.models.clone_model` (recursive, so nested functional bases too)
    keeps every layer, hence every variable, and calls each
    `DepthwiseConv2D` through `_Shifted` and each `SeparableConv2D` (its
    depthwise half; Xception) through `_ShiftedSeparable`, which read the same
    kernels and bias. The clone is of an uncompiled functional view of the
    model (no optimizer state is built for it; a Sequential's view is
    functional, so it is covered too) and is made once per model. Models it
    cannot rebuild (subclassed, or any other failure) are returned as they
    are, and a Sequential nested inside is kept whole (Keras clones those
    without `call_function`): their depthwise convolutions run as Keras' own.
    """
    if model in _GRAPHS:
        return _GRAPHS[model]
    graph = model
    if any(type(layer) in _SWAPS for layer in _all_layers(model)):
        try:
            view = keras.Model(model.inputs, model.outputs)  # the same layers, not compiled
            graph = keras.models.clone_model(view, clone_function=lambda layer: layer, call_function=_shifted_call,
                                             recursive=True)
        except Exception:  # noqa: BLE001 (any model Keras cannot clone: the model itself, Keras' own convolutions)
            graph = model
    _GRAPHS[model] = graph
    return graph


def _all_layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _all_layers(layer)


def _covered(layer) -> bool:
    """A channels-last, undilated depthwise convolution with depth multiplier 1 (what the shifted sums do)."""
    return (layer.data_format == "channels_last" and tuple(layer.dilation_rate) == (1, 1)
            and layer.depth_multiplier == 1)


def _shifted_call(layer, *args, **kwargs):
    """Call `layer` as it is, or through its shifted twin when it is a covered depthwise convolution."""
    swap = _SWAPS.get(type(layer))
    if swap is not None and _covered(layer):
        return swap(layer)(*args, **kwargs)
    return layer(*args, **kwargs)


class _Shifted(keras.layers.Layer):
    """A `DepthwiseConv2D` (its own variables, tracked) computed by `depthwise_conv_shifted`."""

    def __init__(self, conv, **kwargs):
        super().__init__(name=f"{conv.name}_shifted", dtype=conv.dtype_policy, **kwargs)
        self.conv = conv

    def call(self, inputs):
        return self.finish(self.depthwise(inputs, self.conv.kernel))

    def depthwise(self, inputs, kernel):
        c = self.conv
        return depthwise_conv_shifted(inputs, kernel, c.strides, c.padding, c.data_format, c.dilation_rate)

    def finish(self, out):
        c = self.conv
        if c.use_bias:
            out = out + c.bias
        return c.activation(out) if c.activation is not None else out

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)


class _ShiftedSeparable(_Shifted):
    """A `SeparableConv2D`: its depthwise half by `depthwise_conv_shifted`, then Keras' 1x1 convolution (as
    Keras' own `separable_conv` does)."""

    def call(self, inputs):
        c = self.conv
        out = self.depthwise(inputs, c.depthwise_kernel)
        return self.finish(keras.ops.conv(out, c.pointwise_kernel, strides=1, padding="valid",
                                          data_format=c.data_format))


_SWAPS = {keras.layers.DepthwiseConv2D: _Shifted, keras.layers.SeparableConv2D: _ShiftedSeparable}


def compile_jax(model):
    """`f(x) -> float32 np.ndarray` equal to `model(x, training=False)`, jitted with shifted depthwise sums.

    The variables' current values are passed on every call (Keras' own jitted
    steps donate and replace their buffers, so none is kept), so the program
    follows the model's weights. Each new input shape is traced once. The
    program runs `shifted_graph(model)`, which shares the model's variables.

    Raises:
        NotImplementedError: not the JAX backend, or a model with several inputs.
    """
    if keras.backend.backend() != "jax":
        raise NotImplementedError(f"compile_jax needs the JAX backend. Received: {keras.backend.backend()!r}")
    if len(model.inputs) != 1:
        raise NotImplementedError(f"compile_jax takes models with one input. Received {len(model.inputs)} inputs")
    import jax

    dtype = keras.backend.standardize_dtype(model.inputs[0].dtype)
    graph = shifted_graph(model)

    def forward(trainable, non_trainable, x):  # runs only when jax traces a new input shape
        out, _ = graph.stateless_call(trainable, non_trainable, x, training=False)
        return out

    jitted = jax.jit(forward)

    def run(x):
        x = np.asarray(keras.ops.convert_to_numpy(x), dtype=dtype)
        trainable = [v.value for v in graph.trainable_variables]  # the model's own variables
        non_trainable = [v.value for v in graph.non_trainable_variables]
        return np.asarray(jitted(trainable, non_trainable, x), dtype=np.float32)

    return run
