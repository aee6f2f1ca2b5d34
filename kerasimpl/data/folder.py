"""A folder of the user's own images as a dataset, streamed from disk.

Layouts (class names are the folder names, sorted; files may sit in
sub-folders of a class folder):

    PATH/<class>/*.jpg                      one pool: train + a held-out test split
    PATH/train/<class>/...                  with split folders; val/ and test/
    PATH/val/<class>/...    (optional)      are optional (val: a seeded stratified
    PATH/test/<class>/...   (optional)      split of train; test: see below)

A `class.txt` beside the class folders names them (see
`kerasimpl.data.classes.read_class_txt`; otherwise the folder names are the
class names). A folder named `test`, `test_set` (or another of
`UNLABELLED_NAMES`) that holds images but no class folders (the course's
TinyImageNet30 copy ships one) is recognised as unlabelled: it is not a
class, its images are not used, and the test set is held out from the
labelled images as when there is no `test/` folder. `classes` keeps a
subset of the classes (`kerasimpl.data.classes.select_classes`) before any
image is read.

Every image is decoded once when the folder is scanned (in worker threads):
an unreadable file (corrupt, truncated, not an image, empty) is skipped and
reported by name, never a crash. Hidden files and folders and files without
an image extension are ignored. Images are then decoded again batch by batch
(`ImageFiles`), through the same `kerasimpl.images.read_image` that
`experiments.infer` uses, so nothing but the file list is held in memory.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os

import numpy as np

from kerasimpl.data.base import DatasetError, ImageClassificationData
from kerasimpl.data.classes import describe, read_class_txt, select_classes
from kerasimpl.data.splits import stratified_split
from kerasimpl.images import EXTENSIONS, ImageError, probe_image, read_image

SPLIT_FOLDERS = ("train", "val", "test")
# Names of a folder of unlabelled images beside the class folders.
UNLABELLED_NAMES = ("test", "test_set", "testset", "test-set", "test_images", "unlabelled", "unlabeled")


class ImageFiles:
    """Image files that index like a read-only uint8 array (N, H, W, 3).

    `files[i]` decodes one image, `files[idx]` (ints, a slice or an int
    array) a batch, each converted to RGB and resized to `size` by
    `kerasimpl.images.read_image`. `keras.utils.PyDataset` loaders
    (`ArrayDataset`) index it exactly as they index an in-memory array.

    Args:
        paths: image file paths.
        size: `(height, width)` every image is resized to.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, paths, size):
        self.paths = tuple(os.fspath(p) for p in paths)
        self.size = (int(size[0]), int(size[1]))

    @property
    def shape(self):
        return (len(self.paths), *self.size, 3)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            return read_image(self.paths[int(idx)], self.size)
        rows = np.arange(len(self.paths))[idx] if isinstance(idx, slice) else np.asarray(idx, dtype=np.int64)
        out = np.empty((len(rows), *self.size, 3), np.uint8)
        for k, i in enumerate(rows):
            out[k] = read_image(self.paths[int(i)], self.size)
        return out

    def __repr__(self):
        return f"ImageFiles({len(self.paths)} files, size={self.size})"

    def fingerprint(self) -> str:
        """sha256 of (path, byte size, mtime) of every file and the size: a
        feature cache keyed by it is recomputed when any file changes."""
        h = hashlib.sha256(repr(self.size).encode())
        for p in self.paths:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()


def is_image_folder(path) -> bool:
    """A folder that is not a CIFAR-10 `cifar-10-batches-py` folder."""
    path = os.fspath(path)
    return os.path.isdir(path) and not (
        os.path.exists(os.path.join(path, "batches.meta"))
        or os.path.isdir(os.path.join(path, "cifar-10-batches-py")))


