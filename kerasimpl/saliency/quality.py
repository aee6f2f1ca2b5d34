"""Quality measures for saliency maps, batched on the fast inference path.

- Deletion / insertion curves (Petsiuk et al., "RISE", BMVC 2018): remove
  (or reveal) pixels from most to least important and record the target
  probability; a good map gives a low deletion and a high insertion area.
- Average drop / increase in confidence (Chattopadhyay et al., "Grad-CAM++",
  WACV 2018): the image seen through its map should keep the target's
  probability.
- Model randomization (Adebayo et al., "Sanity Checks for Saliency Maps",
  NeurIPS 2018): maps of a model with randomized weights should differ from
  the trained model's; a method that gives the same map fails the check.

Every forward pass goes through `Scorer`: the fast inference path
(`kerasimpl.inference.Forward`, compiled once per model), `batch_size`
perturbed images at a time, drawn lazily across images and steps, so memory
is bounded by the batch and not by the number of images. What every method
shares is computed once per table: each image's own probability (the
curves' unperturbed end, average drop's Y) and the all-`fill` image's (the
other end). `quality_table` keeps every image's value (`per_image`) and adds
95% bootstrap intervals over images, and each method's paired difference
from the random maps and from every other method
(`kerasimpl.saliency.intervals`).
"""

from __future__ import annotations

import itertools

import keras
import numpy as np

from kerasimpl.progress import Progress

DEFAULT_BATCH = None  # perturbed images per forward pass: the device's measured inference batch
# (`runtime.inference_batch_size`: 16 on a CPU, 128 on an accelerator); memory is one batch


class Scorer:
    """Class probabilities of many images on the fast path, `batch_size` at a time.

    Args:
        model: classifier (raw images in, probabilities out).
        precision: of the forward passes (`kerasimpl.precision`; only the
            compiled torch program applies it).
        batch_size: images per forward pass (default: `runtime.inference_batch_size()`).
    """

    def __init__(self, model, precision="float32", batch_size=DEFAULT_BATCH):
        from kerasimpl import runtime
        from kerasimpl.inference import Forward

        batch_size = runtime.inference_batch_size() if batch_size is None else batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1. Received: batch_size={batch_size!r}")
        self.model, self.batch_size = model, int(batch_size)
        self.forward = Forward(model, precision)
        self._blank = {}

    def target_probabilities(self, items, progress=None) -> np.ndarray:
        """The probability of each item's target, in order, as float64.

        Args:
            items: iterable of `(image (H, W, C), target)`; consumed lazily,
                one batch at a time.
            progress: optional `kerasimpl.progress.Progress`, advanced per batch.
        """
        items, out, done = iter(items), [], 0
        while chunk := list(itertools.islice(items, self.batch_size)):
            batch, targets = zip(*chunk)
            probs = np.asarray(self.forward(np.stack(batch).astype(np.float32)))
            out.append(probs[np.arange(len(chunk)), np.asarray(targets, int)])
            done += len(chunk)
            if progress is not None:
                progress.update(done)
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def blank(self, shape, fill) -> np.ndarray:
        """Probabilities of the image that is `fill` everywhere (one forward, cached)."""
        key = (tuple(shape), float(fill))
        if key not in self._blank:
            self._blank[key] = np.asarray(self.forward(np.full((1, *shape), fill, np.float32)))[0].astype(np.float64)
        return self._blank[key]


def _scorer(model, batch_size):
    return model if isinstance(model, Scorer) else Scorer(model, batch_size=batch_size)


def _area(curves, fractions):
    area = getattr(np, "trapezoid", None) or np.trapz
    return area(curves, fractions, axis=-1)


def removal_ranks(importance) -> np.ndarray:
    """Each pixel's place in the removal order (0 = most important; ties keep
    row-major order), as the (H, W, 1) array `ranks < k` masks k pixels with."""
    flat = np.asarray(importance).ravel()
    ranks = np.empty(flat.size, np.int64)
    ranks[np.argsort(-flat, kind="stable")] = np.arange(flat.size)
    return ranks.reshape(*np.shape(importance), 1)


