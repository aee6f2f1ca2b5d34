"""Gradients of a score with respect to a tensor: the one backend-specific piece.

Everything else in `kerasimpl.saliency` is `keras.ops`. Keras has no
backend-neutral autodiff, so this module branches once per backend.
"""

from __future__ import annotations

import keras

SUPPORTED = ("torch", "jax", "tensorflow")


def value_and_grad(fn, x):
    """`(fn(x), d sum(fn(x)) / dx)` for a tensor `x` on the active backend."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        x = torch.as_tensor(x).detach().requires_grad_(True)
        with torch.enable_grad():
            y = fn(x)
            (g,) = torch.autograd.grad(y.sum(), x)
        return y.detach(), g.detach()
    if backend == "jax":
        import jax

        y, vjp = jax.vjp(fn, keras.ops.convert_to_tensor(x))
        (g,) = vjp(keras.ops.ones_like(y))
        return y, g
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return y, tape.gradient(y, x)
    raise NotImplementedError(
        f"Gradient-based saliency needs one of {SUPPORTED}. Received backend: {backend!r}"
    )
