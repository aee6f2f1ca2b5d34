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
FILE_KINDS = ("folder", "tinyimagenet")  # kinds streamed from image files on disk


def source_kind(source) -> str:
    """What a data source names, decided here only: `"cifar10"` (the download),
    `"synthetic"`, `"tfds"` (`tfds:NAME`), `"tinyimagenet"` (its folder or
    zip), `"folder"` (a folder of images), `"cifar10-path"` (an existing
    path, read as CIFAR-10's archive or extracted folder) or `"unknown"`."""
    source = os.fspath(source)
    if source in ("cifar10", "synthetic"):
        return source
    if source.startswith("tfds:"):
        return "tfds"
    if is_tinyimagenet(source):
        return "tinyimagenet"
    if is_image_folder(source):
        return "folder"
    return "cifar10-path" if os.path.exists(source) else "unknown"


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
    kind = source_kind(source)
    if kind == "tinyimagenet":
        return load_tinyimagenet(source, classes, image_size, workers, cache_dir)
    if image_size is not None and kind not in ("tfds", "folder"):
        raise DatasetError(
            f"image_size applies to 'tfds:NAME' sources and image folders only (CIFAR-10 is 32x32; the model "
            f"resizes). Received: image_size={image_size!r} for source {source!r}"
        )
    if kind == "folder":
        return load_image_folder(source, image_size, test_fraction=test_fraction, seed=seed, workers=workers,
                                 classes=classes)
    if kind == "cifar10":
        return subset_classes(load_cifar10(None, cache_dir=cache_dir), classes)
    if kind == "synthetic":
        return subset_classes(synthetic_dataset(), classes)
    if kind == "tfds":
        return subset_classes(load_tfds(source[len("tfds:"):], image_size=image_size), classes)
    if kind == "cifar10-path":
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
    "FILE_KINDS", "SOURCES", "Split", "download_cifar10", "load_cifar10", "load_dataset", "load_tfds", "source_kind",
    "stratified_split", "synthetic_dataset", "validate_arrays",
]
