"""Running a model over batches: the one owner of every inference-only pass.

Every inference-only pass of a saved classifier (feature extraction,
evaluation, `experiments.infer`, the throughput figure, the forward passes
of occlusion, RISE and Score-CAM) goes through `Forward`, the one place
that chooses the fast path: without a distribution, the backend's compiled
program (`kerasimpl.backend.compile_program`): on torch a compiled native
torch program (`kerasimpl.backend.torch.inference`) at the requested
precision; on JAX one jitted program with depthwise convolutions as
shifted sums (`kerasimpl.backend.jax.inference`: XLA:CPU's grouped
convolution is an order of magnitude slower), at the model's dtype policy;
on another backend, for an unsupported layer, or with `native=False`, it
runs as `model(x, training=False)` in Keras, at the model's own dtype
policy.

Over a data set: `predict_batches` (the fast path, else `predict`; in
shares across processes, `kerasimpl.distributed.sharded`),
`predict` (Keras' `model.predict`, which also splits batches over the
devices of a distribution), and `run_batches` / `prefetch` (any function
over a loader's batches, threads loading ahead).
"""

from __future__ import annotations

import numpy as np

from kerasimpl import backend, runtime
from kerasimpl.data import ArrayDataset
from kerasimpl.progress import Progress, ProgressCallback

KERAS_PATH = "keras"


class Forward:
    """`f(x) -> float32 np.ndarray`, equal to `model(x, training=False)`.

    Compiled on the first call or by `build()` (so constructing one costs
    nothing).

    Args:
        model: a Keras model with one input.
        precision: a concrete precision (`float32`, `bfloat16`, `float16`;
            `kerasimpl.precision.resolve` gives one). Only the compiled torch
            program applies it; JAX's program and the Keras fallback run at
            the model's dtype policy.
        native: allow the compiled program.

    Attributes:
        path: after the first call, `"compiled torch (<precision>)"`,
            `kerasimpl.backend.jax.inference.JAX_PATH` or `KERAS_PATH`; `fallback_reason` says
            why Keras ran.
    """

    def __init__(self, model, precision="float32", native=True):
        self.model, self.precision, self.native = model, precision, native
        self.path, self.fallback_reason, self._fn = None, None, None

    def __call__(self, x):
        return self.build()._fn(x)

    def build(self):
        """Choose and compile the path now (once); returns `self`."""
        if self._fn is None:
            self._fn = self._build()
        return self

    @property
    def applies_precision(self) -> bool:
        """Whether the chosen path runs at `precision` (only torch's compiled program does)."""
        return self.build().path.startswith("compiled torch")

    def _build(self):
        if not self.native:
            self.fallback_reason = "native=False"
        elif runtime.batch_multiple() != 1:
            self.fallback_reason = "a distribution is active"
        else:
            try:
                program, self.path = backend.compile_program(self.model, self.precision)
            except NotImplementedError as e:
                self.fallback_reason = str(e)
            else:
                return program
        self.path = KERAS_PATH
        return self._keras

    def _keras(self, x):
        from keras import ops

        if isinstance(x, np.ndarray):  # Keras' compiled predict step (jit on JAX)
            return np.asarray(self.model.predict_on_batch(x), dtype=np.float32)
        with runtime.no_grad():
            out = self.model(x, training=False)
        return np.asarray(ops.convert_to_numpy(out), dtype=np.float32)


def predict_batches(model, x, batch_size, precision="float32", indices=None, verbose=0, workers=1, what="predict",
                    native=True, across_processes=False) -> np.ndarray:
    """`model` on `x[indices]` in batches, in order, as float32 (the fast path where it applies).

    On the Keras path this is `predict` (`model.predict`, which also
    handles a distribution's padding). `across_processes=True`: under
    `kerasimpl.distributed` a collective (every process calls it): each
    runs its share of the rows, starting at a batch boundary so every batch
    is the single process's own, and every process returns all the outputs.
    """
    if across_processes:
        from kerasimpl import distributed

        rows = np.arange(len(x)) if indices is None else np.asarray(indices)
        return distributed.sharded(model, lambda part: predict_batches(
            model, x, batch_size, precision, part, verbose, workers, what, native), rows, align=batch_size)
    fast = Forward(model, precision, native).build()
    if fast.path == KERAS_PATH:
        return predict(model, x, batch_size, indices=indices, verbose=verbose, workers=workers, what=what)
    return run_batches(fast, ArrayDataset(x, None, batch_size, indices=indices), verbose, workers, what)


def predict(model, x, batch_size=128, indices=None, verbose=0, workers=1, what=None) -> np.ndarray:
    """`model.predict` over `x[indices]` in order, as float32.

    Batches are padded to split evenly over the devices of an active
    distribution; the padded rows are dropped from the result. `workers`
    threads load batches (image files decode in them). With `what`, progress
    is reported as that stage (`kerasimpl.progress`: log lines without a terminal).
    """
    kw = {"workers": int(workers)} if workers > 1 else {}
    ds = ArrayDataset(x, None, batch_size, indices=indices, multiple_of=runtime.batch_multiple(), **kw)
    if what is None:
        out = np.asarray(model.predict(ds, verbose=verbose), dtype=np.float32)
    else:
        progress = Progress(ds.num_samples, what, verbose)
        out = np.asarray(model.predict(ds, verbose=0, callbacks=[ProgressCallback(progress, ds.batch_size)]),
                         dtype=np.float32)
        progress.close()
    return out if ds.multiple_of == 1 else _unpad(out, ds)


def _unpad(out, ds):
    """Drop the rows `ArrayDataset(multiple_of=...)` appended to each batch."""
    sizes = [min(ds.batch_size, ds.num_samples - i * ds.batch_size) for i in range(len(ds))]
    padded = [s + (-s % ds.multiple_of) for s in sizes]
    starts = np.cumsum([0] + padded[:-1])
    return np.concatenate([out[a : a + s] for a, s in zip(starts, sizes)])


TRIM_EVERY = 64  # batches between returns of freed memory to the OS (`runtime.release_freed_memory`)


def run_batches(fn, dataset, verbose, workers=1, what="extract"):
    """`fn` on each batch of `dataset` (inputs only), in order, concatenated as float32.

    `workers` threads load ahead; progress is reported as stage `what`.
    Every `TRIM_EVERY` batches freed memory goes back to the OS (else glibc
    may keep every batch's freed activation buffers and the RSS grows with
    the data).
    """
    progress = Progress(dataset.num_samples, what, verbose)
    out, done = [], 0
    for i, (batch,) in enumerate(prefetch(dataset, workers)):
        out.append(np.asarray(fn(batch), dtype=np.float32))
        done += len(batch)
        progress.update(done)
        if i % TRIM_EVERY == TRIM_EVERY - 1:
            runtime.release_freed_memory()
    progress.close()
    return np.concatenate(out)


def prefetch(dataset, workers=1):
    """`dataset[0], dataset[1], ...` in order, `workers` threads loading ahead."""
    if workers <= 1:
        yield from (dataset[i] for i in range(len(dataset)))
        return
    import collections
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending = collections.deque(pool.submit(dataset.__getitem__, i) for i in range(min(2 * workers, len(dataset))))
        nxt = len(pending)
        while pending:
            batch = pending.popleft().result()
            if nxt < len(dataset):
                pending.append(pool.submit(dataset.__getitem__, nxt))
                nxt += 1
            yield batch
