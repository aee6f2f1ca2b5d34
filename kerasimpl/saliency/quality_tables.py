"""The quality table of several saliency methods, with intervals, as Markdown and CSV.

`quality_table` measures every method's maps on the same images
(`kerasimpl.saliency.quality`), adds the random-map baseline row, and
summarizes per-image values with 95% bootstrap intervals and paired
differences (`kerasimpl.saliency.intervals`). `quality_markdown`,
`quality_csv`, `differences_csv` and `per_image_csv` render it.
"""

from __future__ import annotations

import numpy as np

from kerasimpl.progress import Progress
from kerasimpl.saliency.quality import (
    DEFAULT_BATCH, Scorer, _scorer, explain_in_chunks, map_measures, rank_correlation, randomized_copy,
)


def quality_table(model, images, methods, explanations, fill=0.0, seconds=None, seed=0, baseline=False, steps=20,
                  batch_size=DEFAULT_BATCH, precision=None, n_boot=2000, verbose=0) -> dict:
    """Every quality measure above, per method, with 95% bootstrap intervals over the images.

    For each method and image: the deletion and insertion areas, the drop
    and increase in confidence (average drop and increase in confidence
    are their means), and the rank correlation between the image's map and
    the same method's map on a weight-randomized copy of the model
    (`randomized_copy`; should be low). Each map is measured for the class
    it explains (`Explanation.target`). All forward passes run through one
    `Scorer` (fast path, `batch_size` images at a time).

    Args:
        model: classifier (raw images in, probabilities out).
        images: (N, H, W, C) the explained images.
        methods: the `SaliencyMethod`s that explained them (rebuilt on the
            randomized copy with `rebuild`, precision included).
        explanations: method name -> the N `Explanation`s of `images`.
        fill: value of removed pixels (deletion/insertion, average drop).
        seconds: optional method name -> seconds its explanations took; adds
            `seconds_per_image`.
        seed: seed of the randomized copy's weights, of the baseline's maps
            and of the bootstrap.
        baseline: also a last row, `RANDOM_BASELINE`, of seeded uniform
            random maps (no randomization check, no timing).
        steps: deletion/insertion steps.
        batch_size: perturbed images per forward pass.
        precision: of the forward passes (default: the first method's).
        n_boot: bootstrap resamples of the images (`intervals.summarize`).
        verbose: progress of the perturbed passes (`kerasimpl.progress`).

    Returns:
        dict method name -> row: the means `deletion_auc`, `insertion_auc`,
        `average_drop`, `increase_in_confidence`,
        `randomized_model_rank_correlation` (not for the baseline), each with
        `<metric>_ci95`; `per_image` (the values the means average);
        `differences` (other row -> metric -> paired difference with its
        interval and `significant`); and `seconds_per_image` if timed.
    """
    from kerasimpl.saliency import intervals

    images = np.asarray(images, np.float32)
    precision = precision or (methods[0].precision if methods else "float32")
    scorer = Scorer(model, precision, batch_size)
    originals = {}

    def original(targets):
        key = tuple(int(t) for t in targets)
        if key not in originals:
            originals[key] = scorer.target_probabilities(zip(images, targets))
        return originals[key]

    def measured(name, maps, targets):
        progress = Progress(len(images) * 2 * max(steps - 1, 0), f"quality: {name}", verbose)
        values = map_measures(scorer, images, maps, targets, steps, fill, original(targets), progress)
        progress.close()
        return values

    per_image = {}
    random_model = randomized_copy(model, seed=seed) if methods else None
    for method in methods:
        exps = explanations[method.name]
        targets = np.array([e.target for e in exps], int)
        maps = np.stack([e.importance() for e in exps])
        random_exps = explain_in_chunks(method.rebuild(random_model), images, targets)
        per_image[method.name] = {**measured(method.name, maps, targets), "randomized_model_rank_correlation": np.array(
            [rank_correlation(m, r.importance()) for m, r in zip(maps, random_exps)])}
    if baseline and methods:
        targets = np.array([e.target for e in explanations[methods[0].name]], int)
        per_image[RANDOM_BASELINE] = measured(RANDOM_BASELINE, random_maps(images, seed), targets)
    table = intervals.summarize(per_image, n_boot=n_boot, seed=seed)
    for name, row in table.items():
        if seconds is not None and name in seconds:
            row["seconds_per_image"] = float(seconds[name]) / len(images)
    return table


