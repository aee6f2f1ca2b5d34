"""The JAX backend: its device, autodiff, jitted inference program and processes.

Every function of the seam (`kerasimpl.backend`) for Keras on JAX. JAX is
imported inside the functions: importing this module costs nothing on
another backend. The compiled program is `inference.compile_jax`; the
processes are `distributed` (`keras.distribution`).
"""

from __future__ import annotations

import contextlib

import keras


def no_grad():
    """A no-op: JAX records no graph unless asked."""
    return contextlib.nullcontext()


def device_description() -> str:
    import jax

    devs = jax.devices()
    return f"{devs[0].platform}: {devs[0].device_kind} x{len(devs)}"


def has_accelerator() -> bool:
    import jax

    return jax.devices()[0].platform != "cpu"


def accelerator():
    """`("cuda", (major, minor))` when JAX's first device is a GPU, else `("cpu", None)`."""
    import jax

    dev = jax.devices()[0]
    if dev.platform != "gpu":
        return "cpu", None
    major, _, minor = str(getattr(dev, "compute_capability", "0.0")).partition(".")
    return "cuda", (int(major), int(minor or 0))


def distribution():
    """The active `keras.distribution` (None without one)."""
    return keras.distribution.distribution()


def value_and_grad(fn, x, has_aux=False):
    """`(fn(x), d sum(fn(x)) / dx)` by `jax.vjp` (`kerasimpl.saliency.gradients.value_and_grad`)."""
    import jax

    if has_aux:
        y, vjp, aux = jax.vjp(fn, keras.ops.convert_to_tensor(x), has_aux=True)
    else:
        y, vjp = jax.vjp(fn, keras.ops.convert_to_tensor(x))
    (g,) = vjp(keras.ops.ones_like(y))
    return (y, g, aux) if has_aux else (y, g)


def compile_program(model, precision):
    """`(f, path)`: `model` jitted as one program, at the model's dtype policy (`precision` is torch's autocast).

    Raises:
        NotImplementedError: a model the program does not cover.
    """
    from kerasimpl.backend.jax.inference import JAX_PATH, compile_jax

    return compile_jax(model), JAX_PATH


def processes():
    """The module that runs JAX across processes (`keras.distribution`, `jax.distributed`)."""
    from kerasimpl.backend.jax import distributed

    return distributed
