"""Evaluation: accuracy, loss, top-k, per-class scores, confusion, speed, size.

The predictions themselves come from `kerasimpl.inference` (the one owner
of running a model over batches).
"""

from __future__ import annotations

import os
import time

import numpy as np

from kerasimpl.inference import Forward


def classification_metrics(probs, labels, class_names=None) -> dict:
    """Scores of predicted probabilities against integer labels.

    Returns:
        dict with `accuracy`, `loss` (mean cross-entropy), `top5_accuracy`,
        `confusion_matrix` (rows: true class, columns: predicted), and
        `per_class`: a list of `{class, precision, recall, f1, support}`.
    """
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"probs must be (N, classes) for N labels. Received: {probs.shape} and {labels.shape}")
    k = probs.shape[1]
    pred = probs.argmax(1)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    top5 = np.argsort(-probs, axis=1)[:, : min(5, k)]
    tp = np.diag(confusion).astype(float)
    precision = np.divide(tp, confusion.sum(0), out=np.zeros(k), where=confusion.sum(0) > 0)
    recall = np.divide(tp, confusion.sum(1), out=np.zeros(k), where=confusion.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    return {
        "accuracy": float((pred == labels).mean()),
        "loss": float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)).mean()),
        "top5_accuracy": float((top5 == labels[:, None]).any(1).mean()),
        "confusion_matrix": confusion.tolist(),
        "per_class": [
            {"class": names[i], "precision": float(precision[i]), "recall": float(recall[i]),
             "f1": float(f1[i]), "support": int(confusion[i].sum())}
            for i in range(k)
        ],
    }


def wilson_interval(accuracy, n, z=1.96) -> tuple:
    """The 95% (z = 1.96) Wilson score interval of an accuracy measured on `n` images: `(low, high)`.

    The test set's own sampling noise: two models whose intervals overlap
    widely are not told apart by these `n` images. It does not shrink by
    averaging training seeds on the same test images. Better than the
    normal approximation near 0 and 1 and for small `n`.

    Reference: Wilson, "Probable inference, the law of succession, and
    statistical inference", JASA 1927; Brown, Cai & DasGupta, "Interval
    estimation for a binomial proportion", Statistical Science 2001.
    """
    if not (n >= 1 and 0.0 <= accuracy <= 1.0):
        raise ValueError(f"Need n >= 1 images and an accuracy in [0, 1]. Received: accuracy={accuracy}, n={n}")
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def throughput(model, input_shape, batch_size=64, repeats=5, warmup=1, precision="float32", with_path=False):
    """Median images/s of the whole model on one random uint8 batch.

    The model runs on the fast path (`kerasimpl.inference.Forward`: the
    compiled torch program at `precision`, Keras elsewhere). With
    `with_path`, returns `(images/s, path)`.
    """
    x = np.random.default_rng(0).integers(0, 256, size=(batch_size, *input_shape), dtype=np.uint8)
    forward = Forward(model, precision)
    for _ in range(warmup):
        forward(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(x)
        times.append(time.perf_counter() - start)
    speed = float(batch_size / np.median(times))
    return (speed, forward.path) if with_path else speed


def file_size_mb(path) -> float:
    return os.path.getsize(path) / 2**20