def load_image_folder(root, image_size=None, test_fraction=0.2, seed=0, workers=4,
                      classes=None) -> ImageClassificationData:
    """Scan an image folder (see module docstring) into a file-backed dataset.

    Args:
        root: the folder.
        image_size: resize every image to this square size (or `(h, w)`);
            `None` keeps the common size of all images and raises if they
            differ.
        test_fraction: without a `test/` folder, the share of each class
            held out (seeded, stratified) as the test set.
        seed: seed of that hold-out.
        workers: threads that decode images during the scan.
        classes: `None` (all), N (the first N class folders, sorted) or a
            file of folder or class names (see `select_classes`).

    Raises:
        DatasetError: an empty or missing folder, a class folder without
            readable images, classes that differ between split folders, or
            images of different sizes without `image_size`.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: no such folder")
    groups, unlabelled = _split_folders(root)
    folders = _common_classes(root, groups, unlabelled)
    txt = os.path.join(root, "class.txt")
    names = read_class_txt(txt, folders) if os.path.isfile(txt) else list(folders)
    keep, total = select_classes(folders, classes, names, what=root), len(folders)
    folders, names = [folders[i] for i in keep], [names[i] for i in keep]
    found = {split: _list_files(folder, folders) for split, folder in groups.items()}
    checked, skipped = _check_files([p for files in found.values() for p, _ in files], workers)
    sizes = {}
    for split, files in found.items():
        found[split] = [(p, label) for p, label in files if p in checked]
        sizes.update((p, checked[p]) for p, _ in found[split])
        _require_every_class(root, split, groups[split], folders, found[split])
    size = _target_size(image_size, sizes)
    notes = [f"{u}: {n} unlabelled image(s), no class folders: not a class, not used" for u, n in unlabelled]
    notes += [describe(classes, len(keep), total)] if classes is not None else []
    if os.path.isfile(txt):
        notes.append(f"class names from {txt}")
    return _assemble(root, names, found, size, skipped, test_fraction, seed, notes)


def _unlabelled_folder(folder):
    """Images, no sub-folders, a name in `UNLABELLED_NAMES`: `(folder, image count)`, else `None`."""
    if os.path.basename(folder).lower() not in UNLABELLED_NAMES or _visible_dirs(folder):
        return None
    n = sum(1 for f in os.listdir(folder) if not f.startswith(".") and f.lower().endswith(EXTENSIONS))
    return (folder, n) if n else None


def _split_folders(root):
    """(`{"train": ..., "val": ..., "test": ...}` (those present) or `{"all": root}`,
    [(unlabelled test folder, image count)])."""
    named = {s: os.path.join(root, s) for s in SPLIT_FOLDERS if os.path.isdir(os.path.join(root, s))}
    unlabelled = [u for u in (_unlabelled_folder(os.path.join(root, d)) for d in _visible_dirs(root)) if u]
    if "test" in named and any(u == named["test"] for u, _ in unlabelled):
        del named["test"]  # images without class folders: unlabelled
    if "train" in named:
        return named, unlabelled
    if named:
        raise DatasetError(
            f"{root}: found {sorted(named)} folder(s) but no train/. Accepted layouts: PATH/<class>/images, or "
            "PATH/train/<class>/ with optional PATH/val/<class>/ and PATH/test/<class>/")
    return {"all": root}, unlabelled


def _visible_dirs(folder):
    return sorted(d for d in os.listdir(folder)
                  if not d.startswith((".", "__MACOSX")) and os.path.isdir(os.path.join(folder, d)))


def _common_classes(root, groups, unlabelled=()):
    skip = {os.path.basename(u) for u, _ in unlabelled}
    per_split = {split: [d for d in _visible_dirs(folder) if split != "all" or d not in skip]
                 for split, folder in groups.items()}
    classes = per_split.get("train", per_split.get("all"))
    if not classes:
        raise DatasetError(f"{groups.get('train', root)}: no class folders. Expected one sub-folder of images "
                           "per class, e.g. PATH/cat/*.jpg, PATH/dog/*.jpg")
    if len(classes) < 2:
        raise DatasetError(f"{groups.get('train', root)}: found one class folder ({classes[0]!r}); a classifier "
                           "needs at least 2")
    for split, names in per_split.items():
        if names != classes:
            missing, extra = sorted(set(classes) - set(names)), sorted(set(names) - set(classes))
            raise DatasetError(f"{groups[split]}: its class folders differ from train/'s. Missing: {missing}; "
                               f"not in train/: {extra}. Every split needs the same class folders")
    return classes


def _list_files(folder, classes):
    """(path, label) of every visible image file under each class folder, sorted."""
    out = []
    for label, name in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(os.path.join(folder, name)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__MACOSX")))
            for f in sorted(filenames):
                if not f.startswith(".") and f.lower().endswith(EXTENSIONS):
                    out.append((os.path.join(dirpath, f), label))
    return out


def _check_files(paths, workers):
    """Decode every file once: `{path: (h, w)}` of the readable ones and a
    sorted list of `(path, reason)` for the rest."""
    from keras.utils import Progbar

    good, bad = {}, []
    bar = Progbar(len(paths), verbose=1 if len(paths) > 2000 else 0, unit_name="image")
    with concurrent.futures.ThreadPoolExecutor(max(1, int(workers))) as pool:
        for i, (path, result) in enumerate(zip(paths, pool.map(_probe, paths, chunksize=64))):
            if isinstance(result, str):
                bad.append((path, result))
            else:
                good[path] = result
            bar.update(i + 1)
    return good, sorted(bad)


def _probe(path):
    try:
        return probe_image(path)
    except ImageError as e:
        return str(e).split(": ", 1)[-1]


def _require_every_class(root, split, folder, classes, files):
    counts = np.bincount([label for _, label in files], minlength=len(classes))
    empty = [classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        where = folder if split != "all" else root
        raise DatasetError(f"{where}: no readable images in class folder(s) {empty}. Every class needs at least "
                           "one image in every split (unreadable files are skipped)")


def _target_size(image_size, sizes):
    if image_size is not None:
        size = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
        if len(size) != 2 or min(int(s) for s in size) < 1:
            raise DatasetError(f"image_size must be a positive int or (height, width). Received: {image_size!r}")
        return int(size[0]), int(size[1])
    distinct = sorted(set(sizes.values()))
    if len(distinct) > 1:
        examples = {}
        for p, s in sizes.items():
            examples.setdefault(s, p)
        a, b = distinct[0], distinct[-1]
        raise DatasetError(
            f"images differ in size ({len(distinct)} sizes, e.g. {a[1]}x{a[0]}: {examples[a]} and "
            f"{b[1]}x{b[0]}: {examples[b]}); pass image_size (`--data-size N` in experiments.compare) "
            "to resize every image to N x N when loading")
    return distinct[0]


def _assemble(root, classes, found, size, skipped, test_fraction, seed, notes=()):
    notes = list(notes)

    def arrays(files):
        return ImageFiles([p for p, _ in files], size), np.asarray([lab for _, lab in files], np.int64)

    if "all" in found:
        paths, labels = arrays(found["all"])
        held = stratified_split(labels, test_fraction, seed)
        train_files = [found["all"][i] for i in held.train]
        test_files = [found["all"][i] for i in held.val]
        notes.append(f"no test/ folder: a stratified {test_fraction:.0%} of each class (seed {seed}) is held out "
                     "as the test set, so test figures come from images never used for training or model "
                     "selection")
    else:
        train_files, test_files = found["train"], found.get("test")
        if test_files is None:
            held = stratified_split(np.asarray([lab for _, lab in train_files]), test_fraction, seed)
            test_files = [train_files[i] for i in held.val]
            train_files = [train_files[i] for i in held.train]
            notes.append(f"no test/ folder: a stratified {test_fraction:.0%} of train/ (seed {seed}) is held out "
                         "as the test set, so test figures come from images never used for training or model "
                         "selection")
    val_indices = None
    if "val" in found:  # the given validation folder, appended after train
        val_indices = np.arange(len(train_files), len(train_files) + len(found["val"]))
        train_files = train_files + found["val"]
        notes.append("validation: the val/ folder")
    x_train, y_train = arrays(train_files)
    x_test, y_test = arrays(test_files)
    if skipped:
        notes.append(f"skipped {len(skipped)} unreadable file(s)")
    return ImageClassificationData(x_train, y_train, x_test, y_test, tuple(classes), source=os.path.abspath(root),
                                   val_indices=val_indices, skipped=tuple(skipped), notes=tuple(notes))
