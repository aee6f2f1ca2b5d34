"""Pooled backbone features and their cache.

They are computed by `kerasimpl.inference` (the fast path, in batches). A
frozen base's pooled features are computed once PER IMAGE and cached in
`features_<pool>.npz` (`train`: every image of `data.x_train`, the training
and validation rows of any split; `test`), keyed by the base's weights and
the data: stage 1 of training (`kerasimpl.training`) fits the head on the
rows of its split and evaluation (`kerasimpl.comparison.evaluate`) reuses
them, and runs with other seeds or splits read the same files.
"""

from __future__ import annotations

import hashlib
import json
import os

import keras
import numpy as np

from kerasimpl import distributed, models
from kerasimpl.artifacts import atomic_path
from kerasimpl.inference import predict_batches


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
    processes (`kerasimpl.distributed`) every process must call it: each
    extracts its share of the rows and all get all the features.
    """
    return predict_batches(models.feature_extractor(model), x, batch_size, precision, indices=indices,
                           verbose=verbose, workers=workers, what=what, native=native, across_processes=True)


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
    processes every one reads it and only rank 0 writes it. `path=None`:
    extracted, nothing cached.
    """
    if path is None:
        return extract_features(model, x, indices, batch_size, verbose, workers=workers, what=what,
                                precision=precision)
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
    # Wait for rank 0's file: the next request (validation after training rows) reads the same per-image
    # cache, and every process must find it there, or `agree` above would stop them.
    distributed.agree(True, f"{os.path.basename(path)} written")
    return feats


POOLS = {"train": "train", "val": "train", "test": "test"}  # part of a split -> the images it is drawn from


def split_features(model, data, indices, part, folder, config, verbose="auto"):
    """Pooled features of rows `indices` of part `part`, from the per-image cache `folder/features_<pool>.npz`.

    `part` is `train`, `val` (rows of `data.x_train`: pool `train`) or
    `test` (`data.x_test`); the cache holds the features of EVERY image of
    the pool (`pool_features`), so any split (any seed) selects its rows
    from the same file. `config` is the run's `training.TrainConfig` (its
    inference batch, workers and precision are read).
    """
    if part not in POOLS:
        raise ValueError(f"Unknown part. Received: {part!r}. Accepted: {', '.join(POOLS)}")
    return pool_features(model, data, POOLS[part], folder, config, verbose)[np.asarray(indices)]


def pool_features(model, data, pool, folder, config, verbose="auto"):
    """Pooled features of every image of `pool` (`train`: `data.x_train`; `test`: `data.x_test`), cached in
    `folder/features_<pool>.npz`: read once, a caller takes the rows of as many parts as it needs.

    The cache key holds the frozen base's weights, the data's fingerprint,
    the pool and the precision, so a changed model or file list is
    extracted again. `folder=None`: extracted, not cached.
    """
    if pool not in ("train", "test"):
        raise ValueError(f"Unknown pool. Received: {pool!r}. Accepted: train, test")
    images = data.x_train if pool == "train" else data.x_test
    key = json.dumps({"base": weights_fingerprint(models.base_layers(model)), "source": data.source,
                      "data": data.fingerprint, "pool": pool, "precision": config.precision})
    path = None if folder is None else os.path.join(folder, f"features_{pool}.npz")
    return cached_features(model, images, np.arange(len(images)), path, key, config.extract_batch, verbose,
                           workers=config.workers, what=f"extract {pool}", precision=config.precision)
