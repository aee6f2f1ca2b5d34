"""Tiny ImageNet (`tiny-imagenet-200`) from its zip or extracted folder, streamed from disk.

The official layout (cs231n's `tiny-imagenet-200.zip`):

    tiny-imagenet-200/wnids.txt                  the 200 class ids (WordNet ids)
    tiny-imagenet-200/words.txt                  wnid <tab> "name, other name, ..."
    tiny-imagenet-200/train/<wnid>/images/*.JPEG 500 labelled images per class
    tiny-imagenet-200/val/images/*.JPEG          50 per class, labelled by
    tiny-imagenet-200/val/val_annotations.txt    "file <tab> wnid <tab> box"
    tiny-imagenet-200/test/images/*.JPEG         unlabelled: not used

The labelled `val/` is the TEST set here (the official test images carry no
labels, so no accuracy can be computed on them); `train/` is split into
train and validation by the seeded stratified split every source uses.
Classes are the wnids in sorted order, named by the first name words.txt
gives them. Images are 64x64 JPEGs decoded batch by batch through
`kerasimpl.data.folder.ImageFiles`; unreadable ones are skipped and listed.

A zip is extracted ONCE (train/, val/ and the two lists, ~110k small files,
not the unlabelled test/) into a folder beside it, `<zip>.extracted/`
(or, where that folder is not writable, under the Keras cache), and read
from there: every batch then opens plain files, as for any image folder,
worker threads need no shared zip handle, and the feature cache's
fingerprint (paths, sizes, mtimes) works unchanged. A marker written last
records the zip's size and time, so an interrupted or stale extraction is
redone. Members with absolute or `..` paths are refused.

Reference: Le & Yang, "Tiny ImageNet Visual Recognition Challenge", 2015
(cs231n); http://cs231n.stanford.edu/tiny-imagenet-200.zip
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile

import numpy as np

from kerasimpl.data.base import DatasetError, ImageClassificationData
from kerasimpl.data.classes import describe, select_classes
from kerasimpl.data.folder import ImageFiles, _check_files, _require_every_class, _target_size
from kerasimpl.images import EXTENSIONS

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
FOLDER = "tiny-imagenet-200"
_KEEP = ("wnids.txt", "words.txt", "train/", "val/")  # what a zip extraction takes


def find_root(path):
    """The folder holding `wnids.txt` and `train/` (`path` or `path/tiny-imagenet-200`), or `None`."""
    path = os.fspath(path)
    for root in (path, os.path.join(path, FOLDER)):
        if os.path.isfile(os.path.join(root, "wnids.txt")) and os.path.isdir(os.path.join(root, "train")):
            return root
    return None


def _zip_prefix(names):
    """The member prefix ('' or 'tiny-imagenet-200/') under which wnids.txt lies, or `None`."""
    for name in names:
        if name.endswith("wnids.txt") and name.count("/") <= 1:
            return name[: -len("wnids.txt")]
    return None


def is_tinyimagenet(path) -> bool:
    """A Tiny ImageNet folder (see `find_root`) or a zip of one."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return find_root(path) is not None
    if os.path.isfile(path) and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return _zip_prefix(z.namelist()) is not None
    return False


def extract_zip(path, cache_dir=None) -> str:
    """Extract a Tiny ImageNet zip once (see module docstring); return the dataset root."""
    path = os.path.abspath(os.fspath(path))
    stamp = f"{os.path.getsize(path)} {os.stat(path).st_mtime_ns}"
    candidates = [path + ".extracted"]
    base = cache_dir or os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    candidates.append(os.path.join(base, "datasets", os.path.basename(path) + ".extracted"))
    for target in candidates:
        marker = os.path.join(target, ".complete")
        if os.path.isfile(marker) and open(marker).read() == stamp:
            return find_root(target)
    for target in candidates:
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            partial = tempfile.mkdtemp(prefix=".partial-", dir=os.path.dirname(target))
        except OSError:
            continue
        try:
            _extract(path, partial)
            with open(os.path.join(partial, ".complete"), "w") as f:
                f.write(stamp)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(partial, target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return find_root(target)
    raise DatasetError(f"{path}: no writable folder to extract it into (tried {candidates}); extract it yourself "
                       "and pass the folder")


def _extract(path, dest):
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        prefix = _zip_prefix(names)
        if prefix is None:
            raise DatasetError(f"{path}: not a Tiny ImageNet zip (no wnids.txt at its top or in {FOLDER}/)")
        for name in names:
            rel = name[len(prefix):] if name.startswith(prefix) else None
            if not rel or not rel.startswith(_KEEP) or name.endswith("/"):
                continue
            parts = rel.split("/")
            if name.startswith("/") or ".." in parts or ":" in parts[0]:
                raise DatasetError(f"{path}: refusing member {name!r} (absolute or '..' path)")
            out = os.path.join(dest, FOLDER, *parts)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)