def deletion_insertion_curves(model, images, importances, targets, steps=20, fill=0.0, batch_size=DEFAULT_BATCH,
                              original=None, progress=None) -> dict:
    """Deletion and insertion curves of N images at once.

    Step k removes (deletion) or reveals (insertion, from an all-`fill`
    image) the round(k H W / steps) most important pixels. The perturbed
    images of all images and steps are scored `batch_size` at a time; the
    curves' ends (the image itself, the all-`fill` image) are shared.

    Args:
        model: classifier, or a `Scorer` (its path, precision and batch).
        images: (N, H, W, C), in the model's input units.
        importances: (N, H, W) maps, high = important.
        targets: N class indices.
        steps: number of equal pixel fractions from 0 to all (>= 1).
        fill: value of removed pixels (and the start of insertion).
        original: optional (N,) target probabilities of the images (computed if absent).
        progress: optional `Progress` over the N * 2 * (steps - 1) perturbed images.

    Returns:
        dict with `fractions` (steps + 1,), `deletion`, `insertion`
        (N, steps + 1), `deletion_auc`, `insertion_auc` (N,) (trapezoid,
        x in [0, 1]).
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1. Received: steps={steps!r}")
    scorer = _scorer(model, batch_size)
    images = np.asarray(images, np.float32)
    n, h, w = images.shape[:3]
    targets = np.asarray(targets, int)
    fractions = np.linspace(0, 1, steps + 1)
    counts = np.round(fractions * h * w).astype(int)[1:-1]
    if original is None:
        original = scorer.target_probabilities(zip(images, targets))
    blank = scorer.blank(images.shape[1:], fill)[targets]

    def perturbed():
        for x, m, t in zip(images, importances, targets):
            ranks = removal_ranks(m)
            for c in counts:
                removed = ranks < c
                yield np.where(removed, np.float32(fill), x), t
                yield np.where(removed, x, np.float32(fill)), t

    inner = scorer.target_probabilities(perturbed(), progress).reshape(n, len(counts), 2)
    deletion = np.column_stack([original, inner[:, :, 0], blank])
    insertion = np.column_stack([blank, inner[:, :, 1], original])
    return {"fractions": fractions, "deletion": deletion, "insertion": insertion,
            "deletion_auc": _area(deletion, fractions), "insertion_auc": _area(insertion, fractions)}


def deletion_insertion(model, image, importance, target, steps=20, fill=0.0, batch_size=DEFAULT_BATCH):
    """Deletion and insertion curves of one image, with their areas (trapezoid, x in [0, 1]).

    Args:
        model: classifier (raw images in, probabilities out), or a `Scorer`.
        image: (H, W, C) input, in the model's input units.
        importance: (H, W) map, high = important (`Explanation.importance()`).
        target: class index.
        steps: number of equal pixel fractions from 0 to all.
        fill: value of removed pixels (and the start of insertion).

    Returns:
        dict with `fractions`, `deletion`, `insertion` (lists) and
        `deletion_auc`, `insertion_auc`.
    """
    c = deletion_insertion_curves(model, np.asarray(image)[None], np.asarray(importance)[None], [target], steps,
                                  fill, batch_size)
    return {"fractions": c["fractions"].tolist(), "deletion": c["deletion"][0].tolist(),
            "insertion": c["insertion"][0].tolist(), "deletion_auc": float(c["deletion_auc"][0]),
            "insertion_auc": float(c["insertion_auc"][0])}


def masked_probabilities(model, images, importances, targets, fill=0.0, batch_size=DEFAULT_BATCH):
    """Target probabilities of each image seen through its map, `x * E + fill * (1 - E)` (E in [0, 1])."""
    images = np.asarray(images, np.float32)
    items = ((x * e[..., None] + fill * (1.0 - e[..., None]), t)
             for x, e, t in zip(images, np.asarray(importances, np.float32), targets))
    return _scorer(model, batch_size).target_probabilities(items)


def drop_and_increase(original, masked) -> tuple:
    """Per image: the drop `max(0, Y - O) / Y` and whether confidence increased (O > Y), both in percent."""
    y, o = np.asarray(original, np.float64), np.asarray(masked, np.float64)
    return np.maximum(0.0, y - o) / np.maximum(y, 1e-12) * 100, (o > y) * 100.0


def average_drop_increase(model, images, importances, targets, fill=0.0, batch_size=DEFAULT_BATCH):
    """Average drop and increase in confidence of images shown through their maps.

    Each image is multiplied by its importance map (`x * E + fill * (1 - E)`,
    E in [0, 1]: what the map calls unimportant fades to `fill`); Y is the
    target probability on the image, O on the masked image. Average drop =
    mean(max(0, Y - O) / Y) (lower is better); increase in confidence =
    share of images with O > Y (higher is better); both in percent.
    Reference: Chattopadhyay et al., "Grad-CAM++", WACV 2018, section 5.1.1.

    Returns:
        dict with `average_drop`, `increase_in_confidence` (percent) and
        the per-image `original`, `masked` probabilities.
    """
    scorer = _scorer(model, batch_size)
    images = np.asarray(images, np.float32)
    y = scorer.target_probabilities(zip(images, targets))
    o = masked_probabilities(scorer, images, importances, targets, fill)
    drop, increase = drop_and_increase(y, o)
    return {"average_drop": float(drop.mean()), "increase_in_confidence": float(increase.mean()),
            "original": y.tolist(), "masked": o.tolist()}


def randomized_copy(model, seed=0):
    """A copy of `model` whose weights are redrawn: same shapes, each tensor
    Gaussian with its original standard deviation (variances kept positive)."""
    clone = keras.models.clone_model(model)
    rng = np.random.default_rng(seed)
    new = []
    for v, w in zip(clone.weights, model.get_weights()):
        std = float(np.std(w)) or 0.05
        r = rng.normal(0.0, std, size=w.shape).astype(w.dtype)
        new.append(np.abs(r) + 1e-3 if "variance" in v.path else r)
    clone.set_weights(new)
    return clone


def rank_correlation(a, b) -> float:
    """Spearman rank correlation of two maps of equal shape (ties share ranks).

    NaN where a map is constant (no ranking to correlate; scipy's
    `spearmanr` and Quantus say the same): counting it as 0 would pass the
    randomization check for a map that says nothing, e.g. an all-zero
    Grad-CAM before and after randomization.
    """
    ra, rb = _ranks(np.ravel(a)), _ranks(np.ravel(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denom) if denom else float("nan")


def _ranks(x):
    """Ranks 0..n-1, tied values getting the mean of their ranks."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (starts + (counts - 1) / 2.0)[inverse]


