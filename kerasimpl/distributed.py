"""Data parallelism across processes on each engine's own machinery (`compare --distribute`): the facade.

The engines live in the backend seam: torch's (`torch.distributed` under
`torchrun`, DDP inside Keras' `fit`) in `kerasimpl.backend.torch.distributed`,
JAX's (`keras.distribution.DataParallel`, `jax.distributed`) in
`kerasimpl.backend.jax.distributed`; this module is the backend-free
contract the rest of kerasimpl calls, the engine chosen by Keras' backend
(`kerasimpl.backend.processes`).

Inference-only passes (feature extraction, evaluation:
`inference.predict_batches(across_processes=True)`) are `sharded`: each
process runs its contiguous share of the rows (on its own copy of the
weights, `local_model`) and the outputs are gathered. Stages that update
weights train inside Keras' own `fit` (`data_parallel`), each process
loading its slice of every global batch (`loader_options`). Learning-rate
rule: the batch size is the GLOBAL batch, split evenly, at the same
learning rate (the single-process step, BatchNormalization statistics
aside). Every process sees the same logs and the same moving statistics
(averaged, or the precise population statistics of `kerasimpl.precise_bn`,
whose batches are shared out and summed with `sum_over_processes`), so
callbacks decide alike. The head on cached features is fitted by every
process identically, without communication.

Every process reads the run folder; only rank 0 writes it (`is_writer`), and
saves alone (`alone`). Where processes would act on different states,
`agree` stops them with a message instead of a hang.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json

import numpy as np

from kerasimpl import backend

DEFAULT_TIMEOUT_S = 600  # torch collectives (gloo, NCCL): a rank that waits longer stops with an error


@dataclasses.dataclass(frozen=True)
class World:
    """The processes of a run: `backend` (`"torch"`, `"jax"`; `None`: one plain process), this one's `rank`, `size`."""

    backend: str | None = None
    rank: int = 0
    size: int = 1

    @property
    def writer(self) -> bool:
        """Rank 0 writes the run folder and logs progress."""
        return self.rank == 0

    def describe(self) -> dict:
        """What `config.json` records: the number of processes, the engine, JAX's devices."""
        engine = self.engine
        name, devices = engine.describe(self.size) if engine is not None else ("none", None)
        return {"world_size": self.size, "distributed_backend": name, "distributed_devices": devices}

    @property
    def engine(self):
        """The backend's module that runs these processes (`kerasimpl.backend.<backend>.distributed`;
        None for one plain process)."""
        return backend.processes(self.backend) if self.backend is not None else None


def world() -> World:
    """The processes this one belongs to (a `World` of size 1 without distribution)."""
    engine = backend.processes()
    found = engine.world() if engine is not None else None
    return World() if found is None else World(backend.name(), *found)


def is_writer() -> bool:
    """Whether this process writes files (rank 0, or the only process)."""
    return world().writer


def configure(timeout_s=DEFAULT_TIMEOUT_S) -> World:
    """Join this process to the run's others; return the `World`.

    torch: under `torchrun` (it sets `RANK`, `WORLD_SIZE`), one process per
    device: `torch.distributed` with NCCL on CUDA (each process on GPU
    `LOCAL_RANK`) or gloo on CPU. JAX: with `KERAS_DISTRIBUTION_NUM_PROCESSES`
    > 1, `keras.distribution.initialize()` joins the processes named by the
    `KERAS_DISTRIBUTION_*` variables; then `DataParallel` over all devices.

    Raises:
        RuntimeError: torch without torchrun's variables, or another backend.
    """
    engine = backend.processes()
    if engine is None:
        raise RuntimeError(f"--distribute supports the torch and jax backends. Received: {backend.name()!r}")
    engine.configure(timeout_s)
    return world()


def loader_options(split_batches) -> dict:
    """`ArrayDataset` options (`multiple_of`, `shard`) of a loader that `fit` reads.

    Args:
        split_batches: torch: the loader feeds a DDP stage, so this process
            loads its slice of every global batch; `False`: every process
            loads whole batches (a replicated stage, or validation). JAX
            across processes always splits: Keras builds each global batch
            from every process's slice.
    """
    from kerasimpl.runtime import batch_multiple

    w = world()
    if w.backend is None:
        return {"multiple_of": batch_multiple()}
    return w.engine.loader_options(split_batches, w.rank, w.size, batch_multiple())


def rank_seed(seed) -> int:
    """`seed` on rank 0; a seed derived from `(seed, rank)` elsewhere (per-process augmentation)."""
    rank = world().rank
    return int(seed) if rank == 0 else int(np.random.SeedSequence([int(seed), rank]).generate_state(1)[0] >> 1)