RANDOM_BASELINE = "random map (baseline)"


def random_maps(images, seed=0) -> np.ndarray:
    """Seeded i.i.d. uniform maps, one (H, W) per image: the baseline's."""
    return np.random.default_rng(seed).random(np.shape(images)[:3]).astype(np.float32)


def random_baseline(model, images, targets, fill=0.0, seed=0, steps=20, batch_size=DEFAULT_BATCH) -> dict:
    """The deletion/insertion areas and average drop/increase of seeded i.i.d.
    uniform random maps on the same images and classes: what a method must
    beat (lower deletion, higher insertion) before its map says anything
    about the model. `quality_table(..., baseline=True)` adds it as a row
    with intervals; this gives its means alone.
    """
    images = np.asarray(images, np.float32)
    values = map_measures(_scorer(model, batch_size), images, random_maps(images, seed), targets, steps, fill)
    return {k: float(np.mean(v)) for k, v in values.items()}


def beats_baseline(table) -> list:
    """The methods of a `quality_table` (with its baseline row) whose deletion area is lower AND
    insertion area higher than the random maps'."""
    base = table.get(RANDOM_BASELINE)
    if base is None:
        raise ValueError(f"The table has no {RANDOM_BASELINE!r} row: build it with quality_table(..., baseline=True)")
    return [name for name, row in table.items() if name != RANDOM_BASELINE
            and row["deletion_auc"] < base["deletion_auc"] and row["insertion_auc"] > base["insertion_auc"]]


# quality_table's columns: (key, heading, format).
QUALITY_COLUMNS = (("deletion_auc", "deletion AUC (lower better)", ".3f"),
                   ("insertion_auc", "insertion AUC (higher better)", ".3f"),
                   ("average_drop", "average drop % (lower better)", ".1f"),
                   ("increase_in_confidence", "increase in confidence % (higher better)", ".1f"),
                   ("randomized_model_rank_correlation", "rank corr. with randomized model (lower better)", ".3f"),
                   ("seconds_per_image", "s / image", ".3f"))
_SHORT = {"deletion_auc": "deletion", "insertion_auc": "insertion", "average_drop": "average drop",
          "increase_in_confidence": "increase", "randomized_model_rank_correlation": "randomization"}


def _grid(heads, rows) -> list:
    from kerasimpl.reporting import markdown_grid

    return markdown_grid(heads, rows)


def _num_images(table) -> int:
    rows = [r for r in table.values() if r.get("per_image")]
    return len(next(iter(rows[0]["per_image"].values()))) if rows else 0


def _with_interval(row, key, fmt, n):
    if key not in row:
        return "n/a"
    ci = row.get(f"{key}_ci95") if n >= 2 else None  # one image: no interval to speak of
    undefined = row.get(f"{key}_undefined")
    return (f"{row[key]:{fmt}}" + (f" [{ci[0]:{fmt}}, {ci[1]:{fmt}}]" if ci else "")
            + (f" ({undefined} constant map{'s' if undefined > 1 else ''} left out)" if undefined else ""))


def _difference(d, fmt):
    mark = {True: " *", False: "", None: ""}[d["significant"]]
    return f"{d['difference']:+{fmt}} [{d['ci95'][0]:+{fmt}}, {d['ci95'][1]:+{fmt}}]{mark}"


