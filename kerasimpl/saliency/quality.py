"""Quality measures for saliency maps.

- Deletion / insertion curves (Petsiuk et al., "RISE", BMVC 2018): remove
  (or reveal) pixels from most to least important and record the target
  probability; a good map gives a low deletion and a high insertion area.
- Average drop / increase in confidence (Chattopadhyay et al., "Grad-CAM++",
  WACV 2018): the image seen through its map should keep the target's
  probability.
- Model randomization (Adebayo et al., "Sanity Checks for Saliency Maps",
  NeurIPS 2018): maps of a model with randomized weights should differ from
  the trained model's; a method that gives the same map fails the check.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kerasimpl.runtime import no_grad


def deletion_insertion(model, image, importance, target, steps=20, fill=0.0, batch_size=64):
    """Deletion and insertion curves with their areas (trapezoid, x in [0, 1]).

    Args:
        model: classifier (raw images in, probabilities out).
        image: (H, W, C) input, in the model's input units.
        importance: (H, W) map, high = important (`Explanation.importance()`).
        target: class index.
        steps: number of equal pixel fractions from 0 to all.
        fill: value of removed pixels (and the start of insertion).

    Returns:
        dict with `fractions`, `deletion`, `insertion` (lists) and
        `deletion_auc`, `insertion_auc`.
    """
    image = np.asarray(image, np.float32)
    h, w = image.shape[:2]
    order = np.argsort(-np.asarray(importance).ravel(), kind="stable")
    fractions = np.linspace(0, 1, steps + 1)
    ranks = np.empty(h * w, np.int64)
    ranks[order] = np.arange(h * w)
    counts = np.round(fractions * h * w).astype(int)
    masks = (ranks[None] < counts[:, None]).reshape(-1, h, w, 1)  # True = already removed/revealed
    blank = np.full_like(image, fill)
    deleted = np.where(masks, blank[None], image[None])
    inserted = np.where(masks, image[None], blank[None])
    curves = {}
    for name, batch in (("deletion", deleted), ("insertion", inserted)):
        with no_grad():
            probs = [ops.convert_to_numpy(model(batch[i:i + batch_size], training=False))[:, target]
                     for i in range(0, len(batch), batch_size)]
        curves[name] = np.concatenate(probs).astype(float)
    area = getattr(np, "trapezoid", None) or np.trapz
    return {
        "fractions": fractions.tolist(),
        "deletion": curves["deletion"].tolist(),
        "insertion": curves["insertion"].tolist(),
        "deletion_auc": float(area(curves["deletion"], fractions)),
        "insertion_auc": float(area(curves["insertion"], fractions)),
    }


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
    """Spearman rank correlation of two maps of equal shape (ties share ranks)."""
    ra, rb = _ranks(np.ravel(a)), _ranks(np.ravel(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denom) if denom else 0.0


def _ranks(x):
    """Ranks 0..n-1, tied values getting the mean of their ranks."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (starts + (counts - 1) / 2.0)[inverse]


def average_drop_increase(model, images, importances, targets, fill=0.0, batch_size=64):
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
    images = np.asarray(images, np.float32)
    e = np.asarray(importances, np.float32)[..., None]
    masked = images * e + fill * (1.0 - e)
    t = np.asarray(targets, int)

    def probs(x):
        with no_grad():
            out = [ops.convert_to_numpy(model(x[i:i + batch_size], training=False))
                   for i in range(0, len(x), batch_size)]
        return np.concatenate(out)[np.arange(len(x)), t].astype(float)

    y, o = probs(images), probs(masked)
    return {"average_drop": float(np.mean(np.maximum(0.0, y - o) / np.maximum(y, 1e-12)) * 100),
            "increase_in_confidence": float(np.mean(o > y) * 100),
            "original": y.tolist(), "masked": o.tolist()}


def mass_shares(importance, centre=0.5, border=0.125) -> dict:
    """Where a map puts its mass: shares of the total importance in the
    central box and in the border ring, beside those regions' shares of the
    area (a map spread evenly has share == area).

    Args:
        importance: (H, W) map, high = important, >= 0.
        centre: side of the central box, a fraction of each side (0.5: the
            middle half of the rows and of the columns, a quarter of the area).
        border: width of the border ring, a fraction of each side.

    Returns:
        dict with `central_share`, `central_area`, `border_share`,
        `border_area` (fractions in [0, 1]) and `peak` ((row, column) of the
        maximum, as fractions of the height and width).
    """
    m = np.asarray(importance, np.float64)
    if m.ndim != 2 or m.min() < 0:
        raise ValueError(f"importance must be a non-negative (H, W) map. Received: shape {m.shape}, min {m.min()}")
    h, w = m.shape
    central = np.zeros((h, w), bool)
    r0, c0 = round(h * (1 - centre) / 2), round(w * (1 - centre) / 2)
    central[r0:h - r0, c0:w - c0] = True
    ring = np.ones((h, w), bool)
    bh, bw = round(h * border), round(w * border)
    ring[bh:h - bh, bw:w - bw] = False
    total = m.sum()
    share = (lambda region: float(m[region].sum() / total)) if total > 0 else (lambda region: 0.0)
    i, j = np.unravel_index(int(np.argmax(m)), m.shape)
    return {"central_share": share(central), "central_area": float(central.mean()),
            "border_share": share(ring), "border_area": float(ring.mean()),
            "peak": [float((i + 0.5) / h), float((j + 0.5) / w)]}


