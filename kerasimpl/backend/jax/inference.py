"""The JAX fast path for inference: the model jitted once, depthwise convolutions as shifted sums.

On the JAX backend a Keras model's depthwise convolutions lower to XLA's
grouped convolution (`feature_group_count` = channels), which XLA:CPU runs
far below the speed of the same arithmetic written out: at MobileNetV3-Large's
fifteen depthwise shapes (batch 16, 224 px) 1.17 s against 0.09 s for
the k x k shifted multiply-adds below, equal to 6e-6 (docs/benchmarks.md,
2-core AMD EPYC; jax 0.10.2). XLA's own options (XNNPACK/YNNPACK convolution
fusions, oneDNN, single-threaded Eigen) did not close it. `compile_jax`
jits the model's stateless forward pass with `keras.ops.depthwise_conv`
computed that way for the common case (channels-last, no dilation, depth
multiplier 1); any other depthwise convolution runs as Keras' own.

Reference: jax-ml/jax#23713 ("Depthwise convolution ... significantly
slower than PyTorch and TensorFlow", open).
"""

from __future__ import annotations

import contextlib
import functools
import threading

import numpy as np

JAX_PATH = "compiled jax (XLA, depthwise convolutions as shifted sums)"
_PATCH_LOCK = threading.Lock()


@functools.cache
def _keras_depthwise():
    """Keras' own JAX `depthwise_conv`, read once before any patch (importing this module needs no JAX)."""
    from kerasimpl import compat

    return compat.jax_backend_nn().depthwise_conv


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
        return _keras_depthwise()(inputs, kernel, strides, padding, data_format, dilation_rate)
    inputs, kernel = jnp.asarray(inputs), jnp.asarray(kernel)
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


@contextlib.contextmanager
def shifted_depthwise():
    """Within the block, `keras.ops.depthwise_conv` on JAX is `depthwise_conv_shifted`.

    Meant to wrap the TRACING of a jitted function (the compiled program
    keeps the shifted sums afterwards). It replaces a Keras backend function
    (private API, Keras 3.15) for the whole process while the block runs, so
    blocks are serialised by a lock.
    """
    from kerasimpl import compat

    jax_nn = compat.jax_backend_nn()
    with _PATCH_LOCK:
        original = _keras_depthwise()
        jax_nn.depthwise_conv = depthwise_conv_shifted
        try:
            yield
        finally:
            jax_nn.depthwise_conv = original


def compile_jax(model):
    """`f(x) -> float32 np.ndarray` equal to `model(x, training=False)`, jitted with shifted depthwise sums.

    The variables' current values are passed on every call (Keras' own jitted
    steps donate and replace their buffers, so none is kept), so the program
    follows the model's weights. Each new input shape is traced once, and
    only that tracing runs inside `shifted_depthwise()`.

    Raises:
        NotImplementedError: not the JAX backend, or a model with several inputs.
    """
    import keras

    if keras.backend.backend() != "jax":
        raise NotImplementedError(f"compile_jax needs the JAX backend. Received: {keras.backend.backend()!r}")
    if len(model.inputs) != 1:
        raise NotImplementedError(f"compile_jax takes models with one input. Received {len(model.inputs)} inputs")
    import jax

    dtype = keras.backend.standardize_dtype(model.inputs[0].dtype)

    def forward(trainable, non_trainable, x):  # runs only when jax traces a new input shape
        with shifted_depthwise():
            out, _ = model.stateless_call(trainable, non_trainable, x, training=False)
        return out

    jitted = jax.jit(forward)

    def run(x):
        x = np.asarray(keras.ops.convert_to_numpy(x), dtype=dtype)
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        return np.asarray(jitted(trainable, non_trainable, x), dtype=np.float32)

    return run
