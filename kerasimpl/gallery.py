"""A comparison run's `plots/` folder: every figure of the run in one place.

`write_gallery` draws the run-level figures (accuracy against training time;
every row's learning curves on one figure) and copies each row's own
figures in, one per seed with `--seeds N` (`<row>_seed<S>_<figure>.png`).
"""

from __future__ import annotations

import os

from kerasimpl import plotting
from kerasimpl.artifacts import copy_file, read_csv, save_figure

ROW_FIGURES = ("learning_curves.png", "confusion_matrix.png")


def row_names(results) -> list:
    """The rows of `results` in order: each result's `run` label, else its backbone."""
    return list(dict.fromkeys(r.get("run", r["backbone"]) for r in results))


def write_gallery(out, results, seed_folders=("",), title="accuracy vs training time") -> str:
    """Write `out/plots/`; return its path.

    Args:
        out: the run folder; row `<name>` lives in `out/<name>/<seed folder>/`.
        results: one result per row (`run_backbone`'s, or a seed average).
        seed_folders: the per-seed sub-folders (`("",)`: one seed, no
            sub-folder; `("seed0", "seed1")` with `--seeds 2`). The overlay
            of learning curves uses the first.
        title: the comparison figure's title.
    """
    gallery = os.path.join(out, "plots")
    save_figure(plotting.comparison(results, title), os.path.join(gallery, "comparison.png"))
    histories = {}  # every row's curves on one figure (first seed): e.g. AlexNet from scratch vs pretrained
    for name in row_names(results):
        path = os.path.join(out, name, seed_folders[0], "history.csv")
        if os.path.exists(path):
            histories[name] = read_csv(path)
    if histories:
        save_figure(plotting.learning_curves_overlay(histories, "learning curves of every model (train solid, "
                                                                "validation dashed)"),
                    os.path.join(gallery, "learning_curves.png"))
    for name in row_names(results):
        for seed in seed_folders:
            for png in ROW_FIGURES:
                src = os.path.join(out, name, seed, png)
                if os.path.exists(src):
                    copy_file(src, os.path.join(gallery, "_".join(filter(None, (name, seed, png)))))
    return gallery


def copy_gallery(gallery, target):
    """Copy every figure of `gallery` into `target` (e.g. `plots/<preset>/`)."""
    for png in sorted(os.listdir(gallery)):
        copy_file(os.path.join(gallery, png), os.path.join(target, png))