def agree(value, what):
    """`value`, after checking that every process holds the same (a collective: all must call it).

    Raises:
        RuntimeError: the processes differ, naming each one's value.
    """
    w = world()
    if w.size == 1:
        return value
    seen = w.engine.allgather_text(json.dumps([what, value], default=str, sort_keys=True), w.size)
    if len(set(seen)) > 1:
        raise RuntimeError(
            f"The processes disagree on {what}: " + "; ".join(f"rank {i}: {s}" for i, s in enumerate(seen))
            + ". Every process reads the run folder that rank 0 writes: across hosts it must be on a filesystem "
            "they share (or start a new --out)")
    return value


def sharded(model, fn, indices, align=1) -> np.ndarray:
    """`fn(indices)` (rows in, one output row per index out) computed in shares across the processes.

    Each process runs `fn` on its contiguous share of `indices` (on its own
    copy of `model`'s weights under JAX, `local_model`), and the outputs are
    gathered in order: every process returns the whole result. Shares start
    at multiples of `align` (`fn`'s batch size): every batch is then the
    single process's own, and so are the outputs, bit for bit (a batch of
    another size can round differently).
    """
    w = world()
    indices = np.asarray(indices)
    if w.size == 1:
        return fn(indices)
    batches = -(-len(indices) // align)
    cuts = [min(len(indices), align * (batches * r // w.size)) for r in range(w.size + 1)]
    parts = [indices[cuts[r]:cuts[r + 1]] for r in range(w.size)]
    mine = parts[w.rank]
    with local_model(model):
        out = np.asarray(fn(mine if len(mine) else indices[:1]))  # an empty share still learns the row shape
    return _gather(out[: len(mine)], [len(p) for p in parts], w)


def sum_over_processes(array) -> np.ndarray:
    """The element-wise sum of every process's `array` (the same shape on each), the same on every process;
    `array` itself with one process. Added in rank order, so every process gets the same bits."""
    w = world()
    local = np.asarray(array)
    if w.size == 1:
        return local
    return _gather(local[None], [1] * w.size, w).sum(axis=0)


def _gather(local, sizes, w):
    """Every process's `local` rows (`sizes[r]` of them on rank r), concatenated in rank order."""
    padded = np.zeros((max(sizes), *local.shape[1:]), local.dtype)
    padded[: len(local)] = local
    rows = w.engine.allgather(padded, w.size)
    return np.concatenate([r[:n] for r, n in zip(rows, sizes)])


@contextlib.contextmanager
def local_model(model):
    """Within the block `model` computes on this process alone (JAX across processes; elsewhere a no-op).

    Keras cannot fetch predictions that span processes, so inference-only
    passes (extraction, evaluation, throughput, saving) use each variable's
    local copy on this process's first device, with no distribution; the
    global (replicated) arrays and their layouts are put back after.
    """
    w = world()
    if w.size == 1:
        yield model
        return
    with w.engine.local_model(model):
        yield model


def broadcast_weights(model):
    """Every torch process takes rank 0's weights (the same start, however the model was built).

    A no-op with one process and on JAX (whose replicated variables are
    created equal on every process, or not at all).
    """
    w = world()
    if w.size > 1:
        w.engine.broadcast_weights(model)


@contextlib.contextmanager
def alone():
    """Within the block this process may build Keras objects by itself (rank 0 saving a model).

    Under a JAX distribution across processes a new variable is laid out on
    every process's devices, which all processes must do together; saving
    builds some (Keras' saver makes a scratch optimizer), so rank 0's saves
    run with the distribution unset. Elsewhere a no-op.
    """
    w = world()
    if w.size == 1:
        yield
        return
    with w.engine.alone():
        yield


@contextlib.contextmanager
def data_parallel(model, enabled=True):
    """Within the block `model.fit` trains through DDP across the torch processes; yields callbacks for `fit`.

    The yielded callbacks (put them FIRST in `fit`'s list, so the others see
    averaged logs) keep the processes in step; with one process, on JAX
    (where `keras.distribution` does this inside `fit`) or with
    `enabled=False` the block changes nothing and yields `[]`.
    """
    w = world()
    if not enabled or w.size == 1:
        yield []
        return
    with w.engine.data_parallel(model, w.size, agree) as callbacks:
        yield callbacks


def finish():
    """End the processes' work together: after it rank 0 goes on alone (figures), the others stop.

    torch: a barrier, then the process group is destroyed. JAX: the
    distribution is unset and `jax.distributed` shut down together (a
    process that exits first would otherwise wait in JAX's shutdown barrier
    and abort); what runs next on rank 0 is local.
    """
    w = world()
    if w.size > 1:
        w.engine.finish()
