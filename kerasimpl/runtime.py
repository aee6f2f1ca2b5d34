"""What the code runs on: backend, device, versions (for configs and reports).

Backend-specific queries live here, so the rest of kerasimpl stays on
`keras.ops`.
"""

from __future__ import annotations

import platform

import keras

import kerasimpl


def backend() -> str:
    return keras.backend.backend()


def device_description() -> str:
    """A human-readable name of the accelerator (or CPU) in use."""
    name = backend()
    if name == "torch":
        import torch

        if torch.cuda.is_available():
            return f"cuda: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
        return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    if name == "jax":
        import jax

        devs = jax.devices()
        return f"{devs[0].platform}: {devs[0].device_kind} x{len(devs)}"
    return f"{name}: {platform.machine()}"


def versions() -> dict:
    out = {"kerasimpl": kerasimpl.__version__, "keras": keras.__version__, "backend": backend(),
           "python": platform.python_version()}
    for mod in ("torch", "jax", "numpy"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out
