"""The in-memory dataset every source returns, and the error every source raises."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Optional

import numpy as np


class DatasetError(ValueError):
    """A dataset file or array is missing, corrupt, or not what was expected.

    The message names the file (or array) and what was wrong; CLIs print it
    without a traceback.
    """


@dataclasses.dataclass(frozen=True)
class ImageClassificationData:
    """Images and labels of one dataset, as loaded from its source.

    The images are either in-memory uint8 arrays (CIFAR-10, tfds, synthetic)
    or `kerasimpl.data.folder.ImageFiles`, which index like one and decode
    files on demand: loaders, the feature cache and evaluation take either.

    Attributes:
        x_train: uint8 (N, H, W, 3), the training set (train + validation).
        y_train: int64 array (N,).
        x_test: uint8 (M, H, W, 3), the test set.
        y_test: int64 array (M,).
        class_names: tuple of class names, index = label.
        source: where the data came from (a URL, a path, `tfds:NAME`, `synthetic`).
        val_indices: rows of `x_train` that form a given validation set
            (an image folder's `val/`); `None`: `split()` draws a seeded
            stratified one.
        skipped: `(path, reason)` of every file that could not be read.
        notes: what a reader of the results must know about the data (e.g.
            which images form the test set, and why).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple
    source: str
    val_indices: Optional[np.ndarray] = None
    skipped: tuple = ()
    notes: tuple = ()

    def __post_init__(self):
        n = len(self.class_names)
        for name in ("train", "test"):
            validate_arrays(
                getattr(self, f"x_{name}"),
                getattr(self, f"y_{name}"),
                num_classes=n,
                what=f"{self.source} ({name})",
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])

    def split(self, val_fraction=0.2, seed=0):
        """The train/validation `Split` of `x_train`: the given validation
        rows if the source has them, else seeded and stratified."""
        from kerasimpl.data.splits import Split, stratified_split

        if self.val_indices is None:
            return stratified_split(self.y_train, val_fraction, seed)
        val = np.asarray(self.val_indices)
        train = np.setdiff1d(np.arange(len(self.y_train)), val)
        return Split(train=train, val=val, seed=int(seed), val_fraction=len(val) / len(self.y_train), given=True)

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 identifying the images and labels (feature caches are keyed
        by it): the arrays' bytes, or the files' names, sizes and times."""
        h = hashlib.sha256()
        for x, y in ((self.x_train, self.y_train), (self.x_test, self.y_test)):
            h.update(x.fingerprint().encode() if hasattr(x, "fingerprint") else np.ascontiguousarray(x).data)
            h.update(np.ascontiguousarray(y, dtype=np.int64).data)
        return h.hexdigest()


def validate_arrays(x, y, *, num_classes, what):
    """Check images are uint8 (N, H, W, 3) and labels ints in [0, num_classes)."""
    if not hasattr(x, "shape") or getattr(x, "dtype", None) != np.uint8 or len(x.shape) != 4 or x.shape[-1] != 3:
        raise DatasetError(
            f"{what}: images must be a uint8 array of shape (N, H, W, 3). "
            f"Received: dtype={getattr(x, 'dtype', type(x).__name__)}, "
            f"shape={getattr(x, 'shape', None)}"
        )
    y = np.asarray(y)
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(
            f"{what}: labels must be {len(x)} integers, one per image. "
            f"Received: dtype={y.dtype}, shape={y.shape}"
        )
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        bad = y[(y < 0) | (y >= num_classes)]
        raise DatasetError(
            f"{what}: labels must lie in [0, {num_classes}). "
            f"Received {len(bad)} out of range, e.g. {int(bad[0])}"
        )
