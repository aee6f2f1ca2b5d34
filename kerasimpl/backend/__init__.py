"""The one backend seam: everything that differs between Keras' backends, in one package.

Each backend has its module here, with the same functions:
`kerasimpl.backend.torch` (and its `inference`, `layers`, `layout`, `distributed`),
`kerasimpl.backend.jax` (and its `inference`, `distributed`),
`kerasimpl.backend.tensorflow`, and `other` for a backend with none of its
own. `current()` is the module of Keras' own backend,
`keras.backend.backend()`, however Keras chose it (the environment or
`~/.keras/keras.json`; never read `KERAS_BACKEND` here), asked on every
call. The functions below forward to it; `kerasimpl.runtime`,
`kerasimpl.precision`, `kerasimpl.inference`, `kerasimpl.distributed` and
`kerasimpl.saliency.gradients` are their backend-free users. Outside this
package nothing imports torch, JAX or TensorFlow but the exceptions
tests/test_layout.py names with their reasons (torch checkpoint files, the
torch reference saliency libraries). The modules here import nothing above
them (those users), so there is no circle.
"""

from __future__ import annotations

import keras


def name() -> str:
    """Keras' backend: `"torch"`, `"jax"`, `"tensorflow"`, ..."""
    return keras.backend.backend()


def module(backend=None):
    """The module of `backend` (default: Keras' own backend)."""
    backend = name() if backend is None else backend
    if backend == "torch":
        from kerasimpl.backend import torch as found
    elif backend == "jax":
        from kerasimpl.backend import jax as found
    elif backend == "tensorflow":
        from kerasimpl.backend import tensorflow as found
    else:
        from kerasimpl.backend import other as found
    return found


def current():
    """The module of Keras' backend (`keras.backend.backend()`, asked now)."""
    return module()


def no_grad():
    """A context in which forward passes record no autodiff graph (torch's `no_grad`; elsewhere a no-op)."""
    return current().no_grad()


def device_description() -> str:
    """A human-readable name of the accelerator (or CPU) in use."""
    return current().device_description()


def has_accelerator() -> bool:
    """Whether the backend computes on a GPU/TPU rather than the CPU."""
    return current().has_accelerator()


def accelerator():
    """`("cuda", (major, minor))` when the backend computes on a CUDA GPU, else `("cpu", None)`."""
    return current().accelerator()


def distribution():
    """The active `keras.distribution` (JAX's engine; None without one and on the other backends)."""
    return current().distribution()


def value_and_grad(fn, x, has_aux=False):
    """`(fn(x), d sum(fn(x)) / dx)`, and `aux` with `has_aux` (`kerasimpl.saliency.gradients`)."""
    return current().value_and_grad(fn, x, has_aux)


def compile_program(model, precision):
    """`(f, path)`: `model` as the backend's compiled inference program (`kerasimpl.inference.Forward`).

    Raises:
        NotImplementedError: the backend has none, or it does not cover `model` (the message says why).
    """
    return current().compile_program(model, precision)


def processes(backend=None):
    """The module that runs `backend` (default: Keras' own) across processes, None where none does
    (`kerasimpl.distributed` is its backend-free facade)."""
    return module(backend).processes()
