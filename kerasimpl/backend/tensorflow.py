"""The TensorFlow backend, as far as kerasimpl goes there: gradients and the GPU question.

Keras' fallback backend; kerasimpl runs on torch and JAX, and on TensorFlow
only through Keras (no compiled program, no processes). Everything not
defined here is `other`'s.
"""

from __future__ import annotations

from kerasimpl.backend.other import (  # noqa: F401  (the seam's full set of functions)
    accelerator, compile_program, device_description, distribution, no_grad, processes,
)


def has_accelerator() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def value_and_grad(fn, x, has_aux=False):
    """`(fn(x), d sum(fn(x)) / dx)` by `tf.GradientTape` (`kerasimpl.saliency.gradients.value_and_grad`)."""
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = fn(x)
        y, aux = out if has_aux else (out, None)
    g = tape.gradient(y, x)
    return (y, g, aux) if has_aux else (y, g)
