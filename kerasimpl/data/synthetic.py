"""A deterministic synthetic dataset with the CIFAR-10 interface."""

from __future__ import annotations

import numpy as np

from kerasimpl.data.base import ImageClassificationData


def synthetic_dataset(num_train=512, num_test=128, num_classes=10, image_size=32, seed=0):
    """Learnable synthetic images: each class is a coloured square at its own place.

    The class is visible (a bright patch whose position and colour depend on
    the label) on a noisy background, so a small model can learn it quickly;
    the same arguments always give the same bytes.
    """
    rng = np.random.default_rng(seed)
    palette = rng.integers(64, 256, size=(num_classes, 3))
    grid = int(np.ceil(np.sqrt(num_classes)))
    cell = image_size // grid

    def make(n):
        y = np.arange(n) % num_classes
        rng.shuffle(y)
        x = rng.integers(0, 96, size=(n, image_size, image_size, 3), dtype=np.uint8)
        for i, c in enumerate(y):
            r, q = divmod(int(c), grid)
            x[i, r * cell : (r + 1) * cell, q * cell : (q + 1) * cell] = palette[c]
        return x, y.astype(np.int64)

    x_train, y_train = make(num_train)
    x_test, y_test = make(num_test)
    return ImageClassificationData(
        x_train, y_train, x_test, y_test,
        class_names=tuple(f"class_{i}" for i in range(num_classes)),
        source="synthetic",
    )
