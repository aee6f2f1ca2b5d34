"""torch across processes: `torch.distributed` under `torchrun`, DDP inside Keras' `fit`.

One process per device under `torchrun` (`torch.distributed`: gloo on
CPU, NCCL on CUDA; collectives time out). Stages that update weights train
through `torch.nn.parallel.DistributedDataParallel` wrapped around the Keras
model, as in Keras' `examples/demo_torch_multi_gpu.py`, but inside Keras'
own `fit` (`data_parallel`): its train step is Keras' `TorchTrainer.train_step`
with the forward pass through DDP, which averages the gradients during
`backward`, and each process loads its slice of every global batch
(`loader_options`: the `DistributedSampler` pattern). Chosen over the
example's torch loop because `fit` keeps Keras' optimizer and loss, the
precision policies and every callback (history, best checkpoint, early
stopping, learning-rate schedule, atomic backup and resume); the price is a
copy of Keras' 25-line train step (its private loss tracker through
`kerasimpl.compat`, Keras pinned to 3.15; tests hold it to Keras' own
numbers). Every process sees the same logs (averaged) and the same moving
statistics (averaged), so callbacks decide alike.

The functions of `kerasimpl.distributed`'s engine interface (the JAX one,
`kerasimpl.backend.jax.distributed`, has the same); that facade calls them
only with more than one process, except `world` and `configure`.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os

import keras


def world():
    """`(rank, size)` of the initialized process group, else None."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


def configure(timeout_s):
    """Join the process group `torchrun` describes (NCCL on CUDA, each process on GPU `LOCAL_RANK`; gloo on CPU).

    Raises:
        RuntimeError: torchrun's variables are not set.
    """
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


def describe(size):
    """`(engine, devices)` for `config.json`."""
    return (f"torch.distributed ({_backend_name()})" if size > 1 else "torch (one process)"), None


def _backend_name():
    import torch.distributed as dist

    return dist.get_backend() if dist.is_initialized() else "none"


def _device():
    import torch

    return torch.device("cuda", torch.cuda.current_device()) if _backend_name() == "nccl" else torch.device("cpu")


def loader_options(split_batches, rank, size, multiple):
    """A DDP stage's loader (`split_batches`) loads this process's slice of every global batch; any other
    loads whole batches (of a multiple of `multiple`, Keras' devices: 1 on torch)."""
    if size > 1 and split_batches:
        return {"multiple_of": size, "shard": (rank, size)}
    return {"multiple_of": multiple}


def allgather_text(text, size):
    """Every process's `text`, in rank order."""
    import torch.distributed as dist

    seen = [None] * size
    dist.all_gather_object(seen, text)
    return seen


def allgather(padded, size):
    """Every process's `padded` array (the same shape on each), in rank order."""
    import torch
    import torch.distributed as dist

    mine = torch.from_numpy(padded).to(_device())
    rows = [torch.empty_like(mine) for _ in range(size)]
    dist.all_gather(rows, mine)
    return [r.cpu().numpy() for r in rows]


def local_model(model):
    """A no-op: every torch process holds its whole model."""
    return contextlib.nullcontext(model)


def alone():
    """A no-op: a torch process builds Keras objects by itself."""
    return contextlib.nullcontext()


def broadcast_weights(model):
    """Every process takes rank 0's weights."""
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for v in model.variables:
            dist.broadcast(v.value.data, src=0)


@contextlib.contextmanager
def data_parallel(model, size, agree):
    """Within the block `model.fit` trains through DDP; yields the callback that keeps the processes in step.

    `agree` is `kerasimpl.distributed.agree` (each epoch starts at the same number).
    """
    import torch

    # Built per stage: DDP takes the parameters that need gradients now (fine-tuning unfreezes more) and
    # broadcasts rank 0's weights.
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[torch.cuda.current_device()] if _backend_name() == "nccl" else None)
    # The step is set on this model for the block, not by a Model subclass: `fit_stage(data_parallel=True)` takes
    # any Keras model (tests/test_distribute.py trains a plain Sequential so), and a subclass would tie DDP to
    # models built as kerasimpl's own class, whose name would also reach every file BestCheckpoint saves mid-fit.
    model.train_step = functools.partial(_ddp_train_step, model, ddp)
    try:
        yield [_InStep(size, agree)]
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

    def __init__(self, size, agree):
        super().__init__()
        self.size, self.agree = size, agree

    def on_epoch_begin(self, epoch, logs=None):
        self.agree(int(epoch), "the epoch a stage starts (or resumes) at")

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
        values = torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64, device=_device())
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
    """A barrier, then the process group is destroyed."""
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()