def load_tinyimagenet(path, classes=None, image_size=None, workers=4, cache_dir=None) -> ImageClassificationData:
    """Tiny ImageNet as a file-backed dataset (see module docstring).

    Args:
        path: the zip, the `tiny-imagenet-200` folder, or the folder holding it.
        classes: `None` (all 200), N (the first N wnids in sorted order:
            TinyImageNet30 is 30), or a file of wnids or class names.
        image_size: resize to this size when loading (`None`: 64x64 as stored).
        workers: threads that decode images during the scan.
        cache_dir: fallback folder for a zip's extraction.

    Raises:
        DatasetError: missing lists or folders, unknown classes, a class
            without readable images in train/ or val/.
    """
    path = os.fspath(path)
    root = extract_zip(path, cache_dir) if os.path.isfile(path) else find_root(path)
    if root is None:
        raise DatasetError(f"{path}: not a Tiny ImageNet folder. Expected {FOLDER}/ with wnids.txt, words.txt, "
                           "train/<wnid>/images/*.JPEG, val/images/ and val/val_annotations.txt")
    wnids = sorted({ln.strip() for ln in _lines(root, "wnids.txt") if ln.strip()})
    words = {}
    if os.path.isfile(os.path.join(root, "words.txt")):
        for ln in _lines(root, "words.txt"):
            wnid, _, text = ln.partition("\t")
            words[wnid.strip()] = text.split(",")[0].strip()
    names = [words.get(w) or w for w in wnids]
    keep, total = select_classes(wnids, classes, names, what=root), len(wnids)
    wnids, names = [wnids[i] for i in keep], [names[i] for i in keep]
    label = {w: i for i, w in enumerate(wnids)}
    train = []
    for i, wnid in enumerate(wnids):
        folder = _folder(root, "train", wnid, "images")
        train += [(os.path.join(folder, f), i) for f in sorted(os.listdir(folder))
                  if not f.startswith(".") and f.lower().endswith(EXTENSIONS)]
    test, missing = [], []
    for ln in _lines(root, "val", "val_annotations.txt"):
        fields = ln.split("\t")
        if len(fields) >= 2 and fields[1].strip() in label:
            file = os.path.join(root, "val", "images", fields[0].strip())
            (test if os.path.isfile(file) else missing).append((file, label[fields[1].strip()]))
    checked, skipped = _check_files([p for p, _ in train + test], workers)
    skipped += [(p, "listed in val_annotations.txt but missing") for p, _ in missing]
    train = [(p, y) for p, y in train if p in checked]
    test = [(p, y) for p, y in test if p in checked]
    _require_every_class(root, "train", os.path.join(root, "train"), wnids, train)
    _require_every_class(root, "val", os.path.join(root, "val"), wnids, test)
    size = _target_size(image_size, checked)
    notes = ["test set: the labelled val/ images (val_annotations.txt); the official test/ images are unlabelled "
             "and not used", "validation: a seeded stratified split of train/"]
    if classes is not None:
        notes.append(describe(classes, len(keep), total))
    if skipped:
        notes.append(f"skipped {len(skipped)} unreadable file(s)")

    def arrays(files):
        return ImageFiles([p for p, _ in files], size), np.asarray([y for _, y in files], np.int64)

    (x_train, y_train), (x_test, y_test) = arrays(train), arrays(test)
    return ImageClassificationData(x_train, y_train, x_test, y_test, tuple(names), source=os.path.abspath(root),
                                   skipped=tuple(sorted(skipped)), notes=tuple(notes))


def _folder(root, *parts):
    folder = os.path.join(root, *parts)
    if not os.path.isdir(folder):
        raise DatasetError(f"{folder}: missing. wnids.txt lists this class; Tiny ImageNet keeps its training images "
                           "in train/<wnid>/images/")
    return folder


def _lines(root, *parts):
    file = os.path.join(root, *parts)
    if not os.path.isfile(file):
        raise DatasetError(f"{file}: missing; a Tiny ImageNet folder has wnids.txt, words.txt and "
                           "val/val_annotations.txt")
    with open(file, encoding="utf-8") as f:
        return f.read().splitlines()
