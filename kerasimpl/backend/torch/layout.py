"""Keras weights in torch's layout: the one rule of the checkpoints and of the torch fast path.

NumPy only (no torch): `kerasimpl.checkpoints` ports torch checkpoints with
it on any backend, and the compiled torch program (`layers`) builds its
weights with it.
"""

from __future__ import annotations

import numpy as np


def torch_kernel(kernel, depthwise=False) -> np.ndarray:
    """A Keras convolution kernel in torch's layout: Conv2D's (kh, kw, in, out)
    as (out, in, kh, kw); DepthwiseConv2D's (kh, kw, C, mult) as a grouped
    conv's (C * mult, 1, kh, kw)."""
    if depthwise:
        kh, kw, channels, mult = kernel.shape
        return kernel.transpose(2, 3, 0, 1).reshape(channels * mult, 1, kh, kw)
    return kernel.transpose(3, 2, 0, 1)


def torch_dense_kernel(kernel) -> np.ndarray:
    """A Keras Dense kernel (in, out) as torch's Linear weight (out, in)."""
    return kernel.T
