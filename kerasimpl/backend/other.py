"""A backend without a module of its own here (numpy, openvino): what the seam does there.

Keras alone: no compiled program, no processes, no autodiff, the CPU.
"""

from __future__ import annotations

import contextlib
import platform

import keras


def no_grad():
    return contextlib.nullcontext()


def device_description() -> str:
    return f"{keras.backend.backend()}: {platform.machine()}"


def has_accelerator() -> bool:
    return False


def accelerator():
    """torch's answer where torch is installed (as before the seam: its compiled program is the one that
    applies a precision), else `("cpu", None)`."""
    from kerasimpl.backend import torch as torch_backend

    return torch_backend.accelerator()


def distribution():
    return None


def value_and_grad(fn, x, has_aux=False):
    raise NotImplementedError(f"backend {keras.backend.backend()!r} has no autodiff here (torch, jax and "
                              "tensorflow have)")


def compile_program(model, precision):
    raise NotImplementedError(f"backend {keras.backend.backend()!r} has no compiled program (torch and jax have)")


def processes():
    """None: no processes beyond this one."""
    return None