def quality_markdown(table) -> str:
    """`quality_table`'s result as Markdown: one row per method (mean [95% interval]); then each
    method's difference from the random maps, and the methods' pairwise deletion and insertion
    differences, where the table has them."""
    columns, n = _present(table), _num_images(table)
    md = _grid(["method"] + [h for _, h, _ in columns],
               [[name] + [_with_interval(row, k, f, n) for k, _, f in columns] for name, row in table.items()])
    if n < 2 or not any(row.get("differences") for row in table.values()):
        return "\n".join(md) + "\n"
    md += ["", f"{n} images; [a, b]: 95% percentile-bootstrap interval over the images. Differences are paired "
           "(row minus column, the same resampled images); * marks an interval that excludes 0 (per comparison, "
           f"uncorrected{'; not marked below 10 images' if n < 10 else ''})."]
    if RANDOM_BASELINE in table:
        keys = [(k, f) for k, _, f in columns if k in table[RANDOM_BASELINE] and k in _SHORT]
        md += ["", "**Difference from the random maps** (method minus random; better than random: deletion and "
               "average drop negative, insertion and increase positive):", ""]
        md += _grid(["method"] + [_SHORT[k] for k, _ in keys],
                    [[name] + [_difference(row["differences"][RANDOM_BASELINE][k], f) for k, f in keys]
                     for name, row in table.items() if name != RANDOM_BASELINE])
    names = [name for name in table if name != RANDOM_BASELINE]
    for key in ("deletion_auc", "insertion_auc"):
        if len(names) < 2:
            break
        md += ["", f"**Pairwise {_SHORT[key]} AUC differences** (row minus column):", ""]
        md += _grid(["method"] + names[1:], [[a] + [_difference(table[a]["differences"][b][key], ".3f") if j > i
                                                    else "" for j, b in enumerate(names) if j > 0]
                                             for i, a in enumerate(names[:-1])])
    return "\n".join(md) + "\n"


def quality_csv(table) -> str:
    """`quality_table`'s result as CSV (full precision), one row per method: the means, then each
    metric's interval (`_low`, `_high`), then its difference from the random maps with interval and
    significance (where the table has the baseline)."""
    columns = [k for k, _, _ in _present(table)]
    measured = [k for k in columns if k != "seconds_per_image"]
    base = RANDOM_BASELINE in table
    heads = ["method"] + columns + [f"{k}_{s}" for k in measured for s in ("low", "high")]
    heads += [f"{k}_vs_baseline{s}" for k in measured if base and k in table[RANDOM_BASELINE]
              for s in ("", "_low", "_high", "_significant")]
    rows = [",".join(heads)]
    for name, row in table.items():
        cells = [name] + [repr(float(row[k])) if k in row else "" for k in columns]
        cells += [repr(float(row[f"{k}_ci95"][i])) if f"{k}_ci95" in row else "" for k in measured for i in (0, 1)]
        if base:
            for k in measured:
                if k not in table[RANDOM_BASELINE]:
                    continue
                d = row.get("differences", {}).get(RANDOM_BASELINE, {}).get(k)
                cells += ([repr(d["difference"]), repr(d["ci95"][0]), repr(d["ci95"][1]), str(d["significant"])]
                          if d else ["", "", "", ""])
        rows.append(",".join(cells))
    return "\n".join(rows) + "\n"


def differences_csv(table) -> str:
    """Every pairwise difference of `quality_table` (rows and the baseline), one line per metric and pair."""
    rows = ["metric,method,other,difference,low,high,significant"]
    for name, row in table.items():
        for other, diffs in row.get("differences", {}).items():
            rows += [f"{k},{name},{other},{d['difference']!r},{d['ci95'][0]!r},{d['ci95'][1]!r},{d['significant']}"
                     for k, d in diffs.items()]
    return "\n".join(rows) + "\n"


def per_image_csv(table) -> str:
    """The per-image values behind `quality_table`'s means: one line per method and image."""
    keys = [k for k, _, _ in QUALITY_COLUMNS if any(k in row.get("per_image", {}) for row in table.values())]
    rows = [",".join(["method", "image"] + keys)]
    for name, row in table.items():
        values = row.get("per_image", {})
        for i in range(len(next(iter(values.values()), []))):
            rows.append(",".join([name, str(i)] + [repr(values[k][i]) if k in values else "" for k in keys]))
    return "\n".join(rows) + "\n"


def without_per_image(table) -> dict:
    """The table without `per_image` values (for a compact JSON report)."""
    return {name: {k: v for k, v in row.items() if k != "per_image"} for name, row in table.items()}


def _present(table):
    """The columns every method's row has (`seconds_per_image` is optional; the baseline row has fewer)."""
    rows = [row for name, row in table.items() if name != RANDOM_BASELINE] or list(table.values())
    return tuple(c for c in QUALITY_COLUMNS if all(c[0] in row for row in rows))
