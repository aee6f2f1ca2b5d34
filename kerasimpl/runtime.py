"""What the code runs on: backend, device, versions (for configs and reports).

The backend-specific answers come from the one backend seam,
`kerasimpl.backend`; this module asks it, so its callers stay on `keras.ops`.
"""

from __future__ import annotations

import functools
import platform

import keras

import kerasimpl
from kerasimpl import backend as _backend


def backend() -> str:
    return keras.backend.backend()


def no_grad():
    """A context in which forward passes record no autodiff graph.

    On torch, calling a Keras model outside `predict` records the graph of
    every trainable weight (a Score-CAM or RISE run makes thousands of such
    calls: measured 1.8x slower than under `torch.no_grad`); JAX and
    TensorFlow record nothing unless asked.
    """
    return _backend.no_grad()


def device_description() -> str:
    """A human-readable name of the accelerator (or CPU) in use."""
    return _backend.device_description()


def versions() -> dict:
    out = {"kerasimpl": kerasimpl.__version__, "keras": keras.__version__, "backend": backend(),
           "python": platform.python_version()}
    for mod in ("torch", "jax", "numpy"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


# Images per batch for inference-only passes (feature extraction,
# evaluation), chosen by measurement: `python -m experiments.bench_full
# --sweep` on the 2-core CPU, compiled path, 32 px in and 224 px inside:
# MobileNetV3-Large 124/142/140/99/81 img/s and MobileNetV2 141/123/84/79/56
# img/s at batch 8/16/32/64/128 (docs/benchmarks.md). Small batches keep the
# activations in cache and the memory low. On an accelerator larger batches
# pay; 128 is a conventional value, not measured here (no GPU was lent).
CPU_INFERENCE_BATCH = 16
ACCELERATOR_INFERENCE_BATCH = 128


def has_accelerator() -> bool:
    """Whether the backend computes on a GPU/TPU rather than the CPU."""
    return _backend.has_accelerator()


def inference_batch_size(requested=None) -> int:
    """`requested`, or the measured default for this device (see above)."""
    if requested is not None:
        if int(requested) < 1:
            raise ValueError(f"inference batch size must be >= 1. Received: {requested}")
        return int(requested)
    return ACCELERATOR_INFERENCE_BATCH if has_accelerator() else CPU_INFERENCE_BATCH


def batch_multiple() -> int:
    """Batches must split evenly over this many devices (1 without distribution)."""
    dist = _backend.distribution()
    if dist is None:
        return 1
    return int(dist.device_mesh.devices.size)


def release_freed_memory() -> bool:
    """Hand memory that has been freed back to the OS (glibc's `malloc_trim(0)`); False where unavailable.

    Long batched inference with torch on CPU frees and reallocates activation
    buffers of several MB every batch; glibc's allocator (its mmap threshold
    adapts upward, so these buffers come from its arenas) can keep the freed
    pages, and the process's resident memory then grows with the number of
    batches: 12 GB after 60,000 AlexNet images at 224 px (docs/benchmarks.md).
    Trimming every 64 batches (`inference.TRIM_EVERY`) bounds it at no
    measured cost; a process-wide fixed threshold (`MALLOC_TRIM_THRESHOLD_`) bounds
    it too but made extraction about 20% slower.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim():
    """glibc's `malloc_trim`, looked up once; None where there is none."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
