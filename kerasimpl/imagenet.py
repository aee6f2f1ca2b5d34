"""The 1000 ImageNet-1k classes, offline: WordNet ids and names in index order.

The index ships with kerasimpl (`imagenet_classes.txt`, made from timm's
Apache-2.0 synset and lemma lists), so ImageNet predictions have names with
no download. A class's name is its first WordNet lemma ("military
uniform"), as in Keras' `imagenet_class_index.json` (which uses
underscores); Keras' own file is accepted too.
"""

from __future__ import annotations

import functools
import json
import os

INDEX_FILE = os.path.join(os.path.dirname(__file__), "imagenet_classes.txt")
NUM_CLASSES = 1000


@functools.cache
def _shipped():
    rows = []
    with open(INDEX_FILE, encoding="utf-8") as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                wnid, lemmas = line.rstrip("\n").split("\t", 1)
                rows.append((wnid, lemmas))
    if len(rows) != NUM_CLASSES:
        raise RuntimeError(f"{INDEX_FILE} holds {len(rows)} classes, expected {NUM_CLASSES}: a damaged install")
    return tuple(rows)


def wnids() -> list:
    """The 1000 WordNet ids (`n01440764`, ...) in index order."""
    return [wnid for wnid, _ in _shipped()]


def class_names(path=None) -> list:
    """The 1000 class names in index order.

    Args:
        path: `None` for the shipped index, or a Keras-format
            `imagenet_class_index.json` (`{"0": ["n01440764", "tench"], ...}`).

    Raises:
        ValueError: `path` is not such a file (says what was received).
    """
    if path is None:
        return [lemmas.split(",")[0].strip() for _, lemmas in _shipped()]
    try:
        with open(path) as f:
            index = json.load(f)
        names = [index[str(i)][1] for i in range(NUM_CLASSES)]
        if not all(isinstance(n, str) for n in names):
            raise TypeError("class names must be strings")
        return names
    except (OSError, ValueError, KeyError, IndexError, TypeError, RecursionError) as e:
        raise ValueError(f"Not an ImageNet class index (Keras' imagenet_class_index.json: {{\"0\": [wnid, name], "
                         f"... \"999\": ...}}). Received: {path} ({type(e).__name__}: {e})") from e
