"""Data parallelism across processes on each engine's own machinery (`compare --distribute`).

torch, one process per device under `torchrun` (`torch.distributed`: gloo on
CPU, NCCL on CUDA; collectives time out). Inference-only passes (feature
extraction, evaluation: `inference.predict_batches(across_processes=True)`)
are `sharded`: each process runs its contiguous share of the rows and the
outputs are gathered. Stages that update weights train
through `torch.nn.parallel.DistributedDataParallel` wrapped around the Keras
model, as in Keras' `examples/demo_torch_multi_gpu.py`, but inside Keras'
own `fit` (`data_parallel`): its train step is Keras' `TorchTrainer.train_step`
with the forward pass through DDP, which averages the gradients during
`backward`, and each process loads its slice of every global batch
(`loader_options`: the `DistributedSampler` pattern). Chosen over the
example's torch loop because `fit` keeps Keras' optimizer and loss, the
precision policies and every callback (history, best checkpoint, early
stopping, learning-rate schedule, atomic backup and resume); the price is a
copy of Keras' 25-line train step (its private loss tracker through `kerasimpl.compat`, Keras pinned to
3.15; tests hold it to Keras' own numbers). Learning-rate rule: the batch
size is the GLOBAL batch, split evenly, at the same learning rate (the
single-process step, BatchNormalization statistics aside). Every process
sees the same logs (averaged) and the same moving statistics (averaged, or
the precise population statistics of `kerasimpl.precise_bn`, whose batches
are shared out and summed with `sum_over_processes`), so callbacks decide
alike. The head on cached features is fitted by every
process identically, without communication.

JAX (`keras.distribution`, `KERAS_DISTRIBUTION_*`, gloo collectives on CPU):
`DataParallel` over every device with `auto_shard_dataset=False`, each
process feeding its slice of every global batch; inference runs on each
process's local copy of the weights (`local_model`), sharded like torch's.

Every process reads the run folder; only rank 0 writes it (`is_writer`), and
saves alone (`alone`). Where processes would act on different states,
`agree` stops them with a message instead of a hang.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import json
import os

import keras
import numpy as np

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
        engine = {"torch": f"torch.distributed ({_torch_backend_name()})" if self.size > 1 else "torch (one process)",
                  "jax": "jax.distributed (keras.distribution.DataParallel)" if self.size > 1
                  else "jax (keras.distribution.DataParallel, one process)"}.get(self.backend, "none")
        devices = [str(d) for d in keras.distribution.list_devices()] if self.backend == "jax" else None
        return {"world_size": self.size, "distributed_backend": engine, "distributed_devices": devices}


def world() -> World:
    """The processes this one belongs to (a `World` of size 1 without distribution)."""
    name = keras.backend.backend()
    if name == "torch":
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return World("torch", dist.get_rank(), dist.get_world_size())
    elif name == "jax":
        import jax

        if jax.distributed.is_initialized():
            return World("jax", jax.process_index(), jax.process_count())
        if keras.distribution.distribution() is not None:
            return World("jax")
    return World()


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
    name = keras.backend.backend()
    if name == "torch":
        _configure_torch(timeout_s)
    elif name == "jax":
        _configure_jax()
    else:
        raise RuntimeError(f"--distribute supports the torch and jax backends. Received: {name!r}")
    return world()


def _configure_torch(timeout_s):
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise RuntimeError(
            "--distribute on torch runs one process per device under torchrun: torchrun --standalone "
            "--nproc_per_node=N -m experiments.compare ... --distribute (README, 'Scaling out'). Received: "
            f"{', '.join(missing)} not set (not started by torchrun)")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # Keras' "cuda" is the current device
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo",
                            timeout=datetime.timedelta(seconds=timeout_s))


def _configure_jax():
    import jax

    if int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1")) > 1 and not jax.distributed.is_initialized():
        keras.distribution.initialize()  # jax.distributed.initialize from KERAS_DISTRIBUTION_*
    # auto_shard_dataset=False: each process feeds its own slice of every global batch (loader_options).
    keras.distribution.set_distribution(keras.distribution.DataParallel(
        devices=keras.distribution.list_devices(), auto_shard_dataset=False))


def _torch_backend_name():
    import torch.distributed as dist

    return dist.get_backend() if dist.is_initialized() else "none"


def _torch_device():
    import torch

    return torch.device("cuda", torch.cuda.current_device()) if _torch_backend_name() == "nccl" else torch.device("cpu")


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
    if w.backend == "jax":
        multiple = batch_multiple()
        return {"multiple_of": multiple, **({"shard": (w.rank, w.size)} if w.size > 1 else {})}
    if w.backend == "torch" and w.size > 1 and split_batches:
        return {"multiple_of": w.size, "shard": (w.rank, w.size)}
    return {"multiple_of": batch_multiple()}


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
    mine = json.dumps([what, value], default=str, sort_keys=True)
    if w.backend == "torch":
        import torch.distributed as dist

        seen = [None] * w.size
        dist.all_gather_object(seen, mine)
    else:
        seen = _jax_allgather_text(mine)
    if len(set(seen)) > 1:
        raise RuntimeError(
            f"The processes disagree on {what}: " + "; ".join(f"rank {i}: {s}" for i, s in enumerate(seen))
            + ". Every process reads the run folder that rank 0 writes: across hosts it must be on a filesystem "
            "they share (or start a new --out)")
    return value


def _jax_allgather_text(text, width=2048):
    from jax.experimental import multihost_utils

    raw = text.encode()[:width]
    buf = np.zeros(width + 4, np.uint8)
    buf[:4] = np.frombuffer(np.uint32(len(raw)).tobytes(), np.uint8)
    buf[4:4 + len(raw)] = np.frombuffer(raw, np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(buf))
    return [bytes(r[4:4 + int(np.frombuffer(r[:4].tobytes(), np.uint32)[0])]).decode(errors="replace") for r in rows]


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
    longest = max(sizes)
    padded = np.zeros((longest, *local.shape[1:]), local.dtype)
    padded[: len(local)] = local
    if w.backend == "torch":
        import torch
        import torch.distributed as dist

        device = _torch_device()
        mine = torch.from_numpy(padded).to(device)
        rows = [torch.empty_like(mine) for _ in range(w.size)]
        dist.all_gather(rows, mine)
        rows = [r.cpu().numpy() for r in rows]
    else:
        from jax.experimental import multihost_utils

        rows = list(np.asarray(multihost_utils.process_allgather(padded)))
    return np.concatenate([r[:n] for r, n in zip(rows, sizes)])


@contextlib.contextmanager
def local_model(model):
    """Within the block `model` computes on this process alone (JAX across processes; elsewhere a no-op).

    Keras cannot fetch predictions that span processes, so inference-only
    passes (extraction, evaluation, throughput, saving) use each variable's
    local copy on this process's first device, with no distribution; the
    global (replicated) arrays and their layouts are put back after. Private
    API: a JAX variable's `_value` and `_layout` (Keras 3.15).
    """
    dist = keras.distribution.distribution() if keras.backend.backend() == "jax" else None
    if dist is None or world().size == 1:
        yield model
        return
    import jax

    device = jax.local_devices()[0]
    from kerasimpl import compat

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


def broadcast_weights(model):
    """Every torch process takes rank 0's weights (the same start, however the model was built).

    A no-op with one process and on JAX (whose replicated variables are
    created equal on every process, or not at all).
    """
    w = world()
    if w.backend != "torch" or w.size == 1:
        return
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for v in model.variables:
            dist.broadcast(v.value.data, src=0)


@contextlib.contextmanager
def alone():
    """Within the block this process may build Keras objects by itself (rank 0 saving a model).

    Under a JAX distribution across processes a new variable is laid out on
    every process's devices, which all processes must do together; saving
    builds some (Keras' saver makes a scratch optimizer), so rank 0's saves
    run with the distribution unset. Elsewhere a no-op.
    """
    dist = keras.distribution.distribution() if keras.backend.backend() == "jax" else None
    if dist is None or world().size == 1:
        yield
        return
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(dist)


@contextlib.contextmanager
def data_parallel(model, enabled=True):
    """Within the block `model.fit` trains through DDP across the torch processes; yields callbacks for `fit`.

    The yielded callbacks (put them FIRST in `fit`'s list, so the others see
    averaged logs) keep the processes in step; with one process, on JAX
    (where `keras.distribution` does this inside `fit`) or with
    `enabled=False` the block changes nothing and yields `[]`.
    """
    w = world()
    if not enabled or w.backend != "torch" or w.size == 1:
        yield []
        return
    import torch

    # Built per stage: DDP takes the parameters that need gradients now (fine-tuning unfreezes more) and
    # broadcasts rank 0's weights.
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[torch.cuda.current_device()] if _torch_backend_name() == "nccl" else None)
    model.train_step = functools.partial(_ddp_train_step, model, ddp)
    try:
        yield [_InStep(w.size)]
    finally:
        del model.train_step


def _ddp_train_step(model, ddp, data):
    """Keras' `TorchTrainer.train_step` (Keras 3.15) with the forward pass through `ddp`.

    DDP's hooks all-reduce (average) the gradients during `backward`, so the
    optimizer applies the same update on every process.
    """
    import torch

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    y_pred = ddp(x, training=True)
    model.zero_grad()
    loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
    from kerasimpl import compat

    compat.loss_tracker(model).update_state(
        loss, sample_weight=next(i for i in keras.tree.flatten(x) if i is not None).shape[0])
    if model.optimizer is not None:
        loss = model.optimizer.scale_loss(loss)
    if model.trainable_weights:
        loss.backward()
        weights = model.trainable_weights[:]
        with torch.no_grad():
            model.optimizer.apply([v.value.grad for v in weights], weights)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


class _InStep(keras.callbacks.Callback):
    """Keeps the processes of a DDP `fit` in step.

    Logs are averaged over the processes after every batch and epoch (each
    process's loss and accuracy are of its own rows; validation, on the whole
    split everywhere, is then the same), so every callback decides alike;
    trainable BatchNormalization layers' moving statistics are averaged before
    each validation and at the end; each epoch starts at the same number
    (a resumed stage: every process restored the same backup).
    """

    def __init__(self, size):
        super().__init__()
        self.size = size

    def on_epoch_begin(self, epoch, logs=None):
        agree(int(epoch), "the epoch a stage starts (or resumes) at")

    def on_train_batch_end(self, batch, logs=None):
        self._average_logs(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._average_logs(logs)

    def on_test_begin(self, logs=None):
        self._average_statistics()

    def on_train_end(self, logs=None):
        self._average_statistics()

    def _average_logs(self, logs):
        import torch
        import torch.distributed as dist

        if not logs:
            return
        keys = sorted(k for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        values = torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64, device=_torch_device())
        dist.all_reduce(values)
        logs.update(zip(keys, (values / self.size).tolist()))

    def _average_statistics(self):
        import torch
        import torch.distributed as dist

        from kerasimpl.layers import trainable_batchnorms

        stats = [v.value for layer in trainable_batchnorms(self.model)
                 for v in (layer.moving_mean, layer.moving_variance)]
        if not stats:
            return
        with torch.no_grad():
            flat = torch.cat([s.reshape(-1).to(torch.float32) for s in stats])
            dist.all_reduce(flat)
            flat /= self.size
            for s, chunk in zip(stats, torch.split(flat, [s.numel() for s in stats])):
                s.copy_(chunk.view_as(s).to(s.dtype))


def finish():
    """End the processes' work together: after it rank 0 goes on alone (figures), the others stop.

    torch: a barrier, then the process group is destroyed. JAX: the
    distribution is unset and `jax.distributed` shut down together (a
    process that exits first would otherwise wait in JAX's shutdown barrier
    and abort); what runs next on rank 0 is local.
    """
    w = world()
    if w.size == 1:
        return
    if w.backend == "torch":
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    else:
        import jax

        keras.distribution.set_distribution(None)
        jax.distributed.shutdown()
