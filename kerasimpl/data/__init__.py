"""Datasets, splits and loaders.

`load_dataset(source)` is the one entry point:

- `"cifar10"`: the official archive, downloaded once into the Keras cache
  and checked against its sha256;
- a path to `cifar-10-python.tar.gz` or its extracted folder;
- `"tfds:NAME"`: any tensorflow-datasets image-classification dataset
  (needs the `tfds` extra);
- `"synthetic"`: a small deterministic learnable dataset for tests.
"""

from __future__ import annotations

import os

from kerasimpl.data.base import DatasetError, ImageClassificationData, validate_arrays
from kerasimpl.data.cifar10 import CIFAR10_SHA256, CIFAR10_URL, download_cifar10, load_cifar10
from kerasimpl.data.loaders import ArrayDataset
from kerasimpl.data.splits import Split, stratified_split
from kerasimpl.data.synthetic import synthetic_dataset
from kerasimpl.data.tfds import load_tfds

SOURCES = ("cifar10", "synthetic", "tfds:NAME", "PATH")


def load_dataset(source="cifar10", *, image_size=None, cache_dir=None) -> ImageClassificationData:
    """Load a dataset by source name or path (see module docstring).

    Args:
        source: one of `SOURCES`.
        image_size: for `tfds:` sources only: resize every image to this
            square size when loading (datasets of mixed image sizes need it).
        cache_dir: Keras cache folder for the CIFAR-10 download.
    """
    source = os.fspath(source)
    if image_size is not None and not source.startswith("tfds:"):
        raise DatasetError(
            f"image_size applies to 'tfds:NAME' sources only (CIFAR-10 is 32x32; the model resizes). "
            f"Received: image_size={image_size!r} for source {source!r}"
        )
    if source == "cifar10":
        return load_cifar10(None, cache_dir=cache_dir)
    if source == "synthetic":
        return synthetic_dataset()
    if source.startswith("tfds:"):
        return load_tfds(source[len("tfds:"):], image_size=image_size)
    if os.path.exists(source):
        return load_cifar10(source)
    raise DatasetError(
        f"Unknown data source. Received: {source!r}. Accepted: 'cifar10' (download), "
        "'synthetic', 'tfds:NAME', or a path to cifar-10-python.tar.gz or its extracted folder."
    )


__all__ = [
    "ArrayDataset", "CIFAR10_SHA256", "CIFAR10_URL", "DatasetError", "ImageClassificationData",
    "SOURCES", "Split", "download_cifar10", "load_cifar10", "load_dataset", "load_tfds",
    "stratified_split", "synthetic_dataset", "validate_arrays",
]
