"""The torch backend: its device, autograd, compiled inference program and processes.

Every function of the seam (`kerasimpl.backend`) for Keras on torch. torch
is imported inside the functions: importing this module costs nothing on
another backend. The compiled program is `inference.compile_frozen` (its
converter table in `layers`, the weight layout it shares with the
checkpoints in `layout`); the processes are `distributed`.
"""

from __future__ import annotations

import platform


def no_grad():
    """`torch.no_grad()`: a Keras model called outside `predict` otherwise records the graph of every
    trainable weight (a Score-CAM or RISE run makes thousands of such calls: measured 1.8x slower)."""
    import torch

    return torch.no_grad()


def device_description() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available()


def accelerator():
    """`("cuda", (major, minor))` of the first CUDA GPU, else `("cpu", None)` (also where torch is absent)."""
    try:
        import torch
    except ImportError:
        return "cpu", None
    if torch.cuda.is_available():
        return "cuda", tuple(torch.cuda.get_device_capability(0))
    return "cpu", None


def distribution():
    """None: torch spreads work over processes (`distributed`), not through `keras.distribution`."""
    return None


def value_and_grad(fn, x, has_aux=False):
    """`(fn(x), d sum(fn(x)) / dx)` by torch autograd (`kerasimpl.saliency.gradients.value_and_grad`)."""
    import torch

    x = torch.as_tensor(x).detach().requires_grad_(True)
    with torch.enable_grad():
        out = fn(x)
        y, aux = out if has_aux else (out, None)
        (g,) = torch.autograd.grad(y.sum(), x)
    y, g = y.detach(), g.detach()
    return (y, g, aux.detach()) if has_aux else (y, g)


def compile_program(model, precision):
    """`(f, path)`: `model` as a compiled native torch program at `precision`.

    Raises:
        NotImplementedError: a layer the program does not cover (the message names it).
    """
    from kerasimpl.backend.torch.inference import compile_frozen

    return compile_frozen(model, precision=precision), f"compiled torch ({precision})"


def processes():
    """The module that runs torch across processes (`torch.distributed`, DDP)."""
    from kerasimpl.backend.torch import distributed

    return distributed
