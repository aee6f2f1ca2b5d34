"""Which images were the test set when a model was trained.

An image folder without `test/` has its test set drawn by `load_dataset`
(a seeded, stratified share of each class). A later run that explains or
evaluates the model must draw the same one, or its "test" images may
include training images. `experiments.compare` writes `test_split_record`
into its run folder's `config.json` (key `test_split`); `find_record`
reads it back from beside or above a `model.keras`, and `check_record`
says what differs when the data no longer gives the same test set.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from kerasimpl.data import source_kind
from kerasimpl.data.base import DatasetError


def test_split_record(data, data_arg, seed, test_fraction, image_size=None) -> dict:
    """What identifies `data`'s test set: the source, whether the test set
    was drawn (and with which seed and fraction), its size and digest."""
    return {"data": str(data_arg), "source": str(data.source), "source_realpath": _realpath(data.source),
            "drawn": drawn_test_set(data.source), "seed": int(seed), "test_fraction": float(test_fraction),
            "image_size": image_size, "num_test": int(len(data.y_test)), "test_sha256": test_digest(data)}


def _realpath(source):
    """The resolved absolute path of a source on disk; None for a name (`cifar10`, `tfds:...`)."""
    return os.path.realpath(source) if os.path.exists(os.fspath(source)) else None


def drawn_test_set(source) -> bool:
    """Whether `load_dataset(source)` draws the test set (an image folder
    without `test/`) rather than reading a fixed one."""
    return source_kind(source) == "folder" and not os.path.isdir(os.path.join(os.fspath(source), "test"))


def test_digest(data) -> str:
    """sha256 of the test set: file paths (relative to the source) and
    labels for an image folder, else the image and label bytes."""
    h = hashlib.sha256()
    x, y = data.x_test, np.asarray(data.y_test, np.int64)
    if hasattr(x, "paths"):
        for path, label in zip(x.paths, y):
            h.update(f"{os.path.relpath(path, data.source)}\0{int(label)}\n".encode())
    else:
        h.update(np.ascontiguousarray(x).data)
        h.update(np.ascontiguousarray(y).data)
    return h.hexdigest()


def find_record(model_path, levels=3):
    """`(record, config_path)` from the first `config.json` holding a
    `test_split`, in the model's folder or up to `levels` folders above;
    `(None, None)` when there is none."""
    folder = os.path.dirname(os.path.abspath(os.fspath(model_path)))
    for _ in range(levels):
        path = os.path.join(folder, "config.json")
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as f:
                    record = json.load(f).get("test_split")
            except (OSError, ValueError, AttributeError):
                record = None
            if isinstance(record, dict):
                return record, path
        folder = os.path.dirname(folder)
    return None, None


def same_source(record, data_arg) -> bool:
    """Whether `data_arg` (a CLI `--data`) names the recorded source: the same spelling, or the same
    file or folder on disk however it is spelled (`../shared/x.tar.gz` and `/work/shared/x.tar.gz`).
    A record without `source_realpath` (older runs) has its relative paths resolved from here."""
    arg = os.fspath(data_arg)
    if arg in (record.get("data"), record.get("source")) or os.path.abspath(arg) == record.get("source"):
        return True
    here = _realpath(arg)
    recorded = record.get("source_realpath") or (_realpath(record["source"]) if record.get("source") else None)
    return here is not None and here == recorded


def check_record(record, data, where):
    """Raise `DatasetError` naming what differs when `data`'s test set is
    not the recorded one."""
    now = {"num_test": int(len(data.y_test)), "test_sha256": test_digest(data)}
    differs = [f"{k}: recorded {record.get(k)!r}, now {now[k]!r}" for k in now if record.get(k) != now[k]]
    if differs:
        how = (f"drawn with seed {record.get('seed')} and test fraction {record.get('test_fraction')}"
               if record.get("drawn") else "its test/ folder")
        raise DatasetError(
            f"The test images of {data.source} are not those held out when the model was trained ({how}, "
            f"recorded in {where}): {'; '.join(differs)}. The data changed since training (files added, removed "
            "or relabelled), so some 'test' images may have been training images. Explain the model on the data "
            "it was trained with, or retrain it.")
