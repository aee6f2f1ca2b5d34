"""Choosing a subset of a dataset's classes (`--classes N` or `--classes FILE`).

`select_classes` picks class indices; each source applies them before it
reads any image (image folders and Tiny ImageNet never scan the images of a
dropped class), and `subset_classes` applies them to in-memory arrays
(CIFAR-10, synthetic). Kept classes stay in the dataset's own order and are
relabelled 0..k-1.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from kerasimpl.data.base import DatasetError


def parse_classes(value):
    """A CLI value: an integer string -> `int`, anything else -> a file path."""
    if value is None or isinstance(value, int):
        return value
    text = os.fspath(value).strip()
    return int(text) if text.lstrip("+-").isdigit() else text


def select_classes(ids, classes, names=None, what="dataset") -> list:
    """Indices (ascending) of the classes to keep.

    Args:
        ids: the classes' identifiers in the dataset's order (folder names,
            wnids).
        classes: `None` (all), an int N (the first N of `ids`, which are in
            sorted order for every folder-based source), or a path to a text
            file listing identifiers or class names, one per line (blank
            lines and lines starting with `#` are ignored).
        names: display names, one per id (matched too when reading a file).
        what: the dataset, for error messages.

    Raises:
        DatasetError: N out of range, a missing file, unknown names (the
            message lists a few accepted ones), or fewer than 2 classes kept.
    """
    ids = [str(i) for i in ids]
    names = [str(n) for n in (names if names is not None else ids)]
    if classes is None:
        return list(range(len(ids)))
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
        if not 2 <= classes <= len(ids):
            raise DatasetError(f"{what}: --classes N keeps the first N of its {len(ids)} classes, N in "
                               f"[2, {len(ids)}]. Received: classes={classes}")
        return list(range(int(classes)))
    path = os.fspath(classes)
    if not os.path.isfile(path):
        raise DatasetError(f"classes must be an integer N or a file listing class ids or names, one per line. "
                           f"Received: {classes!r} (no such file)")
    with open(path, encoding="utf-8") as f:
        wanted = [ln.strip() for ln in f if ln.strip() and not ln.strip().startswith("#")]
    lookup = {}
    for i, (cid, name) in enumerate(zip(ids, names)):
        lookup.setdefault(cid, set()).add(i)
        lookup.setdefault(name, set()).add(i)
        lookup.setdefault(name.lower(), set()).add(i)
    unknown = [w for w in wanted if w not in lookup and w.lower() not in lookup]
    if unknown:
        examples = ", ".join(repr(x) for x in [*ids[:3], *names[:3]] if x)
        raise DatasetError(f"{path}: {len(unknown)} unknown class(es) for {what}, e.g. {unknown[:5]}. Accepted: "
                           f"the {len(ids)} class ids or names, e.g. {examples}")
    keep = sorted(set().union(*(lookup.get(w, lookup.get(w.lower())) for w in wanted)))
    if len(keep) < 2:
        raise DatasetError(f"{path}: names {len(keep)} class(es) of {what}; a classifier needs at least 2")
    return keep


def describe(classes, kept, total) -> str:
    """A data note saying which classes were kept."""
    if classes is None:
        return ""
    how = f"the first {classes} in sorted order" if isinstance(classes, int) else f"those listed in {classes}"
    return f"classes: {kept} of {total} ({how}), relabelled 0..{kept - 1}"


def subset_classes(data, classes):
    """`data` (in-memory arrays) restricted to `classes` (see
    `select_classes`), relabelled 0..k-1, with a note saying so."""
    if classes is None:
        return data
    keep = select_classes(data.class_names, classes, what=data.source)
    relabel = np.full(data.num_classes, -1, np.int64)
    relabel[keep] = np.arange(len(keep))
    tr, te = np.isin(data.y_train, keep), np.isin(data.y_test, keep)
    if data.val_indices is not None:
        raise DatasetError(f"{data.source}: --classes does not apply to a source with a given validation set")
    return dataclasses.replace(
        data, x_train=data.x_train[np.flatnonzero(tr)], y_train=relabel[data.y_train[tr]],
        x_test=data.x_test[np.flatnonzero(te)], y_test=relabel[data.y_test[te]],
        class_names=tuple(data.class_names[i] for i in keep),
        notes=(*data.notes, describe(classes, len(keep), data.num_classes)))


def read_class_txt(path, folders) -> list:
    """Display names of `folders` from a `class.txt` beside them.

    Accepted lines: `<folder> <name>` (tab or spaces; the name may contain
    spaces), `<index> <folder>` or `<index> <name>` (index into the sorted
    folders), or one name per line for every folder in sorted order.
    Folders the file does not name keep their folder name.

    Raises:
        DatasetError: a file in none of these forms (the message shows the
            first line that does not fit).
    """
    with open(path, encoding="utf-8") as f:
        lines = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    out = list(folders)
    position = {name: i for i, name in enumerate(folders)}
    if lines and all(len(ln.split()) == 1 for ln in lines) and len(lines) == len(folders) \
            and not set(lines) & set(position):
        return lines
    for ln in lines:
        first, _, rest = ln.replace("\t", " ").partition(" ")
        rest = rest.strip()
        if first in position:
            out[position[first]] = rest or first
        elif rest in position:
            continue  # "<index> <folder>": the folder name is the class name
        elif first.isdigit() and int(first) < len(folders) and rest:
            out[int(first)] = rest
        else:
            raise DatasetError(
                f"{path}: cannot match line {ln!r} to a class folder. Accepted lines: '<folder> <name>', "
                f"'<index> <name>' (index into the sorted folders), or one name per line for all "
                f"{len(folders)} folders in sorted order. Folders: {list(folders)[:5]}...")
    return out
