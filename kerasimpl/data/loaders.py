"""`keras.utils.PyDataset` loaders that ship raw uint8 batches.

Resizing and preprocessing happen inside the model (on the device), so a
batch is the raw 32x32 images: 64 x 32 x 32 x 3 bytes, not 64 x 224 x 224 x
3 floats.
"""

from __future__ import annotations

import math

import keras
import numpy as np


class ArrayDataset(keras.utils.PyDataset):
    """Batches of `(x[idx], y[idx])` from in-memory arrays.

    Epoch `e` is shuffled by a permutation seeded with `(seed, e)`, so the
    order is reproducible and a resumed run (see `start_epoch`) sees the
    same batches it would have seen uninterrupted.

    Args:
        x: array (N, ...), usually uint8 images; may also be cached features.
        y: labels (N,) or `None` for prediction.
        batch_size: images per batch; the last batch may be smaller.
        shuffle: reshuffle at the start of every epoch.
        seed: integer seed of the shuffles.
        augment: optional callable `(x_batch, y_batch) -> (x_batch, y_batch)`
            applied to training batches (see `kerasimpl.augmentation.augmenter`);
            one with `takes_key = True` also gets `key=(epoch, batch_index)`.
        indices: optional subset of rows to serve (e.g. a split's indices),
            so no copy of the arrays is made.
        multiple_of: pad every batch to a multiple of this many rows by
            repeating its last row, so a batch splits evenly over devices
            under data parallelism. Predictions on padded rows must be cut
            off (`kerasimpl.inference.predict` does).
        num_classes: serve labels one-hot (float32, `(batch, num_classes)`)
            instead of as ints: what MixUp/CutMix and categorical losses need.
        shard: `(index, count)`: serve only slice `index` of `count` equal
            slices of every (padded) batch, this process's part of each
            global batch under data parallelism across processes
            (`kerasimpl.distributed.loader_options`). `batch_size` stays the
            global batch; it and `multiple_of` must be multiples of `count`.
        **kwargs: `workers`, `use_multiprocessing`, `max_queue_size`, passed
            to `keras.utils.PyDataset`.
    """

    def __init__(self, x, y=None, batch_size=64, shuffle=False, seed=0, augment=None, indices=None, multiple_of=1,
                 num_classes=None, shard=None, **kwargs):
        super().__init__(**kwargs)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
        if shard is not None and not (0 <= shard[0] < shard[1] and batch_size % shard[1] == 0
                                      and multiple_of % shard[1] == 0):
            raise ValueError(f"A batch splits evenly over the processes: batch_size and multiple_of must be multiples "
                             f"of the shard count. Received: batch_size={batch_size}, multiple_of={multiple_of}, "
                             f"shard={shard}")
        if y is not None and len(x) != len(y):
            raise ValueError(f"x and y differ in length. Received: len(x)={len(x)}, len(y)={len(y)}")
        self.x, self.y = x, y
        self.indices = np.arange(len(x)) if indices is None else np.asarray(indices)
        self.batch_size = int(batch_size)
        self.shuffle, self.seed, self.augment = shuffle, int(seed), augment
        self.multiple_of = max(1, int(multiple_of))
        self.num_classes = None if num_classes is None else int(num_classes)
        self.shard = None if shard is None else (int(shard[0]), int(shard[1]))
        self.epoch = -1  # on_epoch_begin moves to 0 before the first batch.
        self._order = self.indices
        self._pinned = False

    def __len__(self):
        return math.ceil(len(self.indices) / self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.indices)

    def start_epoch(self, epoch):
        """Serve epoch `epoch` now, whatever the epoch count says.

        `kerasimpl.callbacks.EpochSync` calls this from `fit`'s epoch number,
        so a resumed run shuffles as the uninterrupted one did. The next
        `on_epoch_begin` (Keras calls it at most once per epoch, sometimes
        before the callbacks) then leaves the order alone.
        """
        self._set_epoch(int(epoch))
        self._pinned = True

    def on_epoch_begin(self):
        if self._pinned:
            self._pinned = False
            return
        self._set_epoch(self.epoch + 1)

    def _set_epoch(self, epoch):
        self.epoch = epoch
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch])
            self._order = self.indices[rng.permutation(len(self.indices))]

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(f"batch index {i} out of range [0, {len(self)})")
        idx = self._order[i * self.batch_size : (i + 1) * self.batch_size]
        short = -len(idx) % self.multiple_of
        if short:
            idx = np.concatenate([idx, np.repeat(idx[-1:], short)])
        if self.shard is not None:
            part = len(idx) // self.shard[1]
            idx = idx[self.shard[0] * part : (self.shard[0] + 1) * part]
        xb = self.x[idx]
        if self.y is None:
            return (xb,)
        yb = self.y[idx]
        if self.num_classes is not None:
            yb = np.eye(self.num_classes, dtype=np.float32)[yb]
        if self.augment is not None:
            if getattr(self.augment, "takes_key", False):  # reproducible per (epoch, batch)
                xb, yb = self.augment(xb, yb, key=(max(self.epoch, 0), i))
            else:
                xb, yb = self.augment(xb, yb)
        return xb, yb


class ViewsDataset(ArrayDataset):
    """`ArrayDataset` over `views` stacked copies of N rows (view-major: row `v * N + i`);
    epoch e serves view `e mod views`, shuffled as `ArrayDataset` shuffles N rows.

    What fine-tuning on cached activations trains on
    (`kerasimpl.partial`): each epoch sees each image once, in one of a pool
    of fixed augmentations.

    Args:
        x: array (views * N, ...).
        y: labels (N,), shared by every view.
        views: number of stacked copies.
        **kwargs: as `ArrayDataset` (batch_size, shuffle, seed, multiple_of, ...).
    """

    def __init__(self, x, y, views, **kwargs):
        n = len(y)
        if views < 1 or len(x) != views * n:
            raise ValueError(f"Expected views * len(y) = {views} * {n} rows. Received: {len(x)} rows, views={views}")
        super().__init__(x, np.tile(np.asarray(y), views), indices=np.arange(n), **kwargs)
        self.n, self.views = n, int(views)

    def _set_epoch(self, epoch):
        super()._set_epoch(epoch)
        self._order = self._order % self.n + (max(epoch, 0) % self.views) * self.n
