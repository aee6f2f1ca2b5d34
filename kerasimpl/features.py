"""Batched inference over a dataset, prefetching loaders, and the pooled-feature cache.

A frozen base's pooled features are computed once per split and cached in
`features_<part>.npz`, keyed by the base's weights, the data and the split:
stage 1 of training (`kerasimpl.training`) fits the head on them and
evaluation (`kerasimpl.comparison.evaluate`) reuses them.
"""

from __future__ import annotations

import hashlib
import json
import os

import keras
import numpy as np

from kerasimpl import models
from kerasimpl.artifacts import atomic_path
from kerasimpl.progress import Progress


def extract_features(model, x, indices=None, batch_size=64, verbose="auto", native=True, workers=1, what="extract",
                     precision="float32"):
    """Pooled backbone features of `x[indices]` as float32 (N, D), in order.

    On the torch backend (without a distribution) the frozen feature
    extractor runs as a compiled native torch program with BatchNorm folded
    into the convolutions (`kerasimpl.inference`), equal to
    `model.predict` to float tolerance and 1.2-3.4x faster on CPU (docs/benchmarks.md), under autocast at
    `precision` (`kerasimpl.precision`); `native=False`
    or an unsupported layer falls back to `model.predict`. With `workers > 1`
    that many threads load batches ahead (image files decode meanwhile).
    Progress is reported as stage `what` (`kerasimpl.progress`). Across
    processes (`kerasimpl.distributed`) each extracts its share of the rows
    and all get all the features.
    """
    from kerasimpl import distributed
    from kerasimpl.inference import predict_batches

    extractor = models.feature_extractor(model)
    return distributed.sharded(
        model, lambda part: predict_batches(extractor, x, batch_size, precision, indices=part, verbose=verbose,
                                            workers=workers, what=what, native=native),
        np.arange(len(x)) if indices is None else indices, align=batch_size)


TRIM_EVERY = 64  # batches between returns of freed memory to the OS (`runtime.release_freed_memory`)


def run_batches(fn, dataset, verbose, workers=1, what="extract"):
    """`fn` on each batch of `dataset` (inputs only), in order, concatenated as float32;
    `workers` threads load ahead; progress reported as stage `what`. Every
    `TRIM_EVERY` batches freed memory goes back to the OS (else glibc may keep
    every batch's freed activation buffers and the RSS grows with the data)."""
    from kerasimpl.runtime import release_freed_memory

    progress = Progress(dataset.num_samples, what, verbose)
    out, done = [], 0
    for i, (batch,) in enumerate(prefetch(dataset, workers)):
        out.append(np.asarray(fn(batch), dtype=np.float32))
        done += len(batch)
        progress.update(done)
        if i % TRIM_EVERY == TRIM_EVERY - 1:
            release_freed_memory()
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


def weights_fingerprint(layers_) -> str:
    """sha256 over the weights of `layers_` (identifies a frozen base)."""
    h = hashlib.sha256()
    for layer in layers_:
        for w in layer.weights:
            h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(w)).tobytes())
    return h.hexdigest()


def cached_features(model, x, indices, path, key, batch_size=64, verbose="auto", workers=1, what="extract",
                    precision="float32"):
    """Features from `path` if its key matches `key`, else extracted and saved.

    The cache is written atomically after extraction completes, so an
    interrupted extraction leaves no file a later run could trust. Across
    processes every one reads it and only rank 0 writes it.
    """
    from kerasimpl import distributed

    cached = None
    if os.path.exists(path):
        with np.load(path) as z:
            if str(z["key"]) == key and len(z["features"]) == len(indices):
                cached = z["features"]
    if distributed.agree(cached is not None, f"whether {os.path.basename(path)} is cached"):
        return cached
    feats = extract_features(model, x, indices, batch_size, verbose, workers=workers, what=what, precision=precision)
    if distributed.is_writer():
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, features=feats, key=np.asarray(key))
    return feats


def split_features(model, data, x, indices, part, folder, config, verbose="auto", split=None):
    """Pooled features of `x[indices]`, cached in `folder/features_<part>.npz`.

    `config` is the run's `training.TrainConfig` (its inference batch,
    workers and precision are read).

    The cache key holds the frozen base's weights, the data's fingerprint,
    the split and the part, so a changed model, file list or split is
    extracted again.
    """
    key = json.dumps({"base": weights_fingerprint(models.base_layers(model)), "source": data.source,
                      "data": data.fingerprint, "split": split.summary() if split is not None else None,
                      "part": part, "precision": config.precision})
    path = os.path.join(folder, f"features_{part}.npz")
    return cached_features(model, x, indices, path, key, config.extract_batch, verbose, workers=config.workers,
                           what=f"extract {part}", precision=config.precision)

