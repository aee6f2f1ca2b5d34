"""Gradients of a score with respect to a tensor: the one autodiff call of `kerasimpl.saliency`.

Everything else in `kerasimpl.saliency` is `keras.ops`. Keras has no
backend-neutral autodiff, so each backend's module in the seam
(`kerasimpl.backend`) computes it its own way: torch autograd, `jax.vjp`,
`tf.GradientTape`. Its counterpart for passes that record no graph,
`no_grad`, lives in `kerasimpl.runtime` (inference uses it too).
"""

from __future__ import annotations

from kerasimpl import backend

SUPPORTED = ("torch", "jax", "tensorflow")


def value_and_grad(fn, x, has_aux=False):
    """`(fn(x), d sum(fn(x)) / dx)` for a tensor `x` on the active backend.

    With `has_aux`, `fn` returns `(y, aux)` and the result is
    `(y, grad, aux)`: `aux` (e.g. all logits) comes from the same pass.

    Raises:
        NotImplementedError: a backend without autodiff here (not one of `SUPPORTED`).
    """
    name = backend.name()
    if name not in SUPPORTED:
        raise NotImplementedError(f"Gradient-based saliency needs one of {SUPPORTED}. Received backend: {name!r}")
    return backend.value_and_grad(fn, x, has_aux)