def quality_table(model, images, methods, explanations, fill=0.0, seconds=None, seed=0, baseline=False) -> dict:
    """Every quality measure above, per method, averaged over the images.

    For each method: the deletion and insertion areas
    (`deletion_insertion`), the average drop and increase in confidence
    (`average_drop_increase`), and the mean rank correlation between each
    image's map and the same method's map on a weight-randomized copy of the
    model (`randomized_copy`, `rank_correlation`; should be low). Each map
    is measured for the class it explains (`Explanation.target`).

    Args:
        model: classifier (raw images in, probabilities out).
        images: (N, H, W, C) the explained images.
        methods: the `SaliencyMethod`s that explained them (rebuilt on the
            randomized copy with `rebuild`, precision included).
        explanations: method name -> the N `Explanation`s of `images`.
        fill: value of removed pixels (deletion/insertion, average drop).
        seconds: optional method name -> seconds its explanations took; adds
            `seconds_per_image`.
        seed: seed of the randomized copy's weights (and of the baseline's maps).
        baseline: also a last row, `RANDOM_BASELINE`, of random maps
            (`random_baseline`; no randomization check, no timing).

    Returns:
        dict method name -> dict with `deletion_auc`, `insertion_auc`,
        `average_drop`, `increase_in_confidence`,
        `randomized_model_rank_correlation` (and `seconds_per_image`).
    """
    images = np.asarray(images, np.float32)
    random_model = randomized_copy(model, seed=seed)
    out = {}
    for method in methods:
        exps = explanations[method.name]
        targets = [e.target for e in exps]
        imp = [e.importance() for e in exps]
        curves = [deletion_insertion(model, x, m, t, fill=fill) for x, m, t in zip(images, imp, targets)]
        drop = average_drop_increase(model, images, np.stack(imp), targets, fill=fill)
        random_exps = method.rebuild(random_model).explain(images, targets)
        out[method.name] = {
            "deletion_auc": float(np.mean([c["deletion_auc"] for c in curves])),
            "insertion_auc": float(np.mean([c["insertion_auc"] for c in curves])),
            "average_drop": drop["average_drop"],
            "increase_in_confidence": drop["increase_in_confidence"],
            "randomized_model_rank_correlation": float(np.mean(
                [rank_correlation(m, r.importance()) for m, r in zip(imp, random_exps)])),
        }
        if seconds is not None:
            out[method.name]["seconds_per_image"] = float(seconds[method.name]) / len(exps)
    if baseline and methods:
        out[RANDOM_BASELINE] = random_baseline(model, images, [e.target for e in explanations[methods[0].name]],
                                               fill=fill, seed=seed)
    return out


RANDOM_BASELINE = "random map (baseline)"


def random_baseline(model, images, targets, fill=0.0, seed=0) -> dict:
    """The deletion/insertion areas and average drop/increase of seeded i.i.d.
    uniform random maps on the same images and classes: what a method must
    beat (lower deletion, higher insertion) before its map says anything
    about the model. A row of `quality_table` with `baseline=True`.
    """
    images = np.asarray(images, np.float32)
    rng = np.random.default_rng(seed)
    maps = rng.random(images.shape[:3]).astype(np.float32)
    curves = [deletion_insertion(model, x, m, t, fill=fill) for x, m, t in zip(images, maps, targets)]
    drop = average_drop_increase(model, images, maps, list(targets), fill=fill)
    return {"deletion_auc": float(np.mean([c["deletion_auc"] for c in curves])),
            "insertion_auc": float(np.mean([c["insertion_auc"] for c in curves])),
            "average_drop": drop["average_drop"], "increase_in_confidence": drop["increase_in_confidence"]}


def beats_baseline(table) -> list:
    """The methods of a `quality_table` (with its baseline row) whose deletion area is lower AND
    insertion area higher than the random maps'."""
    base = table.get(RANDOM_BASELINE)
    if base is None:
        raise ValueError(f"The table has no {RANDOM_BASELINE!r} row: build it with quality_table(..., baseline=True)")
    return [name for name, row in table.items() if name != RANDOM_BASELINE
            and row["deletion_auc"] < base["deletion_auc"] and row["insertion_auc"] > base["insertion_auc"]]


# quality_table's columns, with their headings (and which way is better).
QUALITY_COLUMNS = (("deletion_auc", "deletion AUC (lower better)"), ("insertion_auc", "insertion AUC (higher better)"),
                   ("average_drop", "average drop % (lower better)"),
                   ("increase_in_confidence", "increase in confidence % (higher better)"),
                   ("randomized_model_rank_correlation", "rank corr. with randomized model (lower better)"),
                   ("seconds_per_image", "s / image"))


def quality_markdown(table) -> str:
    """`quality_table`'s result as a Markdown table, one row per method."""
    columns = _present(table)
    heads = ["method"] + [h for _, h in columns]
    md = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    md += ["| " + " | ".join([name] + [f"{row[k]:.3f}" if k in row else "n/a" for k, _ in columns]) + " |"
           for name, row in table.items()]
    return "\n".join(md) + "\n"


def quality_csv(table) -> str:
    """`quality_table`'s result as CSV (full precision), one row per method."""
    columns = _present(table)
    rows = [",".join(["method"] + [k for k, _ in columns])]
    rows += [",".join([name] + [repr(float(row[k])) if k in row else "" for k, _ in columns])
             for name, row in table.items()]
    return "\n".join(rows) + "\n"


def _present(table):
    """The columns every method's row has (`seconds_per_image` is optional; the baseline row has fewer)."""
    rows = [row for name, row in table.items() if name != RANDOM_BASELINE] or list(table.values())
    return tuple((k, h) for k, h in QUALITY_COLUMNS if all(k in row for row in rows))
