"""Gradients of a score with respect to a tensor: the one backend-specific piece.

Everything else in `kerasimpl.saliency` is `keras.ops`. Keras has no
backend-neutral autodiff, so this module branches once per backend. Its
counterpart for passes that record no graph, `no_grad`, lives in
`kerasimpl.runtime` (inference uses it too).
"""

from __future__ import annotations

import keras

SUPPORTED = ("torch", "jax", "tensorflow")


def value_and_grad(fn, x, has_aux=False):
    """`(fn(x), d sum(fn(x)) / dx)` for a tensor `x` on the active backend.

    With `has_aux`, `fn` returns `(y, aux)` and the result is
    `(y, grad, aux)`: `aux` (e.g. all logits) comes from the same pass.
    """
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        x = torch.as_tensor(x).detach().requires_grad_(True)
        with torch.enable_grad():
            out = fn(x)
            y, aux = out if has_aux else (out, None)
            (g,) = torch.autograd.grad(y.sum(), x)
        y, g = y.detach(), g.detach()
        return (y, g, aux.detach()) if has_aux else (y, g)
    if backend == "jax":
        import jax

        if has_aux:
            y, vjp, aux = jax.vjp(fn, keras.ops.convert_to_tensor(x), has_aux=True)
        else:
            y, vjp = jax.vjp(fn, keras.ops.convert_to_tensor(x))
        (g,) = vjp(keras.ops.ones_like(y))
        return (y, g, aux) if has_aux else (y, g)
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = fn(x)
            y, aux = out if has_aux else (out, None)
        g = tape.gradient(y, x)
        return (y, g, aux) if has_aux else (y, g)
    raise NotImplementedError(
        f"Gradient-based saliency needs one of {SUPPORTED}. Received backend: {backend!r}"
    )

