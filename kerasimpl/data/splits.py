"""Seeded, stratified train/validation split of an official training set."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Split:
    """Indices into the official training set.

    Reproducible from `(seed, val_fraction)` and the labels alone, so a run
    records those two numbers and anyone can rebuild the exact split.
    """

    train: np.ndarray
    val: np.ndarray
    seed: int
    val_fraction: float
    given: bool = False  # the source's own validation set (an image folder's val/)

    def summary(self) -> dict:
        out = {
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "num_train": int(len(self.train)),
            "num_val": int(len(self.val)),
        }
        if self.given:
            out["validation"] = "given by the data source"
        return out


def stratified_split(labels, val_fraction=0.2, seed=0) -> Split:
    """Split indices so each class keeps its share in train and validation.

    Each class contributes `round(count * val_fraction)` images to
    validation, chosen by a permutation seeded with `seed`.

    Args:
        labels: int array of the training labels.
        val_fraction: share of each class held out, in (0, 1).
        seed: integer seed.
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1). Received: val_fraction={val_fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_val = int(round(len(idx) * val_fraction))
        val.append(rng.permutation(idx)[:n_val])
    val = np.sort(np.concatenate(val))
    train = np.setdiff1d(np.arange(len(labels)), val)
    return Split(train=train, val=val, seed=int(seed), val_fraction=float(val_fraction))
