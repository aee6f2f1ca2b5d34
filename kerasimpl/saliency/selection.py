"""Which test images to explain: one rule, with explicit modes.

Both experiments pick their images here: `experiments.compare --saliency N`
(`"per-class"`: the same images for every compared model, so they need no
predictions) and `experiments.saliency --data` (`"right-wrong"`: the
model's right and wrong answers side by side). The choice is seeded: the
same labels (and predictions) and seed give the same images.

    sel = choose_images(labels, 6, mode="per-class", seed=0)
    sel.indices   # into `labels`, in display order
    sel.note      # '' when the request was met, else what is missing
"""

from __future__ import annotations

import dataclasses

import numpy as np

MODES = ("per-class", "right-wrong")


@dataclasses.dataclass(frozen=True)
class Selection:
    """The chosen images.

    Attributes:
        indices: int array of positions in the `labels` given, in display
            order ("per-class": the seeded walk's order; "right-wrong": the
            correct ones, then the misclassified, each ascending).
        mode: the rule used (one of `MODES`).
        requested: how many images were asked for.
        counts: what was chosen, by kind: "per-class": `{class: images}`;
            "right-wrong": `{"misclassified": a, "correct": b}`.
        note: a sentence when the labels could not give what was asked
            (fewer images, or fewer misclassified / correct ones, filled
            with the other kind); '' otherwise.
    """

    indices: np.ndarray
    mode: str
    requested: int
    counts: dict
    note: str = ""


def choose_images(labels, n, mode="per-class", seed=0, predictions=None) -> Selection:
    """`n` images of `labels` by the rule `mode`, reproducibly for a `seed`.

    Rules:
        "per-class": walk a seeded permutation of all images; take an image
            whose class has none yet, or any image once every class present
            has one. So the first images cover every class before any class
            repeats; if the walk ends short of `n` (it skipped repeats
            early), the skipped images fill in, in the walk's order.
        "right-wrong": by the model's `predictions`: n // 2 misclassified
            and n - n // 2 correct images, each drawn from a seeded
            permutation of its kind; when one kind is short, the other fills
            the rest (the `note` says so).

    Args:
        labels: (N,) int true classes.
        n: images wanted (>= 1); fewer when `labels` has fewer.
        mode: "per-class" or "right-wrong".
        seed: seed of the permutations.
        predictions: (N,) int predicted classes ("right-wrong" only), or
            (N, classes) probabilities (their argmax is used).

    Raises:
        ValueError: an unknown mode, `n` < 1, or predictions missing or of
            another length than `labels` for "right-wrong".
    """
    labels = np.asarray(labels).astype(int).ravel()
    if mode not in MODES:
        raise ValueError(f"Unknown image choice mode {mode!r}. Accepted: {list(MODES)}")
    if int(n) < 1:
        raise ValueError(f"n must be >= 1 (images to choose). Received: n={n}")
    if mode == "per-class":
        return _per_class(labels, int(n), seed)
    if predictions is None:
        raise ValueError("mode='right-wrong' needs the model's predictions. Received: predictions=None")
    predicted = np.asarray(predictions)
    predicted = predicted.argmax(-1) if predicted.ndim == 2 else predicted.astype(int).ravel()
    if predicted.shape != labels.shape:
        raise ValueError(f"predictions must give one class per label ({len(labels)}). "
                         f"Received: {np.shape(predictions)}")
    return _right_wrong(labels, predicted, int(n), seed)


def _per_class(labels, n, seed) -> Selection:
    order = np.random.default_rng(seed).permutation(len(labels))
    present = len(np.unique(labels))
    chosen, skipped, seen = [], [], set()
    for i in order:
        if len(chosen) == n:
            break
        if int(labels[i]) not in seen or len(seen) == present:
            chosen.append(int(i))
            seen.add(int(labels[i]))
        else:
            skipped.append(int(i))
    chosen += skipped[: n - len(chosen)]
    indices = np.asarray(chosen, dtype=int)
    classes, counts = np.unique(labels[indices], return_counts=True)
    note = "" if len(indices) == n else f"asked for {n} images, but there are only {len(labels)}"
    return Selection(indices, "per-class", n, {int(c): int(k) for c, k in zip(classes, counts)}, note)


def _right_wrong(labels, predicted, n, seed) -> Selection:
    rng = np.random.default_rng(seed)
    wrong = rng.permutation(np.flatnonzero(predicted != labels))
    right = rng.permutation(np.flatnonzero(predicted == labels))
    n_wrong = min(len(wrong), n // 2)
    n_right = min(len(right), n - n_wrong)
    n_wrong = min(len(wrong), n - n_right)  # too few correct ones: more misclassified fill in
    indices = np.concatenate([np.sort(right[:n_right]), np.sort(wrong[:n_wrong])]).astype(int)
    counts = {"misclassified": int(n_wrong), "correct": int(n_right)}
    return Selection(indices, "right-wrong", n, counts, right_wrong_shortfall(predicted, labels, indices, n))


def right_wrong_shortfall(predicted, labels, chosen, n) -> str:
    """A sentence when `labels` hold fewer than n // 2 misclassified or
    n - n // 2 correct images (by `predicted`), else ''."""
    wrong = np.asarray(predicted) != np.asarray(labels)
    have = {"misclassified": int(wrong.sum()), "correct": int((~wrong).sum())}
    want = {"misclassified": n // 2, "correct": n - n // 2}
    short = [f"{have[k]} {k}" for k in want if have[k] < want[k]]
    if not short:
        return ""
    got = int(np.sum(wrong[np.asarray(chosen, dtype=int)])) if len(chosen) else 0
    return (f"asked for {n} images, half misclassified, but the {len(labels)} test images predicted have only "
            f"{' and '.join(short)}: showing {got} misclassified and {len(chosen) - got} correct")


def candidates(model, x, labels, n, seed=0, batch_size=None):
    """`(indices, probabilities)` of the images to choose right and wrong
    answers from: the model's predictions on a seeded sample of
    max(50 n, 500) images (all of them when fewer), or on all of `x` when
    the sample has fewer than n // 2 misclassified or n - n // 2 correct
    images. Predicting a sample, not the whole test set, keeps a large
    test set (or a slow model) cheap.

    Args:
        model: classifier, raw images in, probabilities out.
        x: the images (an array, or anything `inference.predict` reads).
        labels: (N,) int true classes of `x`.
        n: images that will be chosen.
        seed: seed of the sample.
        batch_size: images per forward pass (default: this device's
            inference batch, `runtime.inference_batch_size`); the pass takes
            the fast path where the model has one. (Keras' `predict` at its
            batch of 128 peaked at 10.5 GB for EfficientNet-Lite0 at 224 px on a
            CPU; this pass, 1.1 GB.)
    """
    from kerasimpl.inference import predict_batches
    from kerasimpl.runtime import inference_batch_size

    batch_size = inference_batch_size(batch_size)

    labels = np.asarray(labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    pool = np.sort(order[: max(50 * n, 500)])
    probs = predict_batches(model, x, batch_size, indices=pool)
    wrong = probs.argmax(1) != labels[pool]
    if len(pool) < len(order) and (wrong.sum() < n // 2 or (~wrong).sum() < n - n // 2):
        rest = np.setdiff1d(np.arange(len(order)), pool)  # the sample's predictions are kept, not rerun
        pool = np.concatenate([pool, rest])
        probs = np.concatenate([probs, predict_batches(model, x, batch_size, indices=rest)])
        ordered = np.argsort(pool, kind="stable")  # all of x, in index order
        pool, probs = pool[ordered], probs[ordered]
    return pool, probs