def explain_in_chunks(method, images, targets, chunk=32, progress=None) -> list:
    """`method.explain` over `chunk` images at a time (a backward pass's memory grows with the batch);
    `progress` (a `kerasimpl.progress.Progress`), if given, advances per chunk."""
    out = []
    for s in range(0, len(images), chunk):
        out += method.explain(images[s:s + chunk], list(targets[s:s + chunk]))
        if progress is not None:
            progress.update(len(out))
    return out


def map_measures(scorer, images, maps, targets, steps=20, fill=0.0, original=None, progress=None) -> dict:
    """Per image: the deletion and insertion areas, the drop and the increase in confidence (percent)
    of `maps` on `images` for `targets`, every forward pass through `scorer`. `original` (the images'
    target probabilities), if given, is not computed again; `progress` follows the curves' passes."""
    targets = np.asarray(targets, int)
    if original is None:
        original = scorer.target_probabilities(zip(images, targets))
    curves = deletion_insertion_curves(scorer, images, maps, targets, steps, fill, original=original,
                                       progress=progress)
    drop, increase = drop_and_increase(original, masked_probabilities(scorer, images, maps, targets, fill))
    return {"deletion_auc": curves["deletion_auc"], "insertion_auc": curves["insertion_auc"],
            "average_drop": drop, "increase_in_confidence": increase}
