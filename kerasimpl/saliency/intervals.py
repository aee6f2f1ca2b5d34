"""95% bootstrap intervals over images for per-image saliency measures.

`summarize` turns `{row: {metric: per-image values}}` into table rows: each
metric's mean with its percentile-bootstrap interval, and every row's
paired difference from every other row with its interval (the same
resampled images for both rows, so what the images share cancels). A
difference is `significant` when its interval excludes 0; that is a
per-comparison statement (no correction for the number of comparisons),
and with fewer than `MIN_IMAGES` images it is not made (`None`): a
percentile bootstrap of so few values undercovers. NaN values (a rank
correlation of a constant map) are left out of every mean, and the row
says how many (`<metric>_undefined`).
Reference: Efron & Tibshirani, "An Introduction to the Bootstrap", 1993,
chapter 13 (percentile intervals).
"""

from __future__ import annotations

import numpy as np

LEVEL = 0.95
MIN_IMAGES = 10


def bootstrap_indices(n, n_boot=2000, seed=0) -> np.ndarray:
    """(n_boot, n) image indices drawn with replacement, seeded."""
    if n < 1 or n_boot < 1:
        raise ValueError(f"n (images) and n_boot must be >= 1. Received: n={n}, n_boot={n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def interval(values, indices) -> list:
    """The 95% percentile-bootstrap interval of the mean of `values` (NaN left out) over the resamples
    `indices`; NaN bounds where no value is defined."""
    resampled = np.asarray(values, np.float64)[indices]
    defined = ~np.isnan(resampled)
    counts = defined.sum(axis=1)
    means = np.where(defined, resampled, 0.0).sum(axis=1)[counts > 0] / counts[counts > 0]
    if not len(means):
        return [float("nan"), float("nan")]
    lo, hi = np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return [float(lo), float(hi)]


def _mean(values) -> float:
    values = np.asarray(values, np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def summarize(per_image, n_boot=2000, seed=0) -> dict:
    """Rows with means, intervals and pairwise differences.

    Args:
        per_image: `{row name: {metric: (N,) values}}`; every row measures
            the same N images in the same order (a row may lack a metric).
        n_boot: bootstrap resamples.
        seed: seed of the resamples (shared by every row and difference).

    Returns:
        `{row name: {metric: mean, f"{metric}_ci95": [lo, hi], "per_image":
        {metric: list}, "differences": {other row: {metric: {"difference",
        "ci95", "significant"}}}}}`; the difference is this row minus the other.
    """
    sizes = {len(np.ravel(v)) for row in per_image.values() for v in row.values()}
    if len(sizes) > 1:
        raise ValueError(f"Every row must measure the same images. Received value counts: {sorted(sizes)}")
    n = sizes.pop() if sizes else 0
    idx = bootstrap_indices(n, n_boot, seed) if n else None
    table = {}
    for name, metrics in per_image.items():
        row = {}
        for k, v in metrics.items():
            v = np.asarray(v, np.float64)
            row[k], row[f"{k}_ci95"] = _mean(v), interval(v, idx)
            if np.isnan(v).any():
                row[f"{k}_undefined"] = int(np.isnan(v).sum())
        row["per_image"] = {k: np.asarray(v, np.float64).tolist() for k, v in metrics.items()}
        row["differences"] = {}
        table[name] = row
    for name, metrics in per_image.items():
        for other, theirs in per_image.items():
            if other == name:
                continue
            diffs = {}
            for k in metrics.keys() & theirs.keys():
                d = np.asarray(metrics[k], np.float64) - np.asarray(theirs[k], np.float64)
                lo, hi = interval(d, idx)
                diffs[k] = {"difference": _mean(d), "ci95": [lo, hi],
                            "significant": bool(lo > 0 or hi < 0) if n >= MIN_IMAGES else None}
            table[name]["differences"][other] = {k: diffs[k] for k in metrics if k in diffs}
    return table
