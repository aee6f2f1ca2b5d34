"""The in-memory dataset every source returns, and the error every source raises."""

from __future__ import annotations

import dataclasses

import numpy as np


class DatasetError(ValueError):
    """A dataset file or array is missing, corrupt, or not what was expected.

    The message names the file (or array) and what was wrong; CLIs print it
    without a traceback.
    """


@dataclasses.dataclass(frozen=True)
class ImageClassificationData:
    """Images and labels of one dataset, as loaded from its source.

    Attributes:
        x_train: uint8 array (N, H, W, 3), the official training set.
        y_train: int64 array (N,).
        x_test: uint8 array (M, H, W, 3), the official test set.
        y_test: int64 array (M,).
        class_names: tuple of class names, index = label.
        source: where the data came from (a URL, a path, `tfds:NAME`, `synthetic`).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple
    source: str

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


def validate_arrays(x, y, *, num_classes, what):
    """Check images are uint8 (N, H, W, 3) and labels ints in [0, num_classes)."""
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
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
