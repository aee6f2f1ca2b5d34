"""Datasets, splits and loaders.

`load_dataset(source)` is the one entry point:

- `"cifar10"`: the official archive, downloaded once into the Keras cache
  and checked against its sha256;
- a path to `cifar-10-python.tar.gz` or its extracted folder;
- `"tfds:NAME"`: any tensorflow-datasets image-classification dataset
  (needs the `tfds` extra);
- a folder of your own images, `PATH/<class>/*.jpg` or with `train/`,
  `val/`, `test/` split folders (`kerasimpl.data.folder`), streamed from
  disk;
- Tiny ImageNet (`tiny-imagenet-200.zip` or its extracted folder,
  `kerasimpl.data.tinyimagenet`): the labelled `val/` is the test set, the
  official test images are unlabelled and unused;
- `"synthetic"`: a small deterministic learnable dataset for tests.
"""

from __future__ import annotations

import os

from kerasimpl.data.base import DatasetError, ImageClassificationData, validate_arrays
from kerasimpl.data.classes import parse_classes, select_classes, subset_classes
from kerasimpl.data.cifar10 import CIFAR10_SHA256, CIFAR10_URL, download_cifar10, load_cifar10
from kerasimpl.data.folder import ImageFiles, is_image_folder, load_image_folder
from kerasimpl.data.loaders import ArrayDataset, ViewsDataset
from kerasimpl.data.splits import Split, stratified_split
from kerasimpl.data.synthetic import synthetic_dataset
from kerasimpl.data.tfds import load_tfds
from kerasimpl.data.tinyimagenet import is_tinyimagenet, load_tinyimagenet

SOURCES = ("cifar10", "synthetic", "tfds:NAME", "PATH")


def load_dataset(source="cifar10", *, image_size=None, cache_dir=None, test_fraction=0.2, seed=0,
                 workers=4, classes=None) -> ImageClassificationData:
    """Load a dataset by source name or path (see module docstring).

    Args:
        source: one of `SOURCES`.
        image_size: for `tfds:` sources and image folders: resize every
            image to this square size when loading (needed when sizes differ).
        cache_dir: Keras cache folder for the CIFAR-10 download.
        test_fraction, seed: image folders without `test/`: the seeded,
            stratified share of each class held out as the test set.
        workers: image folders: threads that decode images while scanning.
        classes: keep a subset of the classes: N (the first N in the
            source's order, sorted for folders and Tiny ImageNet) or a file
            listing class ids or names (`kerasimpl.data.classes`).
    """
    source = os.fspath(source)
    classes = parse_classes(classes)
    named = source in ("cifar10", "synthetic") or source.startswith("tfds:")
    tiny = not named and is_tinyimagenet(source)
    folder = not named and not tiny and is_image_folder(source)
    if tiny:
        return load_tinyimagenet(source, classes, image_size, workers, cache_dir)
    if image_size is not None and not (source.startswith("tfds:") or folder):
        raise DatasetError(
            f"image_size applies to 'tfds:NAME' sources and image folders only (CIFAR-10 is 32x32; the model "
            f"resizes). Received: image_size={image_size!r} for source {source!r}"
        )
    if folder:
        return load_image_folder(source, image_size, test_fraction=test_fraction, seed=seed, workers=workers,
                                 classes=classes)
    if source == "cifar10":
        return subset_classes(load_cifar10(None, cache_dir=cache_dir), classes)
    if source == "synthetic":
        return subset_classes(synthetic_dataset(), classes)
    if source.startswith("tfds:"):
        return subset_classes(load_tfds(source[len("tfds:"):], image_size=image_size), classes)
    if os.path.exists(source):
        return subset_classes(load_cifar10(source), classes)
    raise DatasetError(
        f"Unknown data source. Received: {source!r}. Accepted: 'cifar10' (download), 'synthetic', "
        "'tfds:NAME', a path to cifar-10-python.tar.gz or its extracted folder, tiny-imagenet-200.zip or its "
        "extracted folder, or a folder of images "
        "(PATH/<class>/*.jpg, or PATH/train/<class>/ with optional val/ and test/)."
    )


__all__ = [
    "ArrayDataset", "ViewsDataset", "CIFAR10_SHA256", "CIFAR10_URL", "DatasetError", "ImageClassificationData", "ImageFiles",
    "is_image_folder", "is_tinyimagenet", "load_image_folder", "load_tinyimagenet", "parse_classes",
    "select_classes", "subset_classes",
    "SOURCES", "Split", "download_cifar10", "load_cifar10", "load_dataset", "load_tfds",
    "stratified_split", "synthetic_dataset", "validate_arrays",
]
