"""JAX across processes: `keras.distribution` (`KERAS_DISTRIBUTION_*`, gloo collectives on CPU).

`DataParallel` over every device with `auto_shard_dataset=False`, each
process feeding its slice of every global batch; inference runs on each
process's local copy of the weights (`local_model`). Keras does the data
parallelism inside `fit`, so `data_parallel` adds nothing.

The functions of `kerasimpl.distributed`'s engine interface (the torch one,
`kerasimpl.backend.torch.distributed`, has the same); that facade calls them
only with more than one process, except `world` and `configure`.
"""

from __future__ import annotations

import contextlib
import os

import keras
import numpy as np


def world():
    """`(rank, size)` of `jax.distributed`; `(0, 1)` with a distribution on one process; else None."""
    import jax

    if jax.distributed.is_initialized():
        return jax.process_index(), jax.process_count()
    if keras.distribution.distribution() is not None:
        return 0, 1
    return None


def configure(timeout_s=None):
    """With `KERAS_DISTRIBUTION_NUM_PROCESSES` > 1, join the processes `KERAS_DISTRIBUTION_*` name; then
    `DataParallel` over all devices. (`timeout_s` is torch's.)"""
    import jax

    if int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1")) > 1 and not jax.distributed.is_initialized():
        keras.distribution.initialize()  # jax.distributed.initialize from KERAS_DISTRIBUTION_*
    # auto_shard_dataset=False: each process feeds its own slice of every global batch (loader_options).
    keras.distribution.set_distribution(keras.distribution.DataParallel(
        devices=keras.distribution.list_devices(), auto_shard_dataset=False))


def describe(size):
    """`(engine, devices)` for `config.json`."""
    engine = ("jax.distributed (keras.distribution.DataParallel)" if size > 1
              else "jax (keras.distribution.DataParallel, one process)")
    return engine, [str(d) for d in keras.distribution.list_devices()]


def loader_options(split_batches, rank, size, multiple):
    """Across processes every loader splits (Keras builds each global batch from every process's slice),
    in batches of a multiple of `multiple` (the distribution's devices)."""
    return {"multiple_of": multiple, **({"shard": (rank, size)} if size > 1 else {})}


def allgather_text(text, size, width=2048):
    """Every process's `text` (its first `width` bytes), in rank order."""
    raw = text.encode()[:width]
    buf = np.zeros(width + 4, np.uint8)
    buf[:4] = np.frombuffer(np.uint32(len(raw)).tobytes(), np.uint8)
    buf[4:4 + len(raw)] = np.frombuffer(raw, np.uint8)
    rows = allgather(buf, size)
    return [bytes(r[4:4 + int(np.frombuffer(r[:4].tobytes(), np.uint32)[0])]).decode(errors="replace") for r in rows]


def allgather(padded, size):
    """Every process's `padded` array (the same shape on each), in rank order."""
    from jax.experimental import multihost_utils

    return list(np.asarray(multihost_utils.process_allgather(padded)))


@contextlib.contextmanager
def local_model(model):
    """Within the block `model` computes on this process alone, with no distribution.

    Keras cannot fetch predictions that span processes, so inference-only
    passes use each variable's local copy on this process's first device;
    the global (replicated) arrays and their layouts are put back after.
    Private API: a JAX variable's value and layout (`kerasimpl.compat`).
    """
    dist = keras.distribution.distribution()
    if dist is None:
        yield model
        return
    import jax

    from kerasimpl import compat

    device = jax.local_devices()[0]
    saved = [(v, *compat.jax_variable_state(v)) for v in model.variables]
    try:
        for v, value, _ in saved:
            # A copy: Keras' jitted steps may donate the buffers they are given, and the global array keeps its own.
            compat.set_jax_variable_state(v, jax.device_put(value.addressable_data(0), device, may_alias=False), None)
        keras.distribution.set_distribution(None)
        yield model
    finally:
        keras.distribution.set_distribution(dist)
        for v, value, layout in saved:
            compat.set_jax_variable_state(v, value, layout)


@contextlib.contextmanager
def alone():
    """Within the block the distribution is unset: a new variable would be laid out on every process's
    devices, which all processes must do together (Keras' saver builds a scratch optimizer)."""
    dist = keras.distribution.distribution()
    if dist is None:
        yield
        return
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(dist)


def broadcast_weights(model):
    """A no-op: replicated variables are created equal on every process, or not at all."""


def data_parallel(model, size, agree):
    """A no-op yielding no callbacks: `keras.distribution` runs the data parallelism inside `fit`."""
    return contextlib.nullcontext([])


def finish():
    """The distribution unset and `jax.distributed` shut down together (a process that exits first would
    otherwise wait in JAX's shutdown barrier and abort); what runs next on rank 0 is local."""
    import jax

    keras.distribution.set_distribution(None)
    jax.distributed.shutdown()
